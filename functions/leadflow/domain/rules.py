"""Rules as data: the versioned YAML model that scoring and the lifecycle evaluate.

The model validates a rules file completely at load time, so a typo is a clear
error naming the rule and the field, never a silent zero at 3 a.m.
"""

from __future__ import annotations

import re
from functools import cached_property
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from leadflow.domain.errors import RulesError
from leadflow.domain.events import EVENT_TYPES

Stage = Literal["subscriber", "lead", "mql", "sql", "opportunity", "customer", "evangelist"]
STAGES: tuple[str, ...] = Stage.__args__  # type: ignore[attr-defined]
Grade = Literal["A", "B", "C", "D"]
GRADES = ("D", "C", "B", "A")  # ascending

_ID = r"^[a-z][a-z0-9_]{0,63}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Condition(_Strict):
    """One test on a trait, an event property, the email's domain or the event type.

    String comparisons ignore case. `contains_any` is a substring test; `words_any`
    matches whole words (so "vp" matches "VP Sales" but not "MVP").
    """

    event: str | None = None
    trait: str | None = None
    property: str | None = None
    email_domain: bool = False

    equals: Any = None
    in_: list[Any] | None = Field(default=None, alias="in")
    not_in: list[Any] | None = None
    contains_any: list[str] | None = None
    words_any: list[str] | None = None
    suffix_any: list[str] | None = None
    matches: str | None = None
    gte: float | None = None
    lte: float | None = None
    exists: bool | None = None

    all: list["Condition"] | None = None
    any: list["Condition"] | None = None

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("event")
    @classmethod
    def _event(cls, value: str | None) -> str | None:
        if value is not None and value not in EVENT_TYPES:
            raise ValueError(f"unknown event type {value!r}; expected one of {', '.join(EVENT_TYPES)}")
        return value

    @field_validator("matches")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"matches is not a valid regular expression: {exc}") from None
        return value

    @model_validator(mode="after")
    def _shape(self) -> "Condition":
        subjects = [s for s in ("trait", "property") if getattr(self, s)] + (["email_domain"] if self.email_domain else [])
        ops = self.operators()
        if len(subjects) > 1:
            raise ValueError(f"a condition tests one subject, got {', '.join(subjects)}")
        if ops and not subjects:
            raise ValueError("an operator needs a subject: trait, property or email_domain")
        if subjects and not ops:
            raise ValueError(f"{subjects[0]} needs an operator (equals, in, not_in, contains_any, words_any, suffix_any, matches, gte, lte, exists)")
        if not subjects and not self.event and not self.all and not self.any:
            raise ValueError("empty condition")
        return self

    def operators(self) -> list[str]:
        names = ("equals", "in_", "not_in", "contains_any", "words_any", "suffix_any", "matches", "gte", "lte", "exists")
        return [n for n in names if getattr(self, n) is not None]

    @cached_property
    def _word_re(self) -> re.Pattern | None:
        if not self.words_any:
            return None
        alts = "|".join(re.escape(w.lower()) for w in self.words_any)
        return re.compile(rf"(?<![a-z0-9])(?:{alts})(?![a-z0-9])")

    @cached_property
    def _regex_c(self) -> re.Pattern | None:
        return re.compile(self.matches, re.IGNORECASE) if self.matches else None


Condition.model_rebuild()


class FitRule(_Strict):
    id: str = Field(pattern=_ID)
    description: str = ""
    when: Condition
    points: int = Field(ge=-1000, le=1000)
    group: str | None = Field(default=None, pattern=_ID)


class EngagementRule(_Strict):
    id: str = Field(pattern=_ID)
    description: str = ""
    when: Condition
    points: float = Field(ge=-1000, le=1000)
    half_life_days: float | None = Field(default=None, gt=0, le=3650)
    max_age_days: float = Field(default=365, gt=0, le=3650)
    cap: float | None = Field(default=None, gt=0)
    conversion: bool = False
    hand_raise: bool = False

    @model_validator(mode="after")
    def _needs_event(self) -> "EngagementRule":
        if not _mentions_event(self.when):
            raise ValueError("an engagement rule must name an event type in `when` (event: …)")
        return self


def _mentions_event(cond: Condition) -> bool:
    return bool(cond.event) or any(_mentions_event(c) for c in (cond.all or []) + (cond.any or []))


class RepeatRule(_Strict):
    id: str = Field(pattern=_ID)
    description: str = ""
    of: str = Field(pattern=_ID)
    min_count: int = Field(ge=2, le=1000)
    within_days: float = Field(gt=0, le=3650)
    points: float = Field(ge=-1000, le=1000)


