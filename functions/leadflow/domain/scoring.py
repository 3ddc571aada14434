"""Pure, deterministic scoring: fit from traits, engagement from decayed signals.

Every number carries its explanation: which rule gave how many points, after decay,
and the values it matched ("job title VP Marketing", "time on site 812 s over 30
days"). Sums use math.fsum, which is exactly rounded and so independent of order: the
same signals give the same score whatever order they arrived in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any, Mapping

from leadflow.domain.events import AppliedEvent, email_domain
from leadflow.domain.rules import GRADES, Aggregate, Condition, EngagementRule, Rules, band_text, in_band

DAY = 86400.0


@dataclass(frozen=True)
class Subject:
    """What a condition can look at: the lead's traits and email, and maybe one event.
    `types` says which traits are numbers or countries, so they compare as such."""

    traits: Mapping[str, Any]
    email: str | None = None
    event: AppliedEvent | None = None
    types: Mapping[str, str] = field(default_factory=dict)


def _norm(value: Any) -> Any:
    if isinstance(value, str):
        return value.strip().lower()
    return value


def number(value: Any) -> float | None:
    """A finite number, from a number or numeric text ("1,200"); None for anything else,
    NaN and infinities included (so they fail every numeric test)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        out = float(value)
    else:
        try:
            out = float(str(value).replace(",", "").strip())
        except (ValueError, OverflowError):
            return None
    return out if math.isfinite(out) else None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@lru_cache(maxsize=4096)
def _country(value: str) -> str:
    from leadflow.domain.countries import country_code

    return country_code(value) or value.strip().lower()


def _key(value: Any, kind: str | None) -> Any:
    """What equality compares: numbers as numbers, countries as codes, text without case."""
    if _is_number(value):
        return float(value)
    if isinstance(value, bool):
        return str(value).lower()
    if kind == "country":
        return _country(str(value))
    return str(_norm(value)).lower()


def _expected_key(expected: Any, value: Any, kind: str | None) -> Any:
    if _is_number(expected):
        # `equals: 2` matches 2, 2.0 and "2": a number in the rules compares as a number.
        return float(expected)
    return _key(expected, kind)


def _value_key(value: Any, expected: Any, kind: str | None) -> Any:
    if _is_number(expected):
        n = number(value)
        return n if n is not None else _key(value, kind)
    return _key(value, kind)


def _label(cond: Condition) -> str:
    if cond.trait:
        return cond.trait.replace("_", " ")
    if cond.property:
        return cond.property.replace("_", " ")
    return "email domain"


def matches(cond: Condition, subject: Subject, found: list[tuple[str, Any]] | None = None) -> bool:
    """Whether the condition holds. `found` collects (what, value) of every test that held,
    for the explanation."""
    if cond.event is not None and (subject.event is None or subject.event.type != cond.event):
        return False
    if cond.all is not None and not all(matches(c, subject, found) for c in cond.all):
        return False
    if cond.any is not None and not _any(cond.any, subject, found):
        return False
    kind = None
    if cond.trait:
        value = subject.traits.get(cond.trait)
        kind = subject.types.get(cond.trait)
    elif cond.property:
        if subject.event is None:
            return False
        value = subject.event.properties.get(cond.property)
    elif cond.email_domain:
        value = email_domain(subject.email)
    else:
        return True
    ok = _test(cond, value, kind)
    if ok and found is not None and value is not None and value != "":
        found.append((_label(cond), value))
    return ok


def _any(conds: list[Condition], subject: Subject, found: list[tuple[str, Any]] | None) -> bool:
    """The first branch that holds; only its values go into the explanation."""
    for cond in conds:
        branch: list[tuple[str, Any]] | None = [] if found is not None else None
        if matches(cond, subject, branch):
            if found is not None and branch:
                found.extend(branch)
            return True
    return False


