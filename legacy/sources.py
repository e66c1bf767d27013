"""Source configurations: what a legacy system's drop looks like and how to read it.

One YAML file per legacy system (built-ins under ``legacy/sources/``)::

    name: mainframe_life
    description: Life & annuity policy administration (IBM z/OS, VSAM extracts)
    format: copybook            # copybook | csv
    encoding: cp037
    key: POL_NUMBER             # the policy id column of the policies file
    pii: [INS_LAST_NAME, ...]   # personal data: never shown unmasked in metadata/profiles/logs
    files:
      - kind: policies          # asset legacy/<source>/<kind>; staging table name
        pattern: "POLMAST*.dat"
        copybook: POLMAST.cpy   # drop folder first, then legacy/sources/<name>/
        record_format: V
        required: true

CSV sources use ``format: csv`` and, per file, ``delimiter``, ``header`` and
``columns: [{name, type: text|integer|amount, scale}]``.

Control totals, so that a drop is taken whole or not at all (``legacy.integrity``)::

    control:                    # a control file that comes with every drop
      pattern: "CONTROL*.txt"   # lines "<file name> records=<n> bytes=<n>"
      required: true
    limits:                     # larger fields/records are quarantined, never crash a reader
      max_field_bytes: 65536    # -> field_too_long
      max_record_bytes: 1048576 # -> record_too_long (CSV lines)
    files:
      - kind: policies
        trailer:                # copybook files: the last record is a trailer of its own layout
          copybook: POLTRLR.cpy
          tag_field: TRL_REC_TYPE
          tag: TRAILER
          count_field: TRL_RECORD_COUNT
          total_field: TRL_PREMIUM_TOTAL   # optional: a money total ...
          total_of: MODAL_PREMIUM          # ... of this field over the data records

A file that does not validate raises :class:`SourceConfigError` naming the file
and the field (``files[1].record_format``).
"""

from __future__ import annotations

import codecs
import fnmatch
import io
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Iterator, Literal

import pyarrow as pa
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from legacy.copybook import Copybook, DecodeResult, decode_file, parse_copybook
from legacy.csv_reader import arrow_type, read_csv_file
from legacy.errors import InputError, load_yaml

__all__ = [
    "ControlFileSpec",
    "CsvColumnSpec",
    "IntakeLimits",
    "TrailerSpec",
    "FileSpec",
    "SourceConfig",
    "SourceConfigError",
    "DropFileError",
    "builtin_sources_dir",
    "copybook_path",
    "find_drop_files",
    "list_sources",
    "load_copybook",
    "load_source",
    "output_columns",
    "read_source_file",
]

_NAME_RE = r"^[a-z][a-z0-9_]*$"
DROP_KIND = "drop"  # reserved: the asset legacy/<source>/drop checks a whole drop before its files are staged


class SourceConfigError(InputError):
    """A source configuration file is missing or invalid."""


class DropFileError(InputError, FileNotFoundError):
    """A drop does not hold the files its source configuration requires."""


class CsvColumnSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    type: Literal["text", "integer", "amount"] = "text"
    scale: int = Field(default=2, ge=0, le=18)
    precision: int = Field(default=18, ge=1, le=18)

    @model_validator(mode="after")
    def _scale_fits(self) -> "CsvColumnSpec":
        if self.scale > self.precision:
            raise ValueError(f"scale {self.scale} is larger than precision {self.precision}")
        return self


class TrailerSpec(BaseModel):
    """The last record of a copybook file: the sender's record count (and a money total) in a layout of its own."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    copybook: str = Field(min_length=1)
    tag_field: str = Field(min_length=1)
    tag: str = Field(min_length=1)
    count_field: str = Field(min_length=1)
    total_field: str | None = None
    total_of: str | None = None

    @model_validator(mode="after")
    def _total_pair(self) -> "TrailerSpec":
        if (self.total_field is None) != (self.total_of is None):
            raise ValueError("total_field and total_of go together (the trailer's total, and the field it adds up)")
        return self



def plain_file_pattern(pattern: str) -> str:
    """A file name pattern of a drop: a name, never a path into other folders."""
    if "/" in pattern or "\\" in pattern:
        raise ValueError("must be a file name pattern, without folders")
    return pattern


FilePattern = Annotated[str, Field(min_length=1), AfterValidator(plain_file_pattern)]

class ControlFileSpec(BaseModel):
    """A small text file that comes with each drop: per data file, ``<name> records=<n> bytes=<n>``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pattern: FilePattern
    required: bool = True



