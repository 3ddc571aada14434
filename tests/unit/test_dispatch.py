"""The handoff dispatcher with in-memory ledger, outbox and sinks: once per (move, sink)."""

from __future__ import annotations

import threading

import pytest

from leadflow.domain.engine import apply_action, apply_event, new_lead
from leadflow.domain.events import CanonicalEvent, finalise
from leadflow.usecases.handoff import DEAD_TYPE, RETRY_TYPE, Handoff, RetryPolicy
from leadflow.domain.errors import PermanentError, RetryableError
from tests.conftest import NOW
from tests.unit.fakes import MemoryLedger, MemoryOutbox, MemoryStore, StepClock

BUYER = {"first_name": "Jane", "last_name": "Doe", "job_title": "VP Marketing", "company": "Acme", "company_size": 200,
         "industry": "software", "country": "US", "budget": "yes", "authority": "decision_maker",
         "need": "replace spreadsheets", "timeline": "this_quarter"}


class FakeSink:
    def __init__(self, name: str, kind: str, script=(), *, hold: threading.Event | None = None):
        self.name, self.kind = name, kind
        self.script = list(script)  # exceptions to raise, in order, before succeeding
        self.hold = hold  # when given, each delivery waits until it is set (a receiver taking its time)
        self.delivered = []
        self.deadlines = []
        self.arrived = threading.Event()

    def deliver(self, notice, *, deadline=None):
        self.deadlines.append(deadline)
        if self.hold is not None:
            self.hold.wait(30)
        if self.script:
            raise self.script.pop(0)
        self.delivered.append(notice)
        self.arrived.set()
        return {"id": f"{self.name}-{len(self.delivered)}"}


def sql_lead(rules):
    event = finalise(CanonicalEvent(type="form_submitted", email="jane@acme.com", event_id="e1",
                                    properties={"form_kind": "demo_request"}, traits=BUYER), now=NOW, source="test")
    outcome = apply_event(new_lead("ld_1", email="jane@acme.com", now=NOW), event, rules, NOW)
    assert outcome.lead.stage == "sql", outcome.lead.history
    return outcome.lead


def make(rules, sinks, policy=RetryPolicy()):
    ledger, outbox, clock = MemoryLedger(), MemoryOutbox(), StepClock(NOW)
    return Handoff(sinks, ledger, outbox, rules, leads=MemoryStore(), clock=clock, policy=policy), ledger, outbox, clock


def keep(handoff, *leads):
    """Store the leads: a retry reads its move from the lead when it sends."""
    for lead in leads:
        handoff.leads.put(lead, None)


def test_fan_out_sql_move_reaches_alert_and_crm_sinks_once_each(rules):
    slack, crm = FakeSink("slack", "alert"), FakeSink("webhook", "crm")
    handoff, *_ = make(rules, [slack, crm])
    lead = sql_lead(rules)

    results = handoff.fan_out(lead, lead.moves)

    assert sorted(results.values()) == ["sent"] * len(results)
    assert [n.to_stage for n in slack.delivered] == ["sql"]
    assert [n.to_stage for n in crm.delivered] == ["sql"]
    assert slack.delivered[0].traits["company"] == "Acme"


def test_fan_out_redelivered_record_sends_nothing_twice(rules):
    slack, crm = FakeSink("slack", "alert"), FakeSink("webhook", "crm")
    handoff, *_ = make(rules, [slack, crm])
    lead = sql_lead(rules)

    handoff.fan_out(lead, lead.moves)
    again = handoff.fan_out(lead, lead.moves)

    assert set(again.values()) == {"already_sent"}
    assert len(slack.delivered) == len(crm.delivered) == 1


def test_fan_out_backward_move_goes_to_crm_but_alerts_nobody(rules):
    slack, crm = FakeSink("slack", "alert"), FakeSink("webhook", "crm")
    handoff, *_ = make(rules, [slack, crm])
    rejected = apply_action(sql_lead(rules), "reject", reason="no_budget", by="rep", rules=rules, now=NOW).lead

    handoff.fan_out(rejected, rejected.moves)

    assert slack.delivered == []
    assert [(n.from_stage, n.to_stage) for n in crm.delivered] == [("sql", "lead")]


def test_fan_out_disqualified_lead_is_never_announced(rules):
    slack, crm = FakeSink("slack", "alert"), FakeSink("webhook", "crm")
    handoff, *_ = make(rules, [slack, crm])
    lead = sql_lead(rules)
    lead = lead.model_copy(update={"disqualified": True, "disqualified_reason": "student"})

    handoff.fan_out(lead, lead.moves)

    assert slack.delivered == []
    assert len(crm.delivered) == 1


