"""Routing rules: versioned YAML rule sets, validated up front, evaluated over whole columns.

A rule set file::

    rule_set: default
    version: 1.0.0
    description: ...
    rules:
      - name: dq_hold
        priority: 10                      # lower number = evaluated first
        condition: {field: dq_score, operator: less_than, value: 80}
        target: dq_queue
      - name: default_route
        priority: 999
        condition: true                   # the default route: exactly one, and last
        target: coexistence_bridge

Conditions are a test ``{field, operator, value}`` or a compound ``all: [...]``, ``any: [...]``,
``not: {...}``. Fields are the columns of the routing table: the canonical ``policies`` columns
plus ``dq_score`` and ``dq_findings``. Files are read with ``yaml.safe_load`` and checked in two
passes: pydantic for shape, then a semantic pass that knows each field's type and code list
(values, regexes, ranges, priorities, the default route, shadowed rules). Every problem is
reported as ``FILE: rule 'NAME': problem`` in one :class:`RuleSetError`.

Null semantics: a null value never matches a test, except ``is_null``; ``not`` inverts only
definite results (``not`` of a test on a null is still no match); ``all``/``any`` use Kleene logic,
so ``any: [null-test, true-test]`` matches. Decisions are made with ``pyarrow.compute`` over whole
columns, one mask per rule, first matching rule (lowest priority number) wins.

Decisions on text fields: ordering operators (``less_than``…``between``) are only allowed on
numeric and date fields; ``glob``/``prefix``/``matches`` only on text fields; ``equals``/``in`` on a
code field must name canonical codes, and a ``glob``/``prefix`` on a code field must match at
least one code. ``matches`` is RE2 (what pyarrow uses), searched anywhere in the value: anchor
with ``^``/``$``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from dataclasses import dataclass, field as dc_field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import (BaseModel, ConfigDict, Discriminator, Field, StrictInt, StrictStr, Tag,
                      ValidationError, field_validator)

from canonical.tables import POLICIES
from legacy.errors import InputError, YamlDocument, load_yaml

__all__ = [
    "TARGETS", "OPERATORS", "ROUTING_FIELDS", "RuleSetError", "Predicate", "AllOf", "AnyOf", "NotOf",
    "Rule", "RuleSet", "load_rule_set", "parse_rule_set", "evaluate", "DECISION_SCHEMA", "WhatIf",
    "compare", "DEFAULT_RULES_PATH",
]

TARGETS = ("new_platform", "legacy_batch", "dq_queue", "coexistence_bridge")
OPERATORS = ("equals", "not_equals", "in", "not_in", "glob", "prefix", "less_than", "less_or_equal",
             "greater_than", "greater_or_equal", "between", "is_null", "not_null", "matches")
DEFAULT_RULES_PATH = Path(__file__).with_name("rules") / "default.yaml"

_SET_OPS = {"equals", "not_equals", "in", "not_in"}
_ORDER_OPS = {"less_than", "less_or_equal", "greater_than", "greater_or_equal", "between"}
_TEXT_OPS = {"glob", "prefix", "matches"}
_NULL_OPS = {"is_null", "not_null"}


@dataclass(frozen=True)
class RoutingField:
    name: str
    type: pa.DataType
    codes: tuple[str, ...] | None = None

    @property
    def kind(self) -> str:
        if pa.types.is_string(self.type) or pa.types.is_large_string(self.type):
            return "code" if self.codes else "text"
        if pa.types.is_date(self.type):
            return "date"
        if pa.types.is_decimal(self.type):
            return "decimal"
        if pa.types.is_integer(self.type):
            return "integer"
        raise TypeError(f"unsupported routing field type {self.type}")  # pragma: no cover


ROUTING_FIELDS: dict[str, RoutingField] = {
    **{c.name: RoutingField(c.name, c.type, c.codes) for c in POLICIES.columns},
    "dq_score": RoutingField("dq_score", pa.decimal128(5, 2)),
    "dq_findings": RoutingField("dq_findings", pa.string()),
}


class RuleSetError(InputError):
    """A rule set file that cannot be used; ``problems`` lists each ``FILE line N: rule 'X': problem`` (the line
    when the rules were read from a file); ``file``, ``line`` and ``field`` are the first problem's."""

    def __init__(self, problems: list[str] | str, *, file: str | None = None, line: int | None = None,
                 column: int | None = None, field: str | None = None, expected: str | None = None,
                 hint: str | None = None):
        if isinstance(problems, str):  # one problem, said as every InputError is (`load_yaml` raises these)
            super().__init__(problems, file=file, line=line, column=column, field=field, expected=expected, hint=hint)
            self.problems = [str(self)]
        else:  # several, each naming its file and line already
            super().__init__("\n".join(problems))
            self.problems = list(problems)
            self.file, self.line, self.field = file, line, field


