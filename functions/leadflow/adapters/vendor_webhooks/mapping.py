"""Verified vendor payloads → canonical events.

`map_delivery(source, payload, rules)` takes the parsed JSON body of a delivery whose
signature has been checked, and returns one `Item` per item of the payload, in the
vendor's order (HubSpot: sorted by `occurredAt`, as HubSpot delivers out of order). An
item carries a canonical event, or why it was skipped (`ignored`: a kind of event
leadflow does not act on) or refused (`error`: the item is malformed). One bad item
never drops the others; only a body that is no shape the vendor sends at all raises
`PayloadError`.

Pure: no I/O, no clock. Event ids come from the vendor's own ids (Mautic has none: a
hash of the item's content), prefixed by the source, so a redelivery maps to the same
ids and the engine applies it once. `occurred_at` is the vendor's time of the event.

HubSpot contact events carry the contact's object id, never its email (except a change
of the `email` property). They become events of the anonymous visitor
`hubspot:<objectId>`, which the engine joins to the lead once an event carries both
that id and the email; each item's `extra` has `hubspot_object_id`, and for a property
change `property` and `value`, so the caller can resolve the email itself. A
`lifecyclestage` set in HubSpot also gives `extra["lifecyclestage"]` and, when it names
one of our stages, `extra["stage"]`: the caller applies that explicit move.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime, timezone
from typing import Any, Callable

from pydantic import ValidationError

from leadflow.domain.forms import PROPERTY_FIELDS, TRAIT_FIELDS, is_bot, to_event
from leadflow.domain.errors import InvalidInput
from leadflow.domain.events import CanonicalEvent, validation_details
from leadflow.domain.rules import Rules
from leadflow.adapters.vendor_webhooks import SOURCES, Item, PayloadError

__all__ = ["map_delivery", "map_hubspot", "map_mautic", "map_typeform", "map_calendly", "map_sendgrid",
           "HUBSPOT_STAGES"]

MAX_TEXT = 2000  # CanonicalEvent's limit on a trait or property string
MAX_EVENT_ID = 200
HUBSPOT_MAX_EVENTS = 100

# HubSpot's internal lifecyclestage value → our stage (the reverse of the HubSpot sink's
# map). `other`, and custom stages (numeric ids), name none of ours.
HUBSPOT_STAGES: dict[str, str] = {
    "subscriber": "subscriber",
    "lead": "lead",
    "marketingqualifiedlead": "mql",
    "salesqualifiedlead": "sql",
    "opportunity": "opportunity",
    "customer": "customer",
    "evangelist": "evangelist",
}

# HubSpot contact property → our trait. Other properties: a known trait name as is
# (or through forms.field_aliases), else `hubspot_<property>`.
HUBSPOT_TRAITS: dict[str, str] = {
    "firstname": "first_name",
    "lastname": "last_name",
    "jobtitle": "job_title",
    "company": "company",
    "phone": "phone",
    "mobilephone": "phone",
    "country": "country",
    "city": "city",
    "state": "state",
    "website": "website",
    "numemployees": "company_size",
    "industry": "industry",
    "hs_lead_status": "hubspot_lead_status",
}

# Mautic core contact field → our trait. Mautic's `title` is a salutation (Mr., Ms.),
# not a job title: `position` is.
MAUTIC_TRAITS: dict[str, str] = {
    "firstname": "first_name",
    "lastname": "last_name",
    "company": "company",
    "position": "job_title",
    "phone": "phone",
    "mobile": "phone",
    "city": "city",
    "state": "state",
    "country": "country",
    "website": "website",
}
MAUTIC_SKIP_FIELDS = frozenset({"title", "email"})

SENDGRID_UNSUBSCRIBES = frozenset({"unsubscribe", "group_unsubscribe", "spamreport"})
SENDGRID_DELIVERY = frozenset({"processed", "deferred", "delivered", "group_resubscribe"})

_DIGITS = re.compile(r"^[0-9]{1,20}$")


# Dispatch ------------------------------------------------------------------------------

def map_delivery(source: str, payload: Any, rules: Rules) -> list[Item]:
    """The items of one verified delivery. Raises `PayloadError` when the body is not a
    shape `source` sends; `ValueError` for a source that is not a vendor we map."""
    mappers: dict[str, Callable[[Any, Rules], list[Item]]] = {
        "hubspot": map_hubspot,
        "mautic": map_mautic,
        "typeform": map_typeform,
        "calendly": map_calendly,
        "sendgrid": map_sendgrid,
    }
    if source not in mappers:
        raise ValueError(f"unknown webhook source {source!r}; expected one of {', '.join(SOURCES)}")
    return mappers[source](payload, rules)


# Shared helpers ------------------------------------------------------------------------

def _text(value: Any) -> str | None:
    """A non-empty string, stripped; anything else is None."""
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def _dict(value: Any) -> dict:
    # PHP's json_encode writes an empty object as [], so a missing or empty object is {}.
    return value if isinstance(value, dict) else {}


def _is_id(value: Any) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool)) or _text(value) is not None


def _id_text(value: Any) -> str:
    return str(value).strip()


def _scalar(value: Any) -> Any:
    """A value fit for a trait or property: clipped text, numbers, booleans, None."""
    if isinstance(value, str):
        return value[:MAX_TEXT]
    if value is None or isinstance(value, (bool, int, float)):
        return value
    raise TypeError("not a scalar")


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, bool, int, float))


def _scalars(values: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, list):
            items = [_scalar(v) for v in value if _is_scalar(v)]
            out[key] = items
        elif _is_scalar(value):
            out[key] = _scalar(value)
    return out


def _epoch(value: Any, *, millis: bool) -> datetime | None:
    """An epoch time in seconds or milliseconds (a number or a string of digits)."""
    if isinstance(value, str) and _DIGITS.match(value.strip()):
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        return datetime.fromtimestamp(value / 1000 if millis else value, tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        return None


def _iso(value: Any) -> datetime | None:
    """An ISO 8601 time (`Z`, an offset, or none: UTC), in UTC."""
    text = _text(value)
    if text is None:
        return None
    try:
        at = datetime.fromisoformat(text)
        if at.tzinfo is None:
            at = at.replace(tzinfo=timezone.utc)
        return at.astimezone(timezone.utc)
    except (ValueError, OverflowError):
        return None


def _event_id(source: str, *parts: Any) -> str:
    """`<source>:<part>:<part>…`, or a hash of it when the vendor's ids are too long."""
    joined = ":".join([source, *(str(p) for p in parts)])
    if len(joined) <= MAX_EVENT_ID and joined == joined.strip():
        return joined
    return f"{source}:h_{hashlib.sha256(joined.encode('utf-8', 'surrogatepass')).hexdigest()[:40]}"


