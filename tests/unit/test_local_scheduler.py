"""The local scheduler: the template's schedule expressions, time zones and Input."""

from __future__ import annotations

import datetime as dt
import threading
from zoneinfo import ZoneInfo

import pytest

from leadflow_infra.local.scheduler import Cron, Job, Rate, ScheduleError, Scheduler, parse_schedule

UTC = dt.UTC


@pytest.mark.parametrize(
    ("expression", "seconds"),
    [
        ("rate(1 minute)", 60),
        ("rate(5 minutes)", 300),
        ("rate(1 hour)", 3600),
        ("rate(12 hours)", 43200),
        ("rate(1 day)", 86400),
        ("rate(3 days)", 259200),
    ],
)
def test_parse_rate_gives_its_interval_in_seconds(expression, seconds):
    assert parse_schedule(expression) == Rate(seconds, expression)


def test_parse_cron_daily_in_utc_fires_next_at_its_minute_and_hour():
    cron = parse_schedule("cron(5 0 * * ? *)", "UTC")

    assert isinstance(cron, Cron)
    assert cron.next_after(dt.datetime(2026, 11, 20, 10, 0, tzinfo=UTC)) == dt.datetime(2026, 11, 21, 0, 5, tzinfo=UTC)
    assert cron.next_after(dt.datetime(2026, 11, 20, 0, 4, 59, tzinfo=UTC)) == dt.datetime(2026, 11, 20, 0, 5,
                                                                                            tzinfo=UTC)
    # Strictly after: at the slot itself, the next day's.
    assert cron.next_after(dt.datetime(2026, 11, 20, 0, 5, tzinfo=UTC)) == dt.datetime(2026, 11, 21, 0, 5, tzinfo=UTC)


def test_parse_cron_with_lists_and_star_fires_at_every_listed_minute_of_every_hour():
    cron = parse_schedule("cron(0,30 * * * ? *)")

    assert cron.minutes == frozenset({0, 30})
    assert cron.hours == frozenset(range(24))
    assert cron.next_after(dt.datetime(2026, 1, 1, 7, 10, tzinfo=UTC)) == dt.datetime(2026, 1, 1, 7, 30, tzinfo=UTC)
    assert cron.next_after(dt.datetime(2026, 1, 1, 7, 45, tzinfo=UTC)) == dt.datetime(2026, 1, 1, 8, 0, tzinfo=UTC)


def test_parse_cron_in_a_time_zone_fires_at_local_time():
    cron = parse_schedule("cron(0 9,17 * * ? *)", "Europe/Oslo")

    # 20 November: Oslo is UTC+1, so 09:00 local is 08:00 UTC.
    fire = cron.next_after(dt.datetime(2026, 11, 20, 7, 0, tzinfo=UTC))
    assert fire == dt.datetime(2026, 11, 20, 9, 0, tzinfo=ZoneInfo("Europe/Oslo"))
    assert fire.astimezone(UTC) == dt.datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
    # Summer: UTC+2.
    summer = cron.next_after(dt.datetime(2026, 7, 1, 12, 0, tzinfo=UTC))
    assert summer.astimezone(UTC) == dt.datetime(2026, 7, 1, 15, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("rate(0 minutes)", "at least 1"),
        ("rate(5 weeks)", "unit 'weeks'"),
        ("rate(1.5 hours)", "not a rate"),
        ("cron(0 12 1 * ? *)", "day-of-month"),
        ("cron(0 12 ? * MON-FRI *)", "day-of-week"),
        ("cron(*/5 * * * ? *)", "minutes field"),
        ("cron(0 8-17 * * ? *)", "hours field"),
        ("cron(60 0 * * ? *)", "minutes 60"),
        ("cron(0 0 * * ?)", "6 fields"),
        ("at(2026-11-20T10:00:00)", "not a rate"),
    ],
)
def test_parse_unsupported_expression_raises_naming_it(expression, message):
    with pytest.raises(ScheduleError) as raised:
        parse_schedule(expression)

    assert expression in str(raised.value)
    assert message in str(raised.value)


def test_parse_cron_with_unknown_time_zone_raises():
    with pytest.raises(ScheduleError, match="Mars/Olympus"):
        parse_schedule("cron(5 0 * * ? *)", "Mars/Olympus")


def test_run_now_sends_the_schedules_input_and_other_jobs_get_a_job_event():
    seen: list[object] = []
    scheduler = Scheduler(seen.append, {"sla": Job("sla", Rate(300), {"job": "sla", "dry_run": True})})

    scheduler.run_now("sla")
    scheduler.run_now("funnel")

    assert seen == [{"job": "sla", "dry_run": True}, {"job": "funnel"}]
    assert scheduler.runs == {"sla": 1, "funnel": 1}


def test_cron_job_fires_when_the_wall_clock_reaches_its_slot_with_its_payload():
    # The wall clock says 00:04:59.8 in Oslo (23:04:59.8 UTC): the 00:05 slot is 0.2 s away.
    wall = dt.datetime(2026, 11, 19, 23, 4, 59, 800_000, tzinfo=UTC)
    fired = threading.Event()
    seen: list[object] = []

    def handler(event: object) -> None:
        seen.append(event)
        fired.set()

    job = Job("funnel", parse_schedule("cron(5 0 * * ? *)", "Europe/Oslo"), {"job": "funnel"})
    hourly = Job("rescore", Rate(3600), {"job": "rescore"})
    scheduler = Scheduler(handler, {"funnel": job, "rescore": hourly}, wall_clock=lambda: wall)
    scheduler.start()
    try:
        assert fired.wait(5), "the cron job did not fire at its slot"
    finally:
        scheduler.stop()

    assert seen == [{"job": "funnel"}]


def test_scheduler_with_interval_in_seconds_is_a_rate_with_a_job_event():
    scheduler = Scheduler(lambda event: None, {"rescore": 2.5})

    assert scheduler.jobs == {"rescore": Job("rescore", Rate(2.5), {"job": "rescore"})}
    with pytest.raises(ValueError, match="positive"):
        Scheduler(lambda event: None, {"rescore": 0})