# --------------------------------------------------------------------------- the model (shape)

_STRICT = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Predicate(BaseModel):
    model_config = _STRICT
    field: StrictStr
    operator: Literal[OPERATORS]  # type: ignore[valid-type]
    value: Any = None


class AllOf(BaseModel):
    model_config = _STRICT
    all: tuple["Condition", ...] = Field(min_length=1)


class AnyOf(BaseModel):
    model_config = _STRICT
    any: tuple["Condition", ...] = Field(min_length=1)


class NotOf(BaseModel):
    model_config = _STRICT
    not_: "Condition" = Field(alias="not")


def _condition_tag(v: Any) -> str | None:
    if v is True:
        return "<true>"
    if isinstance(v, BaseModel):
        return {Predicate: "<test>", AllOf: "<all>", AnyOf: "<any>", NotOf: "<not>"}.get(type(v))
    if isinstance(v, dict):
        for key, tag in (("all", "<all>"), ("any", "<any>"), ("not", "<not>")):
            if key in v:
                return tag
        if {"field", "operator", "value"} & set(v):
            return "<test>"
    return None


Condition = Annotated[
    Union[Annotated[Literal[True], Tag("<true>")], Annotated[Predicate, Tag("<test>")],
          Annotated[AllOf, Tag("<all>")], Annotated[AnyOf, Tag("<any>")], Annotated[NotOf, Tag("<not>")]],
    Discriminator(_condition_tag, custom_error_type="condition",
                  custom_error_message="a condition is `true`, a test {field, operator, value}, "
                                       "or one of all: [...], any: [...], not: {...}"),
]
AllOf.model_rebuild()
AnyOf.model_rebuild()
NotOf.model_rebuild()


class Rule(BaseModel):
    model_config = _STRICT
    name: StrictStr = Field(min_length=1)
    priority: StrictInt = Field(ge=0)
    condition: Condition
    target: StrictStr
    description: str | None = None

    @field_validator("target")
    @classmethod
    def _known_target(cls, v: str) -> str:
        if v not in TARGETS:
            raise ValueError(f"unknown target {v!r} (expected one of {', '.join(TARGETS)})")
        return v

    @property
    def is_default(self) -> bool:
        return self.condition is True

    def canonical(self) -> dict:
        """What the hash covers: name, priority, condition, target (not the description)."""
        return self.model_dump(mode="json", by_alias=True, exclude={"description"})


class _RuleSetFile(BaseModel):
    model_config = _STRICT
    rule_set: StrictStr = Field(min_length=1)
    version: StrictStr = Field(pattern=r"^\d+\.\d+\.\d+([-+][0-9A-Za-z.-]+)?$")
    description: str = ""
    rules: list[Rule] = Field(min_length=1)

    @field_validator("version", mode="before")
    @classmethod
    def _version_text(cls, v: Any) -> Any:
        if not isinstance(v, str):
            raise ValueError(f"version {v!r} must be text like 1.0.0 (quote it in YAML)")
        return v


@dataclass(frozen=True)
class RuleSet:
    name: str
    version: str
    description: str
    rules: tuple[Rule, ...]  # sorted by priority
    hash: str
    source: str = "<rules>"
    _compiled: tuple = dc_field(default=(), repr=False, compare=False)

    @property
    def fields(self) -> set[str]:
        """The routing-table columns the rules read."""
        out: set[str] = set()
        for node in self._compiled:
            out |= _fields(node)
        return out

    def rule(self, name: str) -> Rule:
        for r in self.rules:
            if r.name == name:
                return r
        raise KeyError(name)


# --------------------------------------------------------------------------- the semantic pass

@dataclass(frozen=True)
class _True:
    pass


@dataclass(frozen=True)
class _Test:
    field: str
    op: str
    values: tuple  # normalized python values: str / Decimal / date / int; (low, high) for between
    pattern: str | None = None  # RE2 for glob (translated) and matches; the prefix for prefix


@dataclass(frozen=True)
class _Bool:
    op: str  # all | any | not
    children: tuple


def _fields(node) -> set[str]:
    if isinstance(node, _Test):
        return {node.field}
    if isinstance(node, _Bool):
        return set().union(*(_fields(c) for c in node.children))
    return set()