def test_attempt_retryable_failure_schedules_retry_with_retry_after_and_spares_other_sinks(rules):
    slack = FakeSink("slack", "alert")
    crm = FakeSink("webhook", "crm", [RetryableError("HTTP 429", status=429, retry_after=30)])
    handoff, ledger, outbox, clock = make(rules, [slack, crm])
    lead = sql_lead(rules)
    keep(handoff, lead)

    results = handoff.fan_out(lead, lead.moves)

    assert sorted(results.values()) == ["retry", "sent"]
    (message, delay), = outbox.retries
    assert message["type"] == RETRY_TYPE and message["sink"] == "webhook" and message["attempt"] == 2
    assert delay >= 30
    clock.advance(seconds=delay)  # the queue holds the message that long
    assert handoff.on_retry(message) == "sent"
    assert len(slack.delivered) == 1 and len(crm.delivered) == 1


def test_attempt_permanent_failure_dead_letters_whole_move_with_reason_at_once(rules):
    crm = FakeSink("hubspot", "crm", [PermanentError("HTTP 401: invalid token", status=401)])
    handoff, ledger, outbox, _ = make(rules, [crm])
    lead = sql_lead(rules)

    assert set(handoff.fan_out(lead, lead.moves).values()) == {"dead"}

    assert outbox.retries == []
    (letter,) = outbox.dead
    assert letter["type"] == DEAD_TYPE and letter["reason"] == "HTTP 401: invalid token"
    assert letter["lead_id"] == lead.lead_id and letter["move_id"] == lead.moves[0]
    assert "jane" not in repr(letter) and "notice" not in letter  # ids only: nothing of the person
    assert handoff.fan_out(lead, lead.moves) == {f"{lead.moves[0]}/hubspot": "already_dead"}


def test_attempt_still_failing_after_max_attempts_dead_letters(rules):
    failures = [RetryableError("HTTP 503", status=503) for _ in range(3)]
    crm = FakeSink("webhook", "crm", failures)
    handoff, ledger, outbox, clock = make(rules, [crm], RetryPolicy(max_attempts=3))
    lead = sql_lead(rules)
    keep(handoff, lead)

    handoff.fan_out(lead, lead.moves)
    while outbox.retries:
        message, delay = outbox.retries.pop(0)
        clock.advance(seconds=delay)
        handoff.on_retry(message)

    assert crm.delivered == []
    assert [d["why"] for d in outbox.dead] == ["retries_exhausted"]
    assert outbox.dead[0]["attempts"] == 3


def test_attempt_while_another_invocation_sends_is_deferred_past_the_lease_then_delivered(rules):
    crm = FakeSink("webhook", "crm")
    handoff, ledger, outbox, clock = make(rules, [crm], RetryPolicy(lease_seconds=60))
    lead = sql_lead(rules)
    keep(handoff, lead)
    ledger.claim(lead.lead_id, lead.moves[0], "webhook", now=NOW, lease_seconds=60)  # a crashed sender

    assert set(handoff.fan_out(lead, lead.moves).values()) == {"deferred"}
    (message, delay), = outbox.retries
    assert delay > 60 and crm.delivered == []
    clock.advance(seconds=61)

    assert handoff.on_retry(message) == "sent"
    assert len(crm.delivered) == 1


def test_attempt_after_a_sink_timed_out_queues_the_next_moves_without_calling_it(rules):
    crm = FakeSink("webhook", "crm", [RetryableError("webhook: timed out after 5 s")])
    handoff, ledger, outbox, clock = make(rules, [crm], RetryPolicy(breaker_seconds=10))
    first, second = sql_lead(rules), sql_lead(rules).model_copy(update={"lead_id": "ld_2"})
    keep(handoff, first, second)

    handoff.fan_out(first, first.moves)
    outcome = handoff.fan_out(second, second.moves)
    clock.advance(seconds=11)
    replayed = [handoff.on_retry(m) for m, _ in list(outbox.retries)]

    assert set(outcome.values()) == {"deferred"}
    assert len(outbox.retries) == 2 and all(d >= 10 for _, d in outbox.retries[1:])
    assert replayed == ["sent", "sent"] and len(crm.delivered) == 2


def test_attempt_sink_crash_is_retried_not_lost(rules):
    crm = FakeSink("webhook", "crm", [KeyError("bug")])
    handoff, ledger, outbox, _ = make(rules, [crm])
    lead = sql_lead(rules)

    assert set(handoff.fan_out(lead, lead.moves).values()) == {"retry"}
    assert "internal error: KeyError" in outbox.retries[0][0]["last_error"]


