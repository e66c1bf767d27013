"""Unit tests for legacy.copybook: parser, layout, framing, decoding, encoding.

Byte expectations are hand-computed hex literals, not produced by the encoder.
"""

from __future__ import annotations

import io
import time
from decimal import Decimal

import numpy as np
import pyarrow as pa
import pytest

from legacy.copybook import (
    REASON_CODES,
    Copybook,
    CopybookError,
    DecodeResult,
    FramingError,
    RecordBlock,
    decimal_array,
    decode_block,
    decode_file,
    encode_matrix,
    encode_records,
    frame_records,
    iter_record_blocks,
    parse_copybook,
    to_json_records,
)

# --------------------------------------------------------------------------- helpers


def layout(clause: str) -> Copybook:
    """A one-field record: ``01 R. 05 V <clause>.`` (free format)."""
    return parse_copybook(f"01 R.\n  05 V {clause}.\n", source="T.cpy")


def block_of(*records: bytes, first: int = 1) -> RecordBlock:
    width = max(len(r) for r in records)
    data = np.zeros((len(records), width), np.uint8)
    for i, r in enumerate(records):
        data[i, : len(r)] = np.frombuffer(r, np.uint8)
    lengths = np.array([len(r) for r in records], np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    return RecordBlock(first_record_no=first, data=data, lengths=lengths, offsets=offsets)


def decode_one(clause: str, raw: bytes, encoding: str = "cp037", **kw) -> DecodeResult:
    return decode_block(layout(clause), block_of(raw), encoding=encoding, **kw)


def value_of(clause: str, raw: bytes, encoding: str = "cp037", **kw):
    res = decode_one(clause, raw, encoding, **kw)
    assert res.quarantine.num_rows == 0, res.quarantine.to_pylist()
    return res.table.column("V")[0].as_py()


def encode_one(clause: str, value, encoding: str = "cp037", **kw) -> bytes:
    return encode_records(layout(clause), {"V": [value]}, 1, encoding=encoding, **kw)


def quarantine_of(cb: Copybook, *records: bytes, encoding: str = "cp037") -> list[dict]:
    return decode_block(cb, block_of(*records), encoding=encoding).quarantine.to_pylist()


def rdw(payload: bytes) -> bytes:
    n = len(payload) + 4
    return bytes([n >> 8, n & 0xFF, 0, 0]) + payload


# --------------------------------------------------------------------------- USAGE / sign forms vs hand-computed bytes

BYTE_CASES = [
    # clause, encoding, value, bytes
    ("PIC S9(5)V99 COMP-3", "cp037", Decimal("-12345.67"), b"\x12\x34\x56\x7D"),
    ("PIC S9(5)V99 COMP-3", "cp037", Decimal("12345.67"), b"\x12\x34\x56\x7C"),
    ("PIC 9(5) PACKED-DECIMAL", "cp037", 12345, b"\x12\x34\x5F"),
    ("PIC S9(4) COMP-3", "cp037", 1234, b"\x01\x23\x4C"),
    ("PIC S9(31) COMP-3", "cp037", Decimal(-(10**31 - 1)), b"\x99" * 15 + b"\x9D"),
    ("PIC S9(3)", "cp037", -123, b"\xF1\xF2\xD3"),
    ("PIC S9(3)", "cp037", 123, b"\xF1\xF2\xC3"),
    ("PIC 9(3)", "cp037", 123, b"\xF1\xF2\xF3"),
    ("PIC S9(3)", "ascii", -123, b"12L"),
    ("PIC S9(3)", "ascii", 123, b"12C"),
    ("PIC S9(3)", "ascii", -120, b"12}"),
    ("PIC S9(3)", "ascii", 120, b"12{"),
    ("PIC S9(3) SIGN LEADING SEPARATE", "cp037", -123, b"\x60\xF1\xF2\xF3"),
    ("PIC S9(3) SIGN IS TRAILING SEPARATE CHARACTER", "cp037", 45, b"\xF0\xF4\xF5\x4E"),
    ("PIC S9(3) SIGN LEADING SEPARATE", "ascii", -123, b"-123"),
    ("PIC S9(3) SIGN IS LEADING", "cp037", -123, b"\xD1\xF2\xF3"),
    ("PIC S9(3) LEADING", "ascii", -123, b"J23"),
    ("PIC S9(3)V99", "cp037", Decimal("-1.5"), b"\xF0\xF0\xF1\xF5\xD0"),
    ("PIC S9(4) COMP", "cp037", -2, b"\xFF\xFE"),
    ("PIC S9(4) BINARY", "cp037", 1234, b"\x04\xD2"),
    ("PIC 9(9) COMP-4", "cp037", 123456789, b"\x07\x5B\xCD\x15"),
    ("PIC S9(18) COMPUTATIONAL", "cp037", -1, b"\xFF" * 8),
    ("PIC S9(7)V99 USAGE IS COMP", "ascii", Decimal("-1.00"), b"\xFF\xFF\xFF\x9C"),
    ("PIC 9(4) COMP-5", "cp037", 65535, b"\xFF\xFF"),
    ("PIC S9(4) COMP-5", "cp037", -32768, b"\x80\x00"),
    ("COMP-1", "cp037", 1.0, b"\x41\x10\x00\x00"),
    ("COMP-1", "cp037", -1.0, b"\xC1\x10\x00\x00"),
    ("USAGE COMP-1", "cp037", 0.5, b"\x40\x80\x00\x00"),
    ("COMP-2", "cp037", 1.0, b"\x41\x10\x00\x00\x00\x00\x00\x00"),
    ("COMP-2", "cp037", 100.0, b"\x42\x64\x00\x00\x00\x00\x00\x00"),
    ("COMP-2", "cp037", 0.0, b"\x00" * 8),
    ("COMP-1", "ascii", 1.0, b"\x3F\x80\x00\x00"),
    ("COMPUTATIONAL-2", "latin-1", -2.0, b"\xC0\x00\x00\x00\x00\x00\x00\x00"),
    ("PIC 9(3)PPP", "cp037", 123000, b"\xF1\xF2\xF3"),
    ("PIC PPP99", "cp037", Decimal("0.00045"), b"\xF4\xF5"),
    ("PIC VPPP99", "cp037", Decimal("0.00045"), b"\xF4\xF5"),
    ("PIC S99PP COMP-3", "cp037", -1200, b"\x01\x2D"),
    ("PIC X(8)", "cp037", "Müller", b"\xD4\xDC\x93\x93\x85\x99\x40\x40"),
    ("PIC X(6)", "cp037", "José", b"\xD1\x96\xA2\x51\x40\x40"),
    ("PIC X(4)", "ascii", "ab", b"ab  "),
    ("PIC A(3)", "cp500", "AB", b"\xC1\xC2\x40"),
    # edited numeric pictures
    ("PIC -ZZ,ZZ9.99", "ascii", Decimal("-1234.5"), b"- 1,234.50"),
    ("PIC -ZZ,ZZ9.99", "ascii", Decimal("5"), b"      5.00"),
    ("PIC $$$,$$9.99CR", "ascii", Decimal("-1234.5"), b" $1,234.50CR"),
    ("PIC $$$,$$9.99CR", "ascii", Decimal("0.5"), b"     $0.50  "),
    ("PIC ZZZ9.99DB", "ascii", Decimal("-12.3"), b"  12.30DB"),
    ("PIC ZZZ9.99DB", "ascii", Decimal("12.3"), b"  12.30  "),
    ("PIC +9(5)", "ascii", -42, b"-00042"),
    ("PIC +9(5)", "ascii", 42, b"+00042"),
    ("PIC ***9.99", "ascii", Decimal("12.5"), b"**12.50"),
    ("PIC ZZZ.ZZ", "ascii", Decimal("0"), b"      "),
    ("PIC ZZZ.ZZ", "ascii", Decimal("0.05"), b"   .05"),
    ("PIC ++++9", "ascii", -12, b"  -12"),
    ("PIC 99/99/99", "ascii", 123199, b"12/31/99"),
    ("PIC ZZ9.99-", "cp037", Decimal("-1.5"), b"\x40\x40\xF1\x4B\xF5\xF0\x60"),
]


@pytest.mark.parametrize("clause,encoding,value,raw", BYTE_CASES)
def test_encode_gives_hand_computed_bytes(clause, encoding, value, raw):
    assert encode_one(clause, value, encoding) == raw


@pytest.mark.parametrize("clause,encoding,value,raw", BYTE_CASES)
def test_decode_of_hand_computed_bytes(clause, encoding, value, raw):
    got = value_of(clause, raw, encoding)
    assert got == value and type(got) is type(value)


def test_decoded_types_follow_scale_and_digits():
    cb = parse_copybook(
        """01 R.
             05 A PIC S9(5)V99 COMP-3.
             05 B PIC 9(18).
             05 C PIC S9(20).
             05 D PIC X(3).
             05 E COMP-2.
             05 F PIC 9(3)PPP.
             05 G PIC PPP99.
             05 H PIC S9(4) COMP.
             05 I PIC 9(18) COMP-5.
             05 J PIC -ZZ9.99.
        """
    )
    assert cb.schema.field("A").type == pa.decimal128(7, 2)
    assert cb.schema.field("B").type == pa.int64()
    assert cb.schema.field("C").type == pa.decimal128(20, 0)
    assert cb.schema.field("D").type == pa.string()
    assert cb.schema.field("E").type == pa.float64()
    assert cb.schema.field("F").type == pa.int64()
    assert cb.schema.field("G").type == pa.decimal128(5, 5)
    assert cb.schema.field("H").type == pa.int64()
    assert cb.schema.field("I").type == pa.decimal128(20, 0)  # unsigned 8-byte COMP-5 exceeds int64
    assert cb.schema.field("J").type == pa.decimal128(5, 2)
    assert cb.schema.names[0] == "record_no"


def test_packed_signs_accepted_and_unsigned_needs_f():
    assert value_of("PIC S9(3) COMP-3", b"\x12\x3A") == 123
    assert value_of("PIC S9(3) COMP-3", b"\x12\x3E") == 123
    assert value_of("PIC S9(3) COMP-3", b"\x12\x3F") == 123
    assert value_of("PIC S9(3) COMP-3", b"\x12\x3B") == -123
    assert value_of("PIC 9(3) COMP-3", b"\x12\x3F") == 123
    q = decode_one("PIC 9(3) COMP-3", b"\x12\x3D").quarantine.to_pylist()
    assert q[0]["reason"] == "invalid_packed" and "0xD" in q[0]["detail"]


def test_zoned_variants():
    # EBCDIC positive zones A/E/F on the sign byte, negative B
    assert value_of("PIC S9(3)", b"\xF1\xF2\xA3") == 123
    assert value_of("PIC S9(3)", b"\xF1\xF2\xF3") == 123
    assert value_of("PIC S9(3)", b"\xF1\xF2\xB3") == -123
    # ASCII: 0x70-0x79 as negative overpunch, plain digit = positive
    assert value_of("PIC S9(3)", b"12\x73", "ascii") == -123
    assert value_of("PIC S9(3)", b"123", "ascii") == 123
    # unsigned EBCDIC needs the F zone
    q = decode_one("PIC 9(3)", b"\xF1\xF2\xC3").quarantine.to_pylist()
    assert q[0]["reason"] == "invalid_zoned" and "sign zone 0xC" in q[0]["detail"]
    # BLANK WHEN ZERO: all spaces decode to 0
    assert value_of("PIC 9(3) BLANK WHEN ZERO", b"\x40\x40\x40") == 0
    assert value_of("PIC ZZ9.99 BLANK WHEN ZERO", b"      ", "ascii") == Decimal("0.00")
    assert decode_one("PIC 9(3)", b"\x40\x40\x40").quarantine.num_rows == 1


def test_binary_is_decoded_in_full_and_unsigned():
    assert value_of("PIC 9(4) COMP", b"\xFF\xFF") == 65535  # beyond the PIC: TRUNC(BIN) data
    assert value_of("PIC 9(18) COMP-5", b"\xFF" * 8) == Decimal(2**64 - 1)
    assert value_of("PIC S9(5)V99 COMP", b"\xFF\xFF\xFF\xFF") == Decimal("-0.01")
    assert layout("PIC S9(5)V99 COMP").schema.field("V").type == pa.decimal128(10, 2)


def test_float_format_override():
    assert value_of("COMP-1", b"\x3F\x80\x00\x00", "cp037", float_format="ieee") == 1.0
    assert value_of("COMP-1", b"\x41\x10\x00\x00", "ascii", float_format="ibm") == 1.0
    assert encode_one("COMP-2", 1.0, "cp037", float_format="ieee") == b"\x3F\xF0" + b"\x00" * 6
    # IBM HFP keeps 53-bit doubles exactly in COMP-2
    x = 0.1
    assert value_of("COMP-2", encode_one("COMP-2", x)) == x


def test_text_nulls_spaces_and_codepages():
    assert value_of("PIC X(4)", b"\x00\x00\x00\x00") is None
    assert value_of("PIC X(4)", b"\xFF\xFF\xFF\xFF") is None
    assert value_of("PIC X(4)", b"\x40\x40\x40\x40") == ""
    assert value_of("PIC X(4)", b"\x40\xC1\x40\x40") == " A"  # leading spaces kept
    assert value_of("PIC X(3)", b"\x9F\x40\x40", "cp1140") == "€"
    assert value_of("PIC X(3)", b"\x4A\x40\x40", "cp273") == "Ä"
    assert value_of("PIC X(3)", b"\xE9t\xE9", "latin-1") == "été"


# --------------------------------------------------------------------------- structure


POLICY = """\
000100*================================================================
000200* POLICY RECORD  (fixed format, sequence numbers, comments)      SEQ00001
000300*================================================================
000400 01  POLICY-REC.                                                  SEQ00002
000500     05  POL-ID                  PIC X(6).
000600     05  POL-STATUS              PIC X(2).
000700         88  POL-ACTIVE          VALUE 'AC'.
000800         88  POL-LAPSED          VALUE 'LA' 'LP'
000900                                       'LX'.
001000     05  HOLDER.
001100         10  NAME                PIC X(10).
001200         10  ADDR.
001300             15  CITY            PIC X(8).
001400     05  PAYER.
001500         10  NAME                PIC X(10).
001600         10  ADDR.
001700             15  CITY            PIC X(8).
001800/    PAGE EJECT STYLE COMMENT
001900     05  FILLER                  PIC X(3).
002000     05  AMOUNTS                 COMP-3.
002100         10  PREMIUM             PIC S9(5)V99.
002200         10  MONTHLY             PIC S9(5)V99 OCCURS 3 TIMES.
002300     05  GRID OCCURS 2 TIMES INDEXED BY GX.
002400         10  CELL                PIC 9 OCCURS 2.
002500     05  RAW-DATE                PIC X(8).
002600     05  NUM-DATE REDEFINES RAW-DATE
002700                                 PIC 9(8).
002800     05  RIDER-COUNT             PIC 9(2).
002900     05  RIDER OCCURS 0 TO 3 TIMES DEPENDING ON RIDER-COUNT
003000             ASCENDING KEY IS RIDER-CODE.
003100         10  RIDER-CODE          PIC X(2).
003200         10  RIDER-AMT           PIC S9(3) COMP.
"""


def test_fixed_format_layout():
    cb = parse_copybook(POLICY, source="POLICY.cpy")
    assert cb.name == "POLICY_REC"
    names = [f.name for f in cb.fields]
    assert cb.columns == [n for n in names if n != "FILLER"]
    assert cb.columns[:2] == ["POL_ID", "POL_STATUS"]
    # repeated leaf names under different groups are qualified with the parent group
    assert "HOLDER_NAME" in cb.columns and "PAYER_NAME" in cb.columns
    assert "ADDR_CITY" not in cb.columns
    assert "HOLDER_ADDR_CITY" in cb.columns and "PAYER_ADDR_CITY" in cb.columns
    f = {f.name: f for f in cb.fields}
    assert f["HOLDER_NAME"].offset == 8 and f["PAYER_NAME"].offset == 26
    # FILLER storage counted, not output
    assert f["FILLER"].offset == 44 and f["FILLER"].length == 3
    # group USAGE COMP-3 applies to children
    assert f["PREMIUM"].kind == "packed" and f["PREMIUM"].offset == 47 and f["PREMIUM"].length == 4
    assert [f[f"MONTHLY_{i}"].offset for i in (1, 2, 3)] == [51, 55, 59]
    # nested OCCURS: _outer_inner, storage order
    assert [n for n in names if n.startswith("CELL")] == ["CELL_1_1", "CELL_1_2", "CELL_2_1", "CELL_2_2"]
    assert [f[n].offset for n in ("CELL_1_1", "CELL_1_2", "CELL_2_1", "CELL_2_2")] == [63, 64, 65, 66]
    # REDEFINES: same offset, both marked
    assert f["RAW_DATE"].offset == f["NUM_DATE"].offset == 67
    assert f["RAW_DATE"].in_redefines and f["NUM_DATE"].in_redefines and not f["POL_ID"].in_redefines
    # ODO
    assert cb.is_variable and cb.odo is not None
    assert f["RIDER_COUNT"].offset == 75
    assert f["RIDER_CODE_1"].offset == 77 and f["RIDER_AMT_1"].length == 2
    assert f["RIDER_AMT_3"].odo.counter == "RIDER_COUNT" and f["RIDER_AMT_3"].odo.index == 3
    assert cb.min_length == 77 and cb.record_length == 77 + 3 * 4
    assert f["POL_ID"].line == 5 and f["RIDER_AMT_1"].line == 32


def test_free_format_with_inline_comments_matches_fixed():
    free = """
* a comment line
01 POLICY-REC.
   05 POL-ID PIC X(6).   *> inline comment
   05 AMT    PIC S9(5)V99
             USAGE IS PACKED-DECIMAL.
   05 CODES  PIC XX OCCURS 2 TIMES.
"""
    fixed = """\
000100 01 POLICY-REC.
000200     05 POL-ID PIC X(6).                                          IGNORED!
000300*    05 NOT-A-FIELD PIC X(99).
000400     05 AMT    PIC S9(5)V99
000500               USAGE IS PACKED-DECIMAL.
000600     05 CODES  PIC XX OCCURS 2 TIMES.
"""
    a, b = parse_copybook(free), parse_copybook(fixed)
    assert a.columns == b.columns == ["POL_ID", "AMT", "CODES_1", "CODES_2"]
    assert [(f.offset, f.length, f.kind) for f in a.fields] == [(f.offset, f.length, f.kind) for f in b.fields]
    assert a.record_length == 6 + 4 + 4


def test_copybook_without_01_gets_a_record_named_after_the_source():
    cb = parse_copybook("05 A PIC X.\n05 B PIC 9.\n", source="/x/CLAIMS.cpy")
    assert cb.name == "CLAIMS" and cb.columns == ["A", "B"] and cb.record_length == 2


def test_usage_sizes_and_sync_justified_accepted():
    cb = parse_copybook(
        """01 R.
             05 B1 PIC S9(4) COMP SYNC.
             05 B2 PIC S9(5) COMP-5.
             05 B3 PIC 9(10) BINARY.
             05 P1 PIC S9(6) COMP-3.
             05 Z1 PIC S9(4) SIGN TRAILING SEPARATE.
             05 T1 PIC X(5) JUSTIFIED RIGHT.
             05 F1 COMP-1.
             05 F2 COMP-2.
             05 IX USAGE INDEX.
             05 V1 PIC X(2) VALUE SPACES.
             05 V2 PIC 9(3) VALUE ZERO.
        """
    )
    assert [f.length for f in cb.fields] == [2, 4, 8, 4, 5, 5, 4, 8, 4, 2, 3]
    assert [f.float_bytes for f in cb.fields if f.kind == "float"] == [4, 8]


# --------------------------------------------------------------------------- copybook errors

ERRORS = [
    # name, text, line, column, fragment
    ("bad PIC",
     "       01  POLMAST-REC.\n           05  POL-NUMBER     PIC X(10).\n           05  AMT            PIC S9(7)V9V9.\n",
     3, 42, "PIC 'S9(7)V9V9' has two V symbols"),
    ("bad PIC symbol", "01 R.\n  05 A PIC 9(3)Q.\n", 2, 16, "invalid symbol 'Q'"),
    ("bad repetition", "01 R.\n  05 A PIC X(0).\n", 2, 14, "repetition count"),
    ("S not first", "01 R.\n 05 A PIC 9S99.\n", 2, 12, "S that is not the first"),
    ("edited", "01 R.\n 05 A PIC ZZ9.9Z.\n", 2, 16, "'Z' after a 9"),
    ("unknown clause", "01 R.\n  05 A PIC X(3) FROB.\n", 2, 17, "unknown clause 'FROB'"),
    ("level mismatch", "01 R.\n  05 A.\n    10 B PIC X.\n   07 C PIC X.\n", 4, 4, "level 07 of C does not match"),
    ("under elementary", "01 R.\n  05 A PIC X.\n    10 B PIC X.\n", 3, 5, "cannot be subordinate to A"),
    ("invalid level", "01 R.\n  50 A PIC X.\n", 2, 3, "level number 50 is not valid"),
    ("second record", "01 R.\n  05 A PIC X.\n01 S.\n  05 B PIC X.\n", 3, 1, "second record S"),
    ("REDEFINES unknown", "01 R.\n  05 A PIC X(4).\n  05 B REDEFINES Q PIC 9(4).\n", 3, 18, "REDEFINES Q"),
    ("DEPENDING ON unknown",
     "01 R.\n  05 N PIC 99.\n  05 T OCCURS 1 TO 5 DEPENDING ON CNT.\n    10 X PIC X.\n", 3, 35,
     "DEPENDING ON CNT: no data item"),
    ("ODO not last",
     "01 R.\n  05 N PIC 99.\n  05 T OCCURS 1 TO 5 DEPENDING ON N.\n    10 X PIC X.\n  05 AFTER PIC X.\n", 5, 3,
     "AFTER follows OCCURS DEPENDING ON table T"),
    ("no PIC", "01 R.\n  05 A.\n  05 B PIC X.\n", 2, 6, "elementary item A has no PICTURE"),
    ("unterminated", "01 R.\n  05 A PIC X(3)\n", 2, 16, "unterminated statement: expected '.'"),
    ("missing period", "01 R.\n  05 A PIC X(3)\n  05 B PIC X.\n", 2, 16, "before level 05 on line 3"),
    ("88 missing period", "01 R.\n  05 A PIC X.\n    88 YES VALUE 'Y'\n  05 B PIC X.\n", 3, 21, "level 88 entry"),
    ("text COMP-3", "01 R.\n 05 A PIC X(3) COMP-3.\n", 2, 16, "cannot be USAGE COMP-3"),
    ("binary digits", "01 R.\n 05 A PIC S9(19) COMP.\n", 2, 11, "binary items hold at most 18"),
    ("unsupported usage", "01 R.\n 05 A PIC 9(3) USAGE COMP-6.\n", 2, 22, "USAGE COMP-6 is not supported"),
]


@pytest.mark.parametrize("name,text,line,column,fragment", ERRORS, ids=[e[0] for e in ERRORS])
def test_copybook_errors_name_line_and_column(name, text, line, column, fragment):
    with pytest.raises(CopybookError) as info:
        parse_copybook(text, source="POLMAST.cpy")
    err = info.value
    assert isinstance(err, ValueError)
    assert (err.line, err.column) == (line, column), str(err)
    assert fragment in str(err)
    assert str(err).startswith(f"POLMAST.cpy line {line}, column {column}: ")


def test_level_66_is_skipped():
    cb = parse_copybook("01 R.\n 05 A PIC X.\n 05 B PIC X.\n66 AB RENAMES A THRU B.\n")
    assert cb.columns == ["A", "B"]


# --------------------------------------------------------------------------- framing


SMALL = parse_copybook("01 R.\n 05 ID PIC 9(3).\n 05 NAME PIC X(5).\n", source="SMALL.cpy")


def small_record(i: int) -> bytes:
    # EBCDIC zoned digits F0-F9, name "AB" + spaces
    return bytes([0xF0 + i // 100, 0xF0 + i // 10 % 10, 0xF0 + i % 10]) + b"\xC1\xC2\x40\x40\x40"


def test_fixed_framing_blocks_and_trailing_bytes(tmp_path):
    path = tmp_path / "f.dat"
    path.write_bytes(b"".join(small_record(i) for i in range(1, 11)) + b"\xF1" * 3)
    items = list(iter_record_blocks(path, SMALL, record_format="F", block_records=3))
    blocks = [b for b in items if isinstance(b, RecordBlock)]
    assert [b.first_record_no for b in blocks] == [1, 4, 7, 10]
    assert [len(b.lengths) for b in blocks] == [3, 3, 3, 1]
    assert blocks[1].offsets.tolist() == [24, 32, 40]
    assert blocks[0].data.shape == (3, 8) and blocks[0].data.dtype == np.uint8
    err = items[-1]
    assert isinstance(err, FramingError)
    assert (err.record_no, err.offset, err.reason, err.raw) == (11, 80, "trailing_bytes", b"\xF1" * 3)
    assert "3 bytes after the last whole record" in err.detail
    results = list(decode_file(path, SMALL, record_format="F", block_records=3))
    ids = [i for r in results for i in r.table.column("ID").to_pylist()]
    assert ids == list(range(1, 11))
    q = [row for r in results for row in r.quarantine.to_pylist()]
    assert [(row["record_no"], row["reason"], row["field"]) for row in q] == [(11, "trailing_bytes", None)]


def test_fixed_framing_17_trailing_bytes_and_file_object():
    data = b"".join(small_record(i) for i in range(2)) + bytes(17)
    items = list(iter_record_blocks(io.BytesIO(data), SMALL, record_format="F"))
    # 17 trailing bytes = 2 more whole records of 8 bytes + 1 byte
    assert isinstance(items[-1], FramingError) and items[-1].detail.startswith("1 bytes after")
    big = parse_copybook("01 R.\n 05 A PIC X(40).\n")
    items = list(iter_record_blocks(io.BytesIO(bytes(80 + 17)), big, record_format="F"))
    assert items[-1].detail.startswith("17 bytes after the last whole record")


def test_variable_framing_blocks(tmp_path):
    path = tmp_path / "v.dat"
    recs = [small_record(i)[: 3 + (i % 6)] for i in range(1, 11)]
    path.write_bytes(b"".join(rdw(r) for r in recs))
    items = list(iter_record_blocks(path, SMALL, record_format="V", block_records=3))
    assert all(isinstance(b, RecordBlock) for b in items)
    assert [b.first_record_no for b in items] == [1, 4, 7, 10]
    lengths = [int(x) for b in items for x in b.lengths]
    assert lengths == [len(r) for r in recs]
    offsets = [int(x) for b in items for x in b.offsets]
    assert offsets == list(np.cumsum([0] + [len(r) + 4 for r in recs[:-1]]))
    for b in items:
        assert b.data.shape[1] >= b.lengths.max()
        for row, ln in zip(b.data, b.lengths):
            assert not row[ln:].any()  # zero padded
    rows = [bytes(b.data[k, : b.lengths[k]]) for b in items for k in range(len(b.lengths))]
    assert rows == recs


def test_variable_framing_truncated_last_record_is_trailing_bytes():
    data = rdw(small_record(1)) + rdw(small_record(2))[:-3]
    items = list(iter_record_blocks(io.BytesIO(data), SMALL, record_format="V"))
    assert isinstance(items[0], RecordBlock) and len(items[0].lengths) == 1
    err = items[1]
    assert (err.reason, err.record_no, err.offset) == ("trailing_bytes", 2, 12)
    assert "declares 12 bytes but only 9 remain" in err.detail
    items = list(iter_record_blocks(io.BytesIO(rdw(small_record(1)) + b"\x00\x0C"), SMALL, record_format="V"))
    assert items[1].reason == "trailing_bytes" and items[1].raw == b"\x00\x0C"


def test_variable_framing_bad_rdw_swallows_the_rest():
    good = rdw(small_record(1))
    bad = b"\x00\x0C\x00\x01" + small_record(2)
    rest = rdw(small_record(3)) * 5
    items = list(iter_record_blocks(io.BytesIO(good + bad + rest), SMALL, record_format="V", block_records=1))
    assert isinstance(items[0], RecordBlock)
    err = items[1]
    assert len(items) == 2 and err.reason == "bad_rdw" and err.record_no == 2 and err.offset == 12
    assert err.raw == bad + rest
    assert "cannot be resynchronised" in err.detail and f"remaining {len(bad + rest)} bytes" in err.detail
    items = list(iter_record_blocks(io.BytesIO(b"\x00\x02\x00\x00" + rest), SMALL, record_format="V"))
    assert items[0].reason == "bad_rdw" and "less than the 4 RDW bytes" in items[0].detail


def test_variable_framing_many_records_is_fast():
    rec = rdw(small_record(7))
    data = rec * 200_000
    t0 = time.perf_counter()
    n = sum(len(b.lengths) for b in iter_record_blocks(io.BytesIO(data), SMALL, record_format="V"))
    dt = time.perf_counter() - t0
    assert n == 200_000
    print(f"\nV framing: {n / dt:,.0f} records/s")


# --------------------------------------------------------------------------- quarantine reasons


def test_invalid_packed_names_field_and_sign_nibble():
    cb = parse_copybook("01 R.\n 05 POL-ID PIC X(2).\n 05 MODAL-PREMIUM PIC S9(5)V99 COMP-3.\n")
    q = quarantine_of(cb, b"\xC1\xC2\x12\x34\x56\x74")
    assert q[0]["field"] == "MODAL_PREMIUM" and q[0]["reason"] == "invalid_packed"
    assert q[0]["detail"].startswith("packed decimal has invalid sign nibble 0x4")
    assert "C1" not in q[0]["detail"]  # never other fields' bytes
    assert q[0]["raw"] == b"\xC1\xC2\x12\x34\x56\x74"
    q = quarantine_of(cb, b"\xC1\xC2\x12\x3A\x56\x7C")
    assert "invalid digit nibble 0xA" in q[0]["detail"]
    q = quarantine_of(cb, b"\xC1\xC2\x40\x40\x40\x40")
    assert q[0]["reason"] == "invalid_packed"


def test_invalid_zoned_spaces():
    q = quarantine_of(layout("PIC 9(4)"), b"\xF1\x40\xF2\xF3")
    assert q[0]["reason"] == "invalid_zoned" and q[0]["field"] == "V"
    assert "a space at position 2" in q[0]["detail"]


def test_invalid_text_nul_and_ascii_high_bytes():
    q = quarantine_of(layout("PIC X(4)"), b"\xC1\x00\xC2\x40")
    assert q[0]["reason"] == "invalid_text" and "NUL" in q[0]["detail"]
    q = quarantine_of(layout("PIC X(4)"), b"ab\xE9 ", encoding="ascii")
    assert q[0]["reason"] == "invalid_text" and "0xE9" in q[0]["detail"]
    assert value_of("PIC X(4)", b"ab\xE9 ", "latin-1") == "abé"


def test_invalid_edited():
    q = quarantine_of(layout("PIC -ZZ,ZZ9.99"), b"- 1,2x4.50", encoding="ascii")
    assert q[0]["reason"] == "invalid_edited" and "position 6" in q[0]["detail"]
    q = quarantine_of(layout("PIC ZZ9"), b"1 2", encoding="ascii")  # a blank after a digit
    assert q[0]["reason"] == "invalid_edited"


ODO_BOOK = parse_copybook(
    """01 POLMAST.
         05 POL-ID PIC X(2).
         05 RIDER-COUNT PIC S9(4) COMP.
         05 RIDERS OCCURS 0 TO 3 TIMES DEPENDING ON RIDER-COUNT.
            10 RIDER-CODE PIC X(2).
            10 RIDER-AMT PIC S9(3) COMP-3.
    """
)


def odo_record(count: int, *, stored: int | None = None) -> bytes:
    out = b"\xC1\xC2" + count.to_bytes(2, "big", signed=True)
    for k in range(count if stored is None else stored):
        out += b"\xC3" + bytes([0xF1 + k]) + b"\x12\x3C"
    return out


def test_odo_lengths_nulls_and_json():
    assert ODO_BOOK.min_length == 4 and ODO_BOOK.record_length == 16
    res = decode_block(ODO_BOOK, block_of(odo_record(0), odo_record(2), odo_record(3)))
    assert res.quarantine.num_rows == 0
    t = res.table
    assert t.column("RIDER_CODE_1").to_pylist() == [None, "C1", "C1"]
    assert t.column("RIDER_CODE_3").to_pylist() == [None, None, "C3"]
    assert t.column("RIDER_AMT_2").to_pylist() == [None, 123, 123]
    js = list(to_json_records(ODO_BOOK, t))
    assert js[0] == {"POL_ID": "AB", "RIDER_COUNT": 0, "RIDERS": []}
    assert js[1]["RIDERS"] == [{"RIDER_CODE": "C1", "RIDER_AMT": 123}, {"RIDER_CODE": "C2", "RIDER_AMT": 123}]
    assert len(js[2]["RIDERS"]) == 3


def test_odo_record_length_and_out_of_range():
    q = quarantine_of(ODO_BOOK, odo_record(2, stored=1), odo_record(4, stored=3), odo_record(1), b"\xC1")
    assert q[0]["reason"] == "record_length" and q[0]["field"] == "RIDER_COUNT"
    assert q[0]["detail"] == "length 8, copybook expects 12 for RIDER_COUNT=2"
    assert q[1]["reason"] == "odo_out_of_range" and q[1]["field"] == "RIDER_COUNT"
    assert "RIDER_COUNT=4 is outside OCCURS 0 TO 3" in q[1]["detail"]
    assert q[2]["record_no"] == 4 and q[2]["reason"] == "record_length"
    assert len(q) == 3


def test_odo_in_fixed_blocks_are_padded_not_length_checked():
    rec = odo_record(1).ljust(16, b"\x00")
    blk = RecordBlock(1, np.frombuffer(rec, np.uint8).reshape(1, 16), np.array([16]), np.array([0]), fixed_length=True)
    res = decode_block(ODO_BOOK, blk)
    assert res.quarantine.num_rows == 0 and res.table.column("RIDER_CODE_2").to_pylist() == [None]


def test_fixed_copybook_in_v_file_checks_length(tmp_path):
    path = tmp_path / "v.dat"
    path.write_bytes(rdw(small_record(1)) + rdw(small_record(2)[:7]) + rdw(small_record(3) + b"\x40"))
    (r,) = list(decode_file(path, SMALL, record_format="V"))
    assert r.table.column("ID").to_pylist() == [1]
    q = r.quarantine.to_pylist()
    assert [(x["record_no"], x["reason"], x["detail"]) for x in q] == [
        (2, "record_length", "length 7, copybook expects 8"),
        (3, "record_length", "length 9, copybook expects 8"),
    ]
    assert q[0]["offset"] == 12 and q[0]["raw"] == small_record(2)[:7]


def test_first_bad_field_in_storage_order_is_named_once():
    cb = parse_copybook("01 R.\n 05 A PIC X(2).\n 05 B PIC 9(2).\n 05 C PIC S9(3) COMP-3.\n")
    q = quarantine_of(cb, b"\xC1\x00" + b"\x40\x40" + b"\x12\x34", b"\xC1\xC1" + b"\x40\x40" + b"\x12\x34")
    assert [(x["field"], x["reason"]) for x in q] == [("A", "invalid_text"), ("B", "invalid_zoned")]


def test_redefines_invalid_view_is_null_not_quarantined():
    cb = parse_copybook(
        "01 R.\n 05 KIND PIC X.\n 05 AMT-TEXT PIC X(4).\n 05 AMT-NUM REDEFINES AMT-TEXT PIC 9(4).\n"
        " 05 AMT-PACKED REDEFINES AMT-TEXT PIC S9(7) COMP-3.\n"
    )
    res = decode_block(cb, block_of(b"\xC1\xF1\xF2\xF3\xF4", b"\xC2\x00\x12\x34\x5C"))
    assert res.quarantine.num_rows == 0
    t = res.table
    assert t.column("AMT_TEXT").to_pylist() == ["1234", None]  # second: NUL inside -> invalid -> null
    assert t.column("AMT_NUM").to_pylist() == [1234, None]
    assert t.column("AMT_PACKED").to_pylist() == [None, 12345]


def test_every_reason_code_is_produced():
    seen = {"invalid_packed", "invalid_zoned", "invalid_text", "invalid_edited", "odo_out_of_range",
            "record_length", "trailing_bytes", "bad_rdw"}
    assert seen == set(REASON_CODES)


def test_framing_errors_become_quarantine_rows(tmp_path):
    path = tmp_path / "v.dat"
    path.write_bytes(rdw(small_record(1)) + b"\x00\x09\xFF\xFF" + b"junk")
    results = list(decode_file(path, SMALL, record_format="V"))
    assert results[0].table.num_rows == 1
    q = results[1].quarantine.to_pylist()
    assert results[1].table.schema == SMALL.schema and results[1].table.num_rows == 0
    assert q == [{"record_no": 2, "offset": 12, "field": None, "reason": "bad_rdw", "detail": q[0]["detail"],
                  "raw": b"\x00\x09\xFF\xFF" + b"junk"}]


# --------------------------------------------------------------------------- decimals, JSON, encoding API


def test_decimal_array_is_exact():
    arr = decimal_array(np.array([-1234567, 0, 5, 2**62], np.int64), 19, 2, mask=np.array([False, True, False, False]))
    assert arr.type == pa.decimal128(19, 2)
    assert arr.to_pylist() == [Decimal("-12345.67"), None, Decimal("0.05"), Decimal(2**62).scaleb(-2)]
    wide = np.array([-(10**30), 10**30 + 7, None], dtype=object)
    assert decimal_array(wide, 31, 0).to_pylist() == [-(10**30), 10**30 + 7, None]
    arr.validate(full=True)


def test_to_json_records_nested_groups_and_lists():
    cb = parse_copybook(POLICY)
    n = 2
    cols = {
        "POL_ID": ["P1", "P2"],
        "HOLDER_NAME": ["Ann", "Bob"],
        "HOLDER_ADDR_CITY": ["Oslo", None],
        "PREMIUM": [Decimal("12.34"), Decimal("-0.01")],
        "MONTHLY_1": [Decimal("1.00"), Decimal("2.00")],
        "CELL_2_1": np.array([7, 8]),
        "RIDER_COUNT": np.array([1, 0]),
        "RIDER_CODE_1": ["R1", None],
        "RIDER_AMT_1": np.array([-5, 0]),
        "RAW_DATE": ["20240131", "20240229"],
    }
    data = encode_records(cb, cols, n, record_format="V")
    (res,) = list(decode_file(io.BytesIO(data), cb, record_format="V"))
    assert res.quarantine.num_rows == 0
    (a, b) = list(to_json_records(cb, res.table))
    # keys are Field output names (qualified where the copybook repeats a name)
    assert a["HOLDER"] == {"HOLDER_NAME": "Ann", "ADDR": {"HOLDER_ADDR_CITY": "Oslo"}}
    assert b["HOLDER"]["ADDR"]["HOLDER_ADDR_CITY"] is None
    assert a["AMOUNTS"]["PREMIUM"] == Decimal("12.34") and isinstance(a["AMOUNTS"]["PREMIUM"], Decimal)
    assert a["AMOUNTS"]["MONTHLY"] == [Decimal("1.00"), Decimal("0.00"), Decimal("0.00")]
    assert a["GRID"] == [{"CELL": [0, 0]}, {"CELL": [7, 0]}]
    assert a["RIDER"] == [{"RIDER_CODE": "R1", "RIDER_AMT": -5}]
    assert b["RIDER"] == [] and b["NUM_DATE"] == 20240229 and b["RAW_DATE"] == "20240229"
    assert "FILLER" not in a and "POL_STATUS" in a and a["POL_STATUS"] == ""


def test_encode_matrix_conventions():
    cb = parse_copybook("01 R.\n 05 T PIC X(3).\n 05 FILLER PIC X(2).\n 05 AMT PIC S9(3)V99 COMP-3.\n 05 Z PIC 9(2).\n")
    m, lengths = encode_matrix(cb, {"AMT": np.array([12345, -1])}, 2)  # integer input = UNSCALED for scale > 0
    assert m.shape == (2, 10) and lengths.tolist() == [10, 10]
    assert bytes(m[0]) == b"\x40" * 5 + b"\x12\x34\x5C" + b"\xF0\xF0"
    assert bytes(m[1, 5:8]) == b"\x00\x00\x1D"
    m2, _ = encode_matrix(cb, {"AMT": pa.array([Decimal("123.45")], pa.decimal128(5, 2))}, 1)
    assert bytes(m2[0, 5:8]) == b"\x12\x34\x5C"
    m3, _ = encode_matrix(cb, {"AMT": [Decimal("123.45")]}, 1)
    assert bytes(m3[0, 5:8]) == b"\x12\x34\x5C"
    with pytest.raises(ValueError, match="T: text of 4 characters at row 0 is longer"):
        encode_matrix(cb, {"T": ["ABCD"]}, 1)
    with pytest.raises(ValueError, match="AMT"):
        encode_matrix(cb, {"AMT": [Decimal("1234.00")]}, 1)
    with pytest.raises(ValueError, match="more decimal places"):
        encode_matrix(cb, {"AMT": [Decimal("1.234")]}, 1)
    with pytest.raises(ValueError, match="unknown column"):
        encode_matrix(cb, {"NOPE": [1]}, 1)
    with pytest.raises(ValueError, match="cannot be encoded in cp037"):
        encode_matrix(cb, {"T": ["€"]}, 1)


def test_frame_records_v_adds_rdws():
    m = np.array([[1, 2, 3], [4, 5, 6]], np.uint8)
    assert frame_records(m, np.array([3, 1]), "V") == b"\x00\x07\x00\x00\x01\x02\x03\x00\x05\x00\x00\x04"
    assert frame_records(m, np.array([3, 3]), "F") == bytes([1, 2, 3, 4, 5, 6])


def test_real_policy_master_copybook_round_trip():
    text = open("legacy/sources/mainframe_life/POLMAST.cpy", encoding="latin-1").read()
    cb = parse_copybook(text, source="POLMAST.cpy")
    assert cb.record_length == 348 and cb.is_variable and cb.odo.counter == "RIDER_COUNT"
    cols = {"POL_NUMBER": ["A1", "B2"], "RIDER_COUNT": np.array([2, 0]), "INS_LAST_NAME": ["Müller", "José"],
            "FACE_AMOUNT": [Decimal("250000.00"), Decimal("-1.00")], "RIDER_FACE_2": [Decimal("9.99"), None]}
    data = encode_records(cb, cols, 2, record_format="V")
    assert len(data) == 4 + 283 + 26 + 4 + 283
    (res,) = list(decode_file(io.BytesIO(data), cb, record_format="V"))
    assert res.quarantine.num_rows == 0
    t = res.table
    assert t.column("INS_LAST_NAME").to_pylist() == ["Müller", "José"]
    assert t.column("RIDER_FACE_2").to_pylist() == [Decimal("9.99"), None]
    assert t.column("FACE_AMOUNT").type == pa.decimal128(11, 2)


# --------------------------------------------------------------------------- speed (printed, not asserted)


def test_decode_and_encode_rate_200k_records_20_fields():
    cb = parse_copybook(
        """01 PERF-REC.
             05 POL-ID        PIC X(10).
             05 STATUS-CD     PIC X(2).
             05 NAME          PIC X(30).
             05 CITY          PIC X(20).
             05 STATE         PIC X(2).
             05 ISSUE-DATE    PIC 9(8).
             05 EFF-DATE      PIC 9(8).
             05 AGE           PIC 9(3).
             05 FACE          PIC S9(9)V99 COMP-3.
             05 PREMIUM       PIC S9(7)V99 COMP-3.
             05 CASH          PIC S9(9)V99.
             05 LOAN          PIC S9(7)V99 COMP-3.
             05 UNITS         PIC S9(9) COMP.
             05 SEQ           PIC S9(4) COMP.
             05 RATE          COMP-2.
             05 SHARE         PIC 9(3)V99.
             05 PLAN          PIC X(6).
             05 AGENT         PIC X(6).
             05 BIG           PIC S9(17) COMP-3.
             05 FLAG          PIC X.
        """
    )
    n = 200_000
    rng = np.random.default_rng(1)
    cols = {
        "POL_ID": np.array([f"P{i:09d}" for i in range(n)]),
        "NAME": np.array(["José Müller"] * n),
        "ISSUE_DATE": rng.integers(19000101, 20991231, n),
        "FACE": rng.integers(-10**11 + 1, 10**11, n),
        "PREMIUM": rng.integers(-10**9 + 1, 10**9, n),
        "CASH": rng.integers(-10**11 + 1, 10**11, n),
        "UNITS": rng.integers(-10**9 + 1, 10**9, n),
        "RATE": rng.random(n),
        "BIG": rng.integers(-10**17 + 1, 10**17, n),
    }
    t0 = time.perf_counter()
    matrix, lengths = encode_matrix(cb, cols, n)
    t1 = time.perf_counter()
    blk = RecordBlock(1, matrix, lengths, np.arange(n, dtype=np.int64) * cb.record_length, fixed_length=True)
    res = decode_block(cb, blk)
    t2 = time.perf_counter()
    assert res.table.num_rows == n and res.quarantine.num_rows == 0
    assert res.table.column("FACE").to_numpy(zero_copy_only=False)[0] == Decimal(int(cols["FACE"][0])).scaleb(-2)
    assert res.table.column("NAME")[5].as_py() == "José Müller"
    print(f"\nencode: {n / (t1 - t0):,.0f} records/s   decode: {n / (t2 - t1):,.0f} records/s "
          f"({len(cb.columns)} fields, {cb.record_length} bytes)")


# --------------------------------------------------------------------------- more structure / framing edge cases


def test_variable_framing_across_small_read_chunks(monkeypatch):
    import legacy.records as records

    rng = np.random.default_rng(3)
    recs = [bytes(rng.integers(0, 256, int(k), dtype=np.uint8)) for k in rng.integers(0, 40, 200)]
    data = b"".join(rdw(r) for r in recs)
    monkeypatch.setattr(records, "_V_CHUNK", 7)
    blocks = list(iter_record_blocks(io.BytesIO(data), SMALL, record_format="V", block_records=16))
    assert all(isinstance(b, RecordBlock) for b in blocks)
    assert [bytes(b.data[k, : b.lengths[k]]) for b in blocks for k in range(len(b.lengths))] == recs
    assert [b.first_record_no for b in blocks] == list(range(1, 201, 16))
    offsets = np.concatenate([b.offsets for b in blocks])
    assert offsets.tolist() == np.concatenate([[0], np.cumsum([len(r) + 4 for r in recs])[:-1]]).tolist()


def test_group_sign_clause_and_elementary_record():
    cb = parse_copybook("01 R SIGN LEADING SEPARATE.\n 05 A PIC S9(2).\n 05 B PIC 9(2).\n 05 C PIC X.\n")
    a, b = cb.fields[0], cb.fields[1]
    assert (a.sign_leading, a.sign_separate, a.length) == (True, True, 3)
    assert (b.sign_separate, b.length) == (False, 2)  # unsigned items are not affected
    one = parse_copybook("       01  WHOLE-REC  PIC X(80).\n")
    assert one.name == "WHOLE_REC" and one.columns == ["WHOLE_REC"] and one.record_length == 80


def test_encode_errors_name_the_field():
    with pytest.raises(ValueError, match=r"V: value -1 at row 0 does not fit PIC 9\(3\) \(3 digits, unsigned\)"):
        encode_one("PIC 9(3)", -1)
    with pytest.raises(ValueError, match=r"V: value 10.00 at row 0 does not fit PIC S9V99 COMP-3 \(3 digits\)"):
        encode_one("PIC S9V99 COMP-3", Decimal("10.00"))
    with pytest.raises(ValueError, match="does not fit PIC ZZ9"):
        encode_one("PIC ZZ9", -1)
    with pytest.raises(ValueError, match="range -32768 to 32767"):
        encode_one("PIC S9(4) COMP-5", 40000)
    with pytest.raises(ValueError, match="not a multiple of 1000"):
        encode_one("PIC 9(3)PPP", 1234)
    with pytest.raises(ValueError, match="count 4 at row 0 is outside OCCURS 0 TO 3"):
        encode_matrix(ODO_BOOK, {"RIDER_COUNT": [4]}, 1)


def test_decode_file_accepts_a_path_string(tmp_path):
    path = tmp_path / "f.dat"
    path.write_bytes(small_record(5) * 2)
    (res,) = list(decode_file(str(path), SMALL, record_format="F", encoding="cp037"))
    assert res.table.to_pylist() == [{"record_no": 1, "ID": 5, "NAME": "AB"}, {"record_no": 2, "ID": 5, "NAME": "AB"}]
    with pytest.raises(ValueError, match="unknown encoding"):
        list(decode_file(str(path), SMALL, record_format="F", encoding="no-such-codepage"))
    with pytest.raises(ValueError, match="record_format"):
        list(decode_file(str(path), SMALL, record_format="X"))