def glob_to_regex(glob: str) -> str:
    """Shell-style glob (``*``, ``?``, ``[abc]``, ``[!abc]``) to an anchored RE2 pattern."""
    out, i = ["^"], 0
    while i < len(glob):
        ch = glob[i]
        if ch == "*":
            out.append(".*")
        elif ch == "?":
            out.append(".")
        elif ch == "[":
            j = i + 1
            if j < len(glob) and glob[j] == "!":
                j += 1
            if j < len(glob) and glob[j] == "]":
                j += 1
            j = glob.find("]", j)
            if j == -1:
                out.append(re.escape(ch))
            else:
                body = glob[i + 1:j]
                neg = body.startswith("!")
                body = body[1:] if neg else body
                body = body.replace("\\", "\\\\").replace("^", "\\^").replace("[", "\\[").replace("]", "\\]")
                out.append("[" + ("^" if neg else "") + body + "]")
                i = j
        else:
            out.append(re.escape(ch))
        i += 1
    out.append("$")
    return "(?s)" + "".join(out)


def _glob_literal_prefix(glob: str) -> str | None:
    """``ABC*`` → ``ABC`` when the glob is a plain prefix; else None."""
    if glob.endswith("*") and not any(c in glob[:-1] for c in "*?["):
        return glob[:-1]
    return None


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, Decimal)) and not isinstance(v, bool)


def _normalize(f: RoutingField, v: Any) -> Any:
    """The rule's value as the python value compared against the column; ValueError if it cannot be."""
    kind = f.kind
    if kind in ("text", "code"):
        if not isinstance(v, str):
            raise ValueError(f"value {v!r} for {f.name} must be text (quote it in YAML)")
        if kind == "code" and v not in f.codes:
            label = "status" if f.name == "status" else f.name
            raise ValueError(f"value {v!r} is not a {label} code (codes: {', '.join(f.codes)})")
        return v
    if kind == "date":
        if isinstance(v, dt.datetime):
            raise ValueError(f"value {v!r} for date field {f.name} must be a date (YYYY-MM-DD), not a timestamp")
        if isinstance(v, dt.date):
            return v
        if isinstance(v, str):
            try:
                return dt.date.fromisoformat(v) if re.fullmatch(r"\d{4}-\d{2}-\d{2}", v) else _bad_date(f, v)
            except ValueError:
                _bad_date(f, v)
        raise ValueError(f"value {v!r} for date field {f.name} must be an ISO date (YYYY-MM-DD)")
    if kind == "decimal":
        if not _is_number(v):
            raise ValueError(f"value {v!r} for numeric field {f.name} must be a number")
        try:
            d = Decimal(str(v)) if isinstance(v, float) else Decimal(v)
        except InvalidOperation:  # pragma: no cover
            raise ValueError(f"value {v!r} for numeric field {f.name} must be a number")
        if not d.is_finite():
            raise ValueError(f"value {v!r} for numeric field {f.name} must be a finite number")
        return d
    if kind == "integer":  # pragma: no cover - no integer routing fields today
        if isinstance(v, bool) or not (isinstance(v, int) or isinstance(v, float) and v.is_integer()):
            raise ValueError(f"value {v!r} for integer field {f.name} must be a whole number")
        return int(v)
    raise ValueError(f"unsupported field {f.name}")  # pragma: no cover


def _bad_date(f: RoutingField, v: str):
    raise ValueError(f"value {v!r} for date field {f.name} is not an ISO date (YYYY-MM-DD)")


def _check_regex(pattern: str) -> None:
    try:
        pc.match_substring_regex(pa.array([""], pa.string()), pattern=pattern)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise ValueError(f"malformed regex {pattern!r}: {e}") from None


def _compile_test(p: Predicate) -> _Test:
    f = ROUTING_FIELDS.get(p.field)
    if f is None:
        raise ValueError(f"unknown field {p.field!r} (not a column of the routing table)")
    op, v, kind = p.operator, p.value, f.kind
    if op in _NULL_OPS:
        if v is not None:
            raise ValueError(f"{op} takes no value (got {v!r})")
        return _Test(f.name, op, ())
    if v is None:
        raise ValueError(f"{op} on {f.name} needs a value")
    if op in _ORDER_OPS and kind not in ("date", "decimal", "integer"):
        raise ValueError(f"{op} needs a numeric or date field; {f.name} is text")
    if op in _TEXT_OPS and kind not in ("text", "code"):
        raise ValueError(f"{op} needs a text field; {f.name} is {kind}")
    if op in ("in", "not_in"):
        if not isinstance(v, list) or not v:
            raise ValueError(f"{op} needs a non-empty list of values, got {v!r}")
        return _Test(f.name, op, tuple(dict.fromkeys(_normalize(f, x) for x in v)))
    if op == "between":
        if not isinstance(v, list) or len(v) != 2:
            raise ValueError(f"between needs two values [low, high], got {v!r}")
        low, high = (_normalize(f, x) for x in v)
        if low > high:
            raise ValueError(f"between values are not ordered: {v[0]!r} > {v[1]!r}")
        return _Test(f.name, op, (low, high))
    if isinstance(v, (list, dict)):
        raise ValueError(f"{op} needs a single value, got {v!r}")
    if op in ("glob", "prefix"):
        if not isinstance(v, str):
            raise ValueError(f"{op} needs a text pattern, got {v!r}")
        pattern = glob_to_regex(v) if op == "glob" else v
        if op == "glob":
            _check_regex(pattern)
        if f.codes:
            if not any((re.search(pattern, c) if op == "glob" else c.startswith(v)) for c in f.codes):
                raise ValueError(f"{op} {v!r} matches no {f.name} code")
        return _Test(f.name, op, (v,), pattern)
    if op == "matches":
        if not isinstance(v, str):
            raise ValueError(f"matches needs a regex string, got {v!r}")
        _check_regex(v)
        return _Test(f.name, op, (v,), v)
    return _Test(f.name, op, (_normalize(f, v),))  # equals, not_equals, comparisons


