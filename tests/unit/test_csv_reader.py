"""The chunked CSV reader: typed parsing, one quarantine row per bad record, header errors, chunking."""

from __future__ import annotations

import csv
import io
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from legacy.csv_reader import CsvHeaderError, parse_amounts, read_csv_file

COLS = [
    {"name": "Id", "type": "integer"},
    {"name": "Name", "type": "text"},
    {"name": "Amt", "type": "amount", "scale": 2},
]


def write(tmp_path: Path, data: bytes, name: str = "t.csv") -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


def read_all(path: Path, cols=COLS, **kw) -> tuple[pa.Table, pa.Table, list]:
    results = list(read_csv_file(path, cols, **kw))
    good = pa.concat_tables([r.table for r in results])
    bad = pa.concat_tables([r.quarantine for r in results])
    return good, bad, results


def test_types_quoting_and_nulls(tmp_path):
    p = write(
        tmp_path,
        b'Id,Name,Amt\n1,"Smith, John","$1,234.56"\n2,"say ""hi""",1234.5\n3,,(120.00)\n4,plain,-120.00\n,x,\n',
    )
    good, bad, _ = read_all(p)
    assert bad.num_rows == 0
    assert good.schema.types == [pa.int64(), pa.int64(), pa.string(), pa.decimal128(18, 2)]
    assert good.to_pylist() == [
        {"record_no": 1, "Id": 1, "Name": "Smith, John", "Amt": Decimal("1234.56")},
        {"record_no": 2, "Id": 2, "Name": 'say "hi"', "Amt": Decimal("1234.50")},
        {"record_no": 3, "Id": 3, "Name": None, "Amt": Decimal("-120.00")},
        {"record_no": 4, "Id": 4, "Name": "plain", "Amt": Decimal("-120.00")},
        {"record_no": 5, "Id": None, "Name": "x", "Amt": None},
    ]


def test_amount_formats_are_exact():
    values = pa.array(["$1,234.56", "1234.5", "(120.00)", "-120.00", "$-5", "-$5", "7-", "($0.10)", ".5", "0", " 12 "])
    parsed, bad = parse_amounts(values, scale=2)
    assert bad.to_pylist() == [False] * len(values)
    assert parsed.to_pylist() == [Decimal(x) for x in
                                  ["1234.56", "1234.50", "-120.00", "-120.00", "-5.00", "-5.00", "-7.00", "-0.10", "0.50", "0.00", "12.00"]]
    bad_values = pa.array(["$1,2O4.50", "1.234,56", "N/A", "12.345", "1,23", "$", "--5", "(5", "1 000", "99999999999999999999"])
    parsed, bad = parse_amounts(bad_values, scale=2)
    assert bad.to_pylist() == [True] * len(bad_values)
    assert parsed.null_count == len(bad_values)


def test_column_count(tmp_path):
    data = b"Id,Name,Amt\n1,a,1\n2,Smith, John,5\n3,b\n4,c,4\n"
    p = write(tmp_path, data)
    good, bad, _ = read_all(p)
    assert good.column("record_no").to_pylist() == [1, 4]
    rows = bad.to_pylist()
    assert [(r["record_no"], r["reason"], r["field"]) for r in rows] == [(2, "column_count", None), (3, "column_count", None)]
    assert rows[0]["detail"] == "line 3: expected 3 columns, found 4"
    assert rows[1]["detail"] == "line 4: expected 3 columns, found 2"
    assert rows[0]["raw"] == b"2,Smith, John,5"
    assert rows[0]["offset"] == data.index(b"2,Smith")
    assert rows[1]["offset"] == data.index(b"3,b")


def test_empty_line_and_unbalanced_quote_are_quarantined_not_dropped(tmp_path):
    p = write(tmp_path, b'Id,Name,Amt\n1,a,1\n\n2,"open,2\n3,c,3\n')
    good, bad, _ = read_all(p)
    assert good.column("record_no").to_pylist() == [1, 4]
    assert [(r["record_no"], r["reason"]) for r in bad.to_pylist()] == [(2, "column_count"), (3, "column_count")]
    assert "line 3" in bad.column("detail")[0].as_py() and "line 4" in bad.column("detail")[1].as_py()


def test_invalid_encoding_names_the_column(tmp_path):
    data = "Id,Name,Amt\n1,Müller,1\n".encode() + b"2,M\xfcller,2\n" + b'3,"N\xfa\xf1ez, Jos\xe9",3\n'
    p = write(tmp_path, data)
    good, bad, _ = read_all(p)
    assert good.to_pylist() == [{"record_no": 1, "Id": 1, "Name": "Müller", "Amt": Decimal("1.00")}]
    rows = bad.to_pylist()
    assert [(r["record_no"], r["reason"], r["field"]) for r in rows] == [
        (2, "invalid_encoding", "Name"),
        (3, "invalid_encoding", "Name"),
    ]
    assert rows[0]["detail"].startswith("line 3: Name: byte 0xFC")
    assert rows[0]["raw"] == b"2,M\xfcller,2"
    assert rows[1]["offset"] == data.index(b'3,"N')


