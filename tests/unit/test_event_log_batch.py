"""The event log function records a stream batch with its appends written together,
in an order that keeps erasure whole, and reports the first record it could not record."""

from __future__ import annotations

from leadflow.domain.ports import LeadChange
from leadflow.usecases.event_log import record_batch

from tests.unit.fakes import MemoryStore


def applied(event_id: str) -> LeadChange:
    return LeadChange(lead_id="ld_a", removed=False,
                      applied=[{"event_id": event_id, "received_at": "2026-11-20T10:00:00+00:00"}])


class Recording(MemoryStore):
    """A store that says which calls it got, and can fail the n-th append."""

    def __init__(self, fail_append: int | None = None):
        super().__init__()
        self.calls: list[tuple] = []
        self.fail_append = fail_append

    def append_logs(self, logs):
        logs = [(lead_id, list(events)) for lead_id, events in logs]
        self.calls.append(("append", [e["event_id"] for _, events in logs for e in events]))
        if self.fail_append is not None and sum(c[0] == "append" for c in self.calls) == self.fail_append:
            raise RuntimeError("throttled")
        super().append_logs(logs)

    def purge_events(self, lead_id):
        self.calls.append(("purge", lead_id))
        return super().purge_events(lead_id)


def test_a_batch_of_appends_is_one_write_and_nothing_is_reported():
    store = Recording()
    changes = [("1", applied("e1")), ("2", None), ("3", applied("e2")), ("4", LeadChange("ld_b", False, []))]

    assert record_batch(store, changes) is None
    assert store.calls == [("append", ["e1", "e2"])]
    assert set(store.logs["ld_a"]) == {"e1", "e2"}


def test_what_came_before_an_erasure_is_written_before_its_sweep_and_what_came_after_after_it():
    store = Recording()
    changes = [("1", applied("before")), ("2", LeadChange("ld_a", True, [])), ("3", applied("after"))]

    assert record_batch(store, changes) is None
    assert store.calls == [("append", ["before"]), ("purge", "ld_a"), ("append", ["after"])]
    assert set(store.logs["ld_a"]) == {"after"}  # the re-created lead's own event only


def test_a_failed_write_reports_the_first_record_it_held_so_the_stream_redelivers_from_there():
    store = Recording(fail_append=2)
    changes = [("1", applied("a")), ("2", LeadChange("ld_a", True, [])), ("3", applied("b")), ("4", applied("c"))]

    assert record_batch(store, changes) == "3"
    assert "b" not in store.logs.get("ld_a", {})


def test_a_failed_sweep_reports_the_removal_and_writes_nothing_after_it():
    store = Recording()

    def broken(lead_id):
        raise RuntimeError("throttled")

    store.purge_events = broken
    changes = [("1", applied("a")), ("2", LeadChange("ld_a", True, [])), ("3", applied("b"))]

    assert record_batch(store, changes) == "2"
    assert set(store.logs["ld_a"]) == {"a"}
