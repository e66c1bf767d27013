"""Draft a mapping for a legacy source never seen before: which source column feeds which canonical field.

``suggest_mapping(source, sample)`` looks at a source's file kinds, column names and a sample of
its values (``sample_source_files`` reads one) and proposes, for every canonical table of the
model (:mod:`canonical.tables`):

* which source file kind feeds it (kind names, file patterns and how many of the table's fields
  find a candidate among the kind's columns; ``kind_to_table`` overrides);
* for every canonical column, the best source column(s) and the expression to map it
  (``col``, ``date`` with the strftime format found in the values, ``money``, ``code`` with a code
  table proposed from the observed values, ``trim``, ``upper``, ``concat``, ``lit``), with a
  confidence in [0, 1] and a reason a reviewer can check.

Evidence per (canonical column, source column) pair:

* name: fuzzy similarity of normalised tokens (camelCase / snake_case / COBOL names split,
  accents removed, insurance abbreviations expanded through a glossary: ``PREM`` -> premium,
  ``EFF`` -> effective, ``DOB`` -> birth date, ``NIF``/``SSN`` -> tax id, ``LOB``/``Ramo`` -> line
  of business ...), with record prefixes (``COV-``, ``END-``, ``POL-``) and generic words (``code``)
  weighted down, and a difflib/abbreviation fallback for unknown tokens;
* values: dates (``99999999`` YYYYMMDD, ``99/99/9999``, ``9999-99-99``, ``99-99-9999`` ... and
  the day/month order), money (decimal types, ``$9,999.99`` text, the scale), codes (few
  distinct values; how many rows map onto the canonical code list), ids (distinct, prefixed,
  matching the policies file's key), names, two-letter states, postal codes, tax ids,
  addresses, currencies.

``confidence = name * (0.6 + 0.4 * values) + (1 - name) * d * values`` where ``d`` says how
distinctive the value shape alone is (a tax id shape is, a money column is not).  Values that
contradict the canonical type cap the confidence at 0.4; one occurrence of a repeating group
(``RIDER_CODE_1``) is capped at 0.45.  Fields below 0.5 are written commented out, fields below
0.7 (and code tables with ``TODO`` entries, ambiguous day/month orders, derived codes) are
flagged ``review: true``.  ``unmapped_required`` lists every required canonical column of a
mapped table (and of ``policies`` always) that the draft does not map live (no candidate, or only
a commented-out one); ``unused_source_columns`` lists, per source file kind, the columns no live
field reads.  Each file kind feeds at most one table; a column feeds at most one field, except
that a code column already used (``PLAN_CODE`` -> product_code) may also be translated into a
canonical code field (line_of_business) when most of its values map onto that code list.

Personal data is never shown: reasons only describe shapes and shares, and no code table is
built from a column that is personal data in the model or in the source configuration.
"""

from __future__ import annotations

import difflib
import json
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import yaml

from canonical.tables import V1, V1_TABLES, Column, Table
from legacy.profile import value_patterns
from legacy.sources import SourceConfig, find_drop_files, output_columns, read_source_file

__all__ = [
    "FieldSuggestion",
    "Suggestion",
    "TableSuggestion",
    "sample_source_files",
    "suggest_mapping",
    "tokens",
]

LIVE = 0.5  # below: written commented out
REVIEW = 0.7  # below: review: true
PROPOSE = 0.35  # below: not proposed at all
REPEAT_CAP = 0.45
VETO_CAP = 0.4

# --------------------------------------------------------------------------- glossary

# source word -> canonical concept words (lower case, accents removed); an empty list drops the word
_GLOSSARY: dict[str, list[str]] = {}


def _add(concepts: str, *words: str) -> None:
    for w in words:
        _GLOSSARY[w] = concepts.split() if concepts else []


_add("policy", "pol", "plcy", "plcyno", "pcy", "poli", "policy", "policies", "poliza", "polizas", "contract",
     "contrato", "apolice")
_add("id", "id", "no", "nr", "nbr", "num", "numb", "number", "numero", "nro", "ident", "identifier", "ids")
_add("policy id", "polno", "polnum", "polnbr", "policyno", "policynum", "policynumber", "polid", "npoliza")
_add("seq", "seq", "sequence", "sq", "seqno", "occ", "occurrence", "orden", "secuencia", "linea")
_add("effective", "eff", "effv", "efft", "effect", "effective", "start", "strt", "begin", "beg", "inception", "incept",
     "incep", "inicio", "desde", "efecto", "alta")
_add("effective date", "effdt", "effdate", "effdte", "startdate", "inceptiondate")
_add("expiration", "exp", "expr", "expir", "expiry", "expires", "expiration", "end", "ending", "vencimiento", "venc",
     "vto", "hasta", "fin", "termination", "trm", "renewal", "renew", "vencim")
_add("expiration date", "expdt", "expdate", "expdte", "enddate", "termdate")
_add("maturity", "mat", "matur", "maturity", "maturity")
_add("issue", "iss", "issue", "issued", "emision", "emission")
_add("date", "dt", "dte", "date", "fecha", "fec", "fch", "data")
_add("premium", "prem", "prm", "premium", "premiums", "prima", "primas", "premio")
_add("annual", "annual", "ann", "anl", "annl", "yearly", "anual", "anuales", "yr")
_add("annual premium", "annprem", "annualprem", "annpremium")
_add("modal", "modal", "installment", "instl", "cuota")
_add("frequency", "freq", "frq", "frequency", "mode", "periodicity", "periodicidad", "frecuencia", "periodo")
_add("deductible", "ded", "deduct", "deductible", "ddct", "dedu", "franquicia", "excess")
_add("limit", "lmt", "lim", "limit", "limits", "capital", "suma", "suminsured", "insuredamount")
_add("amount", "amt", "amnt", "amount", "importe", "imp", "monto", "valor")
_add("birth date", "dob", "birthdate", "birthdt", "bdate", "bdt", "fnac")
_add("birth", "birth", "brth", "bth", "nacimiento", "nac", "born")
_add("tax id", "ssn", "tin", "taxid", "fein", "ein", "nif", "cif", "dni", "nie", "nino", "rfc", "cpf", "taxno", "sin")
_add("tax", "tax", "fiscal")
_add("address", "addr", "adr", "adrs", "address", "street", "direccion", "domicilio", "calle", "addrline")
_add("", "mail", "mailing", "of", "the", "de", "del", "la", "el", "los", "las", "y", "and", "a", "en", "e", "file",
     "rec", "record", "x", "txt")
_add("postal", "zip", "zipcode", "postal", "postcode", "pcode", "cp", "plz", "cep")
_add("postal code", "codpostal", "codigopostal", "postalcode", "zipcd")
_add("state", "st", "state", "prov", "province", "provincia", "region", "stprov")
_add("city", "city", "cty", "town", "ciudad", "poblacion", "localidad", "municipio", "locality")
_add("line business", "lob", "ramo", "lineofbusiness", "lob_cd")
_add("line", "line", "ln")
_add("business", "business", "bus", "negocio")
_add("carrier", "carr", "carrier", "co", "cia", "company", "compania", "companias", "insurer", "aseguradora", "writing",
     "wrtg", "writingco", "writingcompany", "uw", "underwriter", "entidad")
_add("agent", "agt", "agnt", "agent", "agente", "producer", "prdcr", "broker", "mediador", "corredor", "intermediary",
     "intermediario", "rep")
_add("payment", "pay", "pymt", "pmt", "pmnt", "payment", "payments", "pago", "pagos", "bill", "billing", "bil",
     "cobro", "recibo")
_add("payment plan", "payplan", "pmtplan", "billplan", "billingplan")
_add("plan", "plan", "pln")
_add("status", "stat", "stts", "sts", "status", "estado", "situacion", "estatus")
_add("name", "nm", "nme", "name", "names", "nombre", "nom", "razon", "razonsocial", "fullname")
_add("last name", "apellido", "apellidos", "surname", "lname", "lastname", "lastnm", "familyname")
_add("first name", "fname", "firstname", "firstnm", "givenname", "forename", "nombrepila")
_add("first", "first", "frst", "given")
_add("last", "last", "lst", "family")
_add("middle", "middle", "mid", "mi", "init", "initial")
_add("insured", "ins", "insd", "insrd", "insured", "asegurado", "aseg", "holder", "cliente", "client", "customer",
     "cust", "named")
_add("insured name", "policyholder", "tomador", "insuredname", "titular", "contratante", "assured")
_add("product", "prod", "prd", "product", "producto", "modalidad")
_add("code", "cd", "cde", "code", "codes", "cod", "codigo", "kode", "clave")
_add("type", "typ", "type", "tp", "tipo", "kind", "class", "clase")
_add("face", "face", "fce", "facevalue", "faceamt")
_add("cash", "cash", "csh", "surrender", "rescate")
_add("value", "val", "value", "vlu")
_add("loan", "loan", "prestamo", "lien")
_add("balance", "bal", "balance", "saldo")
_add("outstanding", "due", "outstanding", "outst", "owed", "owing", "unpaid", "pendiente", "arrears")
_add("currency", "curr", "cur", "ccy", "currency", "moneda", "divisa", "currcd")
_add("coverage", "cov", "cvg", "cover", "coverage", "coverages", "cobertura", "coberturas", "garantia", "garantias",
     "peril", "covg")