def _test(cond: Condition, value: Any, kind: str | None = None) -> bool:
    present = value is not None and value != "" and not (isinstance(value, float) and not math.isfinite(value))
    if cond.exists is not None and present != cond.exists:
        return False
    if not present:
        # Absent values fail every positive test; `not_in` alone does not make absence a match.
        return cond.exists is False and len(cond.operators()) == 1
    if cond.equals is not None and _value_key(value, cond.equals, kind) != _expected_key(cond.equals, value, kind):
        return False
    if cond.in_ is not None and not any(_value_key(value, v, kind) == _expected_key(v, value, kind) for v in cond.in_):
        return False
    if cond.not_in is not None and any(_value_key(value, v, kind) == _expected_key(v, value, kind) for v in cond.not_in):
        return False
    text = str(_norm(value)) if not isinstance(value, bool) else str(value).lower()
    if cond.contains_any is not None and not any(s.lower() in text for s in cond.contains_any):
        return False
    if cond.words_any is not None and not cond._word_re.search(text):  # type: ignore[union-attr]
        return False
    if cond.suffix_any is not None and not any(text.endswith(s.lower()) for s in cond.suffix_any):
        return False
    if cond.matches is not None and not cond._regex_c.search(text):  # type: ignore[union-attr]
        return False
    if any(getattr(cond, n) is not None for n in ("gte", "lte", "gt", "lt", "between")):
        n = number(value)
        if n is None or not in_band(cond, n):
            return False
    return True


def fmt(value: Any) -> str:
    if _is_number(value):
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:g}" if float(value).is_integer() else f"{value:.2f}".rstrip("0")
    return str(value)


def _sentence(label: str, found: list[tuple[str, Any]]) -> tuple[str, dict[str, Any]]:
    values: dict[str, Any] = {}
    for what, value in found:
        values.setdefault(what, value)
    if not values:
        return label, {}
    return f"{label}: " + ", ".join(f"{what} {fmt(v)}" for what, v in values.items()), values


@dataclass
class ScoreCard:
    fit_score: float
    fit_grade: str
    engagement_score: float
    explanation: list[dict[str, Any]] = field(default_factory=list)
    intent_flags: dict[str, str] = field(default_factory=dict)
    # Each aggregate's value now (None: no event in its window to take a min/max/avg of).
    aggregates: dict[str, float | None] = field(default_factory=dict)

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


def subject_for(traits: Mapping[str, Any], email: str | None, rules: Rules, event: AppliedEvent | None = None) -> Subject:
    return Subject(traits=traits, email=email, event=event, types=rules.trait_types)


def _line(rule_id: str, axis: str, points: float, label: str, description: str, found: list[tuple[str, Any]],
          **extra: Any) -> dict[str, Any]:
    detail, values = _sentence(label, found)
    line = {"rule": rule_id, "axis": axis, "points": points, "detail": detail, "description": description}
    if values:
        line["values"] = {k: v if isinstance(v, (int, float, bool)) else str(v) for k, v in values.items()}
    line.update(extra)
    return line


def fit(traits: Mapping[str, Any], email: str | None, rules: Rules) -> tuple[float, list[dict[str, Any]]]:
    subject = subject_for(traits, email, rules)
    best: dict[str, tuple[int, dict[str, Any]]] = {}
    lines: list[dict[str, Any]] = []
    for rule in rules.fit.rules:
        found: list[tuple[str, Any]] = []
        if not matches(rule.when, subject, found):
            continue
        line = _line(rule.id, "fit", rule.points, rule.description or rule.id.replace("_", " "), rule.description, found)
        if rule.group:
            held = best.get(rule.group)
            if held is None or rule.points > held[0]:
                best[rule.group] = (rule.points, line)
        else:
            lines.append(line)
    lines.extend(line for _, line in best.values())
    total = math.fsum(line["points"] for line in lines)
    return total, lines


def intent_flags(traits: Mapping[str, Any], email: str | None, rules: Rules) -> dict[str, str]:
    subject = subject_for(traits, email, rules)
    return {r.id: r.reason for r in rules.intent_validation if matches(r.when, subject)}


def _decay(age_s: float, half_life_days: float | None) -> float:
    return 0.5 ** (age_s / (half_life_days * DAY)) if half_life_days else 1.0


