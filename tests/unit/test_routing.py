"""Owner routing: rule order, weighted round-robin, availability, actors."""

from __future__ import annotations

import copy
from collections import Counter

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from leadflow.domain.rules import Rep, parse_rules
from leadflow.domain.routing import assign, manager_of, owner_by_id, rep_for_actor, smooth_weighted_sequence

ROUTING = {
    "default_team": "inbound",
    "teams": [
        {"id": "inbound",
         "manager": {"name": "Kari Nordmann", "email": "kari@example.com", "slack_user": "U0MANAGER"},
         "reps": [
             {"id": "ola", "name": "Ola Nordmann", "email": "Ola@Example.com", "slack_user": "U0OLA", "weight": 2,
              "hubspot_owner_id": "123", "salesforce_owner_id": "005000000000001"},
             {"id": "emma", "name": "Emma Hansen", "email": "emma@example.com", "slack_user": "U0EMMA", "weight": 1},
         ]},
        {"id": "nordics",
         "reps": [
             {"id": "lars", "name": "Lars Berg", "slack_user": "U0LARS", "weight": 2},
             {"id": "sofie", "name": "Sofie Lund", "slack_user": "U0SOFIE", "weight": 1},
         ]},
        {"id": "enterprise",
         "reps": [{"id": "ingrid", "name": "Ingrid Dahl", "slack_user": "U0INGRID", "weight": 1}]},
    ],
    "rules": [
        {"id": "named_accounts", "description": "Named accounts go to their account owner",
         "when": {"email_domain": True, "in": ["acme.com", "globex.com"]}, "rep": "ola"},
        {"id": "nordics", "when": {"trait": "country", "in": ["NO", "SE", "DK", "FI", "IS"]}, "team": "nordics"},
        {"id": "enterprise", "when": {"trait": "company_size", "gte": 1000}, "team": "enterprise"},
    ],
}


@pytest.fixture(scope="module")
def raw():
    from importlib import resources

    return yaml.safe_load(resources.files("leadflow").joinpath("rules/default.yaml").read_text())


def rules_with(raw, mutate=None):
    data = copy.deepcopy(raw)
    data["routing"] = copy.deepcopy(ROUTING)
    if mutate:
        mutate(data["routing"])
    return parse_rules(data)


@pytest.fixture(scope="module")
def routed(raw):
    return rules_with(raw)


class Turns:
    """The store's per-team atomic counter: 0, 1, 2, … per team."""

    def __init__(self, start: int = 0):
        self.next: Counter[str] = Counter()
        self.start = start
        self.calls: list[str] = []

    def __call__(self, team: str) -> int:
        self.calls.append(team)
        n = self.start + self.next[team]
        self.next[team] += 1
        return n


def no_turn(team: str) -> int:
    raise AssertionError(f"turn taken for {team}")


def set_rep(routing, rep_id, **fields):
    for team in routing["teams"]:
        for rep in team["reps"]:
            if rep["id"] == rep_id:
                rep.update(fields)


# Rule order ---------------------------------------------------------------------------

def test_assign_named_account_in_nordic_enterprise_goes_to_account_rep(routed):
    a = assign({"country": "NO", "company_size": 5000}, "pat@acme.com", routed, no_turn)
    assert (a.rule, a.team, a.owner.id, a.turn) == ("named_accounts", "inbound", "ola", None)
    assert a.reason == "named_accounts: email domain acme.com → ola (Ola Nordmann)"


def test_assign_nordic_enterprise_goes_to_territory_before_segment(routed):
    a = assign({"country": "NO", "company_size": 5000}, "pat@initech.no", routed, Turns())
    assert (a.rule, a.team) == ("nordics", "nordics")


def test_assign_large_company_outside_territory_goes_to_segment_team(routed):
    a = assign({"country": "US", "company_size": 5000}, "pat@initech.com", routed, Turns())
    assert (a.rule, a.team, a.owner.id) == ("enterprise", "enterprise", "ingrid")


def test_assign_no_rule_matching_goes_to_default_team(routed):
    a = assign({"country": "US", "company_size": 20}, None, routed, Turns())
    assert (a.rule, a.team) == ("default_team", "inbound")
    assert a.reason.startswith("no routing rule matched → default team inbound; weighted round-robin turn 0 → ")


def test_assign_team_rule_reason_names_value_turn_and_weight(routed):
    a = assign({"country": "NO"}, None, routed, Turns(start=7))
    assert a.turn == 7
    # nordics cycle with lars=2, sofie=1 is lars sofie lars; turn 7 → 7 % 3 = 1 → sofie
    assert a.owner.id == "sofie"
    assert a.reason == "nordics: country NO → team nordics; weighted round-robin turn 7 → sofie (weight 1)"


def test_assign_team_rule_takes_exactly_one_turn_of_that_team(routed):
    turns = Turns()
    assign({"country": "SE"}, None, routed, turns)
    assert turns.calls == ["nordics"]


# Round-robin --------------------------------------------------------------------------