_add("party", "party", "pty", "parties", "participant", "interviniente")
_add("role", "role", "rol", "papel")
_add("relationship", "rel", "relation", "relationship", "reltn", "parentesco", "relacion", "relship")
_add("share", "share", "shr", "porcentaje", "split", "alloc", "allocation")
_add("percent", "pct", "percent", "percentage", "perc", "pcnt")
_add("beneficiary", "ben", "bene", "benef", "beneficiary", "beneficiario", "benes")
_add("owner", "own", "owner", "ownr", "propietario")
_add("method", "method", "mthd", "meth", "medio", "via", "forma")
_add("endorsement", "endt", "endors", "endorse", "endorsement", "endorsements", "endo", "suplemento", "suplementos",
     "amendment", "amend")
_add("description", "desc", "dsc", "descr", "description", "descripcion", "text", "narrative", "comment", "comments",
     "remarks", "observaciones", "memo")
_add("change", "chg", "change", "chng", "delta", "diff", "variacion", "cambio")
_add("document", "doc", "docs", "document", "documento", "documentos", "image", "img")
_add("channel", "channel", "chnl", "chan", "canal", "delivery", "medium")
_add("claim", "clm", "clms", "claim", "claims", "siniestro", "siniestros", "loss")
_add("correspondence", "corr", "correspondence", "corresp", "letter", "letters", "notice", "notices",
     "comunicacion", "comunicaciones", "cartas")
_add("source", "source", "src", "origen")
_add("system", "system", "sys", "sistema")
_add("rider", "rider", "rdr", "riders")
_add("sex", "sex", "gender", "sexo", "gndr")
_add("master", "mast", "master", "mstr", "maestro")
_add("history", "hist", "history", "historia", "historico", "hst")
_add("index", "idx", "index", "indice")
_add("reference", "ref", "reference", "xref", "referencia")
_add("count", "count", "cnt", "ctr")

# concept pairs that are related but not the same; similarity in (0, 1)
_RELATED: dict[frozenset, float] = {
    frozenset(("id", "code")): 0.6,
    frozenset(("id", "reference")): 0.7,
    frozenset(("face", "limit")): 0.7,
    frozenset(("maturity", "expiration")): 0.85,
    frozenset(("product", "plan")): 0.8,
    frozenset(("effective", "issue")): 0.4,
    frozenset(("channel", "method")): 0.5,
    frozenset(("amount", "value")): 0.5,
    frozenset(("type", "code")): 0.4,
    frozenset(("description", "name")): 0.3,
    frozenset(("outstanding", "balance")): 0.3,
    frozenset(("status", "state")): 0.2,
}

# words of the canonical model that are weak evidence on their own (weight < 1)
_GENERIC = {"code": 0.5, "amount": 0.6, "insured": 0.5, "type": 0.7}
_CONTEXT_WEIGHT = 0.3  # a table's own entity word (COV- in a coverage file) or a file's record prefix

# a canonical table's entity words (context) and the words a file kind feeding it is named with
_ENTITIES: dict[str, set[str]] = {
    "policies": {"policy"},
    "coverages": {"coverage"},
    "parties": {"party"},
    "payments": {"payment"},
    "endorsements": {"endorsement"},
    "correspondence": {"document", "correspondence"},
    "claim_links": {"claim"},
}
_ENTITY = {"policies": "policy", "coverages": "coverage", "parties": "party", "payments": "payment",
           "endorsements": "endorsement", "correspondence": "document", "claim_links": "claim"}
_KIND_WORDS: dict[str, set[str]] = {
    "policies": {"policy", "master", "contract"},
    "coverages": {"coverage", "rider", "segment"},
    "parties": {"party", "beneficiary", "owner", "role"},
    "payments": {"payment", "history", "premium"},
    "endorsements": {"endorsement", "change"},
    "correspondence": {"correspondence", "document", "index"},
    "claim_links": {"claim"},
}

# --------------------------------------------------------------------------- code synonyms

# canonical code -> (exact normalised source codes, regex on the normalised code)
_CODE_SYNONYMS: dict[str, tuple[set[str], str | None]] = {
    # policy status
    "in_force": ({"A", "ACT", "ACTV", "ACTIVE", "IF", "INF", "INFORCE", "INFRC", "VIGENTE", "VIG", "ACTIVA", "ACTIVO",
                  "ENVIGOR", "CURRENT", "LIVE"}, None),
    "pending": ({"P", "PE", "PND", "PEND", "PENDING", "PENDIENTE", "APP", "APPLIED", "SUBMITTED"}, None),
    "lapsed": ({"L", "LA", "LAP", "LPS", "LAPSED", "LAPSE", "CADUCADA", "CADUCADO"}, None),
    "cancelled": ({"C", "CN", "CX", "CAN", "CNC", "CANC", "CNCL", "CANCEL", "CANCELLED", "CANCELED", "CANCELADA",
                   "CANCELADO", "ANULADA", "ANULADO", "ANU", "ANUL", "BAJA"}, None),
    "expired": ({"E", "EX", "EXP", "EXPD", "EXPIRED", "VENCIDA", "VENCIDO", "VEN"}, None),
    "surrendered": ({"SU", "SUR", "SURR", "SRR", "SURRENDERED", "RESCATADA", "RESCATADO"}, None),
    "paid_up": ({"PU", "PDUP", "PAIDUP", "RPU", "LIBERADA"}, None),
    "death_claim": ({"DC", "DTH", "DEATH", "DEATHCLAIM", "DCL", "DECEASED", "FALLECIDO"}, None),
    "non_renewed": ({"NR", "NRN", "NREN", "NONREN", "NONRENEWED", "NOTRENEWED", "NORENOVADA", "NORENOVADO"}, None),
    # line of business (and coverage type)
    "life": ({"L", "LIFE", "LIF", "VIDA", "WL", "UL", "VUL", "IUL", "TERM", "TL", "WHOLELIFE", "UNIVERSALLIFE",
              "TERMLIFE", "BASE", "FALLECIMIENTO"}, r"^(WL|UL|VUL|IUL|TERM|LIFE|VIDA)\d*[A-Z]?\d*$"),
    "annuity": ({"ANN", "ANNUITY", "ANNU", "RENTA", "RENTAS", "FA", "VA", "FIA"}, r"^ANN"),
    "homeowners": ({"HO", "HOME", "HOMEOWNERS", "HOMEOWNER", "HOGAR", "HOG", "DWELLING", "DP", "CONDO"},
                   r"^HO[1-8]$"),
    "personal_auto": ({"PA", "PAUTO", "PPA", "AUTO", "AUT", "AUTOS", "AUTOMOVIL", "AUTOMOVILES", "PERSONALAUTO",
                       "MOTOR", "CAR", "PAU"}, None),
    "commercial_auto": ({"CA", "CAUTO", "CAU", "COMMAUTO", "COMMERCIALAUTO", "BA", "FLOTA", "FLOTAS", "FLEET"}, None),
    "business_owners": ({"BOP", "BO", "BUSINESSOWNERS", "COMERCIO", "PYME", "PYMES"}, None),
    "general_liability": ({"GL", "CGL", "LIAB", "LIABILITY", "GENERALLIABILITY", "RC", "RCG", "RCGENERAL",
                           "RESPONSABILIDADCIVIL"}, None),
    "workers_comp": ({"WC", "WCOMP", "WORKCOMP", "WORKERSCOMP", "WORKERSCOMPENSATION", "ACCIDENTESTRABAJO", "WCSTAT",
                      "WCEL"}, r"^WC"),
    # premium frequency
    "annual": ({"A", "AN", "ANN", "ANNUAL", "Y", "YR", "YEARLY", "ANUAL", "12M"}, None),
    "semi_annual": ({"S", "SA", "SEMI", "SEMIANNUAL", "HALFYEARLY", "H", "SEMESTRAL", "6M"}, None),
    "quarterly": ({"Q", "QTR", "QTLY", "QUARTERLY", "TRIMESTRAL", "T", "3M"}, None),
    "monthly": ({"M", "MO", "MON", "MTH", "MTHLY", "MONTHLY", "MENSUAL", "1M"}, None),
    "single": ({"SP", "SINGLE", "SNG", "UNICA", "UNICO", "U", "ONCE"}, None),
    # party type
    "person": ({"P", "I", "IND", "INDIV", "INDIVIDUAL", "PER", "PERS", "PERSON", "NATURAL", "PF", "FISICA", "PERSONA"},
               None),
    "business": ({"B", "BUS", "BUSINESS", "C", "CO", "CORP", "CORPORATION", "COMPANY", "ORG", "ORGANIZATION", "ENT",
                  "ENTITY", "PJ", "JURIDICA", "EMPRESA", "COMMERCIAL"}, None),
    # coverage type
    "rider": ({"RIDER", "ADB", "ADD", "WOP", "WP", "CTR", "GIO", "GPO", "LTC", "TIR", "CHILD", "SPOUSE"}, None),
    "property": ({"DWELL", "DWELLING", "OTHSTR", "PERSPROP", "LOSSUSE", "BLDG", "BUILDING", "BPP", "CONTENTS", "BUSINC",
                  "PROP", "PROPERTY", "INCENDIO", "ROBO", "CONTENIDO", "CONTINENTE"}, None),
    "liability": ({"LIAB", "LIABILITY", "BI", "BIPD", "PD", "OCCUR", "GENAGG", "PRODAGG", "CSL", "RC", "RCOBLIG",
                   "RCVOL", "RCVOLUNTARIA", "RCOBLIGATORIA"}, None),
    "medical": ({"MED", "MEDPAY", "MEDICAL", "PIP", "GASTOSMEDICOS"}, None),
    "auto_physical_damage": ({"COLL", "COLLISION", "COMP", "COMPREHENSIVE", "OTC", "APD", "DANOSPROPIOS", "DANOS"},
                             None),
    "uninsured_motorist": ({"UM", "UIM", "UMBI", "UMPD", "UNINSURED"}, None),
    # party role
    "insured": ({"I", "INS", "INSD", "INSURED", "ASEGURADO"}, None),
    "owner": ({"O", "OW", "OWN", "OWNER", "TOMADOR"}, None),
    "beneficiary": ({"B", "BEN", "BENE", "BENEF", "BENEFICIARY", "BENEFICIARIO"}, None),
    "payor": ({"P", "PAY", "PYR", "PAYOR", "PAYER", "PAGADOR"}, None),
}

