"""The canonical event: the one shape every input (API, form, webhook) becomes."""

from __future__ import annotations

import hashlib
import json
import unicodedata
import uuid
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, PlainValidator, ValidationError, field_validator,
                      model_validator)

from leadflow.domain.errors import InvalidInput
from leadflow.domain.inputs import Unstorable, check_identity, check_text, number_problem, utc_in_range

EventType = Literal[
    "form_submitted",
    "page_viewed",
    "email_opened",
    "email_clicked",
    "email_unsubscribed",
    "email_bounced",
    "webinar_attended",
    "meeting_booked",
    "trial_started",
    "content_downloaded",
    "identify",
]
EVENT_TYPES: tuple[str, ...] = EventType.__args__  # type: ignore[attr-defined]  # built in; a rules file adds its own
_TYPE_NAME = r"^[a-z][a-z0-9_]{0,63}$"

FORM_KINDS = ("newsletter", "content_download", "webinar", "contact_request", "demo_request", "trial_signup")

MAX_FUTURE_SKEW = timedelta(minutes=5)


def _scalar(value: Any) -> Any:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return check_text(value)
    if isinstance(value, (int, float)):
        problem = number_problem(value)
        if problem:
            raise ValueError(problem)
        return value
    if isinstance(value, Unstorable):
        raise ValueError(value.reason)
    raise ValueError(f"expected text, a number, true/false or null, not {type(value).__name__}")


def _scalar_or_list(value: Any) -> Any:
    if isinstance(value, list):
        if len(value) > 100:
            raise ValueError("a list holds at most 100 values")
        return [_scalar(v) for v in value]
    return _scalar(value)


# A trait or property value: text, a finite number, true/false or null (a property may
# also be a list of those). NaN and infinities never enter: they would pass no test
# and every test at once.
Scalar = Annotated[Any, PlainValidator(_scalar)]
ScalarOrList = Annotated[Any, PlainValidator(_scalar_or_list)]
# Text a person wrote (reasons, names of who did something): no control characters.
Text = Annotated[str, AfterValidator(check_text)]
# An identifier (event ids, visitor ids, keys): nothing invisible either.
Identity = Annotated[str, AfterValidator(check_identity)]
# A point in time: in UTC, from 1970 on.
Timestamp = Annotated[datetime, AfterValidator(utc_in_range)]


def normalise_email(raw: str) -> str:
    """One email, one lead: case, surrounding whitespace and compatibility forms (full-width
    letters, ligatures) never split a person in two."""
    return unicodedata.normalize("NFKC", raw).strip().lower()


def valid_email(raw: str) -> str:
    """`raw` normalised, or ValueError saying why it is not one visible email address.
    Characters nobody sees (zero-width, bidirectional overrides, byte order marks, controls)
    are refused rather than dropped: dropped, they would make two leads of one address.
    The syntax check is email-validator's (no DNS lookup: deliverability is not ours)."""
    email = check_identity(normalise_email(raw))
    from email_validator import EmailNotValidError, validate_email

    try:
        validate_email(email, check_deliverability=False)
    except EmailNotValidError as exc:
        raise ValueError(f"not an email address: {exc}") from None
    return email


def email_domain(email: str | None) -> str | None:
    return email.rsplit("@", 1)[1] if email and "@" in email else None


