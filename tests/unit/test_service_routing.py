"""Owner assignment in the service: in the move's own write, with the reason recorded."""

from __future__ import annotations

import pytest

from leadflow.domain.events import CanonicalEvent
from leadflow.domain.rules import parse_rules
from leadflow.usecases.leads import LeadService
from tests.unit.fakes import MemoryStore, StepClock
from tests.conftest import NOW, TEST_LEAD_IDS

BUYER = {"job_title": "VP Marketing", "company": "Acme", "company_size": 200, "industry": "software", "country": "US",
         "budget": "yes", "authority": "decision_maker", "need": "x", "timeline": "this_quarter"}
ROUTING = {
    "default_team": "inbound",
    "teams": [{"id": "inbound", "reps": [{"id": "ola", "email": "ola@seller.example", "slack_user": "U0OLA", "weight": 2},
                                         {"id": "siri", "email": "siri@seller.example", "weight": 1}]},
              {"id": "strategic", "reps": [{"id": "kim", "email": "kim@seller.example", "weight": 1}]}],
    "rules": [{"id": "named_accounts", "when": {"email_domain": True, "in": ["bigco.com"]}, "rep": "kim"}],
}


@pytest.fixture
def routed(rules):
    data = rules.model_dump(mode="json", by_alias=True, exclude_none=True)
    data["routing"] = ROUTING
    return parse_rules(data)


def demo_request(email: str, **traits) -> CanonicalEvent:
    return CanonicalEvent(type="form_submitted", email=email, properties={"form_kind": "demo_request"},
                          traits={**BUYER, **traits})


def test_ingest_sql_move_assigns_owner_in_the_same_write_with_the_reason(routed):
    store = MemoryStore()
    svc = LeadService(store, routed, clock=StepClock(NOW), ids=TEST_LEAD_IDS)

    result = svc.ingest(demo_request("jane@acme.com"))

    move = result.lead.history[-1]
    assert result.lead.stage == "sql" and result.lead.owner == "ola"
    assert move.owner == "ola" and move.routing["rule"] == "default_team" and move.routing["turn"] == 0
    assert "round-robin" in move.routing["reason"]
    assert store.writes == 1


def test_ingest_many_sqls_share_out_by_weight(routed):
    svc = LeadService(MemoryStore(), routed, clock=StepClock(NOW), ids=TEST_LEAD_IDS)

    owners = [svc.ingest(demo_request(f"b{i}@acme{i}.com")).lead.owner for i in range(6)]

    assert owners.count("ola") == 4 and owners.count("siri") == 2


def test_ingest_named_account_goes_to_its_rep_without_a_turn(routed):
    store = MemoryStore()
    svc = LeadService(store, routed, clock=StepClock(NOW), ids=TEST_LEAD_IDS)

    lead = svc.ingest(demo_request("cfo@bigco.com")).lead

    assert lead.owner == "kim" and lead.history[-1].routing["rule"] == "named_accounts"
    assert getattr(store, "turns", {}) == {}


def test_ingest_mql_below_assignment_stage_leaves_lead_unassigned(routed):
    svc = LeadService(MemoryStore(), routed, clock=StepClock(NOW), ids=TEST_LEAD_IDS)
    for i, kind in enumerate(["content_download", "content_download", "webinar"]):
        svc.ingest(CanonicalEvent(type="form_submitted", email="m@acme.com", event_id=f"e{i}",
                                  properties={"form_kind": kind}, traits={"job_title": "VP Marketing", "company_size": 200}))

    lead = svc.get_by_email("m@acme.com")

    assert lead.stage in ("lead", "mql") and lead.owner is None


def test_act_accept_by_a_rep_on_an_unassigned_sql_makes_them_owner(rules):
    data = rules.model_dump(mode="json", by_alias=True, exclude_none=True)
    data["routing"] = {**ROUTING, "teams": [{"id": "inbound", "reps": [
        {"id": "ola", "slack_user": "U0OLA", "email": "ola@seller.example", "available": False}]},
        ROUTING["teams"][1]]}
    svc = LeadService(MemoryStore(), parse_rules(data), clock=StepClock(NOW), ids=TEST_LEAD_IDS)
    lead = svc.ingest(demo_request("jane@acme.com")).lead
    assert lead.owner is None  # nobody available in the team

    accepted = svc.act(lead.lead_id, "accept", reason=None, by="U0OLA").lead

    assert accepted.owner == "ola" and accepted.history[-1].owner == "ola"
    assert accepted.first_touch_by == "U0OLA"
