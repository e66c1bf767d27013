"""Day-N delta drops for a sample book: what the legacy systems send after the first full extract.

``write_delta(book, out, day=N)`` reads a sample book written by :func:`legacy.sample.generate_sample`
and writes ``out/mainframe_life/`` and ``out/pc_csv/`` with the book's own file names, copybooks and
formats (intake reads a delta exactly like a book). A delta holds only the policies that changed,
were cancelled or are new on day N, each one whole: its master record and every satellite record.
``out/delta.json`` names them, by the ids the canonical model sees (the key trimmed)::

    {"day": 2, "of": "/abs/path/book", "seed": 42,
     "sources": {"mainframe_life": {"changed": {"L100000004": ["INS_ADDR_LINE1", "INS_CITY", "endorsements"]},
                                    "cancelled": ["L100000123"], "new": ["L100150001"]},
                 "pc_csv": {"changed": {...}, "cancelled": [...], "new": [...]}}}

Changed fields are named as the source names them: a master field bare (``MODAL_PREMIUM``,
``AnnualPrem``), a satellite field as ``<kind>.<FIELD>`` (``coverages.COV_PREMIUM``), and
``endorsements`` when endorsement records were added.

* Changed (``change_rate`` of the policies; in force, paid-up or pending): one or two of a premium
  rerate (3-15% either way; the base coverage absorbs it), an address change (a move), a billing
  mode change (mainframe: modal and rider premiums follow the modal factor) or a pay plan change
  (P&C), and on the mainframe an endorsement record for each contract change (``ADDR``, ``MODE``)
  or on its own (``BENE``).
* Cancelled (``cancel_rate``): in-force life policies lapse (``LA``), active P&C policies are
  cancelled (``CAN``); nothing else in them changes.
* New (``new_rate``): pending new business made by the generator itself (a small book with a seed
  derived from ``seed`` and the day), renumbered into an id block above the book. Day N uses the
  (N-1)th block of the book's own id span, so deltas of different days never share a new id.

Policies with a record that intake quarantines, and ids that appear twice, are never picked.
Same book, day and seed -> identical bytes (random streams seeded from ``(seed, day, source)``).
"""

from __future__ import annotations

import codecs
import csv
import json
import math
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from legacy.copybook import encode_matrix, frame_records
from legacy.integrity import ControlEntry, control_file_text, encode_trailer
from legacy.records import decimal_array
from legacy.sample import (
    AS_OF,
    CITIES,
    STREET_SUFFIXES,
    STREETS,
    _BILL_FACTOR_BP,
    _BILL_MODES,
    _END_CODES,
    _END_DESC,
    _PAY_PLANS,
    _csv_quote,
    _join,
    _money,
    _num,
    _string_array_bytes,
    _take,
    _upper,
    _yyyymmdd,
    generate_sample,
)
from legacy.sources import (
    FileSpec,
    SourceConfig,
    copybook_path,
    find_drop_files,
    load_copybook,
    load_source,
    read_source_file,
)

__all__ = ["DeltaSummary", "SourceDelta", "write_delta", "MF_CANCELLED", "PC_CANCELLED"]

MF = "mainframe_life"
PC = "pc_csv"
SOURCES = (MF, PC)

MF_CANCELLED = "LA"  # lapsed
PC_CANCELLED = "CAN"
_MF_CHANGEABLE = ("IF", "PU", "PE")
_MF_ANNUITY_PLANS = ("ANNFX", "ANNVA")  # annuities surrender, they do not lapse
_PC_CHANGEABLE = ("ACT", "PND")
_NEW_STATUS = {MF: "PE", PC: "PND"}  # new business arrives pending
# lower bounds of the share of generated policies that are pending (generator: ~7% and ~4%)
_PENDING_SHARE = {MF: 0.05, PC: 0.03}

_MF_KINDS = ("premium", "address", "billing_mode", "endorsement")
_PC_KINDS = ("premium", "address", "pay_plan")
_END_TEXT = dict(zip(_END_CODES, _END_DESC))

# P&C money text exactly as the export writes it (legacy.sample._PcBook)
_PC_MONEY: dict[str, dict[str, Any]] = {
    "AnnualPrem": {"dollar": True, "grouping": True, "negative": "("},
    "BalanceDue": {"dollar": False, "grouping": False, "negative": "("},
}
_PC_MONEY_DEFAULT: dict[str, Any] = {"dollar": False, "grouping": False, "negative": "-"}

_MF_MODAL_MAX = 999_999_999  # MODAL-PREMIUM PIC S9(7)V99, in cents
_MF_RIDER_MAX = 9_999_999  # RIDER-PREMIUM PIC S9(5)V99


@dataclass(frozen=True)
class _IdLayout:
    """How the generator numbers things: prefix + zero-padded number, ``base + step * ordinal + r``."""

    what: str
    prefix: str
    width: int
    base: int
    step: int