def _compile(cond) -> Any:
    if cond is True:
        return _True()
    if isinstance(cond, Predicate):
        return _compile_test(cond)
    if isinstance(cond, AllOf):
        return _Bool("all", tuple(_compile(c) for c in cond.all))
    if isinstance(cond, AnyOf):
        return _Bool("any", tuple(_compile(c) for c in cond.any))
    if isinstance(cond, NotOf):
        return _Bool("not", (_compile(cond.not_),))
    raise TypeError(cond)  # pragma: no cover


# --- shadowing: implies(a, b) is True only when every row matching a surely matches b ----------

def _interval(t: _Test):
    """(low, low_inclusive, high, high_inclusive) for ordering/point tests; None otherwise."""
    v = t.values
    return {
        "less_than": (None, False, v[0], False) if v else None,
        "less_or_equal": (None, False, v[0], True) if v else None,
        "greater_than": (v[0], False, None, False) if v else None,
        "greater_or_equal": (v[0], True, None, False) if v else None,
        "between": (v[0], True, v[1], True) if len(v) == 2 else None,
        "equals": (v[0], True, v[0], True) if v else None,
    }.get(t.op)


def _within(inner, outer) -> bool:
    lo, lo_in, hi, hi_in = inner
    olo, olo_in, ohi, ohi_in = outer
    if olo is not None:
        if lo is None or lo < olo or (lo == olo and lo_in and not olo_in):
            return False
    if ohi is not None:
        if hi is None or hi > ohi or (hi == ohi and hi_in and not ohi_in):
            return False
    return True


def _point_set(t: _Test) -> set | None:
    if t.op == "equals":
        return {t.values[0]}
    if t.op == "in":
        return set(t.values)
    return None


def _test_implies(a: _Test, b: _Test) -> bool:
    if a == b:
        return True
    if a.field != b.field:
        return False
    if b.op == "not_null":
        return a.op != "is_null"  # every other test needs a value
    if a.op in _NULL_OPS or b.op in _NULL_OPS:
        return False
    pa_, pb = _point_set(a), _point_set(b)
    if pa_ is not None and pb is not None:
        return pa_ <= pb
    if pa_ is not None and b.op in ("not_equals", "not_in"):
        return not (pa_ & set(b.values))
    if a.op in ("not_equals", "not_in") and b.op in ("not_equals", "not_in"):
        return set(b.values) <= set(a.values)
    if pa_ is not None and b.op in ("glob", "prefix") and all(isinstance(x, str) for x in pa_):
        rx = re.compile(b.pattern) if b.op == "glob" else None
        return all((rx.search(x) if rx else x.startswith(b.pattern)) for x in pa_)
    if a.op == "prefix" and b.op == "prefix":
        return a.values[0].startswith(b.values[0])
    ia, ib = _interval(a), _interval(b)
    if ib is not None and b.op != "equals":
        if ia is not None:
            return _within(ia, ib)
        if a.op == "in":
            return all(_within((x, True, x, True), ib) for x in a.values)
    return False


def _implies(a, b) -> bool:
    if isinstance(b, _True) or a == b:
        return True
    if isinstance(a, _True):
        return False
    if isinstance(b, _Bool) and b.op == "all":
        return all(_implies(a, c) for c in b.children)
    if isinstance(a, _Bool) and a.op == "any":
        return all(_implies(c, b) for c in a.children)
    if isinstance(a, _Bool) and a.op == "all" and any(_implies(c, b) for c in a.children):
        return True
    if isinstance(b, _Bool) and b.op == "any" and any(_implies(a, c) for c in b.children):
        return True
    if isinstance(a, _Bool) and a.op == "not" and isinstance(b, _Bool) and b.op == "not":
        return _implies(b.children[0], a.children[0]) and _definite(b.children[0])
    if isinstance(a, _Test) and isinstance(b, _Test):
        return _test_implies(a, b)
    return False


