"""Stream consumer logic: what each change to a lead item means downstream.

- A write that applied events appends them to the lead's immutable event log (the
  log replay reads). Log keys are fixed per event, so a redelivered batch rewrites the
  same items: applied once in effect.
- A removed lead (erasure) sweeps any log items that raced the erasure.
"""

from __future__ import annotations

from typing import Any

from leadflow.adapters.dynamodb import applied_events
from leadflow.domain.ports import LeadStore


def handle_change(store: LeadStore, event_name: str, keys: dict[str, Any], new_image: dict[str, Any] | None) -> str:
    pk = str(keys.get("PK", ""))
    if not pk.startswith("LEAD#") or keys.get("SK") != "LEAD":
        return "ignored"
    lead_id = pk.split("#", 1)[1]
    if event_name == "REMOVE":
        swept = store.purge_events(lead_id)
        return f"erased:{swept}"
    applied = applied_events(new_image or {})
    if applied:
        store.append_events(lead_id, applied)
        return f"logged:{len(applied)}"
    return "no-op"
