"""Canonical Policy Model v1, tabular form: the tables the pipeline maps every source into.

This is the contract between mappings, the model registry, the pydantic document form and the
targets. v1 is frozen: change it only by declaring a new version with an upgrade path
(`canonical/registry.py`). Money is exact decimal(18,2); dates are dates; codes are canonical
codes (the mapping's code tables translate each source's own).
"""

from dataclasses import dataclass

import pyarrow as pa

MONEY = pa.decimal128(18, 2)


@dataclass(frozen=True)
class Column:
    name: str
    type: pa.DataType
    required: bool = False  # a policy missing it is scored down (and, for keys, quarantined)
    pii: bool = False
    codes: tuple[str, ...] | None = None  # the canonical code list, when the column is a code
    description: str = ""


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    description: str

    def column(self, name: str) -> Column:
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(f"canonical table {self.name} has no column {name!r}")

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def arrow_schema(self) -> pa.Schema:
        return pa.schema([pa.field(c.name, c.type) for c in self.columns])


POLICY_STATUS = ("in_force", "pending", "lapsed", "cancelled", "expired", "surrendered", "paid_up", "death_claim",
                 "non_renewed")
LINE_OF_BUSINESS = ("life", "annuity", "homeowners", "personal_auto", "commercial_auto", "business_owners",
                    "general_liability", "workers_comp")
FREQUENCY = ("annual", "semi_annual", "quarterly", "monthly", "single")
PARTY_TYPE = ("person", "business")

POLICIES = Table(
    "policies",
    (
        Column("policy_id", pa.string(), True, description="The source system's policy number"),
        Column("source_system", pa.string(), True, description="Legacy source the policy came from"),
        Column("status", pa.string(), True, codes=POLICY_STATUS),
        Column("line_of_business", pa.string(), True, codes=LINE_OF_BUSINESS),
        Column("product_code", pa.string(), True, description="Product or plan code"),
        Column("carrier_code", pa.string(), True, description="Writing company"),
        Column("issue_date", pa.date32()),
        Column("effective_date", pa.date32(), True),
        Column("expiration_date", pa.date32(), description="Null for whole life and open-ended contracts"),
        Column("insured_name", pa.string(), True, pii=True),
        Column("insured_type", pa.string(), codes=PARTY_TYPE),
        Column("insured_birth_date", pa.date32(), pii=True),
        Column("insured_tax_id", pa.string(), pii=True),
        Column("insured_address", pa.string(), pii=True),
        Column("insured_city", pa.string(), pii=True),
        Column("insured_state", pa.string(), description="Two-letter state code"),
        Column("insured_postal_code", pa.string(), pii=True),
        Column("agent_code", pa.string()),
        Column("annual_premium", MONEY, True, description="Premium for a year, whatever the billing mode"),
        Column("modal_premium", MONEY, description="Premium per billing period"),
        Column("premium_frequency", pa.string(), codes=FREQUENCY),
        Column("face_amount", MONEY, description="Life and annuity: face amount or account value"),
        Column("cash_value", MONEY),
        Column("loan_balance", MONEY),
        Column("payment_plan", pa.string()),
        Column("outstanding_balance", MONEY),
        Column("currency", pa.string(), True),
    ),
    ("policy_id",),
    "Policy core, insured party, agent, rating and payment summary: one row per policy.",
)

COVERAGES = Table(
    "coverages",
    (
        Column("policy_id", pa.string(), True),
        Column("coverage_seq", pa.int64(), True),
        Column("coverage_code", pa.string(), True),
        Column("coverage_type", pa.string(), True,
               codes=("life", "rider", "annuity", "property", "liability", "medical", "auto_physical_damage",
                      "uninsured_motorist", "workers_comp")),
        Column("limit_amount", MONEY, True),
        Column("deductible_amount", MONEY),
        Column("premium", MONEY),
        Column("effective_date", pa.date32()),
        Column("expiration_date", pa.date32()),
        Column("status", pa.string()),
    ),
    ("policy_id", "coverage_seq"),
    "Coverage sections: type, limit, deductible, premium and dates per coverage of a policy.",
)

PARTIES = Table(
    "parties",
    (
        Column("policy_id", pa.string(), True),
        Column("role", pa.string(), True, codes=("insured", "owner", "beneficiary", "payor")),
        Column("party_seq", pa.int64(), True),
        Column("name", pa.string(), True, pii=True),
        Column("relationship", pa.string()),
        Column("share_percent", pa.decimal128(5, 2)),
    ),
    ("policy_id", "role", "party_seq"),
    "People and businesses on a policy other than in the policy row: beneficiaries, owners, payors.",
)

PAYMENTS = Table(
    "payments",
    (
        Column("policy_id", pa.string(), True),
        Column("payment_seq", pa.int64(), True),
        Column("payment_date", pa.date32(), True),
        Column("amount", MONEY, True),
        Column("method", pa.string()),
        Column("status", pa.string()),
    ),
    ("policy_id", "payment_seq"),
    "Payment history.",
)

ENDORSEMENTS = Table(
    "endorsements",
    (
        Column("policy_id", pa.string(), True),
        Column("endorsement_seq", pa.int64(), True),
        Column("effective_date", pa.date32(), True),
        Column("endorsement_code", pa.string(), True),
        Column("description", pa.string()),
        Column("premium_change", MONEY),
    ),
    ("policy_id", "endorsement_seq"),
    "Endorsements: changes to a policy after issue, riders added or removed.",
)

CORRESPONDENCE = Table(
    "correspondence",
    (
        Column("policy_id", pa.string(), True),
        Column("document_id", pa.string(), True),
        Column("document_type", pa.string(), True),
        Column("document_date", pa.date32()),
        Column("channel", pa.string()),
    ),
    ("policy_id", "document_id"),
    "Documents, communications and notices sent about a policy.",
)

CLAIM_LINKS = Table(
    "claim_links",
    (
        Column("policy_id", pa.string(), True),
        Column("claim_number", pa.string(), True),
        Column("claim_date", pa.date32()),
        Column("claim_status", pa.string()),
        Column("claim_amount", MONEY),
    ),
    ("policy_id", "claim_number"),
    "References to claims in the claims system (links only).",
)

V1_TABLES: dict[str, Table] = {t.name: t for t in (POLICIES, COVERAGES, PARTIES, PAYMENTS, ENDORSEMENTS,
                                                    CORRESPONDENCE, CLAIM_LINKS)}
V1 = "1.0.0"
