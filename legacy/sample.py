"""Synthetic legacy book: a deterministic, realistic drop of two legacy systems.

``generate_sample(out_dir, policies=..., seed=...)`` writes::

    out_dir/mainframe_life/  POLMAST.dat (RECFM=VB, RDW records, cp037, a POLTRLR trailer record last)
                             + POLMAST.cpy, POLTRLR.cpy
                             COVERAGE, PAYHIST, ENDORSE, CORRIDX, CLAIMREF (.dat RECFM=FB cp037 + .cpy)
                             CONTROL.txt (each .dat file's record and byte counts)
    out_dir/pc_csv/          policies.csv, coverages.csv (UTF-8), control.txt (their data lines and bytes)
    out_dir/manifest.json    files, policy totals and every injected defect

Same arguments -> byte-identical files (numpy ``Generator(PCG64(...))`` streams
seeded from ``seed``, a fixed "as of" date, no clocks, uuids or set order).
Generation is vectorized per column with numpy/pyarrow in chunks of
``CHUNK_POLICIES`` policies, so memory stays flat for millions of policies.

Defects: a fraction ``defect_rate`` of the records of every data file carries
exactly one defect, its kind drawn from the kinds that make sense for that file.
Each is listed in the manifest with the 1-based record number, the stage that
must catch it (``intake`` -> quarantined with ``reason``/``field``; ``mapping``
-> loads at intake, caught at mapping; ``preserve`` -> must load exactly).

manifest.json::

    {"version": 1, "seed": 42, "policies": 1000, "defect_rate": 0.02, "mainframe_share": 0.5,
     "as_of": "2025-06-30", "chunk_policies": 100000,
     "files": {"mainframe_life/POLMAST.dat": {"records": 500, "bytes": 147000, "sha256": "..."},
               "mainframe_life/COVERAGE.dat": {"records": 812, "bytes": 48726, "sha256": "...",
                                               "trailing_bytes": 6}, ...},
     "policy_totals": {"mainframe_life": {"file": "POLMAST.dat", "records": 500, "policies": 500,
                                          "premium_field": "MODAL_PREMIUM", "premium_cents": 123456789,
                                          "modal_premium_cents": 123456789},
                       "pc_csv": {..., "premium_field": "AnnualPrem", "annual_premium_cents": ...}},
     "defects": [{"source": "mainframe_life", "file": "POLMAST.dat", "record": 17,
                  "kind": "wrong_record_length", "stage": "intake", "reason": "record_length",
                  "field": null, "policy_id": "L100000051", "premium_cents": 14277}, ...]}

* ``files[...].records`` counts what a reader sees: a file with trailing garbage
  has one more (partial) record, the one its ``trailing_garbage`` defect names.
  The control files declare what the sender wrote: whole records (so the
  garbage is quarantined, not mistaken for a truncated file) and the file's
  bytes. POLMAST's trailer (not a data record, and not counted in ``records``)
  declares its record count and the modal premium total as written.
* ``premium_cents`` totals the premium column over every record of the policies
  file as generated (mapping defects included; for records quarantined at intake
  the value they were meant to carry).  Defects of a policies file carry that
  record's ``premium_cents`` so totals reconcile after quarantine.
* ``duplicate_policy_id`` defects name the later record; ``duplicate_of`` is the
  record whose id it repeats.  A duplicate master record has no satellites.
* Satellites of a policy quarantined at intake stay in their files (they become
  orphans at mapping; only injected orphans are listed as ``orphan_coverage``).
"""

from __future__ import annotations

import argparse
import decimal
import hashlib
import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from legacy.copybook import Copybook, encode_matrix, frame_records, parse_copybook
from legacy.integrity import ControlEntry, control_file_text, encode_trailer

__all__ = [
    "AS_OF",
    "CHUNK_POLICIES",
    "DEFECT_KINDS",
    "FILE_DEFECT_KINDS",
    "ACCENTED_FIRST_NAMES",
    "ACCENTED_LAST_NAMES",
    "LIFE_PLAN_CODES",
    "LIFE_STATUS_CODES",
    "PC_LOB_CODES",
    "PC_STATUS_CODES",
    "FileSummary",
    "SampleSummary",
    "generate_sample",
    "main",
]

CHUNK_POLICIES = 100_000
AS_OF = np.datetime64("2025-06-30", "D")  # the book's extract date (fixed: no clock dependence)
MANIFEST_VERSION = 1

MF = "mainframe_life"
PC = "pc_csv"

# kind -> (stage, intake reason)
DEFECT_KINDS: dict[str, tuple[str, str | None]] = {
    "wrong_record_length": ("intake", "record_length"),
    "bad_packed": ("intake", "invalid_packed"),
    "blank_date": ("intake", "invalid_zoned"),
    "trailing_garbage": ("intake", "trailing_bytes"),
    "unquoted_comma": ("intake", "column_count"),
    "bad_amount": ("intake", "invalid_number"),
    "bad_encoding": ("intake", "invalid_encoding"),
    "impossible_date": ("mapping", None),
    "zero_date": ("mapping", None),
    "negative_premium": ("mapping", None),
    "duplicate_policy_id": ("mapping", None),
    "orphan_coverage": ("mapping", None),
    "unknown_code": ("mapping", None),
    "non_ascii_name": ("preserve", None),
}

# per-record defect kinds each file can carry (trailing_garbage is per file, see below)
FILE_DEFECT_KINDS: dict[str, tuple[str, ...]] = {
    f"{MF}/POLMAST.dat": (
        "wrong_record_length", "bad_packed", "blank_date", "impossible_date", "zero_date",
        "negative_premium", "duplicate_policy_id", "unknown_code", "non_ascii_name",
    ),
    f"{MF}/COVERAGE.dat": ("bad_packed", "blank_date", "impossible_date", "orphan_coverage"),
    f"{MF}/PAYHIST.dat": ("bad_packed", "blank_date"),
    f"{MF}/ENDORSE.dat": ("bad_packed", "blank_date"),
    f"{MF}/CORRIDX.dat": ("blank_date",),
    f"{MF}/CLAIMREF.dat": ("bad_packed", "blank_date"),
    f"{PC}/policies.csv": (
        "unquoted_comma", "bad_amount", "bad_encoding", "impossible_date", "zero_date",
        "negative_premium", "duplicate_policy_id", "unknown_code", "non_ascii_name",
    ),
    f"{PC}/coverages.csv": ("bad_amount", "impossible_date", "zero_date", "orphan_coverage"),
}
SATELLITES = ("COVERAGE", "PAYHIST", "ENDORSE", "CORRIDX", "CLAIMREF")
MF_FILES = ("POLMAST",) + SATELLITES

# --------------------------------------------------------------------------- code lists

LIFE_PLAN_CODES = ("WL100", "UL2000", "TERM20", "TERM10", "ANNFX", "ANNVA")
_PLAN_P = (0.22, 0.18, 0.25, 0.12, 0.13, 0.10)
LIFE_STATUS_CODES = ("IF", "LA", "SU", "DC", "PU", "PE")
_STATUS_P = (0.68, 0.09, 0.06, 0.03, 0.07, 0.07)
_CARRIERS = ("NALC", "NAL1", "PLIC", "FNLA")
_BILL_MODES = ("A", "S", "Q", "M")
_BILL_P = (0.2, 0.1, 0.2, 0.5)
_BILL_FACTOR_BP = np.array([10000, 5150, 2625, 875])  # modal factor in basis points
_BILL_MONTHS = np.array([12, 6, 3, 1])
_RIDER_CODES = ("ADB", "WOP", "CTR", "GIO", "LTC", "TIR")
_BEN_REL = ("SP", "CH", "PA", "TR", "ES", "SB")
_BEN_REL_P = (0.6, 0.15, 0.1, 0.05, 0.05, 0.05)
_PAY_METHODS = ("EFT", "CHK", "CC", "LBX")
_END_CODES = ("BENE", "ADDR", "NAME", "MODE", "FACE", "RIDR", "REIN")
_END_DESC = (
    "BENEFICIARY DESIGNATION CHANGED",
    "MAILING ADDRESS CHANGED",
    "INSURED NAME CORRECTED",
    "BILLING MODE CHANGED",
    "FACE AMOUNT DECREASED AT OWNER REQUEST",
    "RIDER ADDED",
    "POLICY REINSTATED AFTER LAPSE",
)
_DOC_TYPES = ("POLC", "ANST", "BILL", "LAPN", "CONF", "BENE")
_DOC_CHANNELS = ("M", "E", "P")
_CLAIM_TYPES = ("WP", "AD", "LT")
_CLAIM_STATUS = ("OP", "CL", "PD", "DN")
_UNKNOWN_STATUS = ("XX", "Z1", "00", "LP")
_UNKNOWN_PLAN = ("WL99", "TERM15", "UL3K", "ANNQ")

PC_LOB_CODES = ("HO3", "HO5", "PAUTO", "CAUTO", "BOP", "CGL", "WC")
_LOB_P = (0.30, 0.08, 0.32, 0.07, 0.11, 0.07, 0.05)
_LOB_PERSONAL = np.array([True, True, True, False, False, False, False])
# lognormal annual premium: median dollars and sigma
_LOB_PREM = np.array([1500.0, 3200.0, 1400.0, 6000.0, 3500.0, 7000.0, 12000.0])
PC_STATUS_CODES = ("ACT", "CAN", "EXP", "PND", "NRN")
_PC_STATUS_P = (0.72, 0.08, 0.10, 0.04, 0.06)
_PAY_PLANS = ("FP", "2P", "4P", "10P", "EFT12")
_PAY_PLAN_P = (0.3, 0.15, 0.15, 0.1, 0.3)
_PAY_PLAN_N = np.array([1, 2, 4, 10, 12])
_WRITING_COS = ("PCIC", "PCMU", "PCSP", "PCNE")
_UNKNOWN_LOB = ("HO9", "UMB", "FARM", "PAUT0")
_UNKNOWN_PC_STATUS = ("SUS", "ZZZ", "A", "REI")
# coverage codes per LOB: the first is the primary coverage
_LOB_COVS: dict[str, tuple[str, ...]] = {
    "HO3": ("DWELL", "OTHSTR", "PERSPROP", "LOSSUSE", "LIAB", "MEDPAY"),
    "HO5": ("DWELL", "OTHSTR", "PERSPROP", "LOSSUSE", "LIAB", "MEDPAY"),
    "PAUTO": ("BI", "PD", "COLL", "COMP", "UM", "MEDPAY"),
    "CAUTO": ("BI", "PD", "COLL", "COMP", "UM"),
    "BOP": ("BLDG", "BPP", "LIAB", "BUSINC"),
    "CGL": ("OCCUR", "GENAGG", "PRODAGG", "MEDPAY"),
    "WC": ("WCSTAT", "WCEL"),
}
_PC_COV_CODES = tuple(sorted({c for v in _LOB_COVS.values() for c in v}))
# (limit choices in dollars, deductible choices in dollars) per coverage code; None -> derived
_COV_LIMITS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "DWELL": ((150_000, 200_000, 250_000, 300_000, 400_000, 500_000, 750_000, 900_000), (500, 1000, 2500)),
    "OTHSTR": ((15_000, 20_000, 25_000, 30_000, 50_000), (500, 1000, 2500)),
    "PERSPROP": ((75_000, 100_000, 150_000, 250_000, 400_000), (500, 1000, 2500)),
    "LOSSUSE": ((30_000, 40_000, 60_000, 100_000), (0,)),
    "LIAB": ((100_000, 300_000, 500_000, 1_000_000), (0,)),
    "MEDPAY": ((1_000, 2_000, 5_000, 10_000), (0,)),
    "BI": ((50_000, 100_000, 250_000, 500_000, 1_000_000), (0,)),
    "PD": ((25_000, 50_000, 100_000, 250_000), (0,)),
    "COLL": ((8_000, 15_000, 25_000, 40_000, 60_000), (250, 500, 1000)),
    "COMP": ((8_000, 15_000, 25_000, 40_000, 60_000), (100, 250, 500)),
    "UM": ((50_000, 100_000, 250_000, 500_000), (0,)),
    "BLDG": ((250_000, 500_000, 1_000_000, 2_500_000, 5_000_000), (1000, 2500, 5000)),
    "BPP": ((50_000, 100_000, 250_000, 500_000, 1_000_000), (500, 1000, 2500)),
    "BUSINC": ((100_000, 250_000, 500_000, 1_000_000), (0,)),
    "OCCUR": ((1_000_000, 2_000_000), (0, 1000, 5000)),
    "GENAGG": ((2_000_000, 4_000_000), (0,)),
    "PRODAGG": ((2_000_000, 4_000_000), (0,)),
    "WCSTAT": ((1_000_000,), (0,)),
    "WCEL": ((500_000, 1_000_000), (0,)),
}