class CanonicalEvent(BaseModel):
    """`POST /v1/events` body, and what every webhook or form is mapped to."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    event_id: Identity | None = Field(default=None, min_length=1, max_length=200)
    type: str = Field(pattern=_TYPE_NAME)  # built in or declared by the rules (checked against them)
    occurred_at: Timestamp | None = None
    email: str | None = Field(default=None, max_length=254)
    anonymous_id: Identity | None = Field(default=None, min_length=1, max_length=200)
    properties: dict[str, ScalarOrList] = Field(default_factory=dict, max_length=100)
    traits: dict[str, Scalar] = Field(default_factory=dict, max_length=100)

    @field_validator("email")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        return None if value is None else valid_email(value)

    @field_validator("traits", "properties")
    @classmethod
    def _keys(cls, value: dict) -> dict:
        for key, item in value.items():
            if not key or len(key) > 100:
                raise ValueError(f"key {key[:40]!r} must be 1 to 100 characters")
            try:
                check_identity(key)
            except ValueError as exc:
                raise ValueError(f"key {key[:40]!r} {exc}") from None
            if isinstance(item, str) and len(item) > 2000:
                raise ValueError(f"value of {key!r} is longer than 2000 characters")
        return value

    @model_validator(mode="after")
    def _identity(self) -> "CanonicalEvent":
        if not self.email and not self.anonymous_id:
            raise ValueError("at least one of email or anonymous_id is required")
        return self


class AppliedEvent(BaseModel):
    """A validated event with its server-side facts fixed: id, time, arrival."""

    model_config = ConfigDict(frozen=True)

    event_id: str
    type: str
    occurred_at: datetime
    received_at: datetime
    email: str | None = None
    anonymous_id: str | None = None
    properties: dict[str, Any] = Field(default_factory=dict)
    traits: dict[str, Any] = Field(default_factory=dict)
    source: str = "api"

    @property
    def form_kind(self) -> str | None:
        kind = self.properties.get("form_kind")
        return str(kind) if kind is not None else None

    def to_record(self) -> dict:
        return self.model_dump(mode="json")


def _content_id(event: CanonicalEvent) -> str:
    canon = json.dumps(event.model_dump(mode="json", exclude={"event_id"}), sort_keys=True, separators=(",", ":"))
    return "c_" + hashlib.sha256(canon.encode()).hexdigest()[:32]


def finalise(event: CanonicalEvent, *, now: datetime, source: str = "api") -> AppliedEvent:
    """Fix the event's id and time. An event with its own `occurred_at` but no id is
    identified by its content, so a resend of the same body is recognised; one with
    neither cannot be told from a genuine repeat, so it gets a fresh id."""
    occurred = event.occurred_at or now
    if occurred - now > MAX_FUTURE_SKEW:
        raise InvalidInput("occurred_at is in the future", field="occurred_at")
    occurred = min(occurred, now)
    if event.event_id:
        event_id = event.event_id
    elif event.occurred_at is not None:
        event_id = _content_id(event)
    else:
        event_id = "r_" + uuid.uuid4().hex
    return AppliedEvent(
        event_id=event_id,
        type=event.type,
        occurred_at=occurred,
        received_at=now,
        email=event.email,
        anonymous_id=event.anonymous_id,
        properties=dict(event.properties),
        traits=dict(event.traits),
        source=source,
    )


def validation_details(exc: ValidationError) -> list[dict]:
    """Pydantic's errors as `[{"field": "traits.company_size", "reason": "..."}]`."""
    out = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = ".".join(str(p) for p in err["loc"] if p not in ("function-after[_identity(), CanonicalEvent]",))
        reason = err["msg"]
        if err["type"] == "string_pattern_mismatch" and err["loc"] and err["loc"][-1] == "type":
            reason = "unknown event type; expected one of " + ", ".join(EVENT_TYPES) + " or a type the rules declare"
        elif err["type"] == "extra_forbidden":
            reason = "unknown field"
        out.append({"field": loc or "body", "reason": reason.removeprefix("Value error, ")})
    return out


def validated(model: Any, payload: Any, *, what: str = "the body") -> Any:
    """`payload` (parsed JSON) as `model`, or InvalidInput naming the first bad field (and
    every problem in `details`)."""
    if not isinstance(payload, dict):
        raise InvalidInput(f"{what} must be a JSON object", field="body")
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        details = validation_details(exc)
        first = details[0]
        raise InvalidInput(f"{first['field']}: {first['reason']}", field=first["field"], details=details) from None


def parse_event(payload: Any) -> CanonicalEvent:
    """`payload` (parsed JSON, or a dict a mapping built) as a canonical event, or InvalidInput."""
    return validated(CanonicalEvent, payload, what="an event")
