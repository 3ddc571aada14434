"""Vendor webhooks in: each vendor's own signature scheme over the raw bytes received,
then its payloads mapped to canonical events.

A request becomes a `Delivery` (raw body, lower-cased headers, the URL the vendor
called). `signatures.verify(delivery, secret, now=...)` raises `SignatureError`
with a reason, or returns the vendor's delivery id when it has one. The mappers turn
a verified payload into `Item`s: one canonical event each, or the reason that item
could not be mapped (one bad item never drops the others).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from leadflow.domain.events import CanonicalEvent

SOURCES = ("hubspot", "mautic", "typeform", "calendly", "sendgrid")


@dataclass(frozen=True)
class Delivery:
    source: str
    body: bytes  # exactly as received: vendors sign raw bytes
    headers: dict[str, str]  # names lower-cased
    method: str = "POST"
    url: str = ""  # the full URL the vendor called (scheme, host, path, query): HubSpot signs it


class SignatureError(Exception):
    """401: the delivery is not provably from the vendor (or is too old)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class PayloadError(Exception):
    """400/422: the verified body is not a payload this vendor sends."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class Item:
    """One item of a delivery: its reference in the payload (e.g. "[3]" or
    "mautic.form_on_submit[0]"), and either the event it maps to, or why it was skipped
    (`ignored`: a kind of event we do not act on) or refused (`error`)."""

    ref: str
    event: CanonicalEvent | None = None
    ignored: str | None = None
    error: str | None = None
    extra: dict = field(default_factory=dict)