# --------------------------------------------------------------------------- name/address pools

LAST_NAMES = (
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez", "Martinez",
    "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson", "Thomas", "Taylor", "Moore", "Jackson", "Martin",
    "Lee", "Perez", "Thompson", "White", "Harris", "Sanchez", "Clark", "Ramirez", "Lewis", "Robinson",
    "Walker", "Young", "Allen", "King", "Wright", "Scott", "Torres", "Nguyen", "Hill", "Flores",
    "Green", "Adams", "Nelson", "Baker", "Hall", "Rivera", "Campbell", "Mitchell", "Carter", "Roberts",
    "Gomez", "Phillips", "Evans", "Turner", "Diaz", "Parker", "Cruz", "Edwards", "Collins", "Reyes",
    "Stewart", "Morris", "Morales", "Murphy", "Cook", "Rogers", "Gutierrez", "Ortiz", "Morgan", "Cooper",
    "Peterson", "Bailey", "Reed", "Kelly", "Howard", "Ramos", "Kim", "Cox", "Ward", "Richardson",
    "Watson", "Brooks", "Chavez", "Wood", "James", "Bennett", "Gray", "Mendoza", "Ruiz", "Hughes",
    "Price", "Alvarez", "Castillo", "Sanders", "Patel", "Myers", "Long", "Ross", "Foster", "Jimenez",
    "O'Brien", "O'Connor", "McDonald", "Van Dyke", "St. John", "Kowalski", "Schmidt", "Novak", "Olsen", "Lindqvist",
)
FIRST_NAMES_M = (
    "James", "Robert", "John", "Michael", "David", "William", "Richard", "Joseph", "Thomas", "Charles",
    "Christopher", "Daniel", "Matthew", "Anthony", "Mark", "Donald", "Steven", "Paul", "Andrew", "Joshua",
    "Kenneth", "Kevin", "Brian", "George", "Timothy", "Ronald", "Edward", "Jason", "Jeffrey", "Ryan",
    "Jacob", "Gary", "Nicholas", "Eric", "Jonathan", "Stephen", "Larry", "Justin", "Scott", "Brandon",
    "Benjamin", "Samuel", "Gregory", "Alexander", "Patrick", "Frank", "Raymond", "Jack", "Dennis", "Jerry",
)
FIRST_NAMES_F = (
    "Mary", "Patricia", "Jennifer", "Linda", "Elizabeth", "Barbara", "Susan", "Jessica", "Sarah", "Karen",
    "Lisa", "Nancy", "Betty", "Margaret", "Sandra", "Ashley", "Kimberly", "Emily", "Donna", "Michelle",
    "Carol", "Amanda", "Dorothy", "Melissa", "Deborah", "Stephanie", "Rebecca", "Sharon", "Laura", "Cynthia",
    "Kathleen", "Amy", "Angela", "Shirley", "Anna", "Brenda", "Pamela", "Emma", "Nicole", "Helen",
    "Samantha", "Katherine", "Christine", "Debra", "Rachel", "Carolyn", "Janet", "Catherine", "Maria", "Heather",
)
# non-ASCII names, all representable in cp037 and latin-1 (the "preserve" defect)
ACCENTED_LAST_NAMES = (
    "Müller", "Núñez", "Ångström", "Sørensen", "Gonçalves", "Sánchez", "Björk", "Øvergaard",
    "Jiménez", "Peña", "Köhler", "Lefèvre", "Brontë", "Åberg", "Muñoz", "Gómez",
)
ACCENTED_FIRST_NAMES = (
    "José", "Søren", "Françoise", "Zoë", "Renée", "Agnès", "Jürgen", "Björn",
    "Inés", "Óscar", "Raúl", "Chloé", "Håkan", "Ángel", "Maëlle", "Jörg",
)
MIDDLE_INITIALS = tuple("ABCDEFGHJKLMNPRSTW")
STREETS = (
    "Maple", "Oak", "Pine", "Cedar", "Elm", "Washington", "Lake", "Hill", "Main", "Park",
    "Walnut", "Sunset", "Lincoln", "Jefferson", "Highland", "Ridge", "Church", "Meadow", "Forest", "River",
    "Spring", "Willow", "Chestnut", "Madison", "Franklin", "Jackson", "Cherry", "Center", "Mill", "Valley",
)
STREET_SUFFIXES = ("St", "Ave", "Rd", "Dr", "Ln", "Ct", "Blvd", "Way", "Pl", "Ter")
# (city, state, ZIP prefix)
CITIES = (
    ("Hartford", "CT", "061"), ("Stamford", "CT", "069"), ("Boston", "MA", "021"), ("Worcester", "MA", "016"),
    ("Providence", "RI", "029"), ("Portland", "ME", "041"), ("Manchester", "NH", "031"), ("Burlington", "VT", "054"),
    ("Newark", "NJ", "071"), ("Trenton", "NJ", "086"), ("Albany", "NY", "122"), ("Buffalo", "NY", "142"),
    ("Rochester", "NY", "146"), ("Syracuse", "NY", "132"), ("Philadelphia", "PA", "191"), ("Pittsburgh", "PA", "152"),
    ("Harrisburg", "PA", "171"), ("Baltimore", "MD", "212"), ("Wilmington", "DE", "198"), ("Richmond", "VA", "232"),
    ("Norfolk", "VA", "235"), ("Raleigh", "NC", "276"), ("Charlotte", "NC", "282"), ("Columbia", "SC", "292"),
    ("Atlanta", "GA", "303"), ("Savannah", "GA", "314"), ("Jacksonville", "FL", "322"), ("Orlando", "FL", "328"),
    ("Tampa", "FL", "336"), ("Miami", "FL", "331"), ("Birmingham", "AL", "352"), ("Nashville", "TN", "372"),
    ("Memphis", "TN", "381"), ("Louisville", "KY", "402"), ("Columbus", "OH", "432"), ("Cleveland", "OH", "441"),
    ("Cincinnati", "OH", "452"), ("Indianapolis", "IN", "462"), ("Detroit", "MI", "482"), ("Grand Rapids", "MI", "495"),
    ("Chicago", "IL", "606"), ("Springfield", "IL", "627"), ("Milwaukee", "WI", "532"), ("Madison", "WI", "537"),
    ("Minneapolis", "MN", "554"), ("Des Moines", "IA", "503"), ("St. Louis", "MO", "631"), ("Kansas City", "MO", "641"),
    ("Omaha", "NE", "681"), ("Wichita", "KS", "672"), ("Dallas", "TX", "752"), ("Houston", "TX", "770"),
    ("Austin", "TX", "787"), ("San Antonio", "TX", "782"), ("Oklahoma City", "OK", "731"), ("Denver", "CO", "802"),
    ("Phoenix", "AZ", "850"), ("Albuquerque", "NM", "871"), ("Salt Lake City", "UT", "841"), ("Boise", "ID", "837"),
    ("Seattle", "WA", "981"), ("Spokane", "WA", "992"), ("Portland", "OR", "972"), ("Sacramento", "CA", "958"),
    ("San Diego", "CA", "921"), ("Fresno", "CA", "937"), ("Las Vegas", "NV", "891"), ("Honolulu", "HI", "968"),
)
BUSINESS_TRADES = (
    "Plumbing", "Roofing", "Auto Repair", "Family Dental", "Bakery", "Landscaping", "Construction",
    "Consulting", "Trucking", "Hardware", "Electric", "Veterinary Clinic", "Printing", "Catering",
    "Machine Works", "Realty", "Pharmacy", "Florist", "Storage", "Hospitality Group",
)
BUSINESS_SUFFIXES = ("", " LLC", ", LLC", " Inc", ", Inc.", " Co", ", Ltd.", " & Sons", " Partners, LP")
# EIN prefixes that the IRS does not assign (fake but well-formed business tax ids)
_EIN_PREFIXES = ("07", "08", "09", "17", "18", "19", "28", "29", "49", "69", "70", "78", "79", "89", "96", "97")

_EPOCH_1975 = np.datetime64("1975-01-01", "D")

# --------------------------------------------------------------------------- small vectorized helpers


def _arr(values: Sequence[str]) -> pa.Array:
    return pa.array(list(values), pa.string())


def _take(pool: Sequence[str] | pa.Array, idx: np.ndarray) -> pa.Array:
    if not isinstance(pool, pa.Array):
        pool = _arr(pool)
    return pool.take(pa.array(np.asarray(idx, dtype=np.int64)))


def _join(*parts: Any, sep: str = "") -> pa.Array:
    return pc.binary_join_element_wise(*parts, sep)


def _num(values: np.ndarray, width: int = 0) -> pa.Array:
    s = pc.cast(pa.array(np.asarray(values, dtype=np.int64)), pa.string())
    return pc.utf8_lpad(s, width, "0") if width else s


def _upper(a: pa.Array) -> pa.Array:
    return pc.utf8_upper(a)


