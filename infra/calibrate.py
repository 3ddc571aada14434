"""`leadflow calibrate`: whole points for a rules file, learned from the outcomes on record
and cross-validated, written back into the file with its comments and layout.

What is learned, and what is not. The rules' structure stays as the marketer wrote it
(which rules, their conditions, bands, decay, units, aggregates, groups); only numbers
change: each rule's points (and with them a per-unit cap, which keeps its number of
units), the fit grades' minimum points, and the MQL and SQL criteria.

How:

1. **The leads as the engine sees them.** Each lead with an outcome on record (won or
   lost, a customer, a sales reject) is replayed from its event log under the current
   rules (`engine.replay_as_of`), as it stood when its outcome was recorded (never after
   `as_of`): the rules rank leads before sales knows, and a score taken years later
   would have let decay erase the engagement that led to the outcome. Leads still open
   are not training data.
2. **What each rule sees** in a lead, before points (`rule_features`): 1/0 for a fit rule
   or a band, the decayed count of matching events, the whole units of a per-unit rule
   up to its cap, 1/0 for a repeat. Points only weigh these, so they are computed once.
   A `best` group counts only its winning rule, so the winner (under the points being
   fitted) is the only member that sees the lead; the fit is repeated until the winners
   stop changing (`group_encoded`).
3. **Points** are a logistic regression (scikit-learn) on those features, scaled so the
   strongest rule is worth as many points as the strongest rule of the current file (at
   least 30), and rounded to whole points. A rule no lead on record matched, or one
   every lead matched alike, keeps its points (there is no evidence either way); a rule
   that earns nothing gets 0 and stays in the file.
4. **Cross-validated.** Stratified K folds (over the leads in lead id order, so the same
   leads give the same folds): points (and grades) learned on K-1 folds are written into
   a copy of the rules, and the engine scores the held-out fold with it
   (`engine.score_lead`). Every lead thus gets one out-of-fold score, and the ROC AUC
   of those scores is the figure to trust. The current rules are scored on the same
   leads as they are (no fitting).
5. **Criteria.** Thresholds are chosen on the out-of-fold scores, so their precision,
   recall and share are out of sample. Every fold's points use the same scale (points
   per unit of log-odds, set by the model fitted on all leads), and a score has no
   intercept, so each fold's scores are shifted by the difference between its model's
   intercept and the final model's, in points: a threshold then means the same odds in
   every fold's rules and in the final ones, and the threshold chosen on the pooled,
   shifted out-of-fold scores is applied as it is to the final rules (fitted on all
   leads). (The per-fold AUCs are of the engine's scores as they are: a shift does not
   change a ranking within a fold.) Of the whole numbers that select the same leads on
   record, the one halfway into the gap is written. The figures of the final rules on
   the same leads are reported too, as in-sample figures, and re-scoring the leads with
   the written file reproduces them.

   The SQL criterion (by default) is the largest SQL volume inside the sales-ready band
   (5-15 % of leads) whose cross-validated precision is at least 90 %; if none reaches
   it, the best precision in the band, said plainly. `Target.sql_precision` instead
   takes the lowest threshold that reaches that precision, whatever the volume. The MQL
   criterion (by default) is the score from which leads convert more often than the
   average lead (the point of the out-of-fold ROC curve furthest from the diagonal,
   Youden's J), never above the SQL threshold. Both are written as language 2 criteria
   on the score (`lifecycle.mql.when: {metric: score, gte: N}`); a language 1 file gets
   `language: 2` (everything else it says keeps its meaning). A disqualified lead
   (intent rules) never counts as an MQL or SQL. Instant triggers (`lifecycle.instant`)
   stay as they are and are not part of these figures.
6. **Fit grades** are bands of fit points: A the best-fitting 20 % of the leads on
   record, B the next 30 %, C the next 30 %, D the rest (`GRADE_SHARES`; ties keep the
   band of their value). They are recomputed because new fit points have a new scale;
   the grade's AUC (as an ordinal score) is reported before and after, cross-validated
   like the score.

Needs the `learn` extra: `pip install 'leadflow[learn]'` (scikit-learn, ruamel.yaml).
"""

from __future__ import annotations

import copy
import difflib
import io
import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from leadflow.domain.errors import RulesError
from leadflow.domain.lead import Lead
from leadflow.domain.rules import Rules, parse_rules
from leadflow_infra.evidence import History

MIN_PER_FOLD = 10  # converted and not converted leads each fold must hold
BAND_PRECISION = 0.9  # what "sales-ready" asks of the SQLs inside the band, by default
GRADE_SHARES = {"A": 0.20, "B": 0.30, "C": 0.30}  # of the leads on record, best fit first; D the rest
MIN_STRONGEST = 30  # points of the strongest rule, at least (whole points need some resolution)
MAX_GROUP_ROUNDS = 5
GRADE_ORDER = {"D": 0, "C": 1, "B": 2, "A": 3}
_CALIBRATED_VERSION = re.compile(r"-calibrated-\d{4}-\d{2}-\d{2}$")
_CALIBRATED_DESCRIPTION = re.compile(r"\s*\(calibrated from [\d,]+ outcomes on \d{4}-\d{2}-\d{2}\)$|"
                                     r"^Calibrated from [\d,]+ outcomes on \d{4}-\d{2}-\d{2}$")


class CalibrationError(Exception):
    """Calibration cannot run: the message says why and what to do."""


class NotEnoughOutcomes(CalibrationError):
    pass


def _learn() -> Any:
    """scikit-learn and numpy, imported when needed (they are an extra)."""
    try:
        import numpy as np
        import ruamel.yaml  # noqa: F401
        import sklearn  # noqa: F401
    except ImportError as exc:
        raise CalibrationError(f"calibrate needs scikit-learn and ruamel.yaml: pip install 'leadflow[learn]' "
                               f"({exc})") from None
    return np


# -- targets and results -------------------------------------------------------------------


@dataclass
class Target:
    """What the proposed criteria aim at.

    `sql_precision`: the SQL criterion is the lowest score threshold whose
    cross-validated precision is at least this (any share of leads). Not given: the
    sales-ready band `sales_ready` (share of leads, default 5-15 %, as the domain
    literature puts it), at the largest volume in the band with at least 90 % precision.
    `mql_share`: the MQL criterion takes this share of the leads. Not given: the score
    from which leads convert more often than the average lead (Youden's J)."""

    sql_precision: float | None = None
    sales_ready: tuple[float, float] = (0.05, 0.15)
    mql_share: float | None = None

    def __post_init__(self) -> None:
        low, high = self.sales_ready
        if not 0 < low <= high < 1:
            raise ValueError(f"sales_ready: a band of shares between 0 and 1, low first: {self.sales_ready}")
        if self.sql_precision is not None and not 0 < self.sql_precision <= 1:
            raise ValueError(f"sql_precision: between 0 and 1: {self.sql_precision}")
        if self.mql_share is not None and not 0 < self.mql_share < 1:
            raise ValueError(f"mql_share: between 0 and 1: {self.mql_share}")