_CURRENCIES = {"USD", "EUR", "GBP", "CAD", "MXN", "JPY", "CHF", "AUD", "NZD", "SEK", "NOK", "DKK", "PLN", "CZK", "HUF",
               "BRL", "ARS", "CLP", "COP", "PEN", "INR", "CNY", "HKD", "SGD", "ZAR"}
_US_STATES = set(
    "AL AK AZ AR CA CO CT DE DC FL GA HI ID IL IN IA KS KY LA ME MD MA MI MN MS MO MT NE NV NH NJ NM NY NC ND OH OK "
    "OR PA RI SC SD TN TX UT VT VA WA WV WI WY PR VI GU AB BC MB NB NL NS ON PE QC SK".split()
)


# --------------------------------------------------------------------------- names -> tokens


def _ascii_fold(s: str) -> str:
    return "".join(ch for ch in unicodedata.normalize("NFKD", s) if not unicodedata.combining(ch))


_WORD_RE = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")


def _raw_tokens(name: str) -> list[str]:
    out: list[str] = []
    for part in re.split(r"[^A-Za-z0-9]+", _ascii_fold(name)):
        out += [t.lower() for t in _WORD_RE.findall(part)]
    return out


@lru_cache(maxsize=None)
def _concept_words() -> frozenset[str]:
    words: set[str] = set()
    for concepts in _GLOSSARY.values():
        words.update(concepts)
    for table in V1_TABLES.values():
        for col in table.columns:
            words.update(col.name.split("_"))
    return frozenset(words)


@lru_cache(maxsize=None)
def _expand(token: str) -> tuple[str, ...]:
    """One raw token -> concept words (glossary, compound split, plural), else the token itself."""
    if token.isdigit():
        return ()
    if token in _GLOSSARY:
        return tuple(_GLOSSARY[token])
    if token in _concept_words():
        return (token,)
    for stem in (token[:-1] if token.endswith("s") else None, token[:-2] if token.endswith("es") else None):
        if stem and (stem in _GLOSSARY or stem in _concept_words()):
            return _expand(stem)
    known = set(_GLOSSARY) | _concept_words()
    for i in range(len(token) - 2, 1, -1):  # compound: longest known head, known tail (POLNO, ANNPREM)
        head, tail = token[:i], token[i:]
        if head in known and (tail in known or (tail.endswith("s") and tail[:-1] in known)):
            return _expand(head) + _expand(tail)
    return (token,)


def tokens(name: str) -> list[str]:
    """The concept words of a column name: ``'POL-EFF-DT'`` -> ``['policy', 'effective', 'date']``."""
    out: list[str] = []
    for raw in _raw_tokens(name):
        for word in _expand(raw):
            if word not in out:
                out.append(word)
    return out


def _is_subsequence(short: str, long: str) -> bool:
    it = iter(long)
    return all(ch in it for ch in short)


@lru_cache(maxsize=None)
def _word_sim(a: str, b: str) -> float:
    """Similarity of two concept words (a from the source, b from the model)."""
    if a == b:
        return 1.0
    rel = _RELATED.get(frozenset((a, b)))
    if rel:
        return rel
    known = _concept_words()
    if a in known and b in known:
        return 0.0  # two different known concepts
    if len(a) >= 3 and a[0] == b[0] and _is_subsequence(a, b) and len(a) < len(b):
        return 0.75  # an abbreviation: DESC ~ description, PLCY ~ policy
    ratio = difflib.SequenceMatcher(None, a, b).ratio()
    return round(ratio * 0.9, 3) if ratio >= 0.8 else 0.0


def _weights(words: Iterable[str], context: set[str], generic: dict[str, float]) -> dict[str, float]:
    out: dict[str, float] = {}
    for w in words:
        weight = _CONTEXT_WEIGHT if w in context else generic.get(w, 1.0)
        out[w] = max(out.get(w, 0.0), weight)
    return out


def _name_similarity(src: dict[str, float], can: dict[str, float]) -> tuple[float, bool]:
    """Weighted Dice over a 1-1 alignment of concept words; also whether unmatched words conflict."""
    if not src or not can:
        return 0.0, False
    pairs = sorted(
        ((_word_sim(a, b), a, b) for a in src for b in can), key=lambda p: (-p[0], p[1], p[2])
    )
    used_a: set[str] = set()
    used_b: set[str] = set()
    matched = 0.0
    for sim, a, b in pairs:
        if sim <= 0 or a in used_a or b in used_b:
            continue
        used_a.add(a)
        used_b.add(b)
        matched += sim * (src[a] + can[b])
    score = matched / (sum(src.values()) + sum(can.values()))
    conflict = any(src[a] >= 0.9 for a in src if a not in used_a) and any(
        can[b] >= 0.9 for b in can if b not in used_b
    )
    return score, conflict


# --------------------------------------------------------------------------- value evidence

_DATE_FORMATS: list[tuple[str, list[str]]] = [
    # prefilter (RE2 on trimmed text), formats in order of preference
    (r"^\d{8}$", ["%Y%m%d", "%m%d%Y", "%d%m%Y"]),
    (r"^\d{4}-\d{1,2}-\d{1,2}$", ["%Y-%m-%d"]),
    (r"^\d{4}/\d{1,2}/\d{1,2}$", ["%Y/%m/%d"]),
    (r"^\d{4}\.\d{1,2}\.\d{1,2}$", ["%Y.%m.%d"]),
    (r"^\d{1,2}/\d{1,2}/\d{4}$", ["%m/%d/%Y", "%d/%m/%Y"]),
    (r"^\d{1,2}-\d{1,2}-\d{4}$", ["%d-%m-%Y", "%m-%d-%Y"]),
    (r"^\d{1,2}\.\d{1,2}\.\d{4}$", ["%d.%m.%Y", "%m.%d.%Y"]),
    (r"^\d{1,2}/\d{1,2}/\d{2}$", ["%m/%d/%y", "%d/%m/%y"]),
    (r"^\d{1,2}-[A-Za-z]{3}-\d{4}$", ["%d-%b-%Y"]),
    (r"^\d{1,2}[A-Za-z]{3}\d{4}$", ["%d%b%Y"]),
    (r"^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}$", ["%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S"]),
]
_FORMAT_WORDS = {"%Y": "YYYY", "%y": "YY", "%m": "MM", "%d": "DD", "%b": "Mon", "%H": "hh", "%M": "mm", "%S": "ss"}

_MONEY_US = (r"^(?:[-+]?\$?[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?-?|\(\$?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?\)"
             r"|[-+]?\$?\.\d+)$")
_MONEY_EU = r"^[-+]?(?:\d{1,3}(?:\.\d{3})+|\d+),\d{1,2}(?:\s?€)?$"
_NAME_CHARS = r"^\p{L}[\p{L} .,&'\-]*$"
_STATE = r"^[A-Z]{2}$"
_POSTAL = r"^(?:\d{5}(?:-?\d{4})?|[A-Z]{1,2}\d[A-Z\d]? ?\d[A-Z]{2}|[A-Z]\d[A-Z] ?\d[A-Z]\d)$"
_TAX = (r"^(?:\d{3}-\d{2}-\d{4}|\d{2}-\d{7}|\d{9}|\d{8}-?[A-Z]|[A-Z]-?\d{7}-?[A-Z0-9]|[A-Z]{2}\d{6}[A-D]|"
        r"\d{3}\.\d{3}\.\d{3}-\d{2})$")
