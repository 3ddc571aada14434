"""The scheduled jobs on a timer: the local stand-in for the template's ScheduleV2 events.

Each schedule is the template's: its ``ScheduleExpression`` (with
``ScheduleExpressionTimezone``) says when, its ``Input`` (parsed JSON) is the event
the jobs handler gets, as EventBridge Scheduler sends it. Supported expressions:

- ``rate(N minute|minutes|hour|hours|day|days)``, N a positive whole number: first
  run one interval after start (as a schedule created at deploy time), never at
  start;
- ``cron(M H * * ? *)``: minutes and hours as numbers, ``*`` or comma lists; every
  other field ``*`` or ``?`` (daily and hourly crons). Evaluated in the schedule's
  time zone, on the wall clock.

Anything else is rejected with an error naming the expression. An interval given
in seconds (the CLI's ``--rescore-every``…) replaces a schedule as a rate.

Jobs never overlap, and a failing job is logged and runs again at its next slot; a
slot missed (a suspended laptop, a long job) is skipped, not caught up. The
schedule's ``RetryPolicy`` is read but not applied: it retries EventBridge
Scheduler's delivery to Lambda (throttling, an unavailable service), which cannot
fail here; Lambda's retries of a failing asynchronous invocation are not
reproduced either.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

logger = logging.getLogger(__name__)

_UNITS = {"minute": 60, "minutes": 60, "hour": 3600, "hours": 3600, "day": 86400, "days": 86400}
_RATE = re.compile(r"^rate\(\s*(\d+)\s+([a-z]+)\s*\)$")
_CRON = re.compile(r"^cron\((.*)\)$")


class ScheduleError(ValueError):
    """A schedule expression the local scheduler cannot run."""


@dataclass(frozen=True)
class Rate:
    """Every ``seconds`` seconds, first one interval after start."""

    seconds: float
    expression: str = ""


@dataclass(frozen=True)
class Cron:
    """At the given minutes of the given hours, every day, in ``timezone``."""

    minutes: frozenset[int]
    hours: frozenset[int]
    timezone: dt.tzinfo
    expression: str = ""

    def next_after(self, moment: dt.datetime) -> dt.datetime:
        """The first fire time strictly after ``moment`` (an aware datetime), in the schedule's zone."""
        local = moment.astimezone(self.timezone).replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
        for _ in range(2 * 24 * 60):  # at most two days of minutes: every day has a slot
            if local.hour in self.hours and local.minute in self.minutes:
                return local
            local += dt.timedelta(minutes=1)
        raise ScheduleError(f"{self.expression}: no fire time within two days")  # pragma: no cover


Schedule = Rate | Cron


def _timezone(name: str, expression: str) -> dt.tzinfo:
    if name in ("UTC", "Etc/UTC", "GMT"):
        return dt.UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(f"{expression}: unknown time zone {name!r}") from None


def _cron_field(field: str, low: int, high: int, expression: str, what: str) -> frozenset[int]:
    if field == "*":
        return frozenset(range(low, high + 1))
    values: set[int] = set()
    for part in field.split(","):
        if not part.isdigit():
            raise ScheduleError(
                f"{expression}: the {what} field {field!r} is not supported locally "
                "(numbers, * and comma lists only)"
            )
        value = int(part)
        if not low <= value <= high:
            raise ScheduleError(f"{expression}: {what} {value} is outside {low}..{high}")
        values.add(value)
    return frozenset(values)


def parse_schedule(expression: str, timezone: str = "UTC") -> Schedule:
    """A ``rate(...)`` or ``cron(...)`` expression as the local scheduler runs it."""
    text = expression.strip()
    rate = _RATE.match(text)
    if rate:
        count, unit = int(rate.group(1)), rate.group(2)
        if unit not in _UNITS:
            raise ScheduleError(f"{expression}: unit {unit!r} is not minute(s), hour(s) or day(s)")
        if count < 1:
            raise ScheduleError(f"{expression}: the rate must be at least 1")
        return Rate(float(count * _UNITS[unit]), expression)
    cron = _CRON.match(text)
    if cron:
        fields = cron.group(1).split()
        if len(fields) != 6:
            raise ScheduleError(f"{expression}: a cron expression has 6 fields, this one {len(fields)}")
        minutes, hours, day_of_month, month, day_of_week, year = fields
        for name, field in (("day-of-month", day_of_month), ("month", month), ("day-of-week", day_of_week),
                            ("year", year)):
            if field not in ("*", "?"):
                raise ScheduleError(
                    f"{expression}: the {name} field {field!r} is not supported locally (only * or ?)"
                )
        return Cron(
            minutes=_cron_field(minutes, 0, 59, expression, "minutes"),
            hours=_cron_field(hours, 0, 23, expression, "hours"),
            timezone=_timezone(timezone, expression),
            expression=expression,
        )
    raise ScheduleError(f"{expression}: not a rate(...) or cron(...) expression the local scheduler supports")


