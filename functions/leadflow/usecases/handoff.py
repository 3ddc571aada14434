"""The handoff use case: every stage move to every sink that wants it, once.

Exactly once, in effect, per (move, sink):
- a conditional claim in the delivery ledger comes before every send, and a sent or
  dead-lettered delivery is never claimed again, so a redelivered stream batch or
  retry message cannot send twice, and a sink that failed is retried without
  re-sending to the sinks that succeeded. A move's sinks are claimed in one write
  and their outcomes recorded in one more;
- the sinks of a move are sent at the same time, each on a thread of its own, and
  every attempt has a deadline (`RetryPolicy.attempt_seconds`, never more than the
  invocation has left once the outcomes' recording is set aside): a CRM that answers
  slowly, or a byte at a time, holds up neither the Slack alert nor the other CRMs,
  and the move waits for it no longer than its deadline. A sink still busy at its
  deadline (one whose client cannot be interrupted) is left behind and counts as a
  timeout;
- a failure the receiver may recover from is retried later through the outbox (an
  SQS queue with a delay: exponential backoff with jitter, at least the receiver's
  Retry-After), so one slow CRM never holds up the stream or other leads' alerts;
- a failure that cannot succeed (a 4xx, a missing recipient config), or the last
  retry, dead-letters the whole move with the reason.
A delivery another invocation is still sending (or crashed while sending) is put
back on the retry queue until that claim's lease runs out, never dropped. A sink
that just gave no answer at all (timeout, connection refused or reset) is not called
again for a few seconds: the moves meant for it go straight to the retry queue, so
one dead receiver cannot make a batch wait out a deadline per move.
The one window left is a crash between a receiver accepting and the ledger saying
so (at most a deadline, while the move's other sinks finish): the claim's lease then
runs out and the move is sent again (at least once). The generic webhook carries the
move's id as `webhook-id` for receivers to dedupe.

Erasure finishes here too:
- retry messages and dead letters carry ids only (lead, move, sink), never the move's
  content: a retry reads the lead at send time and builds the move from its history.
  A lead that is gone (erased), or no longer holds the move (erased, then back as a new
  lead), makes the message a no-op: acknowledged, logged by id. Messages queued in the
  earlier shape (the whole notice inside) are read for their ids only, the same way;
- a stream record's move is checked against the lead's tombstone after its claim and
  before any send: a move made before an erasure the stream had not caught up with is
  dropped, and its ledger item goes (a claim racing the erasure's sweep cannot leave one);
- an erasure is itself delivered: the lead item's REMOVE record asks each CRM that can
  delete a contact (HubSpot, Salesforce) to delete it, through the same ledger (on the
  tombstone), retries and dead letters, so a redelivered stream batch deletes once. The
  address is used on the first attempt only (the REMOVE record carries it); retries
  delete by the CRM's own record ids that the tombstone keeps.
"""

from __future__ import annotations

import math
import random
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable, Sequence

from leadflow.domain.handoff import Erasure, Notice, is_erasure, notice_for, wants
from leadflow.domain.lead import Lead
from leadflow.domain.ports import Claim, DeliveryLedger, LeadStore, Outbox, Receipt, Sink
from leadflow.domain.routing import owner_by_id
from leadflow.domain.rules import Rules
from leadflow.observability import add, logger
from leadflow.domain.errors import PermanentError, RetryableError

RETRY_TYPE = "leadflow.delivery"
DEAD_TYPE = "leadflow.dead_letter"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class OutOfTime(Exception):
    """Too little of the invocation is left to attempt a delivery and record its outcome.
    Raised before anything is claimed: the record is tried again, nothing is lost."""


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
    attempt_seconds: float = 5.0  # one attempt of one sink, every request of it (LEADFLOW_SINK_TIMEOUT)
    reserve_seconds: float = 2.0  # of an invocation's time, kept for recording what the sinks answered
    grace_seconds: float = 1.0  # how long past its deadline a sink's thread is waited for

    def delay(self, attempt: int, retry_after: float | None = None, rand: Callable[[float, float], float] = random.uniform) -> int:
        backoff = min(self.cap_seconds, self.base_seconds * self.factor ** max(0, attempt - 1))
        wait = rand(backoff / 2, backoff)
        if retry_after:
            wait = max(wait, retry_after)
        return int(min(self.cap_seconds, max(1, math.ceil(wait))))


def retry_message(lead_id: str, move_id: str, sink: str, attempt: int, reason: str) -> dict[str, Any]:
    """A delivery to try again: ids only. The move is read from the lead when it is sent."""
    return {"type": RETRY_TYPE, "sink": sink, "attempt": attempt, "last_error": reason,
            "lead_id": lead_id, "move_id": move_id}