def test_on_retry_for_sink_no_longer_configured_dead_letters_it(rules):
    handoff, ledger, outbox, _ = make(rules, [FakeSink("slack", "alert")])
    lead = sql_lead(rules)
    keep(handoff, lead)
    notice = handoff.notices(lead, lead.moves)[0]

    assert handoff.on_retry({"type": RETRY_TYPE, "sink": "salesforce", "attempt": 2,
                             "notice": notice.model_dump(mode="json")}) == "dead"
    assert outbox.dead[0]["why"] == "sink_not_configured"


@pytest.mark.parametrize("attempt", range(1, 12))
def test_retry_delay_grows_with_jitter_within_sqs_limit(attempt):
    policy = RetryPolicy()
    low = policy.delay(attempt, rand=lambda a, b: a)
    high = policy.delay(attempt, rand=lambda a, b: b)

    assert 1 <= low <= high <= 900
    assert high >= min(900, policy.base_seconds * policy.factor ** (attempt - 1)) - 1


def test_fan_out_stage_set_back_into_sql_in_the_crm_alerts_sales_again(rules):
    from leadflow.domain.engine import apply_stage

    slack = FakeSink("slack", "alert")
    handoff, *_ = make(rules, [slack])
    lead = apply_action(sql_lead(rules), "opportunity", reason=None, by="rep", rules=rules, now=NOW).lead
    back = apply_stage(lead, "sql", actor="hubspot", reason="lifecyclestage set to salesqualifiedlead in hubspot",
                       key="hubspot:1:2:3", rules=rules, now=NOW).lead

    handoff.fan_out(lead, lead.moves)  # into opportunity: no alert
    handoff.fan_out(back, back.moves)  # back into sql: a move into sql alerts

    assert [(n.from_stage, n.to_stage) for n in slack.delivered] == [("opportunity", "sql")]


# -- a move's sinks together: one claim and one settle, sent at the same time ----------------

SIX = (("slack", "alert"), ("email", "alert"), ("webhook", "crm"), ("hubspot", "crm"), ("salesforce", "crm"),
       ("eventbridge", "crm"))


def test_fan_out_six_sinks_costs_two_ledger_writes_per_move(rules):
    sinks = [FakeSink(name, kind) for name, kind in SIX]
    handoff, ledger, outbox, _ = make(rules, sinks)
    lead = sql_lead(rules)

    results = handoff.fan_out(lead, lead.moves)

    assert len(lead.moves) == 1 and set(results.values()) == {"sent"} and len(results) == 6
    assert ledger.writes == 2
    assert all(len(s.delivered) == 1 for s in sinks)


def test_fan_out_one_sink_failing_retries_that_sink_alone_with_its_own_writes(rules):
    sinks = [FakeSink(name, kind) for name, kind in SIX]
    sinks[3].script = [RetryableError("hubspot upsert: HTTP 503", status=503)]
    handoff, ledger, outbox, clock = make(rules, sinks)
    lead = sql_lead(rules)
    keep(handoff, lead)

    first = handoff.fan_out(lead, lead.moves)
    assert ledger.writes == 2
    (message, delay), = outbox.retries
    clock.advance(seconds=delay)
    retried = handoff.on_retry(message)
    again = handoff.fan_out(lead, lead.moves)  # the stream batch redelivered afterwards

    assert sorted(first.values()) == ["retry"] + ["sent"] * 5
    assert message["sink"] == "hubspot" and retried == "sent"
    assert ledger.writes == 2 + 2 + 1  # the move, the retried sink's claim and settle, the redelivery's claim
    assert set(again.values()) == {"already_sent"}
    assert [len(s.delivered) for s in sinks] == [1] * 6
    assert {d["sink"]: d["attempts"] for d in ledger.deliveries(lead.lead_id)}["hubspot"] == 2


def test_fan_out_slow_crm_does_not_hold_the_slack_alert(rules):
    released = threading.Event()
    crm = FakeSink("webhook", "crm", hold=released)  # first in line: a slow receiver
    slack = FakeSink("slack", "alert")
    handoff, ledger, outbox, _ = make(rules, [crm, slack], RetryPolicy(attempt_seconds=30))
    lead = sql_lead(rules)
    results = {}
    worker = threading.Thread(target=lambda: results.update(handoff.fan_out(lead, lead.moves)))
    worker.start()
    try:
        assert slack.arrived.wait(20), "the Slack alert waited for the CRM"
        assert crm.delivered == [] and not results  # the CRM still has it; the move is not settled yet
    finally:
        released.set()
        worker.join(30)

    assert sorted(results.values()) == ["sent", "sent"]
    assert crm.deadlines[0] == slack.deadlines[0] is not None  # one deadline for the move's sinks