_MF_POLICY_IDS = _IdLayout("policy number", "L", 9, 100_000_000, 3)
_MF_DOC_IDS = _IdLayout("document id", "D", 11, 10_000_000_000, 7)
_PC_POLICY_IDS = _IdLayout("policy number", "PC", 8, 10_000_000, 3)


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class SourceDelta:
    """What one source's delta holds (policy ids trimmed, as the canonical model sees them)."""

    source: str
    changed: dict[str, list[str]]  # policy id -> changed fields
    cancelled: list[str]
    new: list[str]
    records: dict[str, int]  # file name -> records written

    def as_json(self) -> dict[str, Any]:
        return {"changed": self.changed, "cancelled": self.cancelled, "new": self.new}


@dataclass(frozen=True)
class DeltaSummary:
    book: Path
    out_dir: Path
    day: int
    seed: int
    delta_path: Path
    sources: dict[str, SourceDelta]


@dataclass(frozen=True)
class _Rates:
    change: float
    new: float
    cancel: float


@dataclass
class _File:
    """One file of a drop, decoded: the good records and the policy ids of quarantined ones."""

    spec: FileSpec
    path: Path
    table: pa.Table
    bad_ids: pa.Array


# --------------------------------------------------------------------------- entry point


def write_delta(
    book: Path,
    out: Path,
    *,
    day: int,
    seed: int = 42,
    change_rate: float = 0.02,
    new_rate: float = 0.005,
    cancel_rate: float = 0.003,
) -> DeltaSummary:
    """Write the day-``day`` delta drop of the sample book in ``book`` into ``out``; see the module doc."""
    book = Path(book)
    out = Path(out)
    if isinstance(day, bool) or not isinstance(day, (int, np.integer)) or day < 2:
        raise ValueError(f"day must be a whole number >= 2 (day 1 is the book itself), got {day!r}")
    day = int(day)
    seed = int(seed)
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    for name, rate in (("change_rate", change_rate), ("new_rate", new_rate), ("cancel_rate", cancel_rate)):
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"{name} must be between 0 and 1, got {rate}")
    if change_rate + cancel_rate > 1.0:
        raise ValueError(f"change_rate + cancel_rate must not exceed 1, got {change_rate} + {cancel_rate}")
    drops = _book_drops(book)
    if out.resolve() == book.resolve() or (out / "manifest.json").exists():
        raise ValueError(f"{out} is a sample book (it holds manifest.json); write the delta to a folder of its own")
    as_of = _as_of(book)
    rates = _Rates(change=change_rate, new=new_rate, cancel=cancel_rate)

    results: dict[str, SourceDelta] = {}
    with tempfile.TemporaryDirectory(prefix="data-mash-delta-") as tmp:
        for number, name in enumerate(SOURCES):
            src, drop = drops[name]
            rng = np.random.Generator(np.random.PCG64([seed, day, number]))
            new_seed = int(np.random.SeedSequence([seed, day, number, 1]).generate_state(1)[0])
            target = out / name
            target.mkdir(parents=True, exist_ok=True)
            work = Path(tmp) / name
            if name == MF:
                results[name] = _mainframe_delta(src, drop, target, rng, day=day, as_of=as_of, rates=rates,
                                                 new_seed=new_seed, tmp=work)
            else:
                results[name] = _pc_delta(src, drop, target, rng, day=day, rates=rates, new_seed=new_seed, tmp=work)

    doc = {
        "day": day,
        "of": str(book.resolve()),
        "seed": seed,
        "sources": {name: results[name].as_json() for name in SOURCES},
    }
    delta_path = out / "delta.json"
    delta_path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return DeltaSummary(book=book, out_dir=out, day=day, seed=seed, delta_path=delta_path, sources=results)


def _book_drops(book: Path) -> dict[str, tuple[SourceConfig, Path]]:
    """Each source's configuration and drop folder in the book; a clear error when something is missing."""
    if not book.is_dir():
        raise FileNotFoundError(
            f"sample book {book} does not exist; write one with `data-mash generate-sample --out {book}`"
        )
    drops = {}
    for name in SOURCES:
        src = load_source(name)
        drop = book / name
        if not drop.is_dir():
            raise FileNotFoundError(f"sample book {book}: folder {drop} is missing (the {name} drop)")
        try:
            find_drop_files(src, drop)
        except FileNotFoundError as error:
            raise FileNotFoundError(f"sample book {book}: {error}") from None
        drops[name] = (src, drop)
    return drops


def _as_of(book: Path) -> np.datetime64:
    """The book's extract date (manifest ``as_of``; the generator's date if there is no manifest)."""
    manifest = book / "manifest.json"
    if manifest.is_file():
        try:
            as_of = json.loads(manifest.read_text(encoding="utf-8")).get("as_of")
        except (ValueError, AttributeError) as error:
            raise ValueError(f"{manifest}: not a sample book manifest ({error})") from None
        if as_of:
            return np.datetime64(as_of, "D")
    return AS_OF


# --------------------------------------------------------------------------- reading


def _read_drop(src: SourceConfig, drop: Path) -> dict[str, _File]:
    found = find_drop_files(src, drop)
    files: dict[str, _File] = {}
    for spec in src.files:
        path = found.get(spec.kind)
        if path is None:
            continue
        tables, quarantines = [], []
        for result in read_source_file(src, spec, path, drop_dir=drop, block_records=250_000):
            tables.append(result.table)
            quarantines.append(result.quarantine)
        if not tables:  # the copybook decoder yields nothing for an empty file
            tables = [load_copybook(src, spec, drop).schema.empty_table()]
        table = pa.concat_tables(tables).combine_chunks()
        raws = [r for q in quarantines for r in q.column("raw").to_pylist()]
        files[spec.kind] = _File(spec, path, table, _quarantined_ids(src, spec, drop, raws))
    return files


