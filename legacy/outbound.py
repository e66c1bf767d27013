"""The legacy batch: a fixed-width outbound file in the mainframe's layout (`outbound/POLOUT.cpy`).

For policies the legacy system keeps servicing, a wave writes one POLOUT record per policy from the
canonical book, encoded with the same copybook codec that reads the mainframe's own files (EBCDIC,
packed decimals, YYYYMMDD dates). Reconciliation reads the file back with that codec. No Dagster,
no database.
"""

from functools import lru_cache
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from legacy.copybook import Copybook, decode_file, encode_records, parse_copybook

LAYOUT = Path(__file__).parent / "outbound" / "POLOUT.cpy"
ENCODING = "cp037"
# canonical code -> the mainframe's two-letter code
STATUS = {"in_force": "IF", "pending": "PE", "lapsed": "LA", "cancelled": "CA", "expired": "EX", "surrendered": "SU",
          "paid_up": "PU", "death_claim": "DC", "non_renewed": "NR"}
LINE = {"life": "LI", "annuity": "AN", "homeowners": "HO", "personal_auto": "PA", "commercial_auto": "CA",
        "business_owners": "BO", "general_liability": "GL", "workers_comp": "WC"}
# what the file carries, as canonical columns: reconciliation compares these
POLICY_COLUMNS = ["policy_id", "source_system", "status", "line_of_business", "product_code", "carrier_code",
                  "effective_date", "expiration_date", "insured_state", "agent_code", "annual_premium", "face_amount"]


@lru_cache(maxsize=1)
def layout() -> Copybook:
    return parse_copybook(LAYOUT.read_text(encoding="ascii"), source=str(LAYOUT))


def _codes(values: pa.ChunkedArray, table: dict[str, str], field: str) -> pa.Array:
    index = pc.index_in(values, value_set=pa.array(list(table)))
    unknown = pc.and_(pc.is_null(index), pc.is_valid(values))
    if pc.any(unknown).as_py():
        raise ValueError(f"{field}: canonical value {values.filter(unknown)[0].as_py()!r} has no mainframe code")
    return pc.fill_null(pc.take(pa.array(list(table.values())), index), "")


def _yyyymmdd(values: pa.ChunkedArray) -> np.ndarray:
    text = pc.strftime(values.cast(pa.timestamp("s")), format="%Y%m%d")
    return pc.fill_null(text.cast(pa.int64()), 0).to_numpy().astype(np.int64)


def encode_policies(policies: pa.Table, coverage_count: pa.Array, total_limit: pa.Array, wave_id: str) -> bytes:
    """POLOUT records for canonical policies (with each policy's coverage count and total limit)."""
    n = policies.num_rows

    def text(name: str) -> pa.Array:
        return pc.fill_null(policies.column(name), "")

    columns = {
        "OUT_POLICY_ID": text("policy_id"),
        "OUT_SOURCE_SYSTEM": text("source_system"),
        "OUT_STATUS": _codes(policies.column("status"), STATUS, "OUT_STATUS"),
        "OUT_LINE": _codes(policies.column("line_of_business"), LINE, "OUT_LINE"),
        "OUT_PRODUCT_CODE": text("product_code"),
        "OUT_CARRIER_CODE": text("carrier_code"),
        "OUT_EFF_DATE": _yyyymmdd(policies.column("effective_date")),
        "OUT_EXP_DATE": _yyyymmdd(policies.column("expiration_date")),
        "OUT_STATE": text("insured_state"),
        "OUT_AGENT_CODE": text("agent_code"),
        "OUT_ANNUAL_PREMIUM": policies.column("annual_premium"),
        "OUT_FACE_AMOUNT": policies.column("face_amount"),
        "OUT_COVERAGE_COUNT": np.asarray(coverage_count, dtype=np.int64),
        "OUT_TOTAL_LIMIT": total_limit,
        "OUT_WAVE_ID": pa.array([wave_id] * n, pa.string()),
    }
    return encode_records(layout(), columns, n, encoding=ENCODING, record_format="F")


def decode_empty() -> pa.Table:
    """The decoded columns of an empty file (no records, so nothing to decode): one zero-length column each."""
    from legacy.copybook import decode_block
    from legacy.records import RecordBlock

    empty = RecordBlock(1, np.zeros((0, layout().record_length), np.uint8), np.zeros(0, np.int64),
                        np.zeros(0, np.int64), fixed_length=True)
    return decode_block(layout(), empty, encoding=ENCODING).table


def read_policies(path: Path) -> pa.Table:
    """Decode an outbound file back to canonical column names (and coverage count, total limit, wave)."""
    blocks, bad = [], 0
    for result in decode_file(path, layout(), record_format="F", encoding=ENCODING):
        blocks.append(result.table)
        bad += result.quarantine.num_rows
    if bad:
        raise ValueError(f"{path}: {bad} records do not decode with {LAYOUT.name}")
    t = pa.concat_tables(blocks) if blocks else decode_empty()
    status = {v: k for k, v in STATUS.items()}
    line = {v: k for k, v in LINE.items()}

    def back(name: str, table: dict[str, str]) -> pa.Array:
        return pc.take(pa.array(list(table.values())), pc.index_in(t.column(name), value_set=pa.array(list(table))))

    def date(name: str) -> pa.Array:
        raw = t.column(name).cast(pa.int64()).to_numpy()
        text = np.char.mod("%08d", raw)
        parsed = pc.strptime(pa.array(text), format="%Y%m%d", unit="s", error_is_null=True).cast(pa.date32())
        return pc.if_else(pa.array(raw == 0), pa.scalar(None, pa.date32()), parsed)

    def stripped(name: str) -> pa.Array:
        values = pc.utf8_rtrim_whitespace(t.column(name))
        return pc.if_else(pc.equal(values, ""), pa.scalar(None, pa.string()), values)

    return pa.table({
        "policy_id": stripped("OUT_POLICY_ID"), "source_system": stripped("OUT_SOURCE_SYSTEM"),
        "status": back("OUT_STATUS", status), "line_of_business": back("OUT_LINE", line),
        "product_code": stripped("OUT_PRODUCT_CODE"), "carrier_code": stripped("OUT_CARRIER_CODE"),
        "effective_date": date("OUT_EFF_DATE"), "expiration_date": date("OUT_EXP_DATE"),
        "insured_state": stripped("OUT_STATE"), "agent_code": stripped("OUT_AGENT_CODE"),
        "annual_premium": t.column("OUT_ANNUAL_PREMIUM"), "face_amount": t.column("OUT_FACE_AMOUNT"),
        "coverage_count": t.column("OUT_COVERAGE_COUNT"), "total_limit": t.column("OUT_TOTAL_LIMIT"),
        "wave_id": stripped("OUT_WAVE_ID"),
    })
