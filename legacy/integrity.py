"""A drop is taken whole or not at all: the checks that decide, before anything is staged.

Pure logic: no Dagster, no database; it reads the drop's files and nothing else. `verify_drop`
looks at every file of a drop cheaply (sizes, the control file, trailer records, a bounded sample
of each file's head) and either returns the drop's `DropManifest` (what each file must hold) or
raises `DropRefused`, naming each bad file, its byte offset or line, the reason and what to do.

What refuses a drop (reason codes):

| reason | meaning |
|---|---|
| `missing_file` | a required file, or one the control file lists, is not in the drop |
| `empty` | a required file (or a CSV file, which needs its header) has no bytes |
| `truncated` | fewer bytes than declared, or a fixed-length file that ends inside a record |
| `size_mismatch` | more bytes than the control file declares |
| `count_mismatch` | the records in the file differ from the count its trailer or the control file declares |
| `total_mismatch` | the money total of the staged records differs from the trailer's (nothing quarantined) |
| `trailer_missing` | the last record is not the trailer the source declares |
| `trailer_invalid` | the trailer's own fields do not decode |
| `unreadable` | most of the file's head does not decode (random bytes, another file, a wrong code page) |
| `bad_header` | a CSV header that is not text in the declared encoding or does not match the columns |
| `bad_layout` | the copybook (or the trailer's) does not parse |
| `control_file` | the control file is missing, unreadable, or does not list a file of the drop |

Counts that cannot be known without reading every record (a variable-length file walks its RDWs)
and money totals are checked while the file is staged (`ControlTally`): a mismatch there fails the
file in its staging transaction, and the caller undoes the drop's other files.

The control file is text, one line per data file, `#` starts a comment::

    # file        records    bytes
    POLMAST.dat   records=500 bytes=147040
    COVERAGE.dat  records=812 bytes=48720
"""

from __future__ import annotations

import codecs
import csv
import fnmatch
import re
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from legacy.errors import UsageError
from legacy.copybook import Copybook, CopybookError, RecordBlock, decode_block, decode_file
from legacy.csv_reader import CsvHeaderError, _check_header, read_header_line
from legacy.sources import (
    BoundedReader,
    DropFileError,
    FileSpec,
    SourceConfig,
    SourceConfigError,
    find_drop_files,
    load_copybook,
)

__all__ = [
    "REFUSAL_REASONS",
    "ControlEntry",
    "ControlTally",
    "DropManifest",
    "DropProblem",
    "DropRefused",
    "FileCheck",
    "Trailer",
    "control_file_text",
    "encode_trailer",
    "parse_control_file",
    "read_trailer",
    "verify_drop",
]

REFUSAL_REASONS = (
    "missing_file", "empty", "truncated", "size_mismatch", "count_mismatch", "total_mismatch", "trailer_missing",
    "trailer_invalid", "unreadable", "bad_header", "bad_layout", "control_file",
)

_RESEND = "ask the sender to send the drop again"
_SCAN = 8 << 20  # bytes read at a time when counting lines


@dataclass(frozen=True)
class DropProblem:
    """One reason a drop is refused: which file, where in it, why, and what to do."""

    file: str
    reason: str
    detail: str
    advice: str = _RESEND
    offset: int | None = None  # byte offset in the file
    line: int | None = None  # line (CSV, control file)
    record: int | None = None  # record number (1-based)
    field: str | None = None

    def __str__(self) -> str:
        where = [self.file]
        if self.line is not None:
            where.append(f"line {self.line}")
        if self.record is not None:
            where.append(f"record {self.record}")
        if self.offset is not None:
            where.append(f"byte offset {self.offset}")
        if self.field:
            where.append(f"field {self.field}")
        return f"{', '.join(where)}: {self.reason}: {self.detail}; {self.advice}"


class DropRefused(UsageError, ValueError):
    """The drop is not taken: the problems name each bad file, where and why (nothing of the drop is staged); bad
    input, exit 2 at the CLI."""

    def __init__(self, source: str, drop: str, problems: list[DropProblem]):
        self.source, self.drop, self.problems = source, drop, list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{source} drop {drop} refused; nothing of it is staged:\n{lines}")

    def __reduce__(self):
        return DropRefused, (self.source, self.drop, self.problems)