def _quarantined_ids(src: SourceConfig, spec: FileSpec, drop: Path, raws: list[bytes | None]) -> pa.Array:
    """The policy ids that quarantined records carry, read from their raw bytes.

    A Python step per quarantined record, like the readers' own handling of bad records: they are rare.
    """
    ids: list[str] = []
    if src.format == "csv":
        at = [c.name for c in spec.columns or []].index(src.key)
        for raw in raws:
            fields = next(csv.reader([(raw or b"").decode(src.encoding, "replace")], delimiter=spec.delimiter,
                                     quotechar=spec.quote), [])
            if len(fields) > at:
                ids.append(fields[at].strip())
    else:
        key = load_copybook(src, spec, drop).field(src.key)
        for raw in raws:
            ids.append((raw or b"")[key.offset : key.offset + key.length].decode(src.encoding, "replace").strip())
    return pa.array(ids, pa.string())


# --------------------------------------------------------------------------- small vectorized helpers


def _col(t: pa.Table, name: str) -> pa.Array:
    return t.column(name).combine_chunks()


def _isin(a: pa.Array, values: Any) -> np.ndarray:
    vs = values if isinstance(values, pa.Array) else pa.array(list(values), pa.string())
    return pc.fill_null(pc.is_in(a, value_set=vs), False).to_numpy(zero_copy_only=False)


def _ints(a: pa.Array) -> np.ndarray:
    return pc.fill_null(a, 0).to_numpy(zero_copy_only=False).astype(np.int64)


def _cents(a: pa.Array) -> np.ndarray:
    """Exact unscaled integers of a decimal array at scale 2 (nulls -> 0)."""
    if isinstance(a, pa.ChunkedArray):
        a = a.combine_chunks()
    if not (pa.types.is_decimal128(a.type) and a.type.scale == 2):
        a = a.cast(pa.decimal128(38, 2))
    if len(a) == 0:
        return np.zeros(0, np.int64)
    if a.null_count:
        a = pc.fill_null(a, pa.scalar(0, a.type))
    words = np.frombuffer(a.buffers()[1], np.int64, count=2 * (a.offset + len(a)))[2 * a.offset :].reshape(-1, 2)
    lo, hi = words[:, 0], words[:, 1]
    if not np.array_equal(hi, lo >> 63):
        raise ValueError("amount too large for int64 cents")
    return lo.copy()


def _decimal_like(cents: np.ndarray, like: pa.Array) -> pa.Array:
    """Cents as a decimal array of ``like``'s type, null where ``like`` is null."""
    t = like.type
    if t.scale != 2:
        raise ValueError(f"expected an amount with 2 decimals, found {t}")
    mask = like.is_null().to_numpy(zero_copy_only=False) if like.null_count else None
    return decimal_array(np.asarray(cents, np.int64), t.precision, t.scale, mask)


def _differs(old: pa.Array, new: pa.Array) -> np.ndarray:
    """Row-wise 'not equal', nulls equal to nulls (and to empty text)."""
    if pa.types.is_decimal(old.type):
        return _cents(old) != _cents(new)
    if pa.types.is_string(old.type):
        old, new = pc.fill_null(old, ""), pc.fill_null(new, "")
    return pc.fill_null(pc.not_equal(old, new), True).to_numpy(zero_copy_only=False)


def _set(t: pa.Table, name: str, values: pa.Array) -> pa.Table:
    i = t.schema.get_field_index(name)
    return t.set_column(i, t.schema.field(i), values.cast(t.schema.field(i).type))


def _count(n: int, rate: float) -> int:
    """How many of ``n`` policies a rate asks for: at least one when the rate is above zero."""
    return 0 if rate <= 0 or n == 0 else min(n, math.ceil(n * rate - 1e-9))


def _pick(rng: np.random.Generator, ok: np.ndarray, k: int) -> np.ndarray:
    """``k`` of the rows where ``ok`` holds, at random, in row order."""
    idx = np.flatnonzero(ok)
    k = min(k, len(idx))
    if k == 0:
        return idx[:0]
    return np.sort(rng.choice(idx, size=k, replace=False))


def _assign_kinds(rng: np.random.Generator, eligible: np.ndarray) -> np.ndarray:
    """One (70%) or two (30%) of the eligible change kinds per row, at random."""
    m, k = eligible.shape
    many = np.where(rng.random(m) < 0.3, 2, 1)
    keys = np.where(eligible, rng.random((m, k)), 2.0)
    rank = np.argsort(np.argsort(keys, axis=1, kind="stable"), axis=1, kind="stable")
    return (rank < many[:, None]) & eligible