@dataclass(frozen=True)
class Job:
    """One scheduled job: when it runs and the event it sends."""

    name: str
    schedule: Schedule
    payload: Any

    @property
    def expression(self) -> str:
        return self.schedule.expression or f"every {self.schedule.seconds:g}s"  # type: ignore[union-attr]


def _as_job(name: str, value: Job | Schedule | float) -> Job:
    if isinstance(value, Job):
        return value
    if isinstance(value, Rate | Cron):
        return Job(name, value, {"job": name})
    seconds = float(value)
    if seconds <= 0:
        raise ValueError(f"job {name}: interval must be positive, got {value}")
    return Job(name, Rate(seconds), {"job": name})


class Scheduler:
    """Invoke ``handler(job.payload)`` on each job's schedule.

    ``jobs`` maps a job name to a :class:`Job`, a schedule, or an interval in
    seconds (then the event is ``{"job": name}``).
    """

    def __init__(
        self,
        handler: Callable[[Any], Any] | None,
        jobs: Mapping[str, Job | Schedule | float] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self._handler = handler
        self._jobs = {name: _as_job(name, value) for name, value in (jobs or {}).items()}
        self._clock = clock
        self._wall_clock = wall_clock
        self._next_run: dict[str, float] = {}
        self._next_fire: dict[str, dt.datetime] = {}  # cron jobs: the wall-clock slot of the next run
        self._stop = threading.Event()
        self._run_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.runs: dict[str, int] = {name: 0 for name in self._jobs}
        self.failures: dict[str, int] = {name: 0 for name in self._jobs}

    @property
    def enabled(self) -> bool:
        return self._handler is not None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def ready(self) -> bool:
        """Running, or deliberately idle: without a jobs handler or without jobs."""
        return self.running or ((not self.enabled or not self._jobs) and not self._stop.is_set())

    @property
    def jobs(self) -> dict[str, Job]:
        return dict(self._jobs)

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("scheduler already started")
        self._stop.clear()
        if not self.enabled:
            logger.warning("no jobs handler: scheduled jobs are off")
            return
        now, wall = self._clock(), self._wall_clock()
        for name, job in self._jobs.items():
            if isinstance(job.schedule, Rate):
                self._next_run[name] = now + job.schedule.seconds
            else:
                self._schedule_cron(name, job.schedule, now, wall, wall)
        if not self._next_run:
            logger.info("no scheduled jobs")
            return
        self._thread = threading.Thread(target=self._run, name="leadflow-scheduler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the timer; a job that is running is allowed to finish (up to ``timeout``)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def run_now(self, job: str) -> Any:
        """Run one job synchronously and return the handler's result (exceptions propagate).

        A job of the schedule gets its event; another name gets ``{"job": name}``.
        """
        if self._handler is None:
            raise RuntimeError("no jobs handler")
        scheduled = self._jobs.get(job)
        payload = scheduled.payload if scheduled is not None else {"job": job}
        with self._run_lock:
            self.runs[job] = self.runs.get(job, 0) + 1
            try:
                return self._handler(payload)
            except Exception:
                self.failures[job] = self.failures.get(job, 0) + 1
                raise

    def _schedule_cron(self, name: str, cron: Cron, now: float, wall: dt.datetime, after: dt.datetime) -> None:
        """The next slot strictly after ``after`` (and after the wall clock), as a monotonic due time."""
        fire = cron.next_after(max(wall, after))
        self._next_fire[name] = fire
        self._next_run[name] = now + (fire - wall).total_seconds()

    def _run(self) -> None:
        while not self._stop.is_set():
            name, due = min(self._next_run.items(), key=lambda item: item[1])
            wait = due - self._clock()
            if wait > 0:
                # Wake at least every second so a changed clock or stop is noticed.
                self._stop.wait(min(wait, 1.0))
                continue
            job = self._jobs[name]
            now = self._clock()
            if isinstance(job.schedule, Rate):
                # A slot missed is skipped, not caught up.
                following = due + job.schedule.seconds
                self._next_run[name] = following if following > now else now + job.schedule.seconds
            else:
                self._schedule_cron(name, job.schedule, now, self._wall_clock(), self._next_fire[name])
            started = time.monotonic()
            try:
                self.run_now(name)
                logger.info("scheduled job %s done in %.2fs", name, time.monotonic() - started)
            except Exception:
                logger.exception("scheduled job %s failed; next run per %s", name, job.expression)
