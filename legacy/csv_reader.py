"""Chunked, vectorized reader for delimited (CSV) legacy extracts.

The reader turns one CSV file into a stream of :class:`legacy.copybook.DecodeResult`
blocks, exactly like the copybook decoder does for mainframe files:

* ``table`` holds the good records: ``record_no`` (1-based data record ordinal,
  header excluded) plus one typed column per configured column
  (``text`` -> string, empty -> null; ``integer`` -> int64; ``amount`` -> exact
  ``decimal128(precision, scale)``).
* ``quarantine`` holds one row per bad record (``record_no``, ``offset`` = byte
  offset of the line in the file, ``field``, ``reason``, ``detail`` naming the
  line number, ``raw`` = the line's bytes without its line terminator).

Reason codes: ``column_count`` (wrong number of fields, an empty line or a line
whose quotes do not balance), ``invalid_encoding`` (bytes that are not valid in
the declared encoding; ``field`` = the column), ``invalid_number`` (an
integer/amount column that does not parse; ``field`` = the column),
``record_too_long`` (a line longer than ``max_record_bytes``; it never reaches
the CSV parser, and its ``raw`` holds only its first ``RAW_CAP`` bytes) and
``field_too_long`` (a value longer than ``max_field_bytes``; ``field`` = the
column).

A record is never dropped silently: for every block, good + quarantined = the
data lines of that block.  A header that does not match the configured columns
is a malformed *file* and raises :class:`CsvHeaderError` (a ``ValueError``)
naming the file, line 1 and the mismatching column.

Records are physical lines: a quoted value that spans lines is not supported
(both halves are quarantined as ``column_count``, visibly, never merged).  The
declared encoding must be ASCII-compatible (utf-8, latin-1, cp1252, ...).

Memory stays flat: the file is read in byte blocks split at newlines, every
block is split into lines with numpy, parsed with ``pyarrow.csv`` and typed
with ``pyarrow.compute``.  Python only loops over the (rare) bad lines.
"""

from __future__ import annotations

import codecs
import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from legacy.copybook import QUARANTINE_SCHEMA, DecodeResult
from legacy.errors import InputError

__all__ = [
    "CsvColumn",
    "CsvHeaderError",
    "QUARANTINE_SCHEMA",
    "arrow_type",
    "parse_amounts",
    "parse_integers",
    "read_csv_file",
    "read_header_line",
]

COLUMN_TYPES = ("text", "integer", "amount")

DEFAULT_MAX_FIELD_BYTES = 64 << 10
DEFAULT_MAX_RECORD_BYTES = 1 << 20
RAW_CAP = 64 << 10  # raw bytes kept of a record too long to keep whole
SHOWN_VALUE = 64  # characters of a value shown in a quarantine detail

_UTF8_COMPATIBLE = {"utf_8", "utf-8", "utf8", "ascii", "us_ascii", "us-ascii", "646"}

# pyarrow regexes (RE2).  An amount is a number with optional thousands
# separators, an optional currency sign and a sign written as a leading/trailing
# minus or as accounting parentheses.
_INT_RE = r"^[-+]?\d+$"


def _amount_re(scale: int) -> str:
    frac = rf"(?:\.\d{{0,{scale}}})?" if scale > 0 else r"(?:\.0*)?"
    frac_only = rf"\.\d{{1,{scale}}}" if scale > 0 else r"\.0+"
    num = rf"(?:(?:\d{{1,3}}(?:,\d{{3}})+|\d+){frac}|{frac_only})"
    return rf"^(?:[-+]?\$?{num}|\$[-+]{num}|\(\$?{num}\)|\$?{num}-)$"


class CsvHeaderError(InputError):
    """The header line does not match the configured columns (malformed file)."""


@dataclass(frozen=True)
class CsvColumn:
    name: str
    type: str = "text"
    scale: int = 2
    precision: int = 18

    def __post_init__(self) -> None:
        if self.type not in COLUMN_TYPES:
            raise ValueError(f"column {self.name!r}: unknown type {self.type!r} (expected one of {COLUMN_TYPES})")
        if not 0 <= self.scale <= 18 or not 1 <= self.precision <= 18 or self.scale > self.precision:
            raise ValueError(f"column {self.name!r}: bad precision/scale {self.precision}/{self.scale}")


