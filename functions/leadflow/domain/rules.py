"""Rules as data: the versioned YAML model that scoring and the lifecycle evaluate.

The model validates a rules file completely at load time, so a typo is a clear
error naming the rule and the field, never a silent zero at 3 a.m.
"""

from __future__ import annotations

import re
from datetime import date, time
from functools import cached_property
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from leadflow.domain.errors import RulesError
from leadflow.domain.events import EVENT_TYPES, FORM_KINDS
from leadflow.domain.stages import Stage

Grade = Literal["A", "B", "C", "D"]
GRADES = ("D", "C", "B", "A")  # ascending

_ID = r"^[a-z][a-z0-9_]{0,63}$"
_ID_RE = re.compile(_ID)
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_SLACK_USER_RE = re.compile(r"^[UW][A-Z0-9]{2,30}$")
_HHMM_RE = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$")

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[str, ...] = Weekday.__args__  # type: ignore[attr-defined]  # index = date.weekday()
HandoffStage = Literal["mql", "sql"]
# Assignment.rule values that are not routing rule ids.
RESERVED_ROUTING_IDS = frozenset({"default_team", "unassigned"})
DEFAULT_REJECT_REASONS = ("no_budget", "no_authority", "no_need", "bad_timing", "not_reachable", "wrong_contact",
                          "competitor", "duplicate", "other")


LANGUAGES = (1, 2)
# What each declared trait or property type accepts; `country` is an ISO 3166-1 code or
# English name, kept as the alpha-2 code.
ValueType = Literal["string", "number", "boolean", "country"]
BUILTIN_TRAIT_TYPES: dict[str, str] = {"company_size": "number", "country": "country", "nps": "number"}
METRICS = ("score", "fit", "engagement")  # besides aggregates, what stage criteria can test


class _Strict(BaseModel):
    # NaN and infinities are never a threshold: `gte: .nan` would make every test pass.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _band_ok(model: Any) -> None:
    """`between: [low, high]` is inclusive and ordered, and not combined with gte/lte/gt/lt."""
    if model.between is not None:
        if len(model.between) != 2:
            raise ValueError("between takes two numbers: [low, high]")
        low, high = model.between
        if low > high:
            raise ValueError(f"between: low ({low:g}) is above high ({high:g})")
        if any(getattr(model, n) is not None for n in ("gte", "lte", "gt", "lt")):
            raise ValueError("use either between or gte/lte/gt/lt, not both")


def in_band(model: Any, value: float) -> bool:
    if model.between is not None and not model.between[0] <= value <= model.between[1]:
        return False
    if model.gte is not None and value < model.gte:
        return False
    if model.lte is not None and value > model.lte:
        return False
    if model.gt is not None and value <= model.gt:
        return False
    if model.lt is not None and value >= model.lt:
        return False
    return True


def band_text(model: Any) -> str:
    if model.between is not None:
        return f"between {model.between[0]:g} and {model.between[1]:g}"
    parts = [f"{word} {getattr(model, n):g}" for n, word in (("gte", "at least"), ("gt", "over"), ("lte", "at most"),
                                                              ("lt", "under")) if getattr(model, n) is not None]
    return " and ".join(parts)


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
    gt: float | None = None
    lt: float | None = None
    between: list[float] | None = None
    exists: bool | None = None

    all: list["Condition"] | None = None
    any: list["Condition"] | None = None

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, allow_inf_nan=False)

    @field_validator("event")
    @classmethod
    def _event(cls, value: str | None, info: ValidationInfo) -> str | None:
        known = (info.context or {}).get("event_types", EVENT_TYPES)
        if value is not None and value not in known:
            raise ValueError(f"unknown event type {value!r}; expected one of {', '.join(known)} "
                             "(declare your own under `events:`)")
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
            raise ValueError(f"{subjects[0]} needs an operator (equals, in, not_in, contains_any, words_any, suffix_any, "
                             "matches, gte, lte, gt, lt, between, exists)")
        _band_ok(self)
        if not subjects and not self.event and not self.all and not self.any:
            raise ValueError("empty condition")
        for name in ("in_", "not_in"):
            values = getattr(self, name) or []
            if any(isinstance(v, bool) for v in values) and any(isinstance(v, str) for v in values):
                raise ValueError(f"{name.rstrip('_')} mixes words and true/false: YAML reads bare NO, YES, ON, OFF "
                                 "as booleans; quote them (\"NO\" for Norway)")
        return self

    def operators(self) -> list[str]:
        names = ("equals", "in_", "not_in", "contains_any", "words_any", "suffix_any", "matches", "gte", "lte", "gt", "lt",
                 "between", "exists")
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