@dataclass
class Figures:
    """A criterion on a set of leads: how many meet it, and how many of those converted."""

    share: float  # of the leads
    precision: float | None  # of those meeting it, converted (None: none meets it)
    recall: float  # of the converted leads, meeting it
    leads: int  # meeting it

    def to_dict(self) -> dict[str, Any]:
        return {"share": _r(self.share), "precision": _r(self.precision), "recall": _r(self.recall),
                "leads": self.leads}


@dataclass
class Proposal:
    """A proposed stage criterion (`{metric: score, gte: gte}`) and how it does."""

    stage: str  # mql or sql
    gte: int
    cross_validated: Figures
    in_sample: Figures
    current: Figures | None = None  # the file's own criterion on the same leads, as is
    met_target: bool = True
    note: str = ""

    @property
    def criterion(self) -> dict[str, Any]:
        return {"metric": "score", "gte": self.gte}

    def to_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "criterion": self.criterion, "cross_validated": self.cross_validated.to_dict(),
                "in_sample": self.in_sample.to_dict(), "current": self.current.to_dict() if self.current else None,
                "met_target": self.met_target, "note": self.note}


@dataclass
class RuleChange:
    """A rule's points before and after, with the evidence: how leads with and without it
    converted."""

    rule: str
    axis: str  # fit, engagement, repeat
    old: float
    new: float
    with_rate: float | None  # converted, of the leads the rule matched
    without_rate: float | None
    n_with: int

    @property
    def changed(self) -> bool:
        return self.old != self.new

    def line(self) -> str:
        return (f"{self.rule} {self.old:g} → {self.new:g}: {_pct(self.with_rate)} of leads with it converted, "
                f"{_pct(self.without_rate)} without (n={self.n_with:,})")

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "axis": self.axis, "old": self.old, "new": self.new,
                "converted_with": _r(self.with_rate), "converted_without": _r(self.without_rate), "n_with": self.n_with,
                "evidence": self.line()}


@dataclass
class Calibration:
    """What `calibrate` found, and the new rules file (`text`, parsed as `rules`)."""

    text: str
    rules: Rules
    source: str
    old_version: str
    as_of: datetime
    leads: int  # with an outcome (training data)
    converted: int
    open: int  # without an outcome: not used
    folds: int
    seed: int
    auc: float  # calibrated rules, out of fold (pooled; each fold on the final scale), scored by the engine
    auc_unaligned: float  # the same, each fold's engine scores as they are
    fold_aucs: list[float]
    current_auc: float  # the file as it is, same leads
    current_fold_aucs: list[float]
    in_sample_auc: float  # the calibrated rules on all the leads they were fitted to
    grades: dict[str, int]
    fit_grade_auc_before: float | None  # the current grades, as they are
    fit_grade_auc_after: float | None  # the new grades, out of fold
    fit_grade_auc_in_sample: float | None
    grade_rates: dict[str, tuple[int, float | None]]  # grade -> (leads, converted share), new rules in sample
    mql: Proposal
    sql: Proposal
    changes: list[RuleChange]
    unmatched: list[str]  # rules no lead on record matched: points kept
    diff: str
    notes: list[str] = field(default_factory=list)
    points_per_log_odds: float = 1.0
    fold_points: list[dict[str, int]] = field(default_factory=list)
    # Per lead with an outcome, in lead id order (the folds' order): lead id, outcome, fold,
    # out-of-fold score (as the engine gave it, and on the final scale), score under the
    # current rules, and the final rules' score.
    lead_ids: list[str] = field(default_factory=list, repr=False)
    y: list[int] = field(default_factory=list, repr=False)
    fold_of: list[int] = field(default_factory=list, repr=False)
    oof_scores: list[float] = field(default_factory=list, repr=False)
    aligned_scores: list[float] = field(default_factory=list, repr=False)
    current_scores: list[float] = field(default_factory=list, repr=False)
    final_scores: list[float] = field(default_factory=list, repr=False)

    @property
    def version(self) -> str:
        return self.rules.version

    @property
    def evidence(self) -> list[str]:
        return [c.line() for c in self.changes if c.changed]

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source, "version": self.version, "old_version": self.old_version,
            "as_of": self.as_of.isoformat(), "leads": self.leads, "converted": self.converted, "open": self.open,
            "folds": self.folds, "seed": self.seed,
            "auc": {"calibrated_cross_validated": _r(self.auc),
                    "calibrated_cross_validated_unshifted": _r(self.auc_unaligned),
                    "calibrated_per_fold": [_r(a) for a in self.fold_aucs],
                    "current": _r(self.current_auc), "current_per_fold": [_r(a) for a in self.current_fold_aucs],
                    "calibrated_in_sample": _r(self.in_sample_auc)},
            "fit_grade": {"grades": self.grades, "auc_before": _r(self.fit_grade_auc_before),
                          "auc_after_cross_validated": _r(self.fit_grade_auc_after),
                          "auc_after_in_sample": _r(self.fit_grade_auc_in_sample),
                          "by_grade": {g: {"leads": n, "converted": _r(rate)} for g, (n, rate) in
                                       self.grade_rates.items()}},
            "criteria": {"mql": self.mql.to_dict(), "sql": self.sql.to_dict()},
            "points": [c.to_dict() for c in self.changes],
            "evidence": self.evidence,
            "unmatched": self.unmatched,
            "points_per_log_odds": _r(self.points_per_log_odds),
            "notes": self.notes,
            "diff": self.diff,
        }