def test_fan_out_sink_ignoring_its_deadline_is_left_behind_as_a_timeout(rules):
    stuck = threading.Event()
    crm = FakeSink("eventbridge", "crm", hold=stuck)  # a client with no deadline of its own
    slack = FakeSink("slack", "alert")
    handoff, ledger, outbox, _ = make(rules, [crm, slack], RetryPolicy(attempt_seconds=0.2, grace_seconds=0.1))
    lead = sql_lead(rules)
    try:
        results = handoff.fan_out(lead, lead.moves)
    finally:
        stuck.set()

    assert results == {f"{lead.moves[0]}/eventbridge": "retry", f"{lead.moves[0]}/slack": "sent"}
    (message, _), = outbox.retries
    assert message["sink"] == "eventbridge" and "no answer within 0.2s" in message["last_error"]
    statuses = {d["sink"]: d["status"] for d in ledger.deliveries(lead.lead_id)}
    assert statuses == {"eventbridge": "failed", "slack": "sent"}


def test_fan_out_two_invocations_of_one_move_at_once_send_each_sink_once(rules):
    released = threading.Event()
    sinks = [FakeSink(name, kind, hold=released) for name, kind in SIX]
    handoff, ledger, outbox, _ = make(rules, sinks)
    lead = sql_lead(rules)
    results: list[dict] = []
    workers = [threading.Thread(target=lambda: results.append(handoff.fan_out(lead, lead.moves))) for _ in range(2)]
    for w in workers:
        w.start()
    # Both invocations claim (or find claimed) before any sink answers.
    pause = threading.Event()
    for _ in range(400):
        if ledger.writes >= 2:
            break
        pause.wait(0.05)
    released.set()
    for w in workers:
        w.join(30)

    assert [len(s.delivered) for s in sinks] == [1] * 6
    outcomes = [v for r in results for v in r.values()]
    assert outcomes.count("sent") == 6
    assert set(outcomes) <= {"sent", "deferred", "already_sent"}
    assert len(outbox.retries) == outcomes.count("deferred")  # the busy ones are looked at again later


def test_fan_out_after_a_crash_between_claim_and_settle_waits_out_the_lease_then_sends_once(rules):
    sinks = [FakeSink(name, kind) for name, kind in SIX]
    handoff, ledger, outbox, clock = make(rules, sinks, RetryPolicy(lease_seconds=60))
    lead = sql_lead(rules)
    keep(handoff, lead)
    ledger.claim_all(lead.lead_id, lead.moves[0], [name for name, _ in SIX], now=NOW, lease_seconds=60)  # then died

    redelivered = handoff.fan_out(lead, lead.moves)
    assert set(redelivered.values()) == {"deferred"} and all(s.delivered == [] for s in sinks)
    clock.advance(seconds=61)
    retried = [handoff.on_retry(m) for m, delay in list(outbox.retries) if delay > 60]

    assert retried == ["sent"] * 6
    assert [len(s.delivered) for s in sinks] == [1] * 6
    assert set(handoff.fan_out(lead, lead.moves).values()) == {"already_sent"}


def test_fan_out_with_too_little_invocation_time_left_claims_nothing(rules):
    from leadflow.usecases.handoff import OutOfTime

    slack = FakeSink("slack", "alert")
    handoff, ledger, outbox, _ = make(rules, [slack])
    lead = sql_lead(rules)

    with pytest.raises(OutOfTime):
        handoff.fan_out(lead, lead.moves, time_left=lambda: 1.5)

    assert ledger.writes == 0 and slack.delivered == [] and outbox.retries == []
    assert set(handoff.fan_out(lead, lead.moves, time_left=lambda: 60.0).values()) == {"sent"}


def test_fan_out_deadline_is_bounded_by_the_invocation_time_left(rules):
    import time

    slack = FakeSink("slack", "alert")
    handoff, *_ = make(rules, [slack], RetryPolicy(attempt_seconds=30))
    lead = sql_lead(rules)

    before = time.monotonic()
    handoff.fan_out(lead, lead.moves, time_left=lambda: 10.0)

    # 10 s left, less the reserve for recording the outcome and the grace: well under 30 s.
    assert slack.deadlines[0] - before <= 10.0 - RetryPolicy().reserve_seconds


def test_on_retry_with_too_little_invocation_time_left_goes_back_on_the_queue(rules):
    crm = FakeSink("webhook", "crm")
    handoff, ledger, outbox, _ = make(rules, [crm])
    lead = sql_lead(rules)
    keep(handoff, lead)
    notice = handoff.notices(lead, lead.moves)[0]
    message = {"type": RETRY_TYPE, "sink": "webhook", "attempt": 3, "notice": notice.model_dump(mode="json")}

    assert handoff.on_retry(message, time_left=lambda: 0.5) == "deferred"

    (again, delay), = outbox.retries
    assert again["attempt"] == 3 and delay >= 1 and ledger.writes == 0 and crm.delivered == []
