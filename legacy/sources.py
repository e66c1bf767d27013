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

A file that does not validate raises :class:`SourceConfigError` naming the file
and the field (``files[1].record_format``).
"""

from __future__ import annotations

import codecs
import fnmatch
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator, Literal

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from legacy.copybook import Copybook, DecodeResult, decode_file, parse_copybook
from legacy.csv_reader import arrow_type, read_csv_file
from legacy.errors import InputError, load_yaml

__all__ = [
    "CsvColumnSpec",
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


class FileSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str = Field(pattern=_NAME_RE)
    pattern: str = Field(min_length=1)
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

    @field_validator("pattern")
    @classmethod
    def _plain_pattern(cls, v: str) -> str:
        if "/" in v or "\\" in v:
            raise ValueError("must be a file name pattern, without folders")
        return v

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


def copybook_path(source: SourceConfig, spec: FileSpec, drop_dir: Path | None = None, data_path: Path | None = None) -> Path:
    """Resolve a file's copybook: the drop folder first, then beside the YAML (``<yaml dir>/<name>/``)."""
    if not spec.copybook:
        raise SourceConfigError(f"source {source.name} file {spec.kind}: no copybook configured")
    candidates: list[Path] = []
    if drop_dir is not None:
        candidates += [Path(drop_dir) / spec.copybook, Path(drop_dir) / source.name / spec.copybook]
    if data_path is not None:
        candidates.append(Path(data_path).parent / spec.copybook)
    candidates += [source.config_dir / spec.copybook]
    if source.path is not None:
        candidates.append(source.path.parent / spec.copybook)
    for c in candidates:
        if c.is_file():
            return c
    raise SourceConfigError(
        f"source {source.name} file {spec.kind}: copybook {spec.copybook!r} not found (looked in "
        + ", ".join(str(c.parent) for c in candidates)
        + ")"
    )


@lru_cache(maxsize=64)
def _parse_copybook_cached(path: str, mtime_ns: int, size: int) -> Copybook:
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    return parse_copybook(text, source=path)


def load_copybook(source: SourceConfig, spec: FileSpec, drop_dir: Path | None = None, data_path: Path | None = None) -> Copybook:
    p = copybook_path(source, spec, drop_dir, data_path)
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
    """Decode one file of a drop in blocks: copybook -> ``decode_file``; csv -> ``read_csv_file``."""
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
        )
    cb = load_copybook(source, spec, drop_dir if drop_dir is not None else path.parent, path)
    return decode_file(
        path, cb, record_format=spec.record_format, encoding=source.encoding, block_records=block_records
    )