class IntakeLimits(BaseModel):
    """Sizes past which a record is quarantined (never handed to Arrow), and how much of a file's head is sampled."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_field_bytes: int = Field(default=64 << 10, ge=1)
    max_record_bytes: int = Field(default=1 << 20, ge=1)
    head_records: int = Field(default=1_000, ge=1, le=1_000_000)
    max_unreadable_share: float = Field(default=0.5, gt=0.0, le=1.0)


class FileSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str = Field(pattern=_NAME_RE)
    pattern: FilePattern
    required: bool = True
    description: str | None = None
    # copybook sources
    copybook: str | None = None
    record_format: Literal["F", "V"] | None = None
    # csv sources
    delimiter: str = Field(default=",", min_length=1, max_length=1)
    quote: str = Field(default='"', min_length=1, max_length=1)
    header: bool = True
    columns: list[CsvColumnSpec] | None = None
    trailer: TrailerSpec | None = None


    @field_validator("columns")
    @classmethod
    def _unique_columns(cls, v: list[CsvColumnSpec] | None) -> list[CsvColumnSpec] | None:
        if v is not None:
            if not v:
                raise ValueError("must list at least one column")
            seen: set[str] = set()
            for c in v:
                if c.name in seen:
                    raise ValueError(f"column {c.name!r} is listed twice")
                seen.add(c.name)
        return v


class SourceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=_NAME_RE)
    description: str = ""
    format: Literal["copybook", "csv"]
    encoding: str
    key: str = Field(min_length=1)
    pii: list[str] = Field(default_factory=list)
    files: list[FileSpec] = Field(min_length=1)
    control: ControlFileSpec | None = None
    limits: IntakeLimits = Field(default_factory=IntakeLimits)

    _path: Path | None = PrivateAttr(default=None)

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, v: str) -> str:
        try:
            codecs.lookup(v)
        except LookupError:
            raise ValueError(f"unknown encoding {v!r}") from None
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "SourceConfig":
        kinds = [f.kind for f in self.files]
        for i, k in enumerate(kinds):
            if k in kinds[:i]:
                raise _FieldError(("files", i, "kind"), f"file kind {k!r} is listed twice")
            if k == DROP_KIND:
                raise _FieldError(("files", i, "kind"), f"{DROP_KIND!r} is reserved: legacy/<source>/{DROP_KIND} "
                                  "is the check of the whole drop")
        for i, f in enumerate(self.files):
            if self.format == "copybook":
                if not f.copybook:
                    raise _FieldError(("files", i, "copybook"), "required for format copybook")
                if f.record_format is None:
                    raise _FieldError(("files", i, "record_format"), "required for format copybook ('F' or 'V')")
                if f.columns is not None:
                    raise _FieldError(("files", i, "columns"), "not allowed for format copybook (the copybook defines them)")
            else:
                if not f.columns:
                    raise _FieldError(("files", i, "columns"), "required for format csv")
                if f.copybook is not None:
                    raise _FieldError(("files", i, "copybook"), "not allowed for format csv")
                if f.trailer is not None:
                    raise _FieldError(("files", i, "trailer"), "only copybook files have trailer records here; "
                                      "declare a control file for a csv source")
        if self.format == "csv":
            policies = next((f for f in self.files if f.kind == "policies"), self.files[0])
            names = {c.name for c in policies.columns or []}
            if self.key not in names:
                raise _FieldError(("key",), f"{self.key!r} is not a column of the {policies.kind} file")
            all_names = {c.name for f in self.files for c in f.columns or []}
            for j, p in enumerate(self.pii):
                if p not in all_names:
                    raise _FieldError(("pii", j), f"{p!r} is not a column of any file")
        return self

    @property
    def path(self) -> Path | None:
        """The YAML file this configuration was loaded from (None if built in code)."""
        return self._path

    @property
    def config_dir(self) -> Path:
        """Where the source's own files (copybooks) live: ``<yaml dir>/<name>/``."""
        base = self._path.parent if self._path is not None else builtin_sources_dir()
        return base / self.name

    def file(self, kind: str) -> FileSpec:
        for f in self.files:
            if f.kind == kind:
                return f
        raise KeyError(f"source {self.name} has no file kind {kind!r}; it has {[f.kind for f in self.files]}")


