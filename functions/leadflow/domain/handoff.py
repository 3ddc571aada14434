"""The handoff: what leaves the system when a lead moves, as pure data.

A `Notice` is one stage move of one lead, with everything a sink needs to act on it
(who the lead is, why it moved, who owns it). It is built from the lead item the
move was written with, so every sink sees the lead exactly as it was at the move,
and it is serialisable: a retry message or a dead letter holds the whole move.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from leadflow.domain.lead import Lead, Move, Touch

# Sink kinds: an "alert" tells people (Slack, email) and is sent only for a move into
# an alert stage (from another stage: an accept is not one) of a lead that is not
# disqualified; a "crm" sink mirrors every move (HubSpot, Salesforce, the generic
# webhook, EventBridge).
SinkKind = Literal["alert", "crm"]

# Traits a sink may show or push. Everything else stays in the lead document.
CONTACT_TRAITS = ("first_name", "last_name", "name", "company", "job_title", "phone", "country",
                  "company_size", "industry", "website")


class Owner(BaseModel):
    """The sales rep a lead is assigned to, as the routing rules describe them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    name: str | None = None
    email: str | None = None
    slack_user: str | None = None  # Slack member id (U…), mentioned in alerts
    hubspot_owner_id: str | None = None
    salesforce_owner_id: str | None = None
    team: str | None = None


class Notice(BaseModel):
    """One stage move of one lead, ready for the sinks."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    # Retry and dead-letter messages queued before the rename carry `transition_id`.
    move_id: str = Field(validation_alias=AliasChoices("move_id", "transition_id"))
    lead_id: str
    email: str | None
    from_stage: str | None
    to_stage: str
    occurred_at: datetime
    score: float
    fit_grade: str
    engagement_score: float
    reasons: list[dict[str, Any]] = Field(default_factory=list)  # top score lines: rule, points, detail
    cause: dict[str, Any] = Field(default_factory=dict)
    traits: dict[str, Any] = Field(default_factory=dict)  # CONTACT_TRAITS the lead has
    owner: Owner | None = None
    disqualified: bool = False
    disqualified_reason: str | None = None
    lead: dict[str, Any] = Field(default_factory=dict)  # the lead document (the generic webhook's "lead")
    message: str | None = None  # what the visitor last wrote in a form
    source: str | None = None  # where they first came from ("google / cpc, spring_launch")
    # False for a move a rules publish caused, published without announcing: the CRM
    # mirrors it, nobody is alerted (one summary message tells sales instead).
    announced: bool = True

    @property
    def display_name(self) -> str:
        t = self.traits
        name = t.get("name") or " ".join(str(t[k]) for k in ("first_name", "last_name") if t.get(k))
        return name or (self.email or self.lead_id)


# An erasure is delivered like a move: to each CRM that can delete the contact, once,
# through the delivery ledger, retried and dead-lettered like any move. Its "move id"
# names the erasure: the erased lead item's version and last write time, which the
# tombstone records and the stream's REMOVE record carries, so a REMOVE record
# redelivered after a later erasure of the same id is told apart from it.
ERASURE_PREFIX = "erasure:"


def erasure_id(version: int, updated_at: str) -> str:
    return f"{ERASURE_PREFIX}{int(version)}:{updated_at}"


def is_erasure(move_id: str | None) -> bool:
    return bool(move_id) and str(move_id).startswith(ERASURE_PREFIX)


class Erasure(BaseModel):
    """What a CRM needs to delete an erased person's contact.

    `email` is known only on the first attempt, read from the stream's REMOVE record
    (which carries the lead's last image anyway); it is never put in a retry message, a
    dead letter or the ledger. `ids` are the CRM's own record ids (sink -> ids) that the
    moves' receipts held, copied into the tombstone at the erasure: what a retry deletes by."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    lead_id: str
    erasure: str
    email: str | None = None
    ids: dict[str, list[str]] = Field(default_factory=dict)

    def ids_for(self, sink: str) -> list[str]:
        return list(self.ids.get(sink) or [])


def wants(kind: SinkKind, notice: Notice, alert_stages: frozenset[str] | set[str]) -> bool:
    """Whether a sink of `kind` takes this move. A disqualified lead is never announced."""
    if kind == "crm":
        return True
    return notice.announced and notice.to_stage in alert_stages and notice.from_stage != notice.to_stage and not notice.disqualified


def lead_document(lead: Lead) -> dict[str, Any]:
    """The lead as the CRM push carries it: identity, traits, stage, scores, owner."""
    return {
        "lead_id": lead.lead_id,
        "email": lead.email,
        "traits": dict(lead.traits),
        "stage": lead.stage,
        "stage_entered_at": lead.stage_entered_at.isoformat(),
        "score": lead.score,
        "fit_score": lead.fit_score,
        "fit_grade": lead.fit_grade,
        "engagement_score": lead.engagement_score,
        "disqualified": lead.disqualified,
        "disqualified_reason": lead.disqualified_reason,
        "marketing_email": lead.marketing_email,
        "owner": lead.owner,
        "first_touch": lead.first_touch.model_dump(mode="json") if lead.first_touch else None,
        "last_touch": lead.last_touch.model_dump(mode="json") if lead.last_touch else None,
        "message": lead.message.model_dump(mode="json") if lead.message else None,
        "outcome": lead.outcome.model_dump(mode="json") if lead.outcome else None,
        "rules_version": lead.rules_version,
        "created_at": lead.created_at.isoformat(),
        "updated_at": lead.updated_at.isoformat(),
    }


def notice_for(lead: Lead, move: Move, owner: Owner | None) -> Notice:
    return Notice(
        move_id=move.move_id,
        lead_id=lead.lead_id,
        email=lead.email,
        from_stage=move.from_stage,
        to_stage=move.to_stage,
        occurred_at=move.at,
        score=move.score,
        fit_grade=move.fit_grade,
        engagement_score=move.engagement_score,
        reasons=list(move.reasons),
        cause=move.cause.model_dump(exclude_none=True),
        traits={k: lead.traits[k] for k in CONTACT_TRAITS if lead.traits.get(k) not in (None, "")},
        owner=owner,
        disqualified=lead.disqualified,
        disqualified_reason=lead.disqualified_reason,
        lead=lead_document(lead),
        message=lead.message.text if lead.message else None,
        source=touch_text(lead.first_touch),
        announced=move.announced,
    )


def touch_text(touch: Touch | None) -> str | None:
    """"google / cpc, spring_launch": source and medium, then the campaign."""
    if touch is None:
        return None
    head = " / ".join(p for p in (touch.source, touch.medium) if p)
    return ", ".join(p for p in (head, touch.campaign) if p) or touch.referrer


def move_document(notice: Notice) -> dict[str, Any]:
    """The contract's document of one move: the signed CRM webhook's body and the
    EventBridge event's detail. (The contract names a move's id `move_id`.)"""
    return {
        "lead_id": notice.lead_id,
        "email": notice.email,
        "from_stage": notice.from_stage,
        "to_stage": notice.to_stage,
        "score": notice.score,
        "occurred_at": iso_utc(notice.occurred_at),
        "transition_id": notice.move_id,
        "lead": notice.lead,
    }


def iso_utc(moment: datetime) -> str:
    """ISO 8601 in UTC with a Z, to the millisecond."""
    aware = moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
    return aware.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
