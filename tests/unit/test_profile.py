"""Profiles: value patterns, pattern sampling, PII masking (pure, no database)."""

from __future__ import annotations

import pyarrow as pa

from legacy.profile import MASKED, PatternSampler, build_profile, value_patterns


def test_value_patterns_shape_letters_digits_and_accents():
    values = pa.array(["20230231", "1987-04-02", "Müller, José", "AB-12x", None])
    assert value_patterns(values).to_pylist() == ["99999999", "9999-99-99", "Aaaaaa, Aaaa", "AA-99a", None]


def test_patterns_of_numbers_and_decimals():
    assert value_patterns(pa.array([20230101, 7], pa.int64())).to_pylist() == ["99999999", "9"]
    assert value_patterns(pa.array([1], pa.decimal128(9, 2)).cast(pa.decimal128(9, 2))).to_pylist() == ["9.99"]


def test_sampler_stops_at_its_sample_and_keeps_top_patterns():
    sampler = PatternSampler(sample_rows=5, keep=2)
    sampler.add(pa.table({"record_no": [1, 2, 3], "d": ["20230101", "2023-01-01", "20230102"]}))
    sampler.add(pa.table({"record_no": [4, 5, 6], "d": ["x", "20230103", "20230104"]}))
    assert sampler.seen == 5
    assert sampler.top("d") == [("99999999", 3), ("9999-99-99", 1)]


def test_personal_data_columns_never_show_values():
    columns = [("NAME", pa.string()), ("PLAN", pa.string())]
    stats = {"NAME": {"rows": 2, "nulls": 0, "distinct": 2, "min": "Adams", "max": "Zhou"},
             "PLAN": {"rows": 2, "nulls": 1, "distinct": 1, "min": "WL100", "max": "WL100"}}
    sampler = PatternSampler()
    sampler.add(pa.table({"NAME": ["Adams", "Zhou"], "PLAN": ["WL100", None]}))
    profile = build_profile(source="s", drop_id="d", kind="policies", file_name="f", columns=columns,
                            sql_names=["name", "plan"], stats=stats, sampler=sampler, pii={"NAME"},
                            records_read=3, records_parsed=2, records_quarantined=1)
    name, plan = profile.columns
    assert (name.min, name.max, name.pii) == (MASKED, MASKED, True)
    assert (plan.min, plan.null_rate) == ("WL100", 0.5)
    rendered = profile.markdown() + profile.model_dump_json()
    assert "Adams" not in rendered and "Zhou" not in rendered


def test_patterns_and_min_max_are_capped_so_a_report_stays_small():
    from legacy.profile import ELLIPSIS, VALUE_CAP

    long = "Ab1" * 10_000
    shapes = value_patterns(pa.array([long, "short"])).to_pylist()
    assert shapes[0] == "Aa9" * (VALUE_CAP // 3) + "A" + ELLIPSIS and len(shapes[0]) == VALUE_CAP + 1
    assert shapes[1] == "aaaaa"
    sampler = PatternSampler()
    sampler.add(pa.table({"NOTE": [long] * 3}))
    stats = {"NOTE": {"rows": 3, "nulls": 0, "distinct": 1, "min": long[:65], "max": long[:65]}}
    profile = build_profile(source="s", drop_id="d", kind="k", file_name="f", columns=[("NOTE", pa.string())],
                            sql_names=["note"], stats=stats, sampler=sampler, pii=set(), records_read=3,
                            records_parsed=3, records_quarantined=0)
    (note,) = profile.columns
    assert len(note.min) == len(note.max) == VALUE_CAP + 1 and note.min.endswith(ELLIPSIS)
    assert note.top_patterns == [(shapes[0], 3)]
    assert len(profile.model_dump_json()) < 2_000
