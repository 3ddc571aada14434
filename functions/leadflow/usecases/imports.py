"""Bringing history in: one row of a CRM or marketing-automation export applied to its
lead in one conditional write, through the same identity, dedupe and rules as any
event. What the row says the lead already is (its stage, its won/lost outcome) is
recorded as an explicit move by the import; nothing it causes is announced to sales."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from leadflow.domain.conform import conform
from leadflow.domain.engine import IMPORT_ACTOR, apply_import, new_lead
from leadflow.domain.errors import Erased, InvalidInput
from leadflow.domain.events import CanonicalEvent, finalise
from leadflow.domain.lead import SalesOutcome
from leadflow.domain.ports import VersionConflict
from leadflow.domain.stages import STAGES
from leadflow.usecases.leads import Applied, LeadService


@dataclass(frozen=True)
class ImportRow:
    key: str
    events: list[CanonicalEvent]
    stage: str | None = None
    stage_at: datetime | None = None
    outcome: dict[str, Any] | None = None  # {"result": "won"|"lost", "at", "reason", "value"}
    owner: str | None = None


class Importer:
    def __init__(self, service: LeadService):
        self.service = service

    def prefetch(self, emails: list[str]) -> dict[str, Any]:
        """The stored leads of a batch's rows in one batched read; a row applies on top of
        what this read, and re-reads only if another write got there first."""
        return self.service.store.get_many(self.service.ids.for_email(e) for e in emails)

    def apply(self, row: ImportRow, known: dict[str, Any] | None = None) -> dict[str, Any]:
        """`imported` (a new lead), `merged` (into an existing lead), `unchanged` (all of it
        was applied before). Bad data raises InvalidInput and writes nothing. `known`: the
        prefetched leads by id (absent: not stored at prefetch time)."""
        svc = self.service
        now = svc.clock()
        if not row.events:
            raise InvalidInput("events: a row needs at least one event", field="events")
        events = [finalise(_conformed(n, e, svc), now=now, source="import") for n, e in enumerate(row.events)]
        emails = {e.email for e in events}
        if None in emails or len(emails) != 1:
            raise InvalidInput("events: every event of a row carries the same email", field="events")
        email = events[0].email or ""
        if row.stage is not None and row.stage not in STAGES:
            raise InvalidInput(f"stage: unknown stage {row.stage!r}; expected one of {', '.join(STAGES)}", field="stage")
        outcome = _outcome(row.outcome, default_at=max(e.occurred_at for e in events), now=now)
        lead_id = svc.ids.for_email(email)
        created = False
        erasures: dict[str, Any] = {}

        def attempt(conflict: VersionConflict | None) -> Applied:
            nonlocal created
            if conflict is None and known is not None:
                stored = known.get(lead_id)
            else:
                stored = svc.store.get(lead_id)
            svc.refuse_if_erased(lead_id, stored, min(e.occurred_at for e in events), erasures)
            base = stored if stored is not None else new_lead(lead_id, email=email,
                                                              now=min(e.occurred_at for e in events))
            result = apply_import(base, events, key=row.key, stage=row.stage, stage_at=row.stage_at, outcome=outcome,
                                  owner=row.owner, rules=svc.rules, now=now)
            if result.duplicate:
                return Applied(base, [], True)
            created = stored is None
            return Applied(svc.store.put(result.lead, stored.version if stored else None), result.moves, False)

        try:
            applied = svc.optimistically(attempt)
        except Erased as exc:  # a row from before an erasure would bring the person back: not imported
            raise InvalidInput(exc.message, field="events") from None
        status = "unchanged" if applied.duplicate else "imported" if created else "merged"
        return {"status": status, "lead_id": applied.lead.lead_id, "stage": applied.lead.stage,
                "moves": len(applied.moves)}


def _conformed(n: int, event: CanonicalEvent, svc: LeadService) -> CanonicalEvent:
    try:
        return conform(event, svc.rules)
    except InvalidInput as exc:
        raise InvalidInput(f"events[{n}].{exc.message}", field=f"events[{n}].{exc.field}") from None


def _outcome(raw: dict[str, Any] | None, *, default_at: datetime, now: datetime) -> SalesOutcome | None:
    if raw is None:
        return None
    if raw.get("result") not in ("won", "lost"):
        raise InvalidInput("outcome.result: expected won or lost", field="outcome.result")
    at = raw.get("at") or default_at
    if at > now:
        raise InvalidInput("outcome.at: is in the future", field="outcome.at")
    return SalesOutcome(result=raw["result"], at=at, reason=raw.get("reason"), by=IMPORT_ACTOR, value=raw.get("value"))