def test_other_encodings(tmp_path):
    data = "Id,Name,Amt\n1,Müller,1\n".encode("cp1252") + b"2,bad\x81byte,2\n"
    p = write(tmp_path, data)
    good, bad, _ = read_all(p, encoding="cp1252")
    assert good.column("Name").to_pylist() == ["Müller"]
    assert bad.to_pylist()[0]["reason"] == "invalid_encoding"
    good, bad, _ = read_all(p, encoding="latin-1")  # every byte is valid latin-1
    assert good.num_rows == 2 and bad.num_rows == 0


def test_invalid_number(tmp_path):
    p = write(tmp_path, b'Id,Name,Amt\n1,a,"$1,2O4.50"\nX2,b,5\n3,c,12.345\n4,d,"$1,204.50"\n')
    good, bad, _ = read_all(p)
    assert good.to_pylist() == [{"record_no": 4, "Id": 4, "Name": "d", "Amt": Decimal("1204.50")}]
    rows = bad.to_pylist()
    assert [(r["record_no"], r["reason"], r["field"]) for r in rows] == [
        (1, "invalid_number", "Amt"),
        (2, "invalid_number", "Id"),
        (3, "invalid_number", "Amt"),
    ]
    assert rows[0]["detail"] == "line 2: Amt: '$1,2O4.50' is not a valid amount (scale 2)"
    assert rows[1]["detail"].startswith("line 3: Id:")


def test_pii_values_are_masked_in_details(tmp_path):
    p = write(tmp_path, b"Id,Name,Amt\n1,a,secret-ish\n")
    _, bad, _ = read_all(p, pii=["Amt"])
    assert "secret" not in bad.column("detail")[0].as_py()
    assert bad.column("raw")[0].as_py() == b"1,a,secret-ish"  # raw keeps the evidence


@pytest.mark.parametrize(
    "header, needle",
    [
        (b"Id,Nme,Amt", "header column 2 is 'Nme', expected 'Name'"),
        (b"Id,Name", "column 3 'Amt' is missing"),
        (b"Id,Name,Amt,Extra", "unexpected header column 4 'Extra'"),
        (b"Name,Id,Amt", "header column 1 is 'Name', expected 'Id'"),
    ],
)
def test_header_mismatch_is_a_file_error(tmp_path, header, needle):
    p = write(tmp_path, header + b"\n1,a,1\n", name="policies.csv")
    with pytest.raises(CsvHeaderError) as ei:
        list(read_csv_file(p, COLS))
    msg = str(ei.value)
    assert isinstance(ei.value, ValueError)
    assert str(p) in msg and "line 1" in msg and needle in msg


def test_empty_file_is_a_header_error_but_header_only_is_fine(tmp_path):
    with pytest.raises(CsvHeaderError, match="line 1"):
        list(read_csv_file(write(tmp_path, b""), COLS))
    results = list(read_csv_file(write(tmp_path, b"Id,Name,Amt\n", "h.csv"), COLS))
    assert len(results) == 1 and results[0].table.num_rows == 0 and results[0].quarantine.num_rows == 0
    assert results[0].table.schema.names == ["record_no", "Id", "Name", "Amt"]


def test_bom_crlf_and_missing_final_newline(tmp_path):
    p = write(tmp_path, b'\xef\xbb\xbfId,Name,Amt\r\n1,"a, b",1\r\n2,c,2')
    good, bad, _ = read_all(p)
    assert bad.num_rows == 0
    assert good.to_pylist() == [
        {"record_no": 1, "Id": 1, "Name": "a, b", "Amt": Decimal("1.00")},
        {"record_no": 2, "Id": 2, "Name": "c", "Amt": Decimal("2.00")},
    ]


def test_no_header_and_other_delimiter(tmp_path):
    p = write(tmp_path, b"1|a|1\n2|b|x\n")
    good, bad, _ = read_all(p, header=False, delimiter="|")
    assert good.column("record_no").to_pylist() == [1]
    assert bad.to_pylist()[0]["detail"].startswith("line 2: Amt")


def _mixed_file() -> bytes:
    lines = [b"Id,Name,Amt"]
    for i in range(1, 58):
        if i % 11 == 0:
            lines.append(b"%d,Smith, J,%d" % (i, i))  # column_count
        elif i % 13 == 0:
            lines.append(b"%d,M\xfcller,%d" % (i, i))  # invalid_encoding
        elif i % 7 == 0:
            lines.append(b'%d,x,"$1,2O%d.00"' % (i, i))  # invalid_number
        else:
            lines.append(b'%d,"Name, %d","$%d,000.25"' % (i, i, i))
    return b"\n".join(lines) + b"\n"


