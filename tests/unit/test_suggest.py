"""Mapping suggestions for unseen sources: names, value evidence, code tables, PII, the draft YAML (pure)."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from canonical.suggest import Suggestion, sample_source_files, suggest_mapping, tokens
from legacy.copybook import encode_records, parse_copybook
from legacy.sample import generate_sample
from legacy.sources import SourceConfig, load_source

TOP_KEYS = {"mapping", "version", "source", "model_version", "draft", "tables", "code_tables", "unmapped_required",
            "unused_source_columns"}
FUNCTIONS = {"col", "date", "money", "code", "trim", "upper", "concat", "lit"}


def hit_rate(suggestion: Suggestion, expected: dict[tuple[str, str], str | tuple[str, ...]]) -> tuple[float, list]:
    """Share of the fields a human would map that the draft maps (live) from the right source column(s)."""
    misses = []
    for (table, column), want in expected.items():
        want = want if isinstance(want, tuple) else (want,)
        got = suggestion.source_columns(table, column)
        if got != want:
            misses.append((f"{table}.{column}", want, got))
    return 1 - len(misses) / len(expected), misses


def check_draft_yaml(suggestion: Suggestion) -> dict:
    text = suggestion.to_yaml()
    doc = yaml.safe_load(text)
    assert set(doc) == TOP_KEYS
    assert doc["mapping"] == f"{suggestion.source}_draft"
    assert doc["version"] == "0.1.0" and doc["model_version"] == "1.0.0" and doc["draft"] is True
    assert doc["source"] == suggestion.source
    assert isinstance(doc["tables"], dict) and doc["tables"]
    for name, table in doc["tables"].items():
        assert set(table) == {"from", "fields"}, name
        assert isinstance(table["fields"], dict)
        for column, entry in table["fields"].items():
            assert {"expr", "confidence", "reason"} <= set(entry) <= {"expr", "confidence", "reason", "review"}
            assert 0.5 <= entry["confidence"] <= 1.0  # below 0.5: commented out
            assert set(re.findall(r"([A-Za-z_]\w*)\(", entry["expr"])) <= FUNCTIONS, entry["expr"]
            for code_table in re.findall(r"code\(.*, '([^']+)'\)", entry["expr"]):
                assert code_table in doc["code_tables"]
            if entry["confidence"] < 0.7:
                assert entry["review"] is True
    for name, codes in doc["code_tables"].items():
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in codes.items()), name
    assert isinstance(doc["unmapped_required"], list)
    assert isinstance(doc["unused_source_columns"], dict)
    return doc


# --------------------------------------------------------------------------- a Spanish broker export (CSV)

PROVINCIAS = [("Madrid", "28"), ("Barcelona", "08"), ("Valencia", "46"), ("Sevilla", "41"), ("Málaga", "29"),
              ("Zaragoza", "50"), ("Bizkaia", "48"), ("A Coruña", "15")]
APELLIDOS = ["García", "Fernández", "González", "Rodríguez", "López", "Martínez", "Sánchez", "Pérez", "Gómez",
             "Martín", "Jiménez", "Ruiz", "Hernández", "Díaz", "Moreno", "Muñoz", "Álvarez", "Romero"]
NOMBRES = ["María", "José", "Carmen", "Antonio", "Lucía", "Manuel", "Ana", "Francisco", "Laura", "David", "Núria",
           "Javier", "Elena", "Iñaki", "Pilar", "Jordi"]
RAMOS = ["AUTO", "HOGAR", "VIDA", "RC", "COMERCIO", "DECESOS"]
ESTADOS = ["VIGENTE", "ANULADA", "VENCIDA", "SUSPENDIDA"]
PERIODOS = ["MENSUAL", "TRIMESTRAL", "SEMESTRAL", "ANUAL"]
GARANTIAS = ["RC_OBLIG", "DANOS_PROPIOS", "ROBO", "INCENDIO", "FALLECIMIENTO", "DEFENSA_JURIDICA"]
CALLES = ["Calle Mayor", "Avenida de la Constitución", "Calle del Sol", "Paseo de Gracia", "Calle Real"]
NIF_LETTERS = "TRWAGMYFPDXBNJZSQVHLCKE"

POLIZAS_COLUMNS = [
    ("Poliza_Num", "text"), ("Ramo", "text"), ("Estado", "text"), ("Fecha_Inicio", "text"),
    ("FechaVencimiento", "text"), ("Tomador", "text"), ("NIF", "text"), ("FechaNacimiento", "text"),
    ("Domicilio", "text"), ("Poblacion", "text"), ("Provincia", "text"), ("CodPostal", "text"),
    ("Agente", "text"), ("Compania", "text"), ("Prima_Anual", "amount"), ("Periodicidad", "text"),
    ("Canal", "text"), ("Observaciones", "text"),
]
GARANTIAS_COLUMNS = [("Poliza_Num", "text"), ("Garantia", "text"), ("Capital", "amount"), ("Franquicia", "amount"),
                     ("PrimaGarantia", "amount")]

# what a human maps: (canonical table, column) -> source column(s)
SPANISH_EXPECTED = {
    ("policies", "policy_id"): "Poliza_Num",
    ("policies", "status"): "Estado",
    ("policies", "line_of_business"): "Ramo",
    ("policies", "carrier_code"): "Compania",
    ("policies", "effective_date"): "Fecha_Inicio",
    ("policies", "expiration_date"): "FechaVencimiento",
    ("policies", "insured_name"): "Tomador",
    ("policies", "insured_birth_date"): "FechaNacimiento",
    ("policies", "insured_tax_id"): "NIF",
    ("policies", "insured_address"): "Domicilio",
    ("policies", "insured_city"): "Poblacion",
    ("policies", "insured_state"): "Provincia",
    ("policies", "insured_postal_code"): "CodPostal",
    ("policies", "agent_code"): "Agente",
    ("policies", "annual_premium"): "Prima_Anual",
    ("policies", "premium_frequency"): "Periodicidad",
    ("coverages", "policy_id"): "Poliza_Num",
    ("coverages", "coverage_code"): "Garantia",
    ("coverages", "limit_amount"): "Capital",
    ("coverages", "deductible_amount"): "Franquicia",
    ("coverages", "premium"): "PrimaGarantia",
}


def _spanish_source() -> SourceConfig:
    def cols(spec):
        return [{"name": n, "type": t, "scale": 2} for n, t in spec]

    return SourceConfig.model_validate({
        "name": "corredor_es",
        "description": "Broker export (Spain)",
        "format": "csv",
        "encoding": "utf-8",
        "key": "Poliza_Num",
        "pii": ["Tomador", "NIF", "FechaNacimiento", "Domicilio", "CodPostal"],
        "files": [
            {"kind": "polizas", "pattern": "polizas*.csv", "delimiter": ";", "columns": cols(POLIZAS_COLUMNS)},
            {"kind": "garantias", "pattern": "garantias*.csv", "delimiter": ";", "columns": cols(GARANTIAS_COLUMNS)},
        ],
    })


def _write_spanish_drop(drop: Path, n: int = 400, seed: int = 7) -> dict[str, list[str]]:
    """Write the two CSV files; returns some personal-data values for the PII checks."""
    rng = np.random.default_rng(seed)
    drop.mkdir(parents=True, exist_ok=True)
    pii: dict[str, list[str]] = {"Tomador": [], "NIF": [], "Domicilio": []}
    with open(drop / "polizas_2024.csv", "w", newline="", encoding="utf-8") as fp, \
            open(drop / "garantias_2024.csv", "w", newline="", encoding="utf-8") as fg:
        wp = csv.writer(fp, delimiter=";")
        wg = csv.writer(fg, delimiter=";")
        wp.writerow([c for c, _ in POLIZAS_COLUMNS])
        wg.writerow([c for c, _ in GARANTIAS_COLUMNS])
        for i in range(n):
            pol = f"ES{2019 + i % 6}-{100000 + i * 7:06d}"
            d, m, y = int(rng.integers(1, 29)), int(rng.integers(1, 13)), int(rng.integers(2015, 2025))
            inicio, vto = f"{d:02d}-{m:02d}-{y}", f"{d:02d}-{m:02d}-{y + 1}"
            nac = f"{int(rng.integers(1, 29)):02d}/{int(rng.integers(1, 13)):02d}/{int(rng.integers(1940, 2004))}"
            tomador = f"{rng.choice(APELLIDOS)} {rng.choice(APELLIDOS)}, {rng.choice(NOMBRES)}"
            dni = int(rng.integers(10_000_000, 99_999_999))
            nif = f"{dni}{NIF_LETTERS[dni % 23]}"
            prov, cp = PROVINCIAS[int(rng.integers(len(PROVINCIAS)))]
            domicilio = f"{rng.choice(CALLES)} {int(rng.integers(1, 200))}, {int(rng.integers(1, 9))}º"
            prima = f"{rng.lognormal(6.5, 0.8):.2f}"
            wp.writerow([
                pol, rng.choice(RAMOS), rng.choice(ESTADOS, p=[0.7, 0.1, 0.15, 0.05]), inicio, vto, tomador, nif, nac,
                domicilio, prov, prov, f"{cp}{int(rng.integers(0, 1000)):03d}", f"M{int(rng.integers(1000, 9999))}",
                rng.choice(["MAPF", "ALLZ", "AXAS", "GENE"]), prima, rng.choice(PERIODOS),
                rng.choice(["WEB", "OFI", "TEL"]), rng.choice(["", "", "Cliente preferente, revisar en renovación"]),
            ])
            for g in rng.choice(GARANTIAS, size=int(rng.integers(1, 4)), replace=False):
                wg.writerow([pol, g, f"{int(rng.integers(1, 300)) * 1000}.00", rng.choice(["0.00", "150.00", "300.00"]),
                             f"{rng.lognormal(4.5, 0.6):.2f}"])
            if i < 20:
                pii["Tomador"].append(tomador)
                pii["NIF"].append(nif)
                pii["Domicilio"].append(domicilio)
    return pii


def test_spanish_broker_export_is_mostly_mapped(tmp_path):
    source = _spanish_source()
    pii = _write_spanish_drop(tmp_path / "drop")
    sample = sample_source_files(source, tmp_path / "drop")
    assert sample["polizas"].num_rows == 400
    suggestion = suggest_mapping(source, sample)

    assert suggestion.tables["policies"].kind == "polizas"
    assert suggestion.tables["coverages"].kind == "garantias"
    rate, misses = hit_rate(suggestion, SPANISH_EXPECTED)
    print(f"\ncorredor_es hit rate: {rate:.0%} of {len(SPANISH_EXPECTED)}; misses: {misses}")
    assert rate >= 0.7, misses

    field = suggestion.field
    assert field("policies", "effective_date").expr == "date(col('Fecha_Inicio'), '%d-%m-%Y')"
    assert field("policies", "expiration_date").expr == "date(col('FechaVencimiento'), '%d-%m-%Y')"
    assert "'%d/%m/%Y'" in field("policies", "insured_birth_date").expr
    assert field("policies", "annual_premium").expr == "money(col('Prima_Anual'))"
    assert "DD-MM-YYYY" in field("policies", "effective_date").reason
    # code tables: obvious values translated, the rest left TODO
    codes = suggestion.code_tables
    assert codes["policy_status"]["VIGENTE"] == "in_force" and codes["policy_status"]["ANULADA"] == "cancelled"
    assert codes["policy_status"]["SUSPENDIDA"] == "TODO"
    assert codes["line_of_business"]["HOGAR"] == "homeowners" and codes["line_of_business"]["VIDA"] == "life"
    assert codes["line_of_business"]["DECESOS"] == "TODO"
    assert field("policies", "line_of_business").review is True  # it has TODO codes
    assert codes["premium_frequency"] == {"ANUAL": "annual", "MENSUAL": "monthly", "SEMESTRAL": "semi_annual",
                                          "TRIMESTRAL": "quarterly"}
    # no column for these: listed for the reviewer
    for name in ("policies.currency", "policies.product_code", "coverages.coverage_seq"):
        assert name in suggestion.unmapped_required
    assert "policies.policy_id" not in suggestion.unmapped_required
    assert "Observaciones" in suggestion.unused_source_columns["polizas"]

    doc = check_draft_yaml(suggestion)
    text = suggestion.to_yaml()
    for values in pii.values():
        for value in values:
            assert value not in text
    assert doc["tables"]["policies"]["from"] == "polizas"


def test_kind_to_table_override_and_validation(tmp_path):
    source = _spanish_source()
    _write_spanish_drop(tmp_path / "drop", n=60)
    sample = sample_source_files(source, tmp_path / "drop")
    swapped = suggest_mapping(source, sample, kind_to_table={"garantias": "endorsements"})
    assert swapped.tables["endorsements"].kind == "garantias"
    assert "coverages" not in swapped.tables
    assert swapped.tables["policies"].kind == "polizas"
    with pytest.raises(ValueError, match="no file kind"):
        suggest_mapping(source, sample, kind_to_table={"recibos": "payments"})
    with pytest.raises(ValueError, match="not a canonical table"):
        suggest_mapping(source, sample, kind_to_table={"polizas": "policy"})


# --------------------------------------------------------------------------- an English copybook source

MASTER_CPY = """\
000100* PLCYMST   TEST POLICY MASTER, RECFM=FB                          PLCYMST
000200 01  PLCY-MSTR-REC.                                               PLCYMST
000300     05  PLCY-NO                 PIC X(10).                       PLCYMST
000400     05  PLCY-STAT-CD            PIC X(02).                       PLCYMST
000500     05  PROD-CD                 PIC X(06).                       PLCYMST
000600     05  WRTG-CO                 PIC X(04).                       PLCYMST
000700     05  EFFV-DT                 PIC 9(8).                        PLCYMST
000800     05  EXPR-DT                 PIC 9(8).                        PLCYMST
000900     05  INSD-NM                 PIC X(30).                       PLCYMST
001000     05  INSD-DOB                PIC 9(8).                        PLCYMST
001100     05  INSD-SSN                PIC X(9).                        PLCYMST
001200     05  INSD-ST                 PIC X(2).                        PLCYMST
001300     05  INSD-ZIP                PIC X(5).                        PLCYMST
001400     05  AGT-NO                  PIC X(6).                        PLCYMST
001500     05  ANN-PREM                PIC S9(7)V99 COMP-3.             PLCYMST
001600     05  PREM-FREQ               PIC X(1).                        PLCYMST
001700     05  FACE-AMT                PIC S9(9)V99 COMP-3.             PLCYMST
001800     05  CURR-CD                 PIC X(3).                        PLCYMST
001900     05  FILLER                  PIC X(10).                       PLCYMST
"""
RIDER_CPY = """\
000100 01  RIDER-REC.
000200     05  PLCY-NO                 PIC X(10).
000300     05  RDR-SEQ                 PIC 9(3).
000400     05  RDR-CD                  PIC X(4).
000500     05  RDR-FACE-AMT            PIC S9(7)V99 COMP-3.
000600     05  RDR-PREM                PIC S9(5)V99 COMP-3.
000700     05  FILLER                  PIC X(6).
"""
ENGLISH_EXPECTED = {
    ("policies", "policy_id"): "PLCY_NO",
    ("policies", "status"): "PLCY_STAT_CD",
    ("policies", "product_code"): "PROD_CD",
    ("policies", "carrier_code"): "WRTG_CO",
    ("policies", "effective_date"): "EFFV_DT",
    ("policies", "expiration_date"): "EXPR_DT",
    ("policies", "insured_name"): "INSD_NM",
    ("policies", "insured_birth_date"): "INSD_DOB",
    ("policies", "insured_tax_id"): "INSD_SSN",
    ("policies", "insured_state"): "INSD_ST",
    ("policies", "insured_postal_code"): "INSD_ZIP",
    ("policies", "agent_code"): "AGT_NO",
    ("policies", "annual_premium"): "ANN_PREM",
    ("policies", "premium_frequency"): "PREM_FREQ",
    ("policies", "face_amount"): "FACE_AMT",
    ("policies", "currency"): "CURR_CD",
    ("coverages", "policy_id"): "PLCY_NO",
    ("coverages", "coverage_seq"): "RDR_SEQ",
    ("coverages", "coverage_code"): "RDR_CD",
    ("coverages", "limit_amount"): "RDR_FACE_AMT",
    ("coverages", "premium"): "RDR_PREM",
}


def _english_copybook_source(tmp: Path, n: int = 300, seed: int = 3) -> tuple[SourceConfig, Path, list[str]]:
    conf = tmp / "conf"
    (conf / "life_east").mkdir(parents=True)
    (conf / "life_east" / "PLCYMST.cpy").write_text(MASTER_CPY)
    (conf / "life_east" / "RIDER.cpy").write_text(RIDER_CPY)
    (conf / "life_east.yaml").write_text(yaml.safe_dump({
        "name": "life_east", "format": "copybook", "encoding": "cp037", "key": "PLCY_NO",
        "pii": ["INSD_NM", "INSD_DOB", "INSD_SSN", "INSD_ZIP"],
        "files": [
            {"kind": "master", "pattern": "PLCYMST*.dat", "copybook": "PLCYMST.cpy", "record_format": "F"},
            {"kind": "riders", "pattern": "RIDER*.dat", "copybook": "RIDER.cpy", "record_format": "F",
             "required": False},
        ],
    }))
    source = load_source(conf / "life_east.yaml")
    rng = np.random.default_rng(seed)
    pol = [f"LE{i:08d}" for i in range(n)]
    eff = np.datetime64("2005-01-01") + rng.integers(0, 7000, n).astype("timedelta64[D]")
    ymd = lambda d: np.char.replace(np.datetime_as_string(d, unit="D"), "-", "").astype(np.int64)  # noqa: E731
    first = ["JAMES", "MARY", "ROBERT", "LINDA", "PATRICIA", "MICHAEL", "SUSAN", "THOMAS"]
    last = ["WHITFIELD", "OKONKWO", "BRADSHAW", "PEMBERTON", "ASHWORTH", "KOWALCZYK", "FAIRBANKS", "HOLLOWAY"]
    names = [f"{rng.choice(last)}, {rng.choice(first)}" for _ in range(n)]
    ssns = [f"{int(x):09d}" for x in rng.integers(100_000_000, 899_999_999, n)]
    master = {
        "PLCY_NO": pol,
        "PLCY_STAT_CD": list(rng.choice(["IF", "LA", "SU", "PU"], n, p=[0.8, 0.1, 0.05, 0.05])),
        "PROD_CD": list(rng.choice(["WL20", "TERM30", "UL10", "ANN5"], n)),
        "WRTG_CO": list(rng.choice(["ELIC", "ELNY"], n)),
        "EFFV_DT": ymd(eff),
        "EXPR_DT": ymd(eff + np.timedelta64(365 * 20, "D")),
        "INSD_NM": names,
        "INSD_DOB": ymd(eff - rng.integers(20 * 365, 60 * 365, n).astype("timedelta64[D]")),
        "INSD_SSN": ssns,
        "INSD_ST": list(rng.choice(["NY", "NJ", "CT", "MA", "PA"], n)),
        "INSD_ZIP": [f"{int(z):05d}" for z in rng.integers(1000, 99999, n)],
        "AGT_NO": [f"A{int(a)}" for a in rng.integers(10000, 99999, n)],
        "ANN_PREM": rng.integers(20_000, 900_000, n),  # unscaled cents for a V99 field
        "PREM_FREQ": list(rng.choice(["A", "S", "Q", "M"], n)),
        "FACE_AMT": rng.integers(1_000, 20_000, n) * 10_000_00,
        "CURR_CD": ["USD"] * n,
    }
    drop = tmp / "drop"
    drop.mkdir()
    cb = parse_copybook(MASTER_CPY, source="PLCYMST.cpy")
    (drop / "PLCYMST.20240101.dat").write_bytes(encode_records(cb, master, n, encoding="cp037", record_format="F"))
    k = n // 2
    riders = {
        "PLCY_NO": pol[:k],
        "RDR_SEQ": np.ones(k, dtype=np.int64),
        "RDR_CD": list(rng.choice(["ADB", "WOP", "GIO", "CTR"], k)),
        "RDR_FACE_AMT": rng.integers(100, 5000, k) * 100_00,
        "RDR_PREM": rng.integers(500, 20_000, k),
    }
    rcb = parse_copybook(RIDER_CPY, source="RIDER.cpy")
    (drop / "RIDER.20240101.dat").write_bytes(encode_records(rcb, riders, k, encoding="cp037", record_format="F"))
    return source, drop, names[:20] + ssns[:20]


def test_english_copybook_source(tmp_path):
    source, drop, pii_values = _english_copybook_source(tmp_path)
    sample = sample_source_files(source, drop)
    assert sample["master"].num_rows == 300 and "FILLER" not in sample["master"].column_names
    suggestion = suggest_mapping(source, sample)

    assert suggestion.tables["policies"].kind == "master"
    assert suggestion.tables["coverages"].kind == "riders"
    rate, misses = hit_rate(suggestion, ENGLISH_EXPECTED)
    print(f"\nlife_east hit rate: {rate:.0%} of {len(ENGLISH_EXPECTED)}; misses: {misses}")
    assert rate >= 0.8, misses

    field = suggestion.field
    assert field("policies", "effective_date").expr == "date(col('EFFV_DT'), '%Y%m%d')"
    assert field("policies", "annual_premium").expr == "money(col('ANN_PREM'))"
    assert "scale 2" in field("policies", "annual_premium").reason
    assert suggestion.code_tables["premium_frequency"] == {"A": "annual", "M": "monthly", "Q": "quarterly",
                                                           "S": "semi_annual"}
    assert suggestion.code_tables["policy_status"] == {"IF": "in_force", "LA": "lapsed", "PU": "paid_up",
                                                       "SU": "surrendered"}
    assert "policies.currency" not in suggestion.unmapped_required
    check_draft_yaml(suggestion)
    text = suggestion.to_yaml()
    for value in pii_values:
        assert value not in text


# --------------------------------------------------------------------------- the shipped sample sources


@pytest.fixture(scope="module")
def book(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("book")
    generate_sample(out, policies=300, seed=1)
    return out


def test_mainframe_life_key_columns(book):
    source = load_source("mainframe_life")
    sample = sample_source_files(source, book / "mainframe_life")
    suggestion = suggest_mapping(source, sample)
    expected = {
        ("policies", "policy_id"): "POL_NUMBER",
        ("policies", "status"): "POL_STATUS",
        ("policies", "product_code"): "PLAN_CODE",
        ("policies", "line_of_business"): "PLAN_CODE",
        ("policies", "carrier_code"): "CARRIER_CODE",
        ("policies", "issue_date"): "ISSUE_DATE",
        ("policies", "effective_date"): "EFF_DATE",
        ("policies", "expiration_date"): "MATURITY_DATE",
        ("policies", "insured_name"): ("INS_FIRST_NAME", "INS_LAST_NAME"),
        ("policies", "insured_birth_date"): "INS_BIRTH_DATE",
        ("policies", "insured_tax_id"): "INS_TAX_ID",
        ("policies", "insured_state"): "INS_STATE",
        ("policies", "insured_postal_code"): "INS_ZIP",
        ("policies", "modal_premium"): "MODAL_PREMIUM",
        ("policies", "premium_frequency"): "BILLING_MODE",
        ("policies", "face_amount"): "FACE_AMOUNT",
        ("coverages", "policy_id"): "POL_NUMBER",
        ("coverages", "coverage_seq"): "COV_SEQ",
        ("coverages", "coverage_code"): "COV_CODE",
        ("payments", "payment_date"): "PAY_DATE",
        ("payments", "amount"): "PAY_AMOUNT",
        ("endorsements", "endorsement_code"): "END_CODE",
        ("correspondence", "document_id"): "DOC_ID",
        ("claim_links", "claim_number"): "CLM_NUMBER",
    }
    rate, misses = hit_rate(suggestion, expected)
    print(f"\nmainframe_life hit rate: {rate:.0%} of {len(expected)}; misses: {misses}")
    assert not misses
    field = suggestion.field
    assert field("policies", "effective_date").expr == "date(col('EFF_DATE'), '%Y%m%d')"
    assert field("policies", "modal_premium").expr == "money(col('MODAL_PREMIUM'))"
    assert field("policies", "status").expr == "code(col('POL_STATUS'), 'policy_status')"
    assert field("policies", "insured_name").expr.startswith("concat(")
    assert suggestion.tables["claim_links"].kind == "claims"
    status = suggestion.code_tables["policy_status"]
    assert (status["IF"], status["LA"], status["SU"], status["PU"]) == ("in_force", "lapsed", "surrendered", "paid_up")
    # no annual premium on the master record (modal premium + billing mode): the reviewer is told
    assert "policies.annual_premium" in suggestion.unmapped_required
    assert "policies.currency" in suggestion.unmapped_required
    # a repeating group never maps live on its own
    assert not any(c.startswith("RIDER_") for t in suggestion.tables.values() for f in t.fields.values() if f.live
                   for c in f.source_columns)
    check_draft_yaml(suggestion)
    text = suggestion.to_yaml()
    pol = sample["policies"]
    for column in ("INS_LAST_NAME", "INS_TAX_ID", "INS_ADDR_LINE1", "BEN_NAME_1"):
        for value in pol.column(column).to_pylist()[:30]:
            if value and len(value) >= 5:
                assert value not in text, column


def test_pc_csv_key_columns(book):
    source = load_source("pc_csv")
    sample = sample_source_files(source, book / "pc_csv", rows=100)
    assert sample["policies"].num_rows == 100
    suggestion = suggest_mapping(source, sample)
    expected = {
        ("policies", "policy_id"): "PolicyNo",
        ("policies", "status"): "PolStatus",
        ("policies", "line_of_business"): "LOB",
        ("policies", "carrier_code"): "WritingCo",
        ("policies", "effective_date"): "EffDate",
        ("policies", "expiration_date"): "ExpDate",
        ("policies", "insured_name"): "InsuredName",
        ("policies", "insured_type"): "InsuredType",
        ("policies", "insured_tax_id"): "TaxId",
        ("policies", "insured_address"): "MailAddr",
        ("policies", "insured_city"): "City",
        ("policies", "insured_state"): "State",
        ("policies", "insured_postal_code"): "Zip",
        ("policies", "agent_code"): "AgentNo",
        ("policies", "annual_premium"): "AnnualPrem",
        ("policies", "payment_plan"): "PayPlan",
        ("policies", "outstanding_balance"): "BalanceDue",
        ("coverages", "policy_id"): "PolicyNo",
        ("coverages", "coverage_code"): "CovCode",
        ("coverages", "limit_amount"): "LimitAmt",
        ("coverages", "deductible_amount"): "DeductAmt",
        ("coverages", "premium"): "CovPrem",
        ("coverages", "effective_date"): "EffDate",
        ("coverages", "expiration_date"): "ExpDate",
    }
    rate, misses = hit_rate(suggestion, expected)
    print(f"\npc_csv hit rate: {rate:.0%} of {len(expected)}; misses: {misses}")
    assert not misses
    field = suggestion.field
    assert field("policies", "effective_date").expr == "date(col('EffDate'), '%m/%d/%Y')"
    assert field("policies", "annual_premium").expr == "money(col('AnnualPrem'))"
    lob = suggestion.code_tables["line_of_business"]
    assert (lob["HO3"], lob["PAUTO"], lob["WC"]) == ("homeowners", "personal_auto", "workers_comp")
    status = suggestion.code_tables["policy_status"]
    assert (status["ACT"], status["CAN"]) == ("in_force", "cancelled")
    assert suggestion.code_tables["insured_type"] == {"B": "business", "P": "person"}
    assert "coverages.coverage_seq" in suggestion.unmapped_required
    doc = check_draft_yaml(suggestion)
    assert doc["tables"]["policies"]["fields"]["status"]["expr"] == "code(col('PolStatus'), 'policy_status')"
    text = suggestion.to_yaml()
    pol = sample["policies"]
    for column in ("InsuredName", "TaxId", "MailAddr"):
        for value in pol.column(column).to_pylist()[:30]:
            if value and len(value) >= 5:
                assert value not in text, column


# --------------------------------------------------------------------------- small pieces


def test_name_tokens_expand_abbreviations():
    assert tokens("POL-EFF-DT") == ["policy", "effective", "date"]
    assert tokens("PolicyNo") == ["policy", "id"]
    assert tokens("AnnualPrem") == ["annual", "premium"]
    assert tokens("INS_BIRTH_DATE") == ["insured", "birth", "date"]
    assert tokens("DOB") == ["birth", "date"]
    assert tokens("SSN") == ["tax", "id"]
    assert tokens("WritingCo") == ["carrier"]
    assert tokens("FechaVencimiento") == ["date", "expiration"]
    assert tokens("POLNO") == ["policy", "id"]


def test_weak_candidates_are_commented_out_for_review(tmp_path):
    """Names that say date over values that do not: commented out; ambiguous dates and decimal commas: review."""
    source = SourceConfig.model_validate({
        "name": "odd", "format": "csv", "encoding": "utf-8", "key": "PolicyNo",
        "files": [{"kind": "policies", "pattern": "p*.csv", "delimiter": ";", "columns": [
            {"name": "PolicyNo"}, {"name": "StartDt"}, {"name": "ExpDate"}, {"name": "Prima"}, {"name": "BalDue"}]}],
    })
    drop = tmp_path / "drop"
    drop.mkdir()
    rows = ["PolicyNo;StartDt;ExpDate;Prima;BalDue"] + [
        f"P{i:05d};{i % 12 + 1:02d}/{i % 7 + 1:02d}/2024;soon;{i + 1}.{i % 10}34,50;${i * 97:,}.25" for i in range(50)
    ]
    (drop / "p.csv").write_text("\n".join(rows) + "\n")
    suggestion = suggest_mapping(source, sample_source_files(source, drop))

    exp = suggestion.field("policies", "expiration_date")
    assert exp is not None and not exp.live and exp.review
    assert "do not look like dates" in exp.reason
    assert "policies.effective_date" not in suggestion.unmapped_required
    eff = suggestion.field("policies", "effective_date")
    assert eff.live and eff.review and eff.expr == "date(col('StartDt'), '%m/%d/%Y')"
    assert "day/month order ambiguous" in eff.reason
    prem = suggestion.field("policies", "annual_premium")
    assert prem.expr == "money(col('Prima'))" and prem.review and "decimal comma" in prem.reason
    due = suggestion.field("policies", "outstanding_balance")
    assert due.expr == "money(col('BalDue'))" and "$9,999.99" in due.reason and "scale 2" in due.reason
    text = suggestion.to_yaml()
    assert "      # expiration_date: {expr:" in text
    doc = check_draft_yaml(suggestion)
    assert "expiration_date" not in doc["tables"]["policies"]["fields"]
    assert doc["unused_source_columns"] == {"policies": ["ExpDate"]}
    assert set(doc["unmapped_required"]) >= {"policies.status", "policies.currency", "policies.insured_name"}