def _definite(node) -> bool:
    """True when the node never yields null (so not/not contraposition is sound)."""
    return isinstance(node, _Test) and node.op in _NULL_OPS


# --------------------------------------------------------------------------- loading

def _loc_rule(raw: Any, loc: tuple) -> tuple[str | None, tuple]:
    if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
        name = None
        try:
            name = raw["rules"][loc[1]].get("name")
        except (AttributeError, IndexError, KeyError, TypeError):
            pass
        return (str(name) if name is not None else f"#{loc[1] + 1}"), loc[2:]
    return None, loc


class _Problems:
    """The problems found in a rule set, each ``FILE line N: rule 'X': problem`` (the line when the rules came
    from a file), raised together as one :class:`RuleSetError`."""

    def __init__(self, source: str, document: YamlDocument | None):
        self.source, self.document = source, document
        self.found: list[tuple[str, int | None, str | None]] = []

    def add(self, problem: str, *loc: str | int, rule: str | None = None) -> None:
        line = self.document.line(*loc) if self.document else None
        where = f"{self.source} line {line}" if line else self.source
        self.found.append((f"{where}: " + (f"rule {rule!r}: " if rule else "") + problem, line, rule))

    def raise_any(self) -> None:
        if self.found:
            _, line, rule = self.found[0]
            raise RuleSetError([p for p, _, _ in self.found], file=self.source, line=line,
                               field=f"rule {rule!r}" if rule else None)


def _pydantic_problems(problems: _Problems, raw: Any, err: ValidationError) -> None:
    for e in err.errors():
        loc = tuple(e["loc"])
        rule, rest = _loc_rule(raw, loc)
        path = ".".join(str(p) for p in rest if not (isinstance(p, str) and p.startswith("<")))
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        problems.add(f"{path + ': ' if path else ''}{msg}",
                     *(p for p in loc if not (isinstance(p, str) and p.startswith("<"))), rule=rule)


def parse_rule_set(data: Any, source: str = "<rules>", *, document: YamlDocument | None = None) -> RuleSet:
    """Validate a rule set already read from YAML/JSON; raises :class:`RuleSetError`. `document` (from
    `load_yaml`) lets each problem name its line."""
    problems = _Problems(source, document)
    if not isinstance(data, dict):
        problems.add("a rule set is a mapping with rule_set, version and rules")
        problems.raise_any()
    spec = None
    try:
        spec = _RuleSetFile.model_validate(data)
    except ValidationError as e:
        _pydantic_problems(problems, data, e)
    if spec is None:
        problems.raise_any()

    rules = sorted(spec.rules, key=lambda r: r.priority)
    index = {id(r): i for i, r in enumerate(spec.rules)}  # where each rule is in the file
    compiled: dict[str, Any] = {}
    seen_names: dict[str, Rule] = {}
    seen_priority: dict[int, Rule] = {}
    for i, r in enumerate(spec.rules):  # file order, so "used twice" points at the later one
        if r.name in seen_names:
            problems.add(f"duplicate rule name (priorities {seen_names[r.name].priority} and {r.priority})",
                         "rules", i, "name", rule=r.name)
        else:
            seen_names[r.name] = r
        if r.priority in seen_priority:
            problems.add(f"duplicate priority {r.priority} (also rule {seen_priority[r.priority].name!r})",
                         "rules", i, "priority", rule=r.name)
        else:
            seen_priority[r.priority] = r
        try:
            compiled[id(r)] = _compile(r.condition)
        except ValueError as e:
            problems.add(str(e), "rules", i, "condition", rule=r.name)

    defaults = [r for r in rules if r.is_default]
    if not defaults:
        problems.add("no default route: add one rule with `condition: true` and the highest priority number", "rules")
    elif len(defaults) > 1:
        problems.add(f"more than one default route (`condition: true`): {', '.join(repr(d.name) for d in defaults)}",
                     "rules", index[id(defaults[1])], rule=defaults[1].name)
    if defaults and defaults[0] is not rules[-1] and defaults[0].priority != rules[-1].priority:
        problems.add(f"the default route must have the highest priority number ({defaults[0].priority} < "
                     f"{rules[-1].priority} of rule {rules[-1].name!r})", "rules", index[id(defaults[0])], "priority",
                     rule=defaults[0].name)

    for i, later in enumerate(rules):
        if id(later) not in compiled:
            continue
        for earlier in rules[:i]:
            if id(earlier) not in compiled or earlier.priority == later.priority:
                continue
            if _implies(compiled[id(later)], compiled[id(earlier)]):
                problems.add(f"rule {later.name} is shadowed by rule {earlier.name} (priority {earlier.priority}): "
                             "it can never match", "rules", index[id(later)], "condition", rule=later.name)
                break

    problems.raise_any()
    canonical = json.dumps([r.canonical() for r in rules], sort_keys=True, separators=(",", ":"),
                           ensure_ascii=False, default=str)
    return RuleSet(
        name=spec.rule_set, version=spec.version, description=spec.description, rules=tuple(rules),
        hash=hashlib.sha256(canonical.encode("utf-8")).hexdigest(), source=source,
        _compiled=tuple(compiled[id(r)] for r in rules),
    )


