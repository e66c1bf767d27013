"""Property test: random copybooks and values survive encode -> frame -> decode exactly.

Copybooks mix text, zoned (all sign forms), packed, binary (COMP / COMP-5),
COMP-1/COMP-2, edited pictures and P scaling, with OCCURS on groups and
elementary items and an optional OCCURS DEPENDING ON table at the end.
Both EBCDIC (cp037) and ASCII, both RECFM F and V, with small blocks.
"""

from __future__ import annotations

import io
from decimal import Decimal

import numpy as np
import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from legacy.copybook import REASON_CODES, Copybook, Field, decode_file, encode_records, parse_copybook

EDITED = ["-ZZ,ZZ9.99", "$$$,$$9.99CR", "ZZZ9.99DB", "+9(5)", "***9.99", "ZZZ.ZZ", "ZZ9", "----9",
          "++++9.9", "$$$$", "99/99/99", "Z,ZZ9-", "$ZZ9.99", "ZZZZV99", "+++,+++", "**,**9.99", "9B99",
          "990", "-$ZZ9.99", "ZZZ,ZZZ.ZZ", "BZZ9", "$$,$$$.99-", "*(5).**"]
NUMERIC = ["9(1)", "9(4)", "S9(5)", "S9(7)V99", "9(3)V9(4)", "S9(18)", "S9(9)V9(9)", "9(3)PPP", "SPPP99",
           "SVPP9(3)", "S9(20)", "S9(15)V9(10)", "S99PP", "S9(17)PP"]
BINARY = ["S9(4)", "9(4)", "S9(9)", "9(9)", "S9(18)", "9(18)", "S9(5)V99", "S9(3)PP", "9(2)V9", "9(17)PPP"]
TEXT_ALPHABET = {
    "ascii": st.characters(min_codepoint=0x20, max_codepoint=0x7E),
    "cp037": st.sampled_from(list("ABCXYZabcxyz0189 -.,/'&()*äéüßñÀÉÖ¢")),
}


@st.composite
def elementary(draw, name: str) -> str:
    kind = draw(st.sampled_from(["text", "zoned", "zoned_sign", "packed", "binary", "comp5", "float", "edited"]))
    if kind == "text":
        return f"{name} PIC X({draw(st.integers(1, 12))})"
    if kind == "zoned":
        return f"{name} PIC {draw(st.sampled_from(NUMERIC))}"
    if kind == "zoned_sign":
        pic = draw(st.sampled_from([p for p in NUMERIC if p.startswith("S")]))
        sign = draw(st.sampled_from(["SIGN LEADING", "SIGN TRAILING", "SIGN IS LEADING SEPARATE",
                                     "SIGN TRAILING SEPARATE CHARACTER"]))
        return f"{name} PIC {pic} {sign}"
    if kind == "packed":
        return f"{name} PIC {draw(st.sampled_from(NUMERIC))} {draw(st.sampled_from(['COMP-3', 'PACKED-DECIMAL']))}"
    if kind == "binary":
        return f"{name} PIC {draw(st.sampled_from(BINARY))} {draw(st.sampled_from(['COMP', 'BINARY', 'COMP-4']))}"
    if kind == "comp5":
        return f"{name} PIC {draw(st.sampled_from(BINARY))} COMP-5"
    if kind == "float":
        return f"{name} {draw(st.sampled_from(['COMP-1', 'COMP-2']))}"
    return f"{name} PIC {draw(st.sampled_from(EDITED))}"


@st.composite
def copybooks(draw) -> str:
    lines = ["01 REC."]
    k = 0
    for g in range(draw(st.integers(1, 4))):
        occurs = draw(st.sampled_from(["", "", " OCCURS 2", " OCCURS 3 TIMES"]))
        if draw(st.booleans()):
            lines.append(f"  05 G{g}{occurs}.")
            for _ in range(draw(st.integers(1, 3))):
                k += 1
                inner = draw(st.sampled_from(["", "", " OCCURS 2"]))
                lines.append(f"    10 {draw(elementary(f'F{k}'))}{inner}.")
        else:
            k += 1
            lines.append(f"  05 {draw(elementary(f'F{k}'))}{occurs}.")
    if draw(st.booleans()):
        maxn = draw(st.integers(1, 4))
        lines.append(f"  05 CNT PIC {draw(st.sampled_from(['9(2)', 'S9(4) COMP', '9(3) COMP-3']))}.")
        lines.append(f"  05 TBL OCCURS {draw(st.integers(0, maxn))} TO {maxn} TIMES DEPENDING ON CNT.")
        for _ in range(draw(st.integers(1, 2))):
            k += 1
            lines.append(f"    10 {draw(elementary(f'F{k}'))}.")
    return "\n".join(lines) + "\n"


def _float_values(draw, f: Field, n: int) -> list[float]:
    if f.float_bytes == 4:  # at most 21 significant bits: exact in IBM HFP and IEEE single
        m = draw(st.lists(st.integers(-(2**21) + 1, 2**21 - 1), min_size=n, max_size=n))
        e = draw(st.lists(st.integers(-60, 60), min_size=n, max_size=n))
        return [float(np.ldexp(float(a), b)) for a, b in zip(m, e)]
    xs = draw(st.lists(st.floats(min_value=-1e70, max_value=1e70, allow_nan=False, allow_infinity=False),
                       min_size=n, max_size=n))
    return [0.0 if abs(x) < 1e-70 else x for x in xs]