_ID_LIKE = r"^[A-Za-z]{0,5}[-/]?\d{3,}(?:[-/.]\d+)*[A-Za-z]{0,2}$"


@dataclass
class _Evidence:
    """What the sampled values of one source column look like (never shown for personal data)."""

    name: str
    kind: str
    dtype: pa.DataType
    pii: bool
    sampled: bool = False
    category: str = "string"  # string | int | decimal | float | date | other
    rows: int = 0
    filled: int = 0
    distinct: int = 0
    values: list[tuple[str, int]] = field(default_factory=list)  # trimmed distinct values, most common first
    date_format: str | None = None
    date_share: float = 0.0
    date_ambiguous: bool = False
    date_loose: float = 0.0  # share of rows that are dates only when zero padding / case is ignored
    money_share: float = 0.0
    money_scale: int | None = None
    money_style: str = ""
    shares: dict[str, float] = field(default_factory=dict)
    avg_len: float = 0.0
    max_abs: float | None = None
    padded: bool = False
    top_pattern: str = ""
    _code_match: dict = field(default_factory=dict)

    @property
    def distinct_ratio(self) -> float:
        return self.distinct / self.filled if self.filled else 0.0

    def share(self, key: str) -> float:
        return self.shares.get(key, 0.0)

    @property
    def code_like(self) -> bool:
        if not self.sampled or self.filled == 0 or self.category not in ("string", "int"):
            return False
        if self.category == "int" and self.date_share >= 0.5:
            return False
        d = self.distinct
        return d <= 60 and self.avg_len <= 20 and (d <= 12 or d / self.filled <= 0.3)

    def code_match(self, codes: tuple[str, ...]) -> tuple[float, dict[str, str]]:
        """Share of rows whose value maps onto one of ``codes``, and the proposed table (value -> code or TODO)."""
        if codes not in self._code_match:
            table: dict[str, str] = {}
            hit = 0
            for value, count in self.values:
                code = _match_code(value, codes)
                table[value] = code or "TODO"
                hit += count if code else 0
            self._code_match[codes] = (hit / self.filled if self.filled else 0.0, table)
        return self._code_match[codes]


def _norm_code(value: str) -> str:
    return re.sub(r"[^A-Z0-9]", "", _ascii_fold(value).upper())


@lru_cache(maxsize=65536)
def _match_code(value: str, codes: tuple[str, ...]) -> str | None:
    v = _norm_code(value)
    if not v:
        return None
    found = []
    for code in codes:
        exact, pattern = _CODE_SYNONYMS.get(code, (set(), None))
        if v == _norm_code(code) or v in exact or (pattern and re.search(pattern, v)):
            found.append(code)
    if len(found) == 1:
        return found[0]
    if found:
        return None  # ambiguous within this code list
    close = difflib.get_close_matches(v, [_norm_code(c) for c in codes], n=1, cutoff=0.85)
    if close:
        return next(c for c in codes if _norm_code(c) == close[0])
    return None


def _category(t: pa.DataType) -> str:
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "string"
    if pa.types.is_integer(t):
        return "int"
    if pa.types.is_decimal(t):
        return "decimal"
    if pa.types.is_floating(t):
        return "float"
    if pa.types.is_date(t) or pa.types.is_timestamp(t):
        return "date"
    return "other"


def _evidence(name: str, kind: str, dtype: pa.DataType, column: pa.ChunkedArray | pa.Array | None,
              pii: bool) -> _Evidence:
    ev = _Evidence(name=name, kind=kind, dtype=dtype, pii=pii, category=_category(dtype))
    if column is None:
        return ev
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    ev.sampled = True
    ev.rows = len(column)
    if ev.category == "decimal":
        ev.money_scale = dtype.scale
    if ev.category in ("other", "float", "date"):
        ev.filled = len(column) - column.null_count
        if ev.category == "float" and ev.filled:
            ev.max_abs = float(pc.max(pc.abs(column)).as_py() or 0.0)
        return ev
    text = column if ev.category == "string" else pc.cast(column, pa.string())
    vc = pc.value_counts(text.drop_null())
    raw = vc.field("values")
    counts = np.asarray(vc.field("counts").to_numpy(zero_copy_only=False), dtype=np.int64)
    trimmed = pc.utf8_trim_whitespace(raw)
    keep = np.asarray(pc.not_equal(trimmed, "").to_numpy(zero_copy_only=False), dtype=bool)
    ev.padded = bool(pc.any(pc.not_equal(raw, trimmed)).as_py() or False)
    trimmed = trimmed.filter(pa.array(keep))
    counts = counts[keep]
    ev.filled = int(counts.sum())
    if ev.filled == 0:
        return ev
    agg: Counter = Counter()
    for value, count in zip(trimmed.to_pylist(), counts.tolist()):
        agg[value] += count
    ev.values = agg.most_common()
    ev.distinct = len(agg)
    lengths = np.asarray(pc.utf8_length(trimmed).to_numpy(zero_copy_only=False), dtype=np.float64)
    ev.avg_len = float((lengths * counts).sum() / ev.filled)
    shapes = Counter()
    for shape, count in zip(value_patterns(trimmed).to_pylist(), counts.tolist()):
        shapes[shape] += count
    ev.top_pattern = shapes.most_common(1)[0][0]

    def share(pattern: str) -> float:
        hit = np.asarray(pc.fill_null(pc.match_substring_regex(trimmed, pattern=pattern), False)
                         .to_numpy(zero_copy_only=False), dtype=bool)
        return float(counts[hit].sum() / ev.filled)

    s = ev.shares
    s["alpha"] = share(_NAME_CHARS)
    multi = np.asarray(pc.fill_null(pc.and_(pc.match_substring_regex(trimmed, pattern=_NAME_CHARS),
                                            pc.match_substring_regex(trimmed, pattern=r"[ ,]\p{L}")), False)
                       .to_numpy(zero_copy_only=False), dtype=bool)
    s["multiword"] = float(counts[multi].sum() / ev.filled)
    s["state"] = share(_STATE)
    s["state_ci"] = share(r"^[A-Za-z]{2}$")
    s["us_state"] = sum(c for v, c in ev.values if v in _US_STATES) / ev.filled
    s["postal"] = share(_POSTAL)
    s["tax_id"] = share(_TAX)
    s["digits"] = share(r"^\d+$")
    s["id_like"] = share(_ID_LIKE)
    s["currency"] = sum(c for v, c in ev.values if v.upper() in _CURRENCIES) / ev.filled
    has = [np.asarray(pc.fill_null(pc.match_substring_regex(trimmed, pattern=p), False).to_numpy(zero_copy_only=False),
                      dtype=bool) for p in (r"\d", r"\p{L}{2}", r" ")]
    s["address"] = float(counts[has[0] & has[1] & has[2]].sum() / ev.filled)
    s["lower"] = share(r"\p{Ll}")
    if ev.category in ("int", "decimal"):
        ev.max_abs = float(pc.max(pc.abs(column.drop_null())).as_py() or 0) if ev.filled else None
    _date_evidence(ev, trimmed, counts)
    _money_evidence(ev, trimmed, counts, share)
    return ev


def _date_evidence(ev: _Evidence, values: pa.Array, counts: np.ndarray) -> None:
    if ev.category == "decimal":
        return
    best: tuple[float, str, bool, float] = (0.0, "", False, 0.0)
    for prefilter, formats in _DATE_FORMATS:
        mask = np.asarray(pc.fill_null(pc.match_substring_regex(values, pattern=prefilter), False)
                          .to_numpy(zero_copy_only=False), dtype=bool)
        if counts[mask].sum() < 0.3 * ev.filled:
            continue
        cand = values.filter(pa.array(mask))
        ccounts = counts[mask]
        norm_in = pc.utf8_upper(pc.replace_substring_regex(cand, pattern=r"\b0(\d)", replacement=r"\1"))
        results = []
        for fmt in formats:
            parsed = pc.strptime(cand, format=fmt, unit="s", error_is_null=True)
            back = pc.strftime(parsed, format=fmt)
            back = pc.utf8_upper(pc.replace_substring_regex(back, pattern=r"\b0(\d)", replacement=r"\1"))
            years = pc.year(parsed)
            ok = pc.and_(pc.equal(back, norm_in), pc.and_(pc.greater_equal(years, 1850), pc.less_equal(years, 2150)))
            ok_np = np.asarray(pc.fill_null(ok, False).to_numpy(zero_copy_only=False), dtype=bool)
            exact = np.asarray(pc.fill_null(pc.equal(pc.strftime(parsed, format=fmt), cand), False)
                               .to_numpy(zero_copy_only=False), dtype=bool)
            results.append((float(ccounts[ok_np].sum() / ev.filled), fmt,
                            float(ccounts[ok_np & ~exact].sum() / ev.filled)))
        results.sort(key=lambda r: -r[0])  # stable: ties keep the preferred order
        top_share, top_fmt, loose = results[0]
        ambiguous = len(results) > 1 and top_share > 0 and results[1][0] >= top_share - 1e-9
        if top_share > best[0]:
            best = (top_share, top_fmt, ambiguous, loose)
    ev.date_share, ev.date_format, ev.date_ambiguous, ev.date_loose = best[0], best[1] or None, best[2], best[3]


