"""Pure, deterministic scoring: fit from traits, engagement from decayed signals.

Every number carries its explanation: which rule gave how many points, after decay.
Sums use math.fsum, which is exactly rounded and so independent of order: the same
signals give the same score whatever order they arrived in.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Mapping

from leadflow.domain.events import AppliedEvent, email_domain
from leadflow.domain.rules import GRADES, Condition, Rules

DAY = 86400.0


@dataclass(frozen=True)
class Subject:
    """What a condition can look at: the lead's traits and email, and maybe one event."""

    traits: Mapping[str, Any]
    email: str | None = None
    event: AppliedEvent | None = None


def _norm(value: Any) -> Any:
    if isinstance(value, str):
        return value.strip().lower()
    return value


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(str(value).replace(",", "").strip())
    except ValueError:
        return None


def matches(cond: Condition, subject: Subject) -> bool:
    if cond.event is not None and (subject.event is None or subject.event.type != cond.event):
        return False
    if cond.all is not None and not all(matches(c, subject) for c in cond.all):
        return False
    if cond.any is not None and not any(matches(c, subject) for c in cond.any):
        return False
    if cond.trait:
        value = subject.traits.get(cond.trait)
    elif cond.property:
        if subject.event is None:
            return False
        value = subject.event.properties.get(cond.property)
    elif cond.email_domain:
        value = email_domain(subject.email)
    else:
        return True
    return _test(cond, value)


def _test(cond: Condition, value: Any) -> bool:
    present = value is not None and value != ""
    if cond.exists is not None and present != cond.exists:
        return False
    if not present:
        # Absent values fail every positive test; `not_in` alone does not make absence a match.
        return cond.exists is False and len(cond.operators()) == 1
    text = str(_norm(value)) if not isinstance(value, bool) else str(value).lower()
    if cond.equals is not None and text != str(_norm(cond.equals)).lower():
        return False
    if cond.in_ is not None and text not in {str(_norm(v)).lower() for v in cond.in_}:
        return False
    if cond.not_in is not None and text in {str(_norm(v)).lower() for v in cond.not_in}:
        return False
    if cond.contains_any is not None and not any(s.lower() in text for s in cond.contains_any):
        return False
    if cond.words_any is not None and not cond._word_re.search(text):  # type: ignore[union-attr]
        return False
    if cond.suffix_any is not None and not any(text.endswith(s.lower()) for s in cond.suffix_any):
        return False
    if cond.matches is not None and not cond._regex_c.search(text):  # type: ignore[union-attr]
        return False
    if cond.gte is not None or cond.lte is not None:
        number = _number(value)
        if number is None:
            return False
        if cond.gte is not None and number < cond.gte:
            return False
        if cond.lte is not None and number > cond.lte:
            return False
    return True


@dataclass
class ScoreCard:
    fit_score: float
    fit_grade: str
    engagement_score: float
    explanation: list[dict[str, Any]] = field(default_factory=list)
    intent_flags: dict[str, str] = field(default_factory=dict)

    @property
    def score(self) -> float:
        return round(self.fit_score + self.engagement_score, 2)


def grade_for(points: float, rules: Rules) -> str:
    g = rules.fit.grades
    if points >= g["A"]:
        return "A"
    if points >= g["B"]:
        return "B"
    if points >= g["C"]:
        return "C"
    return "D"


def grade_at_least(grade: str, minimum: str) -> bool:
    return GRADES.index(grade) >= GRADES.index(minimum)


def fit(traits: Mapping[str, Any], email: str | None, rules: Rules) -> tuple[float, list[dict[str, Any]]]:
    subject = Subject(traits=traits, email=email)
    best: dict[str, tuple[int, Any]] = {}
    lines: list[dict[str, Any]] = []
    for rule in rules.fit.rules:
        if not matches(rule.when, subject):
            continue
        if rule.group:
            held = best.get(rule.group)
            if held is None or rule.points > held[0]:
                best[rule.group] = (rule.points, rule)
        else:
            lines.append({"rule": rule.id, "axis": "fit", "points": rule.points, "detail": rule.description or rule.id})
    for points, rule in best.values():
        lines.append({"rule": rule.id, "axis": "fit", "points": points, "detail": rule.description or rule.id})
    total = math.fsum(line["points"] for line in lines)
    return total, lines