def test_sequence_nginx_weights_give_smooth_order():
    reps = [Rep(id="a", weight=5), Rep(id="b", weight=1), Rep(id="c", weight=1)]
    assert smooth_weighted_sequence(reps) == ["a", "a", "b", "a", "c", "a", "a"]


def test_sequence_unavailable_and_zero_weight_reps_are_left_out():
    reps = [Rep(id="a", weight=2), Rep(id="b", weight=3, available=False), Rep(id="c", weight=0), Rep(id="d", weight=1)]
    assert smooth_weighted_sequence(reps) == ["a", "d", "a"]


def test_sequence_no_available_rep_is_empty():
    assert smooth_weighted_sequence([Rep(id="a", available=False), Rep(id="b", weight=0)]) == []


@given(st.lists(st.integers(min_value=0, max_value=12), min_size=1, max_size=6))
def test_sequence_any_weights_gives_each_rep_exactly_its_weight(weights):
    reps = [Rep(id=f"r{i}", weight=w) for i, w in enumerate(weights)]
    seq = smooth_weighted_sequence(reps)
    assert len(seq) == sum(weights)
    assert Counter(seq) == {f"r{i}": w for i, w in enumerate(weights) if w}
    assert seq == smooth_weighted_sequence(reps)  # deterministic


def test_assign_many_turns_distributes_exactly_by_weight(routed):
    turns = Turns()
    owners = Counter(assign({}, None, routed, turns).owner.id for _ in range(300))
    assert owners == {"ola": 200, "emma": 100}


def test_assign_unavailable_rep_is_never_picked(raw):
    rules = rules_with(raw, lambda r: set_rep(r, "ola", available=False))
    turns = Turns()
    assert {assign({}, None, rules, turns).owner.id for _ in range(20)} == {"emma"}


def test_assign_zero_weight_rep_is_never_picked(raw):
    rules = rules_with(raw, lambda r: set_rep(r, "lars", weight=0))
    turns = Turns()
    assert {assign({"country": "FI"}, None, rules, turns).owner.id for _ in range(20)} == {"sofie"}


def test_assign_all_reps_unavailable_leaves_lead_unassigned_without_turn(raw):
    def mutate(r):
        set_rep(r, "lars", available=False)
        set_rep(r, "sofie", available=False)
    rules = rules_with(raw, mutate)
    a = assign({"country": "NO"}, None, rules, no_turn)
    assert (a.owner, a.team, a.rule, a.turn) == (None, "nordics", "nordics", None)
    assert a.reason.endswith("no available rep in team nordics")


def test_assign_named_rep_unavailable_falls_back_to_team_round_robin(raw):
    rules = rules_with(raw, lambda r: set_rep(r, "ola", available=False))
    turns = Turns()
    a = assign({}, "pat@globex.com", rules, turns)
    assert (a.rule, a.team, a.owner.id, a.turn) == ("named_accounts", "inbound", "emma", 0)
    assert turns.calls == ["inbound"]
    assert "ola, who is unavailable" in a.reason and "round-robin" in a.reason


def test_assign_named_rep_available_takes_no_turn(routed):
    assert assign({}, "PAT@ACME.COM".lower(), routed, no_turn).owner.id == "ola"


def test_assign_without_routing_section_is_unassigned(rules):
    a = assign({"country": "NO"}, "pat@acme.com", rules, no_turn)
    assert (a.owner, a.team, a.rule, a.turn) == (None, None, "unassigned", None)


# Owners, managers, actors -------------------------------------------------------------

def test_assign_owner_carries_contact_crm_ids_and_team(routed):
    owner = assign({}, "pat@acme.com", routed, no_turn).owner
    assert owner.model_dump() == {"id": "ola", "name": "Ola Nordmann", "email": "Ola@Example.com", "slack_user": "U0OLA",
                                  "hubspot_owner_id": "123", "salesforce_owner_id": "005000000000001", "team": "inbound"}


def test_owner_by_id_unavailable_rep_is_still_found(raw):
    rules = rules_with(raw, lambda r: set_rep(r, "lars", available=False))
    assert owner_by_id("lars", rules).team == "nordics"
    assert owner_by_id("nobody", rules) is None


def test_manager_of_team_with_manager_returns_manager(routed):
    assert manager_of("inbound", routed).slack_user == "U0MANAGER"


def test_manager_of_team_without_manager_or_routing_is_none(routed, rules):
    assert manager_of("nordics", routed) is None
    assert manager_of("unknown", routed) is None
    assert manager_of("inbound", rules) is None


def test_rep_for_actor_by_slack_id_finds_rep(routed):
    assert rep_for_actor("U0LARS", routed).id == "lars"


def test_rep_for_actor_by_email_ignores_case(routed):
    assert rep_for_actor(" ola@EXAMPLE.com ", routed).id == "ola"


def test_rep_for_actor_by_rep_id_finds_rep(routed):
    assert rep_for_actor("emma", routed).team == "inbound"


def test_rep_for_actor_unknown_or_no_routing_is_none(routed, rules):
    assert rep_for_actor("U0NOBODY", routed) is None
    assert rep_for_actor("", routed) is None
    assert rep_for_actor("U0OLA", rules) is None