def _money_evidence(ev: _Evidence, values: pa.Array, counts: np.ndarray, share) -> None:
    if ev.category == "decimal":
        ev.money_share, ev.money_style = 1.0, f"decimal({ev.dtype.precision},{ev.dtype.scale})"
        return
    if ev.category != "string":
        return
    us = share(_MONEY_US)
    eu = share(_MONEY_EU)
    digits = ev.share("digits")
    formatted = share(r"[.$,()]")
    if eu > us and eu >= 0.5:
        ev.money_share, ev.money_style = eu, "text 9.999,99 with a decimal comma"
        ev.money_scale = _max_decimals(ev.values, ",")
    elif us >= 0.5 and formatted > 0.2:
        ev.money_share = us
        ev.money_style = "text $9,999.99" if share(r"[$,()]") > 0.05 else "text 9999.99"
        ev.money_scale = _max_decimals(ev.values, ".")
    elif digits >= 0.5:
        ev.money_share, ev.money_style = digits * 0.4, "whole numbers"
        ev.money_scale = 0


def _max_decimals(values: list[tuple[str, int]], sep: str) -> int:
    best = 0
    for v, _ in values[:2000]:
        if sep in v:
            frac = re.sub(r"\D", "", v.rsplit(sep, 1)[1])
            best = max(best, len(frac))
    return best


# --------------------------------------------------------------------------- canonical expectations


def _expected_kind(table: Table, col: Column) -> str:
    n = col.name
    t = col.type
    if n == "source_system":
        return "const"
    if pa.types.is_date(t):
        return "date"
    if pa.types.is_decimal(t):
        return "percent" if "percent" in n else "money"
    if pa.types.is_integer(t):
        return "integer"
    if col.codes:
        return "code"
    if n == "policy_id" or n.endswith("_number") or (n.endswith("_id") and "tax" not in n):
        return "id"
    if "tax_id" in n:
        return "tax_id"
    if n.endswith("name") or n == "name":
        return "name"
    if n.endswith("postal_code"):
        return "postal"
    if n.endswith("state"):
        return "state"
    if n.endswith("address"):
        return "address"
    if n.endswith("city"):
        return "city"
    if n == "currency":
        return "currency"
    if n == "description":
        return "text"
    return "codeish"


def _fmt_words(fmt: str) -> str:
    out = fmt
    for k, v in _FORMAT_WORDS.items():
        out = out.replace(k, v)
    return out


def _pct(x: float) -> str:
    return f"{x * 100:.0f}%"


@dataclass
class _Fit:
    score: float  # how well the values fit, 0..1
    distinct: float  # how much the values alone say (0..0.6)
    phrase: str  # what the values look like, for the reason (no values)


def _value_fit(expected: str, ev: _Evidence, col: Column, key_overlap: float | None) -> _Fit | None:
    """How well a source column's values fit a canonical column; None without a sample."""
    if not ev.sampled:
        return None
    rows = f"{ev.rows:,} sampled rows"
    if ev.filled == 0:
        return _Fit(0.3, 0.0, f"empty in all {rows}")
    cat = ev.category
    dateish = ev.date_share >= 0.8
    if expected == "date":
        if cat == "date":
            return _Fit(1.0, 0.25, f"date values in {rows}")
        if ev.date_share >= 0.3:
            amb = " (day/month order ambiguous)" if ev.date_ambiguous else ""
            return _Fit(ev.date_share, 0.25, f"values look like dates {_fmt_words(ev.date_format or '')}{amb} "
                                             f"in {_pct(ev.date_share)} of {rows}")
        return _Fit(0.0, 0.0, f"values do not look like dates ({_pct(ev.date_share)} of {rows})")
    if expected == "money":
        if dateish:
            return _Fit(0.0, 0.0, "values look like dates, not amounts")
        if cat == "decimal":
            sc = ev.dtype.scale
            return _Fit(1.0 if sc == 2 else 0.85, 0.1, f"{ev.money_style} amounts (scale {sc}) in {rows}")
        if cat == "float":
            return _Fit(0.7, 0.05, f"floating-point numbers in {rows}")
        if cat == "int":
            return _Fit(0.35, 0.0, f"whole numbers in {rows}")
        if ev.money_share >= 0.3:
            return _Fit(ev.money_share, 0.1,
                        f"values look like amounts ({ev.money_style}, scale {ev.money_scale}) in "
                        f"{_pct(ev.money_share)} of {rows}")
        return _Fit(0.0, 0.0, f"values do not look like amounts ({rows})")
    if expected == "percent":
        if cat in ("decimal", "int", "float"):
            ok = ev.max_abs is not None and ev.max_abs <= 100
            return _Fit(0.9 if ok else 0.3, 0.05, f"numbers {'up to 100 ' if ok else ''}in {rows}")
        return _Fit(0.0, 0.0, "values are not numbers")
    if expected == "integer":
        if dateish:
            return _Fit(0.05, 0.0, "values look like dates")
        if cat == "int":
            small = ev.max_abs is not None and ev.max_abs <= 9999
            return _Fit(1.0 if small else 0.7, 0.1 if small else 0.0,
                        f"{'small ' if small else ''}whole numbers in {rows}")
        if cat == "decimal" and ev.dtype.scale == 0:
            return _Fit(0.7, 0.0, f"whole numbers in {rows}")
        if cat == "string" and ev.share("digits") >= 0.9:
            return _Fit(0.6, 0.0, f"digits in {_pct(ev.share('digits'))} of {rows}")
        return _Fit(0.0, 0.0, "values are not whole numbers")
    if cat in ("decimal", "float"):
        return _Fit(0.05, 0.0, "values are amounts")
    if expected == "const":
        return _Fit(0.0, 0.0, "")
    if expected == "code":
        if ev.code_like:
            match, _ = ev.code_match(col.codes or ())
            return _Fit(0.35 + 0.65 * match, 0.45 * match,
                        f"{ev.distinct} distinct codes; {_pct(match)} of {rows} match a canonical code")
        return _Fit(0.15, 0.0, f"{ev.distinct:,} distinct values in {rows}: not a short code list")
    if dateish and expected != "tax_id":
        return _Fit(0.05, 0.0, "values look like dates")
    if expected == "id":
        d = ev.distinct_ratio
        base = 0.5 + 0.25 * ev.share("id_like") + (0.25 if d >= 0.9 else 0.0)
        shape = f" ({ev.top_pattern})" if ev.top_pattern and not ev.pii else ""
        phrase = f"{_pct(d)} distinct, {_pct(ev.share('id_like'))} shaped like ids{shape} in {rows}"
        dist = 0.2 * ev.share("id_like")
        if key_overlap is not None and key_overlap >= 0.3:
            base = max(base, 0.6 + 0.4 * key_overlap)
            dist = 0.3 + 0.3 * key_overlap
            phrase = f"values match the policies file's key in {_pct(key_overlap)} of {rows}"
        return _Fit(min(base, 1.0), dist, phrase)
    if expected == "tax_id":
        t = ev.share("tax_id")
        return _Fit(0.2 + 0.8 * t, 0.5 * t, f"values shaped like tax ids in {_pct(t)} of {rows}")
    if expected == "name":
        a, m = ev.share("alpha"), ev.share("multiword")
        return _Fit(0.3 + 0.7 * (0.5 * a + 0.5 * m), 0.4 * m,
                    f"values look like names (letters, spaces, commas) in {_pct(a)} of {rows}")
    if expected == "postal":
        p = ev.share("postal")
        return _Fit(0.2 + 0.8 * p, 0.45 * p, f"values shaped like postal codes in {_pct(p)} of {rows}")
    if expected == "state":
        st, us = ev.share("state"), ev.share("us_state")
        if st >= 0.5:
            return _Fit(0.5 + 0.3 * st + 0.2 * us, 0.3 * st + 0.2 * us,
                        f"two-letter upper-case codes in {_pct(st)} of {rows}")
        return _Fit(0.3, 0.0, f"values are not two-letter codes ({_pct(st)} of {rows})")
    if expected == "address":
        a = ev.share("address")
        return _Fit(0.3 + 0.7 * a, 0.4 * a, f"values look like street addresses in {_pct(a)} of {rows}")
    if expected == "city":
        a = ev.share("alpha")
        return _Fit(0.2 + 0.6 * a + (0.2 if ev.distinct_ratio < 0.8 else 0.0), 0.05,
                    f"words in {_pct(a)} of {rows}")
    if expected == "currency":
        c = ev.share("currency")
        return _Fit(0.3 + 0.7 * c, 0.6 * c, f"currency codes in {_pct(c)} of {rows}")
    if expected == "text":
        if cat != "string":
            return _Fit(0.1, 0.0, "values are not text")
        return _Fit(0.5 + 0.5 * min(1.0, ev.avg_len / 20), 0.0, f"text, {ev.avg_len:.0f} characters on average")
    # codeish: a short code or identifier kept as text
    if cat == "int":
        return _Fit(0.5, 0.0, f"numbers, {ev.distinct:,} distinct in {rows}")
    if ev.code_like:
        return _Fit(0.9, 0.0, f"{ev.distinct} distinct short codes in {rows}")
    if ev.share("id_like") >= 0.8:
        return _Fit(0.8, 0.0, f"code-shaped values, {ev.distinct:,} distinct in {rows}")
    if ev.avg_len <= 12:
        return _Fit(0.6, 0.0, f"short text, {ev.distinct:,} distinct in {rows}")
    return _Fit(0.3, 0.0, f"long text ({ev.avg_len:.0f} characters on average)")