def _content_hash(value: Any) -> str:
    canon = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)
    return hashlib.sha256(canon.encode()).hexdigest()[:32]


def _describe(exc: ValidationError) -> str:
    return "; ".join(f"{d['field']}: {d['reason']}" for d in validation_details(exc)[:5])


def _item(ref: str, *, extra: dict | None = None, **fields: Any) -> Item:
    """An item with its event, or with the reason the event is invalid."""
    data = {k: v for k, v in fields.items() if v is not None}
    for name in ("traits", "properties"):
        if name in data:
            data[name] = _scalars(data[name])
    try:
        event = CanonicalEvent.model_validate(data)
    except ValidationError as exc:
        return Item(ref=ref, error=_describe(exc), extra=extra or {})
    return Item(ref=ref, event=event, extra=extra or {})


def _split_name(traits: dict[str, Any], full: Any) -> None:
    """A full name fills first and last name when the source gave no first name."""
    full = _text(full)
    if full and not _text(traits.get("first_name")):
        first, _, last = full.partition(" ")
        traits["first_name"] = first
        if last.strip() and not _text(traits.get("last_name")):
            traits["last_name"] = last.strip()


def _trait_name(name: str, rules: Rules) -> str | None:
    """A field name as one of our trait names (through forms.field_aliases), or None."""
    key = name.strip().lower()
    key = rules.forms.field_aliases.get(key, key)
    return key if key in TRAIT_FIELDS else None


# HubSpot -------------------------------------------------------------------------------