@dataclass(frozen=True)
class ControlEntry:
    file: str
    line: int
    records: int | None = None
    bytes: int | None = None


@dataclass(frozen=True)
class Trailer:
    """A file's trailer record: where it starts (= the bytes of data before it) and what it declares."""

    offset: int
    length: int
    records: int
    total: Decimal | None = None
    total_of: str | None = None


@dataclass
class FileCheck:
    """What one file of a verified drop must hold; checked again while it is staged."""

    kind: str
    file: str
    format: str  # F | V | csv
    bytes: int
    data_bytes: int  # bytes of data records (the file without its trailer)
    records: int | None = None  # records the sender declares, if any
    records_from: list[str] = field(default_factory=list)  # "trailer", "control file"
    records_checked: bool = False  # already proven here (F, CSV); V files are counted while staged
    total: str | None = None  # the trailer's money total (Decimal as text)
    total_of: str | None = None
    head_records: int = 0
    head_unreadable: int = 0

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "FileCheck":
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


@dataclass
class DropManifest:
    source: str
    drop: str
    control_file: str | None
    files: dict[str, FileCheck]  # kind -> check

    def as_json(self) -> dict[str, Any]:
        return {"source": self.source, "drop": self.drop, "control_file": self.control_file,
                "files": {kind: check.as_json() for kind, check in self.files.items()}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "DropManifest":
        return cls(data["source"], data["drop"], data.get("control_file"),
                   {k: FileCheck.from_json(v) for k, v in (data.get("files") or {}).items()})


# --------------------------------------------------------------------------- control files

_TOKEN = re.compile(r"^(records|bytes)=(\d+)$")


def parse_control_file(path: Path) -> dict[str, ControlEntry]:
    """`file name -> entry` from a control file; a line that does not parse raises DropRefused naming it."""
    name = path.name
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise _refused(DropProblem(name, "control_file", f"not UTF-8 text (byte 0x{error.object[error.start]:02X})",
                                   "the control file must be plain text", offset=error.start)) from None
    entries: dict[str, ControlEntry] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        file, *tokens = line.split()
        values: dict[str, int] = {}
        for token in tokens:
            m = _TOKEN.match(token)
            if m is None:
                raise _refused(DropProblem(name, "control_file", f"{token!r} is not records=<n> or bytes=<n>",
                                           "correct the control file or ask the sender for it again", line=number))
            values[m.group(1)] = int(m.group(2))
        if not values:
            raise _refused(DropProblem(name, "control_file", f"{file} declares neither records=<n> nor bytes=<n>",
                                       "correct the control file or ask the sender for it again", line=number))
        if file in entries:
            raise _refused(DropProblem(name, "control_file", f"{file} is listed twice (first on line "
                                       f"{entries[file].line})", "correct the control file", line=number))
        entries[file] = ControlEntry(file, number, values.get("records"), values.get("bytes"))
    return entries


def control_file_text(entries: Iterable[ControlEntry]) -> str:
    """A control file's text, as a sender writes it (the sample generator uses it)."""
    lines = ["# Data Mash control file: one line per data file of the drop"]
    for e in entries:
        parts = [e.file] + ([f"records={e.records}"] if e.records is not None else []) + \
                ([f"bytes={e.bytes}"] if e.bytes is not None else [])
        lines.append(" ".join(parts))
    return "\n".join(lines) + "\n"


def _refused(problem: DropProblem) -> DropRefused:
    return DropRefused("", "", [problem])


# --------------------------------------------------------------------------- trailers


def _trailer_layout(source: SourceConfig, spec: FileSpec, drop_dir: Path | None, path: Path) -> Copybook:
    assert spec.trailer is not None
    layout = load_copybook(source, spec, drop_dir, path, name=spec.trailer.copybook)
    if layout.odo is not None:
        raise SourceConfigError(f"source {source.name} file {spec.kind}: trailer copybook {spec.trailer.copybook} "
                                "has OCCURS DEPENDING ON; a trailer has one fixed layout")
    for name in (spec.trailer.tag_field, spec.trailer.count_field, spec.trailer.total_field):
        if name is not None and name not in layout.columns:
            raise SourceConfigError(f"source {source.name} file {spec.kind}: trailer field {name!r} is not in "
                                    f"{spec.trailer.copybook} (it has {', '.join(layout.columns)})")
    return layout


def read_trailer(source: SourceConfig, spec: FileSpec, path: Path, drop_dir: Path | None = None,
                 size: int | None = None) -> Trailer:
    """Find and decode a copybook file's trailer (its last record); DropRefused when it is not there."""
    assert spec.trailer is not None
    trailer = spec.trailer
    path = Path(path)
    size = path.stat().st_size if size is None else size
    layout = _trailer_layout(source, spec, drop_dir, path)
    width = layout.record_length
    if spec.record_format == "V":
        length = width + 4
    else:
        length = load_copybook(source, spec, drop_dir, path).record_length
        if width > length:
            raise SourceConfigError(f"source {source.name} file {spec.kind}: trailer copybook {trailer.copybook} is "
                                    f"{width} bytes, longer than the file's {length}-byte records")
    offset = size - length
    missing = f"the last record is not a {trailer.copybook} trailer"
    advice = "the file is probably truncated, or was sent without its trailer: " + _RESEND
    if offset < 0:
        raise _refused(DropProblem(path.name, "trailer_missing", f"{missing}: the file has {size} bytes, fewer than "
                                   f"the {length} of a trailer record", advice, offset=0))
    with open(path, "rb") as handle:
        handle.seek(offset)
        tail = handle.read(length)
    if spec.record_format == "V":
        rdw = tail[:4]
        if (rdw[0] << 8 | rdw[1]) != length or rdw[2:4] != b"\0\0":
            raise _refused(DropProblem(
                path.name, "trailer_missing", f"{missing}: expected an RDW of {length} bytes "
                f"({length >> 8:02X} {length & 0xFF:02X} 00 00) at byte {offset}, found {rdw.hex(' ').upper()}",
                advice, offset=offset))
        payload = tail[4:]
    else:
        payload = tail[:width]
    block = RecordBlock(first_record_no=1, data=np.frombuffer(payload, np.uint8).reshape(1, width),
                        lengths=np.array([width], np.int64), offsets=np.array([offset], np.int64), fixed_length=True)
    decoded = decode_block(layout, block, encoding=source.encoding)
    slot = layout.field(trailer.tag_field)  # the tag on its own: the record is a trailer even if a figure is bad
    tag = payload[slot.offset: slot.offset + slot.length].decode(source.encoding, "replace")
    if tag.strip() != trailer.tag:
        raise _refused(DropProblem(path.name, "trailer_missing", f"{missing}: its {trailer.tag_field} does not hold "
                                   f"{trailer.tag!r}", advice, offset=offset, field=trailer.tag_field))
    if decoded.quarantine.num_rows:
        bad = decoded.quarantine.to_pylist()[0]
        raise _refused(DropProblem(path.name, "trailer_invalid", f"the trailer's {bad['field']} does not decode: "
                                   f"{bad['detail']}", "ask the sender to correct the trailer", offset=offset,
                                   field=bad["field"]))
    row = decoded.table.to_pylist()[0]
    count = row[trailer.count_field]
    total = row[trailer.total_field] if trailer.total_field else None
    return Trailer(offset=offset, length=length, records=int(count),
                   total=Decimal(total) if total is not None else None, total_of=trailer.total_of)


def encode_trailer(layout: Copybook, spec: FileSpec, records: int, total: Decimal | None, encoding: str) -> bytes:
    """A trailer record's bytes (with its RDW for a V file), as the sender writes it last."""
    from legacy.copybook import encode_matrix, frame_records

    assert spec.trailer is not None
    values: dict[str, list] = {spec.trailer.tag_field: [spec.trailer.tag], spec.trailer.count_field: [records]}
    if spec.trailer.total_field:
        values[spec.trailer.total_field] = [Decimal(total or 0)]
    matrix, lengths = encode_matrix(layout, values, 1, encoding=encoding)
    return frame_records(matrix, lengths, spec.record_format or "F")


# --------------------------------------------------------------------------- verifying a drop


def _drop_files(source: SourceConfig, drop: Path) -> dict[str, Path]:
    """`find_drop_files` for a folder; for a single file, the kind its name matches."""
    if drop.is_dir():
        return find_drop_files(source, drop)
    found = {s.kind: drop for s in source.files if fnmatch.fnmatchcase(drop.name, s.pattern)}
    for spec in source.files:
        if spec.required and spec.kind not in found:
            raise DropFileError(f"drop {drop}: no file matches pattern {spec.pattern!r} for the required "
                                f"{source.name} {spec.kind} file")
    return found


def _control_path(source: SourceConfig, drop: Path) -> tuple[Path | None, DropProblem | None]:
    assert source.control is not None
    pattern = source.control.pattern
    if drop.is_dir():
        folders = [drop] + ([drop / source.name] if (drop / source.name).is_dir() else [])
        for folder in folders:
            matches = sorted(p for p in folder.iterdir() if p.is_file() and fnmatch.fnmatchcase(p.name, pattern))
            if len(matches) > 1:
                return None, DropProblem(folder.name, "control_file", f"{len(matches)} files match the control file "
                                         f"pattern {pattern!r}: {[m.name for m in matches]}; expected one",
                                         "leave one control file in the drop")
            if matches:
                return matches[0], None
    if source.control.required:
        return None, DropProblem(drop.name, "control_file", f"no control file matching {pattern!r} in the drop",
                                 "the sender writes it with the drop (record and byte counts of each file): " + _RESEND)
    return None, None


def verify_drop(source: SourceConfig, drop: Path, drop_id: str | None = None) -> DropManifest:
    """Check a whole drop cheaply before anything of it is staged; its manifest, or DropRefused with every problem."""
    drop = Path(drop)
    name = drop_id or drop.name
    try:
        files = _drop_files(source, drop)
    except DropFileError as error:
        raise DropRefused(source.name, name, [DropProblem(drop.name, "missing_file", str(error),
                                                          "put the file in the drop, or " + _RESEND)]) from None
    except PermissionError as error:
        raise DropRefused(source.name, name, [DropProblem(drop.name, "unreadable", f"cannot be read: {error}",
                                                          "check the folder's permissions")]) from None
    problems: list[DropProblem] = []
    control: dict[str, ControlEntry] = {}
    control_name = None
    if source.control is not None:
        path, problem = _control_path(source, drop)
        if problem is not None:
            problems.append(problem)
        elif path is not None:
            control_name = path.name
            try:
                control = parse_control_file(path)
            except DropRefused as refused:
                problems += refused.problems
            except OSError as error:
                problems.append(DropProblem(path.name, "control_file", f"cannot be read: {error.strerror or error}",
                                            "check the file's permissions, or " + _RESEND))
            else:
                present = {p.name for p in files.values()}
                for entry in control.values():
                    if entry.file not in present:
                        problems.append(DropProblem(entry.file, "missing_file", f"{control_name} line {entry.line} "
                                                    "lists it, but it is not in the drop", "put the file in the drop, "
                                                    "or " + _RESEND))
                for kind, p in files.items():
                    if p.name not in control:
                        problems.append(DropProblem(p.name, "control_file", f"{control_name} does not list it",
                                                    "the control file must list every data file: " + _RESEND))
    checks: dict[str, FileCheck] = {}
    for kind, path in files.items():
        spec = source.file(kind)
        check, problem = check_file(source, spec, path, drop if drop.is_dir() else drop.parent,
                                    control.get(path.name))
        if problem is not None:
            problems.append(problem)
        else:
            checks[kind] = check
    if problems:
        raise DropRefused(source.name, name, problems)
    return DropManifest(source.name, name, control_name, checks)


def check_file(source: SourceConfig, spec: FileSpec, path: Path, drop_dir: Path,
               control: ControlEntry | None = None) -> tuple[FileCheck | None, DropProblem | None]:
    """One file's cheap checks: its check, or the first problem found (empty, unreadable, truncated, ...)."""
    size = path.stat().st_size
    fmt = "csv" if source.format == "csv" else (spec.record_format or "F")
    check = FileCheck(spec.kind, path.name, fmt, size, size)
    if control is not None and control.records is not None:
        check.records, check.records_from = control.records, ["control file"]
    try:
        if size == 0:
            declared_empty = control is not None and (control.records == 0 or control.bytes == 0)
            if (spec.required and not declared_empty) or (fmt == "csv" and spec.header):
                return None, DropProblem(path.name, "empty", "the file has no bytes" + (
                    " (not even its header line)" if fmt == "csv" and spec.header else ""), _RESEND, offset=0)
            return _counts_agree(check, path, 0, control)
        if fmt == "csv":
            return _check_csv(source, spec, path, check, control)
        return _check_records(source, spec, path, drop_dir, check, control)
    except DropRefused as refused:
        return None, refused.problems[0]
    except (CopybookError, SourceConfigError) as error:
        return None, DropProblem(path.name, "bad_layout", str(error), "correct the copybook (or put the right one "
                                 "in the drop)")
    except OSError as error:
        return None, DropProblem(path.name, "unreadable", f"cannot be read: {error.strerror or error}",
                                 "check the file's permissions, or " + _RESEND)


def _bytes_agree(check: FileCheck, path: Path, control: ControlEntry | None) -> DropProblem | None:
    """The file's size against the control file's byte count."""
    if control is None or control.bytes is None or control.bytes == check.bytes:
        return None
    if check.bytes < control.bytes:
        return DropProblem(path.name, "truncated", f"the file ends at byte {check.bytes}, but the control file "
                           f"declares {control.bytes} bytes ({control.bytes - check.bytes} missing)",
                           "the transfer was cut short: " + _RESEND, offset=check.bytes)
    return DropProblem(path.name, "size_mismatch", f"the file has {check.bytes} bytes, but the control file declares "
                       f"{control.bytes} ({check.bytes - control.bytes} more)", _RESEND, offset=control.bytes)


def _counts_agree(check: FileCheck, path: Path, records: int | None, control: ControlEntry | None,
                  ) -> tuple[FileCheck | None, DropProblem | None]:
    """The byte count against the control file, and the record count where it is known here."""
    if (problem := _bytes_agree(check, path, control)) is not None:
        return None, problem
    if records is not None and check.records is not None:
        if records != check.records:
            return None, DropProblem(path.name, "count_mismatch", f"the file holds {records} records, but the "
                                     f"{' and '.join(check.records_from)} declare{'s' if len(check.records_from) == 1 else ''} "
                                     f"{check.records}", _RESEND, offset=check.data_bytes)
        check.records_checked = True
    return check, None


def _merge_trailer(check: FileCheck, trailer: Trailer, path: Path) -> DropProblem | None:
    check.data_bytes = trailer.offset
    if trailer.total is not None:
        check.total, check.total_of = str(trailer.total), trailer.total_of
    if check.records is not None and check.records != trailer.records:
        return DropProblem(path.name, "count_mismatch", f"the trailer declares {trailer.records} records, the control "
                           f"file {check.records}", _RESEND, offset=trailer.offset)
    check.records = trailer.records
    check.records_from = check.records_from + ["trailer"]
    return None


def _check_records(source: SourceConfig, spec: FileSpec, path: Path, drop_dir: Path, check: FileCheck,
                   control: ControlEntry | None) -> tuple[FileCheck | None, DropProblem | None]:
    layout = load_copybook(source, spec, drop_dir, path)
    trailer, trailer_problem = None, None
    if spec.trailer is not None:
        try:
            trailer = read_trailer(source, spec, path, drop_dir, check.bytes)
        except DropRefused as refused:
            trailer_problem = refused.problems[0]
    data_bytes = trailer.offset if trailer is not None else check.bytes
    # the head first: a file of random bytes is "unreadable", whatever else is wrong with it; then its size (a cut
    # transfer is "truncated", plainly), then its trailer
    problem = (_head_of_records(source, spec, path, layout, data_bytes, check) or _bytes_agree(check, path, control)
               or trailer_problem)
    if problem is not None:
        return None, problem
    if trailer is not None and (problem := _merge_trailer(check, trailer, path)) is not None:
        return None, problem
    if check.format == "V":  # its records are counted while it is staged (RDWs are walked one by one)
        return _counts_agree(check, path, None, control)
    width = layout.record_length
    whole, rest = divmod(data_bytes, width)
    if rest and (trailer is not None or check.records is None or whole != check.records):
        at = whole * width
        return None, DropProblem(path.name, "truncated", f"{data_bytes} bytes{' before the trailer' if trailer else ''}"
                                 f" is not a whole number of {width}-byte records: the record at byte {at} has only "
                                 f"{rest} bytes", "the transfer was probably cut short: " + _RESEND + " (if the last "
                                 "bytes are junk, a control file declaring the record count lets them be quarantined)",
                                 offset=at, record=whole + 1)
    return _counts_agree(check, path, whole, control)


def _head_of_records(source: SourceConfig, spec: FileSpec, path: Path, layout: Copybook, data_bytes: int,
                     check: FileCheck) -> DropProblem | None:
    """Decode a bounded head of a copybook file; refuse it when most of those bytes are not records."""
    limits = source.limits
    per_record = layout.record_length + (4 if check.format == "V" else 0)
    region = min(data_bytes, limits.head_records * per_record)
    with open(path, "rb") as handle:
        results = list(decode_file(BoundedReader(handle, region), layout, record_format=spec.record_format or "F",
                                   encoding=source.encoding, block_records=limits.head_records))
    good = sum(r.table.num_rows for r in results)
    bad = pa.concat_tables([r.quarantine for r in results]) if results else None
    if bad is not None and region < data_bytes and bad.num_rows:  # the head's cut, not the file's end
        last = bad.slice(bad.num_rows - 1)
        if last.column("reason")[0].as_py() == "trailing_bytes":
            bad = bad.slice(0, bad.num_rows - 1)
    bad_rows = bad.num_rows if bad is not None else 0
    check.head_records, check.head_unreadable = good + bad_rows, bad_rows
    if not bad_rows or region == 0:
        return None
    bad_bytes = int(pc.sum(pc.binary_length(bad.column("raw"))).as_py() or 0)
    if bad_bytes / region <= limits.max_unreadable_share:
        return None
    first = bad.slice(0, 1).to_pylist()[0]
    return DropProblem(
        path.name, "unreadable",
        f"{bad_bytes} of the first {region} bytes ({bad_rows} of {good + bad_rows} records) do not decode as "
        f"{spec.copybook} records in {source.encoding} (first: {first['reason']}"
        + (f" in {first['field']}" if first["field"] else "") + ")",
        "check that this is the right file, copybook and code page, or " + _RESEND,
        offset=int(first["offset"]) if first["offset"] is not None else None, record=int(first["record_no"]))


def _check_csv(source: SourceConfig, spec: FileSpec, path: Path, check: FileCheck,
               control: ControlEntry | None) -> tuple[FileCheck | None, DropProblem | None]:
    limits = source.limits
    encoding = codecs.lookup(source.encoding).name
    names = [c.name for c in spec.columns or []]
    with open(path, "rb") as handle:
        header_lines = 0
        if spec.header:
            try:
                line = read_header_line(handle, path, limits.max_record_bytes).rstrip(b"\n").rstrip(b"\r")
                if encoding == "utf-8" and line.startswith(codecs.BOM_UTF8):
                    line = line[len(codecs.BOM_UTF8):]
                _check_header(path, line, names, encoding, spec.delimiter, spec.quote)
            except CsvHeaderError as error:
                detail = str(error).split(": line 1: ", 1)[-1]
                return None, DropProblem(path.name, "bad_header", detail, "check that this is the right file and "
                                         f"encoding ({source.encoding}) for {source.name} {spec.kind}, or " + _RESEND,
                                         line=1, offset=0)
            header_lines = 1
        problem = _head_of_lines(source, spec, path, handle, handle.tell(), header_lines, len(names), check)
    if problem is not None or (problem := _bytes_agree(check, path, control)) is not None:
        return None, problem
    records = _count_lines(path) - header_lines if check.records is not None else None
    return _counts_agree(check, path, records, control)


def _head_of_lines(source: SourceConfig, spec: FileSpec, path: Path, handle, start: int, header_lines: int,
                   ncols: int, check: FileCheck) -> DropProblem | None:
    """Read up to `head_records` lines after the header; refuse the file when most are not text or not rows."""
    limits = source.limits
    encoding = source.encoding
    want = min(limits.head_records * 1024, 64 << 20)
    sample = handle.read(want)
    lines = sample.split(b"\n")
    if len(sample) == want or lines[-1] == b"":  # whole lines only: the last piece may be cut (or is empty)
        lines = lines[:-1]
    lines = lines[: limits.head_records]
    bad, first = 0, None
    offset = start
    for number, raw in enumerate(lines, header_lines + 1):
        text_line = raw.rstrip(b"\r")
        reason = None
        try:
            decoded = text_line.decode(encoding)
        except UnicodeDecodeError as error:
            reason = f"byte 0x{text_line[error.start]:02X} at position {error.start + 1} is not valid {encoding}"
        else:
            fields = next(csv.reader([decoded], delimiter=spec.delimiter, quotechar=spec.quote), [])
            if len(fields) != ncols:
                reason = f"{len(fields)} columns where {ncols} are expected"
        if reason is not None:
            bad += 1
            if first is None:
                first = (number, offset, reason)
        offset += len(raw) + 1
    check.head_records, check.head_unreadable = len(lines), bad
    if not lines or bad / len(lines) <= limits.max_unreadable_share:
        return None
    number, at, reason = first
    return DropProblem(path.name, "unreadable", f"{bad} of the first {len(lines)} lines are not {ncols}-column "
                       f"{encoding} CSV rows (first: {reason})", "check that this is the right file and encoding, "
                       "or " + _RESEND, line=number, offset=at)


def _count_lines(path: Path) -> int:
    """Lines in a file as the CSV reader sees them: newlines, plus a last line without one. One streaming pass."""
    lines, last = 0, b"\n"
    with open(path, "rb") as handle:
        while chunk := handle.read(_SCAN):
            lines += chunk.count(b"\n")
            last = chunk[-1:]
    return lines + (last != b"\n")


# --------------------------------------------------------------------------- while staging


class ControlTally:
    """Counts the records and adds up the money of a file as it is decoded; `finish` refuses a mismatch.

    Only what the cheap checks could not prove: the record count of a variable-length file, and the
    trailer's money total (exact when no record was quarantined; otherwise the difference is reported,
    as the quarantined records' amounts cannot be read)."""

    def __init__(self, source: str, drop: str, check: FileCheck):
        self.source, self.drop, self.check = source, drop, check
        self.read = 0
        self.quarantined = 0
        self.total = Decimal(0)

    def add(self, table: pa.Table, quarantine: pa.Table) -> None:
        self.read += table.num_rows + quarantine.num_rows
        self.quarantined += quarantine.num_rows
        if self.check.total_of and table.num_rows:
            value = pc.sum(table.column(self.check.total_of)).as_py()
            self.total += Decimal(value) if value is not None else 0

    def finish(self) -> dict[str, Any]:
        check = self.check
        problems = []
        if check.records is not None and not check.records_checked and self.read != check.records:
            problems.append(DropProblem(
                check.file, "count_mismatch", f"the file holds {self.read} records, but the "
                f"{' and '.join(check.records_from)} declare{'s' if len(check.records_from) == 1 else ''} {check.records}",
                _RESEND, offset=check.data_bytes))
        summary: dict[str, Any] = {"records_declared": check.records, "records_read": self.read}
        if check.total is not None:
            declared = Decimal(check.total)
            summary.update(total_of=check.total_of, total_declared=str(declared), total_staged=str(self.total),
                           total_proven=self.quarantined == 0 and declared == self.total)
            if self.quarantined == 0 and declared != self.total:
                problems.append(DropProblem(
                    check.file, "total_mismatch", f"the trailer's {check.total_of} total is {declared}, the records "
                    f"add up to {self.total} (difference {declared - self.total})", _RESEND, offset=check.data_bytes,
                    field=check.total_of))
        if problems:
            raise DropRefused(self.source, self.drop, problems)
        return summary