@pytest.mark.parametrize("block_records", [1, 2, 3, 5, 8, 1000])
@pytest.mark.parametrize("read_bytes", [7, 64, 1 << 20])
def test_chunk_boundaries_do_not_change_the_result(tmp_path, block_records, read_bytes):
    p = write(tmp_path, _mixed_file())
    ref_good, ref_bad, _ = read_all(p, block_records=100_000)
    good, bad, results = read_all(p, block_records=block_records, read_bytes=read_bytes)
    assert all(r.table.num_rows + r.quarantine.num_rows <= block_records for r in results)
    assert good.equals(ref_good) and bad.equals(ref_bad)
    assert good.num_rows + bad.num_rows == 57
    assert sorted(good.column("record_no").to_pylist() + bad.column("record_no").to_pylist()) == list(range(1, 58))
    assert set(bad.column("reason").to_pylist()) == {"column_count", "invalid_encoding", "invalid_number"}
    # offsets point at the lines
    data = p.read_bytes()
    for r in bad.to_pylist():
        assert data[r["offset"] : r["offset"] + len(r["raw"])] == r["raw"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(
        st.tuples(
            st.integers(-(10**15), 10**15),
            st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=12),
            st.integers(-(10**12), 10**12),
        ),
        max_size=30,
    ),
    block_records=st.integers(1, 7),
)
def test_roundtrip_against_the_csv_module(tmp_path, rows, block_records):
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["Id", "Name", "Amt"])
    for i, name, cents in rows:
        sign = "-" if cents < 0 else ""
        w.writerow([i, name, f"{sign}${abs(cents) // 100:,}.{abs(cents) % 100:02d}"])
    p = write(tmp_path, buf.getvalue().encode(), "rt.csv")
    good, bad, _ = read_all(p, block_records=block_records)
    assert bad.num_rows == 0
    assert good.to_pylist() == [
        {"record_no": k + 1, "Id": i, "Name": name or None, "Amt": Decimal(cents) / 100}
        for k, (i, name, cents) in enumerate(rows)
    ]


def test_fields_and_records_over_the_limits_are_quarantined_never_parsed(tmp_path):
    long_name = "N" * 300
    huge = "Z" * 5_000
    p = write(tmp_path, f"Id,Name,Amt\n1,ok,1.00\n2,{long_name},2.00\n3,{huge},3.00\n4,\"{'Q' * 255}\",(4.00)\n".encode())
    good, bad, _ = read_all(p, max_field_bytes=256, max_record_bytes=1_024)
    assert good.column("record_no").to_pylist() == [1, 4]  # a value is measured without its quotes
    rows = {r["record_no"]: r for r in bad.to_pylist()}
    assert (rows[2]["reason"], rows[2]["field"]) == ("field_too_long", "Name")
    assert "line 3: Name: the value is 300 bytes, more than the 256 allowed" in rows[2]["detail"]
    assert (rows[3]["reason"], rows[3]["field"]) == ("record_too_long", None)
    assert "line 4: the record is 5,007 bytes, more than the 1,024 allowed" in rows[3]["detail"]
    assert rows[3]["offset"] == len(f"Id,Name,Amt\n1,ok,1.00\n2,{long_name},2.00\n".encode())
    assert set(rows) == {2, 3}


def test_a_record_far_beyond_arrows_block_is_quarantined_with_its_raw_bytes_capped(tmp_path):
    from legacy.csv_reader import RAW_CAP

    big = "B" * (3 << 20)  # longer than pyarrow's 1 MiB default block
    p = write(tmp_path, f"Id,Name,Amt\n1,a,1\n2,{big},2\n3,c,3\n".encode())
    good, bad, _ = read_all(p)  # default limits: 64 KiB field, 1 MiB record
    assert good.column("record_no").to_pylist() == [1, 3]
    (row,) = bad.to_pylist()
    assert row["reason"] == "record_too_long" and len(row["raw"]) == RAW_CAP
    # a long value under the record limit but over the field limit: parsed, then quarantined by field
    p = write(tmp_path, f"Id,Name,Amt\n1,{'F' * (100 << 10)},1\n".encode(), "f.csv")
    good, bad, _ = read_all(p)
    assert good.num_rows == 0 and bad.column("reason").to_pylist() == ["field_too_long"]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lengths=st.lists(st.integers(0, 120), min_size=1, max_size=30), limit=st.integers(1, 100),
       block_records=st.integers(1, 7))
def test_every_line_is_staged_or_quarantined_whatever_the_limits(tmp_path, lengths, limit, block_records):
    body = "".join(f"{i},{'v' * n},1\n" for i, n in enumerate(lengths))
    p = write(tmp_path, ("Id,Name,Amt\n" + body).encode())
    good, bad, _ = read_all(p, max_field_bytes=limit, max_record_bytes=limit + 8, block_records=block_records)
    assert sorted(good.column("record_no").to_pylist() + bad.column("record_no").to_pylist()) == \
        list(range(1, len(lengths) + 1))
    too_long = {i + 1 for i, n in enumerate(lengths) if n > limit or len(f"{i},{'v' * n},1") > limit + 8}
    assert set(bad.column("record_no").to_pylist()) == too_long