def map_hubspot(payload: Any, rules: Rules) -> list[Item]:
    """A HubSpot Webhooks API delivery: a JSON array of up to 100 subscription events."""
    if isinstance(payload, dict):
        raise PayloadError("a HubSpot webhook delivery is a JSON array of events; a single object (a workflow "
                           "webhook) is not a payload this endpoint maps")
    if not isinstance(payload, list):
        raise PayloadError("a HubSpot webhook delivery is a JSON array of events")
    if len(payload) > HUBSPOT_MAX_EVENTS:
        raise PayloadError(f"a HubSpot delivery holds at most {HUBSPOT_MAX_EVENTS} events, got {len(payload)}")

    def order(index: int) -> tuple:
        raw = payload[index]
        at = _epoch(raw.get("occurredAt"), millis=True) if isinstance(raw, dict) else None
        kind = _hubspot_type(raw) if isinstance(raw, dict) else None
        # Undated items last; a creation before its property changes of the same instant.
        return (at is None, at.timestamp() if at else 0.0, kind != "contact.creation", index)

    return [_hubspot_event(f"[{i}]", payload[i], rules) for i in sorted(range(len(payload)), key=order)]


def _hubspot_type(raw: dict) -> str | None:
    for key in ("subscriptionType", "eventType"):
        if _text(raw.get(key)):
            return raw[key].strip()
    return None


def _hubspot_event(ref: str, raw: Any, rules: Rules) -> Item:
    if not isinstance(raw, dict):
        return Item(ref=ref, error="a HubSpot event must be a JSON object")
    kind = _hubspot_type(raw)
    if kind is None:
        return Item(ref=ref, error="missing subscriptionType (or eventType)")
    if kind not in ("contact.creation", "contact.propertyChange"):
        return Item(ref=ref, ignored=f"{kind} is not an event leadflow acts on")
    object_id = raw.get("objectId")
    if not _is_id(object_id):
        return Item(ref=ref, error="objectId: missing or not an id")
    extra: dict[str, Any] = {"hubspot_object_id": object_id}
    if isinstance(raw.get("changeSource"), str):
        extra["change_source"] = raw["changeSource"]  # who made the change (CRM_UI, API, INTEGRATION, …)
    if _is_id(raw.get("portalId")):
        extra["portal_id"] = raw["portalId"]
    occurred = _epoch(raw.get("occurredAt"), millis=True)
    if occurred is None:
        return Item(ref=ref, error="occurredAt: missing or not a time in epoch milliseconds", extra=extra)
    for key in ("subscriptionId", "eventId"):
        if not _is_id(raw.get(key)):
            return Item(ref=ref, error=f"{key}: missing or not an id", extra=extra)
    # HubSpot does not promise a unique eventId: the triple identifies a delivery's event.
    event_id = _event_id("hubspot", _id_text(raw["subscriptionId"]), _id_text(raw["eventId"]), raw["occurredAt"])
    contact_id = _id_text(object_id)
    base = {"event_id": event_id, "type": "identify", "occurred_at": occurred, "anonymous_id": f"hubspot:{contact_id}"}
    traits: dict[str, Any] = {"hubspot_contact_id": contact_id}

    if kind == "contact.creation":
        return _item(ref, extra=extra, email=_text(raw.get("email")), traits=traits, **base)

    name = _text(raw.get("propertyName"))
    if name is None:
        return Item(ref=ref, error="propertyName: missing in a contact.propertyChange event", extra=extra)
    value = raw.get("propertyValue")
    if not _is_scalar(value):
        return Item(ref=ref, error=f"propertyValue of {name}: not a text value", extra=extra)
    extra.update(property=name, value=value)
    if name == "email":
        email = _text(value)
        if email is None:
            return Item(ref=ref, ignored="the contact's email was cleared in HubSpot; leadflow keeps the lead",
                        extra=extra)
        return _item(ref, extra=extra, email=email, traits=traits, **base)
    if name == "lifecyclestage":
        stage_value = _text(value)
        extra["lifecyclestage"] = value
        if stage_value is not None and stage_value.lower() in HUBSPOT_STAGES:
            extra["stage"] = HUBSPOT_STAGES[stage_value.lower()]
        traits["hubspot_lifecyclestage"] = value
        return _item(ref, extra=extra, traits=traits, **base)
    traits[_hubspot_trait(name, rules)] = value
    return _item(ref, extra=extra, traits=traits, **base)


def _hubspot_trait(name: str, rules: Rules) -> str:
    key = name.lower()
    if key in HUBSPOT_TRAITS:
        return HUBSPOT_TRAITS[key]
    return _trait_name(key, rules) or f"hubspot_{key}"[:100]