def _int_range(f: Field) -> tuple[int, int]:
    if f.kind == "binary" and f.native_binary:
        bits = 8 * f.length
        return (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if f.signed else (0, 2**bits - 1)
    hi = 10**f.digits - 1
    return (-hi if f.signed else 0), hi


@st.composite
def records(draw, encoding: str):
    cb = parse_copybook(draw(copybooks()), source="RANDOM.cpy")
    n = draw(st.integers(1, 7))
    counts = None
    if cb.odo is not None:
        counts = draw(st.lists(st.integers(cb.odo.min_count, cb.odo.max_count), min_size=n, max_size=n))
    columns: dict[str, object] = {}
    expected: dict[str, list] = {}
    for f in cb.fields:
        if f.filler:
            continue
        if cb.odo is not None and f.name == cb.odo.counter:
            columns[f.name] = np.array(counts, np.int64)
            expected[f.name] = counts
            continue
        if f.kind == "text":
            vals = draw(st.lists(st.one_of(st.none(), st.text(TEXT_ALPHABET[encoding], max_size=f.length)
                                           .map(str.rstrip)), min_size=n, max_size=n))
            columns[f.name] = vals
            exp = vals
        elif f.kind == "float":
            vals = _float_values(draw, f, n)
            columns[f.name] = np.array(vals, np.float64)
            exp = vals
        else:
            lo, hi = _int_range(f)
            unscaled = draw(st.lists(st.integers(lo, hi), min_size=n, max_size=n))
            if f.scale > 0:
                decs = [Decimal(u).scaleb(-f.scale) for u in unscaled]
                form = draw(st.sampled_from(["decimal_list", "unscaled_numpy", "arrow"]))
                if form == "decimal_list":
                    columns[f.name] = decs
                elif form == "unscaled_numpy" and all(-(2**63) < u < 2**63 for u in unscaled):
                    columns[f.name] = np.array(unscaled, np.int64)
                else:
                    columns[f.name] = pa.array(decs, pa.decimal128(38, f.scale))
                exp = decs
            else:
                vals = [u * 10 ** -f.scale for u in unscaled]
                if all(-(2**63) < v < 2**63 for v in vals) and draw(st.booleans()):
                    columns[f.name] = np.array(vals, np.int64)
                else:
                    columns[f.name] = vals
                exp = vals if f.arrow_type == pa.int64() else [Decimal(v) for v in vals]
        if f.odo is not None:
            exp = [v if counts[r] >= f.odo.index else None for r, v in enumerate(exp)]
        expected[f.name] = exp
    return cb, n, columns, expected


def check_round_trip(cb: Copybook, n: int, columns, expected, encoding: str, record_format: str, block: int):
    data = encode_records(cb, columns, n, encoding=encoding, record_format=record_format)
    results = list(decode_file(io.BytesIO(data), cb, record_format=record_format, encoding=encoding,
                               block_records=block))
    bad = [row for r in results for row in r.quarantine.to_pylist()]
    assert not bad, bad
    table = pa.concat_tables([r.table for r in results])
    assert table.column("record_no").to_pylist() == list(range(1, n + 1))
    for name in cb.columns:
        got = table.column(name).to_pylist()
        assert got == expected[name], (name, cb.field(name), got, expected[name])
    assert table.schema == cb.schema


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.data(), st.sampled_from(["cp037", "ascii"]), st.sampled_from(["F", "V"]), st.integers(1, 4))
def test_random_copybooks_round_trip(data, encoding, record_format, block):
    cb, n, columns, expected = data.draw(records(encoding))
    check_round_trip(cb, n, columns, expected, encoding, record_format, block)


@settings(max_examples=40, deadline=None)
@given(st.binary(min_size=4, max_size=4), st.sampled_from(["cp037", "ascii"]))
def test_decoded_bytes_reencode_to_the_same_bytes(raw, encoding):
    """Any valid packed/zoned/binary bytes written in the preferred form decode and re-encode identically."""
    from legacy.copybook import RecordBlock, decode_block

    cb = parse_copybook("01 R.\n 05 B PIC S9(9) COMP-5.\n", source="B.cpy")
    blk = RecordBlock(1, np.frombuffer(raw, np.uint8).reshape(1, 4), np.array([4]), np.array([0]))
    res = decode_block(cb, blk, encoding=encoding)
    assert encode_records(cb, {"B": res.table.column("B")}, 1, encoding=encoding) == raw


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.data(), st.sampled_from(["cp037", "ascii"]), st.sampled_from(["F", "V"]))
def test_damaged_files_account_for_every_record(data, encoding, record_format):
    """Flip random bytes of a valid file: nothing crashes, every record is good or quarantined exactly once."""
    cb = parse_copybook(data.draw(copybooks()), source="RANDOM.cpy")
    n = data.draw(st.integers(1, 6))
    columns = {cb.odo.counter: [cb.odo.max_count] * n} if cb.odo else {}
    raw = bytearray(encode_records(cb, columns, n, encoding=encoding, record_format=record_format))
    for _ in range(data.draw(st.integers(0, 4))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        raw += bytes(data.draw(st.integers(1, 5)))  # trailing junk
    results = list(decode_file(io.BytesIO(bytes(raw)), cb, record_format=record_format, encoding=encoding,
                               block_records=data.draw(st.integers(1, 4))))
    good = [x for r in results for x in r.table.column("record_no").to_pylist()]
    bad = [x for r in results for x in r.quarantine.column("record_no").to_pylist()]
    numbers = sorted(good + bad)
    assert numbers == list(range(1, len(numbers) + 1))
    if record_format == "F":
        assert len(numbers) == len(raw) // cb.record_length + (1 if len(raw) % cb.record_length else 0)
    for r in results:
        assert r.table.schema == cb.schema
        for row in r.quarantine.to_pylist():
            assert row["reason"] in REASON_CODES and row["detail"]
            assert row["field"] is None or row["field"] in cb.columns