# --------------------------------------------------------------------------- results


@dataclass
class FieldSuggestion:
    """A proposed mapping of one canonical column."""

    table: str
    column: str
    expr: str
    confidence: float
    reason: str
    source_columns: tuple[str, ...] = ()
    review: bool = False
    code_table: str | None = None

    @property
    def live(self) -> bool:
        """Written as a live field (else commented out in the draft)."""
        return self.confidence >= LIVE

    def entry(self) -> dict:
        out = {"expr": self.expr, "confidence": self.confidence, "reason": self.reason}
        if self.review:
            out["review"] = True
        return out


@dataclass
class TableSuggestion:
    table: str
    kind: str  # source file kind it is mapped from
    confidence: float
    reason: str
    fields: dict[str, FieldSuggestion] = field(default_factory=dict)


@dataclass
class Suggestion:
    """A draft mapping of a source onto the canonical model; ``to_yaml()`` writes the draft file."""

    source: str
    tables: dict[str, TableSuggestion]
    code_tables: dict[str, dict[str, str]]  # of live fields
    unmapped_required: list[str]
    unused_source_columns: dict[str, list[str]]  # file kind -> source columns no live field uses
    sampled_rows: dict[str, int] = field(default_factory=dict)
    proposed_code_tables: dict[str, dict[str, str]] = field(default_factory=dict)  # of commented-out fields
    model_version: str = V1

    def field(self, table: str, column: str) -> FieldSuggestion | None:
        t = self.tables.get(table)
        return t.fields.get(column) if t else None

    def source_columns(self, table: str, column: str, *, live_only: bool = True) -> tuple[str, ...]:
        """The source column(s) a canonical column is mapped from (empty if none)."""
        f = self.field(table, column)
        if f is None or (live_only and not f.live):
            return ()
        return f.source_columns

    def to_dict(self) -> dict:
        """The draft as ``yaml.safe_load(to_yaml())`` reads it (commented-out fields left out)."""
        return yaml.safe_load(self.to_yaml())

    def to_yaml(self) -> str:
        sampled = ", ".join(f"{n:,} {k}" for k, n in self.sampled_rows.items() if n)
        lines = [
            f"# Draft mapping for source {self.source}, suggested from column names and "
            + (f"sampled rows ({sampled})." if sampled else "no sampled rows."),
            "# A human must review it before use: fields marked review: true, commented-out proposals",
            "# (confidence below 0.5), TODO codes and unmapped_required.",
            f"mapping: {_q(self.source + '_draft')}",
            "version: 0.1.0",
            f"source: {_q(self.source)}",
            f"model_version: {self.model_version}",
            "draft: true",
        ]
        if not self.tables:
            lines.append("tables: {}")
        else:
            lines.append("tables:")
        for name, ts in self.tables.items():
            lines.append(f"  {name}:")
            lines.append(f"    from: {_q(ts.kind)}  # {_comment(ts.reason)}")
            live = [f for f in ts.fields.values() if f.live]
            lines.append("    fields:" if live else "    fields: {}")
            for f in ts.fields.values():
                entry = _flow(f.entry())
                if f.live:
                    lines.append(f"      {f.column}: {entry}")
                else:
                    lines.append(f"      # {f.column}: {entry}")
        lines.append("code_tables:" if self.code_tables else "code_tables: {}")
        for name, table in self.code_tables.items():
            lines.append(f"  {name}: {_flow(table)}")
        for name, table in self.proposed_code_tables.items():
            if table:
                lines.append(f"  # {name}: {_flow(table)}")
        lines.append(f"unmapped_required: [{', '.join(_q(u) for u in self.unmapped_required)}]")
        if not self.unused_source_columns:
            lines.append("unused_source_columns: {}")
        else:
            lines.append("unused_source_columns:")
            for kind, cols in self.unused_source_columns.items():
                lines.append(f"  {_q(kind)}: [{', '.join(_q(c) for c in cols)}]")
        return "\n".join(lines) + "\n"


_PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")


def _q(value) -> str:
    """A YAML scalar: plain when it reads back as the same string, else double-quoted."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    s = str(value)
    if _PLAIN.match(s):
        try:
            if yaml.safe_load(s) == s:
                return s
        except yaml.YAMLError:
            pass
    return json.dumps(s, ensure_ascii=False)


def _flow(d: dict) -> str:
    parts = []
    for k, v in d.items():
        if isinstance(v, str) and k in ("expr", "reason"):
            parts.append(f"{_q(k)}: {json.dumps(v, ensure_ascii=False)}")
        else:
            parts.append(f"{_q(k)}: {_q(v)}")
    return "{" + ", ".join(parts) + "}"


def _comment(text: str) -> str:
    return text.replace("\n", " ")


# --------------------------------------------------------------------------- expressions


def _lit(s: str) -> str:
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _col(name: str) -> str:
    return f"col({_lit(name)})"


def _text_expr(ev: _Evidence, *, upper: bool = False) -> str:
    x = _col(ev.name)
    if ev.padded:
        x = f"trim({x})"
    if upper:
        x = f"upper({x})"
    return x


# --------------------------------------------------------------------------- scoring


@dataclass
class _Candidate:
    column: Column
    sources: tuple[str, ...]
    confidence: float
    name_score: float
    fit: _Fit | None
    expr: str
    reason: str
    review: bool = False
    code_table: dict[str, str] | None = None
    notes: list[str] = field(default_factory=list)
    code_name: str | None = None


class _KindView:
    """The columns of one source file kind with their evidence and name tokens."""

    def __init__(self, kind: str, columns: list[tuple[str, pa.DataType]], table: pa.Table | None, pii: set[str]):
        self.kind = kind
        self.rows = table.num_rows if table is not None else 0
        self.evidence: dict[str, _Evidence] = {}
        names = table.column_names if table is not None else []
        for name, dtype in columns:
            if name == "record_no":
                continue
            data = table.column(name) if table is not None and table.num_rows and name in names else None
            self.evidence[name] = _evidence(name, kind, dtype, data, name in pii)
        self.columns = list(self.evidence)
        self.prefix = self._record_prefix()
        self.tokens = {c: tokens(c) for c in self.columns}
        # concept words without the record prefix (COV- in COV_EFF_DATE), and whether it was there
        self.body: dict[str, tuple[list[str], bool]] = {}
        for c in self.columns:
            raw = _raw_tokens(c)
            if self.prefix and len(raw) > 1 and raw[0] == self.prefix:
                self.body[c] = (tokens("_".join(raw[1:])), True)
            else:
                self.body[c] = (self.tokens[c], False)
        self.repeats = self._repeating_groups()

    def _record_prefix(self) -> str | None:
        """A first word most columns share (COV- in a coverage file): a record prefix, not a meaning."""
        firsts = Counter(_raw_tokens(c)[0] for c in self.columns if _raw_tokens(c))
        if not firsts or len(self.columns) < 3:
            return None
        word, n = firsts.most_common(1)[0]
        return word if n >= 0.5 * len(self.columns) and n >= 3 and not word.isdigit() else None

    def _repeating_groups(self) -> dict[str, str]:
        """Columns that are one occurrence of a repeating group: name -> 'STEM_1..n'."""
        stems: dict[tuple, list[str]] = {}
        for c in self.columns:
            raw = _raw_tokens(c)
            if raw and raw[-1].isdigit():
                stems.setdefault(tuple(raw[:-1]), []).append(c)
        out = {}
        for stem, cols in stems.items():
            if len(cols) >= 2:
                label = f"{cols[0]}..{_raw_tokens(cols[-1])[-1]}"
                for c in cols:
                    out[c] = label
        return out

    def weighted_words(self, words: list[str], prefixed: bool, table: str) -> dict[str, float]:
        """Weights of a column's concept words in the context of a canonical table."""
        context = _ENTITIES.get(table, set())
        if prefixed:  # the record prefix stands for the table's own entity
            words = [_ENTITY.get(table, "record")] + [w for w in words if w != _ENTITY.get(table)]
        if words and all(w in context for w in words):  # 'Garantia' in a coverage file: the coverage's code
            words = list(words) + ["code"]
        return _weights(words, context, _GENERIC)

    def weighted_tokens(self, column: str, table: str) -> dict[str, float]:
        words, prefixed = self.body[column]
        return self.weighted_words(words, prefixed, table)