def _r(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(float(value), digits)


def _pct(value: float | None) -> str:
    return "—" if value is None or math.isnan(value) or value < 0 else f"{value * 100:.0f} %"


# -- what each rule sees -------------------------------------------------------------------


@dataclass(frozen=True)
class Feature:
    id: str
    axis: str  # fit, engagement, repeat
    group: str | None = None


def features_of(rules: Rules) -> list[Feature]:
    """The rules that carry points, in file order: fit, engagement, repeats."""
    return ([Feature(r.id, "fit", r.group) for r in rules.fit.rules]
            + [Feature(r.id, "engagement", r.group) for r in rules.engagement.rules]
            + [Feature(r.id, "repeat") for r in rules.engagement.repeats])


def current_points(rules: Rules) -> dict[str, float]:
    out: dict[str, float] = {r.id: r.points for r in rules.fit.rules}
    out.update({r.id: r.points for r in rules.engagement.rules})
    out.update({r.id: r.points for r in rules.engagement.repeats})
    return out


def rule_features(lead: Lead, rules: Rules, now: datetime) -> dict[str, float]:
    """What each rule sees in a lead, before points: 1/0 for a fit rule or a band, the
    decayed count of matching events, the whole units of a per-unit rule (up to its cap),
    1/0 for a repeat rule. The engine's score is the sum of points times these (groups
    aside: see `group_encoded`)."""
    from leadflow.domain.rules import in_band
    from leadflow.domain.scoring import DAY, aggregate_value, matches, subject_for

    out: dict[str, float] = {}
    subject = subject_for(lead.traits, lead.email, rules)
    for rule in rules.fit.rules:
        out[rule.id] = 1.0 if matches(rule.when, subject) else 0.0
    reset = lead.engagement_reset_at
    now_s = now.timestamp()
    by_rule: dict[str, list] = {}
    for s in lead.signals:
        if reset is None or s.at > reset:
            by_rule.setdefault(s.rule, []).append(s)
    aggregates = {a.id: aggregate_value(a, by_rule.get(a.id, []), now_s)[0] for a in rules.engagement.aggregates}
    for rule in rules.engagement.rules:
        cap_units = rule.cap / abs(rule.points) if rule.cap and rule.points else math.inf
        if rule.aggregate is not None:
            value = aggregates.get(rule.aggregate)
            if value is None or not in_band(rule, value):
                out[rule.id] = 0.0
            elif rule.per is not None:
                out[rule.id] = float(min(math.floor(value / rule.per), cap_units))
            else:
                out[rule.id] = 1.0
            continue
        units = 0.0
        for s in by_rule.get(rule.id, ()):
            age = max(0.0, now_s - s.at)
            if age > rule.max_age_days * DAY:
                continue
            weight = 0.5 ** (age / (rule.half_life_days * DAY)) if rule.half_life_days else 1.0
            units += weight * (math.floor(float(s.value or 0) / rule.per) if rule.per else 1.0)
        out[rule.id] = min(units, cap_units)
    for rep in rules.engagement.repeats:
        window = now_s - rep.within_days * DAY
        count = sum(1 for s in by_rule.get(rep.of, ()) if window <= s.at <= now_s)
        out[rep.id] = 1.0 if count >= rep.min_count else 0.0
    return out


def group_encoded(raw, feats: list[Feature], rules: Rules, points: dict[str, float]):
    """The features as the engine counts them under `points`: in a fit group only the
    matching rule with the most points counts (the first in the file on a tie); in an
    engagement `best` group only the member with the largest contribution (by size,
    then rule id); the others see nothing. `sum` groups add up (their cap is scaled,
    not fitted)."""
    np = _learn()
    x = np.array(raw, dtype=float, copy=True)
    index = {f.id: i for i, f in enumerate(feats)}
    fit_groups: dict[str, list[int]] = {}
    best_groups: dict[str, list[int]] = {}
    for f in feats:
        if f.group is None:
            continue
        if f.axis == "fit":
            fit_groups.setdefault(f.group, []).append(index[f.id])
        elif f.axis == "engagement":
            spec = rules.engagement.groups.get(f.group)
            if spec is None or spec.mode == "best":
                best_groups.setdefault(f.group, []).append(index[f.id])
    for members in fit_groups.values():
        if len(members) < 2:
            continue
        sub = x[:, members]
        value = np.where(sub > 0, np.array([points[feats[i].id] for i in members], dtype=float), -np.inf)
        winner = np.argmax(value, axis=1)  # the first of the highest: the engine's strict `>`
        keep = np.zeros_like(sub)
        rows = np.arange(len(x))
        keep[rows, winner] = sub[rows, winner]
        x[:, members] = keep
    for members in best_groups.values():
        if len(members) < 2:
            continue
        sub = x[:, members]
        pts = np.array([points[feats[i].id] for i in members], dtype=float)
        size = np.round(np.abs(sub * pts), 2)
        # By size, then the larger rule id (the engine's max over (|points|, rule)); a line
        # worth 0 points is no line.
        rank = np.argsort(np.argsort([feats[i].id for i in members]))
        key = np.where(size > 0, size * 1e6 + rank, -1.0)
        winner = np.argmax(key, axis=1)
        rows = np.arange(len(x))
        keep = np.zeros_like(sub)
        hit = key[rows, winner] >= 0
        keep[rows[hit], winner[hit]] = sub[rows[hit], winner[hit]]
        x[:, members] = keep
    return x


def fit_coefficients(x, y) -> tuple[Any, float]:
    """Log-odds per unit of each feature, and the intercept (a logistic regression, L2, C=1)."""
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    # A few dozen columns: threads only cost here (on a busy machine, a lot).
    with threadpool_limits(limits=1):
        model = LogisticRegression(C=1.0, max_iter=5000).fit(x, y)
    return model.coef_[0], float(model.intercept_[0])


def fitted_points(x, y, names: list[str], *, strongest: float = 30, per_log_odds: float | None = None
                  ) -> dict[str, int]:
    """Whole points from a logistic regression on rule features: `per_log_odds` points per
    unit of log-odds, or (not given) scaled so the strongest rule is worth `strongest`."""
    coef, _ = fit_coefficients(x, y)
    top = max((abs(c) for c in coef), default=0.0) or 1.0
    k = per_log_odds if per_log_odds is not None else strongest / top
    return {name: int(round(c * k)) for name, c in zip(names, coef)}


def _new_cap(cap: float, old: float, new: float) -> float:
    """A per-unit cap keeps its number of units under new points (a rule now worth
    nothing keeps its cap as written: it limits nothing, and says how many units the
    marketer meant)."""
    if not new or not old:
        return cap
    value = abs(new) * cap / abs(old)
    return int(round(value)) if abs(value - round(value)) < 1e-9 else round(value, 2)


def _group_cap(cap: float, old: list[float], new: list[float]) -> float:
    """A `sum` group's cap, scaled like its members' points."""
    before, after = sum(abs(p) for p in old), sum(abs(p) for p in new)
    if not before:
        return cap
    return max(1, int(round(cap * after / before)))


def with_points(data: dict, points: dict[str, float], grades: dict[str, int] | None = None) -> dict:
    """A copy of the rules (as loaded from YAML) with new whole points: per-unit caps
    keep their number of units, `sum` group caps scale with their members' points, and
    the fit grades are replaced when given."""
    data = copy.deepcopy(data)
    engagement = data["engagement"]
    old_by_group: dict[str, list[float]] = {}
    new_by_group: dict[str, list[float]] = {}
    for section in (data["fit"]["rules"], engagement["rules"], engagement.get("repeats") or []):
        for rule in section:
            if rule["id"] not in points:
                continue
            new = points[rule["id"]]
            if rule.get("cap") and rule.get("points"):
                rule["cap"] = _new_cap(rule["cap"], rule["points"], new)
            if rule.get("group") and section is engagement["rules"]:
                old_by_group.setdefault(rule["group"], []).append(rule.get("points", 0))
                new_by_group.setdefault(rule["group"], []).append(new)
            rule["points"] = new
    for name, spec in (engagement.get("groups") or {}).items():
        if isinstance(spec, dict) and spec.get("cap") and name in old_by_group:
            spec["cap"] = _group_cap(spec["cap"], old_by_group[name], new_by_group[name])
    if grades is not None:
        data["fit"]["grades"] = dict(grades)
    return data


def grade_thresholds(fit_points, *, current: dict[str, int] | None = None) -> dict[str, int]:
    """Minimum fit points for A, B and C: A the best-fitting 20 % of the leads, B the next
    30 %, C the next 30 % (`GRADE_SHARES`), each at the fit-point value whose share of
    leads at or above it is nearest the target; strictly decreasing, as the rules require."""
    np = _learn()
    values = np.asarray(fit_points, dtype=float)
    if len(values) == 0:
        return dict(current or {"A": 60, "B": 40, "C": 20})
    levels = np.unique(values)[::-1]  # highest first
    at_or_above = np.array([(values >= v).mean() for v in levels])
    out: dict[str, int] = {}
    cumulative = 0.0
    floor = math.inf
    for grade in ("A", "B", "C"):
        cumulative += GRADE_SHARES[grade]
        i = int(np.argmin(np.abs(at_or_above - cumulative)))
        threshold = int(math.ceil(levels[i]))
        if threshold >= floor:
            lower = [int(math.ceil(v)) for v in levels if math.ceil(v) < floor]
            threshold = lower[0] if lower else int(floor) - 1
        out[grade] = threshold
        floor = threshold
    return out


def folds_for(y, folds: int, seed: int) -> list[tuple[Any, Any]]:
    """The stratified folds calibrate uses (train, test index arrays), for comparisons on
    the same folds."""
    from sklearn.model_selection import StratifiedKFold

    np = _learn()
    y = np.asarray(y)
    return list(StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(np.zeros((len(y), 1)), y))


# -- the leads on record -------------------------------------------------------------------


def decided_at(history: History, as_of: datetime) -> datetime:
    """When the lead's outcome was recorded (its won/lost date, or the sales move that gave
    the label), never after `as_of`; `as_of` when unknown (an outcomes file)."""
    lead = history.lead
    at: datetime | None = None
    if history.label is not None and history.label.source == "csv":
        at = None
    elif lead.outcome is not None:
        at = lead.outcome.at
    else:
        for move in reversed(lead.history):
            if (move.cause.kind == "actor" and move.cause.action in ("reject", "disqualify")) or \
                    move.to_stage in ("customer", "evangelist"):
                at = move.at
                break
    return min(at, as_of) if at is not None else as_of


@dataclass
class _Sample:
    leads: list[Lead]
    at: list[datetime]
    y: Any  # np.ndarray of 0/1
    raw: Any  # np.ndarray, leads x features
    disqualified: Any  # np.ndarray of bool
    feats: list[Feature]


def _sample(labelled: list[History], rules: Rules, as_of: datetime) -> _Sample:
    from leadflow.domain.engine import replay_as_of

    np = _learn()
    feats = features_of(rules)
    leads, ats, rows, disq = [], [], [], []
    for h in labelled:
        at = decided_at(h, as_of)
        lead, _ = replay_as_of(h.lead.lead_id, h.lead.email, h.events, rules, at)
        f = rule_features(lead, rules, at)
        leads.append(lead)
        ats.append(at)
        rows.append([f[x.id] for x in feats])
        disq.append(bool(lead.intent_flags))
    raw = np.array(rows, dtype=float).reshape(len(leads), len(feats))
    y = np.array([1 if h.label.converted else 0 for h in labelled])  # type: ignore[union-attr]
    return _Sample(leads, ats, y, raw, np.array(disq, dtype=bool), feats)


def _informative(raw) -> Any:
    """The features that vary across these leads: a rule no lead matched, or one every
    lead matched alike, says nothing about who converts."""
    return (raw > 0).any(axis=0) & ~(raw == raw[:1]).all(axis=0)


def _fit(sample: _Sample, idx, rules: Rules, start: dict[str, float], per_log_odds: float | None,
         strongest: float) -> tuple[dict[str, int], float, float]:
    """Whole points fitted on the leads `idx`: the group winners re-encoded under the
    points until they settle. Rules that do not vary across these leads keep `start`'s
    points. Returns the points, the points per log-odds used, and the intercept."""
    np = _learn()
    names = [f.id for f in sample.feats]
    raw = sample.raw[idx]
    y = sample.y[idx]
    points = dict(start)
    encoded = None
    coef = np.zeros(len(names))
    intercept = 0.0
    k = per_log_odds or 1.0
    for _ in range(MAX_GROUP_ROUNDS):
        x = group_encoded(raw, sample.feats, rules, points)
        if encoded is not None and np.array_equal(x, encoded):
            break
        encoded = x
        seen = _informative(x)  # a group's member counts where it wins
        if seen.any():
            coef, intercept = fit_coefficients(x[:, seen], y)
        else:
            coef, intercept = np.zeros(0), 0.0
        full = np.zeros(len(names))
        full[seen] = coef
        coef = full
        if per_log_odds is None:
            top = float(np.max(np.abs(coef))) if len(coef) else 0.0
            k = strongest / top if top > 0 else 1.0
        # A rule that tells nothing apart here keeps its points (from the file, or the last round).
        points = {n: (int(round(c * k)) if s else points[n]) for n, c, s in zip(names, coef, seen)}
    return points, float(k), intercept


# -- scoring with the engine ---------------------------------------------------------------


def _cards(sample: _Sample, rules: Rules, idx) -> list[Any]:
    from leadflow.domain.engine import score_lead

    return [score_lead(sample.leads[i], rules, sample.at[i]) for i in idx]


def _meets(sample: _Sample, rules: Rules, criterion, idx, cards) -> Any:
    """Whether each lead meets a stage criterion, as the lifecycle decides (a disqualified
    lead never does)."""
    from leadflow.domain.lifecycle import meets

    np = _learn()
    out = []
    for i, card in zip(idx, cards):
        lead = sample.leads[i]
        reset = lead.engagement_reset_at
        raises = [s.at for s in lead.signals if s.rule in rules.hand_raise_rules and (reset is None or s.at > reset)]
        out.append(not card.intent_flags and meets(criterion, card, raises, sample.at[i].timestamp()))
    return np.array(out, dtype=bool)


def _figures(hit, y) -> Figures:
    n, positives, met = len(y), int(y.sum()), int(hit.sum())
    tp = int((hit & (y == 1)).sum())
    return Figures(share=met / n if n else 0.0, precision=tp / met if met else None,
                   recall=tp / positives if positives else 0.0, leads=met)


def _auc(y, scores) -> float | None:
    from sklearn.metrics import roc_auc_score

    np = _learn()
    y = np.asarray(y)
    if len(set(y.tolist())) < 2:
        return None
    return float(roc_auc_score(y, scores))


def _grade_score(cards) -> list[int]:
    return [GRADE_ORDER[c.fit_grade] for c in cards]


# -- criteria --------------------------------------------------------------------------------


@dataclass
class _Sweep:
    gte: Any  # candidate thresholds, ascending
    share: Any
    precision: Any  # NaN where nothing meets it
    recall: Any
    fpr: Any


def _sweep(scores, y, eligible) -> _Sweep:
    np = _learn()
    scores = np.asarray(scores, dtype=float)
    # `score >= N` for a whole N holds exactly when floor(score) >= N: every distinct set of
    # leads a whole threshold can select is selected at one of the floors.
    candidates = np.unique(np.floor(np.round(scores[eligible], 6))) if eligible.any() else np.array([0.0])
    n, pos, neg = len(y), max(1, int(y.sum())), max(1, int((y == 0).sum()))
    share, precision, recall, fpr = [], [], [], []
    for t in candidates:
        hit = eligible & (scores >= t)
        met = int(hit.sum())
        tp = int((hit & (y == 1)).sum())
        share.append(met / n)
        precision.append(tp / met if met else np.nan)
        recall.append(tp / pos)
        fpr.append((met - tp) / neg)
    return _Sweep(candidates.astype(int), np.array(share), np.array(precision), np.array(recall), np.array(fpr))


def _gte(sweep: _Sweep, i: int) -> int:
    """The whole threshold that selects candidate i's leads: halfway into the gap below
    it (every whole number in the gap selects the same leads on record; the middle is
    the least tuned to them)."""
    high = int(sweep.gte[i])
    if i == 0:
        return high
    return (int(sweep.gte[i - 1]) + 1 + high) // 2


def _choose_sql(sweep: _Sweep, target: Target) -> tuple[int, bool, str]:
    np = _learn()
    prec = np.nan_to_num(sweep.precision, nan=-1.0)
    if target.sql_precision is not None:
        ok = np.flatnonzero(prec >= target.sql_precision)
        if len(ok):
            return _gte(sweep, int(ok[0])), True, ""
        best = int(np.argmax(prec))
        return (_gte(sweep, best), False,
                f"no score threshold reaches {target.sql_precision:.0%} converted (cross-validated); the best is "
                f"{_pct(prec[best])} at {_pct(sweep.share[best])} of leads: proposed instead")
    low, high = target.sales_ready
    band = np.flatnonzero((sweep.share >= low - 1e-12) & (sweep.share <= high + 1e-12))
    if not len(band):
        i = int(np.argmin(np.minimum(np.abs(sweep.share - low), np.abs(sweep.share - high))))
        return (_gte(sweep, i), bool(prec[i] >= BAND_PRECISION),
                f"no score threshold makes {low:.0%}–{high:.0%} of leads SQLs (the scores are too coarse); the "
                f"nearest gives {_pct(sweep.share[i])}, {_pct(prec[i])} of them converted (cross-validated)")
    good = [i for i in band if prec[i] >= BAND_PRECISION]
    if good:
        i = max(good, key=lambda j: (sweep.share[j], -j))
        return _gte(sweep, i), True, ""
    i = max(band, key=lambda j: (prec[j], sweep.share[j]))
    return (_gte(sweep, i), False,
            f"no SQL criterion with {low:.0%}–{high:.0%} of leads reaches {BAND_PRECISION:.0%} converted "
            f"(cross-validated); the best in that band is {_pct(prec[i])} at {_pct(sweep.share[i])} of leads, "
            "proposed instead")


def _choose_mql(sweep: _Sweep, target: Target, sql_gte: int) -> tuple[int, str]:
    np = _learn()
    if target.mql_share is not None:
        i = int(np.argmin(np.abs(sweep.share - target.mql_share)))
        how = f"{_pct(target.mql_share)} of leads asked"
    else:
        i = int(np.argmax(sweep.recall - sweep.fpr))
        how = "leads from here convert more often than the average lead"
    gte = _gte(sweep, i)
    if gte > sql_gte:
        return sql_gte, f"{how}, but that is above the SQL threshold: MQL set to the SQL threshold"
    return gte, ""


# -- writing the file ------------------------------------------------------------------------


def new_version(old: str, as_of: datetime, version: str | None = None) -> str:
    """`<old version>-calibrated-<date>` (an earlier calibration's suffix replaced), the
    old part trimmed so the whole fits the rules' 64 characters."""
    if version is not None:
        if not 1 <= len(version) <= 64:
            raise CalibrationError(f"version: 1 to 64 characters, got {len(version)}")
        return version
    suffix = f"-calibrated-{as_of:%Y-%m-%d}"
    base = _CALIBRATED_VERSION.sub("", old)
    return base[:64 - len(suffix)] + suffix


def _new_description(old: str, n: int, as_of: datetime) -> str:
    base = _CALIBRATED_DESCRIPTION.sub("", old or "").strip()
    said = f"calibrated from {n:,} outcomes on {as_of:%Y-%m-%d}"
    return f"{base} ({said})" if base else said[0].upper() + said[1:]


def _trailing_comments(node: Any) -> list[str]:
    """The comment lines that follow a block (ruamel keeps them on its last node), taken
    off it: the block is about to be replaced, the comments stay in the file."""
    lines: list[str] = []
    while True:
        ca = getattr(node, "ca", None)
        if isinstance(node, dict) and node:
            last = list(node)[-1]
            if ca is not None and last in ca.items and ca.items[last] and len(ca.items[last]) > 2 and ca.items[last][2]:
                token = ca.items[last][2]
                rest = token.value.split("\n", 1)
                if len(rest) > 1 and rest[1].strip():
                    lines.extend(line for line in rest[1].splitlines() if line.strip())
        elif isinstance(node, list) and node and ca is not None and len(node) - 1 in ca.items:
            entry = ca.items[len(node) - 1]
            if entry and entry[0] is not None:
                rest = entry[0].value.split("\n", 1)
                if len(rest) > 1 and rest[1].strip():
                    lines.extend(line for line in rest[1].splitlines() if line.strip())
        if ca is not None and getattr(ca, "end", None):
            for token in ca.end:
                lines.extend(" " * token.column + line.strip() for line in token.value.splitlines() if line.strip())
        if isinstance(node, dict) and node:
            node = node[list(node)[-1]]
        elif isinstance(node, list) and node:
            node = node[-1]
        else:
            return lines


def _set_eol(parent: Any, key: Any, text: str, follow: list[str], *, width: int,
             replace_prefix: str | None = None) -> None:
    """An end-of-line comment on `key` (whose line is `width` characters up to the end of
    its value), keeping what followed the old one (blank lines, comment lines) and the
    comment lines that followed a replaced block (`follow`). A comment the marketer wrote
    there stays."""
    entry = parent.ca.items.get(key)
    existing = entry[2] if entry and len(entry) > 2 else None
    rest = ""
    if existing is not None:
        first, _, rest = existing.value.partition("\n")
        mine = first.strip()
        if mine and not (replace_prefix and mine.startswith(replace_prefix)):
            if not follow:
                return
            text = mine.removeprefix("#").strip()
    parent.yaml_add_eol_comment("# " + text, key, column=width + 2)
    token = parent.ca.items[key][2]
    token.value = token.value.rstrip("\n") + "\n" + rest + "".join(line + "\n" for line in follow)


def write_rules(text: str, *, points: dict[str, int], old_points: dict[str, float], grades: dict[str, int],
                mql: Proposal, sql: Proposal, version: str, description: str) -> str:
    """The rules file with the new numbers, round-tripped by ruamel.yaml: comments, order,
    quoting and layout are kept; a changed rule's points get a `# was N` comment."""
    from ruamel.yaml import YAML
    from ruamel.yaml.comments import CommentedMap
    from ruamel.yaml.scalarstring import DoubleQuotedScalarString
    from ruamel.yaml.util import load_yaml_guess_indent

    _, indent, offset = load_yaml_guess_indent(text)
    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 4096
    yaml.indent(mapping=max(2, (indent or 4) - (offset or 0)), sequence=indent or 4, offset=offset or 0)
    yaml.brace_single_entry_mapping_in_flow_sequence = True
    doc = yaml.load(text)

    engagement = doc["engagement"]
    old_by_group: dict[str, list[float]] = {}
    new_by_group: dict[str, list[float]] = {}
    sections = [doc["fit"]["rules"], engagement["rules"], engagement.get("repeats") or []]
    for section in sections:
        for rule in section:
            rid = rule["id"]
            if rid not in points:
                continue
            old, new = rule.get("points", 0), points[rid]
            if rule.get("cap") and old:
                rule["cap"] = _new_cap(rule["cap"], old, new)
            if rule.get("group") and section is engagement["rules"]:
                old_by_group.setdefault(rule["group"], []).append(old)
                new_by_group.setdefault(rule["group"], []).append(new)
            if old != new:
                rule["points"] = new
                if not rule.fa.flow_style():
                    _set_eol(rule, "points", f"was {old_points.get(rid, old):g}", [],
                             width=rule.lc.col + len(f"points: {new}"), replace_prefix="# was ")
    for name, spec in (engagement.get("groups") or {}).items():
        if isinstance(spec, dict) and spec.get("cap") and name in old_by_group:
            spec["cap"] = _group_cap(spec["cap"], old_by_group[name], new_by_group[name])
    for grade in ("A", "B", "C"):
        doc["fit"]["grades"][grade] = grades[grade]

    if doc.get("language", 1) < 2:
        doc.insert(0, "language", 2)
    doc["version"] = DoubleQuotedScalarString(version)
    if "description" in doc:
        doc["description"] = description
    else:
        doc.insert(list(doc).index("version") + 1, "description", description)

    lifecycle = doc["lifecycle"]
    for proposal in (mql, sql):
        stage = lifecycle[proposal.stage]
        follow = _trailing_comments(stage)
        for key in ("min_fit_grade", "min_engagement", "hand_raise_within_days", "when"):
            if key in stage:
                del stage[key]
                stage.ca.items.pop(key, None)  # its comments are in `follow`
        criterion = CommentedMap([("metric", "score"), ("gte", proposal.gte)])
        criterion.fa.set_flow_style()
        stage.insert(0, "when", criterion)
        cv = proposal.cross_validated
        said = (f"calibrated: {_pct(cv.share)} of leads, {_pct(cv.precision)} of them converted "
                "(cross-validated)")
        _set_eol(stage, "when", said, follow, width=stage.lc.col + len(f"when: {{metric: score, gte: {proposal.gte}}}"),
                 replace_prefix="# calibrated")
    out = io.StringIO()
    yaml.dump(doc, out)
    return out.getvalue()


# -- calibrate -------------------------------------------------------------------------------


def calibrate(histories: list[History], rules_text: str, *, source: str, as_of: datetime,
              target: Target | None = None, folds: int = 5, seed: int = 7, version: str | None = None) -> Calibration:
    """New whole points, fit grades and MQL/SQL criteria for the rules `rules_text`, learned
    from the histories with an outcome and cross-validated on `folds` stratified folds
    (see the module's docstring for the method). Raises NotEnoughOutcomes when a fold
    would hold fewer than 10 converted or 10 not converted leads, CalibrationError when
    scikit-learn is missing or the rules are invalid."""
    import yaml

    np = _learn()
    target = target or Target()
    if folds < 2:
        raise CalibrationError(f"folds: at least 2, got {folds}")
    try:
        data = yaml.safe_load(rules_text)
        current = parse_rules(data, source=source)
    except yaml.YAMLError as exc:
        raise CalibrationError(f"{source} is not valid YAML: {exc}") from None
    except RulesError as exc:
        raise CalibrationError(exc.message) from None

    # In lead id order: the same leads give the same folds, whatever order they came in.
    labelled = sorted((h for h in histories if h.label is not None), key=lambda h: h.lead.lead_id)
    converted = sum(1 for h in labelled if h.label.converted)  # type: ignore[union-attr]
    lost = len(labelled) - converted
    need = MIN_PER_FOLD * folds
    if converted < need or lost < need:
        raise NotEnoughOutcomes(
            f"calibrate needs at least {need} converted and {need} not converted leads with an outcome for "
            f"{folds} folds ({MIN_PER_FOLD} of each per fold); the leads on record have {converted:,} converted "
            f"and {lost:,} not converted ({len(histories) - len(labelled):,} more without an outcome). Record "
            "more outcomes (won/lost, rejects; or an outcomes file) or use fewer folds.")

    sample = _sample(labelled, current, as_of)
    y = sample.y
    n = len(y)
    old = current_points(current)
    strongest = max([abs(p) for p in old.values()] + [MIN_STRONGEST])
    everyone = np.arange(n)
    eligible = ~sample.disqualified

    current_cards = _cards(sample, current, everyone)
    current_scores = np.array([c.score for c in current_cards])

    # The final points first: their scale (points per log-odds) is every fold's scale.
    final_points, k, final_intercept = _fit(sample, everyone, current, old, None, strongest)

    split = folds_for(y, folds, seed)
    fold_of = np.zeros(n, dtype=int)
    oof = np.zeros(n)  # the engine's score under the fold's rules
    aligned = np.zeros(n)  # the same, on the final rules' scale
    oof_grade = np.zeros(n)
    fold_aucs, current_fold_aucs, fold_points = [], [], []
    for f, (train, test) in enumerate(split):
        fold_of[test] = f
        points, _, intercept = _fit(sample, train, current, old, k, strongest)
        fold_points.append(points)
        grades = _grades_for(sample, current, points, train)
        rules_f = parse_rules(with_points(data, points, grades), source=f"{source} (fold {f + 1})")
        cards = _cards(sample, rules_f, test)
        oof[test] = [c.score for c in cards]
        # A score is log-odds times k, less the intercept: the fold's scores shifted by the
        # difference of the intercepts predict the same odds as the final rules' scores.
        aligned[test] = oof[test] + (intercept - final_intercept) * k
        oof_grade[test] = _grade_score(cards)
        fold_aucs.append(_auc(y[test], oof[test]) or 0.5)
        current_fold_aucs.append(_auc(y[test], current_scores[test]) or 0.5)

    # Criteria on the out-of-fold scores (on the final scale); applied as they are to the
    # final rules.
    sweep = _sweep(aligned, y, eligible)
    sql_gte, met, sql_note = _choose_sql(sweep, target)
    mql_gte, mql_note = _choose_mql(sweep, target, sql_gte)

    grades = _grades_for(sample, current, final_points, everyone)
    version = new_version(current.version, as_of, version)
    description = _new_description(current.description, n, as_of)
    oof_hit = {"mql": eligible & (aligned >= mql_gte), "sql": eligible & (aligned >= sql_gte)}
    placeholder = {s: Proposal(s, g, _figures(oof_hit[s], y), _figures(oof_hit[s], y))
                   for s, g in (("mql", mql_gte), ("sql", sql_gte))}
    text = write_rules(rules_text, points=final_points, old_points=old, grades=grades, mql=placeholder["mql"],
                       sql=placeholder["sql"], version=version, description=description)
    try:
        final = parse_rules(yaml.safe_load(text), source=f"{source} (calibrated)")
    except RulesError as exc:  # a bug here, never the user's: say so plainly
        raise CalibrationError(f"the calibrated rules do not validate (please report this): {exc.message}") from None

    final_cards = _cards(sample, final, everyone)
    final_scores = np.array([c.score for c in final_cards])
    proposals = {}
    for stage, gte, note in (("mql", mql_gte, mql_note), ("sql", sql_gte, sql_note)):
        in_sample = _meets(sample, final, getattr(final.lifecycle, stage).criterion, everyone, final_cards)
        now_hit = _meets(sample, current, getattr(current.lifecycle, stage).criterion, everyone, current_cards)
        proposals[stage] = Proposal(stage, gte, placeholder[stage].cross_validated, _figures(in_sample, y),
                                    _figures(now_hit, y), met if stage == "sql" else True, note)

    changes = []
    seen = (sample.raw > 0)
    for j, f in enumerate(sample.feats):
        with_it = seen[:, j]
        m = int(with_it.sum())
        changes.append(RuleChange(
            f.id, f.axis, old[f.id], final_points[f.id],
            float(y[with_it].mean()) if m else None,
            float(y[~with_it].mean()) if m < n else None, m))
    informative = _informative(sample.raw)
    unmatched = [f.id for j, f in enumerate(sample.feats) if not seen[:, j].any()]
    alike = [f.id for j, f in enumerate(sample.feats) if seen[:, j].any() and not informative[j] and f.group is None]

    final_grade = _grade_score(final_cards)
    grade_rates = {}
    for g in ("A", "B", "C", "D"):
        in_grade = np.array([c.fit_grade == g for c in final_cards])
        grade_rates[g] = (int(in_grade.sum()), float(y[in_grade].mean()) if in_grade.any() else None)

    notes = [p.note for p in proposals.values() if p.note]
    if unmatched:
        notes.append(f"no lead on record matched {', '.join(unmatched)}: their points are kept")
    if alike:
        notes.append(f"every lead on record matched {', '.join(alike)} alike (no evidence either way): "
                     "their points are kept")
    if current.lifecycle.instant:
        notes.append("instant triggers (lifecycle.instant) are kept as they are; the SQL figures leave them out")
    if current.language < 2:
        notes.append("the file was rules language 1: it now says `language: 2` (for the score criteria); "
                     "everything else keeps its meaning")

    diff = "".join(difflib.unified_diff(rules_text.splitlines(keepends=True), text.splitlines(keepends=True),
                                        fromfile=source, tofile=f"{source} (calibrated)"))
    return Calibration(
        text=text, rules=final, source=source, old_version=current.version, as_of=as_of, leads=n,
        converted=converted, open=len(histories) - len(labelled), folds=folds, seed=seed,
        auc=_auc(y, aligned) or 0.5, auc_unaligned=_auc(y, oof) or 0.5, fold_aucs=fold_aucs, current_auc=_auc(y, current_scores) or 0.5,
        current_fold_aucs=current_fold_aucs, in_sample_auc=_auc(y, final_scores) or 0.5, grades=grades,
        fit_grade_auc_before=_auc(y, _grade_score(current_cards)), fit_grade_auc_after=_auc(y, oof_grade),
        fit_grade_auc_in_sample=_auc(y, final_grade), grade_rates=grade_rates,
        mql=proposals["mql"], sql=proposals["sql"], changes=changes, unmatched=unmatched, diff=diff, notes=notes,
        points_per_log_odds=k, fold_points=fold_points, lead_ids=[lead.lead_id for lead in sample.leads],
        y=y.tolist(), fold_of=fold_of.tolist(), oof_scores=oof.tolist(), aligned_scores=aligned.tolist(), current_scores=current_scores.tolist(),
        final_scores=final_scores.tolist())


def _grades_for(sample: _Sample, rules: Rules, points: dict[str, float], idx) -> dict[str, int]:
    """Grade thresholds for `points`, from the fit points of the leads `idx` (added up as
    the engine does: in a group, the matching rule with the most points)."""
    np = _learn()
    x = group_encoded(sample.raw[idx], sample.feats, rules, points)
    fit_cols = [j for j, f in enumerate(sample.feats) if f.axis == "fit"]
    weights = np.array([points[sample.feats[j].id] for j in fit_cols], dtype=float)
    return grade_thresholds(x[:, fit_cols] @ weights, current=dict(rules.fit.grades))


# -- the terminal ---------------------------------------------------------------------------


def print_report(cal: Calibration, console: Any, *, out: str | None = None, diff: bool = True) -> None:
    """The calibration in the terminal: how well the rules rank (before, after), the
    proposed criteria, the fit grades, each rule's points with the evidence, the diff."""
    from rich.table import Table
    from rich.text import Text

    rate = cal.converted / cal.leads if cal.leads else 0.0
    left_out = f"; {cal.open:,} leads without an outcome left out" if cal.open else ""
    console.print(f"[bold]Calibrated[/bold] {cal.source} from {cal.leads:,} outcomes ({cal.converted:,} converted, "
                  f"{_pct(rate)}{left_out}), {cal.folds}-fold cross-validation, as of {cal.as_of:%Y-%m-%d}.",
                  highlight=False)

    auc = Table(title="How well the score ranks the leads (ROC AUC)", title_justify="left")
    auc.add_column("", no_wrap=True)
    auc.add_column("AUC", justify="right")
    auc.add_column("per fold", justify="right", no_wrap=True)
    auc.add_row(f"current rules ({cal.old_version})", f"{cal.current_auc:.3f}", _spread(cal.current_fold_aucs))
    auc.add_row("calibrated, out of sample", f"[bold]{cal.auc:.3f}[/bold]", _spread(cal.fold_aucs))
    auc.add_row("calibrated, in sample", f"{cal.in_sample_auc:.3f}", "")
    auc.add_row("fit grade: current", _num(cal.fit_grade_auc_before), "")
    auc.add_row("fit grade: calibrated, out of sample", _num(cal.fit_grade_auc_after), "")
    console.print(auc)

    crit = Table(title="Proposed stage criteria", title_justify="left",
                 caption="leads: share of leads meeting it; converted: of those; recall: of all converted leads",
                 caption_justify="left")
    for name, justify in (("stage", "left"), ("criterion", "left"), ("leads", "right"), ("converted", "right"),
                          ("recall", "right"), ("", "left")):
        crit.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for p in (cal.mql, cal.sql):
        cv, ins = p.cross_validated, p.in_sample
        crit.add_row(p.stage.upper(), f"score ≥ {p.gte}", _pct(cv.share), _pct(cv.precision), _pct(cv.recall),
                     "out of sample")
        crit.add_row("", "", _pct(ins.share), _pct(ins.precision), _pct(ins.recall), "in sample")
        if p.current is not None:
            crit.add_row("", "the file's now", _pct(p.current.share), _pct(p.current.precision),
                         _pct(p.current.recall), "as it is")
    console.print(crit)

    grades = Table(title="Fit grades (minimum fit points)", title_justify="left")
    for name, justify in (("grade", "left"), ("from", "right"), ("leads", "right"), ("converted", "right")):
        grades.add_column(name, justify=justify)  # type: ignore[arg-type]
    for g in ("A", "B", "C", "D"):
        leads, conv = cal.grade_rates[g]
        grades.add_row(g, str(cal.grades[g]) if g in cal.grades else "below C", f"{leads:,}", _pct(conv))
    console.print(grades)

    changed = [c for c in cal.changes if c.changed]
    points = Table(title=f"Points ({len(changed)} of {len(cal.changes)} rules changed)", title_justify="left",
                   caption="with it / without: converted, of the leads the rule matched / did not; "
                           "n: leads it matched", caption_justify="left")
    for name, justify in (("rule", "left"), ("was", "right"), ("now", "right"), ("with it", "right"),
                          ("without", "right"), ("n", "right")):
        points.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for c in cal.changes:
        style = "bold" if c.changed else "dim"
        points.add_row(c.rule, f"{c.old:g}", f"[{style}]{c.new:g}[/{style}]", _pct(c.with_rate),
                       _pct(c.without_rate), f"{c.n_with:,}")
    console.print(points)
    for note in cal.notes:
        console.print(f"[yellow]note:[/yellow] {note}", highlight=False)
    if diff and cal.diff:
        styles = {"+": "green", "-": "red", "@": "cyan"}
        for line in cal.diff.splitlines():
            style = "bold" if line.startswith(("+++", "---")) else styles.get(line[:1], "")
            console.print(Text(line, style=style), soft_wrap=True)
    if out:
        console.print(f"wrote {out} (rules {cal.version}). Next: `leadflow rules diff {out}` shows what publishing "
                      f"it would move; `leadflow rules publish {out}` puts it in force.", highlight=False)


def _spread(values: list[float]) -> str:
    if len(values) < 2:
        return ""
    mean = sum(values) / len(values)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    return f"{mean:.3f} ± {sd:.3f}"


def _num(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def run(histories: list[History], rules_path: str, out: str, *, target: Target | None, folds: int, seed: int,
        as_of: datetime, json_out: bool, console: Any, version: str | None = None) -> int:
    """`leadflow calibrate`: calibrate the rules file at `rules_path` from `histories`,
    write the new file to `out`, print the report (or, with `json_out`, the JSON). Exit
    code: 0 written; 1 too few leads with an outcome; 2 cannot run (no scikit-learn, the
    rules file unreadable or invalid)."""
    from pathlib import Path

    try:
        text = Path(rules_path).read_text(encoding="utf-8")
    except OSError as exc:
        return _fail(console, json_out, f"cannot read rules file {rules_path}: {exc.strerror or exc}", 2)
    try:
        cal = calibrate(histories, text, source=rules_path, as_of=as_of, target=target or Target(), folds=folds,
                        seed=seed, version=version)
    except NotEnoughOutcomes as exc:
        return _fail(console, json_out, str(exc), 1)
    except CalibrationError as exc:
        return _fail(console, json_out, str(exc), 2)
    Path(out).write_text(cal.text, encoding="utf-8")
    if json_out:
        console.print(json.dumps({"ok": True, "out": out, **cal.to_dict()}, ensure_ascii=False, indent=2),
                      markup=False, highlight=False, soft_wrap=True)
    else:
        print_report(cal, console, out=out)
    return 0


def _fail(console: Any, json_out: bool, message: str, code: int) -> int:
    if json_out:
        console.print(json.dumps({"ok": False, "error": message}, ensure_ascii=False), markup=False, highlight=False,
                      soft_wrap=True)
    else:
        console.print(f"[red]error:[/red] {message}", highlight=False)
    return code