def load_rule_set(path: str | Path) -> RuleSet:
    """Read and validate a rule set file (YAML, read safely: `legacy.errors.load_yaml`); raises
    :class:`RuleSetError` naming the file, the line and the rule."""
    path = Path(path)
    document = load_yaml(path, error=RuleSetError)
    return parse_rule_set(document.data, source=str(path), document=document)


# --------------------------------------------------------------------------- evaluation

DECISION_SCHEMA = pa.schema([
    pa.field("policy_id", pa.string()),
    pa.field("target", pa.string()),
    pa.field("rule_name", pa.string()),
    pa.field("priority", pa.int32()),
    pa.field("rule_set", pa.string()),
    pa.field("rule_set_version", pa.string()),
    pa.field("rule_set_hash", pa.string()),
])

_NULL_BOOL = pa.scalar(None, pa.bool_())


def _scalar(f: RoutingField, col_type: pa.DataType, v: Any) -> pa.Scalar:
    if isinstance(v, Decimal):
        try:
            return pa.scalar(v, type=col_type)
        except (pa.ArrowInvalid, pa.ArrowTypeError):  # more digits than the column: compare exactly anyway
            return pa.scalar(v)
    if isinstance(v, dt.date):
        return pa.scalar(v, type=pa.date32())
    return pa.scalar(v, type=col_type)


def _value_set(col_type: pa.DataType, values: tuple) -> pa.Array:
    if values and isinstance(values[0], Decimal):
        try:
            return pa.array(values, type=col_type)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            return pa.array([v for v in values if _fits(v, col_type)], type=col_type)
    if values and isinstance(values[0], dt.date):
        return pa.array(values, type=pa.date32())
    return pa.array(values, type=col_type)


def _fits(v: Decimal, t: pa.DataType) -> bool:
    try:
        pa.scalar(v, type=t)
        return True
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return False  # a value the column cannot hold can never be equal to one of its values


class _Columns:
    """The table's columns, cast once to the routing field type (e.g. large_string → string)."""

    def __init__(self, table: pa.Table):
        self.table = table
        self._cache: dict[str, Any] = {}

    def __getitem__(self, name: str):
        if name not in self._cache:
            if name not in self.table.column_names:
                raise KeyError(f"routing needs column {name!r}, which the policies table does not have")
            col = self.table.column(name)
            want = ROUTING_FIELDS[name].type
            if pa.types.is_dictionary(col.type):
                col = col.cast(col.type.value_type)
            if col.type != want and not (pa.types.is_decimal(col.type) and pa.types.is_decimal(want)):
                col = col.cast(want)
            self._cache[name] = col
        return self._cache[name]


def _mask(node, cols: _Columns, n: int):
    """A nullable boolean array: true / false / null (unknown)."""
    if isinstance(node, _True):
        return pa.array(np.ones(n, dtype=bool))
    if isinstance(node, _Bool):
        parts = [_mask(c, cols, n) for c in node.children]
        if node.op == "not":
            return pc.invert(parts[0])
        fn = pc.and_kleene if node.op == "all" else pc.or_kleene
        out = parts[0]
        for p in parts[1:]:
            out = fn(out, p)
        return out
    t: _Test = node
    col = cols[t.field]
    f = ROUTING_FIELDS[t.field]
    op = t.op
    if op == "is_null":
        return pc.is_null(col)
    if op == "not_null":
        return pc.is_valid(col)
    if op in ("in", "not_in"):
        hit = pc.is_in(col, value_set=_value_set(col.type, t.values))
        if col.null_count:
            hit = pc.if_else(pc.is_valid(col), hit, _NULL_BOOL)
        return hit if op == "in" else pc.invert(hit)
    if op == "between":
        return pc.and_kleene(pc.greater_equal(col, _scalar(f, col.type, t.values[0])),
                             pc.less_equal(col, _scalar(f, col.type, t.values[1])))
    if op == "glob":
        literal = _glob_literal_prefix(t.values[0])
        if literal is not None:
            return pc.starts_with(col, pattern=literal)
        return pc.match_substring_regex(col, pattern=t.pattern)
    if op == "prefix":
        return pc.starts_with(col, pattern=t.pattern)
    if op == "matches":
        return pc.match_substring_regex(col, pattern=t.pattern)
    fn = {"equals": pc.equal, "not_equals": pc.not_equal, "less_than": pc.less,
          "less_or_equal": pc.less_equal, "greater_than": pc.greater,
          "greater_or_equal": pc.greater_equal}[op]
    return fn(col, _scalar(f, col.type, t.values[0]))


