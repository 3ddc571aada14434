"""The evidence loop's pure parts: outcome labels, the outcomes CSV, AUC, the backtest's
figures, the rule-change sentences and the diff, on leads built by the engine."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import pytest

from leadflow.domain.engine import apply_action, apply_event, new_lead, refresh
from leadflow.domain.events import AppliedEvent
from leadflow.domain.lead import SalesOutcome
from leadflow.domain.rules import parse_rules
from leadflow.domain.rules_changes import changes
from leadflow_infra.backtest import auc, backtest
from leadflow_infra.evidence import History, Label, label_of, read_outcomes
from leadflow_infra.rules_diff import diff

NOW = datetime(2026, 11, 28, tzinfo=timezone.utc)

RULES = {
    "language": 2,
    "version": "t.1",
    "fit": {"grades": {"A": 60, "B": 40, "C": 10},
            "rules": [{"id": "has_title", "when": {"trait": "job_title", "exists": True}, "points": 15}]},
    "engagement": {"rules": [
        {"id": "page_view", "when": {"event": "page_viewed"}, "points": 7},
        {"id": "demo", "when": {"all": [{"event": "form_submitted"}, {"property": "form_kind", "equals": "demo_request"}]},
         "points": 50, "hand_raise": True},
    ]},
    "lifecycle": {
        "mql": {"when": {"all": [{"fit_grade": "C"}, {"metric": "engagement", "gte": 40}]}},
        "sql": {"when": {"all": [{"fit_grade": "C"}, {"metric": "engagement", "gte": 50}, {"hand_raise_within_days": 30}]}},
        "bant": {"budget": {"trait": "budget", "exists": True}, "authority": {"trait": "authority", "exists": True},
                 "need": {"trait": "need", "exists": True}, "timeline": {"trait": "timeline", "exists": True}},
    },
}


def rules(**changes_):
    import copy

    data = copy.deepcopy(RULES)
    for path, value in changes_.items():
        node = data
        *parents, last = path.split("__")
        for key in parents:
            node = node[key]
        node[last] = value
    return parse_rules(data)


def event(n: int, kind: str, email: str, at: datetime, **props) -> AppliedEvent:
    traits = {"job_title": "Analyst"} if kind == "identify" else {}
    return AppliedEvent(event_id=f"{email}-{n}", type=kind, occurred_at=at, received_at=at, email=email,
                        properties=props, traits=traits)


def history(email: str, views: int, demo: bool, outcome: str | None, at: datetime = NOW - timedelta(days=3)) -> History:
    r = rules()
    events = [event(0, "identify", email, at)]
    events += [event(i + 1, "page_viewed", email, at + timedelta(minutes=i)) for i in range(views)]
    if demo:
        events.append(event(99, "form_submitted", email, at + timedelta(hours=1), form_kind="demo_request"))
    lead = new_lead(f"ld_{email}", email=email, now=at)
    for e in events:
        lead = apply_event(lead, e, r, e.occurred_at).lead
    if outcome:
        lead.outcome = SalesOutcome(result=outcome, at=NOW, by="import")
    return History(lead, events, label_of(lead))


def test_labels_come_from_outcomes_customers_and_sales_rejects():
    r = rules()
    won = history("a@x.io", 1, True, "won").lead
    assert label_of(won) == Label(True, "won")
    assert label_of(history("b@x.io", 1, False, "lost").lead) == Label(False, "lost")
    assert label_of(history("c@x.io", 1, False, None).lead) is None
    sql = history("d@x.io", 6, True, None).lead
    assert sql.stage == "sql"
    rejected = apply_action(sql, "reject", reason="no_budget", by="rep", rules=r, now=NOW).lead
    assert label_of(rejected) == Label(False, "rejected", "no_budget")
    customer = apply_action(sql, "won", reason=None, by="rep", rules=r, now=NOW).lead
    assert label_of(customer).converted is True


def test_outcomes_csv_by_email_or_lead_id_and_its_errors(tmp_path):
    good = tmp_path / "outcomes.csv"
    good.write_text("email,outcome,reason\nJane@Acme.io ,won,\nbob@acme.io,0,no_budget\n", encoding="utf-8")
    labels = read_outcomes(good)

    # By address, matched to a lead by its email: an address is never turned into an id
    # outside the deployment (ids are keyed with its secret).
    assert labels["email:jane@acme.io"] == Label(True, "csv")
    assert labels["email:bob@acme.io"] == Label(False, "csv", "no_budget")
    bad = tmp_path / "bad.csv"
    bad.write_text("email,outcome\njane@acme.io,maybe\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.csv:2: outcome 'maybe'"):
        read_outcomes(bad)
    with pytest.raises(ValueError, match="needs an `outcome` column"):
        (tmp_path / "none.csv").write_text("email\nx@y.io\n", encoding="utf-8")
        read_outcomes(tmp_path / "none.csv")


def test_auc_matches_the_pairwise_definition_with_ties():
    rng = random.Random(3)
    scores = [rng.choice([0, 5, 10, 15, 20]) for _ in range(200)]
    labels = [rng.random() < 0.2 + s / 40 for s in scores]
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    pairwise = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg) / (len(pos) * len(neg))
    assert auc(scores, labels) == pytest.approx(pairwise)
    assert auc([1, 2], [True, True]) is None
    assert auc([1, 2, 3, 4], [False, False, True, True]) == 1.0


def test_backtest_figures_on_engine_built_leads():
    leads = ([history(f"hot{i}@x.io", 3, True, "won") for i in range(12)]
             + [history(f"warm{i}@x.io", 6, False, "won" if i < 3 else "lost") for i in range(12)]
             + [history(f"cold{i}@x.io", 1, False, "lost") for i in range(12)]
             + [history(f"open{i}@x.io", 1, False, None) for i in range(4)])
    result = backtest(leads, rules(), as_of=NOW)
    assert result["leads"] == 40 and result["labelled"] == 36 and result["unlabelled"] == 4
    assert result["converted"] == 15 and result["label_sources"] == {"won": 15, "lost": 21}
    sql = result["criteria"]["sql"]
    assert sql["volume"] == 12 and sql["precision"] == 1.0 and sql["recall"] == pytest.approx(12 / 15)
    mql = result["criteria"]["mql"]
    assert mql["volume"] == 24 and mql["precision"] == pytest.approx(15 / 24)
    assert result["auc"] > 0.9
    assert [d["decile"] for d in result["deciles"]] == list(range(10, 0, -1))
    assert sum(d["leads"] for d in result["deciles"]) == 36
    assert result["deciles"][0]["rate"] == 1.0
    assert result["weeks"] and sum(w["sql"] for w in result["weeks"]) == 12
    assert result["gain"][-1] == {"share": 1.0, "captured": 1.0}
    # As of before anything happened: no lead existed yet.
    assert backtest(leads, rules(), as_of=NOW - timedelta(days=30))["leads"] == 0
    # Judged at the date of their events, before the demo requests: no SQL yet.
    early = backtest(leads, rules(), as_of=NOW - timedelta(days=3) + timedelta(minutes=30))
    assert early["criteria"]["sql"]["volume"] == 0


def test_rule_changes_read_as_sentences():
    old = rules()
    new = rules(version="t.2", engagement__rules=[
        {"id": "page_view", "when": {"event": "page_viewed"}, "points": 9},
        {"id": "pricing", "when": {"all": [{"event": "page_viewed"}, {"property": "url", "contains_any": ["/pricing"]}]},
         "points": 10}],
        lifecycle__mql={"when": {"all": [{"fit_grade": "C"}, {"metric": "engagement", "gte": 30}]}})
    lines = changes(old, new)
    assert "page_view points 7 → 9" in lines
    assert "new engagement rule pricing (+10)" in lines
    assert "engagement rule demo removed" in lines
    assert ("lifecycle.mql: fit grade C or better and engagement at least 40 → "
            "fit grade C or better and engagement at least 30") in lines
    assert changes(old, old) == []


def test_diff_names_exactly_the_leads_a_refresh_moves_and_changes_nothing():
    leads = [history(f"r{i}@x.io", 5, False, None) for i in range(5)] + [history("q@x.io", 1, False, None)]
    before = [h.lead.model_dump_json() for h in leads]
    current = rules()
    lower = rules(version="t.2", lifecycle__mql={"when": {"all": [{"fit_grade": "C"}, {"metric": "engagement", "gte": 30}]}})
    result = diff(leads, current, lower, now=NOW)
    assert result["moved_leads"] == 5 and result["moves"] == {"subscriber→mql": 5}
    assert result["volume"]["mql"] == {"before": 0, "after": 5}
    assert result["alerts"] == {"announce": False, "alerts": 5, "summary": 1}
    assert result["examples"][0]["rules"] == [] or result["examples"]
    assert [h.lead.model_dump_json() for h in leads] == before  # nothing written or changed in place
    moved = {h.lead.lead_id for h in leads if refresh(h.lead, lower, NOW, h.events).moves}
    assert moved == set(result["moved_ids"])
    stricter = rules(version="t.3", lifecycle__mql={"when": {"all": [{"fit_grade": "C"}, {"metric": "engagement", "gte": 45}]}})
    moved_up = [h for h in leads if h.lead.lead_id in moved]
    for h in moved_up:
        h.lead = refresh(h.lead, lower, NOW, h.events).lead
    back = diff(moved_up, lower, stricter, now=NOW)
    assert back["moved_leads"] == 0 and back["below_criteria"]["mql"] == 5  # forward only: they stay, counted