def dead_letter_message(lead_id: str, move_id: str, sink: str, attempts: int, reason: str, why: str,
                        now: datetime) -> dict[str, Any]:
    return {"type": DEAD_TYPE, "sink": sink, "attempts": attempts, "reason": reason, "why": why,
            "dead_at": now.isoformat(), "lead_id": lead_id, "move_id": move_id}


def message_ids(message: dict[str, Any]) -> tuple[str, str]:
    """(lead id, move id) of a retry or dead-letter message. Messages queued before they
    carried ids only hold the whole notice: only its ids are read."""
    notice = message.get("notice") if isinstance(message.get("notice"), dict) else {}
    lead_id = message.get("lead_id") or notice.get("lead_id")
    move_id = message.get("move_id") or notice.get("move_id") or notice.get("transition_id")
    if not lead_id or not move_id:
        raise ValueError("a delivery message without a lead id and a move id")
    return str(lead_id), str(move_id)


@dataclass(frozen=True)
class _Job:
    """One delivery to its sinks: a stage move, or an erasure (the CRM deletes)."""

    lead_id: str
    move_id: str
    send: Callable[[Any, float], Receipt]  # one sink's attempt, over by the deadline
    wanted: Callable[[], bool]  # asked after the claim, before any send: False once the lead is erased
    log: dict[str, Any]
    erasure: bool = False


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
                 leads: LeadStore, clock: Callable[[], datetime] = utcnow, policy: RetryPolicy = RetryPolicy()):
        self.sinks = {s.name: s for s in sinks}
        self.leads = leads  # read at send time: a retry's move, an erasure's tombstone
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

    def fan_out(self, lead: Lead, move_ids: Iterable[str], *,
                time_left: Callable[[], float] | None = None) -> dict[str, str]:
        """Send each move to each sink that takes it. Returns "<move>/<sink>": outcome.

        Moves go one after another (a CRM sees a lead's moves in order); the sinks of a
        move at the same time. `time_left`: seconds the invocation has left (Lambda's
        context); with too few, OutOfTime is raised before the first claim."""
        results: dict[str, str] = {}
        for notice in self.notices(lead, move_ids):
            wanted = [s for s in self.sinks.values() if wants(s.kind, notice, self.alert_stages)]
            if wanted:
                outcome = self._deliver(self._move_job(notice), wanted, attempt=None, time_left=time_left)
                results.update({f"{notice.move_id}/{name}": v for name, v in outcome.items()})
        return results

    def _move_job(self, notice: Notice) -> _Job:
        def still_there() -> bool:  # the stream may run behind an erasure
            erased_at = self.leads.erased_at(notice.lead_id)
            return erased_at is None or notice.occurred_at > erased_at

        return _Job(notice.lead_id, notice.move_id, lambda sink, deadline: sink.deliver(notice, deadline=deadline),
                    still_there, {"to_stage": notice.to_stage})

    def erase(self, lead_id: str, erasure: str, *, email: str | None = None,
              time_left: Callable[[], float] | None = None) -> dict[str, str]:
        """An erased lead's REMOVE record: ask each CRM that can delete the contact to do
        so, once. `erasure`: the erasure's id (domain.handoff.erasure_id of the removed
        image); `email`: from the removed image, used by this first attempt only."""
        erasers = [s for s in self.sinks.values() if callable(getattr(s, "erase", None))]
        if not erasers:
            return {}
        job = self._erasure_job(lead_id, erasure, email)
        if job is None:
            return {s.name: "superseded" for s in erasers}
        return self._deliver(job, erasers, attempt=None, time_left=time_left)

    def _erasure_job(self, lead_id: str, erasure: str, email: str | None) -> _Job | None:
        tombstone = self.leads.tombstone(lead_id)
        if tombstone is None or tombstone.erasure != erasure:
            # No tombstone, or one of a later erasure (this record was redelivered late):
            # that erasure's own record deletes what is there now.
            logger.info("handoff.erasure_superseded", extra={"lead_id": lead_id})
            return None
        request = Erasure(lead_id=lead_id, erasure=erasure, email=email, ids=tombstone.ids)
        return _Job(lead_id, erasure, lambda sink, deadline: sink.erase(request, deadline=deadline),
                    lambda: True, {"erasure": True}, erasure=True)

    def on_retry(self, message: dict[str, Any], *, time_left: Callable[[], float] | None = None) -> str:
        """One retry (or replayed dead letter) message: that sink only, the move read
        from the lead now. A lead erased since is not sent to: "erased"."""
        if message.get("type") not in (RETRY_TYPE, DEAD_TYPE):
            raise ValueError(f"not a delivery message: type {message.get('type')!r}")
        lead_id, move_id = message_ids(message)
        name = message.get("sink")
        sink = self.sinks.get(name)
        attempt = int(message.get("attempt") or 1)
        if sink is None or (is_erasure(move_id) and not callable(getattr(sink, "erase", None))):
            now = self.clock()
            self.outbox.dead_letter(dead_letter_message(lead_id, move_id, str(name), int(message.get("attempt", 0)),
                                                        f"sink {name!r} is not configured here", "sink_not_configured", now))
            return "dead"
        if is_erasure(move_id):
            job = self._erasure_job(lead_id, move_id, None)
            if job is None:
                return "superseded"
        else:
            job = self._retry_job(lead_id, move_id)
        try:
            return self._deliver(job, [sink], attempt=attempt, time_left=time_left)[sink.name]
        except OutOfTime as exc:  # back on the queue as it was: failing the message would cost a receive
            self.outbox.retry_later(retry_message(lead_id, move_id, sink.name, attempt, str(exc)), 1)
            return "deferred"

    def _retry_job(self, lead_id: str, move_id: str) -> _Job:
        """The move as the lead now holds it, read after the claim. The lead gone, or
        without this move (erased, then back as a new lead): nothing is sent."""
        held: dict[str, Notice] = {}

        def read() -> bool:
            lead = self.leads.get(lead_id)
            found = [n for n in self.notices(lead, [move_id])] if lead is not None else []
            if found:
                held["notice"] = found[0]
            return bool(found)

        return _Job(lead_id, move_id, lambda sink, deadline: sink.deliver(held["notice"], deadline=deadline),
                    read, {})

    # -- one move, its sinks together ----------------------------------------------------

    def _deliver(self, job: _Job, sinks: Sequence[Sink], *, attempt: int | None,
                 time_left: Callable[[], float] | None) -> dict[str, str]:
        """Claim the sinks of one move in one write, send to them at once, record what
        they answered in one write. `attempt`: a retry message's attempt (None: the stream)."""
        seconds = self._attempt_seconds(time_left)
        now = self.clock()
        results: dict[str, str] = {}
        free = []
        for sink in sinks:
            resting = self._resting.get(sink.name)
            if resting is not None and resting[0] > now:
                # The sink just failed: do not wait out another deadline, queue this move for it.
                self.outbox.retry_later(retry_message(job.lead_id, job.move_id, sink.name, attempt or 1, resting[1]),
                                        self.policy.delay(attempt or 1, (resting[0] - now).total_seconds()))
                results[sink.name] = "deferred"
            else:
                free.append(sink)
        if not free:
            return results
        claims = self.ledger.claim_all(job.lead_id, job.move_id, [s.name for s in free], now=now,
                                       lease_seconds=self.policy.lease_seconds, first=attempt is None)
        granted: list[tuple[Sink, Claim]] = []
        for sink in free:
            claim = claims[sink.name]
            if claim.state == Claim.DONE:
                add("DeliveryDuplicate")
                results[sink.name] = f"already_{claim.status}"
            elif claim.state == Claim.BUSY:
                # Being sent by another invocation, or its sender crashed: look again after the lease.
                self.outbox.retry_later(retry_message(job.lead_id, job.move_id, sink.name, attempt or 1,
                                                      "being delivered by another invocation"),
                                        int(self.policy.lease_seconds) + 1)
                results[sink.name] = "deferred"
            else:
                granted.append((sink, claim))
        if granted and not job.wanted():
            # Erased since the move: nothing goes out, and the item this claim wrote goes
            # (it may have been written after the erasure's sweep).
            self.ledger.forget(job.lead_id, job.move_id)
            add("DeliveryErased")
            logger.info("handoff.lead_erased", extra={"lead_id": job.lead_id, "move_id": job.move_id,
                                                      "sinks": sorted(s.name for s, _ in granted)})
            results.update({sink.name: "erased" for sink, _ in granted})
        elif granted:
            answers = self._send_all(job, [sink for sink, _ in granted], seconds)
            results.update(self._record(job, granted, answers))
        return results

    def _attempt_seconds(self, time_left: Callable[[], float] | None) -> float:
        seconds = self.policy.attempt_seconds
        if time_left is None:
            return seconds
        left = time_left() - self.policy.reserve_seconds - self.policy.grace_seconds
        if left < min(seconds, 1.0):
            raise OutOfTime(f"{max(0.0, time_left()):.1f}s left in the invocation: too little to deliver")
        return min(seconds, left)

    def _send_all(self, job: _Job, sinks: Sequence[Sink], seconds: float) -> dict[str, Any]:
        """Each sink's receipt, or the exception it raised, sending at the same time. A
        sink not done by its deadline (and a grace) gets a RetryableError without status,
        like any timeout; its thread is left to end on its own, and what it does then is
        not recorded."""
        deadline = time.monotonic() + seconds
        answers: dict[str, Any] = {}
        done = threading.Condition()

        def deliver(sink: Sink) -> None:
            try:
                answer: Any = job.send(sink, deadline)
            except Exception as exc:  # classified by the caller, on its own thread
                answer = exc
            with done:
                answers[sink.name] = answer
                done.notify_all()

        for sink in sinks:
            threading.Thread(target=deliver, args=(sink,), name=f"handoff-{sink.name}", daemon=True).start()
        give_up = deadline + self.policy.grace_seconds
        with done:
            while len(answers) < len(sinks) and (left := give_up - time.monotonic()) > 0:
                done.wait(left)
            settled = dict(answers)
        for sink in sinks:
            if sink.name not in settled:
                settled[sink.name] = RetryableError(f"{sink.name}: no answer within {seconds:g}s")
        return settled

    def _record(self, job: _Job, granted: Sequence[tuple[Sink, Claim]], answers: dict[str, Any]) -> dict[str, str]:
        """Classify what each sink answered, then: dead letters out, every outcome in the
        ledger in one write, retries queued. Dead letters go first (a crash after them
        leaves the delivery claimable again, not lost); retries last (a crash before
        them leaves it recorded as failed, so a redelivered record claims it again)."""
        now = self.clock()
        results: dict[str, str] = {}
        outcomes: dict[str, tuple[str, dict | None]] = {}
        retries: list[tuple[Sink, int, str, int]] = []
        logs: list[tuple[str, dict]] = []
        for sink, claim in granted:
            answer = answers[sink.name]
            attempts = claim.attempts
            if not isinstance(answer, BaseException):
                self._resting.pop(sink.name, None)
                outcomes[sink.name] = ("sent", dict(answer or {}))
                results[sink.name] = "sent"
                add("CrmErased" if job.erasure else "AlertDelivered" if sink.kind == "alert" else "CrmDelivered")
                logs.append(("handoff.delivered", {"sink": sink.name, "attempts": attempts}))
                continue
            if isinstance(answer, PermanentError):
                reason, why, retry_after = answer.reason, "permanent_error", None
            elif isinstance(answer, RetryableError):
                reason, why, retry_after = answer.reason, None, answer.retry_after
                if answer.status is None:  # no answer at all (timeout, refused, reset): rest the sink
                    self._resting[sink.name] = (now + timedelta(seconds=self.policy.breaker_seconds), answer.reason)
            else:  # a bug or an unexpected library error: retry, keep the reason
                logger.error("handoff.sink_crashed", exc_info=answer,
                             extra={"sink": sink.name, "move_id": job.move_id})
                reason, why, retry_after = f"internal error: {type(answer).__name__}", None, None
            if why is None and attempts >= self.policy.max_attempts:
                why = "retries_exhausted"
            if why is not None:
                self.outbox.dead_letter(dead_letter_message(job.lead_id, job.move_id, sink.name, attempts, reason,
                                                            why, now))
                outcomes[sink.name] = ("dead", {"error": reason, "why": why})
                results[sink.name] = "dead"
                add("DeliveryDeadLettered")
                logger.error("handoff.dead_lettered", extra={"sink": sink.name, "lead_id": job.lead_id,
                                                             "move_id": job.move_id, "attempts": attempts,
                                                             "error": reason, "why": why})
                continue
            delay = self.policy.delay(attempts, retry_after)
            outcomes[sink.name] = ("failed", {"error": reason, "retry_in_s": delay})
            retries.append((sink, attempts, reason, delay))
            results[sink.name] = "retry"
        self.ledger.settle_all(job.lead_id, job.move_id, outcomes, now=self.clock())
        for sink, attempts, reason, delay in retries:
            self.outbox.retry_later(retry_message(job.lead_id, job.move_id, sink.name, attempts + 1, reason), delay)
            add("DeliveryRetried")
            logger.warning("handoff.retry_scheduled", extra={"sink": sink.name, "lead_id": job.lead_id,
                                                             "move_id": job.move_id, "attempts": attempts,
                                                             "error": reason, "retry_in_s": delay})
        for event, extra in logs:
            logger.info(event, extra={**extra, **job.log, "lead_id": job.lead_id, "move_id": job.move_id})
        return results