AggregateFn = Literal["count", "sum", "avg", "min", "max", "distinct"]


class Aggregate(_Strict):
    """A figure over a lead's events in a window: how many, how much in total, on average,
    at least, at most, how many different. With a half-life, each event counts by its
    decayed weight (count, sum and avg only: a decayed minimum means nothing)."""

    id: str = Field(pattern=_ID)
    description: str = ""
    of: Condition
    fn: AggregateFn
    property: str | None = Field(default=None, min_length=1, max_length=100)
    window_days: float = Field(default=30, gt=0, le=3650)
    half_life_days: float | None = Field(default=None, gt=0, le=3650)
    unit: str = Field(default="", max_length=20)

    @model_validator(mode="after")
    def _shape(self) -> "Aggregate":
        if not _mentions_event(self.of):
            raise ValueError("an aggregate must name an event type in `of` (event: …)")
        if self.fn == "count" and self.property is not None:
            raise ValueError("count counts events; it takes no property (use distinct to count different values)")
        if self.fn != "count" and self.property is None:
            raise ValueError(f"{self.fn} needs the event property it is computed over (property: …)")
        if self.half_life_days is not None and self.fn in ("min", "max", "distinct"):
            raise ValueError(f"half_life_days decays each event's weight; {self.fn} has no weights "
                             "(use window_days alone)")
        return self

    @cached_property
    def label(self) -> str:
        return self.description or self.id.replace("_", " ")


class EngagementRule(_Strict):
    """Points for behaviour. Either per matching event (`when`, decayed by half-life,
    capped), or for an aggregate's value (`aggregate`, within a band, or `per` unit)."""

    id: str = Field(pattern=_ID)
    description: str = ""
    when: Condition | None = None
    aggregate: str | None = Field(default=None, pattern=_ID)
    points: float = Field(ge=-1000, le=1000)
    # Points per full `per` units: of the aggregate's value, or of `value_of` (an event property).
    per: float | None = Field(default=None, gt=0)
    value_of: str | None = Field(default=None, min_length=1, max_length=100)
    gte: float | None = None
    lte: float | None = None
    gt: float | None = None
    lt: float | None = None
    between: list[float] | None = None
    half_life_days: float | None = Field(default=None, gt=0, le=3650)
    max_age_days: float = Field(default=365, gt=0, le=3650)
    cap: float | None = Field(default=None, gt=0)
    group: str | None = Field(default=None, pattern=_ID)
    conversion: bool = False
    hand_raise: bool = False

    @model_validator(mode="after")
    def _needs_event(self) -> "EngagementRule":
        if (self.when is None) == (self.aggregate is None):
            raise ValueError("an engagement rule has exactly one of `when` (per event) or `aggregate` (a figure "
                             "over the lead's events)")
        banded = any(getattr(self, n) is not None for n in ("gte", "lte", "gt", "lt", "between"))
        if self.when is not None:
            if not _mentions_event(self.when):
                raise ValueError("an engagement rule must name an event type in `when` (event: …)")
            if banded:
                raise ValueError("gte/lte/gt/lt/between bound an aggregate's value; for an event's property put "
                                 "the test in `when`")
            if (self.per is None) != (self.value_of is None):
                raise ValueError("per-unit points on events need both `per` (the unit) and `value_of` (the property)")
        else:
            if self.value_of is not None:
                raise ValueError("value_of is for event rules; an aggregate rule scores the aggregate's value")
            if self.half_life_days is not None:
                raise ValueError("an aggregate rule takes its decay from the aggregate (half_life_days there)")
            if self.conversion or self.hand_raise:
                raise ValueError("conversion and hand_raise mark events; put them on an event rule")
            if not banded and self.per is None:
                raise ValueError("an aggregate rule needs a band (gte, lte, gt, lt, between) or `per` unit")
        _band_ok(self)
        return self

    @property
    def label(self) -> str:
        return self.description or self.id.replace("_", " ")


def _mentions_event(cond: Condition) -> bool:
    return bool(cond.event) or any(_mentions_event(c) for c in (cond.all or []) + (cond.any or []))