def _as_column(c: Any) -> CsvColumn:
    if isinstance(c, CsvColumn):
        return c
    if isinstance(c, str):
        return CsvColumn(c)
    if isinstance(c, Mapping):
        return CsvColumn(**{k: v for k, v in c.items() if k in ("name", "type", "scale", "precision") and v is not None})
    kw = {k: getattr(c, k) for k in ("name", "type", "scale", "precision") if getattr(c, k, None) is not None}
    return CsvColumn(**kw)


def arrow_type(column: Any) -> pa.DataType:
    """The arrow type a configured column is parsed into."""
    c = _as_column(column)
    if c.type == "integer":
        return pa.int64()
    if c.type == "amount":
        return pa.decimal128(c.precision, c.scale)
    return pa.string()


# --------------------------------------------------------------------------- typed conversion


def parse_integers(values: pa.Array) -> tuple[pa.Array, pa.Array]:
    """Strings -> (int64 array, bad mask).  Empty/blank -> null (not bad)."""
    s = pc.utf8_trim_whitespace(values)
    empty = pc.fill_null(pc.equal(s, ""), True)
    ok = pc.and_(pc.match_substring_regex(s, _INT_RE), pc.less_equal(pc.utf8_length(s), 19))
    ok = pc.fill_null(ok, False)
    digits = pc.utf8_length(pc.utf8_ltrim(s, "+-"))
    ok = pc.and_(ok, pc.fill_null(pc.less_equal(digits, 18), False))
    bad = pc.and_(pc.invert(empty), pc.invert(ok))
    good = pc.and_(pc.invert(empty), ok)
    cleaned = pc.if_else(good, s, pa.scalar(None, pa.string()))
    return pc.cast(cleaned, pa.int64()), bad


def parse_amounts(values: pa.Array, scale: int = 2, precision: int = 18) -> tuple[pa.Array, pa.Array]:
    """Formatted money strings -> (exact decimal128(precision, scale), bad mask).

    Accepts ``$1,234.56``, ``1234.5``, ``(120.00)``, ``-120.00``, ``-$5``, ``$-5``,
    ``120.00-``.  More fractional digits than ``scale`` or more integer digits
    than ``precision - scale`` is bad (never rounded).  Empty -> null.
    """
    s = pc.utf8_trim_whitespace(values)
    empty = pc.fill_null(pc.equal(s, ""), True)
    ok = pc.fill_null(pc.match_substring_regex(s, _amount_re(scale)), False)
    neg = pc.or_(
        pc.or_(pc.starts_with(s, "-"), pc.starts_with(s, "(")),
        pc.or_(pc.starts_with(s, "$-"), pc.ends_with(s, "-")),
    )
    digits = pc.replace_substring_regex(s, r"[^0-9.]", "")
    parts = pc.extract_regex(pc.if_else(ok, digits, pa.scalar("0", pa.string())), r"^(?P<i>\d*)(?:\.(?P<f>\d*))?$")
    ipart = pc.utf8_ltrim(pc.struct_field(parts, [0]), "0")
    fpart = pc.struct_field(parts, [1])
    ok = pc.and_(ok, pc.fill_null(pc.less_equal(pc.utf8_length(ipart), precision - scale), False))
    bad = pc.and_(pc.invert(empty), pc.invert(ok))
    good = pc.and_(pc.invert(empty), ok)
    ipart = pc.if_else(pc.equal(ipart, ""), pa.scalar("0", pa.string()), ipart)
    if scale > 0:
        norm = pc.binary_join_element_wise(ipart, pc.utf8_rpad(fpart, scale, "0"), ".")
    else:
        norm = ipart
    norm = pc.if_else(pc.fill_null(neg, False), pc.binary_join_element_wise("-", norm, ""), norm)
    norm = pc.if_else(good, norm, pa.scalar(None, pa.string()))
    return pc.cast(norm, pa.decimal128(precision, scale)), bad


# --------------------------------------------------------------------------- reader


def _normalize_encoding(encoding: str) -> str:
    try:
        return codecs.lookup(encoding).name
    except LookupError as exc:
        raise ValueError(f"unknown encoding {encoding!r}") from exc


def _split_header(line: bytes, encoding: str, delimiter: str, quotechar: str) -> list[str]:
    text = line.decode(encoding)
    rows = list(csv.reader([text], delimiter=delimiter, quotechar=quotechar))
    return [f.strip() for f in rows[0]] if rows else []