class _FieldError(ValueError):
    """Raised inside validators to point at a nested field."""

    def __init__(self, loc: tuple, msg: str) -> None:
        super().__init__(msg)
        self.loc = loc
        self.msg = msg


def _loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "<root>"


# --------------------------------------------------------------------------- loading


def builtin_sources_dir() -> Path:
    """The folder of the built-in source configurations (``legacy/sources``)."""
    return Path(__file__).resolve().parent / "sources"


def _parse_config(data: Any, path: Path) -> SourceConfig:
    if not isinstance(data, dict):
        raise SourceConfigError(f"{path}: a source configuration must be a mapping, found {type(data).__name__}")
    try:
        cfg = SourceConfig.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            ctx_err = (err.get("ctx") or {}).get("error")
            if isinstance(ctx_err, _FieldError):
                problems.append(f"{_loc(ctx_err.loc)}: {ctx_err.msg}")
                continue
            msg = err["msg"]
            if msg.startswith("Value error, "):
                msg = msg[len("Value error, ") :]
            problems.append(f"{_loc(tuple(err['loc']))}: {msg}")
        raise SourceConfigError(f"{path}: invalid source configuration: " + "; ".join(problems)) from None
    cfg._path = path
    return cfg


def load_source(name_or_path: str | Path) -> SourceConfig:
    """Load a source configuration by built-in name (``mainframe_life``) or by YAML path."""
    p = Path(name_or_path)
    is_path = isinstance(name_or_path, Path) or p.suffix in (".yaml", ".yml") or len(p.parts) > 1
    if not is_path:
        p = builtin_sources_dir() / f"{name_or_path}.yaml"
        if not p.is_file():
            known = sorted(q.stem for q in builtin_sources_dir().glob("*.yaml"))
            raise SourceConfigError(f"unknown source {str(name_or_path)!r}: no {p}; built-in sources: {known}")
    if not p.is_file():
        raise SourceConfigError(f"{p}: source configuration file not found")
    data = load_yaml(p, error=SourceConfigError).data
    return _parse_config(data, p.resolve())


def list_sources() -> list[SourceConfig]:
    """All built-in source configurations, by name."""
    return [load_source(p) for p in sorted(builtin_sources_dir().glob("*.yaml"))]


# --------------------------------------------------------------------------- drops


def find_drop_files(source: SourceConfig, drop_dir: Path) -> dict[str, Path]:
    """Match the source's file patterns in a drop folder: ``kind -> file``.

    The drop folder itself is searched, then ``<drop>/<source name>/``.  A missing
    required file, or a pattern that matches more than one file, is an error naming
    the drop and the pattern.  Absent optional files are left out.
    """
    drop_dir = Path(drop_dir)
    if not drop_dir.is_dir():
        raise DropFileError(f"drop folder {drop_dir} does not exist (source {source.name})")
    folders = [drop_dir]
    if (drop_dir / source.name).is_dir():
        folders.append(drop_dir / source.name)
    found: dict[str, Path] = {}
    for spec in source.files:
        for folder in folders:
            matches = sorted(
                p for p in folder.iterdir() if p.is_file() and fnmatch.fnmatchcase(p.name, spec.pattern)
            )
            if len(matches) > 1:
                raise DropFileError(
                    f"drop {folder}: pattern {spec.pattern!r} ({source.name} {spec.kind}) matches "
                    f"{len(matches)} files: {[m.name for m in matches]}; expected one"
                )
            if matches:
                found[spec.kind] = matches[0]
                break
        else:
            if spec.required:
                where = " or ".join(str(f) for f in folders)
                raise DropFileError(
                    f"drop {where}: no file matches pattern {spec.pattern!r} for the required "
                    f"{source.name} {spec.kind} file"
                )
    return found