def _to_numpy_bool(mask) -> np.ndarray:
    filled = pc.fill_null(mask, False)
    if isinstance(filled, pa.ChunkedArray):
        filled = filled.combine_chunks() if filled.num_chunks != 1 else filled.chunk(0)
    return filled.to_numpy(zero_copy_only=False)


def evaluate(rule_set: RuleSet, policies: pa.Table) -> pa.Table:
    """Route every policy: one decision row per input row, same order (see ``DECISION_SCHEMA``)."""
    n = policies.num_rows
    if "policy_id" not in policies.column_names:
        raise KeyError("routing needs column 'policy_id', which the policies table does not have")
    cols = _Columns(policies)
    matrix = np.empty((len(rule_set.rules), n), dtype=bool)
    for i, node in enumerate(rule_set._compiled):  # one whole-column mask per rule
        matrix[i] = _to_numpy_bool(_mask(node, cols, n))
    matched = matrix.any(axis=0)
    if n and not matched.all():  # pragma: no cover - a validated rule set ends with a default route
        raise RuntimeError("some policies matched no rule")
    winner = pa.array(matrix.argmax(axis=0).astype(np.int32) if n else np.zeros(0, np.int32))
    names = pa.array([r.name for r in rule_set.rules], pa.string())
    targets = pa.array([r.target for r in rule_set.rules], pa.string())
    priorities = pa.array([r.priority for r in rule_set.rules], pa.int32())
    zeros = pa.array(np.zeros(n, dtype=np.int32))

    def const(v: str) -> pa.Array:
        return pc.take(pa.array([v], pa.string()), zeros)

    policy_id = policies.column("policy_id")
    if policy_id.type != pa.string():
        policy_id = policy_id.cast(pa.string())
    return pa.table([policy_id, pc.take(targets, winner), pc.take(names, winner), pc.take(priorities, winner),
                     const(rule_set.name), const(rule_set.version), const(rule_set.hash)], schema=DECISION_SCHEMA)


# --------------------------------------------------------------------------- what-if

@dataclass
class WhatIf:
    """How a candidate rule set's decisions differ from the current ones, policy by policy."""
    total: int
    unchanged: int
    moved: int
    by_target: dict[tuple[str, str], int]  # (from_target, to_target) -> policies, moves only
    by_rule: list[tuple[tuple[str, str], int]]  # ((old_rule, new_rule), policies), rule or target changed
    only_current: int = 0
    only_candidate: int = 0
    current_rule_set: str | None = None  # "name version hash[:12]"
    candidate_rule_set: str | None = None
    _policy_id: pa.Array | None = dc_field(default=None, repr=False)
    _from: pa.Array | None = dc_field(default=None, repr=False)
    _to: pa.Array | None = dc_field(default=None, repr=False)

    def moved_policy_ids(self, from_target: str | None = None, to_target: str | None = None,
                         limit: int | None = 100) -> list[str]:
        """Policies whose target changed (optionally only from/to the given targets), in input order."""
        if self._policy_id is None:
            return []
        m = pc.not_equal(self._from, self._to)
        if from_target is not None:
            m = pc.and_(m, pc.equal(self._from, from_target))
        if to_target is not None:
            m = pc.and_(m, pc.equal(self._to, to_target))
        ids = self._policy_id.filter(m)
        if limit is not None:
            ids = ids.slice(0, limit)
        return ids.to_pylist()

    def to_rows(self) -> list[dict]:
        """One row per (from_target, to_target) move, largest first; for a CLI table."""
        rows = []
        for (src, dst), count in sorted(self.by_target.items(), key=lambda kv: (-kv[1], kv[0])):
            rows.append({"from_target": src, "to_target": dst, "policies": count,
                         "percent": round(100.0 * count / self.total, 2) if self.total else 0.0})
        return rows

    def summary(self) -> str:
        return (f"{self.total} policies: {self.unchanged} unchanged, {self.moved} moved"
                + (f", {self.only_current} only in current" if self.only_current else "")
                + (f", {self.only_candidate} only in candidate" if self.only_candidate else ""))


def _rule_set_label(t: pa.Table) -> str | None:
    if t.num_rows == 0 or "rule_set" not in t.column_names:
        return None
    parts = [t.column(c)[0].as_py() for c in ("rule_set", "rule_set_version", "rule_set_hash")
             if c in t.column_names]
    if len(parts) == 3:
        parts[2] = (parts[2] or "")[:12]
    return " ".join(str(p) for p in parts)


