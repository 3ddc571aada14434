"""The follow-up SLA: business-hours arithmetic and the escalations it makes due.

Everything is pure: times come in as aware datetimes and go out in UTC. Business
hours are wall-clock hours in the calendar's time zone; each day's opening and
closing are converted to UTC on their own, so a day on which clocks change has as
many business hours as really elapse between its opening and its closing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Iterator, Literal
from zoneinfo import ZoneInfo

from leadflow.domain.rules import WEEKDAYS, BusinessHours, Rules, Sla

HOUR = 3600.0
_MAX_DAYS = 366 * 30  # a calendar with only holidays ahead still ends: the holiday list is finite


@dataclass(frozen=True)
class BusinessCalendar:
    tz: ZoneInfo
    weekdays: frozenset[int]  # date.weekday(): 0 = Monday
    opens: time
    closes: time
    holidays: frozenset[date]

    @classmethod
    def from_rules(cls, source: BusinessHours | Sla | Rules) -> "BusinessCalendar":
        bh = source.sla.business_hours if isinstance(source, Rules) else (
            source.business_hours if isinstance(source, Sla) else source)
        return cls(tz=ZoneInfo(bh.timezone), weekdays=frozenset(WEEKDAYS.index(d) for d in bh.days),
                   opens=bh.start_time, closes=bh.end_time, holidays=frozenset(bh.holidays))

    def is_business_day(self, day: date) -> bool:
        return day.weekday() in self.weekdays and day not in self.holidays

    def window(self, day: date) -> tuple[datetime, datetime] | None:
        """The day's opening and closing in UTC, or None on a closed day."""
        if not self.is_business_day(day):
            return None
        return _utc(datetime.combine(day, self.opens, self.tz)), _utc(datetime.combine(day, self.closes, self.tz))

    def is_open(self, at: datetime) -> bool:
        at = _aware(at, "at")
        w = self.window(at.astimezone(self.tz).date())
        return w is not None and w[0] <= at < w[1]

    def windows_from(self, start: datetime) -> Iterator[tuple[datetime, datetime]]:
        """Business windows (UTC) that end after `start`, in order, from start's local day on."""
        day = start.astimezone(self.tz).date()
        for _ in range(_MAX_DAYS):
            w = self.window(day)
            if w is not None and w[1] > start:
                yield w
            day += timedelta(days=1)
        raise ValueError(f"no business hours within {_MAX_DAYS} days of {start.isoformat()}")


def _aware(value: datetime, name: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime")
    return value


def _utc(value: datetime) -> datetime:
    return value.astimezone(timezone.utc)


def add_business_hours(start: datetime, hours: float, cal: BusinessCalendar) -> datetime:
    """The instant (UTC) at which `hours` business hours have elapsed after `start`.

    Time outside business hours does not count; a start outside them counts from the
    next opening (so 0 hours at night is the next opening). Reaching exactly a closing
    time returns that closing, not the next opening.
    """
    start = _utc(_aware(start, "start"))
    if hours < 0:
        raise ValueError("hours must be >= 0")
    remaining = timedelta(hours=hours)
    for opens, closes in cal.windows_from(start):
        begin = max(start, opens)
        available = closes - begin
        if remaining <= available:
            return begin + remaining
        remaining -= available
    raise AssertionError("unreachable")  # windows_from raises when it runs out


def business_hours_between(a: datetime, b: datetime, cal: BusinessCalendar) -> float:
    """Business hours elapsed from `a` to `b`; 0 when b is not after a."""
    a = _utc(_aware(a, "a"))
    b = _utc(_aware(b, "b"))
    if b <= a:
        return 0.0
    total = timedelta(0)
    for opens, closes in cal.windows_from(a):
        if opens >= b:
            break
        total += min(closes, b) - max(opens, a)
    return total / timedelta(hours=1)


@dataclass(frozen=True)
class Escalation:
    level: int  # 1-based position in sla.escalations
    notify: Literal["owner", "manager"]
    due_at: datetime  # UTC


def _sla(source: Sla | Rules) -> Sla:
    return source.sla if isinstance(source, Rules) else source


def sla_deadline(sql_entered_at: datetime, sla: Sla | Rules) -> datetime:
    """When the owner must have accepted a lead that entered sql at `sql_entered_at`."""
    s = _sla(sla)
    return add_business_hours(sql_entered_at, s.accept_within_business_hours, BusinessCalendar.from_rules(s))


def escalation_schedule(sql_entered_at: datetime, sla: Sla | Rules) -> list[Escalation]:
    """Every escalation level with its due time, each counted from the entry into sql."""
    s = _sla(sla)
    cal = BusinessCalendar.from_rules(s)
    return [Escalation(level=i, notify=step.notify, due_at=add_business_hours(sql_entered_at, step.after_business_hours, cal))
            for i, step in enumerate(s.escalations, start=1)]


def due_escalations(sql_entered_at: datetime, accepted: bool, sent_levels: set[int] | frozenset[int],
                    now: datetime, sla: Sla | Rules) -> list[Escalation]:
    """The escalations to send now: due (due_at <= now), not yet sent, for a lead
    nobody has accepted. Several can be due at once (e.g. after a long outage); they
    come in level order."""
    if accepted:
        return []
    now = _utc(_aware(now, "now"))
    return [e for e in escalation_schedule(sql_entered_at, sla) if e.level not in sent_levels and e.due_at <= now]
