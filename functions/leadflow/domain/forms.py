"""Website form posts as canonical events. Forms post what people typed, so be lenient
about field names and strict about the one thing we need: the email.

A field becomes a trait when the rules map it (`forms.traits`) or it is a well-known
trait; UTM parameters, the referrer and the visitor's message are kept as properties,
which the lead turns into its first and last touch and its latest message."""

from __future__ import annotations

import math
from datetime import datetime
from typing import TYPE_CHECKING, Any

from leadflow.domain.errors import InvalidInput
from leadflow.domain.events import FORM_KINDS, CanonicalEvent, parse_event

if TYPE_CHECKING:
    from leadflow.domain.rules import Forms

TRAIT_FIELDS = {
    "first_name", "last_name", "full_name", "job_title", "company", "company_size", "industry", "country",
    "phone", "website", "budget", "authority", "need", "timeline", "role", "seniority", "occupation", "city",
    "state", "nps", "user_agent",
}
PROPERTY_FIELDS = {"url", "page_url", "referrer", "utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content",
                   "content_id", "content_title", "message"}
META_FIELDS = {"email", "form_kind", "anonymous_id", "submission_id", "event_id", "occurred_at"}
# A visitor's clock may run a little ahead of ours; a rendered time further ahead is forged.
MAX_CLOCK_SKEW_S = 300


PUBLIC_SOURCE_PREFIX = "form:"


def is_public(source: str | None) -> bool:
    """Whether an event came from a public website form (`form:<form id>`): no key, no
    signature, so anyone who types an address can send it. Everything else (the API with
    its key, signed webhooks, imports, sales) is a verified source."""
    return source is not None and source.startswith(PUBLIC_SOURCE_PREFIX)


def is_bot(fields: dict[str, Any], forms: Forms) -> bool:
    return any(str(fields.get(name) or "").strip() for name in forms.honeypot_fields)


def trapped(form_id: str, fields: dict[str, Any], forms: Forms, now: datetime) -> str | None:
    """Why the form's time trap caught this post ("too_fast", "stale", "future", "missing"),
    or None when it passes or the form has no trap. The rendered time is Unix seconds, or
    milliseconds (`Date.now()`): anything past 1e11 is taken as milliseconds."""
    trap = forms.settings_for(form_id).time_trap
    if trap is None:
        return None
    raw = fields.get(trap.field)
    try:
        stamp = float(str(raw).strip())
    except ValueError:
        return "missing"
    if not math.isfinite(stamp):
        return "missing"
    if stamp > 1e11:
        stamp /= 1000
    elapsed = now.timestamp() - stamp
    if elapsed < -MAX_CLOCK_SKEW_S:
        return "future"
    if elapsed > trap.max_age_hours * 3600:
        return "stale"
    if elapsed < trap.min_seconds:
        return "too_fast"
    return None


def to_event(form_id: str, fields: dict[str, Any], forms: Forms, *, fallback_id: str) -> CanonicalEvent:
    """The form post as a `form_submitted` event. Its id is the form's own submission id
    when it sends one (a resubmission is then a duplicate), else `fallback_id`."""
    if not str(fields.get("email") or "").strip():
        raise InvalidInput("email: a form post needs an email field", field="email")
    traits: dict[str, Any] = {}
    properties: dict[str, Any] = {"form_id": form_id}
    trap = forms.settings_for(form_id).time_trap
    hidden = {*forms.honeypot_fields, *([trap.field] if trap else [])}  # spam traps, not what a person typed
    for raw_name, value in fields.items():
        name = forms.field_aliases.get(raw_name.lower(), raw_name.lower())
        if name in META_FIELDS or raw_name in hidden or isinstance(value, (dict, list)):
            continue
        if name in forms.traits:
            traits[forms.traits[name]] = value
        elif name in TRAIT_FIELDS:
            traits[name] = value
        elif name in PROPERTY_FIELDS:
            properties["url" if name == "page_url" else name] = value
        else:
            properties[f"field_{name}"[:100]] = value
    if "full_name" in traits and "first_name" not in traits:
        first, _, last = str(traits["full_name"]).strip().partition(" ")
        traits["first_name"] = first
        if last:
            traits.setdefault("last_name", last)
    kind = fields.get("form_kind") or forms.kinds.get(form_id) or (form_id if form_id in FORM_KINDS else "other")
    properties["form_kind"] = kind
    event_id = fields.get("submission_id") or fields.get("event_id")
    return parse_event({
        "event_id": f"form:{form_id}:{event_id or fallback_id}",
        "type": "form_submitted",
        "email": fields.get("email"),
        "anonymous_id": fields.get("anonymous_id") or None,
        "occurred_at": fields.get("occurred_at") or None,
        "properties": properties,
        "traits": traits,
    })