class Engagement(_Strict):
    rules: list[EngagementRule]
    repeats: list[RepeatRule] = Field(default_factory=list)


class Fit(_Strict):
    grades: dict[Literal["A", "B", "C"], int]
    rules: list[FitRule]

    @model_validator(mode="after")
    def _ordered(self) -> "Fit":
        g = self.grades
        if set(g) != {"A", "B", "C"}:
            raise ValueError("grades must give minimum points for A, B and C (below C is D)")
        if not g["A"] > g["B"] > g["C"]:
            raise ValueError("grades must be strictly decreasing: A > B > C")
        return self


class IntentRule(_Strict):
    """Intent validation: a lead matching this is disqualified (never handed to sales)."""

    id: str = Field(pattern=_ID)
    reason: str = Field(pattern=_ID)
    description: str = ""
    when: Condition


class Threshold(_Strict):
    min_fit_grade: Grade
    min_engagement: float


class SqlThreshold(Threshold):
    hand_raise_within_days: float = Field(default=30, gt=0)


class InstantTrigger(_Strict):
    id: str = Field(pattern=_ID)
    description: str = ""
    when: Condition
    to: Literal["mql", "sql"] = "sql"
    max_age_days: float = Field(default=14, gt=0)
    require_bant: bool = True


class Bant(_Strict):
    """What counts as stated budget, authority, need and timeline: one trait condition
    each (e.g. `{trait: budget, not_in: ["no", none]}`); an absent trait never counts."""

    budget: Condition
    authority: Condition
    need: Condition
    timeline: Condition


class Lifecycle(_Strict):
    mql: Threshold
    sql: SqlThreshold
    instant: list[InstantTrigger] = Field(default_factory=list)
    bant: Bant
    evangelist_when: Condition | None = None


class Forms(_Strict):
    honeypot_fields: list[str] = Field(default_factory=lambda: ["_hp", "_gotcha"])
    kinds: dict[str, str] = Field(default_factory=dict)
    field_aliases: dict[str, str] = Field(default_factory=dict)


class Limits(_Strict):
    signals_per_rule: int = Field(default=50, ge=10, le=5000)
    seen_event_ids: int = Field(default=500, ge=100, le=20000)


class Rules(_Strict):
    version: str = Field(min_length=1, max_length=64)
    description: str = ""
    fit: Fit
    engagement: Engagement
    intent_validation: list[IntentRule] = Field(default_factory=list)
    lifecycle: Lifecycle
    forms: Forms = Field(default_factory=Forms)
    limits: Limits = Field(default_factory=Limits)

    @model_validator(mode="after")
    def _references(self) -> "Rules":
        ids = [r.id for r in self.fit.rules] + [r.id for r in self.engagement.rules] + [r.id for r in self.engagement.repeats]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"rule ids must be unique; repeated: {', '.join(dupes)}")
        engagement_ids = {r.id for r in self.engagement.rules}
        for rep in self.engagement.repeats:
            if rep.of not in engagement_ids:
                raise ValueError(f"repeat rule {rep.id!r} counts unknown engagement rule {rep.of!r}")
        return self

    @cached_property
    def engagement_by_id(self) -> dict[str, EngagementRule]:
        return {r.id: r for r in self.engagement.rules}


def parse_rules(data: Any, *, source: str = "rules") -> Rules:
    try:
        return Rules.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors(include_url=False, include_input=False):
            loc = _describe_loc(data, err["loc"])
            lines.append(f"{loc}: {err['msg'].removeprefix('Value error, ')}")
        raise RulesError(f"{source} is invalid:\n  " + "\n  ".join(lines), details=[{"reason": line} for line in lines]) from None


def _describe_loc(data: Any, loc: tuple) -> str:
    """`engagement.rules[3] (pricing_page).half_life_days` instead of a bare index path."""
    parts: list[str] = []
    node = data
    for p in loc:
        if isinstance(p, int):
            label = f"[{p}]"
            if isinstance(node, list) and p < len(node):
                node = node[p]
                if isinstance(node, dict) and "id" in node:
                    label += f" ({node['id']})"
            parts.append(label)
        else:
            key = "in" if p == "in_" else str(p)
            if key.startswith("function-") or key in {"Condition"}:
                continue
            parts.append(("." if parts else "") + key)
            node = node.get(key) if isinstance(node, dict) else None
    return "".join(parts) or "rules"
