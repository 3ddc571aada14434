"""How each engagement signal's points fade from now on, for the lead page's chart.

The curve is the scoring itself, asked again at later moments: the lead's signals are
scored by `domain.scoring.engagement` at each sample time, under the rules in force, so
the chart shows exactly what the score will do (half-life decay, a signal falling out at
its rule's max age, caps, groups, an aggregate's window) and can never drift from it.
A rule without a half-life keeps its points (a flat line) until its max age.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from leadflow.domain.lead import Lead
from leadflow.domain.rules import Rules
from leadflow.domain.scoring import engagement

SAMPLES = 30  # intervals between now and the horizon (SAMPLES + 1 points a line)
DEFAULT_HORIZON_DAYS = 90  # when nothing decays: long enough to show signals ageing out
MIN_HORIZON_DAYS = 30
MAX_HORIZON_DAYS = 365
HALF_LIVES_SHOWN = 4  # the horizon covers this many of the longest half-life (1/16 left)


def half_life(rules: Rules, rule_id: str) -> float | None:
    """The half-life a line's points decay with: its rule's own, or its aggregate's."""
    rule = rules.engagement_by_id.get(rule_id)
    if rule is None:
        return None
    if rule.aggregate is not None:
        agg = rules.aggregate_by_id.get(rule.aggregate)
        return agg.half_life_days if agg is not None else None
    return rule.half_life_days


def _kind(rules: Rules, rule_id: str) -> str:
    if rule_id in rules.engagement_by_id:
        return "aggregate" if rules.engagement_by_id[rule_id].aggregate else "event"
    if any(r.id == rule_id for r in rules.engagement.repeats):
        return "repeat"
    if rule_id in rules.engagement.groups:
        return "group cap"
    return "other"


def horizon_days(rules: Rules, rule_ids: list[str]) -> float:
    lives = [hl for hl in (half_life(rules, r) for r in rule_ids) if hl]
    if not lives:
        return DEFAULT_HORIZON_DAYS
    return min(MAX_HORIZON_DAYS, max(MIN_HORIZON_DAYS, HALF_LIVES_SHOWN * max(lives)))


def decay_curves(lead: Lead, rules: Rules, now: datetime) -> dict[str, Any]:
    """Each engagement line scoring now, and its points at SAMPLES + 1 moments from now to
    the horizon: `{"days": [...], "horizon_days": h, "lines": [{"rule", "description",
    "kind", "half_life_days", "points": [...], "now", "end"}]}`. No lines: nothing scores."""
    _, lines_now, _ = engagement(lead.signals, now, rules, lead.engagement_reset_at)
    order = list(dict.fromkeys(line["rule"] for line in lines_now))
    if not order:
        return {"days": [], "horizon_days": 0, "lines": []}
    horizon = horizon_days(rules, order)
    days = [round(horizon * k / SAMPLES, 2) for k in range(SAMPLES + 1)]
    series: dict[str, list[float]] = {rule_id: [] for rule_id in order}
    for day in days:
        _, lines, _ = engagement(lead.signals, now + timedelta(days=day), rules, lead.engagement_reset_at)
        points = {line["rule"]: line["points"] for line in lines}
        for rule_id in order:
            series[rule_id].append(round(float(points.get(rule_id, 0.0)), 2))
    described = {line["rule"]: line.get("description") or line.get("detail") or line["rule"] for line in lines_now}
    return {
        "days": days,
        "horizon_days": horizon,
        "lines": [{"rule": rule_id, "description": described[rule_id], "kind": _kind(rules, rule_id),
                   "half_life_days": half_life(rules, rule_id), "points": series[rule_id],
                   "now": series[rule_id][0], "end": series[rule_id][-1]} for rule_id in order],
    }
