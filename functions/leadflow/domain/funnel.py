"""The funnel from history: what each lead contributes to the funnel figures, and the
figures read back from the sums.

A lead's *fact* is a pure function of the lead as stored: the cohort it belongs to (the
week and month it entered its first stage), when it first reached each stage, how long
it spent in each, its outcome, and the values it is cut by (first- and last-touch
source, first form, fit grade, country, owner). A stage skipped counts as reached when a
later one was (a lead that went straight from lead to SQL reached MQL too), as the
"became a ... date" fields of a CRM do, so the conversion between any two stages is the
share of a cohort that reached the second among those that reached the first.

The figures are sums of contributions kept in funnel items, one per (grain, cut,
period, value): counts, duration histograms and reasons. A change of the lead changes
its contribution by a delta (the new fact's counters less the counted one's), so the
sums are kept incrementally and every figure is read from a bounded number of items.

Durations are counted in a fixed grid of buckets (`BUCKETS`): single minutes up to five,
then steps no wider than half their start (a quarter from two days on), up to two years
and one open bucket beyond. The grid is the same for every item, so an item holds at most
a fixed number of counters (a bucket of the grid per duration metric) whatever the number
of leads it counts: a funnel read is bounded by its cut's values times its cohorts, never
by the table. An item's size still grows as its leads fill more of the grid, up to that
bound. A median or a p90 is the nearest-rank value of those buckets (the bucket's start),
exactly what sorting the leads' bucketed durations gives.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any, Iterable, Mapping

from leadflow.domain.lead import Lead, stage_rank
from leadflow.domain.listing import fold, source_of
from leadflow.domain.stages import STAGES

# What a funnel can be cut by (`GET /v1/funnel?by=`), and what each reads on the lead.
DIMENSIONS = ("source", "last_source", "form", "fit_grade", "country", "owner")
ALL = "all"  # the uncut funnel: every lead under one value
GRAINS = ("week", "month")
NONE = "(none)"  # a lead with no value for a cut
VALUE_LIMIT = 100  # characters of a cut value or a reason kept

# Stage-to-stage conversions reported by name; `reached` gives any other pair.
CONVERSIONS = (("subscriber", "lead"), ("lead", "mql"), ("mql", "sql"), ("sql", "opportunity"),
               ("opportunity", "customer"), ("mql", "customer"))
# Time spent in a stage, from first entering it to first reaching a later one.
STAGE_TIMES = ("subscriber", "lead", "mql", "sql", "opportunity")
# Velocity metrics, each with its short name in the funnel items.
METRICS = {**{f"days_in_{stage}": f"t{STAGES.index(stage)}" for stage in STAGE_TIMES},
           "days_to_sql": "q", "days_to_won": "w", "first_touch": "f"}

MINUTE = 60

# Where each duration bucket starts, in minutes. Readable steps: single minutes up to five
# (first-touch targets are counted in minutes); under two days no step wider than half its
# start, from two days on none wider than a quarter; the last bucket is open from two years.
BUCKETS: tuple[int, ...] = (
    *(0, 1, 2, 3, 4, 5, 7, 10, 15, 20, 30, 45),                               # minutes
    *(int(h * 60) for h in (1, 1.5, 2, 3, 4, 6, 8, 12, 16, 20)),              # hours
    *(int(d * 1440) for d in (1, 1.5, 2, 2.5, 3, 3.5, 4, 5, 6, 7, 8, 10, 12, 14, 17, 21, 25, 30, 35, 42, 50,
                              60, 70, 80, 90, 105, 120, 135, 150, 180, 210, 240, 270, 300, 330, 365,
                              450, 540, 630, 730)),                            # days
)


def bucket(seconds: float) -> int:
    """A duration's bucket, as its start in minutes (`BUCKETS`); negative durations, clocks
    apart, are 0, and two years or more fall in the last bucket."""
    minutes = max(0.0, seconds) / MINUTE
    return BUCKETS[bisect_right(BUCKETS, minutes) - 1]


def period(grain: str, when: datetime | date) -> str:
    """The cohort a time falls in: ISO week `2017-W03` (weeks start on Monday) or month `2017-01`."""
    day = when.astimezone(timezone.utc).date() if isinstance(when, datetime) else when
    if grain == "week":
        year, week, _ = day.isocalendar()
        return f"{year}-W{week:02d}"
    if grain == "month":
        return f"{day.year}-{day.month:02d}"
    raise ValueError(f"unknown grain {grain!r}")


def period_start(grain: str, name: str) -> date:
    """The first day of a cohort period named by `period`."""
    if grain == "week":
        year, week = name.split("-W")
        return date.fromisocalendar(int(year), int(week), 1)
    year, month = name.split("-")
    return date(int(year), int(month), 1)


def _value(text: Any) -> str:
    if text is None:
        return NONE
    value = fold(str(text))[:VALUE_LIMIT]
    return value or NONE


def _reason(text: str | None) -> str:
    return " ".join((text or "").split())[:VALUE_LIMIT] or NONE


def cuts_of(lead: Lead) -> dict[str, str]:
    """The values a lead is cut by. Sources as the lead lists name them (`direct` when the
    first touch carried none); fit grade and country as held; others folded."""
    last = lead.last_touch
    last_source = NONE if last is None else _value(last.source or last.medium or last.referrer)
    country = lead.traits.get("country")
    return {
        "source": source_of(lead) if lead.first_touch is not None else NONE,
        "last_source": last_source,
        "form": _value(lead.first_form.form) if lead.first_form is not None else NONE,
        "fit_grade": lead.fit_grade or NONE,
        "country": str(country).upper()[:VALUE_LIMIT] if isinstance(country, str) and country.strip() else NONE,
        "owner": str(lead.owner)[:VALUE_LIMIT] if lead.owner else NONE,
    }


@dataclass(frozen=True)
class Fact:
    """What one lead, as stored at `version`, contributes to the funnel."""

    lead_id: str
    version: int
    incarnation: int  # the lead's creation in epoch ms: a lead erased and made again is another
    entered: int  # epoch seconds it entered its first stage: its cohort
    reached: tuple[int | None, ...]  # epoch seconds it first reached each stage (or a later one)
    current: int  # index of its stage now
    cuts: tuple[tuple[str, str], ...]
    durations: tuple[tuple[str, int], ...]  # (metric short name, bucket)
    won: bool = False
    lost: bool = False
    loss_reason: str | None = None
    rejection: str | None = None  # why sales last rejected or disqualified it

    def to_json(self) -> dict[str, Any]:
        return {"v": self.version, "i": self.incarnation, "e": self.entered, "r": list(self.reached),
                "c": self.current, "k": [list(kv) for kv in self.cuts], "d": [list(kv) for kv in self.durations],
                "won": self.won, "lost": self.lost, "lr": self.loss_reason, "rj": self.rejection}

    @classmethod
    def from_json(cls, lead_id: str, data: Mapping[str, Any]) -> "Fact":
        return cls(lead_id=lead_id, version=int(data["v"]), incarnation=int(data["i"]), entered=int(data["e"]),
                   reached=tuple(None if r is None else int(r) for r in data["r"]), current=int(data["c"]),
                   cuts=tuple((str(k), str(v)) for k, v in data["k"]),
                   durations=tuple((str(m), int(b)) for m, b in data["d"]),
                   won=bool(data.get("won")), lost=bool(data.get("lost")), loss_reason=data.get("lr"),
                   rejection=data.get("rj"))

    def same_figures(self, other: "Fact | None") -> bool:
        """Whether two facts add the same counters to the same items (the version aside)."""
        return other is not None and counters(self) == counters(other) and items_of(self) == items_of(other)


def _epoch(at: datetime) -> int:
    return int(at.timestamp())


def fact_of(lead: Lead | None) -> Fact | None:
    """The lead's contribution, or None for what the funnel does not count: anonymous
    visitors and visitors merged into a lead."""
    if lead is None or not lead.known or lead.merged_into:
        return None
    history = sorted(lead.history, key=lambda m: m.at)
    created = _epoch(lead.created_at)
    entered = min([created] + [_epoch(m.at) for m in history[:1]])
    first_entry: dict[str, int] = {}  # the stages it entered itself, first time each
    # The stage it was created in: the first move's origin, else the stage it holds.
    start = history[0].from_stage if history else lead.stage
    if start is not None:
        first_entry[start] = entered
    for move in history:
        first_entry.setdefault(move.to_stage, _epoch(move.at))
    reached: list[int | None] = [None] * len(STAGES)
    for stage, at in first_entry.items():  # a stage counts as reached when a later one was
        for i in range(stage_rank(stage) + 1):
            reached[i] = at if reached[i] is None else min(reached[i], at)
    durations: list[tuple[str, int]] = []
    for stage in STAGE_TIMES:
        began = first_entry.get(stage)
        later = [at for s, at in first_entry.items() if stage_rank(s) > stage_rank(stage) and at >= (began or 0)]
        if began is not None and later:
            durations.append((METRICS[f"days_in_{stage}"], bucket(min(later) - began)))
    sql_at = reached[STAGES.index("sql")]
    if sql_at is not None:
        durations.append((METRICS["days_to_sql"], bucket(sql_at - entered)))
    won = (lead.outcome is not None and lead.outcome.result == "won") or reached[STAGES.index("customer")] is not None
    if won:
        won_at = reached[STAGES.index("customer")]
        if lead.outcome is not None and lead.outcome.result == "won":
            won_at = _epoch(lead.outcome.at) if won_at is None else min(won_at, _epoch(lead.outcome.at))
        durations.append((METRICS["days_to_won"], bucket(won_at - entered)))
    if lead.first_touch_seconds is not None:
        durations.append((METRICS["first_touch"], bucket(lead.first_touch_seconds)))
    lost = not won and lead.outcome is not None and lead.outcome.result == "lost"
    rejection = None
    if lead.disqualified and lead.disqualified_by == "sales":
        rejection = _reason(lead.disqualified_reason)
    else:
        rejected = [m for m in history if m.cause.kind == "actor" and m.cause.action == "reject"]
        if rejected:
            rejection = _reason(rejected[-1].cause.reason)
    return Fact(lead_id=lead.lead_id, version=lead.version, incarnation=int(lead.created_at.timestamp() * 1000),
                entered=entered, reached=tuple(reached), current=stage_rank(lead.stage),
                cuts=tuple(sorted(cuts_of(lead).items())), durations=tuple(sorted(durations)), won=won, lost=lost,
                loss_reason=_reason(lead.outcome.reason) if lost and lead.outcome else None, rejection=rejection)


def counters(fact: Fact) -> Counter:
    """The counters one lead adds to each funnel item it falls in."""
    out: Counter = Counter({"n": 1, f"c{fact.current}": 1})
    for i, at in enumerate(fact.reached):
        if at is not None:
            out[f"r{i}"] += 1
    for metric, minutes in fact.durations:
        out[f"{metric}_{minutes}"] += 1
    if fact.won:
        out["won"] += 1
    if fact.lost:
        out["lost"] += 1
        out["l:" + (fact.loss_reason or NONE)] += 1
    if fact.rejection is not None:
        out["j:" + fact.rejection] += 1
    return out


ItemKey = tuple[str, str, str, str]  # (grain, cut, period, value)


class StaleCount(Exception):
    """A lead's marker changed since it was read (another count got there first): read
    it again and decide again."""


def items_of(fact: Fact) -> list[ItemKey]:
    """The funnel items a lead falls in: for each grain, its cohort period under every cut."""
    entered = datetime.fromtimestamp(fact.entered, tz=timezone.utc)
    keys = []
    for grain in GRAINS:
        name = period(grain, entered)
        keys.append((grain, ALL, name, ALL))
        keys.extend((grain, cut, name, value) for cut, value in fact.cuts)
    return keys


def delta(old: Fact | None, new: Fact | None) -> dict[ItemKey, dict[str, int]]:
    """What to add to each funnel item to go from counting `old` to counting `new` (either
    may be None: a lead first counted, or erased). Items and counters unchanged are left out."""
    change: dict[ItemKey, Counter] = {}
    for fact, sign in ((old, -1), (new, 1)):
        if fact is None:
            continue
        adds = counters(fact)
        for key in items_of(fact):
            counter = change.setdefault(key, Counter())
            for name, count in adds.items():
                counter[name] += sign * count
    return {key: {k: v for k, v in c.items() if v} for key, c in change.items() if any(c.values())}


# ---------------------------------------------------------------- reading the sums


def percentile(histogram: Mapping[int, int], q: float) -> int | None:
    """Nearest-rank percentile of bucketed durations (minutes), None when empty."""
    total = sum(histogram.values())
    if not total:
        return None
    rank = max(1, math.ceil(total * q))
    seen = 0
    for minutes in sorted(histogram):
        seen += histogram[minutes]
        if seen >= rank:
            return minutes
    return None  # pragma: no cover - the ranks add up to total


@dataclass
class Sums:
    """Counters of one funnel item, or of several added together."""

    counts: Counter = field(default_factory=Counter)

    def add(self, counters_: Mapping[str, int]) -> None:
        for name, count in counters_.items():
            self.counts[name] += int(count)

    def histograms(self) -> dict[str, dict[int, int]]:
        """Every duration histogram at once, by metric short name (one pass over the counters)."""
        out: dict[str, dict[int, int]] = {}
        for name, count in self.counts.items():
            short, _, minutes = name.partition("_")
            if count and minutes.isdigit():
                out.setdefault(short, {})[int(minutes)] = count
        return out

    def reasons(self, prefix: str) -> dict[str, int]:
        found = {k[2:]: v for k, v in self.counts.items() if k.startswith(prefix + ":") and v}
        return dict(sorted(found.items(), key=lambda kv: (-kv[1], kv[0])))

    def reached(self) -> tuple[dict[str, int], dict[str, float | None]]:
        """Leads that reached each stage, and the conversions between them."""
        reached = {stage: self.counts[f"r{i}"] for i, stage in enumerate(STAGES)}
        conversion = {f"{a}_to_{b}": (round(reached[b] / reached[a], 4) if reached[a] else None)
                      for a, b in CONVERSIONS}
        return reached, conversion

    def figures(self, *, cohorts: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        c = self.counts
        reached, conversion = self.reached()
        histograms = self.histograms()
        velocity = {}
        for name, short in METRICS.items():
            histogram = histograms.get(short, {})
            median, p90 = percentile(histogram, 0.5), percentile(histogram, 0.9)
            if name == "first_touch":
                velocity[name] = {"leads": sum(histogram.values()),
                                  "median_seconds": None if median is None else median * 60,
                                  "p90_seconds": None if p90 is None else p90 * 60}
            else:
                velocity[name] = {"leads": sum(histogram.values()),
                                  "median_days": None if median is None else round(median / 1440, 3),
                                  "p90_days": None if p90 is None else round(p90 / 1440, 3)}
        out = {
            "leads": c["n"],
            "reached": reached,
            "current": {stage: c[f"c{i}"] for i, stage in enumerate(STAGES)},
            "conversion": conversion,
            "velocity": velocity,
            "won": c["won"],
            "lost": c["lost"],
            "loss_reasons": self.reasons("l"),
            "rejection_reasons": self.reasons("j"),
        }
        if cohorts is not None:
            out["cohorts"] = cohorts
        return out


def cohort_row(name: str, grain: str, sums: Sums) -> dict[str, Any]:
    """One cohort of a cut: its leads, how many reached each stage, the conversions."""
    reached, conversion = sums.reached()
    return {"period": name, "starts": period_start(grain, name).isoformat(), "leads": sums.counts["n"],
            "reached": reached, "conversion": conversion, "won": sums.counts["won"], "lost": sums.counts["lost"]}


def report(rows: Iterable[tuple[str, str, Mapping[str, int]]], *, by: str | None, grain: str,
           since: date | None, until: date | None) -> dict[str, Any]:
    """The funnel answer from the funnel items read: `rows` are (period, value, counters)
    of one grain and cut (`by`, or the uncut funnel). Cohorts whose first day falls in
    [since, until) are counted; figures per value (when cut) and in total, each with its
    cohorts in order."""
    per_value: dict[str, dict[str, Sums]] = {}
    for name, value, counts in rows:
        start = period_start(grain, name)
        if (since and start < since) or (until and start >= until):
            continue
        per_value.setdefault(value, {}).setdefault(name, Sums()).add(counts)
    total_periods: dict[str, Sums] = {}
    groups = []
    for value, periods in per_value.items():
        whole = Sums()
        for name, sums in periods.items():
            whole.add(sums.counts)
            total_periods.setdefault(name, Sums()).add(sums.counts)
        if by is not None and whole.counts["n"]:  # a value every lead has left is not shown
            cohorts = [cohort_row(name, grain, periods[name]) for name in sorted(periods) if periods[name].counts["n"]]
            groups.append({"value": value, **whole.figures(cohorts=cohorts)})
    total = Sums()
    for sums in total_periods.values():
        total.add(sums.counts)
    groups.sort(key=lambda g: (-g["leads"], g["value"]))
    answer: dict[str, Any] = {
        "by": by, "cohort": grain,
        "since": since.isoformat() if since else None, "until": until.isoformat() if until else None,
        "stages": list(STAGES),
        "total": total.figures(cohorts=[cohort_row(n, grain, total_periods[n]) for n in sorted(total_periods)
                                        if total_periods[n].counts["n"]]),
    }
    if by is not None:
        answer["groups"] = groups
    return answer


def period_bounds(grain: str, since: date | None, until: date | None) -> tuple[str | None, str | None]:
    """The period names a read can start and stop at: the cohorts of [since, until) lie
    between them (a week starting before `since` may hold days after it: it is read and
    left out by its start)."""
    lo = period(grain, since) if since else None
    hi = period(grain, until - timedelta(days=1)) if until else None
    return lo, hi


# ---------------------------------------------------------------- the query and CSV

FORMATS = ("json", "csv")


@dataclass(frozen=True)
class FunnelQuery:
    by: str | None = None
    cohort: str | None = None
    since: date | None = None
    until: date | None = None
    format: str = "json"

    @property
    def history(self) -> bool:
        """Whether the figures asked for are history's (a cut, a cohort or CSV), rather
        than the snapshot of current stages `GET /v1/funnel` always answered."""
        return self.by is not None or self.cohort is not None or self.format == "csv"


def parse_funnel_query(params: Mapping[str, str], since: date | None, until: date | None) -> FunnelQuery:
    """`GET /v1/funnel`'s parameters (dates already read), or InvalidInput naming the
    parameter: an unknown parameter, cut, cohort or format is refused, never ignored."""
    from leadflow.domain.errors import InvalidInput

    allowed = {"by", "cohort", "since", "until", "format"}
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise InvalidInput(f"{unknown[0]}: unknown parameter; expected one of {', '.join(sorted(allowed))}",
                           field=unknown[0])
    values = {name: (params.get(name) or "").strip() for name in ("by", "cohort", "format")}
    if values["by"] and values["by"] not in DIMENSIONS:
        raise InvalidInput(f"by: unknown cut {values['by'][:40]!r}; expected one of {', '.join(DIMENSIONS)}",
                           field="by")
    if values["cohort"] and values["cohort"] not in GRAINS:
        raise InvalidInput(f"cohort: expected one of {', '.join(GRAINS)}", field="cohort")
    if values["format"] and values["format"] not in FORMATS:
        raise InvalidInput(f"format: expected one of {', '.join(FORMATS)}", field="format")
    asked = FunnelQuery(by=values["by"] or None, cohort=values["cohort"] or None, since=since, until=until,
                        format=values["format"] or "json")
    if asked.history and since and until and since >= until:
        raise InvalidInput("until: must be a later day than since (cohorts are days apart)", field="until")
    return asked


CSV_PAIRS = [f"{a}_to_{b}" for a, b in CONVERSIONS]


def csv_rows(answer: Mapping[str, Any]) -> list[list[Any]]:
    """The funnel as a spreadsheet: one row per value and cohort, then its whole, then
    the total's cohorts and whole (value `(all)`, period `(all)`)."""
    header = ["by", "value", "period", "leads", *[f"reached_{s}" for s in STAGES], *CSV_PAIRS, "won", "lost",
              "median_days_to_sql", "median_days_to_won"]
    rows: list[list[Any]] = [header]
    by = answer.get("by") or ALL

    def line(value: str, name: str, figures: Mapping[str, Any]) -> list[Any]:
        velocity = figures.get("velocity") or {}
        return [by, _cell(value), name, figures["leads"], *[figures["reached"][s] for s in STAGES],
                *["" if figures["conversion"][p] is None else figures["conversion"][p] for p in CSV_PAIRS],
                figures["won"], figures["lost"],
                _days(velocity.get("days_to_sql")), _days(velocity.get("days_to_won"))]

    for group in [*answer.get("groups", []), {"value": "(all)", **answer["total"]}]:
        for cohort in group.get("cohorts", []):
            rows.append(line(group["value"], cohort["period"], cohort))
        rows.append(line(group["value"], "(all)", group))
    return rows


def _cell(text: str) -> str:
    """A value as a spreadsheet cell that cannot run: a source, owner or form comes from
    whoever posts a form, and a cell starting with = + - @ (or a tab or return) is a
    formula to Excel and Sheets; it is kept as text behind a quote."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _days(figure: Mapping[str, Any] | None) -> Any:
    if not figure or figure.get("median_days") is None:
        return ""
    return figure["median_days"]