def read_header_line(f, path: Path, max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES) -> bytes:
    """The first line (with its newline), read with a bound: a file without newlines is not read whole."""
    limit = max(max_record_bytes, 1 << 20)
    first = f.readline(limit + 2)
    if len(first) > limit and not first.endswith(b"\n"):
        raise CsvHeaderError(f"{path}: line 1: longer than {limit:,} bytes, so not a header line")
    return first


def _check_header(path: Path, line: bytes, names: Sequence[str], encoding: str, delimiter: str, quotechar: str) -> None:
    try:
        found = _split_header(line.rstrip(b"\r"), encoding, delimiter, quotechar)
    except UnicodeDecodeError as exc:
        raise CsvHeaderError(f"{path}: line 1: header is not valid {encoding}: {exc.reason} at byte {exc.start}") from exc
    except csv.Error as exc:  # e.g. a carriage return inside the line
        raise CsvHeaderError(f"{path}: line 1: header cannot be split into columns: {exc}") from None
    for i, expected in enumerate(names):
        got = found[i] if i < len(found) else None
        if got != expected:
            if got is None:
                raise CsvHeaderError(
                    f"{path}: line 1: header has {len(found)} columns; column {i + 1} {expected!r} is missing"
                )
            raise CsvHeaderError(f"{path}: line 1: header column {i + 1} is {got!r}, expected {expected!r}")
    if len(found) > len(names):
        raise CsvHeaderError(
            f"{path}: line 1: unexpected header column {len(names) + 1} {found[len(names)]!r} "
            f"(expected {len(names)} columns)"
        )