# Mautic --------------------------------------------------------------------------------

MAUTIC_PREFIX = "mautic."


def map_mautic(payload: Any, rules: Rules) -> list[Item]:
    """A Mautic webhook: `{"mautic.<type>": [event, …], …}` (a real delivery: several
    types and events, each event with its `timestamp`), or the "Send Test Payload"
    shape `{"mautic.<type>": <event or array>, "timestamp": "…"}`."""
    if not isinstance(payload, dict):
        raise PayloadError("a Mautic webhook is a JSON object keyed by event type (mautic.form_on_submit, …)")
    keys = [k for k in payload if isinstance(k, str) and k.startswith(MAUTIC_PREFIX)]
    if not keys:
        raise PayloadError("a Mautic webhook has at least one mautic.<event type> key")
    envelope_at = payload.get("timestamp")
    items: list[Item] = []
    for key in keys:
        value = payload[key]
        if isinstance(value, list):
            entries = [(f"{key}[{i}]", v) for i, v in enumerate(value)]
        else:
            entries = [(key, value)]
        for ref, raw in entries:
            items.append(_mautic_event(ref, key.removeprefix(MAUTIC_PREFIX), raw, envelope_at, rules))
    return items


def _mautic_event(ref: str, kind: str, raw: Any, envelope_at: Any, rules: Rules) -> Item:
    if not isinstance(raw, dict):
        return Item(ref=ref, error=f"a mautic.{kind} event must be a JSON object")
    handler = _MAUTIC_HANDLERS.get(kind)
    if handler is None:
        return Item(ref=ref, ignored=f"mautic.{kind} is not an event leadflow acts on")
    if "timestamp" not in raw and envelope_at is not None:
        raw = {**raw, "timestamp": envelope_at}
    # Mautic sends no ids: the event's own content identifies it, so a redelivery of the
    # same queued event is a duplicate.
    event_id = f"mautic:{kind}:{_content_hash(raw)}"
    return handler(ref, raw, event_id, rules)


def _mautic_contact(obj: Any) -> tuple[str | None, str | None, dict[str, Any]]:
    """A Mautic contact (lead) object → (email, contact id, its fields by alias)."""
    contact = _dict(obj)
    fields: dict[str, Any] = {}
    groups = _dict(contact.get("fields"))
    for group, entries in groups.items():
        for alias, entry in _dict(entries).items():
            if group == "all":  # the REST shape: a flat alias → value map
                fields.setdefault(alias, entry)
            elif isinstance(entry, dict):
                fields[alias] = entry.get("value")
    email = _text(fields.get("email")) or _text(contact.get("email"))
    contact_id = _id_text(contact["id"]) if _is_id(contact.get("id")) else None
    return email, contact_id, fields


def _mautic_traits(fields: dict[str, Any], rules: Rules) -> dict[str, Any]:
    """Core and custom fields with a value, as traits: empty fields never clear a trait."""
    traits: dict[str, Any] = {}
    for alias, value in sorted(fields.items(), key=lambda kv: kv[0] == "mobile"):  # phone before mobile
        if alias in MAUTIC_SKIP_FIELDS or not _is_scalar(value) or value is None or value == "":
            continue
        name = MAUTIC_TRAITS.get(alias) or _trait_name(alias, rules)
        if name and name not in traits:
            traits[name] = value
    return traits


def _mautic_identity(contact: Any) -> tuple[str | None, str | None, dict[str, Any]]:
    email, contact_id, fields = _mautic_contact(contact)
    anonymous_id = f"mautic:{contact_id}" if contact_id else None
    return email, anonymous_id, fields


def _mautic_time(*values: Any) -> datetime | None:
    for value in values:
        at = _iso(value)
        if at is not None:
            return at
    return None