def intent_flags(traits: Mapping[str, Any], email: str | None, rules: Rules) -> dict[str, str]:
    subject = Subject(traits=traits, email=email)
    return {r.id: r.reason for r in rules.intent_validation if matches(r.when, subject)}


def engagement(signals, now: datetime, rules: Rules, reset_at: int | None = None) -> tuple[float, list[dict[str, Any]]]:
    """Decayed points per rule. A signal counts `points * 0.5 ** (age / half_life)`,
    nothing once older than the rule's max_age_days, and a rule never gives more
    than its cap (in either direction)."""
    now_s = now.timestamp()
    by_rule: dict[str, list[int]] = {}
    for s in signals:
        if reset_at is not None and s.at <= reset_at:
            continue
        by_rule.setdefault(s.rule, []).append(s.at)
    lines: list[dict[str, Any]] = []
    totals: list[float] = []
    for rule in rules.engagement.rules:
        times = by_rule.get(rule.id)
        if not times:
            continue
        parts = []
        for at in times:
            age = max(0.0, now_s - at)
            if age > rule.max_age_days * DAY:
                continue
            factor = 0.5 ** (age / (rule.half_life_days * DAY)) if rule.half_life_days else 1.0
            parts.append(rule.points * factor)
        if not parts:
            continue
        raw = math.fsum(parts)
        value = raw
        capped = False
        if rule.cap is not None and abs(raw) > rule.cap:
            value, capped = math.copysign(rule.cap, raw), True
        value = round(value, 2)
        if value == 0:
            continue
        newest_days = round((now_s - max(times)) / DAY, 1)
        detail = f"{len(parts)}x {rule.description or rule.id}, newest {newest_days}d ago"
        if rule.half_life_days:
            detail += f", half-life {rule.half_life_days:g}d"
        if capped:
            detail += f", capped at {rule.cap:g}"
        lines.append({"rule": rule.id, "axis": "engagement", "points": value, "count": len(parts), "detail": detail})
        totals.append(value)
    for rep in rules.engagement.repeats:
        window = now_s - rep.within_days * DAY
        count = sum(1 for at in by_rule.get(rep.of, ()) if window <= at <= now_s)
        if count >= rep.min_count:
            lines.append({"rule": rep.id, "axis": "engagement", "points": rep.points, "count": count,
                          "detail": f"{rep.description or rep.id} ({count} in {rep.within_days:g}d)"})
            totals.append(rep.points)
    return round(math.fsum(totals), 2), lines


def score(*, traits: Mapping[str, Any], email: str | None, signals, now: datetime, rules: Rules,
          reset_at: int | None = None) -> ScoreCard:
    fit_points, fit_lines = fit(traits, email, rules)
    eng_points, eng_lines = engagement(signals, now, rules, reset_at)
    flags = intent_flags(traits, email, rules)
    explanation = sorted(fit_lines, key=lambda l: -abs(l["points"])) + sorted(eng_lines, key=lambda l: -abs(l["points"]))
    for rule_id, reason in sorted(flags.items()):
        explanation.append({"rule": rule_id, "axis": "intent", "points": 0, "detail": f"disqualified: {reason}"})
    return ScoreCard(
        fit_score=round(fit_points, 2),
        fit_grade=grade_for(fit_points, rules),
        engagement_score=eng_points,
        explanation=explanation,
        intent_flags=flags,
    )


def signals_for(event: AppliedEvent, traits: Mapping[str, Any], email: str | None, rules: Rules) -> list[str]:
    """The engagement rules an event triggers."""
    subject = Subject(traits=traits, email=email, event=event)
    return [r.id for r in rules.engagement.rules if matches(r.when, subject)]


_RANGE = re.compile(r"^\s*(\d[\d,\.]*)\s*(?:-|–|to)\s*(\d[\d,\.]*)\s*$")
_PLUS = re.compile(r"^\s*(\d[\d,\.]*)\s*\+\s*$")


def coerce_trait(name: str, value: Any) -> Any:
    """Forms send "51-200" or "1,000+" for company size: keep numbers numeric."""
    if name != "company_size" or not isinstance(value, str):
        return value
    text = value.strip()
    if m := _RANGE.match(text):
        return int(float(m.group(1).replace(",", "")))
    if m := _PLUS.match(text):
        return int(float(m.group(1).replace(",", "")))
    number = _number(text)
    return int(number) if number is not None else value
