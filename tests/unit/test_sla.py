"""Business-hours arithmetic and SLA escalations."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from leadflow.domain.rules import BusinessHours, EscalationStep, Sla
from leadflow.domain.sla import (
    BusinessCalendar,
    Escalation,
    add_business_hours,
    business_hours_between,
    due_escalations,
    sla_deadline,
)

OSLO = ZoneInfo("Europe/Oslo")
UTC = timezone.utc
WEEK = BusinessCalendar.from_rules(BusinessHours())  # mon-fri 09-17 Oslo, 24-25 Dec 2026 off
EVERY_DAY_NIGHT = BusinessCalendar.from_rules(BusinessHours(
    days=["mon", "tue", "wed", "thu", "fri", "sat", "sun"], start="01:00", end="05:00", holidays=[]))
EVERY_DAY = BusinessCalendar.from_rules(BusinessHours(
    days=["mon", "tue", "wed", "thu", "fri", "sat", "sun"], start="09:00", end="17:00", holidays=[]))


def oslo(*args) -> datetime:
    return datetime(*args, tzinfo=OSLO)


# add_business_hours --------------------------------------------------------------------

def test_add_business_hours_friday_afternoon_continues_monday_morning():
    # 2026-11-20 is a Friday: 30 min on Friday, 30 min on Monday.
    assert add_business_hours(oslo(2026, 11, 20, 16, 30), 1, WEEK) == oslo(2026, 11, 23, 9, 30)


def test_add_business_hours_returns_utc():
    due = add_business_hours(oslo(2026, 11, 20, 16, 30), 1, WEEK)
    assert due.tzinfo == UTC and due == datetime(2026, 11, 23, 8, 30, tzinfo=UTC)


def test_add_business_hours_within_a_day_stays_that_day():
    assert add_business_hours(oslo(2026, 11, 18, 10, 15), 2.5, WEEK) == oslo(2026, 11, 18, 12, 45)


def test_add_business_hours_reaching_closing_time_returns_closing():
    assert add_business_hours(oslo(2026, 11, 20, 16, 0), 1, WEEK) == oslo(2026, 11, 20, 17, 0)


def test_add_business_hours_start_at_night_counts_from_next_opening():
    assert add_business_hours(oslo(2026, 11, 17, 2, 0), 1.5, WEEK) == oslo(2026, 11, 17, 10, 30)


def test_add_business_hours_start_after_closing_counts_from_next_morning():
    assert add_business_hours(oslo(2026, 11, 17, 19, 45), 1, WEEK) == oslo(2026, 11, 18, 10, 0)


def test_add_business_hours_start_on_weekend_counts_from_monday():
    assert add_business_hours(oslo(2026, 11, 21, 12, 0), 1, WEEK) == oslo(2026, 11, 23, 10, 0)


def test_add_business_hours_zero_hours_at_night_is_next_opening():
    assert add_business_hours(oslo(2026, 11, 17, 23, 0), 0, WEEK) == oslo(2026, 11, 18, 9, 0)


def test_add_business_hours_many_hours_span_days():
    # Monday 09:00 + 20 h = Mon 8 + Tue 8 + Wed 4 → Wednesday 13:00.
    assert add_business_hours(oslo(2026, 11, 16, 9, 0), 20, WEEK) == oslo(2026, 11, 18, 13, 0)


def test_add_business_hours_holidays_are_skipped():
    # Wed 23 Dec 16:30; Thu 24 and Fri 25 are holidays, then the weekend.
    assert add_business_hours(oslo(2026, 12, 23, 16, 30), 1, WEEK) == oslo(2026, 12, 28, 9, 30)


def test_add_business_hours_holiday_is_a_date_in_local_time():
    # 2026-12-23 23:30 UTC is already the 24th in Oslo: a holiday.
    assert add_business_hours(datetime(2026, 12, 23, 23, 30, tzinfo=UTC), 1, WEEK) == oslo(2026, 12, 28, 10, 0)


def test_add_business_hours_accepts_any_aware_timezone():
    start = datetime(2026, 11, 20, 10, 30, tzinfo=ZoneInfo("America/New_York"))  # 16:30 in Oslo
    assert add_business_hours(start, 1, WEEK) == oslo(2026, 11, 23, 9, 30)


def test_add_business_hours_naive_start_is_refused():
    with pytest.raises(ValueError, match="timezone-aware"):
        add_business_hours(datetime(2026, 11, 20, 16, 30), 1, WEEK)


def test_add_business_hours_negative_hours_are_refused():
    with pytest.raises(ValueError, match=">= 0"):
        add_business_hours(oslo(2026, 11, 20, 16, 30), -1, WEEK)


# Daylight saving: Europe/Oslo springs forward 02:00→03:00 on Sunday 2026-03-29 and
# falls back 03:00→02:00 on Sunday 2026-10-25.

def test_add_business_hours_spring_forward_day_has_one_hour_less():
    # Open 01:00-05:00 wall time, which is 3 real hours that night.
    due = add_business_hours(oslo(2026, 3, 29, 1, 0), 3, EVERY_DAY_NIGHT)
    assert due == oslo(2026, 3, 29, 5, 0) == datetime(2026, 3, 29, 3, 0, tzinfo=UTC)
    assert business_hours_between(oslo(2026, 3, 29, 0, 0), oslo(2026, 3, 29, 12, 0), EVERY_DAY_NIGHT) == 3.0


def test_add_business_hours_fall_back_day_has_one_hour_more():
    due = add_business_hours(oslo(2026, 10, 25, 1, 0), 5, EVERY_DAY_NIGHT)
    assert due == oslo(2026, 10, 25, 5, 0) == datetime(2026, 10, 25, 4, 0, tzinfo=UTC)
    assert business_hours_between(oslo(2026, 10, 25, 0, 0), oslo(2026, 10, 25, 12, 0), EVERY_DAY_NIGHT) == 5.0


def test_add_business_hours_across_spring_forward_keeps_local_opening():
    # Saturday 16:30 CET + 1 h → Sunday 09:30 CEST (07:30 UTC, not 08:30).
    due = add_business_hours(oslo(2026, 3, 28, 16, 30), 1, EVERY_DAY)
    assert due == datetime(2026, 3, 29, 7, 30, tzinfo=UTC)
    assert due.astimezone(OSLO).strftime("%H:%M %Z") == "09:30 CEST"


def test_add_business_hours_across_fall_back_keeps_local_opening():
    due = add_business_hours(oslo(2026, 10, 24, 16, 30), 1, EVERY_DAY)
    assert due == datetime(2026, 10, 25, 8, 30, tzinfo=UTC)
    assert due.astimezone(OSLO).strftime("%H:%M %Z") == "09:30 CET"


# business_hours_between ----------------------------------------------------------------

def test_business_hours_between_over_weekend_counts_only_open_time():
    assert business_hours_between(oslo(2026, 11, 20, 16, 30), oslo(2026, 11, 23, 9, 30), WEEK) == 1.0


def test_business_hours_between_reversed_interval_is_zero():
    assert business_hours_between(oslo(2026, 11, 23, 9, 30), oslo(2026, 11, 20, 16, 30), WEEK) == 0.0


def test_business_hours_between_entirely_closed_interval_is_zero():
    assert business_hours_between(oslo(2026, 11, 21, 8, 0), oslo(2026, 11, 22, 20, 0), WEEK) == 0.0


def test_business_hours_between_full_week_is_forty_hours():
    assert business_hours_between(oslo(2026, 11, 16, 0, 0), oslo(2026, 11, 23, 0, 0), WEEK) == 40.0


INSTANTS = st.datetimes(min_value=datetime(2025, 12, 1), max_value=datetime(2027, 2, 1),
                        timezones=st.just(UTC))
CALENDARS = st.sampled_from([WEEK, EVERY_DAY_NIGHT, EVERY_DAY])


@settings(max_examples=300, deadline=None)
@given(start=INSTANTS, hours=st.floats(min_value=0, max_value=300, allow_nan=False), cal=CALENDARS)
def test_business_hours_between_round_trips_add_business_hours(start, hours, cal):
    due = add_business_hours(start, hours, cal)
    assert due >= start
    assert business_hours_between(start, due, cal) == pytest.approx(hours, abs=1e-6)


@settings(max_examples=200, deadline=None)
@given(start=INSTANTS, a=st.floats(min_value=0, max_value=100), b=st.floats(min_value=0, max_value=100), cal=CALENDARS)
def test_add_business_hours_more_hours_are_never_earlier(start, a, b, cal):
    lo, hi = sorted((a, b))
    assert add_business_hours(start, lo, cal) <= add_business_hours(start, hi, cal)


@settings(max_examples=200, deadline=None)
@given(a=INSTANTS, b=INSTANTS, cal=CALENDARS)
def test_add_business_hours_of_the_gap_lands_no_later_than_the_end(a, b, cal):
    a, b = sorted((a, b))
    elapsed = business_hours_between(a, b, cal)
    assume(elapsed > 0)  # zero hours from a closed instant means the next opening, maybe after b
    # b may be outside business hours; adding the elapsed business time lands at or before it.
    assert add_business_hours(a, elapsed, cal) <= b + timedelta(microseconds=1)


# Escalations ---------------------------------------------------------------------------

SLA = Sla()  # accept within 1 h; owner after 1 h, manager after 2 h; mon-fri 09-17 Oslo
ENTERED = oslo(2026, 11, 20, 16, 30)  # Friday


def test_sla_deadline_friday_afternoon_is_monday_morning():
    assert sla_deadline(ENTERED, SLA) == oslo(2026, 11, 23, 9, 30)


def test_due_escalations_before_first_due_time_is_empty():
    assert due_escalations(ENTERED, False, set(), oslo(2026, 11, 23, 9, 29), SLA) == []


def test_due_escalations_first_level_due_once_then_second():
    at_930 = oslo(2026, 11, 23, 9, 30)
    first = due_escalations(ENTERED, False, set(), at_930, SLA)
    assert first == [Escalation(level=1, notify="owner", due_at=at_930.astimezone(UTC))]
    assert due_escalations(ENTERED, False, {1}, oslo(2026, 11, 23, 10, 29), SLA) == []
    second = due_escalations(ENTERED, False, {1}, oslo(2026, 11, 23, 10, 30), SLA)
    assert [(e.level, e.notify) for e in second] == [(2, "manager")]
    assert due_escalations(ENTERED, False, {1, 2}, oslo(2026, 11, 30, 12, 0), SLA) == []


def test_due_escalations_after_an_outage_returns_all_unsent_levels_in_order():
    due = due_escalations(ENTERED, False, set(), oslo(2026, 11, 25, 12, 0), SLA)
    assert [(e.level, e.notify) for e in due] == [(1, "owner"), (2, "manager")]
    assert [e.due_at for e in due] == sorted(e.due_at for e in due)


def test_due_escalations_accepted_lead_gets_none():
    assert due_escalations(ENTERED, True, set(), oslo(2026, 12, 31, 12, 0), SLA) == []


def test_due_escalations_without_escalation_steps_is_empty():
    sla = Sla(escalations=[])
    assert due_escalations(ENTERED, False, set(), oslo(2026, 12, 31, 12, 0), sla) == []


def test_due_escalations_count_from_sql_entry_in_business_hours():
    sla = Sla(escalations=[EscalationStep(after_business_hours=0.5, notify="owner"),
                           EscalationStep(after_business_hours=8.5, notify="manager")])
    due = due_escalations(ENTERED, False, set(), oslo(2026, 11, 24, 9, 0), sla)
    assert [(e.level, e.due_at) for e in due] == [(1, oslo(2026, 11, 20, 17, 0)), (2, oslo(2026, 11, 23, 17, 0))]