def _choose(rng, pol: pa.Table, key: str, files: dict, cancellable: np.ndarray, changeable: np.ndarray, rates):
    """Which master records the delta cancels and changes (never a policy with a bad record in the book): the rows
    picked, in order, those rows as a table, and which of them are changed and which cancelled."""
    ok = _eligible(_col(pol, key), pa.concat_arrays([f.bad_ids for f in files.values()]))
    n = pol.num_rows
    cancel = _pick(rng, ok & cancellable, _count(n, rates.cancel))
    can_change = ok & changeable
    can_change[cancel] = False
    change = _pick(rng, can_change, _count(n, rates.change))
    rows = np.union1d(change, cancel)
    return rows, pol.take(pa.array(rows, pa.int64())), np.isin(rows, change), np.isin(rows, cancel)


def _append_new_business(out_tables: dict[str, pa.Table], new_tables: dict[str, pa.Table] | None, book_ids: pa.Array,
                         key: str, files: dict, scheme, day: int, also=None) -> list[str]:
    """Renumber generated new business into the day's id block (checked unused), append it to the delta's tables
    (`also(kind, table)` renumbers anything else a source needs), and return the new policy ids."""
    if not new_tables:
        return []
    gen_ids = _col(new_tables["policies"], key)
    fresh = _renumber(scheme, book_ids, gen_ids, day)
    _check_unused(fresh, files, key, scheme.what)
    for kind, t in new_tables.items():
        t = _set(t, key, _map_ids(_col(t, key), gen_ids, fresh))
        if also is not None:
            t = also(kind, t)
        if kind in out_tables:
            out_tables[kind] = pa.concat_tables([out_tables[kind], t.cast(out_tables[kind].schema)])
    return sorted(_trimmed(fresh))


def _eligible(ids: pa.Array, bad: pa.Array) -> np.ndarray:
    """Rows whose policy can be picked: an id, unique in the file, with no record quarantined anywhere."""
    counts = pc.value_counts(ids)
    dup = counts.field("values").filter(pc.greater(counts.field("counts"), 1))
    excluded = pa.concat_arrays([bad.cast(pa.string()), dup.cast(pa.string())])
    return ~_isin(ids, excluded) & ids.is_valid().to_numpy(zero_copy_only=False)


def _rerate_bp(rng: np.random.Generator, m: int) -> np.ndarray:
    """A premium change in basis points: +3..15% (60%) or -3..15%."""
    return rng.integers(300, 1501, m) * np.where(rng.random(m) < 0.6, 1, -1)


def _trimmed(a: pa.Array) -> list[str]:
    return pc.utf8_trim_whitespace(a).to_pylist()


def _changed_fields(ids: pa.Array, changed: np.ndarray, diffs: list[tuple[str, np.ndarray]]) -> dict[str, list[str]]:
    """``{policy id: [fields that differ]}`` for the changed rows (JSON output: one step per changed policy)."""
    names = [n for n, _ in diffs]
    matrix = np.stack([d for _, d in diffs], axis=1) if diffs else np.zeros((len(ids), 0), bool)
    rows = np.flatnonzero(changed)
    keys = _trimmed(ids.take(pa.array(rows, pa.int64())))
    out = {k: [names[j] for j in np.flatnonzero(matrix[r])] for k, r in zip(keys, rows)}
    return dict(sorted(out.items()))


def _new_address(rng: np.random.Generator, m: int, old: pa.Array, *, upper: bool) -> dict[str, pa.Array]:
    """A move: a new street address (never the old one), city, state and ZIP, in the source's style."""
    num = rng.integers(1, 10_000, m)
    street = _take(STREETS, rng.integers(0, len(STREETS), m))
    suffix = _take(STREET_SUFFIXES, rng.integers(0, len(STREET_SUFFIXES), m))
    unit = rng.random(m) < (0.15 if upper else 0.12)
    unit_no = rng.integers(1, 40, m) if upper else rng.integers(1, 300, m)
    city = rng.integers(0, len(CITIES), m)
    zip3 = np.array([int(c[2]) for c in CITIES])[city]
    zip5 = _num(zip3 * 100 + rng.integers(0, 100, m), 5)
    zip4 = _num(rng.integers(1, 10_000, m), 4)
    has_zip4 = rng.random(m) < (0.4 if upper else 0.3)

    def line(numbers: np.ndarray) -> pa.Array:
        s = _join(_num(numbers), street, suffix, sep=" ")
        s = pc.if_else(pa.array(unit), _join(s, pa.scalar("APT" if upper else "Unit"), _num(unit_no), sep=" "), s)
        return _upper(s) if upper else s

    addr = line(num)
    same = _same(addr, old)
    if same.any():
        addr = line(np.where(same, num % 9_999 + 1, num))
    city_name = _take([c[0] for c in CITIES], city)
    return {
        "addr": addr,
        "city": _upper(city_name) if upper else city_name,
        "state": _take([c[1] for c in CITIES], city),
        "zip5": zip5,
        "zip4": pc.if_else(pa.array(has_zip4), zip4, pa.scalar("")),
    }


def _same(a: pa.Array, b: pa.Array) -> np.ndarray:
    return pc.fill_null(pc.equal(a, b), False).to_numpy(zero_copy_only=False)


# --------------------------------------------------------------------------- new business


