"""What changed between two rules versions, in sentences a marketer reads:
"demo_request points 50 → 65", "lifecycle.mql: engagement ≥ 40 and fit grade ≥ C → score ≥ 30".

Published versions carry these lines in their history, `rules diff` prints them, and
`calibrate` lists them with its evidence.
"""

from __future__ import annotations

from typing import Any

from leadflow.domain.rules import Criterion, Rules, band_text


def criterion_text(c: Criterion) -> str:
    if c.all is not None:
        return " and ".join(_grouped(x, "any") for x in c.all)
    if c.any is not None:
        return " or ".join(_grouped(x, "all") for x in c.any)
    if c.fit_grade is not None:
        return f"fit grade {c.fit_grade} or better"
    if c.hand_raise_within_days is not None:
        return f"a hand raise within {c.hand_raise_within_days:g} days"
    return f"{c.metric} {band_text(c)}"


def _grouped(c: Criterion, inner: str) -> str:
    text = criterion_text(c)
    return f"({text})" if getattr(c, inner) is not None else text


def _num(value: Any) -> str:
    return f"{value:g}" if isinstance(value, (int, float)) else str(value)


def _fields(old: Any, new: Any, names: tuple[str, ...]) -> list[str]:
    out = []
    for name in names:
        a, b = getattr(old, name), getattr(new, name)
        if a != b:
            label = name.replace("_days", " days").replace("_", " ")
            out.append(f"{label} {_num(a) if a is not None else 'none'} → {_num(b) if b is not None else 'none'}")
    return out


def _by_id(kind: str, old: list, new: list, names: tuple[str, ...], shape: tuple[str, ...]) -> list[str]:
    """Added, removed and changed entries of a list of rules with ids."""
    before = {r.id: r for r in old}
    after = {r.id: r for r in new}
    lines = []
    for rid, rule in after.items():
        if rid not in before:
            points = getattr(rule, "points", None)
            lines.append(f"new {kind} {rid}" + (f" ({points:+g})" if points is not None else ""))
            continue
        was = before[rid]
        changed = _fields(was, rule, names)
        if any(getattr(was, n) != getattr(rule, n) for n in shape):
            changed.append("condition changed")
        if changed:
            lines.append(f"{rid} " + ", ".join(changed))
    lines.extend(f"{kind} {rid} removed" for rid in before if rid not in after)
    return lines


def changes(old: Rules, new: Rules) -> list[str]:
    """Every difference that can change a score or a stage, one line each, then one line
    per other section that changed."""
    lines: list[str] = []
    if old.fit.grades != new.fit.grades:
        was = ", ".join(f"{g} {old.fit.grades.get(g)}" for g in ("A", "B", "C"))
        now = ", ".join(f"{g} {new.fit.grades.get(g)}" for g in ("A", "B", "C"))
        lines.append(f"fit grades {was} → {now}")
    lines += _by_id("fit rule", old.fit.rules, new.fit.rules, ("points", "group"), ("when",))
    lines += _by_id("engagement rule", old.engagement.rules, new.engagement.rules,
                    ("points", "per", "cap", "half_life_days", "max_age_days", "group"),
                    ("when", "aggregate", "value_of", "gte", "lte", "gt", "lt", "between", "conversion", "hand_raise"))
    lines += _by_id("repeat rule", old.engagement.repeats, new.engagement.repeats,
                    ("points", "min_count", "within_days"), ("of",))
    lines += _by_id("aggregate", old.engagement.aggregates, new.engagement.aggregates,
                    ("window_days", "half_life_days"), ("of", "fn", "property"))
    if old.engagement.groups != new.engagement.groups:
        lines.append("engagement groups changed")
    lines += _by_id("intent rule", old.intent_validation, new.intent_validation, ("reason",), ("when",))
    for stage in ("mql", "sql"):
        a = criterion_text(getattr(old.lifecycle, stage).criterion)
        b = criterion_text(getattr(new.lifecycle, stage).criterion)
        if a != b:
            lines.append(f"lifecycle.{stage}: {a} → {b}")
    lines += _by_id("instant trigger", old.lifecycle.instant, new.lifecycle.instant,
                    ("to", "max_age_days", "require_bant", "min_fit_grade"), ("when",))
    for section in ("bant", "evangelist_when"):
        if getattr(old.lifecycle, section) != getattr(new.lifecycle, section):
            lines.append(f"lifecycle.{section} changed")
    for section in ("events", "traits", "forms", "limits", "handoff", "routing", "sla", "webhooks"):
        if getattr(old, section) != getattr(new, section):
            lines.append(f"{section} changed")
    return lines