def _to_py_str(a: pa.Array, i: int) -> str:
    return a[int(i)].as_py()


def _days(d: np.ndarray) -> np.ndarray:
    return np.asarray(d, dtype="datetime64[D]")


def _ymd(d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    d = _days(d)
    m = d.astype("datetime64[M]")
    y = m.astype("datetime64[Y]")
    year = y.astype(np.int64) + 1970
    month = (m - y.astype("datetime64[M]")).astype(np.int64) + 1
    day = (d - m.astype("datetime64[D]")).astype(np.int64) + 1
    return year, month, day


def _yyyymmdd(d: np.ndarray) -> np.ndarray:
    y, m, dd = _ymd(d)
    return y * 10000 + m * 100 + dd


def _add_months(d: np.ndarray, months: np.ndarray | int) -> np.ndarray:
    """Calendar month arithmetic; the day is clamped to the target month's end (Feb 29 -> Feb 28)."""
    d = _days(d)
    m = d.astype("datetime64[M]")
    dom = (d - m.astype("datetime64[D]")).astype(np.int64)
    nm = m + np.asarray(months, dtype=np.int64)
    month_len = ((nm + 1).astype("datetime64[D]") - nm.astype("datetime64[D]")).astype(np.int64)
    return nm.astype("datetime64[D]") + np.minimum(dom, month_len - 1)


def _mdy(d: np.ndarray) -> pa.Array:
    y, m, dd = _ymd(d)
    return _join(_num(m, 2), _num(dd, 2), _num(y, 4), sep="/")


def _money(cents: np.ndarray, *, dollar: bool, grouping: bool, negative: str = "-") -> pa.Array:
    """Format cents as money text: ``$1,234.56`` / ``1234.56``; negatives as ``-`` or ``(...)``."""
    cents = np.asarray(cents, dtype=np.int64)
    neg = cents < 0
    a = np.abs(cents)
    d = a // 100
    c = a % 100
    if grouping:
        full = _join(
            _num(d // 1_000_000_000, 3), _num((d // 1_000_000) % 1000, 3), _num((d // 1000) % 1000, 3),
            _num(d % 1000, 3), sep=",",
        )
        ds = pc.utf8_ltrim(full, "0,")
        ds = pc.if_else(pc.equal(ds, ""), pa.scalar("0"), ds)
    else:
        ds = _num(d)
    s = _join(ds, _num(c, 2), sep=".")
    if dollar:
        s = _join(pa.scalar("$"), s)
    if neg.any():
        if negative == "(":
            wrapped = _join(pa.scalar("("), s, pa.scalar(")"))
        else:
            wrapped = _join(pa.scalar("-"), s)
        s = pc.if_else(pa.array(neg), wrapped, s)
    return s


def _csv_quote(a: pa.Array) -> pa.Array:
    """Standard CSV quoting where needed (delimiter, quote or line break inside)."""
    needs = pc.fill_null(pc.match_substring_regex(a, r'[,"\r\n]'), False)
    if not pc.any(needs).as_py():
        return pc.fill_null(a, "")
    quoted = _join(pa.scalar('"'), pc.replace_substring(a, '"', '""'), pa.scalar('"'))
    return pc.fill_null(pc.if_else(needs, quoted, a), "")


def _group_layout(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """counts per parent -> (parent index per row, 1-based seq within parent, first row of each parent)."""
    counts = np.asarray(counts, dtype=np.int64)
    grp = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
    starts = np.cumsum(counts) - counts
    seq = np.arange(len(grp), dtype=np.int64) - starts[grp] + 1
    return grp, seq, starts


def _sorted_within(grp: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Sort values ascending within contiguous groups."""
    order = np.lexsort((u, grp))
    return u[order]


def _choice(rng: np.random.Generator, n: int, p: Sequence[float]) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    return np.minimum(np.searchsorted(np.cumsum(p / p.sum()), rng.random(n), side="right"), len(p) - 1)


# --------------------------------------------------------------------------- output plumbing


@dataclass
class FileSummary:
    path: Path
    records: int
    bytes: int
    sha256: str
    trailing_bytes: int = 0


@dataclass
class SampleSummary:
    out_dir: Path
    manifest_path: Path
    seed: int
    policies: int
    defect_rate: float
    mainframe_share: float
    files: dict[str, FileSummary]  # "mainframe_life/POLMAST.dat" -> summary
    policy_totals: dict[str, dict[str, Any]]
    defect_counts: dict[str, int]  # kind -> count
    defects_by_file: dict[str, dict[str, int]]  # file -> kind -> count

    @property
    def records(self) -> dict[str, int]:
        return {k: v.records for k, v in self.files.items()}

    @property
    def paths(self) -> dict[str, Path]:
        return {k: v.path for k, v in self.files.items()}

    @property
    def total_defects(self) -> int:
        return sum(self.defect_counts.values())


class _Writer:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.fh = open(path, "wb")
        self.sha = hashlib.sha256()
        self.bytes = 0
        self.records = 0
        self.trailing = 0

    def write(self, data: Any, records: int = 0) -> None:
        mv = memoryview(data)
        self.fh.write(mv)
        self.sha.update(mv)
        self.bytes += mv.nbytes
        self.records += records

    def close(self) -> FileSummary:
        self.fh.close()
        return FileSummary(self.path, self.records, self.bytes, self.sha.hexdigest(), self.trailing)


def _string_array_bytes(a: pa.Array) -> pa.Buffer:
    """The concatenated value bytes of a string/binary array (no nulls)."""
    if isinstance(a, pa.ChunkedArray):
        a = a.combine_chunks()
    if a.null_count:
        raise ValueError("nulls in CSV line array")
    if len(a) == 0:
        return pa.py_buffer(b"")
    width = np.int64 if pa.types.is_large_string(a.type) or pa.types.is_large_binary(a.type) else np.int32
    offsets = np.frombuffer(a.buffers()[1], dtype=width)[a.offset : a.offset + len(a) + 1]
    return a.buffers()[2].slice(int(offsets[0]), int(offsets[-1] - offsets[0]))


class _Defects:
    """Defect entries of one file, in record order, spooled to a JSON-lines file (memory stays flat)."""

    def __init__(self, source: str, file: str, spool: Path) -> None:
        self.source = source
        self.file = file
        self.spool = spool
        self.fh = open(spool, "w", encoding="utf-8")
        self.counts: dict[str, int] = {}

    def add(self, record: int, kind: str, field: str | None, policy_id: str | None, **extra: Any) -> None:
        stage, reason = DEFECT_KINDS[kind]
        e: dict[str, Any] = {
            "source": self.source,
            "file": self.file,
            "record": int(record),
            "kind": kind,
            "stage": stage,
            "reason": reason,
            "field": field,
            "policy_id": policy_id,
        }
        e.update(extra)
        self.fh.write(json.dumps(e, ensure_ascii=False) + "\n")
        self.counts[kind] = self.counts.get(kind, 0) + 1

    def close(self) -> None:
        self.fh.close()


def _pick_defects(
    rng: np.random.Generator, n: int, rate: float, kinds: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Which records are defective and the kind index of each (-1 = clean)."""
    u = rng.random(n)
    k = rng.integers(0, len(kinds), n)
    kind = np.where(u < rate, k, -1)
    return kind, np.flatnonzero(kind >= 0)


def _field_slot(cb: Copybook, name: str) -> tuple[int, int]:
    f = cb.field(name)
    return int(f.offset), int(f.length)


def _impossible_date(year: int, variant: int) -> int:
    """A YYYYMMDD value that no calendar has: Feb 30/31, Apr 31, month 13."""
    return year * 10000 + (230, 231, 431, 1315)[variant % 4]


# --------------------------------------------------------------------------- mainframe life book


class _MainframeBook:
    def __init__(self, out: Path, copybooks: dict[str, Copybook], seed: int, rate: float, spool: Path) -> None:
        self.out = out
        self.cb = copybooks
        self.seed = seed
        self.rate = rate
        self.writers = {name: _Writer(out / f"{name}.dat") for name in MF_FILES}
        self.defects = {name: _Defects(MF, f"{name}.dat", spool / f"{MF}.{name}.jsonl") for name in MF_FILES}
        self.premium_cents = 0
        self.doc_counter = 0
        self.claim_counter = 0

    # ---- policy master -------------------------------------------------------------------
    def chunk(self, g0: int, n: int, chunk_no: int) -> None:
        rng = np.random.Generator(np.random.PCG64([self.seed, 1, chunk_no]))
        P = self._policies(rng, g0, n)
        self._write_policies(rng, P)
        self._write_coverages(rng, P)
        self._write_payments(rng, P)
        self._write_endorsements(rng, P)
        self._write_correspondence(rng, P)
        self._write_claims(rng, P)

    def _policies(self, rng: np.random.Generator, g0: int, n: int) -> dict[str, Any]:
        P: dict[str, Any] = {"n": n}
        idx = np.arange(g0, g0 + n, dtype=np.int64)
        polno = 100_000_000 + idx * 3 + rng.integers(0, 3, n)
        P["pol_number"] = _join(pa.scalar("L"), _num(polno, 9))
        plan = _choice(rng, n, _PLAN_P)
        status = _choice(rng, n, _STATUS_P)
        annuity = plan >= 4
        term = (plan == 2) | (plan == 3)
        wl = plan == 0
        status = np.where(term & (status == 2), 1, status)  # term has no cash value: SU -> LA
        status = np.where(~wl & (status == 4), 0, status)  # only whole life goes paid-up
        status = np.where(annuity & (status == 1), 2, status)  # annuities surrender, they do not lapse
        # issue dates: pending -> last 120 days; otherwise skewed to recent years
        span = int((AS_OF - np.datetime64("1979-01-01")).astype(np.int64))
        issue_off = (span * rng.beta(2.2, 1.2, n)).astype(np.int64)
        issue = np.datetime64("1979-01-01", "D") + issue_off
        pending = status == 5
        issue = np.where(pending, AS_OF - rng.integers(0, 120, n), issue).astype("datetime64[D]")
        issue = np.minimum(issue, AS_OF)
        age = np.where(annuity, rng.integers(45, 81, n), rng.integers(18, 71, n))
        birth = _add_months(issue, -12 * age) - rng.integers(0, 365, n)
        sex = rng.integers(0, 2, n)  # 0 = M, 1 = F
        mat = np.where(
            plan == 2, _add_months(issue, 240),
            np.where(plan == 3, _add_months(issue, 120),
                     np.where(annuity, _add_months(birth, 95 * 12), _add_months(birth, 100 * 12))),
        ).astype("datetime64[D]")
        expired = term & (mat <= AS_OF) & ((status == 0) | (status == 5))
        status = np.where(expired, 1, status)
        # end of the policy's active life: the termination (lapse, surrender, death) date,
        # maturity for an expired term policy, else the extract date
        terminated = (status == 1) | (status == 2) | (status == 3)
        alive_end = np.minimum(AS_OF, mat)
        life_span = np.maximum((alive_end - issue).astype(np.int64), 0)
        end = np.where(terminated, issue + (life_span * rng.uniform(0.1, 1.0, n)).astype(np.int64), alive_end)
        end = np.where(expired, mat, end).astype("datetime64[D]")
        # effective date: issue, or a later change no later than the end of life and maturity
        later = rng.random(n) < 0.2
        upper = np.minimum(end, mat - 1)
        room = np.maximum((upper - issue).astype(np.int64), 0)
        eff = issue + np.where(later, (room * rng.random(n)).astype(np.int64), 0)

        P["plan"] = plan
        P["status"] = status
        P["issue"] = issue
        P["eff"] = eff
        P["end"] = end
        P["mat"] = mat
        P["birth"] = birth
        P["age"] = age
        P["annuity"] = annuity
        P["term"] = term

        # insured
        first_pool = np.where(sex == 0, rng.integers(0, len(FIRST_NAMES_M), n), rng.integers(0, len(FIRST_NAMES_F), n))
        male_names = _take(FIRST_NAMES_M, np.where(sex == 0, first_pool, 0))
        female_names = _take(FIRST_NAMES_F, np.where(sex == 1, first_pool, 0))
        first = pc.if_else(pa.array(sex == 0), male_names, female_names)
        last = _take(LAST_NAMES, rng.integers(0, len(LAST_NAMES), n))
        P["last"] = _upper(last)
        P["first"] = _upper(first)
        P["sex"] = np.where(sex == 0, "M", "F")
        mid = _take(MIDDLE_INITIALS, rng.integers(0, len(MIDDLE_INITIALS), n))
        P["mid"] = pc.if_else(pa.array(rng.random(n) < 0.8), mid, pa.scalar(""))
        # SSN-like ids in the never-issued 9xx area (group 01-49: not an ITIN range either)
        ssn = 900_000_000 + rng.integers(0, 100, n) * 1_000_000 + rng.integers(1, 50, n) * 10_000 + rng.integers(1, 10_000, n)
        P["tax_id"] = _num(ssn, 9)
        city = rng.integers(0, len(CITIES), n)
        street = _join(
            _num(rng.integers(1, 10_000, n)),
            _take(STREETS, rng.integers(0, len(STREETS), n)),
            _take(STREET_SUFFIXES, rng.integers(0, len(STREET_SUFFIXES), n)),
            sep=" ",
        )
        apt = rng.random(n) < 0.15
        street = pc.if_else(pa.array(apt), _join(street, pa.scalar("APT"), _num(rng.integers(1, 40, n)), sep=" "), street)
        P["addr"] = _upper(street)
        P["city_idx"] = city
        P["city"] = _upper(_take([c[0] for c in CITIES], city))
        P["state"] = _take([c[1] for c in CITIES], city)
        zip3 = np.array([int(c[2]) for c in CITIES])[city]
        P["zip"] = _num(zip3 * 100 + rng.integers(0, 100, n), 5)
        zip4 = _num(rng.integers(1, 10_000, n), 4)
        P["zip4"] = pc.if_else(pa.array(rng.random(n) < 0.4), zip4, pa.scalar(""))
        P["agent"] = _join(pa.scalar("A"), _num(10_000 + rng.integers(0, 1_500, n) * 7 % 90_000, 5))
        P["carrier"] = np.where(annuity, 2, rng.integers(0, 4, n))

        # amounts (cents)
        face_choices = {
            0: np.array([25_000, 50_000, 100_000, 150_000, 250_000, 500_000, 1_000_000]),
            1: np.array([100_000, 250_000, 500_000, 750_000, 1_000_000, 2_000_000]),
            2: np.array([100_000, 250_000, 500_000, 750_000, 1_000_000, 1_500_000, 2_000_000]),
            3: np.array([100_000, 250_000, 500_000, 1_000_000]),
        }
        face = np.zeros(n, dtype=np.int64)
        for p_, choices in face_choices.items():
            m = plan == p_
            face[m] = choices[rng.integers(0, len(choices), int(m.sum()))] * 100
        rate_base = np.array([9.0, 5.5, 1.2, 0.9, 0.0, 0.0])[plan]  # dollars per 1000 face per year at age 35
        rate = rate_base * np.exp(0.075 * (age - 35)) * np.where(sex == 1, 0.85, 1.0)
        annual = np.round(face / 1000.0 * rate).astype(np.int64) + np.where(annuity, 0, 6000)
        planned = np.where(rng.random(n) < 0.3, 0, rng.integers(50, 2_000, n) * 100 * 12)
        annual = np.where(annuity, planned, annual)
        mode = _choice(rng, n, _BILL_P)
        mode = np.where(annuity & (annual == 0), 0, mode)
        modal = annual * _BILL_FACTOR_BP[mode] // 10_000
        paid_up = status == 4
        modal = np.where(paid_up, 0, modal)
        mode = np.where(paid_up, 0, mode)
        years_in = np.maximum((AS_OF - issue).astype(np.int64), 0) / 365.25
        cv_life = face * np.minimum(1.0, years_in / np.maximum(100 - age, 5)) * np.where(plan == 0, 0.65, 0.45)
        deposit = rng.integers(10_000, 500_000, n) * 100
        cv_ann = deposit * np.power(1.03, years_in)
        cash = np.where(term, 0, np.where(annuity, cv_ann, cv_life)).astype(np.int64)
        cash = np.where((status == 1) | (status == 2) | (status == 3), 0, cash)
        cash = np.minimum(cash, 99_999_999_999)
        has_loan = (~term) & (~annuity) & (cash > 0) & (rng.random(n) < 0.12)
        loan = np.where(has_loan, (cash * rng.uniform(0.05, 0.5, n)).astype(np.int64), 0)
        loan = np.minimum(loan, 999_999_999)
        P["face"] = face
        P["modal"] = modal
        P["mode"] = mode
        P["cash"] = cash
        P["loan"] = loan

        # beneficiaries
        two = rng.random(n) < 0.4
        rel1 = _choice(rng, n, _BEN_REL_P)
        rel2 = np.where(rng.random(n) < 0.7, 1, 2)  # second beneficiary: child or parent
        spouse_first = pc.if_else(
            pa.array(sex == 0),
            _take(FIRST_NAMES_F, rng.integers(0, len(FIRST_NAMES_F), n)),
            _take(FIRST_NAMES_M, rng.integers(0, len(FIRST_NAMES_M), n)),
        )
        kid_first = pc.if_else(
            pa.array(rng.random(n) < 0.5),
            _take(FIRST_NAMES_F, rng.integers(0, len(FIRST_NAMES_F), n)),
            _take(FIRST_NAMES_M, rng.integers(0, len(FIRST_NAMES_M), n)),
        )
        person1 = _upper(_join(pc.if_else(pa.array(rel1 == 0), spouse_first, kid_first), last, sep=" "))
        trust = _upper(_join(last, pa.scalar("FAMILY TRUST"), sep=" "))
        ben1 = pc.if_else(pa.array(rel1 == 3), trust, pc.if_else(pa.array(rel1 == 4), pa.scalar("ESTATE OF THE INSURED"), person1))
        ben2 = _upper(_join(_take(FIRST_NAMES_M + FIRST_NAMES_F, rng.integers(0, 100, n)), last, sep=" "))
        split = np.array([5000, 6000, 7500])[rng.integers(0, 3, n)]
        P["ben1"] = ben1
        P["rel1"] = _take(_BEN_REL, rel1)
        P["share1"] = np.where(two, split, 10_000)
        P["ben2"] = pc.if_else(pa.array(two), ben2, pa.scalar(""))
        P["rel2"] = pc.if_else(pa.array(two), _take(_BEN_REL, rel2), pa.scalar(""))
        P["share2"] = np.where(two, 10_000 - split, 0)

        # riders (OCCURS 0 TO 5 DEPENDING ON RIDER-COUNT)
        rc = _choice(rng, n, (0.5, 0.25, 0.13, 0.07, 0.03, 0.02))
        rc = np.where(annuity | (modal == 0), 0, rc)
        perm = np.argsort(rng.random((n, len(_RIDER_CODES))), axis=1)[:, :5]
        rface = np.zeros((n, 5), dtype=np.int64)
        rprem = np.zeros((n, 5), dtype=np.int64)
        code_face = {
            0: lambda m: np.minimum(face[m], 999_999_999),
            1: lambda m: np.zeros(int(m.sum()), dtype=np.int64),
            2: lambda m: rng.integers(10, 26, int(m.sum())) * 1000 * 100,
            3: lambda m: rng.integers(25, 101, int(m.sum())) * 1000 * 100,
            4: lambda m: np.minimum(face[m] // 2, 999_999_999),
            5: lambda m: rng.integers(50, 501, int(m.sum())) * 1000 * 100,
        }
        for j in range(5):
            active = rc > j
            for code, fn in code_face.items():
                m = active & (perm[:, j] == code)
                if m.any():
                    rface[m, j] = fn(m)
            pct = rng.integers(200, 700, n)  # 2-7 % of the modal premium, in basis points
            rprem[:, j] = np.where(active, np.clip(modal * pct // 10_000, 100, 9_999_999), 0)
        P["rider_count"] = rc
        P["rider_code"] = perm
        P["rider_face"] = rface
        P["rider_prem"] = rprem
        return P

    def _write_policies(self, rng: np.random.Generator, P: dict[str, Any]) -> None:
        n = P["n"]
        kinds = FILE_DEFECT_KINDS[f"{MF}/POLMAST.dat"]
        kind, defective = _pick_defects(rng, n, self.rate, kinds)
        w = self.writers["POLMAST"]
        rec0 = w.records  # records before this chunk
        cols: dict[str, Any] = {
            "POL_NUMBER": P["pol_number"],
            "POL_STATUS": _take(LIFE_STATUS_CODES, P["status"]),
            "PLAN_CODE": _take(LIFE_PLAN_CODES, P["plan"]),
            "CARRIER_CODE": _take(_CARRIERS, P["carrier"]),
            "ISSUE_DATE": _yyyymmdd(P["issue"]),
            "EFF_DATE": _yyyymmdd(P["eff"]),
            "MATURITY_DATE": _yyyymmdd(P["mat"]),
            "INS_LAST_NAME": P["last"],
            "INS_FIRST_NAME": P["first"],
            "INS_MIDDLE_INIT": P["mid"],
            "INS_BIRTH_DATE": _yyyymmdd(P["birth"]),
            "INS_SEX": pa.array(P["sex"].tolist(), pa.string()),
            "INS_TAX_ID": P["tax_id"],
            "INS_ADDR_LINE1": P["addr"],
            "INS_CITY": P["city"],
            "INS_STATE": P["state"],
            "INS_ZIP": P["zip"],
            "INS_ZIP4": P["zip4"],
            "AGENT_CODE": P["agent"],
            "FACE_AMOUNT": P["face"].copy(),
            "MODAL_PREMIUM": P["modal"].copy(),
            "BILLING_MODE": _take(_BILL_MODES, P["mode"]),
            "CASH_VALUE": P["cash"],
            "LOAN_BALANCE": P["loan"],
            "BEN_NAME_1": P["ben1"],
            "BEN_RELATION_1": P["rel1"],
            "BEN_SHARE_1": P["share1"],
            "BEN_NAME_2": P["ben2"],
            "BEN_RELATION_2": P["rel2"],
            "BEN_SHARE_2": P["share2"],
            "RIDER_COUNT": P["rider_count"],
        }
        for j in range(5):
            cols[f"RIDER_CODE_{j + 1}"] = pc.if_else(
                pa.array(P["rider_count"] > j), _take(_RIDER_CODES, P["rider_code"][:, j]), pa.scalar("")
            )
            cols[f"RIDER_FACE_{j + 1}"] = P["rider_face"][:, j]
            cols[f"RIDER_PREMIUM_{j + 1}"] = P["rider_prem"][:, j]

        # value-level defects (mapping/preserve) before encoding
        overrides: dict[str, dict[int, Any]] = {}
        dup_of: dict[int, int] = {}
        no_original: list[int] = []  # duplicates need an earlier clean record to copy the id from
        date_fields = ("ISSUE_DATE", "EFF_DATE", "MATURITY_DATE", "INS_BIRTH_DATE")
        pick = rng.integers(0, 1 << 30, n)  # per-record variant selector
        clean = np.flatnonzero(kind < 0)
        entries: list[tuple[int, str, str | None, dict[str, Any]]] = []
        for i in defective:
            k = kinds[kind[i]]
            v = int(pick[i])
            if k == "impossible_date" or k == "zero_date" or k == "blank_date":
                f = date_fields[v % 4]
                if k == "impossible_date":
                    overrides.setdefault(f, {})[i] = _impossible_date(int(cols[f][i]) // 10000, v // 4)
                elif k == "zero_date":
                    overrides.setdefault(f, {})[i] = 0
                entries.append((i, k, f, {}))
            elif k == "negative_premium":
                amt = int(cols["MODAL_PREMIUM"][i])
                overrides.setdefault("MODAL_PREMIUM", {})[i] = -(amt if amt > 0 else 1000 + v % 50_000)
                entries.append((i, k, "MODAL_PREMIUM", {}))
            elif k == "duplicate_policy_id":
                before = clean[clean < i]
                if len(before) == 0:
                    no_original.append(i)
                    continue
                j = int(before[v % len(before)])
                dup_of[i] = j
                overrides.setdefault("POL_NUMBER", {})[i] = _to_py_str(P["pol_number"], j)
                entries.append((i, k, "POL_NUMBER", {"duplicate_of": rec0 + j + 1}))
            elif k == "unknown_code":
                if v % 2:
                    overrides.setdefault("POL_STATUS", {})[i] = _UNKNOWN_STATUS[v // 2 % len(_UNKNOWN_STATUS)]
                    entries.append((i, k, "POL_STATUS", {}))
                else:
                    overrides.setdefault("PLAN_CODE", {})[i] = _UNKNOWN_PLAN[v // 2 % len(_UNKNOWN_PLAN)]
                    entries.append((i, k, "PLAN_CODE", {}))
            elif k == "non_ascii_name":
                overrides.setdefault("INS_LAST_NAME", {})[i] = ACCENTED_LAST_NAMES[v % len(ACCENTED_LAST_NAMES)].upper()
                if v % 3 == 0:
                    overrides.setdefault("INS_FIRST_NAME", {})[i] = ACCENTED_FIRST_NAMES[v // 3 % len(ACCENTED_FIRST_NAMES)].upper()
                entries.append((i, k, "INS_LAST_NAME", {}))
            elif k == "bad_packed":
                f = ("MODAL_PREMIUM", "FACE_AMOUNT", "LOAN_BALANCE")[v % 3]
                entries.append((i, k, f, {}))
            elif k == "wrong_record_length":
                entries.append((i, k, None, {}))
            else:  # pragma: no cover
                raise AssertionError(k)
        if no_original:
            kind[np.asarray(no_original)] = -1
        for f, vals in overrides.items():
            cols[f] = _override(cols[f], vals)
        P["dup"] = np.zeros(n, dtype=bool)
        if dup_of:
            P["dup"][np.fromiter(dup_of.keys(), dtype=np.int64)] = True

        cb = self.cb["POLMAST"]
        matrix, lengths = encode_matrix(cb, cols, n, encoding="cp037")
        lengths = np.asarray(lengths, dtype=np.int64).copy()
        width = matrix.shape[1]
        modal_written = np.asarray(cols["MODAL_PREMIUM"], dtype=np.int64)
        for i, k, f, extra in entries:
            if k == "bad_packed" or k == "blank_date":
                off, ln = _field_slot(cb, f)
                matrix[i, off : off + ln] = 0x40  # EBCDIC spaces
            elif k == "wrong_record_length":
                delta = int(pick[i] % 7) + 1  # a few bytes: never a whole rider occurrence (13 bytes)
                if (pick[i] // 7) % 2 and lengths[i] + delta <= width:
                    matrix[i, lengths[i] : lengths[i] + delta] = 0x40
                    lengths[i] += delta
                else:
                    lengths[i] -= delta
            pid = _to_py_str(cols["POL_NUMBER"], i)
            self.defects["POLMAST"].add(rec0 + i + 1, k, f, pid, premium_cents=int(modal_written[i]), **extra)
        self.premium_cents += int(modal_written.sum())
        w.write(frame_records(matrix, lengths, "V"), n)

    # ---- satellites ----------------------------------------------------------------------
    def _satellite(
        self,
        rng: np.random.Generator,
        name: str,
        cols: dict[str, Any],
        n: int,
        packed: Sequence[str],
        dates: Sequence[str],
        *,
        orphan: bool = False,
    ) -> None:
        kinds = FILE_DEFECT_KINDS[f"{MF}/{name}.dat"]
        kind, defective = _pick_defects(rng, n, self.rate, kinds)
        pick = rng.integers(0, 1 << 30, n)
        w = self.writers[name]
        rec0 = w.records
        overrides: dict[str, dict[int, Any]] = {}
        entries: list[tuple[int, str, str | None]] = []
        for i in defective:
            k = kinds[kind[i]]
            v = int(pick[i])
            if k == "bad_packed":
                entries.append((i, k, packed[v % len(packed)]))
            elif k == "blank_date":
                entries.append((i, k, dates[v % len(dates)]))
            elif k == "impossible_date":
                f = dates[v % len(dates)]
                overrides.setdefault(f, {})[i] = _impossible_date(int(cols[f][i]) // 10000, v // 4)
                entries.append((i, k, f))
            elif k == "orphan_coverage":
                overrides.setdefault("POL_NUMBER", {})[i] = f"L9{v % 100_000_000:08d}"
                entries.append((i, k, "POL_NUMBER"))
            else:  # pragma: no cover
                raise AssertionError(k)
        for f, vals in overrides.items():
            cols[f] = _override(cols[f], vals)
        cb = self.cb[name]
        matrix, lengths = encode_matrix(cb, cols, n, encoding="cp037")
        for i, k, f in entries:
            if k in ("bad_packed", "blank_date"):
                off, ln = _field_slot(cb, f)
                matrix[i, off : off + ln] = 0x40
            self.defects[name].add(rec0 + i + 1, k, f, _to_py_str(cols["POL_NUMBER"], i))
        w.write(frame_records(matrix, lengths, "F"), n)

    def _write_coverages(self, rng: np.random.Generator, P: dict[str, Any]) -> None:
        keep = ~P["dup"]  # a duplicate master record has no satellites of its own
        ncov = np.where(keep, 1 + np.minimum(P["rider_count"], 3), 0)
        grp, seq, starts = _group_layout(ncov)
        m = len(grp)
        is_base = seq == 1
        rj = np.maximum(seq - 2, 0)  # rider slot for rider coverages
        code = pc.if_else(
            pa.array(is_base),
            _take(LIFE_PLAN_CODES, P["plan"][grp]),
            _take(_RIDER_CODES, P["rider_code"][grp, rj]),
        )
        riders_total = P["rider_prem"].sum(axis=1)
        base_prem = P["modal"] - riders_total
        face = np.where(is_base, P["face"][grp], P["rider_face"][grp, rj])
        prem = np.where(is_base, base_prem[grp], P["rider_prem"][grp, rj])
        eff = np.where(is_base, P["issue"][grp], P["issue"][grp] + (rng.random(m) * np.maximum((P["eff"][grp] - P["issue"][grp]).astype(np.int64), 0)).astype(np.int64))
        active = np.isin(P["status"][grp], (0, 4, 5))
        cols = {
            "POL_NUMBER": _take(P["pol_number"], grp),
            "COV_SEQ": seq,
            "COV_CODE": code,
            "COV_FACE": face,
            "COV_PREMIUM": prem,
            "COV_EFF_DATE": _yyyymmdd(eff.astype("datetime64[D]")),
            "COV_EXP_DATE": _yyyymmdd(P["mat"][grp]),
            "COV_STATUS": pc.if_else(pa.array(active), pa.scalar("AC"), pa.scalar("TR")),
        }
        self._satellite(rng, "COVERAGE", cols, m, ("COV_FACE", "COV_PREMIUM"), ("COV_EFF_DATE", "COV_EXP_DATE"))

    def _write_payments(self, rng: np.random.Generator, P: dict[str, Any]) -> None:
        n = P["n"]
        months = _BILL_MONTHS[P["mode"]]
        last_due = P["end"] - rng.integers(0, 28, n)
        span_m = ((last_due.astype("datetime64[M]") - P["issue"].astype("datetime64[M]")).astype(np.int64))
        possible = np.maximum(span_m // months + 1, 0)
        want = rng.integers(0, 7, n)
        count = np.minimum(want, possible)
        count = np.where((P["modal"] <= 0) | (P["status"] == 5) | P["dup"], 0, count)
        grp, seq, _ = _group_layout(count)
        m = len(grp)
        back = (count[grp] - seq) * months[grp]
        date = _add_months(last_due[grp], -back)
        date = np.maximum(date, P["issue"][grp])
        partial = rng.random(m) < 0.04
        amount = np.where(partial, P["modal"][grp] * rng.integers(30, 100, m) // 100, P["modal"][grp])
        method = np.where(P["mode"][grp] == 3, _choice(rng, m, (0.8, 0.1, 0.1, 0.0)), _choice(rng, m, (0.2, 0.5, 0.1, 0.2)))
        status = _choice(rng, m, (0.94, 0.03, 0.03))
        cols = {
            "POL_NUMBER": _take(P["pol_number"], grp),
            "PAY_SEQ": seq,
            "PAY_DATE": _yyyymmdd(date),
            "PAY_AMOUNT": amount,
            "PAY_METHOD": _take(_PAY_METHODS, method),
            "PAY_STATUS": _take(("PD", "RV", "NS"), status),
        }
        self._satellite(rng, "PAYHIST", cols, m, ("PAY_AMOUNT",), ("PAY_DATE",))

    def _write_endorsements(self, rng: np.random.Generator, P: dict[str, Any]) -> None:
        n = P["n"]
        count = _choice(rng, n, (0.55, 0.25, 0.13, 0.07))
        count = np.where(P["dup"] | (P["status"] == 5), 0, count)
        grp, seq, _ = _group_layout(count)
        m = len(grp)
        span = np.maximum((P["end"][grp] - P["issue"][grp]).astype(np.int64), 1)
        frac = _sorted_within(grp, rng.random(m))
        date = P["issue"][grp] + np.maximum((frac * span).astype(np.int64), 1)
        date = np.minimum(date, AS_OF)
        code = _choice(rng, m, (0.3, 0.25, 0.08, 0.12, 0.08, 0.12, 0.05))
        modal = P["modal"][grp]
        change = np.where(code == 4, -(modal * rng.integers(5, 20, m) // 100),
                          np.where(code == 5, modal * rng.integers(2, 8, m) // 100, 0))
        change = np.clip(change, -9_999_999, 9_999_999)
        cols = {
            "POL_NUMBER": _take(P["pol_number"], grp),
            "END_SEQ": seq,
            "END_DATE": _yyyymmdd(date),
            "END_CODE": _take(_END_CODES, code),
            "END_DESC": _take(_END_DESC, code),
            "END_PREM_CHANGE": change,
        }
        self._satellite(rng, "ENDORSE", cols, m, ("END_PREM_CHANGE",), ("END_DATE",))

    def _write_correspondence(self, rng: np.random.Generator, P: dict[str, Any]) -> None:
        n = P["n"]
        count = np.where(P["dup"], 0, 1 + _choice(rng, n, (0.35, 0.3, 0.2, 0.15)))
        grp, seq, _ = _group_layout(count)
        m = len(grp)
        span = np.maximum((AS_OF - P["issue"][grp]).astype(np.int64), 1)
        frac = _sorted_within(grp, rng.random(m))
        date = np.where(seq == 1, P["issue"][grp], P["issue"][grp] + (frac * span).astype(np.int64))
        dtype_ = np.where(seq == 1, 0, 1 + _choice(rng, m, (0.4, 0.3, 0.1, 0.1, 0.1)))
        lapsed = P["status"][grp] == 1
        dtype_ = np.where((seq > 1) & lapsed & (rng.random(m) < 0.5), 3, dtype_)
        docno = 10_000_000_000 + (self.doc_counter + np.arange(m, dtype=np.int64)) * 7 + rng.integers(0, 7, m)
        self.doc_counter += m
        cols = {
            "POL_NUMBER": _take(P["pol_number"], grp),
            "DOC_ID": _join(pa.scalar("D"), _num(docno, 11)),
            "DOC_TYPE": _take(_DOC_TYPES, dtype_),
            "DOC_DATE": _yyyymmdd(date.astype("datetime64[D]")),
            "DOC_CHANNEL": _take(_DOC_CHANNELS, _choice(rng, m, (0.6, 0.25, 0.15))),
        }
        self._satellite(rng, "CORRIDX", cols, m, (), ("DOC_DATE",))

    def _write_claims(self, rng: np.random.Generator, P: dict[str, Any]) -> None:
        n = P["n"]
        death = P["status"] == 3
        other = np.where(rng.random(n) < 0.02, 1 + (rng.random(n) < 0.25), 0)
        count = np.where(death, 1, other)
        count = np.where(P["dup"], 0, count)
        grp, seq, _ = _group_layout(count)
        m = len(grp)
        span = np.maximum((P["end"][grp] - P["issue"][grp]).astype(np.int64), 1)
        frac = _sorted_within(grp, rng.random(m))
        date = P["issue"][grp] + np.maximum((frac * span).astype(np.int64), 1)
        date = np.minimum(date, AS_OF)
        is_death = death[grp]
        date = np.where(is_death, np.minimum(P["end"][grp] + rng.integers(0, 45, m), AS_OF), date)
        ctype = _take(("DT",) + _CLAIM_TYPES, np.where(is_death, 0, 1 + rng.integers(0, 3, m)))
        status = _choice(rng, m, (0.15, 0.3, 0.45, 0.1))
        amount = np.where(
            is_death,
            np.where(P["annuity"][grp], P["cash"][grp], P["face"][grp]),
            rng.integers(1_000, 50_000, m) * 100,
        )
        amount = np.minimum(amount, 99_999_999_999)
        clm = 10_000_000_000 + (self.claim_counter + np.arange(m, dtype=np.int64)) * 3 + rng.integers(0, 3, m)
        self.claim_counter += m
        cols = {
            "POL_NUMBER": _take(P["pol_number"], grp),
            "CLM_NUMBER": _join(pa.scalar("C"), _num(clm, 11)),
            "CLM_DATE": _yyyymmdd(date),
            "CLM_TYPE": ctype,
            "CLM_STATUS": _take(_CLAIM_STATUS, status),
            "CLM_AMOUNT": amount,
        }
        self._satellite(rng, "CLAIMREF", cols, m, ("CLM_AMOUNT",), ("CLM_DATE",))

    def finish(self, rng: np.random.Generator) -> dict[str, FileSummary]:
        # trailing garbage: at most one per FB file, after the last record
        prob = min(1.0, self.rate * 20)
        for name in SATELLITES:
            w = self.writers[name]
            u = rng.random()
            k = int(rng.integers(1, 12))
            junk = rng.choice(np.array([0x00, 0x40, 0x1A, 0xFF], dtype=np.uint8), k)
            if self.rate > 0 and u < prob and w.records > 0:
                w.write(junk.tobytes())
                w.trailing = k
                self.defects[name].add(w.records + 1, "trailing_garbage", None, None)
                w.records += 1  # the reader sees one more (partial) record
        master = self.writers["POLMAST"]  # its trailer last: count and premium total of what was written
        master.write(master_trailer(master.records, self.premium_cents))
        for d in self.defects.values():
            d.close()
        summaries = {name: w.close() for name, w in self.writers.items()}
        write_control_file(self.out / MF_CONTROL, summaries)
        return summaries


def _override(col: Any, vals: dict[int, Any]) -> Any:
    """Replace single values of a column (numpy or arrow) at the given row positions."""
    idx = np.fromiter(vals.keys(), dtype=np.int64)
    if isinstance(col, np.ndarray):
        out = col.copy()
        out[idx] = np.fromiter(vals.values(), dtype=out.dtype, count=len(idx))
        return out
    mask = np.zeros(len(col), dtype=bool)
    mask[idx] = True
    order = np.argsort(idx)
    repl = [list(vals.values())[j] for j in order]
    return pc.replace_with_mask(col, pa.array(mask), pa.array(repl, col.type))


# --------------------------------------------------------------------------- P&C CSV book

PC_POLICY_COLUMNS = (
    "PolicyNo", "LOB", "PolStatus", "EffDate", "ExpDate", "InsuredName", "InsuredType", "TaxId", "MailAddr",
    "City", "State", "Zip", "AgentNo", "WritingCo", "AnnualPrem", "PayPlan", "BalanceDue",
)
PC_COVERAGE_COLUMNS = ("PolicyNo", "CovCode", "LimitAmt", "DeductAmt", "CovPrem", "EffDate", "ExpDate")


class _PcBook:
    def __init__(self, out: Path, seed: int, rate: float, spool: Path) -> None:
        self.seed = seed
        self.rate = rate
        self.writers = {"policies": _Writer(out / "policies.csv"), "coverages": _Writer(out / "coverages.csv")}
        self.defects = {k: _Defects(PC, f"{k}.csv", spool / f"{PC}.{k}.jsonl") for k in ("policies", "coverages")}
        self.writers["policies"].write((",".join(PC_POLICY_COLUMNS) + "\n").encode())
        self.writers["coverages"].write((",".join(PC_COVERAGE_COLUMNS) + "\n").encode())
        self.premium_cents = 0

    def chunk(self, g0: int, n: int, chunk_no: int) -> None:
        rng = np.random.Generator(np.random.PCG64([self.seed, 2, chunk_no]))
        idx = np.arange(g0, g0 + n, dtype=np.int64)
        polno_num = 10_000_000 + idx * 3 + rng.integers(0, 3, n)
        polno = _join(pa.scalar("PC"), _num(polno_num, 8))
        lob = _choice(rng, n, _LOB_P)
        personal = _LOB_PERSONAL[lob]
        status = _choice(rng, n, _PC_STATUS_P)
        term_m = np.where((lob == 2) & (rng.random(n) < 0.5), 6, 12)
        eff = np.where(
            np.isin(status, (0, 1)), AS_OF - rng.integers(0, 365, n),
            np.where(status == 3, AS_OF + rng.integers(1, 60, n), AS_OF - 365 - rng.integers(1, 730, n)),
        ).astype("datetime64[D]")
        exp = _add_months(eff, term_m)
        # insured
        sex = rng.integers(0, 2, n)
        first = pc.if_else(
            pa.array(sex == 0),
            _take(FIRST_NAMES_M, rng.integers(0, len(FIRST_NAMES_M), n)),
            _take(FIRST_NAMES_F, rng.integers(0, len(FIRST_NAMES_F), n)),
        )
        last = _take(LAST_NAMES, rng.integers(0, len(LAST_NAMES), n))
        person = _join(last, first, sep=", ")
        biz = _join(
            _join(_take(LAST_NAMES, rng.integers(0, len(LAST_NAMES), n)), _take(BUSINESS_TRADES, rng.integers(0, len(BUSINESS_TRADES), n)), sep=" "),
            _take(BUSINESS_SUFFIXES, rng.integers(0, len(BUSINESS_SUFFIXES), n)),
        )
        name = pc.if_else(pa.array(personal), person, biz)
        ssn = _join(
            _num(900 + rng.integers(0, 100, n), 3), _num(rng.integers(1, 50, n), 2), _num(rng.integers(1, 10_000, n), 4), sep="-"
        )
        ein = _join(_take(_EIN_PREFIXES, rng.integers(0, len(_EIN_PREFIXES), n)), _num(rng.integers(0, 10_000_000, n), 7), sep="-")
        tax = pc.if_else(pa.array(personal), ssn, ein)
        addr = _join(
            _num(rng.integers(1, 10_000, n)),
            _take(STREETS, rng.integers(0, len(STREETS), n)),
            _take(STREET_SUFFIXES, rng.integers(0, len(STREET_SUFFIXES), n)),
            sep=" ",
        )
        unit = rng.random(n) < 0.12
        addr = pc.if_else(pa.array(unit), _join(addr, pa.scalar("Unit"), _num(rng.integers(1, 300, n)), sep=" "), addr)
        city = rng.integers(0, len(CITIES), n)
        zip3 = np.array([int(c[2]) for c in CITIES])[city]
        zip5 = _num(zip3 * 100 + rng.integers(0, 100, n), 5)
        zip_ = pc.if_else(pa.array(rng.random(n) < 0.3), _join(zip5, _num(rng.integers(1, 10_000, n), 4), sep="-"), zip5)
        agent = _join(pa.scalar("AG"), _num(1000 + rng.integers(0, 800, n) * 11 % 9000, 4))
        wco = _take(_WRITING_COS, np.where(personal, rng.integers(0, 2, n), rng.integers(2, 4, n)))
        prem = np.maximum((_LOB_PREM[lob] * rng.lognormal(0.0, 0.45, n) * 100).astype(np.int64), 15_000)
        plan = _choice(rng, n, _PAY_PLAN_P)
        ninst = _PAY_PLAN_N[plan]
        paid = np.minimum(rng.integers(0, 13, n), ninst)
        balance = np.where(status == 0, prem - prem * paid // ninst, 0)
        balance = np.where(status == 1, -(prem * rng.integers(0, 30, n) // 100), balance)  # cancellation refund credit
        balance = np.where(status == 3, prem, balance)

        # coverages (needed before value defects so that dup records get none)
        ncov = 1 + _choice(rng, n, (0.15, 0.25, 0.3, 0.3))
        max_cov = np.array([len(_LOB_COVS[l]) for l in PC_LOB_CODES])[lob]
        ncov = np.minimum(ncov, max_cov)

        cols: dict[str, Any] = {
            "PolicyNo": polno,
            "LOB": _take(PC_LOB_CODES, lob),
            "PolStatus": _take(PC_STATUS_CODES, status),
            "EffDate": _mdy(eff),
            "ExpDate": _mdy(exp),
            "InsuredName": name,
            "InsuredType": pc.if_else(pa.array(personal), pa.scalar("P"), pa.scalar("B")),
            "TaxId": tax,
            "MailAddr": addr,
            "City": _take([c[0] for c in CITIES], city),
            "State": _take([c[1] for c in CITIES], city),
            "Zip": zip_,
            "AgentNo": agent,
            "WritingCo": wco,
            "AnnualPrem": None,  # formatted below
            "PayPlan": _take(_PAY_PLANS, plan),
            "BalanceDue": None,
        }
        # ---- value defects
        kinds = FILE_DEFECT_KINDS[f"{PC}/policies.csv"]
        kind, defective = _pick_defects(rng, n, self.rate, kinds)
        pick = rng.integers(0, 1 << 30, n)
        clean = np.flatnonzero(kind < 0)
        w = self.writers["policies"]
        rec0 = w.records
        prem_written = prem.copy()
        text_over: dict[str, dict[int, str]] = {}
        raw_name: dict[int, bytes] = {}  # bad_encoding: latin-1 bytes
        unquoted: list[int] = []
        dup = np.zeros(n, dtype=bool)
        entries: list[tuple[int, str, str | None, dict[str, Any]]] = []
        prem_text_over: dict[int, str] = {}
        bal_text_over: dict[int, str] = {}
        for i in defective:
            k = kinds[kind[i]]
            v = int(pick[i])
            if k == "unquoted_comma":
                if not personal[i] and "," not in _to_py_str(name, i):
                    text_over.setdefault("InsuredName", {})[i] = _to_py_str(name, i) + ", Inc."
                unquoted.append(i)
                entries.append((i, k, None, {}))
            elif k == "bad_amount":
                f = ("AnnualPrem", "BalanceDue")[v % 2]
                cents = int(prem[i] if f == "AnnualPrem" else balance[i])
                bad = _bad_amount_text(cents, v // 2)
                (prem_text_over if f == "AnnualPrem" else bal_text_over)[i] = bad
                entries.append((i, k, f, {}))
            elif k == "bad_encoding":
                ln = ACCENTED_LAST_NAMES[v % len(ACCENTED_LAST_NAMES)]
                fn = ACCENTED_FIRST_NAMES[v // 7 % len(ACCENTED_FIRST_NAMES)]
                raw_name[i] = f"{ln}, {fn}".encode("latin-1")
                entries.append((i, k, "InsuredName", {}))
            elif k in ("impossible_date", "zero_date"):
                f = ("EffDate", "ExpDate")[v % 2]
                if k == "zero_date":
                    text_over.setdefault(f, {})[i] = "00/00/0000"
                else:
                    y = int(_ymd(np.array([eff[i] if f == "EffDate" else exp[i]]))[0][0])
                    text_over.setdefault(f, {})[i] = ("02/30/{y}", "02/31/{y}", "04/31/{y}", "13/01/{y}")[v // 2 % 4].format(y=y)
                entries.append((i, k, f, {}))
            elif k == "negative_premium":
                prem_written[i] = -prem[i]
                entries.append((i, k, "AnnualPrem", {}))
            elif k == "duplicate_policy_id":
                before = clean[clean < i]
                if len(before) == 0:
                    kind[i] = -1
                    continue
                j = int(before[v % len(before)])
                dup[i] = True
                text_over.setdefault("PolicyNo", {})[i] = _to_py_str(polno, j)
                entries.append((i, k, "PolicyNo", {"duplicate_of": rec0 + j + 1}))
            elif k == "unknown_code":
                if v % 2:
                    text_over.setdefault("LOB", {})[i] = _UNKNOWN_LOB[v // 2 % len(_UNKNOWN_LOB)]
                    entries.append((i, k, "LOB", {}))
                else:
                    text_over.setdefault("PolStatus", {})[i] = _UNKNOWN_PC_STATUS[v // 2 % len(_UNKNOWN_PC_STATUS)]
                    entries.append((i, k, "PolStatus", {}))
            elif k == "non_ascii_name":
                ln = ACCENTED_LAST_NAMES[v % len(ACCENTED_LAST_NAMES)]
                fn = ACCENTED_FIRST_NAMES[v // 7 % len(ACCENTED_FIRST_NAMES)] if v % 3 == 0 else FIRST_NAMES_F[v % len(FIRST_NAMES_F)]
                text_over.setdefault("InsuredName", {})[i] = f"{ln}, {fn}"
                entries.append((i, k, "InsuredName", {}))
            else:  # pragma: no cover
                raise AssertionError(k)
        cols["AnnualPrem"] = _money(prem_written, dollar=True, grouping=True, negative="(")
        cols["BalanceDue"] = _money(balance, dollar=False, grouping=False, negative="(")
        if prem_text_over:
            text_over["AnnualPrem"] = prem_text_over
        if bal_text_over:
            text_over["BalanceDue"] = bal_text_over
        for f, vals in text_over.items():
            cols[f] = _override(cols[f], vals)
        for i, k, f, extra in entries:
            pid = _to_py_str(cols["PolicyNo"], i)
            self.defects["policies"].add(rec0 + i + 1, k, f, pid, premium_cents=int(prem_written[i]), **extra)
        self.premium_cents += int(prem_written.sum())

        # ---- render lines
        out_cols = []
        for c in PC_POLICY_COLUMNS:
            a = cols[c]
            q = _csv_quote(a)
            if c == "InsuredName" and unquoted:
                q = _override(q, {i: _to_py_str(a, i) for i in unquoted})
            q = q.cast(pa.binary())
            if c == "InsuredName" and raw_name:
                q = _override(q, {i: b'"' + b + b'"' if b"," in b else b for i, b in raw_name.items()})
            out_cols.append(q)
        lines = _join(*out_cols, sep=pa.scalar(b",", pa.binary()))
        lines = _join(lines, pa.scalar(b"", pa.binary()), sep=pa.scalar(b"\n", pa.binary()))
        w.write(_string_array_bytes(lines), n)

        # ---- coverages
        ncov = np.where(dup, 0, ncov)
        self._coverages(rng, polno, lob, prem, eff, exp, ncov)

    def _coverages(self, rng, polno, lob, prem, eff, exp, ncov) -> None:
        grp, seq, starts = _group_layout(ncov)
        m = len(grp)
        # coverage code: slot 1 = the LOB's primary coverage, others distinct random picks
        maxc = max(len(v) for v in _LOB_COVS.values())
        code_table = np.full((len(PC_LOB_CODES), maxc), -1, dtype=np.int64)
        for li, l in enumerate(PC_LOB_CODES):
            for ci, c in enumerate(_LOB_COVS[l]):
                code_table[li, ci] = _PC_COV_CODES.index(c)
        nlob = np.array([len(_LOB_COVS[l]) for l in PC_LOB_CODES])
        n = len(ncov)
        keys = rng.random((n, maxc))
        keys[:, 0] = -1.0  # primary first
        keys[np.arange(maxc)[None, :] >= nlob[lob][:, None]] = 2.0  # slots the LOB does not have: last
        order = np.argsort(keys, axis=1)
        slot = order[grp, seq - 1]
        code_idx = code_table[lob[grp], slot]
        codes = [_PC_COV_CODES[i] for i in range(len(_PC_COV_CODES))]
        lim_choices = [np.array(_COV_LIMITS[c][0]) for c in codes]
        ded_choices = [np.array(_COV_LIMITS[c][1]) for c in codes]
        limit = np.zeros(m, dtype=np.int64)
        ded = np.zeros(m, dtype=np.int64)
        r1 = rng.integers(0, 1 << 20, m)
        r2 = rng.integers(0, 1 << 20, m)
        for ci in range(len(codes)):
            mask = code_idx == ci
            if mask.any():
                limit[mask] = lim_choices[ci][r1[mask] % len(lim_choices[ci])]
                ded[mask] = ded_choices[ci][r2[mask] % len(ded_choices[ci])]
        ded = np.minimum(ded, limit)
        limit *= 100
        ded *= 100
        # premium split: primary gets the largest weight; shares sum exactly to the policy premium
        wgt = np.where(seq == 1, 3.0, 1.0) * rng.uniform(0.5, 1.5, m)
        tot = np.add.reduceat(wgt, starts[ncov > 0]) if m else np.zeros(0)
        totw = np.zeros(n)
        totw[ncov > 0] = tot
        share = np.floor(prem[grp] * wgt / totw[grp]).astype(np.int64)
        got = np.zeros(n, dtype=np.int64)
        np.add.at(got, grp, share)
        first_rows = starts[ncov > 0]
        share[first_rows] += (prem - got)[ncov > 0]

        polno_c = _take(polno, grp)
        cols: dict[str, Any] = {
            "PolicyNo": polno_c,
            "CovCode": _take(codes, code_idx),
            "LimitAmt": None,
            "DeductAmt": None,
            "CovPrem": None,
            "EffDate": _mdy(eff[grp]),
            "ExpDate": _mdy(exp[grp]),
        }
        kinds = FILE_DEFECT_KINDS[f"{PC}/coverages.csv"]
        kind, defective = _pick_defects(rng, m, self.rate, kinds)
        pick = rng.integers(0, 1 << 30, m)
        w = self.writers["coverages"]
        rec0 = w.records
        text_over: dict[str, dict[int, str]] = {}
        entries: list[tuple[int, str, str | None]] = []
        amounts = {"LimitAmt": limit, "DeductAmt": ded, "CovPrem": share}
        for i in defective:
            k = kinds[kind[i]]
            v = int(pick[i])
            if k == "bad_amount":
                f = ("LimitAmt", "DeductAmt", "CovPrem")[v % 3]
                text_over.setdefault(f, {})[i] = _bad_amount_text(int(amounts[f][i]), v // 3, dollar=False)
                entries.append((i, k, f))
            elif k in ("impossible_date", "zero_date"):
                f = ("EffDate", "ExpDate")[v % 2]
                if k == "zero_date":
                    text_over.setdefault(f, {})[i] = "00/00/0000"
                else:
                    y = int(_ymd(np.array([eff[grp[i]] if f == "EffDate" else exp[grp[i]]]))[0][0])
                    text_over.setdefault(f, {})[i] = ("02/30/{y}", "02/31/{y}", "04/31/{y}", "13/01/{y}")[v // 2 % 4].format(y=y)
                entries.append((i, k, f))
            elif k == "orphan_coverage":
                text_over.setdefault("PolicyNo", {})[i] = f"PC9{v % 10_000_000:07d}"
                entries.append((i, k, "PolicyNo"))
            else:  # pragma: no cover
                raise AssertionError(k)
        cols["LimitAmt"] = _money(limit, dollar=False, grouping=False)
        cols["DeductAmt"] = _money(ded, dollar=False, grouping=False)
        cols["CovPrem"] = _money(share, dollar=False, grouping=False)
        for f, vals in text_over.items():
            cols[f] = _override(cols[f], vals)
        for i, k, f in entries:
            self.defects["coverages"].add(rec0 + i + 1, k, f, _to_py_str(cols["PolicyNo"], i))
        lines = _join(*[_csv_quote(cols[c]) for c in PC_COVERAGE_COLUMNS], sep=",")
        lines = _join(lines, pa.scalar(""), sep="\n")
        w.write(_string_array_bytes(lines), m)

    def finish(self) -> dict[str, FileSummary]:
        for d in self.defects.values():
            d.close()
        summaries = {k: w.close() for k, w in self.writers.items()}
        write_control_file(self.writers["policies"].path.parent / PC_CONTROL, summaries)
        return summaries


def _bad_amount_text(cents: int, variant: int, *, dollar: bool = True) -> str:
    """A money text that does not parse: a letter O for a zero digit, European separators, N/A."""
    a = abs(cents)
    d, c = divmod(a, 100)
    v = variant % 3
    if v == 0:
        good = f"${d:,}.{c:02d}" if dollar else f"{d}.{c:02d}"
        digits = [j for j, ch in enumerate(good) if ch.isdigit()]
        j = digits[min(1, len(digits) - 1)]
        return good[:j] + "O" + good[j + 1 :]
    if v == 1:
        return f"{d:,}".replace(",", ".") + f",{c:02d}"
    return "N/A"


# --------------------------------------------------------------------------- driver


def _copybook_dir() -> Path:
    return Path(__file__).resolve().parent / "sources" / MF


MF_CONTROL = "CONTROL.txt"
PC_CONTROL = "control.txt"
MF_TRAILER = "POLTRLR.cpy"


def master_trailer(records: int, premium_cents: int) -> bytes:
    """POLMAST's trailer record (RDW included): its record count and modal premium total."""
    from legacy.sources import load_source

    spec = load_source(MF).file("policies")
    layout = parse_copybook((_copybook_dir() / MF_TRAILER).read_text(encoding="ascii"), source=MF_TRAILER)
    return encode_trailer(layout, spec, records, decimal.Decimal(premium_cents).scaleb(-2), "cp037")


def write_control_file(path: Path, files: dict[str, "FileSummary"]) -> None:
    """The drop's control file: each data file's whole records (a partial one at its end is junk) and bytes."""
    entries = [ControlEntry(s.path.name, 0, s.records - (1 if s.trailing_bytes else 0), s.bytes)
               for s in files.values()]
    path.write_text(control_file_text(entries), encoding="ascii")


def generate_sample(
    out_dir: Path,
    *,
    policies: int,
    seed: int,
    defect_rate: float = 0.02,
    mainframe_share: float = 0.5,
    progress: Callable[[str, int, int], None] | None = None,
) -> SampleSummary:
    """Write a synthetic legacy book (both sources + manifest) into ``out_dir``; see the module doc."""
    if policies < 0:
        raise ValueError("policies must be >= 0")
    if not 0.0 <= defect_rate <= 0.5:
        raise ValueError("defect_rate must be between 0 and 0.5")
    if not 0.0 <= mainframe_share <= 1.0:
        raise ValueError("mainframe_share must be between 0 and 1")
    seed = int(seed)
    out_dir = Path(out_dir)
    mf_dir = out_dir / MF
    pc_dir = out_dir / PC
    mf_dir.mkdir(parents=True, exist_ok=True)
    pc_dir.mkdir(parents=True, exist_ok=True)

    n_mf = int(round(policies * mainframe_share))
    n_pc = policies - n_mf
    copybooks: dict[str, Copybook] = {}
    for name in MF_FILES:
        src = _copybook_dir() / f"{name}.cpy"
        shutil.copyfile(src, mf_dir / f"{name}.cpy")
        copybooks[name] = parse_copybook(src.read_text(encoding="ascii"), source=str(src))
    shutil.copyfile(_copybook_dir() / MF_TRAILER, mf_dir / MF_TRAILER)

    files: dict[str, FileSummary] = {}
    spool = out_dir / ".sample-defects"
    spool.mkdir(exist_ok=True)
    try:
        mf = _MainframeBook(mf_dir, copybooks, seed, defect_rate, spool)
        for c, g0 in enumerate(range(0, n_mf, CHUNK_POLICIES)):
            mf.chunk(g0, min(CHUNK_POLICIES, n_mf - g0), c)
            if progress:
                progress(MF, min(g0 + CHUNK_POLICIES, n_mf), n_mf)
        for name, s in mf.finish(np.random.Generator(np.random.PCG64([seed, 3]))).items():
            files[f"{MF}/{name}.dat"] = s

        pcb = _PcBook(pc_dir, seed, defect_rate, spool)
        for c, g0 in enumerate(range(0, n_pc, CHUNK_POLICIES)):
            pcb.chunk(g0, min(CHUNK_POLICIES, n_pc - g0), c)
            if progress:
                progress(PC, min(g0 + CHUNK_POLICIES, n_pc), n_pc)
        for kind_, s in pcb.finish().items():
            files[f"{PC}/{kind_}.csv"] = s

        spools = [mf.defects[name] for name in MF_FILES] + [pcb.defects[k] for k in ("policies", "coverages")]
        policy_totals = {
            MF: {
                "file": "POLMAST.dat",
                "records": files[f"{MF}/POLMAST.dat"].records,
                "policies": n_mf,
                "premium_field": "MODAL_PREMIUM",
                "premium_cents": mf.premium_cents,
                "modal_premium_cents": mf.premium_cents,
            },
            PC: {
                "file": "policies.csv",
                "records": files[f"{PC}/policies.csv"].records,
                "policies": n_pc,
                "premium_field": "AnnualPrem",
                "premium_cents": pcb.premium_cents,
                "annual_premium_cents": pcb.premium_cents,
            },
        }
        head = {
            "version": MANIFEST_VERSION,
            "seed": seed,
            "policies": policies,
            "defect_rate": defect_rate,
            "mainframe_share": mainframe_share,
            "as_of": str(AS_OF),
            "chunk_policies": CHUNK_POLICIES,
            "files": {
                k: {"records": v.records, "bytes": v.bytes, "sha256": v.sha256,
                    **({"trailing_bytes": v.trailing_bytes} if v.trailing_bytes else {})}
                for k, v in files.items()
            },
            "policy_totals": policy_totals,
        }
        manifest_path = out_dir / "manifest.json"
        _write_manifest(manifest_path, head, [d.spool for d in spools])
    finally:
        shutil.rmtree(spool, ignore_errors=True)

    counts: dict[str, int] = {}
    by_file: dict[str, dict[str, int]] = {}
    for d in spools:
        if d.counts:
            by_file[f"{d.source}/{d.file}"] = dict(sorted(d.counts.items()))
        for k, v in d.counts.items():
            counts[k] = counts.get(k, 0) + v
    return SampleSummary(
        out_dir=out_dir,
        manifest_path=manifest_path,
        seed=seed,
        policies=policies,
        defect_rate=defect_rate,
        mainframe_share=mainframe_share,
        files=files,
        policy_totals=policy_totals,
        defect_counts=dict(sorted(counts.items())),
        defects_by_file=by_file,
    )


def _write_manifest(path: Path, head: dict[str, Any], spools: Sequence[Path]) -> None:
    """Pretty top level, then ``"defects"`` with one defect per line, streamed from the spool files."""
    text = json.dumps(head, indent=2, ensure_ascii=False)
    text = text[: text.rstrip().rfind("}")].rstrip() + ',\n  "defects": ['
    first = True
    with open(path, "w", encoding="utf-8") as out:
        out.write(text)
        for sp in spools:
            with open(sp, encoding="utf-8") as fh:
                for line in fh:
                    out.write(("\n    " if first else ",\n    ") + line.rstrip("\n"))
                    first = False
        out.write("\n  ]\n}\n" if not first else "]\n}\n")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Write a synthetic legacy book (mainframe life + P&C CSV) with a manifest.")
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--policies", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--defect-rate", type=float, default=0.02)
    ap.add_argument("--mainframe-share", type=float, default=0.5)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()

    def show(stage: str, done: int, total: int) -> None:
        print(f"{stage}: {done:,}/{total:,} policies", file=sys.stderr)

    s = generate_sample(
        args.out_dir, policies=args.policies, seed=args.seed, defect_rate=args.defect_rate,
        mainframe_share=args.mainframe_share, progress=show,
    )
    for k, f in s.files.items():
        print(f"{k}: {f.records:,} records, {f.bytes:,} bytes")
    print(f"defects: {s.total_defects:,} {s.defect_counts}")
    print(f"manifest: {s.manifest_path}  ({time.perf_counter() - t0:.1f}s)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