class _Scorer:
    def __init__(self, source: SourceConfig, views: dict[str, _KindView], key_kind: str | None):
        self.source = source
        self.views = views
        self.key_kind = key_kind
        key_ev = views[key_kind].evidence.get(source.key) if key_kind else None
        self.key_values: set[str] = {v for v, _ in key_ev.values} if key_ev and key_ev.sampled else set()

    def key_overlap(self, ev: _Evidence) -> float | None:
        if not self.key_values or not ev.sampled or ev.filled == 0:
            return None
        hit = sum(c for v, c in ev.values if v in self.key_values)
        return hit / ev.filled

    def candidates(self, table: Table, view: _KindView) -> list[_Candidate]:
        context = _ENTITIES.get(table.name, set())
        out: list[_Candidate] = []
        for col in table.columns:
            expected = _expected_kind(table, col)
            if expected == "const":
                out.append(_Candidate(col, (), 0.95, 1.0, None, f"lit({_lit(self.source.name)})",
                                      "constant: the name of the source system"))
                continue
            generic = dict(_GENERIC)
            if table.name != "policies":
                generic.pop("insured", None)
            can = _weights(tokens(col.name), context, generic)
            for name in view.columns:
                cand = self._score(table, col, expected, can, view, name)
                if cand is not None:
                    out.append(cand)
            if expected == "name":
                out += self._name_pairs(table, col, can, view)
        return out

    def _score(self, table: Table, col: Column, expected: str, can: dict[str, float], view: _KindView,
               name: str) -> _Candidate | None:
        ev = view.evidence[name]
        src = view.weighted_tokens(name, table.name)
        name_score, conflict = _name_similarity(src, can)
        whole = _whole_ratio(name, col.name)
        if whole >= 0.8:
            name_score = max(name_score, 0.9 * whole)
        if conflict:
            name_score *= 0.85
        is_key = (col.name == "policy_id" and view.kind == self.key_kind and name == self.source.key)
        overlap = self.key_overlap(ev) if expected == "id" and col.name == "policy_id" and not is_key else None
        fit = _value_fit(expected, ev, col, overlap)
        if fit is None:
            conf = 0.8 * name_score
        else:
            conf = name_score * (0.6 + 0.4 * fit.score) + (1 - name_score) * fit.distinct * fit.score
        notes: list[str] = []
        if fit is not None and fit.score < 0.12:
            conf = min(conf, VETO_CAP)
        if is_key:
            conf = max(conf, 0.98)
        if name in view.repeats and conf > REPEAT_CAP:
            conf = REPEAT_CAP
            notes.append(f"one occurrence of the repeating group {view.repeats[name]}")
        if conf < PROPOSE:
            return None
        parts = []
        if is_key:
            parts.append(f"the source's configured key column '{name}'")
        if name_score >= 0.3:
            parts.append(f"name '{name}' ~ '{col.name}' ({name_score:.2f})")
        elif not is_key:
            parts.append(f"no name match for '{name}'")
        if fit is None:
            parts.append("no sampled values")
        elif fit.phrase:
            parts.append(fit.phrase)
        cand = _Candidate(col, (name,), round(min(conf, 1.0), 2), name_score, fit, "", "", notes=notes)
        self._expression(cand, table, expected, ev)
        cand.reason = "; ".join(parts + cand.notes)
        return cand

    def _expression(self, cand: _Candidate, table: Table, expected: str, ev: _Evidence) -> None:
        col = cand.column
        if expected == "date":
            if ev.category == "date" or not ev.date_format:
                cand.expr = _col(ev.name) if ev.category == "date" else f"date({_text_expr(ev)}, '%Y%m%d')"
                if ev.category != "date":
                    cand.review = True
                    cand.notes.append("date format not recognised: check it")
            else:
                cand.expr = f"date({_text_expr(ev)}, {_lit(ev.date_format)})"
                if ev.date_ambiguous:
                    cand.review = True
                if ev.date_loose > 0:
                    cand.review = True
                    cand.notes.append(f"{_pct(ev.date_loose)} of the dates are not zero-padded or differ in case "
                                      f"from the format: check date() reads them")
        elif expected in ("money", "percent"):
            cand.expr = f"money({_text_expr(ev)})" if expected == "money" else _text_expr(ev)
            if "decimal comma" in ev.money_style:
                cand.review = True
                cand.notes.append("amounts use a decimal comma: check money() reads them")
        elif expected == "code":
            name = _code_table_name(table, col)
            cand.expr = f"code({_text_expr(ev)}, {_lit(name)})"
            cand.code_name = name
            cand.code_table = self._code_table(ev, col, cand)
        elif expected == "state":
            cand.expr = _text_expr(ev, upper=ev.share("state_ci") >= 0.5 and ev.share("lower") > 0)
            if ev.sampled and ev.share("state_ci") < 0.5:
                cand.review = True
        else:
            cand.expr = _text_expr(ev)

    def _code_table(self, ev: _Evidence, col: Column, cand: _Candidate) -> dict[str, str]:
        if ev.pii or col.pii:
            cand.review = True
            cand.notes.append("personal data: code values withheld, fill the code table by hand")
            return {}
        if not ev.sampled:
            cand.review = True
            return {}
        match, table = ev.code_match(col.codes or ())
        if len(table) > 60:
            cand.review = True
            cand.notes.append(f"{len(table)} distinct values: too many for a code table")
            return {}
        todo = sum(1 for v in table.values() if v == "TODO")
        if todo:
            cand.review = True
            cand.notes.append(f"{todo} of {len(table)} codes left TODO")
        return dict(sorted(table.items()))

    def _name_pairs(self, table: Table, col: Column, can: dict[str, float], view: _KindView) -> list[_Candidate]:
        """First + last name columns of the same party -> concat(first, ' ', last)."""
        firsts, lasts = {}, {}
        prefixed_of = {}
        for c in view.columns:
            words, prefixed = view.body[c]
            if "name" not in words and not ({"first", "last"} & set(words)):
                continue
            rest = tuple(w for w in words if w not in ("first", "last", "name", "middle"))
            prefixed_of[rest] = prefixed
            if "first" in words:
                firsts[rest] = c
            elif "last" in words:
                lasts[rest] = c
        out = []
        for rest, first in firsts.items():
            last = lasts.get(rest)
            if not last or first in view.repeats or last in view.repeats:
                continue
            src = view.weighted_words(list(rest) + ["name"], prefixed_of[rest], table.name)
            name_score, conflict = _name_similarity(src, can)
            if conflict:
                name_score *= 0.85
            fits = [_value_fit("name", view.evidence[c], col, None) for c in (first, last)]
            if fits[0] is None:
                conf, phrase = 0.8 * name_score, "no sampled values"
            else:
                alpha = min(view.evidence[c].share("alpha") for c in (first, last))
                score = 0.4 + 0.6 * alpha
                conf = name_score * (0.6 + 0.4 * score)
                phrase = (f"both hold words (letters) in at least {_pct(alpha)} of "
                          f"{view.evidence[first].rows:,} sampled rows")
            if conf < PROPOSE:
                continue
            expr = f"concat({_text_expr(view.evidence[first])}, ' ', {_text_expr(view.evidence[last])})"
            reason = (f"first + last name: '{first}' and '{last}' ~ '{col.name}' ({name_score:.2f}); {phrase}")
            out.append(_Candidate(col, (first, last), round(min(conf + 0.02, 1.0), 2), name_score, None, expr, reason))
        return out

    def assign(self, table: Table, view: _KindView) -> tuple[dict[str, _Candidate], float]:
        """Greedy one-to-one assignment, best first; then derived codes from already used columns."""
        cands = sorted(self.candidates(table, view),
                       key=lambda c: (-c.confidence, -c.name_score, table.names.index(c.column.name), c.sources))
        chosen: dict[str, _Candidate] = {}
        used: set[str] = set()
        for c in cands:
            if c.column.name in chosen or any(s in used for s in c.sources):
                continue
            chosen[c.column.name] = c
            used.update(c.sources)
        self._derived_codes(table, view, chosen, used)
        # how much of the table this kind fills (policy_id and source_system fit every kind)
        scored = [col for col in table.columns if col.name not in ("policy_id", "source_system")]
        total = sum(2.0 if col.required else 1.0 for col in scored)
        got = sum((2.0 if col.required else 1.0) * chosen[col.name].confidence for col in scored
                  if col.name in chosen and chosen[col.name].confidence >= LIVE)
        coverage = got / total if total else 0.0
        return {n: chosen[n] for n in table.names if n in chosen}, coverage

    def _derived_codes(self, table: Table, view: _KindView, chosen: dict[str, _Candidate], used: set[str]) -> None:
        for col in table.columns:
            if not col.codes or (col.name in chosen and chosen[col.name].confidence >= LIVE):
                continue
            best: _Candidate | None = None
            for name in view.columns:
                ev = view.evidence[name]
                if name not in used or not ev.code_like or ev.pii:
                    continue
                match, _ = ev.code_match(col.codes)
                if match < 0.5:
                    continue
                owner = next((k for k, c in chosen.items() if name in c.sources), "?")
                conf = round(0.3 + 0.45 * match, 2)
                fit = _Fit(0.35 + 0.65 * match, 0.45 * match, "")
                reason = (f"derived from '{name}' (mapped to {owner}): {ev.distinct} distinct codes, {_pct(match)} of "
                          f"{ev.rows:,} sampled rows map onto {col.name} codes")
                cand = _Candidate(col, (name,), conf, 0.0, fit, "", reason, review=True)
                self._expression(cand, table, "code", ev)
                if cand.notes:
                    cand.reason += "; " + "; ".join(cand.notes)
                if best is None or cand.confidence > best.confidence:
                    best = cand
            if best is not None and (col.name not in chosen or best.confidence > chosen[col.name].confidence):
                if col.name in chosen:
                    for s in chosen[col.name].sources:
                        used.discard(s)
                chosen[col.name] = best


