"""The event log (EventLogFunction, on the table's stream): what each change to a lead
item means for the log that replay reads.

- A write that applied events appends them to the lead's immutable event log. Log
  keys are fixed per event, so a redelivered batch rewrites the same items: applied
  once in effect.
- A removed lead (erasure) sweeps any log items that raced the erasure.

A batch's appends are written together (one BatchWriteItem per 25 events rather than
one per record): the log is the third write of every event, so this is most of its
cost. Order still holds where it matters: whatever came before a removal is written
before the sweep, and what a re-created lead applied after it, after.
"""

from __future__ import annotations

from typing import Sequence

from leadflow.domain.ports import LeadChange, LeadStore
from leadflow.observability import logger


def record(store: LeadStore, change: LeadChange | None) -> str:
    if change is None:
        return "ignored"
    if change.removed:
        return f"erased:{store.purge_events(change.lead_id)}"
    if change.applied:
        store.append_events(change.lead_id, change.applied)
        return f"logged:{len(change.applied)}"
    return "no-op"


def record_batch(store: LeadStore, changes: Sequence[tuple[str, LeadChange | None]]) -> str | None:
    """Record a stream batch, given as (sequence number, change) in stream order. Returns
    the sequence number of the first record not recorded, or None: a stream redelivers
    from its first failure on, and every write here is idempotent, so reporting that
    one record is exact."""
    pending: list[tuple[str, str, list[dict]]] = []  # (sequence number, lead id, events)

    def flush() -> str | None:
        if not pending:
            return None
        try:
            store.append_logs([(lead_id, events) for _, lead_id, events in pending])
        except Exception:
            logger.exception("event_log.append_failed", extra={"records": len(pending)})
            return pending[0][0]
        pending.clear()
        return None

    for sequence_number, change in changes:
        if change is None:
            continue
        if change.removed:
            failed = flush()
            if failed is not None:
                return failed
            try:
                store.purge_events(change.lead_id)
            except Exception:
                logger.exception("event_log.purge_failed", extra={"lead_id": change.lead_id})
                return sequence_number
        elif change.applied:
            pending.append((sequence_number, change.lead_id, change.applied))
    return flush()