def _mautic_form(ref: str, raw: dict, event_id: str, rules: Rules) -> Item:
    submission = raw.get("submission")
    if not isinstance(submission, dict):
        return Item(ref=ref, error="submission: missing or not an object")
    results = {k: v for k, v in _dict(submission.get("results")).items() if isinstance(k, str)}
    email, anonymous_id, _ = _mautic_identity(submission.get("lead") or submission.get("contact"))
    email = _text(results.get("email")) or email
    if email is None:
        return Item(ref=ref, error="no email in the submission results or the contact")
    if is_bot(results, rules.forms):
        return Item(ref=ref, ignored="a honeypot field is filled: a bot")
    form = _dict(submission.get("form"))
    alias = _text(form.get("alias"))
    form_id = _id_text(form["id"]) if _is_id(form.get("id")) else None
    kind = (_text(results.get("form_kind"))
            or (rules.forms.kinds.get(alias) if alias else None)
            or (rules.forms.kinds.get(form_id) if form_id else None)
            or "contact_request")
    occurred = _mautic_time(submission.get("dateSubmitted"), raw.get("timestamp"))
    fields = {k: _scalar(v) for k, v in results.items() if _is_scalar(v)}
    fields.update(email=email, form_kind=kind)
    fields.pop("submission_id", None)
    fields.pop("event_id", None)
    fields["occurred_at"] = occurred.isoformat() if occurred else None
    fields["anonymous_id"] = anonymous_id
    if _text(submission.get("referer")) and "url" not in fields and "page_url" not in fields:
        fields["url"] = _text(submission["referer"])[:MAX_TEXT]
    try:
        event = to_event(alias or form_id or "mautic", fields, rules.forms, fallback_id=event_id)
    except InvalidInput as exc:
        return Item(ref=ref, error=exc.message)
    return Item(ref=ref, event=event.model_copy(update={"event_id": event_id}))


def _mautic_page(ref: str, raw: dict, event_id: str, rules: Rules) -> Item:
    hit = raw.get("hit")
    if not isinstance(hit, dict):
        return Item(ref=ref, error="hit: missing or not an object")
    url = _text(hit.get("url")) or _text(_dict(hit.get("redirect")).get("url"))
    if url is None:
        return Item(ref=ref, error="hit.url: missing")
    email, anonymous_id, _ = _mautic_identity(hit.get("lead") or hit.get("contact"))
    if email is None and anonymous_id is None:
        return Item(ref=ref, error="the hit names no contact (no lead id, no email)")
    page = _dict(hit.get("page"))
    properties = {"url": url, "title": _text(hit.get("urlTitle")) or _text(page.get("title")),
                  "referrer": _text(hit.get("referer"))}
    traits = {"user_agent": _text(hit.get("userAgent"))}
    occurred = _mautic_time(hit.get("dateHit"), raw.get("timestamp"))
    return _item(ref, event_id=event_id, type="page_viewed", occurred_at=occurred, email=email,
                 anonymous_id=anonymous_id, properties={k: v for k, v in properties.items() if v is not None},
                 traits={k: v for k, v in traits.items() if v is not None})


def _mautic_email_open(ref: str, raw: dict, event_id: str, rules: Rules) -> Item:
    stat = raw.get("stat")
    if not isinstance(stat, dict):
        return Item(ref=ref, error="stat: missing or not an object")
    email, anonymous_id, _ = _mautic_identity(stat.get("lead") or stat.get("contact"))
    email = _text(stat.get("emailAddress")) or email
    if email is None and anonymous_id is None:
        return Item(ref=ref, error="the open names no contact (no email address, no lead)")
    message = _dict(stat.get("email"))
    properties = {"email_id": message.get("id") if _is_id(message.get("id")) else None,
                  "email_name": _text(message.get("name")), "subject": _text(message.get("subject"))}
    occurred = _mautic_time(stat.get("lastOpened"), stat.get("dateRead"), raw.get("timestamp"))
    return _item(ref, event_id=event_id, type="email_opened", occurred_at=occurred, email=email,
                 anonymous_id=anonymous_id, properties={k: v for k, v in properties.items() if v is not None})


