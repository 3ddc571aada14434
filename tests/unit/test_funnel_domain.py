"""The funnel's pure parts: buckets, periods, a lead's fact, deltas, percentiles, the query."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest

from leadflow.domain.errors import InvalidInput
from leadflow.domain.funnel import (
    ALL, BUCKETS, bucket, counters, csv_rows, delta, fact_of, parse_funnel_query, percentile, period, period_bounds,
    period_start, report,
)
from leadflow.domain.lead import Cause, Lead, Move, SalesOutcome

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def _move(a, b, days, **cause):
    return Move(move_id=f"{a}-{b}", from_stage=a, to_stage=b, at=T0 + timedelta(days=days),
                cause=Cause(kind="actor" if cause else "rule", **cause), rules_version="1", score=0, fit_grade="A",
                engagement_score=0)


def _lead(**kw) -> Lead:
    base = dict(lead_id="ld_1", email="a@acme.example", stage="subscriber", stage_entered_at=T0, created_at=T0,
                updated_at=T0)
    return Lead(**{**base, **kw})


@pytest.mark.parametrize(("seconds", "minutes"), [(-5, 0), (59, 0), (61, 1), (299, 4), (300, 5), (419, 5), (420, 7),
                                                  (3599, 45), (3600, 60), (5400, 90), (47 * 3600 + 10, 2160),
                                                  (2 * 86400, 2 * 1440), (9.5 * 86400, 8 * 1440),
                                                  (13 * 86400, 12 * 1440), (729 * 86400, 630 * 1440),
                                                  (10 * 365 * 86400, 730 * 1440)])
def test_buckets_are_a_fixed_grid_from_minutes_to_two_years(seconds, minutes):
    assert bucket(seconds) == minutes


def test_the_grid_is_bounded_and_its_steps_are_readable():
    assert list(BUCKETS) == sorted(set(BUCKETS)) and BUCKETS[0] == 0 and len(BUCKETS) <= 64
    steps = list(zip(BUCKETS, BUCKETS[1:]))
    assert all(b - a == 1 for a, b in steps if b <= 5)  # single minutes up to five
    assert all((b - a) / a <= 0.5 for a, b in steps if a >= 5)
    assert all((b - a) / a <= 0.25 for a, b in steps if a >= 2 * 1440)
    # Every bucket a lead can fall in: an item holds at most this many counters per metric.
    assert {bucket(m * 60) for m in [*range(0, 3000), *range(3000, 1_200_000, 97)]} == set(BUCKETS)


def test_periods_are_iso_weeks_and_months():
    assert period("week", date(2021, 1, 3)) == "2020-W53" and period_start("week", "2020-W53") == date(2020, 12, 28)
    assert period("month", datetime(2017, 3, 31, 23, tzinfo=timezone.utc)) == "2017-03"
    assert period_bounds("month", date(2017, 1, 15), date(2017, 4, 1)) == ("2017-01", "2017-03")


def test_a_skipped_stage_counts_as_reached_and_times_are_first_entries():
    lead = _lead(stage="sql", history=[_move("subscriber", "lead", 1), _move("lead", "sql", 4),
                                       _move("sql", "lead", 6, action="reject", reason="no budget", actor="rep"),
                                       _move("lead", "sql", 9)])
    fact = fact_of(lead)
    assert [at is not None for at in fact.reached] == [True, True, True, True, False, False, False]
    durations = dict(fact.durations)
    assert durations["t0"] == 1440 and durations["t1"] == 3 * 1440 and "t2" not in durations  # MQL skipped: no time
    assert durations["q"] == 4 * 1440 and fact.rejection == "no budget"
    assert counters(fact)["j:no budget"] == 1


def test_outcomes_and_what_is_not_counted():
    won = _lead(stage="customer", history=[_move("subscriber", "customer", 20)])
    assert fact_of(won).won and dict(fact_of(won).durations)["w"] == 17 * 1440  # 20 days: the 17-21 day bucket
    lost = _lead(stage="lead", outcome=SalesOutcome(result="lost", at=T0, reason="price", by="import"))
    assert fact_of(lost).lost and counters(fact_of(lost))["l:price"] == 1
    assert fact_of(_lead(email=None)) is None  # an anonymous visitor
    assert fact_of(_lead(merged_into="ld_2")) is None


def test_delta_between_two_facts_touches_only_what_changed():
    a = fact_of(_lead(version=1))
    b = fact_of(_lead(version=2, stage="lead", history=[_move("subscriber", "lead", 1)]))
    change = delta(a, b)
    assert set(change) == {(g, cut, period(g, T0), value) for g in ("week", "month")
                           for cut, value in [(ALL, ALL), *a.cuts]}
    assert all(c == {"r1": 1, "c0": -1, "c1": 1, "t0_1440": 1} for c in change.values())
    assert delta(a, a) == {}
    assert all(v == 1 for c in delta(None, a).values() for k, v in c.items() if k == "n")


def test_percentiles_are_nearest_rank():
    assert percentile({}, 0.5) is None
    assert percentile({10: 1, 20: 1, 30: 1, 40: 1}, 0.5) == 20
    assert percentile({10: 9, 500: 1}, 0.9) == 10 and percentile({10: 9, 500: 1}, 0.91) == 500


def test_the_query_refuses_what_it_does_not_know():
    assert not parse_funnel_query({}, None, None).history
    assert parse_funnel_query({"by": "owner"}, None, None).history
    for params, field in [({"by": "channel"}, "by"), ({"cohort": "quarter"}, "cohort"), ({"format": "xml"}, "format"),
                          ({"group_by": "source"}, "group_by")]:
        with pytest.raises(InvalidInput) as caught:
            parse_funnel_query(params, None, None)
        assert caught.value.field == field
    with pytest.raises(InvalidInput):
        parse_funnel_query({"cohort": "week"}, date(2026, 2, 1), date(2026, 2, 1))


def test_a_csv_cell_from_a_form_cannot_be_a_formula():
    """A first-touch source is whatever a visitor's link said: in the CSV it stays text."""
    from leadflow.domain.lead import Touch

    rows = []
    for n, source in enumerate(["=HYPERLINK(\"http://x\")", "@SUM(A1)", "-2+3", "google"]):
        lead = _lead(lead_id=f"ld_{n}", first_touch=Touch(source=source, at=T0))
        for (grain, cut, name, value), counts in delta(None, fact_of(lead)).items():
            if grain == "month" and cut == "source":
                rows.append((name, value, counts))
    table = csv_rows(report(rows, by="source", grain="month", since=None, until=None))
    values = {row[1] for row in table[1:]}
    assert values == {"'=hyperlink(\"http://x\")", "'@sum(a1)", "'-2+3", "google", "(all)"}
