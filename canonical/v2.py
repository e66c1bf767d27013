"""Canonical Policy Model v2: v1 plus two optional policy columns, and the declared upgrade v1 -> v2.

A draft (not frozen): freeze it when a target first consumes it.
"""

import pyarrow as pa

from canonical.model import MODEL_V1, AddColumn, ModelVersion, Upgrade
from canonical.tables import V1, Column

V2 = "2.0.0"

PREFERRED_LANGUAGE = Column("preferred_language", pa.string(),
                            description="Language for correspondence, ISO 639-1 (e.g. en, es); null when unknown")
PAPERLESS = Column("paperless", pa.bool_(), description="Insured opted into electronic documents; null when unknown")

V1_TO_V2 = Upgrade(V1, V2, "policies: add preferred_language and paperless (nullable; existing policies get nulls)",
                   (AddColumn("policies", PREFERRED_LANGUAGE), AddColumn("policies", PAPERLESS)))

MODEL_V2 = ModelVersion(V2, V1_TO_V2.apply_definition(MODEL_V1.tables), frozen=False, upgrades=(V1_TO_V2,),
                        description="v1 plus policies.preferred_language and policies.paperless")

Policy = MODEL_V2.document_model(module=__name__)
Coverage = Policy.child_models["coverages"]
Party = Policy.child_models["parties"]
Payment = Policy.child_models["payments"]
Endorsement = Policy.child_models["endorsements"]
Correspondence = Policy.child_models["correspondence"]
ClaimLink = Policy.child_models["claim_links"]
