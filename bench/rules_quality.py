"""How well a rules file ranks real leads, out of sample, next to logistic regression.

The X Education export (9,240 leads with outcomes) is turned into events and traits by
the example import mapping, exactly as `leadflow import` sends them, and each lead is
scored by the lead engine (the pure domain, no table) under the example rules.

Five stratified folds, the same for both models:
- **rules, points refitted**: the rules file's structure (which rules, bands, units,
  aggregates, groups) is kept; its points are chosen on four folds (a logistic
  regression on each rule's match, then scaled and rounded to whole points) and written
  into a copy of the rules, which the engine then uses to score the fifth fold.
- **logistic regression**: on the export's columns themselves (categories one-hot,
  numbers standardised, blanks flagged), the columns sales fills in after contact left
  out (Tags, Lead Quality, Lead Profile, Last Notable Activity, Asymmetrique scores).
Each figure is the ROC AUC over all held-out scores, and the mean and spread of the
per-fold AUCs. The rules file as shipped is also scored (its points were fitted on all
rows: an in-sample figure, shown for reference only).

    python -m bench.rules_quality [--data PATH] [--folds 5] [--markdown]

Needs the `learn` extra (scikit-learn): `pip install -e '.[learn]'`.
"""

from __future__ import annotations

import argparse
import copy
import csv
import math
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "functions"), str(ROOT)]

DATA = ROOT.parent / "shared" / "data" / "leads-x-education.csv"
EXAMPLE = ROOT / "examples" / "x-education"
LEAKS = {"Tags", "Lead Quality", "Lead Profile", "Last Notable Activity", "Asymmetrique Activity Index",
         "Asymmetrique Profile Index", "Asymmetrique Activity Score", "Asymmetrique Profile Score"}
IDS = {"Prospect ID", "Lead Number", "Converted"}
NUMERIC = ("TotalVisits", "Total Time Spent on Website", "Page Views Per Visit")
SCALE = 30  # the strongest refitted rule is worth this many points


def load_rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as fh:
        return list(csv.DictReader(fh))


def leads_from_export(rows: list[dict[str, str]], rules: Any, mapping_path: Path) -> list[Any]:
    """Each row through the import mapping, then through the engine, as an import does."""
    from leadflow.domain.conform import conform
    from leadflow.domain.engine import apply_import, new_lead
    from leadflow.domain.events import finalise, parse_event
    from leadflow.domain.lead import lead_id_for_email
    from leadflow_infra.mapping import RowMapper, load_mapping

    header = list(rows[0])
    mapper = RowMapper(load_mapping(mapping_path), header, source=str(mapping_path))
    now = datetime.now(timezone.utc)
    leads = []
    for number, row in enumerate(rows, start=2):
        payload = mapper.map_row(number, [row[c] for c in header], now=now)
        events = [finalise(conform(parse_event(e), rules), now=now, source="import") for e in payload["events"]]
        lead = new_lead(lead_id_for_email(events[0].email), email=events[0].email, now=events[0].occurred_at)
        # The outcome is what we predict: it is not given to the engine.
        leads.append(apply_import(lead, events, key=payload["key"], stage=None, stage_at=None, outcome=None,
                                  owner=None, rules=rules, now=now).lead)
    return leads


# -- the rules' own features -------------------------------------------------------------


def rule_features(lead: Any, rules: Any, now: datetime) -> dict[str, float]:
    """What each rule sees in a lead, before points: 1/0 for a fit rule or a band, the
    decayed count of matching events, the whole units of a per-unit rule (up to its cap)."""
    from leadflow.domain.engine import score_lead
    from leadflow.domain.rules import in_band
    from leadflow.domain.scoring import DAY, matches, subject_for

    out: dict[str, float] = {}
    subject = subject_for(lead.traits, lead.email, rules)
    for rule in rules.fit.rules:
        out[rule.id] = 1.0 if matches(rule.when, subject) else 0.0
    aggregates = score_lead(lead, rules, now).aggregates
    now_s = now.timestamp()
    for rule in rules.engagement.rules:
        cap_units = rule.cap / abs(rule.points) if rule.cap and rule.points else math.inf
        if rule.aggregate is not None:
            value = aggregates.get(rule.aggregate)
            if value is None or not in_band(rule, value):
                out[rule.id] = 0.0
            elif rule.per is not None:
                out[rule.id] = min(math.floor(value / rule.per), cap_units)
            else:
                out[rule.id] = 1.0
            continue
        units = 0.0
        for s in lead.signals:
            age = now_s - s.at
            if s.rule != rule.id or age > rule.max_age_days * DAY:
                continue
            weight = 0.5 ** (age / (rule.half_life_days * DAY)) if rule.half_life_days else 1.0
            units += weight * (math.floor(float(s.value or 0) / rule.per) if rule.per else 1.0)
        out[rule.id] = min(units, cap_units)
    return out


def with_points(data: dict, points: dict[str, int]) -> dict:
    """A copy of the rules with new whole points; per-unit caps keep their number of units."""
    data = copy.deepcopy(data)
    for section in (data["fit"]["rules"], data["engagement"]["rules"]):
        for rule in section:
            new = points[rule["id"]]
            if rule.get("cap") and rule.get("points"):
                units = rule["cap"] / abs(rule["points"])
                rule["cap"] = max(1, abs(new) * units) if new else 1
            rule["points"] = new
    return data


