"""The nightly sync's decisions and settings (pure: no database, no Dagster)."""

import numpy as np
import pytest

from routing.sync import SyncRules, SyncRulesError, decide, load_sync_rules

T = np.datetime64


def _decide(rules, rows):
    """rows: (line, system of record, bridge, legacy changed, platform changed, legacy at, platform at)."""
    columns = list(zip(*rows))
    return decide(rules, line_of_business=np.array(columns[0], dtype=object),
                  system_of_record=np.array(columns[1], dtype=object), bridge=np.array(columns[2]),
                  legacy_changed=np.array(columns[3]), platform_changed=np.array(columns[4]),
                  legacy_at=np.array(columns[5], dtype="datetime64[us]"),
                  platform_at=np.array(columns[6], dtype="datetime64[us]"))


EARLY, LATE = T("2026-11-21T10:00"), T("2026-11-21T18:00")
CASES = [  # line, system of record, bridge, legacy changed, platform changed, legacy at, platform at
    ("life", "new_platform", False, False, True, "NaT", LATE),        # migrated, platform only
    ("life", "new_platform", False, True, False, LATE, EARLY),        # migrated, legacy only
    ("life", "new_platform", False, True, True, LATE, EARLY),         # migrated, both, legacy later
    ("life", "new_platform", False, True, True, EARLY, LATE),         # migrated, both, platform later
    ("life", "mainframe_life", True, True, False, LATE, EARLY),       # bridge, legacy only
    ("life", "mainframe_life", True, False, True, EARLY, LATE),       # bridge, platform only
    ("life", "mainframe_life", True, True, True, EARLY, LATE),        # bridge, both, platform later
    ("life", "mainframe_life", True, True, True, LATE, EARLY),        # bridge, both, legacy later
    ("life", "mainframe_life", True, True, True, LATE, LATE),         # bridge, both, same time
]
PLAIN = ["accept_platform", None, None, None, "to_platform", "to_legacy", None, None, None]


@pytest.mark.parametrize("rule, expected", [
    ("system_of_record", ["keep_platform", "keep_platform", "keep_platform", "to_platform", "to_platform",
                          "to_platform"]),
    ("latest", ["to_platform", "to_platform", "keep_platform", "to_legacy", "to_platform", "to_platform"]),
    ("manual", ["queue"] * 6),
])
def test_each_rule_settles_every_kind_of_conflict_and_leaves_plain_changes_alone(rule, expected):
    decided = _decide(SyncRules.model_validate({"conflicts": {"default": rule}}), CASES)
    conflicts = [i for i, plain in enumerate(PLAIN) if plain is None]
    assert [decided.action[i] for i in conflicts] == expected
    assert [decided.action[i] for i, plain in enumerate(PLAIN) if plain] == [p for p in PLAIN if p]
    assert list(decided.conflict) == [plain is None for plain in PLAIN]
    assert [decided.rule[i] for i in range(len(CASES))] == [None if p else rule for p in PLAIN]
    assert all(("conflict settled by rule " + rule in w) == (p is None) for w, p in zip(decided.why, PLAIN))


def test_the_rule_is_chosen_per_line_of_business():
    rules = SyncRules.model_validate({"conflicts": {"default": "system_of_record",
                                                    "lines": {"personal_auto": "manual"}}})
    both = ("new_platform", False, True, True, EARLY, LATE)
    decided = _decide(rules, [("personal_auto", *both), ("life", *both), (None, *both)])
    assert list(decided.action) == ["queue", "keep_platform", "keep_platform"]


def test_an_unchanged_policy_is_refused():
    with pytest.raises(ValueError, match="changed on at least one side"):
        _decide(SyncRules(), [("life", "new_platform", False, False, False, "NaT", "NaT")])


def test_the_shipped_settings_and_bad_ones_name_the_file_and_field(tmp_path):
    rules = load_sync_rules()
    assert rules.schedule.cron == "0 2 * * *" and rules.schedule.timezone == "America/New_York"
    for body, field in (("conflicts: {default: newest}", "conflicts.default"),
                        ("schedule: {time: '25:00'}", "schedule.time"),
                        ("schedule: {timezone: Mars/Olympus}", "schedule.timezone"),
                        ("conflict: {}", "conflict")):
        path = tmp_path / "sync.yaml"
        path.write_text(body, encoding="utf-8")
        with pytest.raises(SyncRulesError, match=f"{path} line 1: {field}"):  # file, line, field
            load_sync_rules(path)
    path.write_text("conflicts: [", encoding="utf-8")
    with pytest.raises(SyncRulesError, match="line 1"):
        load_sync_rules(path)
