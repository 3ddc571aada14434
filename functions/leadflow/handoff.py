"""The handoff use cases: every stage move to every sink that wants it, once; and the
SLA watchdog that escalates an SQL nobody accepted.

Exactly once, in effect, per (move, sink):
- a conditional claim in the delivery ledger comes before every send, and a sent or
  dead-lettered delivery is never claimed again, so a redelivered stream batch or
  retry message cannot send twice, and a sink that failed is retried without
  re-sending to the sinks that succeeded;
- a failure the receiver may recover from is retried later through the outbox (an
  SQS queue with a delay: exponential backoff with jitter, at least the receiver's
  Retry-After), so one slow CRM never holds up the stream or other leads' alerts;
- a failure that cannot succeed (a 4xx, a missing recipient config), or the last
  retry, dead-letters the whole move with the reason.
A delivery another invocation is still sending (or crashed while sending) is put
back on the retry queue until that claim's lease runs out, never dropped. A sink
that just gave no answer at all (timeout, connection refused or reset) is not called
again for a few seconds: the moves meant for it go straight to the retry queue, so
one dead receiver cannot make a batch wait out a timeout per move.
The one window left is a crash between a receiver accepting and the ledger saying
so: the claim's lease then runs out and the move is sent again (at least once).
The generic webhook carries the move's id as `webhook-id` for receivers to dedupe.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable, Sequence

from leadflow.domain.handoff import Notice, notice_for, wants
from leadflow.domain.lead import Lead, last_move_into
from leadflow.domain.ports import Claim, DeliveryLedger, LeadStore, Outbox
from leadflow.domain.routing import manager_of, owner_by_id
from leadflow.domain.rules import Rules
from leadflow.domain.sla import due_escalations
from leadflow.observability import logger, metrics
from leadflow.sinks.base import PermanentError, RetryableError, Sink

RETRY_TYPE = "leadflow.delivery"
DEAD_TYPE = "leadflow.dead_letter"
ESCALATION = "sla-escalation-"  # ledger "sink" name of SLA escalation level n: sla-escalation-<n>


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter: attempt n waits between half and all of
    base·factorⁿ⁻¹ seconds, at least the receiver's Retry-After, at most `cap_seconds`
    (SQS's longest delay). After `max_attempts` the move is dead-lettered. The defaults
    keep retrying for about an hour."""

    max_attempts: int = 10
    base_seconds: float = 1.0
    factor: float = 4.0
    cap_seconds: float = 900.0
    lease_seconds: float = 120.0
    breaker_seconds: float = 10.0  # a sink that did not answer at all rests this long

    def delay(self, attempt: int, retry_after: float | None = None, rand: Callable[[float, float], float] = random.uniform) -> int:
        backoff = min(self.cap_seconds, self.base_seconds * self.factor ** max(0, attempt - 1))
        wait = rand(backoff / 2, backoff)
        if retry_after:
            wait = max(wait, retry_after)
        return int(min(self.cap_seconds, max(1, math.ceil(wait))))


def retry_message(notice: Notice, sink: str, attempt: int, reason: str) -> dict[str, Any]:
    return {"type": RETRY_TYPE, "sink": sink, "attempt": attempt, "last_error": reason,
            "notice": notice.model_dump(mode="json")}


def dead_letter_message(notice: Notice, sink: str, attempts: int, reason: str, why: str, now: datetime) -> dict[str, Any]:
    return {"type": DEAD_TYPE, "sink": sink, "attempts": attempts, "reason": reason, "why": why,
            "dead_at": now.isoformat(), "notice": notice.model_dump(mode="json")}


