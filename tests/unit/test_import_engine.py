"""apply_import: a row's history, stage and outcome, applied once, announced never."""

from __future__ import annotations

from datetime import timedelta

from leadflow.domain.engine import apply_import, new_lead, rescore
from leadflow.domain.events import finalise, parse_event
from leadflow.domain.lead import SalesOutcome
from tests.conftest import NOW, lead_id_for


EMAIL = "ada@acme.com"
BUYER = {"job_title": "VP Marketing", "company_size": 120, "industry": "software", "country": "NO"}


def events(days_ago: float = 3):
    at = (NOW - timedelta(days=days_ago)).isoformat()
    raws = [{"type": "identify", "traits": BUYER}, {"type": "content_downloaded"}, {"type": "webinar_attended"},
            {"type": "form_submitted", "properties": {"form_kind": "demo_request"}}]
    return [finalise(parse_event({"event_id": f"import:t:row:{i}", "email": EMAIL, "occurred_at": at, **raw}), now=NOW)
            for i, raw in enumerate(raws)]


def fresh():
    return new_lead(lead_id_for(EMAIL), email=EMAIL, now=NOW - timedelta(days=3))


def run(lead, rules, **row):
    row = {"stage": None, "stage_at": None, "outcome": None, "owner": None, **row}
    return apply_import(lead, events(), key="row", rules=rules, now=NOW, **row)


def test_the_rules_move_an_unstaged_row_quietly_and_a_rerun_is_a_duplicate(rules):
    first = run(fresh(), rules)
    assert first.lead.stage == "sql" and first.moves and all(not m.announced for m in first.lead.history)
    assert first.lead.moves == [] and len(first.lead.applied) == 4
    assert run(first.lead, rules).duplicate


def test_a_stated_stage_is_the_truth_and_the_rules_do_not_take_it_back(rules):
    first = run(fresh(), rules, stage="lead", stage_at=NOW - timedelta(days=1))
    lead = first.lead
    assert lead.stage == "lead" and lead.history[-1].cause.actor == "import"
    assert lead.history[-1].at == NOW - timedelta(days=1)
    assert run(lead, rules, stage="lead", stage_at=NOW - timedelta(days=1)).duplicate
    later = rescore(lead, rules, NOW + timedelta(hours=1))  # the hourly job: old behaviour does not re-qualify
    assert later.moves == [] and later.lead.stage == "lead"


def test_won_makes_a_customer_and_keeps_the_outcome(rules):
    won = SalesOutcome(result="won", at=NOW - timedelta(days=1), by="import", value=1200.0)
    lead = run(fresh(), rules, outcome=won).lead
    assert lead.stage == "customer" and lead.outcome == won
    assert lead.history[-1].at == NOW - timedelta(days=1)
    assert run(lead, rules, outcome=won).duplicate


def test_the_owner_a_row_names_is_kept(rules):
    lead = run(fresh(), rules, owner="moses").lead
    assert lead.owner == "moses"
