"""`POST /v1/webhooks/{hubspot,mautic,typeform,calendly,sendgrid}`: verify, map, apply.

Order matters and nothing is parsed early: the vendor's signature is checked over the
raw bytes first (401 with the reason, nothing written), then the body is parsed (400)
and mapped (422 when it is no payload that vendor sends); then the items are applied
(`VendorWebhooks`), and the answer lists every item's outcome.
"""

from __future__ import annotations

import base64
import time
from typing import Any, Callable

from leadflow.domain.errors import BadRequest, InvalidInput, Unauthorized
from leadflow.domain.inputs import parse_json
from leadflow.observability import count, logger
from leadflow.usecases.vendor_webhooks import VendorWebhooks

MAX_ITEMS = 1000


def raw_body(event: dict[str, Any]) -> bytes:
    """The bytes the vendor sent, as API Gateway hands them over."""
    body = event.get("body") or ""
    if event.get("isBase64Encoded"):
        try:
            return base64.b64decode(body)
        except ValueError:
            raise BadRequest("body is not valid base64", field="body") from None
    return body.encode("utf-8")


def called_url(event: dict[str, Any], public_url: str | None) -> str:
    """The URL the vendor called (HubSpot signs it): LEADFLOW_PUBLIC_URL when set (a custom
    domain or a proxy in front), else scheme and host as the gateway received them."""
    headers = {k.lower(): v for k, v in (event.get("headers") or {}).items()}
    if public_url:
        base = public_url.rstrip("/")
    else:
        proto = headers.get("x-forwarded-proto", "https").split(",")[0].strip()
        host = headers.get("host") or (event.get("requestContext") or {}).get("domainName", "")
        base = f"{proto}://{host}"
    query = event.get("rawQueryString") or ""
    return base + (event.get("rawPath") or "/") + (f"?{query}" if query else "")


def handle(source: str, event: dict[str, Any], *, service: Any, secret: str | None, public_url: str | None,
           now: Callable[[], float] = time.time) -> tuple[int, dict[str, Any]]:
    from leadflow.adapters.vendor_webhooks import Delivery, PayloadError, SignatureError
    from leadflow.adapters.vendor_webhooks.mapping import map_delivery
    from leadflow.adapters.vendor_webhooks.signatures import verify

    count("WebhookReceived", source=source)
    headers = {k.lower(): v for k, v in (event.get("headers") or {}).items()}
    body = raw_body(event)
    method = ((event.get("requestContext") or {}).get("http") or {}).get("method", "POST")
    delivery = Delivery(source=source, body=body, headers=headers, method=method, url=called_url(event, public_url))
    try:
        verify(delivery, secret, now=now())
    except SignatureError as exc:
        count("WebhookRejected", source=source, reason="signature")
        logger.warning("webhook.refused", extra={"source": source, "reason": exc.reason})
        raise Unauthorized(f"{source} signature: {exc.reason}") from None
    if callable(service):  # built only for a signed delivery: building it reads the table (lead ids)
        service = service()
    try:
        payload = parse_json(body)
    except BadRequest:
        count("WebhookRejected", source=source, reason="malformed")
        raise
    try:
        items = map_delivery(source, payload, service.rules)
    except PayloadError as exc:
        count("WebhookRejected", source=source, reason="payload")
        raise InvalidInput(f"{source}: {exc.reason}", field="body") from None
    if len(items) > MAX_ITEMS:
        count("WebhookRejected", source=source, reason="too_large")
        raise InvalidInput(f"{source}: {len(items)} items in one delivery; at most {MAX_ITEMS}", field="body")

    return VendorWebhooks(service).apply(source, items)
