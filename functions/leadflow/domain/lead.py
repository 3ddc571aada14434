"""The lead: everything needed to score it and move it, in one item."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from leadflow.domain.stages import STAGES, Stage

EPOCH_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


# The shortest lead-id key accepted: 32 characters (the template generates 64, `leadflow
# serve` 64 hex digits). A short key could be found by trying every address it might hash.
MIN_LEAD_ID_KEY = 32


def _derive(prefix: str, text: str, key: bytes | None) -> str:
    if key is None:  # the unkeyed derivation of tables written before keyed ids
        digest = hashlib.sha256(text.encode()).hexdigest()
    else:
        digest = hmac.new(key, text.encode(), hashlib.sha256).hexdigest()
    return prefix + digest[:24]


def lead_id_for_email(email: str, key: bytes | None) -> str:
    """Deterministic, so one email is one lead without a second lookup item:
    two concurrent first events race on the same key and one conditional put wins.

    Keyed with the deployment's secret (HMAC-SHA256), so an id cannot be computed from
    an address without it, and ids in alerts, CRMs and logs link to nobody elsewhere.
    `key` None is the unkeyed derivation of tables written before keyed ids (see
    `LeadIds.legacy`); no caller passes None by accident: the key has no default."""
    return _derive("ld_", "email:" + email, key)


def lead_id_for_anonymous(anonymous_id: str, key: bytes | None) -> str:
    """The anonymous visitor's id, keyed as `lead_id_for_email`."""
    return _derive("an_", "anon:" + anonymous_id, key)


@dataclass(frozen=True)
class LeadIds:
    """How this deployment turns an email or an anonymous id into a lead id: built once
    (container.lead_ids) from the configured key, and handed to whatever derives ids."""

    key: bytes | None

    def __post_init__(self) -> None:
        if self.key is not None and len(self.key) < MIN_LEAD_ID_KEY:
            raise ValueError(f"the lead-id key must be at least {MIN_LEAD_ID_KEY} characters")

    def __repr__(self) -> str:  # never the key, in a log line or a traceback
        return f"LeadIds({'legacy' if self.key is None else 'keyed'})"

    @property
    def legacy(self) -> bool:
        return self.key is None

    def for_email(self, email: str) -> str:
        return lead_id_for_email(email, self.key)

    def for_anonymous(self, anonymous_id: str) -> str:
        return lead_id_for_anonymous(anonymous_id, self.key)

    def check(self) -> str | None:
        """What a table records of the key its ids were derived with: an HMAC of a fixed
        text, which tells two keys apart and says nothing of either. None when legacy."""
        if self.key is None:
            return None
        return hmac.new(self.key, b"leadflow:lead-id-key-check", hashlib.sha256).hexdigest()[:16]


def event_key(event_id: str) -> str:
    """What a lead remembers of an applied event: 48 bits of its id's hash."""
    return hashlib.sha256(event_id.encode()).hexdigest()[:12]


def stage_rank(stage: str | None) -> int:
    return -1 if stage is None else STAGES.index(stage)