class RepeatRule(_Strict):
    id: str = Field(pattern=_ID)
    description: str = ""
    of: str = Field(pattern=_ID)
    min_count: int = Field(ge=2, le=1000)
    within_days: float = Field(gt=0, le=3650)
    points: float = Field(ge=-1000, le=1000)


class Group(_Strict):
    """How the rules of one engagement group add up: only the best match (`best`, the
    default, as for fit), or their sum up to `cap`."""

    mode: Literal["best", "sum"] = "best"
    cap: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _cap(self) -> "Group":
        if self.mode == "best" and self.cap is not None:
            raise ValueError("cap limits a `sum` group; a `best` group already counts one rule")
        return self


class Engagement(_Strict):
    rules: list[EngagementRule]
    repeats: list[RepeatRule] = Field(default_factory=list)
    aggregates: list[Aggregate] = Field(default_factory=list)
    groups: dict[str, Group] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _references(self) -> "Engagement":
        agg_ids = {a.id for a in self.aggregates}
        for i, rule in enumerate(self.rules):
            if rule.aggregate is not None and rule.aggregate not in agg_ids:
                raise ValueError(f"rules[{i}] ({rule.id}).aggregate: unknown aggregate {rule.aggregate!r}; "
                                 f"aggregates: {', '.join(sorted(agg_ids)) or 'none declared'}")
        used = {r.group for r in self.rules if r.group}
        for name in self.groups:
            if name not in used:
                raise ValueError(f"groups.{name}: no engagement rule is in this group")
        return self


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


class Criterion(_Strict):
    """A stage criterion: a metric (score, fit, engagement or an aggregate's id) in a
    band, a minimum fit grade, a recent hand raise, or all/any of these."""

    metric: str | None = Field(default=None, pattern=_ID)
    fit_grade: Grade | None = None  # at least this grade
    hand_raise_within_days: float | None = Field(default=None, gt=0, le=3650)
    gte: float | None = None
    lte: float | None = None
    gt: float | None = None
    lt: float | None = None
    between: list[float] | None = None
    all: list["Criterion"] | None = None
    any: list["Criterion"] | None = None

    @model_validator(mode="after")
    def _shape(self) -> "Criterion":
        tests = [n for n in ("metric", "fit_grade", "hand_raise_within_days", "all", "any") if getattr(self, n) is not None]
        if len(tests) != 1:
            raise ValueError("a criterion is exactly one of metric, fit_grade, hand_raise_within_days, all, any"
                             + (f" (got {', '.join(tests)})" if tests else ""))
        banded = any(getattr(self, n) is not None for n in ("gte", "lte", "gt", "lt", "between"))
        if self.metric is not None and not banded:
            raise ValueError(f"metric {self.metric} needs a bound: gte, lte, gt, lt or between")
        if self.metric is None and banded:
            raise ValueError("gte/lte/gt/lt/between bound a metric (metric: score, fit, engagement or an aggregate)")
        if self.all is not None and not self.all or self.any is not None and not self.any:
            raise ValueError("all/any needs at least one criterion")
        _band_ok(self)
        return self

    def metrics(self) -> set[str]:
        out = {self.metric} if self.metric else set()
        for c in (self.all or []) + (self.any or []):
            out |= c.metrics()
        return out


Criterion.model_rebuild()


class Threshold(_Strict):
    """When a lead reaches the stage: `when` (language 2), or the fixed pair of a minimum
    fit grade and engagement that language 1 wrote."""

    min_fit_grade: Grade | None = None
    min_engagement: float | None = None
    when: Criterion | None = None

    @model_validator(mode="after")
    def _one_form(self) -> "Threshold":
        legacy = self.min_fit_grade is not None or self.min_engagement is not None
        if legacy and self.when is not None:
            raise ValueError("use either `when` or min_fit_grade/min_engagement, not both")
        if not legacy and self.when is None:
            raise ValueError("state when a lead reaches this stage: `when: …` (or min_fit_grade and min_engagement)")
        if legacy and (self.min_fit_grade is None or self.min_engagement is None):
            raise ValueError("min_fit_grade and min_engagement go together (or write `when: …`)")
        return self

    def _legacy(self) -> list[Criterion]:
        return [Criterion(fit_grade=self.min_fit_grade), Criterion(metric="engagement", gte=self.min_engagement)]

    @cached_property
    def criterion(self) -> Criterion:
        return self.when if self.when is not None else Criterion(all=self._legacy())


