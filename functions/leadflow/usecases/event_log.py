"""The event log (EventLogFunction, on the table's stream): what each change to a lead
item means for the log that replay reads.

- A write that applied events appends them to the lead's immutable event log. Log
  keys are fixed per event, so a redelivered batch rewrites the same items: applied
  once in effect.
- A removed lead (erasure) sweeps any log items that raced the erasure.
"""

from __future__ import annotations

from leadflow.domain.ports import LeadChange, LeadStore


def record(store: LeadStore, change: LeadChange | None) -> str:
    if change is None:
        return "ignored"
    if change.removed:
        return f"erased:{store.purge_events(change.lead_id)}"
    if change.applied:
        store.append_events(change.lead_id, change.applied)
        return f"logged:{len(change.applied)}"
    return "no-op"
