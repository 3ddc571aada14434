"""`leadflow rules diff NEW.yaml`: what publishing a rules version would do to the leads on
record, before it does it.

Every stored lead is brought to the rules in force and to the new rules as of now, by
`refresh`, the function the publish run itself applies (signals re-derived from the event
log only when the new rules derive them differently). Nothing is written. The moves the
new rules would make are exactly those a publish records (a lead's own new behaviour in
between aside); automatic moves only go forward, so a stricter version moves nobody back:
leads now below their stage's new criteria are counted instead.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone
from typing import Any, Iterable

from leadflow.domain.engine import refresh, score_lead
from leadflow.domain.lead import Lead, stage_rank
from leadflow.domain.lifecycle import meets
from leadflow.domain.rules import GRADES, Rules
from leadflow.domain.rules_changes import changes
from leadflow_infra.evidence import History

MAX_PAIRS = 5_000


def _meets(lead: Lead, stage: str, rules: Rules, now: datetime) -> bool:
    card = score_lead(lead, rules, now)
    reset = lead.engagement_reset_at
    hand = [s.at for s in lead.signals if s.rule in rules.hand_raise_rules and (reset is None or s.at > reset)]
    return not lead.disqualified and meets(getattr(rules.lifecycle, stage).criterion, card, hand, now.timestamp())


def _points(lead: Lead) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in lead.explanation:
        out[line["rule"]] = out.get(line["rule"], 0) + line["points"]
    return out


def _label(lead: Lead) -> str:
    company = lead.traits.get("company")
    return str(company)[:80] if company else lead.lead_id


def diff(histories: Iterable[History], current: Rules, new: Rules, *, now: datetime | None = None,
         announce: bool = False, examples: int = 10) -> dict[str, Any]:
    now = now or datetime.now(timezone.utc)
    moves: Counter = Counter()
    score = Counter()
    grade = Counter()
    stages_before: Counter = Counter()
    stages_after: Counter = Counter()
    below: Counter = Counter()
    moved = alerts = leads = 0
    pairs: list[list[float]] = []
    shown: list[dict[str, Any]] = []
    moved_ids: list[str] = []
    for history in histories:
        lead = history.lead
        leads += 1
        before = refresh(lead, current, now, history.events).lead
        outcome = refresh(lead, new, now, history.events)
        after = outcome.lead
        stages_before[before.stage] += 1
        stages_after[after.stage] += 1
        score["up" if after.score > before.score else "down" if after.score < before.score else "same"] += 1
        g0, g1 = GRADES.index(before.fit_grade), GRADES.index(after.fit_grade)
        grade["up" if g1 > g0 else "down" if g1 < g0 else "same"] += 1
        if len(pairs) < MAX_PAIRS:
            pairs.append([before.score, after.score])
        for stage in ("mql", "sql"):
            if after.stage == stage and not _meets(after, stage, new, now):
                below[stage] += 1
        if outcome.moves:
            moved += 1
            moved_ids.append(lead.lead_id)
            for move in outcome.moves:
                moves[f"{move.from_stage or 'new'}→{move.to_stage}"] += 1
                if (move.to_stage in new.handoff.alert_stages and stage_rank(move.to_stage) > stage_rank(move.from_stage)
                        and not after.disqualified):
                    alerts += 1
            if len(shown) < examples:
                p0, p1 = _points(before), _points(after)
                rules = sorted(({"rule": r, "before": p0.get(r, 0), "after": p1.get(r, 0)} for r in set(p0) | set(p1)
                                if p0.get(r, 0) != p1.get(r, 0)), key=lambda x: -abs(x["after"] - x["before"]))[:5]
                shown.append({"lead_id": lead.lead_id, "label": _label(lead), "from": before.stage,
                              "to": outcome.moves[-1].to_stage, "score_before": before.score,
                              "score_after": after.score, "rules": rules})

    def volume(stage: str) -> dict[str, int]:
        return {"before": stages_before[stage], "after": stages_after[stage]}

    return {
        "title": f"Rules {current.version} → {new.version}",
        "current": {"version": current.version}, "proposed": {"version": new.version},
        "as_of": now.isoformat(), "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "leads": leads,
        "rule_changes": changes(current, new),
        "moves": dict(moves.most_common()),
        "moved_leads": moved,
        "moved_ids": moved_ids,
        "score": {k: score[k] for k in ("up", "down", "same")},
        "grade": {k: grade[k] for k in ("up", "down", "same")},
        "volume": {"mql": volume("mql"), "sql": volume("sql")},
        "below_criteria": {"mql": below["mql"], "sql": below["sql"]},
        "alerts": {"announce": announce, "alerts": alerts, "summary": 1 if alerts and not announce else 0},
        "examples": shown,
        "score_pairs": pairs,
    }


def print_diff(result: dict[str, Any], console: Any) -> None:
    from rich.table import Table

    console.print(f"[bold]{result['title']}[/bold]: {result['leads']:,} leads replayed as of {result['as_of'][:19]}")
    if result["rule_changes"]:
        console.print("What changes in the rules:")
        for line in result["rule_changes"]:
            console.print(f"  • {line}", markup=False, highlight=False)
    else:
        console.print("No rule changes that affect scores or stages.")
    moved = result["moved_leads"]
    console.print(f"[bold]{moved:,}[/bold] lead{'s' if moved != 1 else ''} would move forward"
                  + (": " + ", ".join(f"{n:,} {pair}" for pair, n in result["moves"].items()) if moved else "."))
    s, g = result["score"], result["grade"]
    console.print(f"scores: {s['up']:,} up, {s['down']:,} down, {s['same']:,} unchanged; "
                  f"fit grades: {g['up']:,} up, {g['down']:,} down")
    table = Table(title="Leads in each stage")
    for name in ("stage", "now", "after publish", "below the new criteria (they stay)"):
        table.add_column(name, justify="right")
    for stage in ("mql", "sql"):
        v = result["volume"][stage]
        table.add_row(stage.upper(), f"{v['before']:,}", f"{v['after']:,}", f"{result['below_criteria'][stage]:,}")
    console.print(table)
    a = result["alerts"]
    if a["announce"]:
        console.print(f"alerts: {a['alerts']:,} (one per lead into MQL or SQL, as published with --announce)")
    else:
        console.print(f"alerts: none one by one; one summary message for the {a['alerts']:,} leads "
                      "(publish with --announce to alert for each)")
    if result["examples"]:
        table = Table(title="Examples")
        for name in ("lead", "move", "score", "rules responsible"):
            table.add_column(name)
        for ex in result["examples"]:
            rules = ", ".join(f"{r['rule']} {r['before']:g}→{r['after']:g}" for r in ex["rules"]) or "—"
            table.add_row(ex["label"], f"{ex['from']} → {ex['to']}", f"{ex['score_before']:g} → {ex['score_after']:g}",
                          rules)
        console.print(table)
