"""Counting the funnel from lead changes, under moto: every change of figures counted
once, redeliveries and stale records changing nothing, erasures taken out, a lead made
again after an erasure counted as a new one, and concurrent counting settled by the markers."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from leadflow.domain.lead import Cause, Lead, Move, Touch
from tests.integration.conftest import TABLE

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)  # a Monday


def _lead(n: int, *, stage: str = "lead", version: int = 1, source: str | None = "google", owner: str | None = None,
          created: datetime = T0, moves: list[tuple[str, str, float]] = ()) -> Lead:
    history = [Move(move_id=f"m{n}{i}", from_stage=a, to_stage=b, at=created + timedelta(days=d), cause=Cause(kind="rule"),
                    rules_version="1", score=0, fit_grade="B", engagement_score=0) for i, (a, b, d) in enumerate(moves)]
    return Lead(lead_id=f"ld_{n:024d}", email=f"p{n}@acme.example", stage=stage, stage_entered_at=created,
                created_at=created, updated_at=created, version=version, owner=owner, fit_grade="B",
                first_touch=Touch(source=source, at=created) if source else None, history=history)


@pytest.fixture
def keeper(aws):
    from leadflow.adapters.dynamodb.funnel_store import DynamoFunnelStore
    from leadflow.usecases.funnel import FunnelKeeper

    return FunnelKeeper(DynamoFunnelStore(TABLE, client=aws))


def _by_source(keeper) -> dict[str, tuple[int, int, int]]:
    answer = keeper.report(by="source", grain="week", since=None, until=None)
    return {g["value"]: (g["leads"], g["reached"]["mql"], g["reached"]["sql"]) for g in answer["groups"]}


def test_changes_are_counted_once_and_a_redelivery_changes_nothing(keeper):
    from leadflow.usecases.funnel import Change

    first = [Change(f"ld_{n:024d}", None, _lead(n, source="google" if n < 3 else "linkedin")) for n in range(5)]
    assert keeper.record(first).written == 5
    assert _by_source(keeper) == {"google": (3, 0, 0), "linkedin": (2, 0, 0)}
    assert keeper.record(first).written == 0  # delivered again: the markers say counted
    assert _by_source(keeper) == {"google": (3, 0, 0), "linkedin": (2, 0, 0)}

    old = first[0].new
    moved = _lead(0, stage="sql", version=2, moves=[("lead", "mql", 1), ("mql", "sql", 3)])
    counted = keeper.record([Change(old.lead_id, old, moved)])
    assert counted.written == 1 and _by_source(keeper)["google"] == (3, 1, 1)
    # A stale record (an older version) after it: nothing changes.
    assert keeper.record([Change(old.lead_id, None, old)]).stale == 1
    assert _by_source(keeper)["google"] == (3, 1, 1)
    answer = keeper.report(by=None, grain="month", since=None, until=None)
    assert answer["total"]["velocity"]["days_in_mql"] == {"leads": 1, "median_days": 2.0, "p90_days": 2.0}
    assert answer["total"]["velocity"]["days_to_sql"]["median_days"] == 3.0


def test_a_change_of_source_moves_the_lead_between_values(keeper):
    from leadflow.usecases.funnel import Change

    lead = _lead(1, source=None)
    keeper.record([Change(lead.lead_id, None, lead)])
    assert _by_source(keeper) == {"(none)": (1, 0, 0)}
    later = _lead(1, source="Newsletter", version=2)
    keeper.record([Change(lead.lead_id, lead, later)])
    assert _by_source(keeper) == {"newsletter": (1, 0, 0)}


def test_an_erasure_takes_the_lead_out_and_a_new_lead_at_the_same_id_is_counted(keeper):
    from leadflow.usecases.funnel import Change

    lead = _lead(2, stage="mql", moves=[("lead", "mql", 1)])
    keeper.record([Change(lead.lead_id, None, lead)])
    assert _by_source(keeper) == {"google": (1, 1, 0)}
    keeper.record([Change(lead.lead_id, lead, None)])
    assert _by_source(keeper) == {}
    keeper.record([Change(lead.lead_id, lead, None)])  # the REMOVE delivered again
    assert _by_source(keeper) == {}
    again = _lead(2, version=1, created=T0 + timedelta(days=40))  # the person came back: a new lead
    keeper.record([Change(again.lead_id, None, again)])
    answer = keeper.report(by="source", grain="month", since=None, until=None)
    assert [(c["period"], c["leads"]) for c in answer["groups"][0]["cohorts"]] == [("2026-04", 1)]


def test_a_marker_changed_by_a_concurrent_count_is_read_again(keeper):
    """Two consumers (or a rebuild and the stream) count the same lead: the second one's
    transaction fails on the marker, reads it again and counts only the difference."""
    from leadflow.usecases.funnel import Change

    lead = _lead(3)
    keeper.record([Change(lead.lead_id, None, lead)])
    moved = _lead(3, stage="mql", version=2, moves=[("lead", "mql", 1)])
    store = keeper.store
    real = store.counted
    reads = []

    def stale_once(generation, ids):  # the second consumer read before the first one wrote its marker
        reads.append(ids)
        return {} if len(reads) == 1 else real(generation, ids)

    store.counted = stale_once
    try:
        counted = keeper.record([Change(lead.lead_id, lead, moved)])
    finally:
        store.counted = real
    assert counted.conflicts >= 1 and counted.written == 1
    assert _by_source(keeper) == {"google": (1, 1, 0)}


def test_a_rebuild_gives_the_same_figures_in_a_new_generation(keeper):
    from leadflow.usecases.funnel import Change

    leads = [_lead(n, stage="sql", moves=[("lead", "sql", n)], owner=f"rep{n % 2}") for n in range(6)]
    keeper.record([Change(lead.lead_id, None, lead) for lead in leads])
    before = keeper.report(by="owner", grain="week", since=None, until=None)
    result = keeper.rebuild(leads)
    after = keeper.report(by="owner", grain="week", since=None, until=None)
    assert result["generation"] == 2 and after["generation"] == 2 and result["dropped_items"] > 0
    assert {k: v for k, v in after.items() if k != "generation"} == {k: v for k, v in before.items() if k != "generation"}
