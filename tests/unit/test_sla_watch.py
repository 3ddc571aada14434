"""The SLA watchdog with an in-memory store and ledger: each level once, who is told,
and what is never read."""

from __future__ import annotations

from datetime import timedelta

from leadflow.domain.engine import apply_action
from leadflow.domain.errors import RetryableError
from leadflow.usecases.sla_watch import SlaWatch
from tests.conftest import NOW
from tests.unit.fakes import MemoryLedger, MemoryStore, StepClock
from tests.unit.test_dispatch import sql_lead


class Escalations:
    """The Escalator port, recording who was told about what."""

    def __init__(self, fail: int = 0):
        self.calls: list[tuple[str, int, object]] = []
        self.fail = fail

    def escalate(self, notice, *, level, audience, person, waited_minutes):
        if self.fail:
            self.fail -= 1
            raise RetryableError("slack: HTTP 503")
        self.calls.append((audience, level, person))


def watch(rules, store, escalator, clock):
    return SlaWatch(store, MemoryLedger(), escalator, rules, clock=clock)


def test_sweep_escalates_each_level_once_and_stops_after_accept(rules):
    store, told, clock = MemoryStore(), Escalations(), StepClock(NOW)
    store.put(sql_lead(rules), None)
    sla = watch(rules, store, told, clock)

    clock.advance(days=7)  # well past every escalation, whatever the business hours
    first = sla.sweep()
    second = sla.sweep()

    assert first["escalated"] == len(rules.sla.escalations) and second["escalated"] == 0
    assert [(audience, level) for audience, level, _ in told.calls] == [
        (e.notify, i + 1) for i, e in enumerate(rules.sla.escalations)]


def test_sweep_ignores_an_accepted_sql(rules):
    store, told = MemoryStore(), Escalations()
    accepted = apply_action(sql_lead(rules), "accept", reason=None, by="rep", rules=rules,
                            now=NOW + timedelta(minutes=5)).lead
    store.put(accepted, None)

    assert watch(rules, store, told, StepClock(NOW + timedelta(days=7))).sweep()["escalated"] == 0
    assert told.calls == []
    assert accepted.first_touch_seconds == 300


def test_sweep_does_not_read_sqls_younger_than_the_first_escalation(rules):
    store, told = MemoryStore(), Escalations()
    store.put(sql_lead(rules), None)

    assert watch(rules, store, told, StepClock(NOW + timedelta(minutes=30))).sweep() == {
        "checked": 0, "escalated": 0, "failed": 0}
    assert told.calls == []


def test_sweep_retries_a_failed_escalation_at_the_next_sweep(rules):
    store, told, clock = MemoryStore(), Escalations(fail=1), StepClock(NOW)
    store.put(sql_lead(rules), None)
    sla = watch(rules, store, told, clock)
    clock.advance(days=7)

    first = sla.sweep()
    second = sla.sweep()

    assert first["failed"] == 1
    assert first["escalated"] + second["escalated"] == len(rules.sla.escalations)


def test_sweep_without_an_escalator_reads_nothing(rules):
    store = MemoryStore()
    store.put(sql_lead(rules), None)

    assert watch(rules, store, None, StepClock(NOW + timedelta(days=7))).sweep() == {
        "checked": 0, "escalated": 0, "failed": 0}


def test_sweep_ignores_an_sql_brought_in_by_an_import(rules):
    from leadflow.domain.engine import apply_import

    store, told = MemoryStore(), Escalations()
    lead = sql_lead(rules)
    imported = apply_import(lead.model_copy(update={"history": [], "stage": "subscriber"}), [], key="row-2",
                            stage="sql", stage_at=None, outcome=None, owner=None, rules=rules, now=NOW).lead
    assert imported.stage == "sql" and imported.history[-1].announced is False
    store.put(imported, None)

    assert watch(rules, store, told, StepClock(NOW + timedelta(days=7))).sweep()["escalated"] == 0
    assert told.calls == []