def copybook_path(source: SourceConfig, spec: FileSpec, drop_dir: Path | None = None, data_path: Path | None = None,
                  name: str | None = None) -> Path:
    """Resolve a file's copybook (or another layout of it, `name`, such as its trailer's): the drop folder first,
    then beside the YAML (``<yaml dir>/<name>/``)."""
    name = name or spec.copybook
    if not name:
        raise SourceConfigError(f"source {source.name} file {spec.kind}: no copybook configured")
    candidates: list[Path] = []
    if drop_dir is not None:
        candidates += [Path(drop_dir) / name, Path(drop_dir) / source.name / name]
    if data_path is not None:
        candidates.append(Path(data_path).parent / name)
    candidates += [source.config_dir / name]
    if source.path is not None:
        candidates.append(source.path.parent / name)
    for c in candidates:
        if c.is_file():
            return c
    raise SourceConfigError(
        f"source {source.name} file {spec.kind}: copybook {name!r} not found (looked in "
        + ", ".join(str(c.parent) for c in candidates)
        + ")"
    )


@lru_cache(maxsize=64)
def _parse_copybook_cached(path: str, mtime_ns: int, size: int) -> Copybook:
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    return parse_copybook(text, source=path)


def load_copybook(source: SourceConfig, spec: FileSpec, drop_dir: Path | None = None, data_path: Path | None = None,
                  name: str | None = None) -> Copybook:
    p = copybook_path(source, spec, drop_dir, data_path, name)
    st = p.stat()
    return _parse_copybook_cached(str(p), st.st_mtime_ns, st.st_size)


def _copybook_columns(cb: Copybook) -> list[tuple[str, pa.DataType]]:
    return [(f.name, f.type) for f in cb.schema if f.name != "record_no"]


def output_columns(source: SourceConfig, spec: FileSpec, drop_dir: Path | None = None) -> list[tuple[str, pa.DataType]]:
    """The typed schema of the parsed table (without ``record_no``), to create staging tables."""
    if source.format == "csv":
        return [(c.name, arrow_type(c)) for c in spec.columns or []]
    return _copybook_columns(load_copybook(source, spec, drop_dir))


def read_source_file(
    source: SourceConfig,
    spec: FileSpec,
    path: Path,
    *,
    drop_dir: Path | None = None,
    block_records: int = 50_000,
) -> Iterator[DecodeResult]:
    """Decode one file of a drop in blocks: copybook -> ``decode_file``; csv -> ``read_csv_file``.

    A copybook file with a trailer is decoded up to its trailer (the trailer is no data record); a
    file whose trailer is missing raises :class:`legacy.integrity.DropRefused`. CSV fields and lines
    over the source's ``limits`` are quarantined (``field_too_long``, ``record_too_long``).
    """
    path = Path(path)
    if source.format == "csv":
        return read_csv_file(
            path,
            spec.columns or [],
            encoding=source.encoding,
            delimiter=spec.delimiter,
            quotechar=spec.quote,
            header=spec.header,
            block_records=block_records,
            pii=source.pii,
            max_field_bytes=source.limits.max_field_bytes,
            max_record_bytes=source.limits.max_record_bytes,
        )
    drop_dir = drop_dir if drop_dir is not None else path.parent
    cb = load_copybook(source, spec, drop_dir, path)
    if spec.trailer is None:
        return decode_file(
            path, cb, record_format=spec.record_format, encoding=source.encoding, block_records=block_records
        )
    from legacy.integrity import read_trailer  # the trailer's layout and checks live with the drop checks

    trailer = read_trailer(source, spec, path, drop_dir)
    return _decode_prefix(path, trailer.offset, cb, spec.record_format, source.encoding, block_records)


def _decode_prefix(path: Path, size: int, cb: Copybook, record_format, encoding: str,
                   block_records: int) -> Iterator[DecodeResult]:
    """Decode the first `size` bytes of a file (its data records, before a trailer)."""
    with open(path, "rb") as handle:
        yield from decode_file(BoundedReader(handle, size), cb, record_format=record_format, encoding=encoding,
                               block_records=block_records)


class BoundedReader(io.RawIOBase):
    """The first `limit` bytes of an open binary file, as a file."""

    def __init__(self, handle, limit: int) -> None:
        self._handle, self._left = handle, max(int(limit), 0)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        want = min(len(view), self._left)
        if want <= 0:
            return 0
        got = self._handle.readinto(view[:want]) or 0
        self._left -= got
        return got
