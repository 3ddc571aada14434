"""Applying a vendor's delivery: each item on its own, oldest first, so a bad item is
reported and never drops the others. A redelivered or replayed delivery maps to the
same event ids and is applied once (`duplicate`). The answer lists every item's
outcome; it is 200 unless every item failed (422), so a vendor does not re-send a
whole batch for one bad item.

A lifecycle stage set in the CRM by a person is an explicit move; one written by a
machine (our own CRM push coming back, a workflow) is not applied, or leadflow would
echo stale stages back and forth.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from leadflow.domain.errors import Erased, IllegalTransition, LeadflowError
from leadflow.observability import count, logger

if TYPE_CHECKING:
    from leadflow.usecases.leads import LeadService

# HubSpot change sources that are machines writing, not a person deciding: leadflow's own
# CRM push comes back as API/INTEGRATION, and honouring it would echo stale stages.
AUTOMATED_CHANGE_SOURCES = frozenset({"API", "INTEGRATION", "AUTOMATION_PLATFORM", "WORKFLOWS", "CALCULATED",
                                      "BATCH_UPDATE", "MIGRATION"})


class VendorWebhooks:
    def __init__(self, leads: LeadService):
        self.leads = leads

    def apply(self, source: str, items: list) -> tuple[int, dict[str, Any]]:
        outcomes = [_apply_item(source, item, self.leads) for item in _oldest_first(items)]
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


def _apply_item(source: str, item: Any, service: LeadService) -> dict[str, Any]:
    out: dict[str, Any] = {"ref": item.ref}
    if item.error:
        return {**out, "status": "failed", "reason": item.error}
    if item.event is None:
        return {**out, "status": "ignored", "reason": item.ignored or "nothing to apply"}
    try:
        result = service.ingest(item.event, source=f"webhook:{source}")
    except Erased as exc:
        # Answered as handled (2xx) so the vendor stops re-sending; nothing is written.
        return {**out, "status": "ignored", "reason": exc.message}
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


def _set_stage(source: str, item: Any, stage: str, service: LeadService) -> dict[str, Any]:
    """A lifecycle stage a person set in the CRM: an explicit move, recorded with its source."""
    value = item.extra.get("lifecyclestage", stage)
    try:
        result = service.set_stage(item.event, stage, actor=source, reason=f"lifecyclestage set to {value} in {source}",
                                   source=f"webhook:{source}")
    except IllegalTransition as exc:
        return {"stage_change": "ignored", "stage_reason": exc.message}
    except LeadflowError as exc:
        return {"stage_change": "failed", "stage_reason": exc.message}
    return {"stage": result.lead.stage, "stage_change": "moved" if result.moves else "unchanged"}