class Cause(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["rule", "event", "actor", "merge"]
    rule: str | None = None
    event_id: str | None = None
    event_type: str | None = None
    action: str | None = None
    actor: str | None = None
    reason: str | None = None


class Move(BaseModel):
    """One entry of a lead's history, written in the same put as the lead's new state.

    Its id is `move_id` in the code and the item; the public contract (the lead's
    history in the API, the CRM webhook body) calls it `transition_id`, so that is
    its name when dumped `by_alias`, and items written before the rename load too."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    move_id: str = Field(validation_alias=AliasChoices("move_id", "transition_id"), serialization_alias="transition_id")
    from_stage: Stage | None
    to_stage: Stage
    at: datetime
    cause: Cause
    rules_version: str
    score: float
    fit_grade: str
    engagement_score: float
    reasons: list[dict[str, Any]] = Field(default_factory=list)
    # Who the lead was assigned to by this move (routing), and why.
    owner: str | None = None
    routing: dict[str, Any] | None = None
    # False for history brought in (an import): recorded, never sent to sales or sinks.
    announced: bool = True


class Signal(BaseModel):
    """A behavioural signal an event gave: which rule or aggregate, when it happened, and
    the value it carries (per-unit points, or what an aggregate sums, averages, ...)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rule: str
    at: int  # epoch seconds of the event's occurred_at
    event: str  # event key (hash), ties the signal to its event for replay and audit
    value: float | str | None = None


class Touch(BaseModel):
    """Where a lead came from: UTM parameters and the referrer of one event."""

    model_config = ConfigDict(extra="forbid")

    source: str | None = None
    medium: str | None = None
    campaign: str | None = None
    referrer: str | None = None
    at: datetime


class Message(BaseModel):
    """What the visitor wrote in a form ("can we see a demo next week?")."""

    model_config = ConfigDict(extra="forbid")

    text: str
    at: datetime
    form_id: str | None = None


class FormConversion(BaseModel):
    """The form a lead first converted on (a CRM's "first conversion"): its id, or its
    kind when the event named no form."""

    model_config = ConfigDict(extra="forbid")

    form: str
    at: datetime


class SalesOutcome(BaseModel):
    """How the lead ended, as sales or an imported system of record said: won or lost,
    when, why and by whom. Kept apart from the stage, which recycling moves on."""

    model_config = ConfigDict(extra="forbid")

    result: Literal["won", "lost"]
    at: datetime
    reason: str | None = None
    by: str
    value: float | None = None


class Review(BaseModel):
    """Something a public form said that was not applied to a lead handed to sales, for
    a person to judge: `would_disqualify` (a trait that would disqualify the lead) or
    `conflict` (a value other than the one the lead holds)."""

    model_config = ConfigDict(extra="forbid")

    reason: Literal["would_disqualify", "conflict"]
    field: str  # "traits.job_title"
    value: Any  # what the form gave
    at: datetime  # when the form post arrived
    source: str  # "form:<form id>"
    event_id: str
    detail: str  # the sentence


class Lead(BaseModel):
    model_config = ConfigDict(extra="ignore")

    lead_id: str
    email: str | None = None
    anonymous_ids: list[str] = Field(default_factory=list)
    traits: dict[str, Any] = Field(default_factory=dict)
    trait_times: dict[str, int] = Field(default_factory=dict)  # trait -> epoch of the event that set it
    trait_sources: dict[str, str] = Field(default_factory=dict)  # trait -> source of that event (absent: verified)
    review: list[Review] = Field(default_factory=list)  # public form input held back, newest last
    stage: Stage = "subscriber"
    stage_entered_at: datetime
    disqualified: bool = False
    disqualified_reason: str | None = None
    disqualified_by: Literal["rules", "sales"] | None = None
    marketing_email: Literal["subscribed", "unsubscribed", "bounced"] = "subscribed"
    owner: str | None = None
    # First touch: the first time sales accepted the lead after it became an SQL.
    first_touch_at: datetime | None = None
    first_touch_by: str | None = None
    first_touch_seconds: float | None = None  # from entering SQL to the first touch
    # Marketing attribution: the first and the latest source that brought the lead.
    first_touch: Touch | None = None
    last_touch: Touch | None = None
    message: Message | None = None  # the latest thing the visitor wrote
    first_form: FormConversion | None = None  # the first form submitted, by event time
    outcome: SalesOutcome | None = None
    signals: list[Signal] = Field(default_factory=list)
    converted_by: str | None = None  # the first conversion (rule id): a lead for good, however old
    engagement_reset_at: int | None = None  # recycle/reject: signals up to here no longer count
    intent_flags: dict[str, str] = Field(default_factory=dict)
    seen: list[str] = Field(default_factory=list)  # event keys applied, oldest first
    history: list[Move] = Field(default_factory=list)
    score: float = 0
    fit_score: float = 0
    fit_grade: str = "D"
    engagement_score: float = 0
    explanation: list[dict[str, Any]] = Field(default_factory=list)
    rules_version: str = ""
    signals_key: str = ""  # the rules' signals_key its signals were derived under ("": unknown)
    scored_at: datetime | None = None
    created_at: datetime
    updated_at: datetime
    merged_into: str | None = None  # set on an anonymous lead once its visitor identified
    version: int = 0
    # The events this write applied, for the stream to append to the event log.
    applied: list[dict[str, Any]] = Field(default_factory=list)
    # The ids of the moves this write made (the item's `moves`), for the handoff to fan out.
    moves: list[str] = Field(default_factory=list)

    @property
    def known(self) -> bool:
        return self.email is not None

    def has_seen(self, key: str) -> bool:
        return key in self.seen


def last_move_into(lead: Lead, stage: str) -> Move | None:
    for move in reversed(lead.history):
        if move.to_stage == stage and move.from_stage != stage:
            return move
    return None
