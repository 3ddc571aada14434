"""The handoff use case: every stage move to every sink that wants it, once.

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
from leadflow.domain.lead import Lead
from leadflow.domain.ports import Claim, DeliveryLedger, Outbox
from leadflow.domain.routing import owner_by_id
from leadflow.domain.rules import Rules
from leadflow.observability import add, logger
from leadflow.domain.errors import PermanentError, RetryableError
from leadflow.domain.ports import Sink

RETRY_TYPE = "leadflow.delivery"
DEAD_TYPE = "leadflow.dead_letter"


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


def notices(lead: Lead, move_ids: Iterable[str], rules: Rules) -> list[Notice]:
    """The moves a write made, as the sinks see them (the lead as of that write)."""
    by_id = {m.move_id: m for m in lead.history}
    out = []
    for move_id in move_ids:
        move = by_id.get(move_id)
        if move is None:
            logger.warning("handoff.move_missing", extra={"lead_id": lead.lead_id, "move_id": move_id})
            continue
        owner_id = move.owner or lead.owner
        out.append(notice_for(lead, move, owner_by_id(owner_id, rules) if owner_id else None))
    return out


class Handoff:
    def __init__(self, sinks: Sequence[Sink], ledger: DeliveryLedger, outbox: Outbox, rules: Rules, *,
                 clock: Callable[[], datetime] = utcnow, policy: RetryPolicy = RetryPolicy()):
        self.sinks = {s.name: s for s in sinks}
        self.ledger = ledger
        self.outbox = outbox
        self.rules = rules
        self.clock = clock
        self.policy = policy
        self.alert_stages = frozenset(rules.handoff.alert_stages)
        self._resting: dict[str, tuple[datetime, str]] = {}  # sink -> (until, why): the breaker

    # -- fan-out -----------------------------------------------------------------------

    def notices(self, lead: Lead, move_ids: Iterable[str]) -> list[Notice]:
        return notices(lead, move_ids, self.rules)

    def fan_out(self, lead: Lead, move_ids: Iterable[str]) -> dict[str, str]:
        """Send each move to each sink that takes it. Returns "<move>/<sink>": outcome."""
        results: dict[str, str] = {}
        for notice in self.notices(lead, move_ids):
            for sink in self.sinks.values():
                if wants(sink.kind, notice, self.alert_stages):
                    results[f"{notice.move_id}/{sink.name}"] = self.attempt(sink, notice)
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
        claim = self.ledger.claim(notice.lead_id, notice.move_id, sink.name, now=now,
                                  lease_seconds=self.policy.lease_seconds)
        if claim.state == Claim.DONE:
            add("DeliveryDuplicate")
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
            logger.exception("handoff.sink_crashed", extra={"sink": sink.name, "move_id": notice.move_id})
            return self._later(sink, notice, claim.attempts, f"internal error: {type(exc).__name__}", None)
        self._resting.pop(sink.name, None)
        self.ledger.settle(notice.lead_id, notice.move_id, sink.name, status="sent", now=self.clock(),
                           detail={"attempts": claim.attempts, **(receipt or {})})
        add("AlertDelivered" if sink.kind == "alert" else "CrmDelivered")
        logger.info("handoff.delivered", extra={"sink": sink.name, "lead_id": notice.lead_id,
                                                "move_id": notice.move_id, "to_stage": notice.to_stage,
                                                "attempts": claim.attempts})
        return "sent"

    def _later(self, sink: Sink, notice: Notice, attempts: int, reason: str, retry_after: float | None) -> str:
        if attempts >= self.policy.max_attempts:
            return self._dead(sink, notice, attempts, reason, "retries_exhausted")
        delay = self.policy.delay(attempts, retry_after)
        # Settle before scheduling: if scheduling fails, the record is redelivered and
        # the delivery is claimable again (a "sending" claim would wait for its lease).
        self.ledger.settle(notice.lead_id, notice.move_id, sink.name, status="failed", now=self.clock(),
                           detail={"attempts": attempts, "error": reason, "retry_in_s": delay})
        self.outbox.retry_later(retry_message(notice, sink.name, attempts + 1, reason), delay)
        add("DeliveryRetried")
        logger.warning("handoff.retry_scheduled", extra={"sink": sink.name, "lead_id": notice.lead_id,
                                                         "move_id": notice.move_id, "attempts": attempts,
                                                         "error": reason, "retry_in_s": delay})
        return "retry"

    def _dead(self, sink: Sink, notice: Notice, attempts: int, reason: str, why: str) -> str:
        now = self.clock()
        self.outbox.dead_letter(dead_letter_message(notice, sink.name, attempts, reason, why, now))
        self.ledger.settle(notice.lead_id, notice.move_id, sink.name, status="dead", now=now,
                           detail={"attempts": attempts, "error": reason, "why": why})
        add("DeliveryDeadLettered")
        logger.error("handoff.dead_lettered", extra={"sink": sink.name, "lead_id": notice.lead_id,
                                                     "move_id": notice.move_id, "attempts": attempts,
                                                     "error": reason, "why": why})
        return "dead"