def _mautic_points(ref: str, raw: dict, event_id: str, rules: Rules) -> Item:
    contact = raw.get("contact") if isinstance(raw.get("contact"), dict) else raw.get("lead")
    if not isinstance(contact, dict):
        return Item(ref=ref, error="contact (or lead): missing or not an object")
    email, anonymous_id, fields = _mautic_identity(contact)
    if email is None and anonymous_id is None:
        return Item(ref=ref, error="the contact has neither an email nor an id")
    delta = _dict(raw.get("points"))
    points = delta.get("new_points") if "new_points" in delta else contact.get("points")
    if isinstance(points, bool) or not isinstance(points, (int, float)):
        return Item(ref=ref, error="points: no new points (points.new_points or the contact's points)")
    traits = _mautic_traits(fields, rules)
    traits["mautic_points"] = points
    properties = {"old_points": delta.get("old_points"), "new_points": points}
    properties = {k: v for k, v in properties.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return _item(ref, event_id=event_id, type="identify", occurred_at=_mautic_time(raw.get("timestamp")),
                 email=email, anonymous_id=anonymous_id, traits=traits, properties=properties)


def _mautic_contact_saved(ref: str, raw: dict, event_id: str, rules: Rules) -> Item:
    contact = raw.get("contact") if isinstance(raw.get("contact"), dict) else raw.get("lead")
    if not isinstance(contact, dict):
        return Item(ref=ref, error="contact (or lead): missing or not an object")
    email, anonymous_id, fields = _mautic_identity(contact)
    if email is None:
        return Item(ref=ref, ignored="the contact has no email yet (an anonymous visitor)")
    occurred = _mautic_time(contact.get("dateModified"), raw.get("timestamp"), contact.get("dateAdded"))
    return _item(ref, event_id=event_id, type="identify", occurred_at=occurred, email=email,
                 anonymous_id=anonymous_id, traits=_mautic_traits(fields, rules))


_MAUTIC_HANDLERS: dict[str, Callable[[str, dict, str, Rules], Item]] = {
    "form_on_submit": _mautic_form,
    "page_on_hit": _mautic_page,
    "email_on_open": _mautic_email_open,
    "lead_points_change": _mautic_points,
    "lead_post_save_new": _mautic_contact_saved,
    "lead_post_save_update": _mautic_contact_saved,
}


# Typeform ------------------------------------------------------------------------------

def map_typeform(payload: Any, rules: Rules) -> list[Item]:
    """A Typeform webhook: one `form_response`."""
    if not isinstance(payload, dict) or _text(payload.get("event_type")) is None:
        raise PayloadError("a Typeform webhook is a JSON object with an event_type")
    ref = "form_response"
    kind = payload["event_type"].strip()
    if kind != "form_response":
        return [Item(ref=ref, ignored=f"{kind} is not an event leadflow acts on")]
    response = payload.get("form_response")
    if not isinstance(response, dict):
        return [Item(ref=ref, error="form_response: missing or not an object")]
    if not _is_id(payload.get("event_id")):
        return [Item(ref=ref, error="event_id: missing")]
    form_id = _id_text(response["form_id"]) if _is_id(response.get("form_id")) else None
    if form_id is None:
        return [Item(ref=ref, error="form_response.form_id: missing")]
    submitted = _iso(response.get("submitted_at"))
    if submitted is None:
        return [Item(ref=ref, error="form_response.submitted_at: missing or not an ISO 8601 time")]

    settings = rules.webhooks.typeform
    mapping = settings.forms.get(form_id)
    definition = _dict(response.get("definition"))
    defined = definition.get("fields") if isinstance(definition.get("fields"), list) else []
    refs = {_id_text(f["id"]): f.get("ref") for f in defined if isinstance(f, dict) and _is_id(f.get("id"))}
    answers = response.get("answers") if isinstance(response.get("answers"), list) else []
    hidden = _dict(response.get("hidden"))

    email: str | None = None
    first_email: str | None = None  # the first email-type answer: the email unless mapped otherwise
    traits: dict[str, Any] = {}
    properties: dict[str, Any] = {}
    for answer in answers:
        if not isinstance(answer, dict):
            continue
        field = _dict(answer.get("field"))
        field_id = _id_text(field["id"]) if _is_id(field.get("id")) else None
        field_ref = _text(field.get("ref")) or _text(refs.get(field_id) if field_id else None)
        value = _typeform_value(answer)
        if value is None:
            continue
        is_email = answer.get("type") == "email" or field.get("type") == "email"
        if mapping is not None:
            target = (mapping.fields.get(field_ref) if field_ref else None) or \
                (mapping.fields.get(field_id) if field_id else None)
        elif is_email and first_email is None:
            target = "email"
        else:
            target = _trait_name(field_ref, rules) if field_ref else None
        if is_email and first_email is None:
            first_email = _text(value)
        if target == "email":
            email = email or _text(value)
        elif target and target not in traits:
            traits[target] = value
    for name, value in hidden.items():
        if not isinstance(name, str) or not _is_scalar(value) or value in (None, ""):
            continue
        if mapping is not None:
            target = mapping.hidden.get(name)
            if target == "email":
                email = email or _text(value)
            elif target:
                traits.setdefault(target, value)
        elif name.lower() == "email":
            email = email or _text(value)
        elif trait := _trait_name(name, rules):
            traits.setdefault(trait, value)
        elif name.lower() in PROPERTY_FIELDS:
            properties.setdefault(name.lower(), value)
    email = email or first_email
    if email is None:
        return [Item(ref=ref, error="no email: no email answer, and no answer or hidden field mapped to email")]
    _split_name(traits, traits.get("full_name"))

    properties.update(form_id=form_id, form_kind=(mapping.kind if mapping and mapping.kind else settings.default_kind))
    if _text(definition.get("title")):
        properties["form_title"] = definition["title"].strip()
    if _is_id(response.get("token")):
        properties["response_id"] = _id_text(response["token"])
    return [_item(ref, event_id=_event_id("typeform", _id_text(payload["event_id"])), type="form_submitted",
                  occurred_at=submitted, email=email, traits=traits, properties=properties)]


def _typeform_value(answer: dict) -> Any:
    """An answer's value as one scalar: a choice's label, several choices joined."""
    kind = answer.get("type")
    if not isinstance(kind, str):
        return None
    value = answer.get(kind)
    if kind == "choice":
        choice = _dict(value)
        return _text(choice.get("label")) or _text(choice.get("other"))
    if kind == "choices":
        choices = _dict(value)
        labels = [label for label in choices.get("labels") or [] if _text(label)] \
            if isinstance(choices.get("labels"), list) else []
        if _text(choices.get("other")):
            labels.append(choices["other"])
        return ", ".join(label.strip() for label in labels) or None
    if kind == "payment":
        return None
    return value if _is_scalar(value) and value != "" else None


# Calendly ------------------------------------------------------------------------------

def map_calendly(payload: Any, rules: Rules) -> list[Item]:
    """A Calendly webhook (API v2): `{"event": "invitee.created", "payload": {…}}`."""
    if not isinstance(payload, dict) or _text(payload.get("event")) is None \
            or not isinstance(payload.get("payload"), dict):
        raise PayloadError("a Calendly webhook is a JSON object with an event and a payload object")
    kind = payload["event"].strip()
    body: dict = payload["payload"]
    ref = "payload"
    if kind == "invitee.canceled":
        why = "invitee.canceled: leadflow does not un-book a meeting"
        if body.get("rescheduled") is True:
            why += " (rescheduled: the new time arrives as its own invitee.created)"
        return [Item(ref=ref, ignored=why)]
    if kind != "invitee.created":
        return [Item(ref=ref, ignored=f"{kind} is not an event leadflow acts on")]
    invitee_uri = _text(body.get("uri")) or _text(_dict(body.get("invitee")).get("uri"))
    if invitee_uri is None:
        return [Item(ref=ref, error="payload.uri: missing (the invitee's id)")]
    email = _text(body.get("email"))
    if email is None:
        return [Item(ref=ref, error="payload.email: missing")]
    occurred = _iso(body.get("created_at")) or _iso(payload.get("created_at"))
    if occurred is None:
        return [Item(ref=ref, error="payload.created_at: missing or not an ISO 8601 time")]

    traits: dict[str, Any] = {}
    if _text(body.get("first_name")):
        traits["first_name"] = body["first_name"].strip()
    if _text(body.get("last_name")):
        traits["last_name"] = body["last_name"].strip()
    _split_name(traits, body.get("name"))
    questions = body.get("questions_and_answers") if isinstance(body.get("questions_and_answers"), list) else []
    for qa in questions:
        qa = _dict(qa)
        question, answer = _text(qa.get("question")), _text(qa.get("answer"))
        if question and answer:
            name = _trait_name(re.sub(r"[\s\-]+", "_", question.rstrip("?:. ").strip()), rules)
            if name:
                traits.setdefault(name, answer)

    scheduled = _dict(body.get("scheduled_event"))
    tracking = _dict(body.get("tracking"))
    properties: dict[str, Any] = {
        "event_type": _text(scheduled.get("event_type")),
        "event_name": _text(scheduled.get("name")),
        "scheduled_at": _text(scheduled.get("start_time")),
        "scheduled_event": _text(scheduled.get("uri")) or _text(body.get("event")),
        "rescheduled": True if body.get("old_invitee") else None,
    }
    for key in ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content"):
        properties[key] = _text(tracking.get(key))
    return [_item(ref, event_id=_event_id("calendly", invitee_uri, kind), type="meeting_booked", occurred_at=occurred,
                  email=email, traits=traits, properties={k: v for k, v in properties.items() if v is not None})]


# SendGrid ------------------------------------------------------------------------------

def map_sendgrid(payload: Any, rules: Rules) -> list[Item]:
    """A SendGrid Event Webhook delivery: a JSON array of events."""
    if not isinstance(payload, list):
        raise PayloadError("a SendGrid Event Webhook delivery is a JSON array of events")
    return [_sendgrid_event(f"[{i}]", raw) for i, raw in enumerate(payload)]


def _sendgrid_event(ref: str, raw: Any) -> Item:
    if not isinstance(raw, dict):
        return Item(ref=ref, error="a SendGrid event must be a JSON object")
    kind = _text(raw.get("event"))
    if kind is None:
        return Item(ref=ref, error="event: missing")
    reason = _text(raw.get("reason")) or ""
    if kind == "open":
        if raw.get("sg_machine_open") is True:
            return Item(ref=ref, ignored="machine open (a mail client fetched the message, e.g. Apple Mail "
                                         "Privacy Protection): not engagement")
        event_type = "email_opened"
    elif kind == "click":
        event_type = "email_clicked"
    elif kind in SENDGRID_UNSUBSCRIBES:
        event_type = "email_unsubscribed"
    elif kind == "bounce":
        if (_text(raw.get("type")) or "").lower() == "blocked":
            return Item(ref=ref, ignored="bounce of type blocked: the receiving server refused the message, "
                                         "not the address")
        event_type = "email_bounced"
    elif kind == "dropped":
        if not _bounce_like(reason):
            return Item(ref=ref, ignored=f"dropped ({reason or 'no reason given'}): not a bounce")
        event_type = "email_bounced"
    elif kind in SENDGRID_DELIVERY:
        return Item(ref=ref, ignored=f"{kind}: a delivery status, not engagement")
    else:
        return Item(ref=ref, ignored=f"{kind} is not an event leadflow acts on")

    if not _is_id(raw.get("sg_event_id")):
        return Item(ref=ref, error="sg_event_id: missing")
    email = _text(raw.get("email"))
    if email is None:
        return Item(ref=ref, error="email: missing")
    occurred = _epoch(raw.get("timestamp"), millis=False)
    if occurred is None:
        return Item(ref=ref, error="timestamp: missing or not a time in epoch seconds")
    category = raw.get("category")
    categories = [category] if isinstance(category, str) else category if isinstance(category, list) else []
    properties: dict[str, Any] = {
        "sendgrid_event": kind,
        "category": [c for c in categories if isinstance(c, str)] or None,
        "sg_message_id": _text(raw.get("sg_message_id")),
        "url": _text(raw.get("url")) if kind == "click" else None,
        "reason": reason or None,
        "bounce_type": _text(raw.get("type")) if kind == "bounce" else None,
        "asm_group_id": raw.get("asm_group_id") if _is_id(raw.get("asm_group_id")) else None,
        "campaign": _text(raw.get("marketing_campaign_name")),
    }
    # sg_event_id is unique per event; the event name keeps distinct events apart even
    # where a sender reuses an id (SendGrid's own documentation samples do).
    return _item(ref, event_id=_event_id("sendgrid", _id_text(raw["sg_event_id"]), kind), type=event_type,
                 occurred_at=occurred, email=email, properties={k: v for k, v in properties.items() if v is not None})


def _bounce_like(reason: str) -> bool:
    """SendGrid drops a message to an address that bounced before ("Bounced Address") or
    is invalid ("Invalid"); other drop reasons (unsubscribed, spam reports, quota,
    headers) are not about the address being dead."""
    text = reason.strip().lower()
    return "bounce" in text or text in ("invalid", "invalid address")