class Handoff:
    def __init__(self, sinks: Sequence[Sink], ledger: DeliveryLedger, outbox: Outbox, rules: Rules, *,
                 store: LeadStore | None = None, clock: Callable[[], datetime] = utcnow,
                 policy: RetryPolicy = RetryPolicy(), escalate: Callable[[str, Notice, int, str | None, int], None] | None = None):
        self.sinks = {s.name: s for s in sinks}
        self.ledger = ledger
        self.outbox = outbox
        self.rules = rules
        self.store = store
        self.clock = clock
        self.policy = policy
        self.escalate = escalate
        self.alert_stages = frozenset(rules.handoff.alert_stages)
        self._resting: dict[str, tuple[datetime, str]] = {}  # sink -> (until, why): the breaker

    # -- fan-out -----------------------------------------------------------------------

    def notices(self, lead: Lead, transition_ids: Iterable[str]) -> list[Notice]:
        """The moves a write made, as the sinks see them (the lead as of that write)."""
        by_id = {m.transition_id: m for m in lead.history}
        out = []
        for tid in transition_ids:
            move = by_id.get(tid)
            if move is None:
                logger.warning("handoff.move_missing", extra={"lead_id": lead.lead_id, "transition_id": tid})
                continue
            owner = owner_by_id(move.owner or lead.owner, self.rules) if (move.owner or lead.owner) else None
            out.append(notice_for(lead, move, owner))
        return out

    def fan_out(self, lead: Lead, transition_ids: Iterable[str]) -> dict[str, str]:
        """Send each move to each sink that takes it. Returns "<transition>/<sink>": outcome."""
        results: dict[str, str] = {}
        for notice in self.notices(lead, transition_ids):
            for sink in self.sinks.values():
                if wants(sink.kind, notice, self.alert_stages):
                    results[f"{notice.transition_id}/{sink.name}"] = self.attempt(sink, notice)
        return results

    def on_retry(self, message: dict[str, Any]) -> str:
        """One retry (or replayed dead letter) message: that sink only."""
        if message.get("type") not in (RETRY_TYPE, DEAD_TYPE):
            raise ValueError(f"not a delivery message: type {message.get('type')!r}")
        notice = Notice.model_validate(message["notice"])
        name = message.get("sink")
        sink = self.sinks.get(name)
        if sink is None:
            now = self.clock()
            self.outbox.dead_letter(dead_letter_message(notice, str(name), int(message.get("attempt", 0)),
                                                        f"sink {name!r} is not configured here", "sink_not_configured", now))
            return "dead"
        return self.attempt(sink, notice, attempt=int(message.get("attempt") or 1))

    def attempt(self, sink: Sink, notice: Notice, *, attempt: int = 1) -> str:
        now = self.clock()
        resting = self._resting.get(sink.name)
        if resting is not None and resting[0] > now:
            # The sink just failed: do not wait out another timeout, queue this move for it.
            self.outbox.retry_later(retry_message(notice, sink.name, attempt, resting[1]),
                                    self.policy.delay(attempt, (resting[0] - now).total_seconds()))
            return "deferred"
        claim = self.ledger.claim(notice.lead_id, notice.transition_id, sink.name, now=now,
                                  lease_seconds=self.policy.lease_seconds)
        if claim.state == Claim.DONE:
            metrics_add("DeliveryDuplicate")
            return f"already_{claim.status}"
        if claim.state == Claim.BUSY:
            # Being sent by another invocation, or its sender crashed: look again after the lease.
            self.outbox.retry_later(retry_message(notice, sink.name, attempt, "being delivered by another invocation"),
                                    int(self.policy.lease_seconds) + 1)
            return "deferred"
        try:
            receipt = sink.deliver(notice)
        except PermanentError as exc:
            return self._dead(sink, notice, claim.attempts, exc.reason, "permanent_error")
        except RetryableError as exc:
            if exc.status is None:  # no answer at all (timeout, refused, reset): rest the sink
                self._resting[sink.name] = (self.clock() + timedelta(seconds=self.policy.breaker_seconds), exc.reason)
            return self._later(sink, notice, claim.attempts, exc.reason, exc.retry_after)
        except Exception as exc:  # a bug or an unexpected library error: retry, keep the reason
            logger.exception("handoff.sink_crashed", extra={"sink": sink.name, "transition_id": notice.transition_id})
            return self._later(sink, notice, claim.attempts, f"internal error: {type(exc).__name__}", None)
        self._resting.pop(sink.name, None)
        self.ledger.settle(notice.lead_id, notice.transition_id, sink.name, status="sent", now=self.clock(),
                           detail={"attempts": claim.attempts, **(receipt or {})})
        metrics_add("AlertDelivered" if sink.kind == "alert" else "CrmDelivered")
        logger.info("handoff.delivered", extra={"sink": sink.name, "lead_id": notice.lead_id,
                                                "transition_id": notice.transition_id, "to_stage": notice.to_stage,
                                                "attempts": claim.attempts})
        return "sent"

    def _later(self, sink: Sink, notice: Notice, attempts: int, reason: str, retry_after: float | None) -> str:
        if attempts >= self.policy.max_attempts:
            return self._dead(sink, notice, attempts, reason, "retries_exhausted")
        delay = self.policy.delay(attempts, retry_after)
        # Settle before scheduling: if scheduling fails, the record is redelivered and
        # the delivery is claimable again (a "sending" claim would wait for its lease).
        self.ledger.settle(notice.lead_id, notice.transition_id, sink.name, status="failed", now=self.clock(),
                           detail={"attempts": attempts, "error": reason, "retry_in_s": delay})
        self.outbox.retry_later(retry_message(notice, sink.name, attempts + 1, reason), delay)
        metrics_add("DeliveryRetried")
        logger.warning("handoff.retry_scheduled", extra={"sink": sink.name, "lead_id": notice.lead_id,
                                                         "transition_id": notice.transition_id, "attempts": attempts,
                                                         "error": reason, "retry_in_s": delay})
        return "retry"

    def _dead(self, sink: Sink, notice: Notice, attempts: int, reason: str, why: str) -> str:
        now = self.clock()
        self.outbox.dead_letter(dead_letter_message(notice, sink.name, attempts, reason, why, now))
        self.ledger.settle(notice.lead_id, notice.transition_id, sink.name, status="dead", now=now,
                           detail={"attempts": attempts, "error": reason, "why": why})
        metrics_add("DeliveryDeadLettered")
        logger.error("handoff.dead_lettered", extra={"sink": sink.name, "lead_id": notice.lead_id,
                                                     "transition_id": notice.transition_id, "attempts": attempts,
                                                     "error": reason, "why": why})
        return "dead"

    # -- SLA watchdog ------------------------------------------------------------------

    def sla_sweep(self) -> dict[str, int]:
        """Escalate SQLs nobody touched within the SLA: each escalation level once per
        SQL move (claimed in the ledger like any delivery), first to the owner, then to
        the fallback channel and the team's manager."""
        if self.store is None or self.escalate is None:
            return {"checked": 0, "escalated": 0, "failed": 0}
        now = self.clock()
        checked = escalated = failed = 0
        # Business hours never pass faster than wall-clock hours: an SQL that entered less
        # than the first escalation's hours ago cannot be due, and is not even read.
        steps = self.rules.sla.escalations
        if not steps:
            return {"checked": 0, "escalated": 0, "failed": 0}
        first = min(step.after_business_hours for step in steps)
        cutoff = (now - timedelta(hours=first)).isoformat()
        for lead in self.store.leads_in_stage("sql", entered_before=cutoff):
            if lead.disqualified:
                continue
            entered = last_move_into(lead, "sql")
            if entered is None:
                continue
            checked += 1
            accepted = lead.first_touch_at is not None and lead.first_touch_at >= entered.at
            if accepted:
                continue
            # Cheap test first (no reads): is anything due at all?
            due = due_escalations(entered.at, False, set(), now, self.rules.sla)
            if not due:
                continue
            sent = {int(d["sink"].removeprefix(ESCALATION)) for d in self.ledger.deliveries(lead.lead_id)
                    if d["transition_id"] == entered.transition_id and d["sink"].startswith(ESCALATION)
                    and d["sink"].removeprefix(ESCALATION).isdigit() and d["status"] in ("sent", "dead")}
            for esc in due_escalations(entered.at, False, sent, now, self.rules.sla):
                try:
                    outcome = self._escalate(lead, entered.transition_id, esc, now)
                except Exception:  # one bad lead must not stop the sweep for the others
                    logger.exception("sla.escalation_crashed", extra={"lead_id": lead.lead_id, "level": esc.level})
                    outcome = "failed"
                escalated += outcome == "sent"
                failed += outcome == "failed"
        return {"checked": checked, "escalated": escalated, "failed": failed}

    def _escalate(self, lead: Lead, transition_id: str, esc, now: datetime) -> str:
        sink = f"{ESCALATION}{esc.level}"
        claim = self.ledger.claim(lead.lead_id, transition_id, sink, now=now, lease_seconds=self.policy.lease_seconds)
        if claim.state != Claim.GRANTED:
            return "skipped"
        notice = self.notices(lead, [transition_id])[0]
        mention = None
        if esc.notify == "owner":
            owner = notice.owner
            mention = f"<@{owner.slack_user}>" if owner and owner.slack_user else (owner.name if owner else None)
        else:
            manager = manager_of(notice.owner.team, self.rules) if notice.owner and notice.owner.team else None
            mention = f"<@{manager.slack_user}>" if manager and manager.slack_user else (
                manager.name if manager else "<!here>")
        overdue = max(0, int((now - esc.due_at).total_seconds() // 60))
        waited = max(0, int((now - notice.occurred_at).total_seconds() // 60))
        try:
            self.escalate(esc.notify, notice, esc.level, mention, waited)
        except (RetryableError, PermanentError) as exc:
            self.ledger.settle(lead.lead_id, transition_id, sink, status="failed", now=self.clock(),
                               detail={"error": exc.reason})
            logger.warning("sla.escalation_failed", extra={"lead_id": lead.lead_id, "level": esc.level, "error": exc.reason})
            return "failed"
        self.ledger.settle(lead.lead_id, transition_id, sink, status="sent", now=self.clock(),
                           detail={"level": esc.level, "notify": esc.notify, "overdue_minutes": overdue})
        metrics_add("SlaEscalated")
        logger.info("sla.escalated", extra={"lead_id": lead.lead_id, "level": esc.level, "notify": esc.notify})
        return "sent"


def metrics_add(name: str) -> None:
    from aws_lambda_powertools.metrics import MetricUnit

    metrics.add_metric(name=name, unit=MetricUnit.Count, value=1)
