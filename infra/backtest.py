"""`leadflow backtest`: how a rules version would have ranked and qualified the leads on
record, judged by what became of them.

Each lead is rebuilt from its event log under the rules, as of `--as-of` (events after
it are ignored), by the same engine the functions run, without writing anything: its
score then, and when the rules alone would have made it an MQL and an SQL. The
outcomes (won, lost, customer, rejected with a reason, or an outcomes CSV) say which
leads converted. From these: ROC AUC of the score, precision, recall and volume at the
MQL and SQL criteria, conversion by score decile, and MQL/SQL volume per week.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable

from leadflow.domain.engine import replay_as_of
from leadflow.domain.lead import stage_rank
from leadflow.domain.rules import Rules
from leadflow_infra.evidence import History

MAX_SCORES = 20_000  # score lists kept for the distribution chart (an even sample beyond)


def auc(scores: list[float], converted: list[bool]) -> float | None:
    """ROC AUC (the probability that a converted lead outscores one that did not, ties
    counting half), by ranks: O(n log n). None without both outcomes."""
    pos = sum(converted)
    neg = len(converted) - pos
    if not pos or not neg:
        return None
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    rank_sum = 0.0
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        mid = (i + j) / 2 + 1  # the average 1-based rank of the tie group
        rank_sum += mid * sum(1 for k in range(i, j + 1) if converted[order[k]])
        i = j + 1
    return (rank_sum - pos * (pos + 1) / 2) / (pos * neg)


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _week(at: datetime) -> tuple[str, str]:
    year, week, _ = at.isocalendar()
    monday = (at - timedelta(days=at.weekday())).date()
    return f"{year}-W{week:02d}", monday.isoformat()


def _sample(values: list[float]) -> list[float]:
    if len(values) <= MAX_SCORES:
        return values
    step = len(values) / MAX_SCORES
    return [values[int(i * step)] for i in range(MAX_SCORES)]


def backtest(histories: Iterable[History], rules: Rules, *, as_of: datetime | None = None,
             outcomes_from: str = "records") -> dict[str, Any]:
    as_of = as_of or datetime.now(timezone.utc)
    scored: list[tuple[float, bool | None, str, str]] = []  # score, converted, furthest stage, lead id
    weeks: dict[tuple[str, str], Counter] = {}
    sources: Counter = Counter()
    reasons: Counter = Counter()
    unlogged = 0
    for history in histories:
        if not history.events:
            unlogged += 1  # its event log is not there (yet: the stream appends it a moment after each write)
            continue
        if not any(e.occurred_at <= as_of for e in history.events):
            continue  # not a lead yet at as_of
        lead, moves = replay_as_of(history.lead.lead_id, history.lead.email, history.events, rules, as_of)
        furthest = "subscriber"
        first: dict[str, datetime] = {}
        for move in moves:
            if stage_rank(move.to_stage) > stage_rank(furthest):
                furthest = move.to_stage
            for stage in ("mql", "sql"):
                if stage_rank(move.to_stage) >= stage_rank(stage) and stage not in first:
                    first[stage] = move.at
        for stage, at in first.items():
            weeks.setdefault(_week(at), Counter())[stage] += 1
        label = history.label
        if label is not None:
            sources[label.source] += 1
            if not label.converted and label.reason:
                reasons[label.reason] += 1
        scored.append((lead.score, None if label is None else label.converted, furthest, lead.lead_id))

    labelled = [s for s in scored if s[1] is not None]
    converted = sum(1 for s in labelled if s[1])
    criteria = {}
    for stage in ("mql", "sql"):
        reached = [s for s in scored if stage_rank(s[2]) >= stage_rank(stage)]
        reached_labelled = [s for s in reached if s[1] is not None]
        hits = sum(1 for s in reached_labelled if s[1])
        criteria[stage] = {
            "volume": len(reached), "share": _share(len(reached), len(scored)), "converted": hits,
            "labelled": len(reached_labelled),
            "precision": _share(hits, len(reached_labelled)), "recall": _share(hits, converted),
        }

    ranked = sorted(labelled, key=lambda s: -s[0])
    deciles = []
    n = len(ranked)
    if n >= 10:
        for d in range(10):
            part = ranked[d * n // 10:(d + 1) * n // 10]
            hits = sum(1 for s in part if s[1])
            deciles.append({"decile": 10 - d, "leads": len(part), "min_score": min(s[0] for s in part),
                            "max_score": max(s[0] for s in part), "converted": hits, "rate": _share(hits, len(part))})
    gain = [{"share": 0.0, "captured": 0.0}]
    if n and converted:
        running = 0
        marks = {max(1, round(n * k / 100)): k / 100 for k in range(1, 101)}
        for i, s in enumerate(ranked, start=1):
            running += bool(s[1])
            if i in marks:
                gain.append({"share": marks[i], "captured": running / converted})
    scores_by = {"converted": _sample(sorted(s[0] for s in labelled if s[1])),
                 "not_converted": _sample(sorted(s[0] for s in labelled if not s[1]))}
    return {
        "title": f"Backtest of rules {rules.version}",
        "rules_version": rules.version,
        "as_of": as_of.isoformat(),
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "outcomes_from": outcomes_from,
        "leads": len(scored), "without_events": unlogged, "labelled": len(labelled), "converted": converted,
        "not_converted": len(labelled) - converted, "unlabelled": len(scored) - len(labelled),
        "label_sources": dict(sources), "reject_reasons": dict(reasons.most_common()),
        "auc": auc([s[0] for s in labelled], [bool(s[1]) for s in labelled]),
        "criteria": criteria,
        "deciles": deciles,
        "weeks": [{"week": w, "start": start, "mql": c.get("mql", 0), "sql": c.get("sql", 0)}
                  for (w, start), c in sorted(weeks.items())],
        "scores": scores_by,
        "gain": gain,
    }


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.1%}"


def print_backtest(result: dict[str, Any], console: Any) -> None:
    from rich.table import Table

    console.print(f"[bold]{result['title']}[/bold] as of {result['as_of'][:19]}  "
                  f"({result['leads']:,} leads; outcomes from {result['outcomes_from']})")
    if result.get("without_events"):
        console.print(f"[yellow]{result['without_events']:,} leads have no event log yet and are left out (the "
                      "table's stream appends each lead's events a moment after its write; run again shortly)[/yellow]")
    console.print(f"outcomes: {result['converted']:,} converted, {result['not_converted']:,} not, "
                  f"{result['unlabelled']:,} open"
                  + (f"  ({', '.join(f'{k} {v:,}' for k, v in sorted(result['label_sources'].items()))})"
                     if result["label_sources"] else ""))
    value = result["auc"]
    console.print(f"ROC AUC of the score: [bold]{'—' if value is None else f'{value:.3f}'}[/bold] "
                  "(0.5 is chance, 1.0 ranks every converted lead first)")
    table = Table(title="At the stage criteria")
    for name in ("criteria", "leads", "share", "precision", "recall"):
        table.add_column(name, justify="left" if name == "criteria" else "right")
    for stage in ("mql", "sql"):
        c = result["criteria"][stage]
        table.add_row(stage.upper(), f"{c['volume']:,}", _pct(c["share"]), _pct(c["precision"]), _pct(c["recall"]))
    console.print(table)
    if result["deciles"]:
        table = Table(title="Conversion by score decile (10 = highest scores)")
        for name in ("decile", "scores", "leads", "converted", "rate"):
            table.add_column(name, justify="right")
        for d in result["deciles"]:
            table.add_row(str(d["decile"]), f"{d['min_score']:g}–{d['max_score']:g}", f"{d['leads']:,}",
                          f"{d['converted']:,}", _pct(d["rate"]))
        console.print(table)
    if result["weeks"]:
        table = Table(title="New MQLs and SQLs per week under these rules")
        for name in ("week", "from", "MQL", "SQL"):
            table.add_column(name, justify="right")
        for w in result["weeks"][-26:]:
            table.add_row(w["week"], w["start"], f"{w['mql']:,}", f"{w['sql']:,}")
        console.print(table)
    if result["reject_reasons"]:
        console.print("rejected or lost because: " + ", ".join(f"{k} {v}" for k, v in result["reject_reasons"].items()))
