"""The lead service: the use cases the handlers call. Talks to ports only."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

from leadflow.domain.conform import conform
from leadflow.domain.engine import (
    absorb, apply_action, apply_event, apply_stage, needs_events, new_lead, refresh, score_lead,
)
from leadflow.domain.errors import Erased, NotFound, TooManyConflicts
from leadflow.domain.events import AppliedEvent, CanonicalEvent, finalise, normalise_email
from leadflow.domain.lead import Lead, LeadIds, Move, stage_rank
from leadflow.domain.routing import assign, rep_for_actor
from leadflow.domain.ports import LeadStore, VersionConflict
from leadflow.domain.rules import Rules
from leadflow.domain.stages import STAGES

MAX_ATTEMPTS = 30
MAX_BACKOFF_S = 0.2


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class Applied:
    lead: Lead
    moves: list[Move]
    duplicate: bool

    def answer(self) -> dict[str, Any]:
        lead = self.lead
        return {
            "lead_id": lead.lead_id,
            "stage": lead.stage,
            "score": lead.score,
            "fit_score": lead.fit_score,
            "fit_grade": lead.fit_grade,
            "engagement_score": lead.engagement_score,
            "disqualified": lead.disqualified,
            "duplicate": self.duplicate,
            "moves": [f"{m.from_stage or 'new'}->{m.to_stage}" for m in self.moves],
        }


class LeadService:
    def __init__(self, store: LeadStore, rules: Rules, clock: Callable[[], datetime] = utcnow,
                 sleep: Callable[[float], None] = time.sleep, *, ids: LeadIds):
        self.store = store
        self.ids = ids  # the deployment's lead-id derivation (keyed): every id from an address goes through it
        self.rules = rules
        self.clock = clock
        self.sleep = sleep

    def optimistically(self, attempt: Callable[[VersionConflict | None], Applied]) -> Applied:
        """Read, decide, write conditionally on the version read; on a version conflict back
        off (full jitter, exponential) and decide again. `attempt` gets the previous
        attempt's conflict (None the first time): it carries the stored item when the
        store returned it, which saves a re-read."""
        conflict: VersionConflict | None = None
        for n in range(MAX_ATTEMPTS):
            try:
                return attempt(conflict)
            except VersionConflict as exc:
                conflict = exc
                self.sleep(random.uniform(0, min(MAX_BACKOFF_S, 0.005 * 2 ** n)))
        raise TooManyConflicts(f"lead is being updated too often; gave up after {MAX_ATTEMPTS} attempts")

    # -- ingest -------------------------------------------------------------------------

    def ingest(self, event: CanonicalEvent, *, source: str = "api") -> Applied:
        now = self.clock()
        return self.apply(finalise(conform(event, self.rules), now=now, source=source), now)

    def ingest_many(self, events: list[CanonicalEvent], *, source: str = "api") -> list[Applied]:
        """A delivery of several events: applied in event-time order, so the order the
        sender listed simultaneous events in cannot change the result."""
        now = self.clock()
        conformed = [conform(e, self.rules) for e in events]  # all or nothing: a bad one changes nothing
        applied = [finalise(e, now=now, source=source) for e in conformed]
        order = sorted(range(len(applied)), key=lambda i: (applied[i].occurred_at, applied[i].type, applied[i].event_id))
        results: list[Applied | None] = [None] * len(applied)
        for i in order:
            results[i] = self.apply(applied[i], now)
        return results  # type: ignore[return-value]

    def apply(self, event: AppliedEvent, now: datetime) -> Applied:
        turns: dict[str, int] = {}
        erasures: dict[str, datetime | None] = {}

        def attempt(conflict: VersionConflict | None) -> Applied:
            current = conflict.current if conflict is not None else None
            if current is None or current.merged_into or (
                    event.anonymous_id and event.email and event.anonymous_id not in current.anonymous_ids):
                resolved = self._resolve(event, now, erasures)  # first attempt, or the identity changed under us
            else:
                resolved = Resolved(current, current.version)  # the conflict returned the item: no re-read
                self.refuse_if_erased(current.lead_id, current, event.occurred_at, erasures)
            outcome = apply_event(resolved.lead, event, self.rules, now)
            if outcome.duplicate:
                return Applied(resolved.lead, [], True)
            self._assign(outcome.lead, outcome.moves, turns)
            return Applied(self.store.put(outcome.lead, resolved.expected), outcome.moves, False)

        return self.optimistically(attempt)

    def refuse_if_erased(self, lead_id: str, lead: Lead | None, occurred_at: datetime,
                          erasures: dict[str, datetime | None]) -> None:
        """An erased person is not brought back by what happened before the erasure (a
        replayed vendor delivery, an old export): an event that occurred at or before the
        lead's tombstone is refused (Erased). One that occurred after it is the person
        coming back, a new consent, and makes a new lead. Only a lead about to be created,
        or an event older than the lead, can be such a replay, so only those read the
        tombstone (once per event, whatever the conflicts), before anything is written
        (a visitor's alias included)."""
        if lead is not None and (not lead.known or occurred_at >= lead.created_at):
            return
        if lead_id not in erasures:
            erasures[lead_id] = self.store.erased_at(lead_id)
        erased_at = erasures[lead_id]
        if erased_at is not None and occurred_at <= erased_at:
            raise Erased("this person was erased after this event happened: it is not applied",
                         field="occurred_at")

    def _assign(self, lead: Lead, moves: list[Move], turns: dict[str, int]) -> None:
        """Give a lead reaching the assignment stage an owner, in the same write as the
        move, and record on the move who was chosen and why. `turns` keeps the
        round-robin position taken for a team across conflict retries of one write."""
        if self.rules.routing is None or lead.owner or lead.disqualified or not lead.known:
            return
        floor = stage_rank(self.rules.handoff.assign_owner_at)
        move = next((m for m in moves if stage_rank(m.to_stage) >= floor > stage_rank(m.from_stage)), None)
        if move is None:
            return

        def turn(team: str) -> int:
            if team not in turns:
                turns[team] = self.store.next_turn(f"routing#{team}")
            return turns[team]

        assignment = assign(lead.traits, lead.email, self.rules, turn)
        lead.owner = assignment.owner.id if assignment.owner else None
        move.owner = lead.owner
        move.routing = {"rule": assignment.rule, "team": assignment.team, "turn": assignment.turn,
                        "reason": assignment.reason}

    def _resolve(self, event: AppliedEvent, now: datetime,
                 erasures: dict[str, datetime | None] | None = None) -> "Resolved":
        """Find the lead an event belongs to: by email, else by the visitor's alias.
        An identified visitor's history is joined to the lead first."""
        if event.email:
            lead_id = self.ids.for_email(event.email)
            lead = self.store.get(lead_id)
            self.refuse_if_erased(lead_id, lead, event.occurred_at, {} if erasures is None else erasures)
            expected = lead.version if lead is not None else None
            base = lead if lead is not None else new_lead(lead_id, email=event.email, now=now)
            anon = event.anonymous_id
            if anon and anon not in base.anonymous_ids:
                base = self._join_visitor(base, anon, now)
            return Resolved(base, expected)
        visitor_id = self.ids.for_anonymous(event.anonymous_id or "")
        visitor = self.store.get(visitor_id)
        if visitor is not None and visitor.merged_into:
            target = self.store.get(visitor.merged_into)
            if target is not None:
                expected = target.version
                if event.anonymous_id not in target.anonymous_ids:
                    target = absorb(target, visitor, event.anonymous_id or "")
                return Resolved(target, expected)
        if visitor is None:
            return Resolved(new_lead(visitor_id, email=None, now=now), None)
        return Resolved(visitor, visitor.version)

    def _join_visitor(self, base: Lead, anon: str, now: datetime) -> Lead:
        """Point the visitor at the lead first (so its later anonymous events follow),
        then let the event's own write carry the visitor's history into the lead. A crash
        in between leaves an alias whose history is absorbed on the next event."""
        visitor_id = self.ids.for_anonymous(anon)
        visitor = self.store.get(visitor_id)
        if visitor is None:
            visitor = new_lead(visitor_id, email=None, now=now).model_copy(update={"merged_into": base.lead_id})
            self._put_alias(visitor, None)
        elif visitor.merged_into and visitor.merged_into != base.lead_id:
            return base  # the visitor already identified as someone else (a shared computer): no merge
        elif not visitor.merged_into:
            self._put_alias(visitor.model_copy(update={"merged_into": base.lead_id, "applied": []}), visitor.version)
        return absorb(base, visitor, anon)

    def _put_alias(self, alias: Lead, expected: int | None) -> None:
        try:
            self.store.put(alias, expected)
        except VersionConflict as conflict:
            if conflict.current is None or not conflict.current.merged_into:
                raise

    # -- reads and actions -------------------------------------------------------------

    def get(self, lead_id: str) -> Lead:
        lead = self.store.get(lead_id)
        if lead is not None and lead.merged_into:
            lead = self.store.get(lead.merged_into)
        if lead is None:
            raise NotFound(f"no lead {lead_id}", field="lead_id")
        return lead

    def get_by_email(self, email: str) -> Lead:
        normalised = normalise_email(email)
        lead = self.store.get(self.ids.for_email(normalised))
        if lead is None:
            raise NotFound("no lead with that email", field="email")
        return lead

    def view(self, lead: Lead) -> dict[str, Any]:
        """The lead as the API shows it, with scores decayed to now."""
        now = self.clock()
        card = score_lead(lead, self.rules, now)
        return {
            "lead_id": lead.lead_id,
            "email": lead.email,
            "anonymous_ids": lead.anonymous_ids,
            "traits": lead.traits,
            "trait_sources": lead.trait_sources,
            "review": [r.model_dump(mode="json") for r in lead.review],
            "stage": lead.stage,
            "stage_entered_at": lead.stage_entered_at.isoformat(),
            "score": card.score,
            "fit_score": card.fit_score,
            "fit_grade": card.fit_grade,
            "engagement_score": card.engagement_score,
            "explanation": card.explanation,
            "aggregates": card.aggregates,
            "scored_at": now.isoformat(),
            "rules_version": self.rules.version,
            "disqualified": lead.disqualified,
            "disqualified_reason": lead.disqualified_reason,
            "marketing_email": lead.marketing_email,
            "owner": lead.owner,
            "first_touch_at": lead.first_touch_at.isoformat() if lead.first_touch_at else None,
            "first_touch_by": lead.first_touch_by,
            "first_touch_seconds": lead.first_touch_seconds,
            "first_touch": lead.first_touch.model_dump(mode="json") if lead.first_touch else None,
            "last_touch": lead.last_touch.model_dump(mode="json") if lead.last_touch else None,
            "message": lead.message.model_dump(mode="json") if lead.message else None,
            "first_form": lead.first_form.model_dump(mode="json") if lead.first_form else None,
            "outcome": lead.outcome.model_dump(mode="json") if lead.outcome else None,
            "history": [m.model_dump(mode="json", by_alias=True) for m in lead.history],
            "events_applied": len(lead.seen),
            "created_at": lead.created_at.isoformat(),
            "updated_at": lead.updated_at.isoformat(),
        }

    def summary(self, lead: Lead) -> dict[str, Any]:
        """A lead as a list shows it: who, where it stands, its scores decayed to now."""
        from leadflow.domain.listing import source_of

        card = score_lead(lead, self.rules, self.clock())
        traits = lead.traits or {}
        name = " ".join(str(traits[k]) for k in ("first_name", "last_name") if traits.get(k))
        return {
            "lead_id": lead.lead_id,
            "email": lead.email,
            "name": name or None,
            "company": traits.get("company"),
            "stage": lead.stage,
            "stage_entered_at": lead.stage_entered_at.isoformat(),
            "score": card.score,
            "fit_grade": card.fit_grade,
            "engagement_score": card.engagement_score,
            "disqualified": lead.disqualified,
            "owner": lead.owner,
            "source": source_of(lead),
            "created_at": lead.created_at.isoformat(),
            "updated_at": lead.updated_at.isoformat(),
        }

    def act(self, lead_id: str, action: str, *, reason: str | None, by: str | None) -> Applied:
        def attempt(_conflict: VersionConflict | None) -> Applied:
            lead = self.get(lead_id)
            outcome = apply_action(lead, action, reason=reason, by=by, rules=self.rules, now=self.clock())
            if action == "accept" and not outcome.lead.owner and by and self.rules.routing is not None:
                rep = rep_for_actor(by, self.rules)  # whoever accepts an unassigned lead owns it
                if rep is not None:
                    outcome.lead.owner = outcome.moves[0].owner = rep.id
            return Applied(self.store.put(outcome.lead, lead.version), outcome.moves, False)

        return self.optimistically(attempt)

    def set_stage(self, event: CanonicalEvent, stage: str, *, actor: str, reason: str, source: str) -> Applied:
        """A stage set in a system of record (the CRM) for the lead `event` names (by
        email, or by the visitor id the CRM's contact is known under)."""
        now = self.clock()
        applied = finalise(event, now=now, source=source)
        turns: dict[str, int] = {}

        erasures: dict[str, datetime | None] = {}

        def attempt(_conflict: VersionConflict | None) -> Applied:
            resolved = self._resolve(applied, now, erasures)
            outcome = apply_stage(resolved.lead, stage, actor=actor, reason=reason, key=applied.event_id,
                                  rules=self.rules, now=now)
            if not outcome.moves:
                return Applied(resolved.lead, [], True)
            self._assign(outcome.lead, outcome.moves, turns)
            return Applied(self.store.put(outcome.lead, resolved.expected), outcome.moves, False)

        return self.optimistically(attempt)

    def erase(self, lead_id: str) -> int:
        """Erase the lead (and its aliases), leaving a tombstone: see LeadStore.erase. A
        write landing between the read and the erasure makes it read again and erase that."""
        for _ in range(MAX_ATTEMPTS):
            lead = self.get(lead_id)
            try:
                return self.store.erase(lead, [self.ids.for_anonymous(anon) for anon in lead.anonymous_ids],
                                        now=self.clock())
            except VersionConflict:
                continue
        raise TooManyConflicts(f"lead is being updated too often to erase; gave up after {MAX_ATTEMPTS} attempts")

    # -- scheduled ---------------------------------------------------------------------

    def event_log(self, lead: Lead) -> list[AppliedEvent]:
        """The lead's events, including those it had as an anonymous visitor."""
        events = self.store.events(lead.lead_id)
        for anon in lead.anonymous_ids:
            events.extend(self.store.events(self.ids.for_anonymous(anon)))
        return events

    def rescore_all(self) -> dict[str, int]:
        """Refresh every lead in one pass (one scan, one thread): see `refresh_lead`. The
        scheduled job and a publish go through `Rescoring`, in parallel segments."""
        seen = changed = moved = 0
        for lead in self.store.scan_leads():
            seen += 1
            result = self.refresh_lead(lead, self.rules)
            changed += result.written
            moved += len(result.moves)
        return {"leads": seen, "updated": changed, "moves": moved}

    def refresh_lead(self, lead: Lead, rules: Rules, *, announce: bool = True) -> "Refreshed":
        """Bring one lead (as a scan read it) to `rules` as of now: decayed scores, and any
        forward move the rules call for. Written only when its score, grade, stage,
        disqualification or signals changed, conditionally on the version read; a
        concurrent write is never overwritten: the lead is read again and decided again.
        Moves made with `announce=False` are recorded, go to the CRM, and alert no one."""
        read_events = {"n": 0}

        def attempt(conflict: VersionConflict | None) -> Applied:
            current = lead if conflict is None else conflict.current
            if current is None or current.merged_into:
                return Applied(lead, [], True)  # erased or merged meanwhile: nothing to do
            events = None
            if needs_events(current, rules):
                events = self.event_log(current)
                read_events["n"] += 1
            outcome = refresh(current, rules, self.clock(), events)
            new = outcome.lead
            self._assign(new, outcome.moves, {})
            if not outcome.moves and _same_figures(new, current) and not self.store.needs_index(current.lead_id):
                return Applied(current, [], True)
            if not announce:
                for move in outcome.moves:
                    move.announced = False
            return Applied(self.store.put(new, current.version), outcome.moves, False)

        applied = self.optimistically(attempt)
        return Refreshed(applied.lead, applied.moves, not applied.duplicate, read_events["n"])

    def funnel(self, since: datetime | None = None, until: datetime | None = None) -> dict[str, Any]:
        """Leads by current stage (optionally: that entered it within [since, until)), and
        for each step the share of leads that reached at least the next stage."""
        lo = since.isoformat() if since else None
        hi = until.isoformat() if until else None
        counts = {stage: self.store.count_stage(stage, lo, hi) for stage in STAGES}
        rates = {}
        for a, b in zip(STAGES, STAGES[1:]):
            reached_a = sum(counts[s] for s in STAGES[STAGES.index(a):])
            reached_b = sum(counts[s] for s in STAGES[STAGES.index(b):])
            rates[f"{a}_to_{b}"] = round(reached_b / reached_a, 4) if reached_a else None
        touches = sorted(self.store.first_touch_seconds())
        first_touch = {
            "leads": len(touches),
            "median_seconds": _percentile(touches, 0.5),
            "p90_seconds": _percentile(touches, 0.9),
        }
        return {"since": lo, "until": hi, "stages": counts, "conversion": rates, "total": sum(counts.values()),
                "time_to_first_touch": first_touch}


def _percentile(ordered: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an ascending list (None when empty)."""
    if not ordered:
        return None
    rank = max(1, -(-len(ordered) * q // 1))  # ceil(n·q), at least 1
    return round(ordered[int(rank) - 1], 3)


def _same_figures(new: Lead, old: Lead) -> bool:
    """Whether a refresh leaves nothing worth a write: the same stage, grade, signals and
    disqualification, and scores within the same whole point. Decay moves scores a little
    every hour; the stored figures follow in whole points (the API always shows them
    decayed to now), so an hourly pass writes a lead about once per point it loses,
    not every hour."""
    return ((round(new.score), round(new.engagement_score), round(new.fit_score), new.fit_grade, new.stage,
             new.disqualified, new.signals_key)
            == (round(old.score), round(old.engagement_score), round(old.fit_score), old.fit_grade, old.stage,
                old.disqualified, old.signals_key))


@dataclass
class Refreshed:
    lead: Lead
    moves: list[Move]
    written: bool
    logs_read: int  # event logs read (only when the rules derive signals differently)


@dataclass
class Resolved:
    lead: Lead
    expected: int | None  # the stored version the write must find; None: must not exist yet