def _iter_line_blocks(
    f: io.BufferedReader, start: int, block_records: int, read_bytes: int
) -> Iterator[tuple[bytes, np.ndarray, np.ndarray, int]]:
    """Yield (buffer, line starts, line ends incl. newline, file offset of buffer) with <= block_records lines."""
    carry = b""
    carry_off = start
    eof = False
    while not eof:
        chunk = f.read(read_bytes)
        eof = not chunk
        buf = carry + chunk if carry else chunk
        if not buf:
            break
        arr = np.frombuffer(buf, dtype=np.uint8)
        nl = np.flatnonzero(arr == 10)
        if eof:
            ends = nl + 1
            if len(buf) and (len(nl) == 0 or nl[-1] != len(buf) - 1):
                ends = np.append(ends, len(buf))
        else:
            ends = nl + 1
        n = len(ends)
        if not eof:
            usable = (n // block_records) * block_records
            if usable == 0:
                carry = buf
                continue
        else:
            usable = n
        starts = np.empty(n, dtype=np.int64)
        if n:
            starts[0] = 0
            starts[1:] = ends[:-1]
        for b in range(0, usable, block_records):
            e = min(b + block_records, usable)
            s0 = int(starts[b])
            s1 = int(ends[e - 1])
            yield buf[s0:s1], starts[b:e] - s0, ends[b:e] - s0, carry_off + s0
        consumed = int(ends[usable - 1]) if usable else 0
        carry = buf[consumed:]
        carry_off += consumed


class _BadLines:
    """Collects quarantine rows for one block."""

    def __init__(self) -> None:
        self.idx: list[int] = []
        self.field: list[str | None] = []
        self.reason: list[str] = []
        self.detail: list[str] = []

    def add(self, i: int, field: str | None, reason: str, detail: str) -> None:
        self.idx.append(int(i))
        self.field.append(field)
        self.reason.append(reason)
        self.detail.append(detail)


def _field_of_bad_byte(line: bytes, encoding: str, delimiter: str, quotechar: str, names: Sequence[str]) -> tuple[str | None, str]:
    """Which column of a line holds bytes that are invalid in the encoding."""
    try:
        fields = next(csv.reader([line.decode("latin-1")], delimiter=delimiter, quotechar=quotechar), [])
    except csv.Error:  # a carriage return inside the line: name no column
        fields = []
    for i, value in enumerate(fields):
        raw = value.encode("latin-1")
        try:
            raw.decode(encoding)
        except UnicodeDecodeError as exc:
            name = names[i] if i < len(names) else f"<column {i + 1}>"
            return name, f"byte 0x{raw[exc.start]:02X} at position {exc.start + 1} is not valid {encoding}"
    try:
        line.decode(encoding)
    except UnicodeDecodeError as exc:
        return None, f"byte 0x{line[exc.start]:02X} at position {exc.start + 1} is not valid {encoding}"
    return None, f"not valid {encoding}"  # pragma: no cover - only called for lines that fail to decode


def _shown(value: str) -> str:
    """A value as a quarantine detail shows it: quoted, and cut after SHOWN_VALUE characters."""
    return repr(value) if len(value) <= SHOWN_VALUE else repr(value[:SHOWN_VALUE]) + "…"


def _parse_fallback(text_lines: list[str], ncols: int, delimiter: str, quotechar: str) -> tuple[list[list[str]], list[tuple[int, int | str]]]:
    """Per-line parse with the csv module (used only if pyarrow's row accounting disagrees)."""
    rows: list[list[str]] = []
    bad: list[tuple[int, int | str]] = []  # (fed index, found columns or what was found)
    for i, t in enumerate(text_lines):
        try:
            fields = next(csv.reader([t], delimiter=delimiter, quotechar=quotechar), [])
        except csv.Error:  # a carriage return inside the line: not one record (quarantined, never a crash)
            bad.append((i, "a carriage return inside the line"))
            continue
        if len(fields) != ncols:
            bad.append((i, len(fields)))
        else:
            rows.append(fields)
    return rows, bad


def _process_block(
    buf: bytes,
    starts: np.ndarray,
    ends: np.ndarray,
    file_off: int,
    first_line_no: int,
    header_lines: int,
    cols: Sequence[CsvColumn],
    encoding: str,
    delimiter: str,
    quotechar: str,
    pii: frozenset[str],
    max_field_bytes: int = DEFAULT_MAX_FIELD_BYTES,
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
) -> DecodeResult:
    names = [c.name for c in cols]
    ncols = len(cols)
    arr = np.frombuffer(buf, dtype=np.uint8)
    n = len(starts)
    # content end: strip "\n" and a preceding "\r"
    cend = ends.copy()
    has_nl = (cend > starts) & (arr[np.maximum(cend - 1, 0)] == 10)
    cend = cend - has_nl
    has_cr = (cend > starts) & (arr[np.maximum(cend - 1, 0)] == 13)
    cend = cend - has_cr
    line_no = first_line_no + np.arange(n, dtype=np.int64)

    bad = _BadLines()
    is_bad = np.zeros(n, dtype=bool)

    # a line too long to be a record is never handed to the parser (nor kept whole in the quarantine)
    too_long = (cend - starts) > max_record_bytes
    for i in np.flatnonzero(too_long):
        length = int(cend[i] - starts[i])
        bad.add(i, None, "record_too_long",
                f"line {line_no[i]}: the record is {length:,} bytes, more than the {max_record_bytes:,} allowed "
                f"(limits.max_record_bytes of the source); raw holds its first {min(length, RAW_CAP):,} bytes")
    is_bad |= too_long

    # empty lines and lines whose quotes do not balance cannot be split reliably
    empty = cend == starts
    qpos = np.flatnonzero(arr == ord(quotechar))
    qcount = np.searchsorted(qpos, cend) - np.searchsorted(qpos, starts)
    odd = (qcount % 2 == 1) & ~empty & ~too_long
    for i in np.flatnonzero(empty):
        bad.add(i, None, "column_count", f"line {line_no[i]}: expected {ncols} columns, found an empty line")
    for i in np.flatnonzero(odd):
        bad.add(i, None, "column_count", f"line {line_no[i]}: expected {ncols} columns, quotes do not balance")
    is_bad |= empty | odd

    # encoding: validate the whole block in C; only on failure look at single lines
    utf8_ok = encoding in _UTF8_COMPATIBLE
    try:
        decoded = buf.decode(encoding)
    except UnicodeDecodeError:
        decoded = None
        for i in range(n):
            if is_bad[i]:
                continue
            line = buf[starts[i] : cend[i]]
            try:
                line.decode(encoding)
            except UnicodeDecodeError:
                field, why = _field_of_bad_byte(line, encoding, delimiter, quotechar, names)
                bad.add(i, field, "invalid_encoding", f"line {line_no[i]}: {field or 'record'}: {why}")
                is_bad[i] = True

    fed_idx = np.flatnonzero(~is_bad)
    seg = ends - starts
    if len(fed_idx) == n and decoded is not None:
        fed = buf
    else:
        fed = arr[np.repeat(~is_bad, seg)].tobytes()
        if len(fed_idx) and fed[-1:] != b"\n":
            fed += b"\n"
    if not utf8_ok:
        fed = fed.decode(encoding).encode("utf-8")

    strings: list[pa.Array]
    invalid: list[tuple[int, int]] = []  # (fed index, found columns)
    if len(fed_idx):
        rows_invalid: list[tuple[int, int, str]] = []

        def handler(row: Any) -> str:
            rows_invalid.append((row.number, row.actual_columns, row.text))
            return "skip"

        tmp_names = [f"c{i}" for i in range(ncols)]
        longest = int(seg[fed_idx].max()) if len(fed_idx) else 0  # a block must hold any one line whole
        try:
            t = pacsv.read_csv(
                io.BytesIO(fed),
                read_options=pacsv.ReadOptions(
                    column_names=tmp_names, use_threads=False,
                    block_size=max(1 << 20, min(len(fed) + 1, 1 << 26), 2 * longest + 2)
                ),
                parse_options=pacsv.ParseOptions(
                    delimiter=delimiter,
                    quote_char=quotechar,
                    double_quote=True,
                    escape_char=False,
                    newlines_in_values=False,
                    ignore_empty_lines=True,
                    invalid_row_handler=handler,
                ),
                convert_options=pacsv.ConvertOptions(
                    column_types={c: pa.string() for c in tmp_names},
                    strings_can_be_null=False,
                    quoted_strings_can_be_null=False,
                    null_values=[],
                ),
            )
            numbers = [r[0] for r in rows_invalid]
            consistent = (
                t.num_rows + len(rows_invalid) == len(fed_idx)
                and all(1 <= k <= len(fed_idx) for k in numbers)
                and len(set(numbers)) == len(numbers)
                and not any("\n" in r[2] for r in rows_invalid)
            )
        except pa.ArrowInvalid:
            consistent = False
        if consistent:
            strings = [t.column(i).combine_chunks() for i in range(ncols)]
            invalid = [(k - 1, actual) for k, actual, _ in rows_invalid]
        else:
            text_lines = fed.decode("utf-8").split("\n")[: len(fed_idx)]
            text_lines = [tl[:-1] if tl.endswith("\r") else tl for tl in text_lines]
            rows, invalid = _parse_fallback(text_lines, ncols, delimiter, quotechar)
            strings = [pa.array([r[i] for r in rows], pa.string()) for i in range(ncols)]
    else:
        strings = [pa.array([], pa.string()) for _ in range(ncols)]

    keep_fed = np.ones(len(fed_idx), dtype=bool)
    for k, actual in invalid:
        i = fed_idx[k]
        bad.add(i, None, "column_count", f"line {line_no[i]}: expected {ncols} columns, found {actual}")
        keep_fed[k] = False
        is_bad[i] = True
    good_idx = fed_idx[keep_fed]  # block line index of each parsed row

    # typed conversion; the first bad column of a row is reported
    typed: list[pa.Array] = []
    row_bad = np.zeros(len(good_idx), dtype=bool)
    for c, s in zip(cols, strings):  # values too long to stage first: nothing downstream sees them
        length = pc.binary_length(s).to_numpy(zero_copy_only=False)
        for k in np.flatnonzero((length > max_field_bytes) & ~row_bad):
            i = good_idx[k]
            bad.add(i, c.name, "field_too_long",
                    f"line {line_no[i]}: {c.name}: the value is {int(length[k]):,} bytes, more than the "
                    f"{max_field_bytes:,} allowed (limits.max_field_bytes of the source)")
            row_bad[k] = True
    for c, s in zip(cols, strings):
        if c.type == "text":
            typed.append(pc.if_else(pc.equal(s, ""), pa.scalar(None, pa.string()), s))
            continue
        if c.type == "integer":
            values, badm = parse_integers(s)
            kind = "integer"
        else:
            values, badm = parse_amounts(s, c.scale, c.precision)
            kind = f"amount (scale {c.scale})"
        typed.append(values)
        bm = badm.to_numpy(zero_copy_only=False)
        for k in np.flatnonzero(bm & ~row_bad):
            i = good_idx[k]
            shown = "****" if c.name in pii else _shown(s[int(k)].as_py())
            bad.add(i, c.name, "invalid_number", f"line {line_no[i]}: {c.name}: {shown} is not a valid {kind}")
        row_bad |= bm
    keep = pa.array(~row_bad)
    record_no = pa.array(line_no[good_idx] - header_lines, pa.int64())
    table = pa.Table.from_arrays(
        [record_no] + typed,
        schema=pa.schema([("record_no", pa.int64())] + [(c.name, arrow_type(c)) for c in cols]),
    )
    if row_bad.any():
        table = table.filter(keep)

    if bad.idx:
        order = np.argsort(np.asarray(bad.idx), kind="stable")
        idx = np.asarray(bad.idx)[order]
        quarantine = pa.Table.from_arrays(
            [
                pa.array(line_no[idx] - header_lines, pa.int64()),
                pa.array(file_off + starts[idx], pa.int64()),
                pa.array([bad.field[j] for j in order], pa.string()),
                pa.array([bad.reason[j] for j in order], pa.string()),
                pa.array([bad.detail[j] for j in order], pa.string()),
                pa.array([buf[starts[i] : min(cend[i], starts[i] + RAW_CAP) if too_long[i] else cend[i]]
                          for i in idx], pa.binary()),
            ],
            schema=QUARANTINE_SCHEMA,
        )
    else:
        quarantine = QUARANTINE_SCHEMA.empty_table()
    if table.num_rows + quarantine.num_rows != n:  # pragma: no cover - internal invariant
        raise RuntimeError(
            f"internal error: block at line {first_line_no}: {table.num_rows} good + "
            f"{quarantine.num_rows} quarantined != {n} lines"
        )
    return DecodeResult(table=table, quarantine=quarantine)


def read_csv_file(
    path: str | Path,
    columns: Sequence[Any],
    *,
    encoding: str = "utf-8",
    delimiter: str = ",",
    quotechar: str = '"',
    header: bool = True,
    block_records: int = 50_000,
    read_bytes: int = 8 << 20,
    pii: Iterable[str] = (),
    max_field_bytes: int = DEFAULT_MAX_FIELD_BYTES,
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
) -> Iterator[DecodeResult]:
    """Stream a CSV file as DecodeResult blocks of at most ``block_records`` records.

    ``columns``: the configured columns in file order (objects/dicts with ``name``,
    ``type`` text|integer|amount, ``scale``, ``precision``; or plain names = text).
    Values of ``pii`` columns never appear in quarantine details.  A line over
    ``max_record_bytes`` is quarantined as ``record_too_long``, a value over
    ``max_field_bytes`` as ``field_too_long``.  At least one (possibly empty)
    result is always yielded.
    """
    path = Path(path)
    cols = [_as_column(c) for c in columns]
    if not cols:
        raise ValueError(f"{path}: no columns configured")
    if len(delimiter) != 1 or len(quotechar) != 1:
        raise ValueError(f"{path}: delimiter and quote must be single characters")
    if block_records < 1:
        raise ValueError("block_records must be >= 1")
    enc = _normalize_encoding(encoding)
    pii_set = frozenset(pii)
    yielded = False
    with open(path, "rb") as f:
        start = 0
        header_lines = 0
        if header:
            first = read_header_line(f, path, max_record_bytes)
            if not first:
                raise CsvHeaderError(f"{path}: line 1: file is empty, expected a header line")
            start = len(first)
            line = first.rstrip(b"\n")
            if enc in ("utf-8",) and line.startswith(codecs.BOM_UTF8):
                line = line[len(codecs.BOM_UTF8) :]
            _check_header(path, line, [c.name for c in cols], enc, delimiter, quotechar)
            header_lines = 1
        line_no = header_lines + 1
        for buf, starts, ends, off in _iter_line_blocks(f, start, block_records, read_bytes):
            res = _process_block(
                buf, starts, ends, off, line_no, header_lines, cols, enc, delimiter, quotechar, pii_set,
                max_field_bytes, max_record_bytes,
            )
            line_no += len(starts)
            yielded = True
            yield res
    if not yielded:
        schema = pa.schema([("record_no", pa.int64())] + [(c.name, arrow_type(c)) for c in cols])
        yield DecodeResult(table=schema.empty_table(), quarantine=QUARANTINE_SCHEMA.empty_table())