def aggregate_value(agg: Aggregate, signals: list, now_s: float) -> tuple[float | None, int]:
    """The aggregate over its window as of now, and how many events it saw. Events count
    by their decayed weight when the aggregate has a half-life (count, sum, avg)."""
    live = [(max(0.0, now_s - s.at), s.value) for s in signals if now_s - s.at <= agg.window_days * DAY]
    if not live:
        return (0.0 if agg.fn in ("count", "sum", "distinct") else None), 0
    weights = [_decay(age, agg.half_life_days) for age, _ in live]
    if agg.fn == "count":
        return math.fsum(weights), len(live)
    if agg.fn == "distinct":
        return float(len({str(v) for _, v in live})), len(live)
    values = [float(v) for _, v in live]
    if agg.fn == "sum":
        return math.fsum(w * v for w, v in zip(weights, values)), len(live)
    if agg.fn == "avg":
        return math.fsum(w * v for w, v in zip(weights, values)) / math.fsum(weights), len(live)
    return (min(values) if agg.fn == "min" else max(values)), len(live)


def _aggregate_text(agg: Aggregate, value: float, n: int) -> str:
    unit = f" {agg.unit}" if agg.unit else ""
    what = "events" if n != 1 else "event"
    text = f"{agg.label} {fmt(round(value, 2))}{unit} over {agg.window_days:g} days ({n} {what}"
    if agg.half_life_days:
        text += f", decayed with a {agg.half_life_days:g}-day half-life"
    return text + ")"


def _points(points: float) -> str:
    return f"{points:g} point" + ("" if abs(points) == 1 else "s")


def _capped(rule: EngagementRule, raw: float) -> tuple[float, bool]:
    if rule.cap is not None and abs(raw) > rule.cap:
        return math.copysign(rule.cap, raw), True
    return raw, False


def _event_line(rule: EngagementRule, signals: list, now_s: float) -> dict[str, Any] | None:
    parts = []
    units = 0.0
    for s in signals:
        age = max(0.0, now_s - s.at)
        if age > rule.max_age_days * DAY:
            continue
        points = rule.points
        if rule.per is not None:
            n = math.floor(float(s.value or 0) / rule.per)
            units += n
            points *= n
        parts.append(points * _decay(age, rule.half_life_days))
    if not parts:
        return None
    value, capped = _capped(rule, math.fsum(parts))
    value = round(value, 2)
    if value == 0:
        return None
    newest_days = round((now_s - max(s.at for s in signals)) / DAY, 1)
    detail = f"{len(parts)}x {rule.label}, newest {newest_days:g}d ago"
    if rule.per is not None:
        detail += f", {_points(rule.points)} per {rule.per:g} {rule.value_of.replace('_', ' ')} ({units:g} units)"  # type: ignore[union-attr]
    if rule.half_life_days:
        detail += f", half-life {rule.half_life_days:g}d"
    if capped:
        detail += f", capped at {rule.cap:g}"
    return {"rule": rule.id, "axis": "engagement", "points": value, "count": len(parts), "detail": detail,
            "description": rule.description}


def _aggregate_line(rule: EngagementRule, agg: Aggregate, value: float | None, n: int) -> dict[str, Any] | None:
    if value is None or not in_band(rule, value):
        return None
    detail = _aggregate_text(agg, value, n)
    if rule.per is not None:
        units = math.floor(value / rule.per)
        raw = rule.points * units
        detail += f": {_points(rule.points)} per {rule.per:g}{' ' + agg.unit if agg.unit else ''}"
    else:
        raw = rule.points
        detail += f", {band_text(rule)}"
    points, capped = _capped(rule, raw)
    points = round(points, 2)
    if points == 0:
        return None
    if capped:
        detail += f", capped at {rule.cap:g}"
    label = rule.description or rule.id.replace("_", " ")
    return {"rule": rule.id, "axis": "engagement", "points": points, "count": n, "detail": f"{label}: {detail}",
            "description": rule.description, "values": {agg.id: round(value, 2)}}


