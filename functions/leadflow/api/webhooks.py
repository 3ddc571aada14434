"""`POST /v1/webhooks/{hubspot,mautic,typeform,calendly,sendgrid}`: verify, map, apply.

Order matters and nothing is parsed early: the vendor's signature is checked over the
raw bytes first (401 with the reason, nothing written), then the body is parsed (400)
and mapped (422 when it is no payload that vendor sends). Each item of a batch is then
applied on its own, oldest first: a bad item is reported and never drops the others.
A redelivered or replayed delivery maps to the same event ids and is applied once
(`duplicate`). The answer lists every item's outcome; it is 200 unless every item
failed (422), so a vendor does not re-send a whole batch for one bad item.
"""

from __future__ import annotations

import base64
import json
import time
from datetime import datetime, timezone
from typing import Any, Callable

from leadflow.domain.errors import BadRequest, InvalidInput, LeadflowError, Unauthorized
from leadflow.observability import count, logger

MAX_ITEMS = 1000
# HubSpot change sources that are machines writing, not a person deciding: leadflow's own
# CRM push comes back as API/INTEGRATION, and honouring it would echo stale stages.
AUTOMATED_CHANGE_SOURCES = frozenset({"API", "INTEGRATION", "AUTOMATION_PLATFORM", "WORKFLOWS", "CALCULATED",
                                      "BATCH_UPDATE", "MIGRATION"})


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
    from leadflow.webhooks import Delivery, PayloadError, SignatureError
    from leadflow.webhooks.mapping import map_delivery
    from leadflow.webhooks.signatures import verify

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
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        count("WebhookRejected", source=source, reason="malformed")
        raise BadRequest(f"malformed JSON: {exc}", field="body") from None
    try:
        items = map_delivery(source, payload, service.rules)
    except PayloadError as exc:
        count("WebhookRejected", source=source, reason="payload")
        raise InvalidInput(f"{source}: {exc.reason}", field="body") from None
    if len(items) > MAX_ITEMS:
        count("WebhookRejected", source=source, reason="too_large")
        raise InvalidInput(f"{source}: {len(items)} items in one delivery; at most {MAX_ITEMS}", field="body")

    outcomes = [_apply(source, item, service) for item in _oldest_first(items)]
    by_ref = {o["ref"]: o for o in outcomes}
    answer_items = [by_ref[item.ref] for item in items]  # in the vendor's order
    tally = {status: sum(1 for o in answer_items if o["status"] == status)
             for status in ("applied", "duplicate", "ignored", "failed")}
    for status, n in tally.items():
        if n:
            count({"applied": "WebhookApplied", "duplicate": "WebhookDuplicate", "ignored": "WebhookIgnored",
                   "failed": "WebhookRejected"}[status], n, source=source,
                  **({"reason": "item"} if status == "failed" else {}))
    logger.info("webhook.delivery", extra={"source": source, "items": len(items), **tally})
    status_code = 422 if items and tally["failed"] == len(items) else 200
    return status_code, {"source": source, "received": len(items), **tally, "items": answer_items}


def _oldest_first(items: list) -> list:
    def when(item) -> datetime:
        at = item.event.occurred_at if item.event is not None else None
        return at or datetime.max.replace(tzinfo=timezone.utc)

    return sorted(items, key=when)


def _apply(source: str, item: Any, service: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"ref": item.ref}
    if item.error:
        return {**out, "status": "failed", "reason": item.error}
    if item.event is None:
        return {**out, "status": "ignored", "reason": item.ignored or "nothing to apply"}
    try:
        result = service.ingest(item.event, source=f"webhook:{source}")
    except LeadflowError as exc:
        return {**out, "status": "failed", "reason": exc.message}
    lead = result.lead
    out.update(status="duplicate" if result.duplicate else "applied", lead_id=lead.lead_id, stage=lead.stage)
    stage = (item.extra or {}).get("stage")
    if stage:
        changed_by = item.extra.get("change_source")
        if changed_by in AUTOMATED_CHANGE_SOURCES:
            out.update(stage_change="ignored", stage_reason=f"lifecyclestage written by {changed_by}, not a person "
                                                            "(our own CRM push comes back this way)")
        else:
            out.update(_set_stage(source, item, stage, service))
    return out


def _set_stage(source: str, item: Any, stage: str, service: Any) -> dict[str, Any]:
    """A lifecycle stage a person set in the CRM: an explicit move, recorded with its source."""
    from leadflow.domain.errors import IllegalTransition

    value = item.extra.get("lifecyclestage", stage)
    try:
        result = service.set_stage(item.event, stage, actor=source, reason=f"lifecyclestage set to {value} in {source}",
                                   source=f"webhook:{source}")
    except IllegalTransition as exc:
        return {"stage_change": "ignored", "stage_reason": exc.message}
    except LeadflowError as exc:
        return {"stage_change": "failed", "stage_reason": exc.message}
    return {"stage": result.lead.stage, "stage_change": "moved" if result.moves else "unchanged"}