@lru_cache(maxsize=None)
def _whole_ratio(source_name: str, canonical_name: str) -> float:
    a = re.sub(r"[^a-z0-9]", "", _ascii_fold(source_name).lower())
    return difflib.SequenceMatcher(None, a, canonical_name.replace("_", "")).ratio()


def _code_table_name(table: Table, col: Column) -> str:
    if col.name == "status":
        return "policy_status" if table.name == "policies" else f"{table.name.rstrip('s')}_status"
    if col.name == "role":
        return "party_role"
    return col.name


def _kind_words(spec) -> list[str]:
    words = tokens(spec.kind)
    stem = re.sub(r"[*?\[\]].*$", "", spec.pattern.rsplit(".", 1)[0])
    for w in tokens(stem):
        if w not in words:
            words.append(w)
    return words


def _kind_name_score(words: list[str], table: str) -> float:
    targets = _KIND_WORDS.get(table, set()) | _ENTITIES.get(table, set()) | set(table.split("_"))
    best = 0.0
    for w in words:
        for t in targets:
            best = max(best, _word_sim(w, t))
    return best


# --------------------------------------------------------------------------- public API


def sample_source_files(source: SourceConfig, drop_dir: Path, rows: int = 5000) -> dict[str, pa.Table]:
    """The first ``rows`` good records of each file kind found in a drop (quarantined records skipped)."""
    out: dict[str, pa.Table] = {}
    for kind, path in find_drop_files(source, Path(drop_dir)).items():
        spec = source.file(kind)
        blocks = read_source_file(source, spec, path, drop_dir=Path(drop_dir), block_records=max(1, min(rows, 50_000)))
        parts: list[pa.Table] = []
        have = 0
        try:
            for result in blocks:
                if result.table.num_rows:
                    parts.append(result.table.slice(0, rows - have))
                    have += parts[-1].num_rows
                if have >= rows:
                    break
        finally:
            close = getattr(blocks, "close", None)
            if close:
                close()
        if parts:
            out[kind] = pa.concat_tables(parts)
        else:
            cols = output_columns(source, spec, Path(drop_dir))
            out[kind] = pa.schema([pa.field("record_no", pa.int64())] + [pa.field(n, t) for n, t in cols]).empty_table()
    return out


def suggest_mapping(
    source: SourceConfig,
    sample: dict[str, pa.Table],
    *,
    kind_to_table: dict[str, str] | None = None,
) -> Suggestion:
    """Draft a mapping of ``source`` onto the canonical model from its names and a sample of its files."""
    kinds = [f.kind for f in source.files]
    overrides = dict(kind_to_table or {})
    for k, t in overrides.items():
        if k not in kinds:
            raise ValueError(f"kind_to_table: source {source.name} has no file kind {k!r}; it has {kinds}")
        if t not in V1_TABLES:
            raise ValueError(f"kind_to_table: {t!r} is not a canonical table; tables are {sorted(V1_TABLES)}")
    if len(set(overrides.values())) != len(overrides):
        raise ValueError("kind_to_table: two file kinds map to the same canonical table")
    pii = set(source.pii)

    views: dict[str, _KindView] = {}
    for spec in source.files:
        table = sample.get(spec.kind)
        if table is not None:
            columns = [(f.name, f.type) for f in table.schema if f.name != "record_no"]
        else:
            try:
                columns = output_columns(source, spec)
            except Exception:  # noqa: BLE001 - no sample and no layout: the kind has no known columns
                columns = []
        views[spec.kind] = _KindView(spec.kind, columns, table, pii)

    key_kind = next((f.kind for f in source.files if f.kind == "policies"), None)
    if key_kind is None or source.key not in views[key_kind].evidence:
        key_kind = next((k for k in kinds if source.key in views[k].evidence), None)
    scorer = _Scorer(source, views, key_kind)

    # which kind feeds which table
    results: dict[tuple[str, str], tuple[dict[str, _Candidate], float]] = {}
    scores: list[tuple[float, str, str, str]] = []
    for spec in source.files:
        words = _kind_words(spec)
        for tname, table in V1_TABLES.items():
            chosen, coverage = scorer.assign(table, views[spec.kind])
            results[(spec.kind, tname)] = (chosen, coverage)
            name = _kind_name_score(words, tname)
            prior = 0.3 if (tname == "policies" and spec.kind == key_kind) else 0.0
            if tname == "policies" and key_kind and spec.kind != key_kind:
                prior = -0.3
            total = 0.45 * name + 0.55 * coverage + prior
            reason = (f"file kind '{spec.kind}' ~ '{tname}' ({name:.2f}); "
                      f"{sum(1 for c in chosen.values() if c.confidence >= LIVE)} of {len(table.columns)} "
                      f"columns found")
            if prior > 0:
                reason += f"; holds the source key '{source.key}'"
            scores.append((total, spec.kind, tname, reason))
    assignment: dict[str, tuple[str, float, str]] = {}  # table -> (kind, score, reason)
    for kind, tname in overrides.items():
        reason = next(r for s, k, t, r in scores if k == kind and t == tname)
        assignment[tname] = (kind, 1.0, "set by kind_to_table; " + reason)
    taken = set(overrides)
    for total, kind, tname, reason in sorted(scores, key=lambda s: (-s[0], kinds.index(s[1]), s[2])):
        if total < 0.3 or kind in taken or tname in assignment:
            continue
        assignment[tname] = (kind, total, reason)
        taken.add(kind)

    tables: dict[str, TableSuggestion] = {}
    code_tables: dict[str, dict[str, str]] = {}
    proposed: dict[str, dict[str, str]] = {}
    unmapped: list[str] = []
    used_by_kind: dict[str, set[str]] = {k: set() for k in kinds}
    for tname, table in V1_TABLES.items():
        if tname not in assignment:
            if tname == "policies":
                unmapped += [f"policies.{c.name}" for c in table.columns if c.required]
            continue
        kind, score, reason = assignment[tname]
        chosen, _ = results[(kind, tname)]
        ts = TableSuggestion(tname, kind, round(min(score, 1.0), 2), reason)
        for cname, cand in chosen.items():
            review = cand.review or cand.confidence < REVIEW
            fs = FieldSuggestion(tname, cname, cand.expr, cand.confidence, cand.reason, cand.sources,
                                 review=review or not cand.confidence >= LIVE)
            if cand.code_table is not None:
                fs.code_table = cand.code_name
                (code_tables if fs.live else proposed)[fs.code_table] = cand.code_table
            ts.fields[cname] = fs
            if fs.live:
                used_by_kind[kind].update(cand.sources)
        for col in table.columns:
            if col.required and not (col.name in ts.fields and ts.fields[col.name].live):
                unmapped.append(f"{tname}.{col.name}")
        tables[tname] = ts
    for name in list(proposed):
        if name in code_tables:
            del proposed[name]
    unused = {k: [c for c in views[k].columns if c not in used_by_kind[k]] for k in kinds}
    unused = {k: v for k, v in unused.items() if v}
    return Suggestion(
        source=source.name,
        tables=tables,
        code_tables=code_tables,
        unmapped_required=unmapped,
        unused_source_columns=unused,
        sampled_rows={k: views[k].rows for k in kinds},
        proposed_code_tables=proposed,
    )
