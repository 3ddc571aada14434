from __future__ import annotations

import pytest

from leadflow.domain.engine import apply_action, apply_event, new_lead
from leadflow.domain.errors import IllegalTransition, InvalidInput
from leadflow.domain.events import finalise, parse_event
from tests.conftest import NOW

BANT = {"budget": "yes", "authority": "decision_maker", "need": "speed", "timeline": "this_quarter"}


def lead_in(rules, stage):
    lead = new_lead("ld_x", email="x@acme.io", now=NOW)
    event = finalise(parse_event({"event_id": "d", "type": "form_submitted", "email": "x@acme.io",
                                  "properties": {"form_kind": "demo_request"}, "traits": BANT}), now=NOW)
    lead = apply_event(lead, event, rules, NOW).lead
    assert lead.stage == "sql"
    path = {"sql": [], "opportunity": ["opportunity"], "customer": ["opportunity", "won"], "lead": ["reject"]}[stage]
    for action in path:
        lead = apply_action(lead, action, reason="r", by="rep", rules=rules, now=NOW).lead
    return lead


@pytest.mark.parametrize("start,action,end", [
    ("sql", "accept", "sql"), ("sql", "reject", "lead"), ("sql", "recycle", "lead"), ("sql", "opportunity", "opportunity"),
    ("sql", "won", "customer"), ("opportunity", "won", "customer"), ("opportunity", "lost", "lead"),
    ("sql", "disqualify", "sql"),
])
def test_action_legal_moves_to_expected_stage(rules, start, action, end):
    lead = apply_action(lead_in(rules, start), action, reason="r", by="rep", rules=rules, now=NOW).lead
    assert lead.stage == end
    assert lead.history[-1].cause.kind == "actor" and lead.history[-1].cause.action == action


@pytest.mark.parametrize("start,action", [
    ("lead", "accept"), ("lead", "opportunity"), ("sql", "lost"), ("customer", "reject"), ("customer", "opportunity"),
])
def test_action_illegal_move_raises_with_reason(rules, start, action):
    with pytest.raises(IllegalTransition, match=f"{action}: the lead is in stage {start}"):
        apply_action(lead_in(rules, start), action, reason="r", by="rep", rules=rules, now=NOW)


def test_reject_resets_engagement_so_lead_does_not_requalify_on_next_event(rules):
    lead = apply_action(lead_in(rules, "sql"), "reject", reason="no_budget", by="rep", rules=rules, now=NOW).lead
    event = finalise(parse_event({"event_id": "o", "type": "email_opened", "email": "x@acme.io"}), now=NOW)
    after = apply_event(lead, event, rules, NOW).lead
    assert after.stage == "lead" and after.engagement_score < 5


def test_disqualified_lead_is_blocked_from_opportunity(rules):
    lead = apply_action(lead_in(rules, "sql"), "disqualify", reason="fake", by="rep", rules=rules, now=NOW).lead
    with pytest.raises(IllegalTransition, match="disqualified"):
        apply_action(lead, "opportunity", reason=None, by="rep", rules=rules, now=NOW)


def test_unknown_action_is_invalid_input(rules):
    with pytest.raises(InvalidInput, match="unknown action"):
        apply_action(lead_in(rules, "sql"), "promote", reason=None, by=None, rules=rules, now=NOW)