class SqlThreshold(Threshold):
    hand_raise_within_days: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _hand_raise(self) -> "SqlThreshold":
        if self.when is not None and self.hand_raise_within_days is not None:
            raise ValueError("with `when`, state the hand raise inside it: {hand_raise_within_days: 30}")
        return self

    @cached_property
    def criterion(self) -> Criterion:
        if self.when is not None:
            return self.when
        return Criterion(all=[Criterion(hand_raise_within_days=self.hand_raise_within_days or 30), *self._legacy()])


class InstantTrigger(_Strict):
    id: str = Field(pattern=_ID)
    description: str = ""
    when: Condition
    to: Literal["mql", "sql"] = "sql"
    max_age_days: float = Field(default=14, gt=0)
    require_bant: bool = True
    min_fit_grade: Grade | None = None  # only for leads at least this fit


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


def _redirect_url(value: str | None) -> str | None:
    """A thank-you page: an absolute http(s) URL fixed in the rules, never taken from a
    request, so the form route cannot be made to redirect anywhere else."""
    if value is None:
        return None
    from urllib.parse import urlsplit

    if value != value.strip() or any(c.isspace() or not c.isprintable() for c in value):
        raise ValueError(f"{value[:80]!r}: a redirect URL holds no spaces or control characters")
    try:
        parts = urlsplit(value)
        _ = parts.port  # a malformed port raises here, not in a visitor's browser
    except ValueError as exc:
        raise ValueError(f"{value[:80]!r}: not a URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{value[:80]!r}: a redirect URL is absolute, http:// or https:// with a host")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"{value[:80]!r}: a redirect URL carries no user name or password")
    if len(value) > 2000:
        raise ValueError("a redirect URL is at most 2000 characters")
    return value


class TimeTrap(_Strict):
    """A hidden field the page fills with the time it was rendered (Unix seconds, or
    milliseconds as `Date.now()` gives them). People take a few seconds to fill a form;
    scripts post at once, or replay a page scraped long ago. A post sooner than
    `min_seconds` after that time, stamped more than `max_age_hours` ago or in the future,
    or without the field, is answered like any other and not applied (as a filled
    honeypot is)."""

    field: str = Field(default="_ts", min_length=1, max_length=100)
    min_seconds: float = Field(default=3, ge=0, le=3600)
    max_age_hours: float = Field(default=24, gt=0, le=24 * 90)


