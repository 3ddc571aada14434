"""How well rules files rank real leads, out of sample, before and after `leadflow calibrate`,
next to logistic regression and gradient boosting.

The X Education export (9,240 leads with outcomes) is turned into events, traits and
outcomes by the example import mapping, exactly as `leadflow import` sends them, and each
row goes through the lead engine's import (`apply_import`, the pure domain, no table):
the leads with their event logs and outcomes are what `leadflow calibrate` reads from a
table. `calibrate()` itself is then called on them (the shipped code, not a copy).

Five stratified folds, the same for every model (`calibrate.folds_for`):
- **default rules, as they are** (`functions/leadflow/rules/default.yaml`, no fitting);
- **example rules as shipped** (`examples/x-education/rules.yaml`): their points were
  fitted on all rows, so this is an in-sample figure, for reference only;
- **calibrated from the example rules / from the default rules**: `calibrate`'s points,
  learned on four folds and engine-scored on the fifth;
- **logistic regression / gradient boosting** on the export's columns themselves
  (categories one-hot, numbers standardised, blanks flagged), the columns sales fills in
  after contact left out (Tags, Lead Quality, Lead Profile, Last Notable Activity, the
  Asymmetrique scores).
Each figure is the ROC AUC over all held-out scores, and the mean and spread of the
per-fold AUCs. The proposed SQL and MQL criteria are shown with their cross-validated
precision (converted share), recall and share of leads.

Then the Maven CRM export (`../shared/data/maven-crm/`, imported with
`examples/b2b-saas/mapping.yaml`: opportunities joined to their accounts, products and
teams; closed deals are the outcomes): the fit grade's AUC before and after calibrating
the b2b-saas example rules.

    python -m bench.rules_quality [--data PATH] [--crm DIR] [--folds 5] [--seed 7] [--markdown]

Needs the `learn` extra (scikit-learn, ruamel.yaml): `pip install -e '.[learn]'`.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "functions"), str(ROOT)]

DATA = ROOT.parent / "shared" / "data" / "leads-x-education.csv"
CRM = ROOT.parent / "shared" / "data" / "maven-crm"
EXAMPLE = ROOT / "examples" / "x-education"
B2B = ROOT / "examples" / "b2b-saas"
DEFAULT_RULES = ROOT / "functions" / "leadflow" / "rules" / "default.yaml"
LEAKS = {"Tags", "Lead Quality", "Lead Profile", "Last Notable Activity", "Asymmetrique Activity Index",
         "Asymmetrique Profile Index", "Asymmetrique Activity Score", "Asymmetrique Profile Score"}
IDS = {"Prospect ID", "Lead Number", "Converted"}
NUMERIC = ("TotalVisits", "Total Time Spent on Website", "Page Views Per Visit")


def load_rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as fh:
        return list(csv.DictReader(fh))


def _when(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else value


def histories_from_export(path: Path, mapping_path: Path, rules: Any, *, now: datetime,
                          limit: int | None = None) -> list[Any]:
    """Each row through the import mapping and the engine's import, as `leadflow import`
    and the import endpoint do: the lead (its stage and won/lost outcome recorded by the
    import) with its event log, and the outcome on record as the table read gives it."""
    from leadflow.domain.conform import conform
    from leadflow.domain.engine import IMPORT_ACTOR, apply_import, new_lead
    from leadflow.domain.events import finalise, parse_event
    from bench import bench_lead_ids
    from leadflow.domain.lead import SalesOutcome
    from leadflow_infra.evidence import History, label_of
    from leadflow_infra.mapping import RowMapper, load_mapping

    with path.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        rows = [row for _, row in zip(range(limit) if limit else iter(int, 1), reader)]
    mapper = RowMapper(load_mapping(mapping_path), header, source=str(mapping_path), base_dir=path.parent)
    out = []
    for number, cells in enumerate(rows, start=2):
        payload = mapper.map_row(number, cells, now=now)
        events = [finalise(conform(parse_event(e), rules), now=now, source="import") for e in payload["events"]]
        raw = payload["outcome"]
        outcome = None if raw is None else SalesOutcome(
            result=raw["result"], at=_when(raw.get("at")) or max(e.occurred_at for e in events), reason=raw.get("reason"),
            by=IMPORT_ACTOR, value=raw.get("value"))
        email = events[0].email
        lead = new_lead(bench_lead_ids().for_email(email), email=email, now=min(e.occurred_at for e in events))
        lead = apply_import(lead, events, key=payload["key"], stage=payload["stage"], stage_at=_when(payload["stage_at"]),
                            outcome=outcome, owner=payload["owner"], rules=rules, now=now).lead
        out.append(History(lead, events, label_of(lead)))
    return out


# -- the baselines ------------------------------------------------------------------------


def column_matrix(rows: list[dict[str, str]]):
    """The export's columns for the baselines: categories one-hot (blank and "Select" as
    their own level), numbers standardised with a blank flag."""
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


def baseline_scores(x, y, folds, model_of) -> tuple[Any, list[float]]:
    import numpy as np
    from sklearn.metrics import roc_auc_score
    from threadpoolctl import threadpool_limits

    scores = np.zeros(len(y))
    per_fold = []
    for train, test in folds:
        # One thread: OpenMP's spinning threads make gradient boosting crawl on a busy machine.
        with threadpool_limits(limits=1):
            model = model_of().fit(x[train], y[train])
        scores[test] = model.predict_proba(x[test])[:, 1]
        per_fold.append(float(roc_auc_score(y[test], scores[test])))
    return scores, per_fold


def _spread(values: list[float]) -> str:
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}" if len(values) > 1 else "—"


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f} %"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--crm", type=Path, default=CRM, help="the Maven CRM export's directory")
    parser.add_argument("--rules", type=Path, default=EXAMPLE / "rules.yaml")
    parser.add_argument("--mapping", type=Path, default=EXAMPLE / "mapping.yaml")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--limit", type=int, default=None, help="only the first N rows of each export")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args(argv)

    import numpy as np
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    from leadflow.settings import load_rules
    from leadflow_infra.calibrate import calibrate, folds_for

    if not args.data.exists():
        print(f"no data at {args.data}", file=sys.stderr)
        return 2
    now = datetime.now(timezone.utc)
    example_text = args.rules.read_text(encoding="utf-8")
    example = load_rules(str(args.rules))

    started = time.perf_counter()
    histories = histories_from_export(args.data, args.mapping, example, now=now, limit=args.limit)
    import_s = time.perf_counter() - started
    started = time.perf_counter()
    cal = calibrate(histories, example_text, source=str(args.rules.relative_to(ROOT)), as_of=now, folds=args.folds,
                    seed=args.seed)
    calibrate_s = time.perf_counter() - started
    cal_default = calibrate(histories, DEFAULT_RULES.read_text(encoding="utf-8"),
                            source=str(DEFAULT_RULES.relative_to(ROOT)), as_of=now, folds=args.folds, seed=args.seed)

    # The export's rows in the order calibrate keeps the leads (by lead id): the same folds.
    row_of = {h.lead.lead_id: i for i, h in enumerate(histories)}
    every = load_rows(args.data)
    rows = [every[row_of[lead_id]] for lead_id in cal.lead_ids]
    y = np.array([int(r["Converted"]) for r in rows])
    if cal.y != y.tolist() or cal_default.y != y.tolist():
        print("the outcomes calibrate read differ from the export's Converted column", file=sys.stderr)
        return 1
    folds = folds_for(y, args.folds, args.seed)
    x_cols, _ = column_matrix(rows)
    lr_scores, lr_folds = baseline_scores(x_cols, y, folds, lambda: LogisticRegression(C=1.0, max_iter=3000))
    gb_scores, gb_folds = baseline_scores(
        x_cols, y, folds, lambda: HistGradientBoostingClassifier(random_state=args.seed))

    def auc(scores) -> str:
        return f"{roc_auc_score(y, scores):.3f}"

    table = [
        ("Default rules (`functions/leadflow/rules/default.yaml`), as they are", f"{cal_default.current_auc:.3f}",
         _spread(cal_default.current_fold_aucs)),
        ("Example rules as shipped (points fitted on all rows: in sample)", f"{cal.current_auc:.3f}", "—"),
        ("`calibrate` from the example rules: learned on 4 folds, engine-scored on the 5th", f"{cal.auc:.3f}",
         _spread(cal.fold_aucs)),
        ("`calibrate` from the default rules: learned on 4 folds, engine-scored on the 5th",
         f"{cal_default.auc:.3f}", _spread(cal_default.fold_aucs)),
        (f"Logistic regression on the export's {x_cols.shape[1]} column levels", auc(lr_scores), _spread(lr_folds)),
        ("Gradient boosting (HistGradientBoosting) on the same columns", auc(gb_scores), _spread(gb_folds)),
    ]
    gap = roc_auc_score(y, lr_scores) - cal.auc
    criteria = []
    for c, name in ((cal, "example"), (cal_default, "default")):
        for p in (c.sql, c.mql):
            cv, ins = p.cross_validated, p.in_sample
            criteria.append((f"{p.stage.upper()} from the {name} rules: score ≥ {p.gte}", _pct(cv.share),
                             _pct(cv.precision), _pct(cv.recall), f"{_pct(ins.share)} / {_pct(ins.precision)}",
                             p.note))

    crm = None
    crm_account_auc = (0.0, 0)
    if (args.crm / "sales_pipeline.csv").exists():
        b2b_text = (B2B / "rules.yaml").read_text(encoding="utf-8")
        b2b = load_rules(str(B2B / "rules.yaml"))
        crm_histories = histories_from_export(args.crm / "sales_pipeline.csv", B2B / "mapping.yaml", b2b, now=now,
                                              limit=args.limit)
        crm = calibrate(crm_histories, b2b_text, source=str((B2B / "rules.yaml").relative_to(ROOT)), as_of=now,
                        folds=args.folds, seed=args.seed)
        # The ceiling for any fit grade here: a model of the account itself, same folds.
        company = {h.lead.lead_id: h.lead.traits.get("company") or "" for h in crm_histories}
        accounts = [company[lead_id] for lead_id in crm.lead_ids]
        names = sorted(set(accounts))
        x_acc = np.array([[1.0 if a == name else 0.0 for name in names] for a in accounts])
        y_crm = np.array(crm.y)
        acc_scores, acc_folds = baseline_scores(x_acc, y_crm, folds_for(y_crm, args.folds, args.seed),
                                                lambda: LogisticRegression(C=1.0, max_iter=3000))
        crm_account_auc = (float(roc_auc_score(y_crm, acc_scores)), len(names))

    n = len(y)
    if args.markdown:
        print(f"X Education: {n:,} leads, {y.mean():.1%} converted, {args.folds}-fold stratified CV (seed {args.seed}), "
              "the same folds for every row.\n")
        print("| model | ROC AUC (pooled) | AUC per fold |")
        print("| --- | ---: | ---: |")
        for label, pooled, spread in table:
            print(f"| {label} | {pooled} | {spread} |")
        print(f"\nGap from logistic regression to the calibrated example rules: {gap:+.3f}. The fit grade alone "
              f"(A-D as an ordinal score): {cal.fit_grade_auc_before:.3f} as shipped, "
              f"{cal.fit_grade_auc_after:.3f} calibrated (out of sample).\n")
        print("| proposed criterion | share of leads (CV) | converted (CV) | of all converted (CV) | "
              "in sample: share / converted |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for label, share, prec, rec, ins, _ in criteria:
            print(f"| {label} | {share} | {prec} | {rec} | {ins} |")
        for label, *_, note in criteria:
            if note:
                print(f"\n{label.split(':')[0]}: {note}.")
        if crm is not None:
            print(f"\nMaven CRM (b2b-saas example): {crm.leads:,} closed deals ({crm.converted / crm.leads:.1%} won; "
                  f"{crm.open:,} open not used), same CV.\n")
            print("| b2b-saas rules | fit grade AUC | score AUC |")
            print("| --- | ---: | ---: |")
            print(f"| as shipped ({crm.old_version}) | {crm.fit_grade_auc_before:.3f} | {crm.current_auc:.3f} |")
            print(f"| calibrated, out of sample | {crm.fit_grade_auc_after:.3f} | {crm.auc:.3f} |")
            print(f"| calibrated, in sample | {crm.fit_grade_auc_in_sample:.3f} | {crm.in_sample_auc:.3f} |")
            print(f"| reference: logistic regression on the account itself ({crm_account_auc[1]} accounts one-hot), "
                  f"out of sample | {crm_account_auc[0]:.3f} | |")
        print(f"\nImport and engine: {n / import_s:,.0f} rows/s; calibrate: {calibrate_s:.0f} s for {n:,} leads "
              "(one process).")
    else:
        width = max(len(t[0]) for t in table)
        for label, pooled, spread in table:
            print(f"{label:<{width}}  {pooled}  {spread}")
        print(f"gap from logistic regression to the calibrated example rules: {gap:+.3f}")
        for label, share, prec, rec, ins, note in criteria:
            print(f"{label}: {share} of leads, {prec} converted, {rec} of converted (CV); in sample {ins}"
                  + (f" ({note})" if note else ""))
        if crm is not None:
            print(f"maven crm: fit grade AUC {crm.fit_grade_auc_before:.3f} -> {crm.fit_grade_auc_after:.3f} (CV); "
                  f"score AUC {crm.current_auc:.3f} -> {crm.auc:.3f} (CV); grades {crm.grades}; the account "
                  f"itself (logistic regression, CV) {crm_account_auc[0]:.3f}")
        print(f"import {n / import_s:,.0f} rows/s; calibrate {calibrate_s:.0f} s")
        print("points learned per fold (calibrated from the example rules; last column: all rows):")
        for change in cal.changes:
            folds_points = " ".join(f"{p[change.rule]:>4}" for p in cal.fold_points)
            print(f"  {change.rule:<24} {change.old:>5g} -> {folds_points}  | {change.new:>4g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