def _generate_new(source: str, src: SourceConfig, k: int, seed: int, tmp: Path,
                  pick: Any) -> dict[str, pa.Table]:
    """``k`` new policies made by the generator (oversampled, then ``pick`` chooses), decoded per file kind.

    ``pick(files) -> bool mask`` over the generated policies says which ones qualify; the first ``k``
    that do are kept with all their satellite records.
    """
    if k == 0:
        return {}
    g = math.ceil(k / _PENDING_SHARE[source]) + 32
    while True:
        if tmp.exists():
            shutil.rmtree(tmp)
        generate_sample(tmp, policies=g, seed=seed, defect_rate=0.0, mainframe_share=1.0 if source == MF else 0.0)
        files = _read_drop(src, tmp / source)
        ok = pick(files)
        if int(ok.sum()) >= k or g > 10_000_000:
            break
        g *= 2
    pol = files["policies"].table
    chosen = np.flatnonzero(ok)[:k]
    if len(chosen) < k:  # pragma: no cover - the generator always makes pending policies
        raise RuntimeError(f"{source}: could not generate {k} new pending policies")
    keep = _col(pol, src.key).take(pa.array(chosen, pa.int64()))
    return {kind: f.table.filter(pa.array(_isin(_col(f.table, src.key), keep))) for kind, f in files.items()}


def _id_numbers(layout: _IdLayout, ids: pa.Array) -> np.ndarray:
    ids = pc.utf8_trim_whitespace(ids.cast(pa.string()))
    ids = ids.filter(pc.fill_null(pc.match_substring_regex(ids, rf"^{layout.prefix}\d{{{layout.width}}}$"), False))
    return pc.cast(pc.utf8_slice_codeunits(ids, len(layout.prefix)), pa.int64()).to_numpy(zero_copy_only=False)