def compare(current: pa.Table, candidate: pa.Table, top: int = 20) -> WhatIf:
    """What-if: two decision tables (from :func:`evaluate`) for the same policies, joined on policy_id."""
    for name, t in (("current", current), ("candidate", candidate)):
        missing = {"policy_id", "target", "rule_name"} - set(t.column_names)
        if missing:
            raise ValueError(f"{name} decisions lack columns {sorted(missing)}")
    only_cur = only_cand = 0
    if current.num_rows == candidate.num_rows and current.column("policy_id").equals(candidate.column("policy_id")):
        ids = current.column("policy_id")
        f_t, t_t = current.column("target"), candidate.column("target")
        f_r, t_r = current.column("rule_name"), candidate.column("rule_name")
    else:
        for name, t in (("current", current), ("candidate", candidate)):
            if pc.count_distinct(t.column("policy_id")).as_py() != t.num_rows:
                raise ValueError(f"{name} decisions repeat policy ids and are not row-aligned with the other "
                                 f"table: cannot join on policy_id")
        left = current.select(["policy_id", "target", "rule_name"]).rename_columns(
            ["policy_id", "from_target", "from_rule"])
        right = candidate.select(["policy_id", "target", "rule_name"]).rename_columns(
            ["policy_id", "to_target", "to_rule"])
        joined = left.join(right, "policy_id", join_type="inner")
        only_cur = current.num_rows - joined.num_rows
        only_cand = candidate.num_rows - joined.num_rows
        ids = joined.column("policy_id")
        f_t, t_t = joined.column("from_target"), joined.column("to_target")
        f_r, t_r = joined.column("from_rule"), joined.column("to_rule")

    ids, f_t, t_t, f_r, t_r = (c.combine_chunks() if isinstance(c, pa.ChunkedArray) else c
                               for c in (ids, f_t, t_t, f_r, t_r))
    total = len(ids)
    moved_mask = pc.fill_null(pc.not_equal(f_t, t_t), False)
    moved = pc.sum(moved_mask).as_py() or 0
    pairs = pa.table({"f": f_t, "t": t_t}).filter(moved_mask)
    by_target = {}
    if pairs.num_rows:
        g = pairs.group_by(["f", "t"]).aggregate([([], "count_all")])
        by_target = {(a, b): c for a, b, c in zip(g.column("f").to_pylist(), g.column("t").to_pylist(),
                                                    g.column("count_all").to_pylist())}
    changed = pc.or_(moved_mask, pc.fill_null(pc.not_equal(f_r, t_r), False))
    rpairs = pa.table({"f": f_r, "t": t_r}).filter(changed)
    by_rule: list = []
    if rpairs.num_rows:
        g = rpairs.group_by(["f", "t"]).aggregate([([], "count_all")])
        items = [((a, b), c) for a, b, c in zip(g.column("f").to_pylist(), g.column("t").to_pylist(),
                                                  g.column("count_all").to_pylist())]
        by_rule = sorted(items, key=lambda kv: (-kv[1], kv[0]))[:top]
    return WhatIf(total=total, unchanged=total - moved, moved=moved, by_target=by_target, by_rule=by_rule,
                  only_current=only_cur, only_candidate=only_cand,
                  current_rule_set=_rule_set_label(current), candidate_rule_set=_rule_set_label(candidate),
                  _policy_id=ids, _from=f_t, _to=t_t)


def condition_fields(condition: Any) -> set[str]:
    """The fields a condition of the rule language reads (so that callers read only those columns)."""
    if isinstance(condition, dict):
        if "field" in condition:
            return {str(condition["field"])}
        return set().union(*(condition_fields(c) for key in ("all", "any") for c in condition.get(key, ())),
                           condition_fields(condition.get("not")))
    return set()


def selection_mask(condition: Any, policies: pa.Table, source: str = "<selection>") -> np.ndarray:
    """Which policies a condition of the rule language selects (wave criteria use this): a boolean array.

    The condition is validated exactly like a routing rule's (errors name `source`); `true` selects all."""
    if condition is True:
        return np.ones(policies.num_rows, dtype=bool)
    rule_set = parse_rule_set({"rule_set": "selection", "version": "0.0.0", "rules": [
        {"name": "selected", "priority": 1, "condition": condition, "target": "new_platform"},
        {"name": "not_selected", "priority": 2, "condition": True, "target": "dq_queue"}]}, source)
    return np.asarray(evaluate(rule_set, policies).column("rule_name").to_numpy(zero_copy_only=False) == "selected")