class FormSettings(_Strict):
    """One website form's own settings (`forms.per_form.<form id>`); what it leaves out
    comes from the `forms` defaults."""

    redirect_url: str | None = None
    time_trap: TimeTrap | None = None

    @field_validator("redirect_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return _redirect_url(value)


class PublicPolicy(_Strict):
    """What a website form post (public: no key, no signature) may change on a lead.

    `traits`: `empty` (default) fills the traits a lead does not have and changes none it
    has; `unverified` may also replace a value an earlier form gave (the latest form post
    wins), never one a verified source gave; `any` treats a form like a verified source
    (last write wins by event time). Verified sources are the API with its key, signed
    webhooks, imports and sales.
    `protect_from`: from this stage on (default `mql`, a lead handed to sales) a form
    changes no value the lead holds and gives no trait that would disqualify it; what it
    could not set is listed on the lead for review (`review`). `null`: no protection."""

    traits: Literal["empty", "unverified", "any"] = "empty"
    protect_from: Stage | None = "mql"


class Forms(_Strict):
    honeypot_fields: list[str] = Field(default_factory=lambda: ["_hp", "_gotcha"])
    kinds: dict[str, str] = Field(default_factory=dict)
    field_aliases: dict[str, str] = Field(default_factory=dict)
    # Any form field (lower case) to the trait it sets: `current_occupation: occupation`.
    traits: dict[str, str] = Field(default_factory=dict)
    # Defaults for every form, and each form's own (`per_form.<form id>`).
    redirect_url: str | None = None
    time_trap: TimeTrap | None = None
    per_form: dict[str, FormSettings] = Field(default_factory=dict)
    public: PublicPolicy = Field(default_factory=PublicPolicy)

    @field_validator("redirect_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return _redirect_url(value)

    def settings_for(self, form_id: str) -> FormSettings:
        own = self.per_form.get(form_id)
        return FormSettings(redirect_url=own.redirect_url if own and own.redirect_url else self.redirect_url,
                            time_trap=own.time_trap if own and own.time_trap else self.time_trap)

    @field_validator("traits")
    @classmethod
    def _targets(cls, value: dict[str, str]) -> dict[str, str]:
        for field, trait in value.items():
            if not field.strip():
                raise ValueError("a form field name must not be empty")
            if not _ID_RE.match(trait):
                raise ValueError(f"{field!r} maps to {trait!r}: a trait name is snake_case (a-z, 0-9, _)")
        return {k.lower(): v for k, v in value.items()}


class EventSpec(_Strict):
    """An event type of your own (sms_sent, call_logged, chat_started, site_visit): what it
    means and the types of the properties it carries, checked on every event."""

    description: str = ""
    properties: dict[str, ValueType] = Field(default_factory=dict)


class Limits(_Strict):
    signals_per_rule: int = Field(default=50, ge=10, le=5000)
    events_per_aggregate: int = Field(default=200, ge=10, le=5000)
    seen_event_ids: int = Field(default=500, ge=100, le=20000)


class Handoff(_Strict):
    """Who hears about a move and when a lead gets an owner."""

    alert_stages: list[HandoffStage] = Field(default_factory=lambda: ["mql", "sql"])
    assign_owner_at: HandoffStage = "sql"
    reject_reasons: list[str] = Field(default_factory=lambda: list(DEFAULT_REJECT_REASONS))

    @field_validator("alert_stages")
    @classmethod
    def _unique_stages(cls, value: list[str]) -> list[str]:
        dupes = _repeated(value)
        if dupes:
            raise ValueError(f"alert_stages repeats {', '.join(dupes)}")
        return value

    @field_validator("reject_reasons")
    @classmethod
    def _reasons(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("reject_reasons must name at least one reason")
        bad = [r for r in value if not isinstance(r, str) or not _ID_RE.match(r)]
        if bad:
            raise ValueError(f"reject_reasons must be snake_case ids (a-z, 0-9, _); invalid: {', '.join(map(repr, bad))}")
        dupes = _repeated(value)
        if dupes:
            raise ValueError(f"reject_reasons repeats {', '.join(dupes)}")
        return value

    @cached_property
    def alert_stage_set(self) -> frozenset[str]:
        return frozenset(self.alert_stages)


def _repeated(values: list) -> list:
    seen: set = set()
    out: list = []
    for v in values:
        if v in seen and v not in out:
            out.append(v)
        seen.add(v)
    return out


class _Contact(_Strict):
    name: str | None = None
    email: str | None = None
    slack_user: str | None = None  # Slack member id (U… or W…)

    @field_validator("email")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        if value is not None and not _EMAIL_RE.match(value):
            raise ValueError(f"not an email address: {value!r}")
        return value

    @field_validator("slack_user")
    @classmethod
    def _slack(cls, value: str | None) -> str | None:
        if value is not None and not _SLACK_USER_RE.match(value):
            raise ValueError(f"slack_user must be a Slack member id such as U024BE7LH, got {value!r}")
        return value


class Manager(_Contact):
    """A team's manager: the SLA's manager escalation goes to them."""

    @model_validator(mode="after")
    def _reachable(self) -> "Manager":
        if not self.email and not self.slack_user:
            raise ValueError("a manager needs an email or a slack_user to be reachable")
        return self


class Rep(_Contact):
    id: str = Field(pattern=_ID)
    weight: int = Field(default=1, ge=0, le=1000, strict=True)  # 0: never picked by round-robin
    available: bool = True
    hubspot_owner_id: str | None = None
    salesforce_owner_id: str | None = None

    @field_validator("hubspot_owner_id", "salesforce_owner_id", mode="before")
    @classmethod
    def _crm_id(cls, value: Any) -> Any:
        # An unquoted HubSpot owner id is a YAML integer; it is an id, not a number.
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


class Team(_Strict):
    id: str = Field(pattern=_ID)
    description: str = ""
    manager: Manager | None = None
    reps: list[Rep] = Field(min_length=1)


class RoutingRule(_Strict):
    id: str = Field(pattern=_ID)
    description: str = ""
    when: Condition
    rep: str | None = None
    team: str | None = None

    @field_validator("id")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value in RESERVED_ROUTING_IDS:
            raise ValueError(f"{value!r} is reserved; choose another routing rule id")
        return value

    @field_validator("when")
    @classmethod
    def _lead_only(cls, value: Condition) -> Condition:
        if _mentions(value, lambda c: bool(c.event or c.property)):
            raise ValueError("routing looks at the lead, not an event: use trait or email_domain conditions, not event or property")
        return value

    @model_validator(mode="after")
    def _one_target(self) -> "RoutingRule":
        if (self.rep is None) == (self.team is None):
            raise ValueError("a routing rule names exactly one of rep or team")
        return self


def _mentions(cond: Condition, pred) -> bool:
    return pred(cond) or any(_mentions(c, pred) for c in (cond.all or []) + (cond.any or []))


class Routing(_Strict):
    """Who owns a lead: the first matching rule names a rep or a team, else default_team.
    A team's reps take turns by smooth weighted round-robin."""

    default_team: str
    teams: list[Team] = Field(min_length=1)
    rules: list[RoutingRule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _references(self) -> "Routing":
        team_ids = [t.id for t in self.teams]
        if dupes := _repeated(team_ids):
            raise ValueError(f"team ids must be unique; repeated: {', '.join(dupes)}")
        rep_ids = [r.id for t in self.teams for r in t.reps]
        if dupes := _repeated(rep_ids):
            raise ValueError(f"rep ids must be unique across teams; repeated: {', '.join(dupes)}")
        if dupes := _repeated([r.id for r in self.rules]):
            raise ValueError(f"routing rule ids must be unique; repeated: {', '.join(dupes)}")
        if self.default_team not in team_ids:
            raise ValueError(f"default_team {self.default_team!r} is not a team; teams: {', '.join(team_ids)}")
        for i, rule in enumerate(self.rules):
            if rule.team is not None and rule.team not in team_ids:
                raise ValueError(f"rules[{i}] ({rule.id}).team: unknown team {rule.team!r}; teams: {', '.join(team_ids)}")
            if rule.rep is not None and rule.rep not in rep_ids:
                raise ValueError(f"rules[{i}] ({rule.id}).rep: unknown rep {rule.rep!r}; reps: {', '.join(rep_ids)}")
        return self

    @cached_property
    def team_by_id(self) -> dict[str, Team]:
        return {t.id: t for t in self.teams}

    @cached_property
    def rep_by_id(self) -> dict[str, tuple[Rep, Team]]:
        return {r.id: (r, t) for t in self.teams for r in t.reps}


class EscalationStep(_Strict):
    after_business_hours: float = Field(gt=0, le=10000)  # counted from the lead's entry into sql
    notify: Literal["owner", "manager"]


class BusinessHours(_Strict):
    timezone: str = "Europe/Oslo"
    days: list[Weekday] = Field(default_factory=lambda: ["mon", "tue", "wed", "thu", "fri"])
    start: str = "09:00"
    end: str = "17:00"
    holidays: list[date] = Field(default_factory=lambda: [date(2026, 12, 24), date(2026, 12, 25)])

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}; use an IANA name such as Europe/Oslo") from None
        return value

    @field_validator("days")
    @classmethod
    def _days(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("days must name at least one weekday")
        if dupes := _repeated(value):
            raise ValueError(f"days repeats {', '.join(dupes)}")
        return value

    @field_validator("start", "end", mode="before")
    @classmethod
    def _hhmm(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            # YAML 1.1 reads an unquoted 9:00 as the sexagesimal number 540.
            raise ValueError(f"write times as quoted \"HH:MM\" strings (YAML read this one as the number {value})")
        if not isinstance(value, str) or not _HHMM_RE.match(value):
            raise ValueError(f"not a HH:MM time of day: {value!r}")
        return value

    @model_validator(mode="after")
    def _ordered(self) -> "BusinessHours":
        if self.start_time >= self.end_time:
            raise ValueError(f"start ({self.start}) must be before end ({self.end})")
        return self

    @property
    def start_time(self) -> time:
        return time.fromisoformat(self.start)

    @property
    def end_time(self) -> time:
        return time.fromisoformat(self.end)


class Sla(_Strict):
    """How fast an owner must accept an SQL, in business hours, and who hears when they do not."""

    accept_within_business_hours: float = Field(default=1.0, gt=0, le=10000)
    escalations: list[EscalationStep] = Field(default_factory=lambda: [
        EscalationStep(after_business_hours=1, notify="owner"),
        EscalationStep(after_business_hours=2, notify="manager"),
    ])
    business_hours: BusinessHours = Field(default_factory=BusinessHours)

    @model_validator(mode="after")
    def _increasing(self) -> "Sla":
        hours = [e.after_business_hours for e in self.escalations]
        for i in range(1, len(hours)):
            if hours[i] <= hours[i - 1]:
                raise ValueError(
                    f"escalations[{i}].after_business_hours ({hours[i]:g}) must be greater than "
                    f"escalations[{i - 1}].after_business_hours ({hours[i - 1]:g}): levels are strictly increasing")
        return self


WEBHOOK_FORM_KINDS: tuple[str, ...] = (*FORM_KINDS, "other")


def _form_kind(value: str) -> str:
    if value not in WEBHOOK_FORM_KINDS:
        raise ValueError(f"unknown form kind {value!r}; expected one of {', '.join(WEBHOOK_FORM_KINDS)}")
    return value


def _str_keys(value: Any) -> Any:
    # An unquoted numeric id or ref is a YAML integer; it is a name, not a number.
    if isinstance(value, dict):
        return {str(k) if isinstance(k, int) and not isinstance(k, bool) else k: v for k, v in value.items()}
    return value


class TypeformForm(_Strict):
    """One Typeform form: its kind, and which answers (by field ref or id) and hidden
    fields give the email (target `email`) or which traits."""

    kind: str | None = None  # absent: webhooks.typeform.default_kind
    fields: dict[str, str] = Field(default_factory=dict)
    hidden: dict[str, str] = Field(default_factory=dict)

    @field_validator("kind")
    @classmethod
    def _kind(cls, value: str | None) -> str | None:
        return None if value is None else _form_kind(value)

    @field_validator("fields", "hidden", mode="before")
    @classmethod
    def _keys(cls, value: Any) -> Any:
        return _str_keys(value)

    @field_validator("fields", "hidden")
    @classmethod
    def _targets(cls, value: dict[str, str]) -> dict[str, str]:
        for key, target in value.items():
            if not key.strip():
                raise ValueError("a field name must not be empty")
            if not _ID_RE.match(target):
                raise ValueError(f"{key!r} maps to {target!r}: a target is `email` or a trait name in snake_case "
                                 "(a-z, 0-9, _)")
        return value


class TypeformWebhooks(_Strict):
    forms: dict[str, TypeformForm] = Field(default_factory=dict)  # keyed by Typeform form id
    default_kind: str = "contact_request"  # the kind of a form not listed, or listed without one

    @field_validator("forms", mode="before")
    @classmethod
    def _ids(cls, value: Any) -> Any:
        return _str_keys(value)

    @field_validator("default_kind")
    @classmethod
    def _kind(cls, value: str) -> str:
        return _form_kind(value)


class Webhooks(_Strict):
    """Vendor webhooks: what a payload alone cannot say (a Typeform form's kind, which
    answer is the email)."""

    typeform: TypeformWebhooks = Field(default_factory=TypeformWebhooks)


class Rules(_Strict):
    language: int = 1
    version: str = Field(min_length=1, max_length=64)
    description: str = ""
    events: dict[str, EventSpec] = Field(default_factory=dict)
    traits: dict[str, ValueType] = Field(default_factory=dict)
    fit: Fit
    engagement: Engagement
    intent_validation: list[IntentRule] = Field(default_factory=list)
    lifecycle: Lifecycle
    forms: Forms = Field(default_factory=Forms)
    limits: Limits = Field(default_factory=Limits)
    handoff: Handoff = Field(default_factory=Handoff)
    routing: Routing | None = None  # absent: no lead gets an owner
    sla: Sla = Field(default_factory=Sla)
    webhooks: Webhooks = Field(default_factory=Webhooks)

    @field_validator("language")
    @classmethod
    def _language(cls, value: int) -> int:
        if value not in LANGUAGES:
            raise ValueError(f"this leadflow reads rules language {' and '.join(map(str, LANGUAGES))}, not {value}")
        return value

    @field_validator("events", "traits")
    @classmethod
    def _names(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        what = "event type" if info.field_name == "events" else "trait"
        for name in value:
            if not _ID_RE.match(name):
                raise ValueError(f"{what} {name!r}: a name is snake_case (a-z, 0-9, _)")
            if what == "event type" and name in EVENT_TYPES:
                raise ValueError(f"event type {name!r} is built in; declare only your own types")
        return value

    @model_validator(mode="after")
    def _references(self) -> "Rules":
        ids = ([r.id for r in self.fit.rules] + [r.id for r in self.engagement.rules]
               + [r.id for r in self.engagement.repeats] + [a.id for a in self.engagement.aggregates])
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"rule and aggregate ids must be unique; repeated: {', '.join(dupes)}")
        engagement_ids = {r.id for r in self.engagement.rules}
        for rep in self.engagement.repeats:
            if rep.of not in engagement_ids:
                raise ValueError(f"repeat rule {rep.id!r} counts unknown engagement rule {rep.of!r}")
        known = set(METRICS) | {a.id for a in self.engagement.aggregates}
        for stage in ("mql", "sql"):
            unknown = getattr(self.lifecycle, stage).criterion.metrics() - known
            if unknown:
                raise ValueError(f"lifecycle.{stage}: unknown metric {', '.join(sorted(unknown))}; "
                                 f"metrics: {', '.join(sorted(known))}")
        if self.language < 2 and (used := self._language_2_features()):
            raise ValueError(f"{', '.join(used)} need rules language 2: add `language: 2` at the top of the rules file "
                             "(everything a language 1 file says keeps its meaning)")
        return self

    def _language_2_features(self) -> list[str]:
        used = []
        if self.events:
            used.append("events")
        if self.traits:
            used.append("traits")
        if self.engagement.aggregates:
            used.append("engagement.aggregates")
        if self.engagement.groups or any(r.group for r in self.engagement.rules):
            used.append("engagement groups")
        if any(r.per is not None for r in self.engagement.rules):
            used.append("per-unit points")
        if self.lifecycle.mql.when is not None or self.lifecycle.sql.when is not None:
            used.append("lifecycle `when` criteria")
        if self.forms.traits:
            used.append("forms.traits")
        return used

    @cached_property
    def engagement_by_id(self) -> dict[str, EngagementRule]:
        return {r.id: r for r in self.engagement.rules}

    @cached_property
    def aggregate_by_id(self) -> dict[str, Aggregate]:
        return {a.id: a for a in self.engagement.aggregates}

    @cached_property
    def event_types(self) -> tuple[str, ...]:
        return (*EVENT_TYPES, *self.events)

    @cached_property
    def trait_types(self) -> dict[str, str]:
        return {**BUILTIN_TRAIT_TYPES, **self.traits}

    @cached_property
    def signals_key(self) -> str:
        """A fingerprint of everything that turns events into a lead's stored signals
        (which rules and aggregates an event feeds, with what value, how long signals are
        kept). Two versions with the same key give the same signals, so moving between
        them needs no replay of the event log: points, bands, groups, grades and stage
        criteria are applied when a lead is scored."""
        import hashlib
        import json

        eng = self.engagement
        spec = {
            "events": {k: v.model_dump(mode="json") for k, v in self.events.items()},
            "traits": self.trait_types,
            "rules": [r.model_dump(mode="json", include={"id", "when", "value_of", "max_age_days", "conversion"})
                      for r in eng.rules],
            "aggregates": [a.model_dump(mode="json", include={"id", "of", "fn", "property", "window_days"})
                           for a in eng.aggregates],
            "limits": self.limits.model_dump(mode="json"),
        }
        return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]

    @cached_property
    def hand_raise_rules(self) -> frozenset[str]:
        return frozenset(r.id for r in self.engagement.rules if r.hand_raise)


def parse_rules(data: Any, *, source: str = "rules") -> Rules:
    declared = data.get("events") if isinstance(data, dict) else None
    custom = tuple(str(k) for k in declared) if isinstance(declared, dict) else ()
    try:
        return Rules.model_validate(data, context={"event_types": (*EVENT_TYPES, *custom)})
    except ValidationError as exc:
        lines, details = [], []
        for err in exc.errors(include_url=False, include_input=False):
            loc = _describe_loc(data, err["loc"])
            line = f"{loc}: {err['msg'].removeprefix('Value error, ')}"
            lines.append(line)
            # The path into the file as keys and indexes, for tools that point at a line.
            path = [("in" if p == "in_" else p) for p in err["loc"]
                    if isinstance(p, int) or not str(p).startswith("function-")]
            details.append({"reason": line, "path": path})
        raise RulesError(f"{source} is invalid:\n  " + "\n  ".join(lines), details=details) from None


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