def _renumber(layout: _IdLayout, book_ids: pa.Array, old: pa.Array, day: int) -> pa.Array:
    """New ids for ``old`` (generator ids, in order) in day ``day``'s block above the book's ids.

    The book's ids span ``base .. top``; that span (rounded up to 1,000) is the size of a block and
    day N takes the (N-1)th block above ``base``, numbering ``step`` apart like the generator does.
    """
    nums = _id_numbers(layout, book_ids)
    top = int(nums.max()) + 1 if len(nums) else layout.base
    span = max(-(-(top - layout.base) // 1000) * 1000, 1000)
    k = len(old)
    if k * layout.step > span:
        raise ValueError(f"{k:,} new {layout.what}s do not fit a day's block of {span // layout.step:,}; "
                         f"lower new_rate")
    start = layout.base + span * (day - 1)
    end = start + k * layout.step
    if end > 10**layout.width:
        raise ValueError(f"day {day}: new {layout.what}s would pass {layout.prefix}{'9' * layout.width}; "
                         f"this book has room for deltas up to day {(10**layout.width - layout.base) // span}")
    gen = _id_numbers(layout, old)
    if len(gen) != k:
        raise ValueError(f"generated {layout.what}s do not look like {layout.prefix}{'9' * layout.width}")
    numbers = start + np.arange(k, dtype=np.int64) * layout.step + (gen - layout.base) % layout.step
    return _join(pa.scalar(layout.prefix), _num(numbers, layout.width))


def _map_ids(a: pa.Array, old: pa.Array, new: pa.Array) -> pa.Array:
    return new.take(pc.index_in(a, value_set=old))


def _check_unused(new_ids: pa.Array, files: dict[str, _File], key: str, what: str) -> None:
    used = pa.concat_arrays([_col(f.table, key).cast(pa.string()) for f in files.values()]
                            + [f.bad_ids for f in files.values()])
    clash = _isin(new_ids, used)
    if clash.any():
        raise ValueError(f"new {what} {new_ids[int(np.flatnonzero(clash)[0])].as_py()} is already used in the book")


# --------------------------------------------------------------------------- mainframe life


def _mainframe_delta(src: SourceConfig, drop: Path, target: Path, rng: np.random.Generator, *, day: int,
                     as_of: np.datetime64, rates: _Rates, new_seed: int, tmp: Path) -> SourceDelta:
    key = src.key
    files = _read_drop(src, drop)
    pol = files["policies"].table
    status = _col(pol, "POL_STATUS")
    in_force = _isin(status, ["IF"]) & ~_isin(_col(pol, "PLAN_CODE"), _MF_ANNUITY_PLANS)
    rows, S, changed, cancelled = _choose(rng, pol, key, files, in_force, _isin(status, _MF_CHANGEABLE), rates)
    S_ids = _col(S, key)
    m = S.num_rows

    # ---- what changes, per policy
    status_s = _col(S, "POL_STATUS")
    modal = _cents(_col(S, "MODAL_PREMIUM"))
    rider_count = np.clip(_ints(_col(S, "RIDER_COUNT")), 0, 5)
    in_odo = np.arange(5)[None, :] < rider_count[:, None]
    riders = np.stack([_cents(_col(S, f"RIDER_PREMIUM_{j + 1}")) for j in range(5)], axis=1) * in_odo
    base = modal - riders.sum(axis=1)
    mode = pc.fill_null(pc.index_in(_col(S, "BILLING_MODE"), value_set=pa.array(_BILL_MODES)), -1)
    mode = mode.to_numpy(zero_copy_only=False).astype(np.int64)
    priced = changed & (modal >= 1000) & (2 * base >= modal) & _isin(status_s, ["IF", "PE"])
    eligible = np.stack([priced, changed, priced & (mode >= 0) & _isin(status_s, ["IF"]), changed], axis=1)
    kinds = _assign_kinds(rng, eligible)
    bp = _rerate_bp(rng, m)
    new_mode = (np.maximum(mode, 0) + rng.integers(1, 4, m)) % 4
    address = _new_address(rng, m, _col(S, "INS_ADDR_LINE1"), upper=True)

    # premium rerate: the base coverage absorbs it (riders stay)
    new_modal = np.where(kinds[:, 0], modal + modal * bp // 10_000, modal)
    # billing mode: the modal factor moves the modal premium and every rider premium
    by_mode = kinds[:, 2]
    f_old = _BILL_FACTOR_BP[np.maximum(mode, 0)]
    f_new = _BILL_FACTOR_BP[new_mode]
    new_modal = np.where(by_mode, (new_modal * f_new + f_old // 2) // f_old, new_modal)
    new_modal = np.minimum(new_modal, _MF_MODAL_MAX)
    scaled = np.clip((riders * f_new[:, None] + f_old[:, None] // 2) // f_old[:, None], 1, _MF_RIDER_MAX)
    new_riders = np.where(by_mode[:, None] & in_odo, scaled, riders)

    old = S
    S = _set(S, "MODAL_PREMIUM", _decimal_like(new_modal, _col(old, "MODAL_PREMIUM")))
    for j in range(5):
        name = f"RIDER_PREMIUM_{j + 1}"
        values = np.where(in_odo[:, j], new_riders[:, j], _cents(_col(old, name)))
        S = _set(S, name, _decimal_like(values, _col(old, name)))
    S = _set(S, "BILLING_MODE", pc.if_else(pa.array(by_mode), _take(_BILL_MODES, new_mode), _col(old, "BILLING_MODE")))
    moved = pa.array(kinds[:, 1])
    for name, part in (("INS_ADDR_LINE1", "addr"), ("INS_CITY", "city"), ("INS_STATE", "state"),
                       ("INS_ZIP", "zip5"), ("INS_ZIP4", "zip4")):
        S = _set(S, name, pc.if_else(moved, address[part], _col(old, name)))
    S = _set(S, "POL_STATUS", pc.if_else(pa.array(cancelled), pa.scalar(MF_CANCELLED), status_s))

    diffs = [(name, _differs(_col(old, name), _col(S, name)))
             for name in S.schema.names if name not in ("record_no", "POL_STATUS")]
    diffs = [(name, d) for name, d in diffs if d.any()]

    # ---- satellites of the included policies, whole; coverage premiums and new endorsements follow
    out_tables: dict[str, pa.Table] = {"policies": S}
    sat_diffs: list[tuple[str, np.ndarray]] = []
    for kind, f in files.items():
        if kind == "policies":
            continue
        t = f.table.filter(pa.array(_isin(_col(f.table, key), S_ids)))
        owner = pc.index_in(_col(t, key), value_set=S_ids).to_numpy(zero_copy_only=False).astype(np.int64)
        if kind == "coverages":
            seq = _ints(_col(t, "COV_SEQ"))
            d_modal = new_modal - modal
            d_riders = new_riders - riders
            slot = np.clip(seq - 2, 0, 4)
            delta = np.where(seq == 1, d_modal[owner] - d_riders[owner].sum(axis=1),
                             np.where(seq >= 2, d_riders[owner, slot], 0))
            if len(t):
                t = _set(t, "COV_PREMIUM", _decimal_like(_cents(_col(t, "COV_PREMIUM")) + delta, _col(t, "COV_PREMIUM")))
            touched = np.zeros(m, bool)
            touched[owner[delta != 0]] = True
            sat_diffs.append((f"{kind}.COV_PREMIUM", touched))
        elif kind == "endorsements":
            t, added = _add_endorsements(t, owner, S_ids, kinds, as_of + (day - 1))
            sat_diffs.append((kind, added))
        out_tables[kind] = t

    changed_fields = _changed_fields(S_ids, changed, diffs + [(n_, d) for n_, d in sat_diffs if d.any()])

    # ---- new business
    k_new = _count(pol.num_rows, rates.new)

    def pending_without_claims(gen: dict[str, _File]) -> np.ndarray:
        p = gen["policies"].table
        claimed = _col(gen["claims"].table, key) if "claims" in gen else pa.array([], pa.string())
        return _isin(_col(p, "POL_STATUS"), [_NEW_STATUS[MF]]) & ~_isin(_col(p, key), claimed)

    def new_documents(kind: str, t: pa.Table) -> pa.Table:
        if kind != "correspondence" or "correspondence" not in files or not len(t):
            return t
        docs = _renumber(_MF_DOC_IDS, _col(files["correspondence"].table, "DOC_ID"), _col(t, "DOC_ID"), day)
        _check_unused(docs, {"correspondence": files["correspondence"]}, "DOC_ID", _MF_DOC_IDS.what)
        return _set(t, "DOC_ID", docs)

    new_tables = _generate_new(MF, src, k_new, new_seed, tmp, pending_without_claims)
    new_ids = _append_new_business(out_tables, new_tables, _col(pol, key), key, files, _MF_POLICY_IDS, day,
                                   new_documents)

    # ---- write, in the book's file names, with the book's copybooks
    records: dict[str, int] = {}
    for kind, f in files.items():
        t = out_tables[kind]
        cb = load_copybook(src, f.spec, drop)
        matrix, lengths = encode_matrix(cb, t, t.num_rows, encoding=src.encoding)
        data = frame_records(matrix, lengths, f.spec.record_format)
        if f.spec.trailer is not None:  # the master's trailer last: its count and money total, as the book's
            layout = load_copybook(src, f.spec, drop, name=f.spec.trailer.copybook)
            total = pc.sum(t.column(f.spec.trailer.total_of)).as_py() if f.spec.trailer.total_of else None
            data += encode_trailer(layout, f.spec, t.num_rows, total, src.encoding)
            shutil.copyfile(copybook_path(src, f.spec, drop, name=f.spec.trailer.copybook),
                            target / f.spec.trailer.copybook)
        (target / f.path.name).write_bytes(data)
        records[f.path.name] = t.num_rows
        shutil.copyfile(copybook_path(src, f.spec, drop), target / f.spec.copybook)
    _write_control(src, target, records)
    return SourceDelta(
        source=MF,
        changed=changed_fields,
        cancelled=sorted(_trimmed(S_ids.filter(pa.array(cancelled)))),
        new=new_ids,
        records=records,
    )


def _add_endorsements(t: pa.Table, owner: np.ndarray, ids: pa.Array, kinds: np.ndarray,
                      date: np.datetime64) -> tuple[pa.Table, np.ndarray]:
    """Append an endorsement record per contract change (ADDR, MODE) or on its own (BENE), after the
    policy's existing ones (next END_SEQ); returns the table in policy order and who got one."""
    codes = np.array(["ADDR", "MODE", "BENE"])
    wants = kinds[:, [1, 2, 3]]
    m = len(ids)
    per_policy = wants.sum(axis=1)
    pol, which = np.nonzero(wants)
    if len(pol) == 0:
        return t, np.zeros(m, bool)
    last = np.zeros(m, np.int64)
    np.maximum.at(last, owner, _ints(_col(t, "END_SEQ")))
    starts = np.cumsum(per_policy) - per_policy
    seq = last[pol] + np.arange(len(pol)) - starts[pol] + 1
    code = codes[which]
    schema = t.schema
    change_type = schema.field("END_PREM_CHANGE").type
    new = pa.table(
        {
            "record_no": pa.array(np.zeros(len(pol), np.int64)),
            "POL_NUMBER": ids.take(pa.array(pol, pa.int64())),
            "END_SEQ": pa.array(np.minimum(seq, 999)),
            "END_DATE": pa.array(_yyyymmdd(np.full(len(pol), date, dtype="datetime64[D]"))),
            "END_CODE": pa.array(code.tolist(), pa.string()),
            "END_DESC": pa.array([_END_TEXT[c] for c in code.tolist()], pa.string()),
            "END_PREM_CHANGE": decimal_array(np.zeros(len(pol), np.int64), change_type.precision, change_type.scale),
        }
    ).select(schema.names).cast(schema)
    both = pa.concat_tables([t, new])
    order = np.lexsort((np.arange(both.num_rows), np.concatenate([owner, pol])))
    return both.take(pa.array(order, pa.int64())), per_policy > 0


# --------------------------------------------------------------------------- P&C CSV


def _pc_delta(src: SourceConfig, drop: Path, target: Path, rng: np.random.Generator, *, day: int,
              rates: _Rates, new_seed: int, tmp: Path) -> SourceDelta:
    key = src.key
    files = _read_drop(src, drop)
    pol = files["policies"].table
    status = _col(pol, "PolStatus")
    rows, S, changed, cancelled = _choose(rng, pol, key, files, _isin(status, ["ACT"]), _isin(status, _PC_CHANGEABLE),
                                          rates)
    S_ids = _col(S, key)
    m = S.num_rows

    cov = files["coverages"].table
    cov = cov.filter(pa.array(_isin(_col(cov, key), S_ids)))
    owner = pc.index_in(_col(cov, key), value_set=S_ids).to_numpy(zero_copy_only=False).astype(np.int64)
    _, first_row = np.unique(owner, return_index=True)  # the primary coverage: a policy's first line
    primary = np.full(m, -1, np.int64)
    primary[owner[first_row]] = first_row
    cov_prem = _cents(_col(cov, "CovPrem"))

    prem = _cents(_col(S, "AnnualPrem"))
    plan = pc.fill_null(pc.index_in(_col(S, "PayPlan"), value_set=pa.array(_PAY_PLANS)), -1)
    plan = plan.to_numpy(zero_copy_only=False).astype(np.int64)
    bp = _rerate_bp(rng, m)
    d_prem = prem * bp // 10_000
    primary_prem = np.where(primary >= 0, cov_prem[np.maximum(primary, 0)], 0)
    eligible = np.stack([
        changed & (prem >= 1000) & (primary >= 0) & (primary_prem + d_prem >= 0),
        changed,
        changed & (plan >= 0),
    ], axis=1)
    kinds = _assign_kinds(rng, eligible)
    new_plan = (np.maximum(plan, 0) + rng.integers(1, len(_PAY_PLANS), m)) % len(_PAY_PLANS)
    address = _new_address(rng, m, _col(S, "MailAddr"), upper=False)

    # premium rerate: billed through the balance due, the primary coverage absorbs it
    d = np.where(kinds[:, 0], d_prem, 0)
    old = S
    S = _set(S, "AnnualPrem", _decimal_like(prem + d, _col(old, "AnnualPrem")))
    S = _set(S, "BalanceDue", _decimal_like(_cents(_col(old, "BalanceDue")) + d, _col(old, "BalanceDue")))
    moved = pa.array(kinds[:, 1])
    zip_ = pc.if_else(pc.equal(address["zip4"], ""), address["zip5"], _join(address["zip5"], address["zip4"], sep="-"))
    for name, values in (("MailAddr", address["addr"]), ("City", address["city"]), ("State", address["state"]),
                         ("Zip", zip_)):
        S = _set(S, name, pc.if_else(moved, values, _col(old, name)))
    S = _set(S, "PayPlan", pc.if_else(pa.array(kinds[:, 2]), _take(_PAY_PLANS, new_plan), _col(old, "PayPlan")))
    S = _set(S, "PolStatus", pc.if_else(pa.array(cancelled), pa.scalar(PC_CANCELLED), _col(old, "PolStatus")))

    cov_delta = np.zeros(len(cov), np.int64)
    has = primary >= 0
    cov_delta[primary[has]] = d[has]
    if len(cov):
        cov = _set(cov, "CovPrem", _decimal_like(cov_prem + cov_delta, _col(cov, "CovPrem")))
    touched = np.zeros(m, bool)
    touched[owner[cov_delta != 0]] = True

    diffs = [(name, _differs(_col(old, name), _col(S, name)))
             for name in S.schema.names if name not in ("record_no", "PolStatus")]
    diffs = [(name, dd) for name, dd in diffs if dd.any()]
    if touched.any():
        diffs.append(("coverages.CovPrem", touched))
    changed_fields = _changed_fields(S_ids, changed, diffs)
    out_tables = {"policies": S, "coverages": cov}

    # ---- new business
    k_new = _count(pol.num_rows, rates.new)

    def pending(gen: dict[str, _File]) -> np.ndarray:
        return _isin(_col(gen["policies"].table, "PolStatus"), [_NEW_STATUS[PC]])

    new_tables = _generate_new(PC, src, k_new, new_seed, tmp, pending)
    new_ids = _append_new_business(out_tables, new_tables, _col(pol, key), key, files, _PC_POLICY_IDS, day)

    records: dict[str, int] = {}
    for kind, f in files.items():
        t = out_tables[kind]
        (target / f.path.name).write_bytes(_csv_bytes(t, f.spec, src.encoding))
        records[f.path.name] = t.num_rows
    _write_control(src, target, records)
    return SourceDelta(
        source=PC,
        changed=changed_fields,
        cancelled=sorted(_trimmed(S_ids.filter(pa.array(cancelled)))),
        new=new_ids,
        records=records,
    )


def _write_control(src: SourceConfig, target: Path, records: dict[str, int]) -> None:
    """The delta's control file, named as the book's (the source's pattern without its wildcard)."""
    if src.control is None:
        return
    entries = [ControlEntry(name, 0, n, (target / name).stat().st_size) for name, n in records.items()]
    (target / src.control.pattern.replace("*", "")).write_text(control_file_text(entries), encoding="ascii")


def _csv_bytes(t: pa.Table, spec: FileSpec, encoding: str) -> bytes:
    """The file as the export writes it: header, standard quoting, money text per column."""
    if spec.delimiter != ",":
        raise ValueError(f"{spec.kind}: only comma-delimited exports are written, not {spec.delimiter!r}")
    parts = []
    for c in spec.columns or []:
        a = _col(t, c.name)
        if c.type == "amount":
            if c.scale != 2:
                raise ValueError(f"{spec.kind}.{c.name}: only amounts with 2 decimals are written, not {c.scale}")
            text = _money(_cents(a), **_PC_MONEY.get(c.name, _PC_MONEY_DEFAULT))
            if a.null_count:
                text = pc.if_else(a.is_null(), pa.scalar(""), text)
        elif c.type == "integer":
            text = pc.cast(a, pa.string())
        else:
            text = a
        parts.append(_csv_quote(text))
    header = (",".join(c.name for c in spec.columns or []) + "\n").encode(encoding)
    if t.num_rows == 0:
        return header
    lines = _join(*parts, sep=",")
    lines = _join(lines, pa.scalar(""), sep="\n")
    body = _string_array_bytes(lines).to_pybytes()
    if codecs.lookup(encoding).name != "utf-8":
        body = body.decode("utf-8").encode(encoding)
    return header + body