def _grouped(lines: list[dict[str, Any]], rules: Rules) -> list[dict[str, Any]]:
    """Rules in one group do not double-count: `best` keeps the strongest, `sum` adds
    them up to the group's cap (the excess shows as its own line, so points add up)."""
    by_group: dict[str, list[dict[str, Any]]] = {}
    out: list[dict[str, Any]] = []
    for line in lines:
        group = rules.engagement_by_id[line["rule"]].group if line["rule"] in rules.engagement_by_id else None
        if group:
            by_group.setdefault(group, []).append(line)
        else:
            out.append(line)
    for name, members in by_group.items():
        spec = rules.engagement.groups.get(name)
        if spec is None or spec.mode == "best":
            out.append(max(members, key=lambda l: (abs(l["points"]), l["rule"])))
            continue
        out.extend(members)
        total = math.fsum(l["points"] for l in members)
        if spec.cap is not None and abs(total) > spec.cap:
            excess = round(math.copysign(spec.cap, total) - total, 2)
            out.append({"rule": name, "axis": "engagement", "points": excess, "description": "",
                        "detail": f"group {name.replace('_', ' ')} capped at {spec.cap:g} points"})
    return out


def engagement(signals, now: datetime, rules: Rules, reset_at: int | None = None
               ) -> tuple[float, list[dict[str, Any]], dict[str, float | None]]:
    """Decayed points per rule, and each aggregate's value. A signal counts
    `points * 0.5 ** (age / half_life)`, nothing once older than the rule's max_age_days,
    and a rule never gives more than its cap (in either direction)."""
    now_s = now.timestamp()
    by_rule: dict[str, list] = {}
    for s in signals:
        if reset_at is not None and s.at <= reset_at:
            continue
        by_rule.setdefault(s.rule, []).append(s)
    aggregates: dict[str, float | None] = {}
    counts: dict[str, int] = {}
    for agg in rules.engagement.aggregates:
        aggregates[agg.id], counts[agg.id] = aggregate_value(agg, by_rule.get(agg.id, []), now_s)
    lines: list[dict[str, Any]] = []
    for rule in rules.engagement.rules:
        if rule.aggregate is not None:
            line = _aggregate_line(rule, rules.aggregate_by_id[rule.aggregate], aggregates[rule.aggregate],
                                   counts[rule.aggregate])
        elif by_rule.get(rule.id):
            line = _event_line(rule, by_rule[rule.id], now_s)
        else:
            line = None
        if line is not None:
            lines.append(line)
    lines = _grouped(lines, rules)
    for rep in rules.engagement.repeats:
        window = now_s - rep.within_days * DAY
        count = sum(1 for s in by_rule.get(rep.of, ()) if window <= s.at <= now_s)
        if count >= rep.min_count:
            lines.append({"rule": rep.id, "axis": "engagement", "points": rep.points, "count": count,
                          "detail": f"{rep.description or rep.id} ({count} in {rep.within_days:g}d)",
                          "description": rep.description})
    return round(math.fsum(l["points"] for l in lines), 2), lines, aggregates


def score(*, traits: Mapping[str, Any], email: str | None, signals, now: datetime, rules: Rules,
          reset_at: int | None = None) -> ScoreCard:
    fit_points, fit_lines = fit(traits, email, rules)
    eng_points, eng_lines, aggregates = engagement(signals, now, rules, reset_at)
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
        aggregates=aggregates,
    )


def signals_for(event: AppliedEvent, traits: Mapping[str, Any], email: str | None, rules: Rules
                ) -> list[tuple[str, float | str | None]]:
    """What an event gives: (engagement rule or aggregate id, the value it carries)."""
    subject = subject_for(traits, email, rules, event)
    out: list[tuple[str, float | str | None]] = []
    for rule in rules.engagement.rules:
        if rule.when is None or not matches(rule.when, subject):
            continue
        if rule.value_of is None:
            out.append((rule.id, None))
        elif (n := number(event.properties.get(rule.value_of))) is not None:
            out.append((rule.id, n))
    for agg in rules.engagement.aggregates:
        if not matches(agg.of, subject):
            continue
        if agg.fn == "count":
            out.append((agg.id, None))
            continue
        raw = event.properties.get(agg.property)  # type: ignore[arg-type]
        if agg.fn == "distinct":
            if raw is not None and raw != "":
                out.append((agg.id, str(_norm(raw))[:200]))
        elif (n := number(raw)) is not None:
            out.append((agg.id, n))
    return out
