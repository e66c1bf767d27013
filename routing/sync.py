"""The nightly sync's decisions (pure; no Dagster, no database).

After the first waves both systems keep changing policies. For each policy on the new platform the
sync knows the state both sides last agreed on (a content hash per side); a side whose hash moved
changed the policy. `decide` turns those changes into one action per policy:

| policy                          | legacy changed | platform changed | action                                   |
|---------------------------------|:--------------:|:----------------:|------------------------------------------|
| bridge (legacy is the system of | yes            |                  | `to_platform` (dual write: legacy has it) |
| record, both systems serve it)  |                | yes              | `to_legacy` (selective write back)        |
|                                 | yes            | yes              | conflict, by the line's rule              |
| migrated (system of record is   |                | yes              | `accept_platform` (legacy no longer       |
| the new platform)               |                |                  | services it: nothing is written back)     |
|                                 | yes            | either           | conflict, by the line's rule              |

A conflict's rule (per line of business, `routing/rules/sync.yaml`): `system_of_record` keeps the
system of record's version (`to_platform` for a bridge policy, `keep_platform` for a migrated
one); `latest` takes the side that changed last (ties go to the system of record); `manual` queues
the policy with both versions (`queue`). Vectorized over numpy arrays: one call decides a night.
"""

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from legacy.errors import InputError, load_yaml

RULES = ("system_of_record", "latest", "manual")
ACTIONS = ("to_platform", "to_legacy", "accept_platform", "keep_platform", "queue")
DEFAULT_SYNC_RULES = Path(__file__).with_name("rules") / "sync.yaml"
SYNC_RULES_ENV = "DATA_MASH_SYNC_RULES"
NEW_PLATFORM = "new_platform"

Rule = Literal["system_of_record", "latest", "manual"]


class SyncRulesError(InputError):
    """A sync settings file that cannot be used; the message names the file, the line and the field."""


class Schedule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    time: str = "02:00"
    timezone: str = "UTC"

    @field_validator("time")
    @classmethod
    def _time(cls, value: str) -> str:
        hour, _, minute = value.partition(":")
        if not (hour.isdigit() and minute.isdigit() and int(hour) < 24 and int(minute) < 60):
            raise ValueError(f"{value!r} is not a time of day as HH:MM")
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not an IANA time zone (e.g. America/New_York)") from None
        return value

    @property
    def cron(self) -> str:
        hour, minute = self.time.split(":")
        return f"{int(minute)} {int(hour)} * * *"


class Conflicts(BaseModel):
    model_config = ConfigDict(extra="forbid")
    default: Rule = "system_of_record"
    lines: dict[str, Rule] = Field(default_factory=dict)


class SyncRules(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: int = 1
    schedule: Schedule = Field(default_factory=Schedule)
    conflicts: Conflicts = Field(default_factory=Conflicts)

    def rule_for(self, line_of_business: str | None) -> str:
        return self.conflicts.lines.get(line_of_business or "", self.conflicts.default)


def load_sync_rules(path: Path | None = None) -> SyncRules:
    """The sync settings: `path`, else `$DATA_MASH_SYNC_RULES`, else the shipped `routing/rules/sync.yaml`."""
    path = Path(path or os.environ.get(SYNC_RULES_ENV) or DEFAULT_SYNC_RULES)
    document = load_yaml(path, error=SyncRulesError)
    try:
        return SyncRules.model_validate(document.data or {})
    except ValidationError as error:
        first = error.errors()[0]
        raise SyncRulesError(first["msg"].removeprefix("Value error, "), file=path, line=document.line(*first["loc"]),
                             field=".".join(str(p) for p in first["loc"]) or None) from None


@dataclass
class Decisions:
    """One action per changed policy, with whether it was a conflict, under which rule, and why."""

    action: np.ndarray  # str
    conflict: np.ndarray  # bool
    rule: np.ndarray  # str or None (no conflict)
    why: np.ndarray  # str


def decide(rules: SyncRules, *, line_of_business: np.ndarray, system_of_record: np.ndarray, bridge: np.ndarray,
           legacy_changed: np.ndarray, platform_changed: np.ndarray, legacy_at: np.ndarray,
           platform_at: np.ndarray) -> Decisions:
    """Decide each changed policy (at least one side changed). `legacy_at` and `platform_at` are when each side
    last changed it (datetime64, NaT when unknown)."""
    legacy_changed = np.asarray(legacy_changed, dtype=bool)
    platform_changed = np.asarray(platform_changed, dtype=bool)
    if not np.all(legacy_changed | platform_changed):
        raise ValueError("decide() takes changed policies only: each must have changed on at least one side")
    migrated = (np.asarray(system_of_record) == NEW_PLATFORM) & ~np.asarray(bridge, dtype=bool)
    by_line = pd.Series(np.asarray(line_of_business, dtype=object), dtype=object).map(rules.conflicts.lines).astype(object)
    rule = by_line.where(by_line.notna(), rules.conflicts.default).to_numpy(dtype=object)
    legacy_at = np.asarray(legacy_at, dtype="datetime64[us]")
    platform_at = np.asarray(platform_at, dtype="datetime64[us]")
    legacy_later = (legacy_at > platform_at) & ~np.isnat(legacy_at) & ~np.isnat(platform_at)
    platform_later = (platform_at > legacy_at) & ~np.isnat(legacy_at) & ~np.isnat(platform_at)

    conflict = np.where(migrated, legacy_changed, legacy_changed & platform_changed)
    # the system of record's side: for a bridge policy legacy (its version goes to the platform), for a migrated
    # one the platform (kept as it is)
    sor_action = np.where(migrated, "keep_platform", "to_platform")
    other_action = np.where(migrated, "to_platform", "to_legacy")  # the side that is not the system of record
    other_later = np.where(migrated, legacy_later, platform_later)
    by_rule = np.select(
        [rule == "manual", (rule == "latest") & other_later],
        ["queue", other_action], default=sor_action)
    plain = np.where(migrated, "accept_platform", np.where(legacy_changed, "to_platform", "to_legacy"))
    action = np.where(conflict, by_rule, plain).astype(object)

    sides = np.where(legacy_changed & platform_changed, "both systems changed it",
                     np.where(legacy_changed, "legacy changed it", "the new platform changed it"))
    owner = np.where(migrated, "migrated (system of record: new platform)", "bridge (system of record: legacy)")
    timing = np.where(rule == "latest", np.where(other_later, "; the other side changed last",
                                                 "; the system of record changed last or at the same time"), "")
    settled = pd.Series(np.where(conflict, "; conflict settled by rule ", ""), dtype=object) + \
        pd.Series(np.where(conflict, rule, ""), dtype=object) + pd.Series(np.where(conflict, timing, ""), dtype=object)
    why = (pd.Series(owner, dtype=object) + "; " + pd.Series(sides, dtype=object) + settled).to_numpy(dtype=object)
    return Decisions(action, conflict, np.where(conflict, rule, None).astype(object), why)