def fitted_points(x, y, names: list[str]) -> dict[str, int]:
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=1.0, max_iter=2000).fit(x, y)
    coef = model.coef_[0]
    top = max(abs(c) for c in coef) or 1.0
    return {name: int(round(c * SCALE / top)) for name, c in zip(names, coef)}


# -- the baseline ------------------------------------------------------------------------


def column_matrix(rows: list[dict[str, str]]):
    """The export's columns for logistic regression: categories one-hot (blank and
    "Select" as their own level), numbers standardised with a blank flag."""
    import numpy as np

    columns = [c for c in rows[0] if c not in LEAKS | IDS]
    blocks, names = [], []
    for col in columns:
        if col in NUMERIC:
            raw = [r[col].strip() for r in rows]
            values = np.array([float(v) if v else 0.0 for v in raw])
            values = (values - values.mean()) / (values.std() or 1.0)
            blocks.append(values[:, None])
            blocks.append(np.array([[1.0 if not v else 0.0] for v in raw]))
            names += [col, col + " blank"]
        else:
            levels = sorted({r[col].strip() for r in rows})
            index = {level: i for i, level in enumerate(levels)}
            onehot = np.zeros((len(rows), len(levels)))
            for i, r in enumerate(rows):
                onehot[i, index[r[col].strip()]] = 1.0
            blocks.append(onehot)
            names += [f"{col}={level}" for level in levels]
    return np.hstack(blocks), names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--rules", type=Path, default=EXAMPLE / "rules.yaml")
    parser.add_argument("--mapping", type=Path, default=EXAMPLE / "mapping.yaml")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args(argv)

    import numpy as np
    import yaml
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold

    from leadflow.domain.rules import parse_rules

    if not args.data.exists():
        print(f"no data at {args.data}", file=sys.stderr)
        return 2
    rows = load_rows(args.data)
    y = np.array([int(r["Converted"]) for r in rows])
    data = yaml.safe_load(args.rules.read_text(encoding="utf-8"))
    shipped = parse_rules(data, source=str(args.rules))
    started = time.perf_counter()
    now = datetime.now(timezone.utc)
    leads = leads_from_export(rows, shipped, args.mapping)
    engine_s = time.perf_counter() - started
    names = [r.id for r in shipped.fit.rules] + [r.id for r in shipped.engagement.rules]
    feats = np.array([[f[n] for n in names] for f in (rule_features(lead, shipped, now) for lead in leads)])
    shipped_scores = np.array([lead.score for lead in leads])
    x_cols, _ = column_matrix(rows)

    folds = list(StratifiedKFold(n_splits=args.folds, shuffle=True, random_state=args.seed).split(x_cols, y))
    rules_scores = np.zeros(len(rows))
    lr_scores = np.zeros(len(rows))
    per_fold: dict[str, list[float]] = {"rules": [], "lr": []}
    examples = []
    for train, test in folds:
        points = fitted_points(feats[train], y[train], names)
        examples.append(points)
        refit = parse_rules(with_points(data, points), source="refit")
        held = [leads[i] for i in test]
        from leadflow.domain.engine import rescore

        rules_scores[test] = [rescore(lead, refit, now).lead.score for lead in held]
        model = LogisticRegression(C=1.0, max_iter=3000).fit(x_cols[train], y[train])
        lr_scores[test] = model.decision_function(x_cols[test])
        per_fold["rules"].append(roc_auc_score(y[test], rules_scores[test]))
        per_fold["lr"].append(roc_auc_score(y[test], lr_scores[test]))

    def row_of(label: str, scores, fold_aucs) -> tuple[str, str, str]:
        spread = f"{statistics.mean(fold_aucs):.3f} ± {statistics.stdev(fold_aucs):.3f}" if fold_aucs else "—"
        return label, f"{roc_auc_score(y, scores):.3f}", spread

    table = [
        row_of(f"Rules ({len(names)} rules), whole points refitted on 4 folds, engine-scored on the 5th",
               rules_scores, per_fold["rules"]),
        row_of(f"Logistic regression on the export's {x_cols.shape[1]} column levels, same folds", lr_scores,
               per_fold["lr"]),
        row_of("Rules file as shipped (points fitted on all rows: in sample)", shipped_scores, []),
    ]
    gap = roc_auc_score(y, lr_scores) - roc_auc_score(y, rules_scores)
    if args.markdown:
        print(f"| model ({len(rows):,} leads, {y.mean():.1%} converted, {args.folds}-fold CV) | AUC (pooled) | AUC per fold |")
        print("| --- | ---: | ---: |")
        for label, pooled, spread in table:
            print(f"| {label} | {pooled} | {spread} |")
        print(f"\nGap to logistic regression: {gap:+.3f}. Engine: {len(rows) / engine_s:,.0f} leads/s "
              f"(import and score, one process).")
    else:
        width = max(len(t[0]) for t in table)
        for label, pooled, spread in table:
            print(f"{label:<{width}}  {pooled}  {spread}")
        print(f"gap to logistic regression: {gap:+.3f}; engine {len(rows) / engine_s:,.0f} leads/s")
        print("points refitted per fold:")
        for name in names:
            print(f"  {name:<24} " + " ".join(f"{p[name]:>4}" for p in examples))
    return 0


if __name__ == "__main__":
    sys.exit(main())
