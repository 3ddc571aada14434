from __future__ import annotations

import copy

import pytest
import yaml

from leadflow.domain.errors import RulesError
from leadflow.domain.rules import parse_rules
from leadflow.settings import load_rules


@pytest.fixture
def raw():
    from importlib import resources

    return yaml.safe_load(resources.files("leadflow").joinpath("rules/default.yaml").read_text())


def test_default_rules_load_and_are_versioned(rules):
    assert rules.version and rules.lifecycle.mql.min_engagement < rules.lifecycle.sql.min_engagement


def test_rules_unknown_event_type_names_the_rule_and_field(raw):
    raw = copy.deepcopy(raw)
    raw["engagement"]["rules"][0]["when"] = {"event": "page_visit"}
    with pytest.raises(RulesError) as exc:
        parse_rules(raw)
    assert "engagement.rules[0] (newsletter_signup).when.event" in exc.value.message
    assert "unknown event type 'page_visit'" in exc.value.message


def test_rules_negative_half_life_is_refused(raw):
    raw = copy.deepcopy(raw)
    raw["engagement"]["rules"][1]["half_life_days"] = -3
    with pytest.raises(RulesError, match=r"content_download\)\.half_life_days"):
        parse_rules(raw)


def test_rules_repeat_of_unknown_rule_is_refused(raw):
    raw = copy.deepcopy(raw)
    raw["engagement"]["repeats"][0]["of"] = "pricing"
    with pytest.raises(RulesError, match="unknown engagement rule 'pricing'"):
        parse_rules(raw)


def test_rules_grades_out_of_order_are_refused(raw):
    raw = copy.deepcopy(raw)
    raw["fit"]["grades"] = {"A": 20, "B": 40, "C": 10}
    with pytest.raises(RulesError, match="strictly decreasing"):
        parse_rules(raw)


def test_rules_unknown_key_is_refused(raw):
    raw = copy.deepcopy(raw)
    raw["lifecycle"]["mql"]["min_enagement"] = 10
    with pytest.raises(RulesError, match="min_enagement"):
        parse_rules(raw)


def test_rules_file_replaces_default_via_path(tmp_path, raw):
    raw = copy.deepcopy(raw)
    raw["version"] = "custom-1"
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert load_rules(str(path)).version == "custom-1"


def test_rules_file_not_yaml_is_a_clear_error(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text("fit: [unclosed")
    with pytest.raises(RulesError, match="not valid YAML"):
        load_rules(str(path))


# Handoff, routing and SLA sections ---------------------------------------------------

ROUTING = {
    "default_team": "inbound",
    "teams": [
        {"id": "inbound", "manager": {"name": "Kari Nordmann", "email": "kari@example.com", "slack_user": "U0MANAGER"},
         "reps": [{"id": "ola", "name": "Ola Nordmann", "email": "ola@example.com", "slack_user": "U0OLA", "weight": 2,
                   "available": True, "hubspot_owner_id": "123", "salesforce_owner_id": "005000000000001"}]},
        {"id": "nordics", "reps": [{"id": "lars", "slack_user": "U0LARS"}]},
    ],
    "rules": [
        {"id": "named_accounts", "when": {"email_domain": True, "in": ["acme.com"]}, "rep": "ola"},
        {"id": "nordics", "when": {"trait": "country", "in": ["NO", "SE"]}, "team": "nordics"},
    ],
}


def _with(raw, section, value):
    raw = copy.deepcopy(raw)
    raw[section] = copy.deepcopy(value)
    return raw


def test_default_rules_have_handoff_and_sla_but_no_routing(rules):
    assert rules.routing is None
    assert rules.handoff.alert_stages == ["mql", "sql"] and rules.handoff.assign_owner_at == "sql"
    assert rules.handoff.alert_stage_set == frozenset({"mql", "sql"})
    assert [(e.after_business_hours, e.notify) for e in rules.sla.escalations] == [(1, "owner"), (2, "manager")]
    assert rules.sla.business_hours.timezone == "Europe/Oslo"


def test_rules_without_new_sections_get_the_documented_defaults(raw, rules):
    raw = copy.deepcopy(raw)
    for section in ("handoff", "sla", "routing"):
        raw.pop(section, None)
    bare = parse_rules(raw)
    assert bare.handoff == rules.handoff and bare.sla == rules.sla and bare.routing is None


def test_rules_routing_section_loads_with_owner_ids_as_strings(raw):
    data = _with(raw, "routing", ROUTING)
    data["routing"]["teams"][0]["reps"][0]["hubspot_owner_id"] = 123  # unquoted in YAML
    routing = parse_rules(data).routing
    assert routing.rep_by_id["ola"][0].hubspot_owner_id == "123"
    assert routing.team_by_id["nordics"].reps[0].weight == 1 and routing.team_by_id["nordics"].reps[0].available


def _set(path, value):
    """A mutation of raw that sets the value at a dotted path (ints index lists)."""
    def mutate(raw):
        node = raw
        keys = path.split(".")
        for key in keys[:-1]:
            node = node[int(key)] if key.isdigit() else node[key]
        last = keys[-1]
        if value is _DELETE:
            del node[int(last) if last.isdigit() else last]
        elif last.isdigit():
            node[int(last)] = value
        else:
            node[last] = value
    return mutate


class _Delete:
    def __repr__(self) -> str:  # stable test ids across xdist workers
        return "<deleted>"


_DELETE = _Delete()

INVALID = [
    # routing
    ("routing.teams.1.id", "inbound", "routing: team ids must be unique; repeated: inbound"),
    ("routing.teams.1.reps.0.id", "ola", "routing: rep ids must be unique across teams; repeated: ola"),
    ("routing.teams.0.reps.0.weight", -1, "routing.teams[0] (inbound).reps[0] (ola).weight: Input should be greater than or equal to 0"),
    ("routing.teams.0.reps.0.weight", 1.5, "routing.teams[0] (inbound).reps[0] (ola).weight: Input should be a valid integer"),
    ("routing.teams.0.reps.0.weight", "2", "routing.teams[0] (inbound).reps[0] (ola).weight: Input should be a valid integer"),
    ("routing.teams.0.reps.0.weight", True, "routing.teams[0] (inbound).reps[0] (ola).weight: Input should be a valid integer"),
    ("routing.teams.0.reps.0.slack_user", "@ola", "routing.teams[0] (inbound).reps[0] (ola).slack_user: slack_user must be a Slack member id"),
    ("routing.teams.0.reps.0.email", "ola", "routing.teams[0] (inbound).reps[0] (ola).email: not an email address: 'ola'"),
    ("routing.teams.0.reps.0.avialable", True, "routing.teams[0] (inbound).reps[0] (ola).avialable: Extra inputs are not permitted"),
    ("routing.teams.1.reps", [], "routing.teams[1] (nordics).reps: List should have at least 1 item"),
    ("routing.teams.0.manager", {"name": "Kari"}, "routing.teams[0] (inbound).manager: a manager needs an email or a slack_user"),
    ("routing.default_team", "sales", "routing: default_team 'sales' is not a team; teams: inbound, nordics"),
    ("routing.rules.1.team", "nordic", "routing: rules[1] (nordics).team: unknown team 'nordic'; teams: inbound, nordics"),
    ("routing.rules.0.rep", "kari", "routing: rules[0] (named_accounts).rep: unknown rep 'kari'; reps: ola, lars"),
    ("routing.rules.0.team", "inbound", "routing.rules[0] (named_accounts): a routing rule names exactly one of rep or team"),
    ("routing.rules.1.team", _DELETE, "routing.rules[1] (nordics): a routing rule names exactly one of rep or team"),
    ("routing.rules.1.id", "named_accounts", "routing: routing rule ids must be unique; repeated: named_accounts"),
    ("routing.rules.1.id", "default_team", "routing.rules[1] (default_team).id: 'default_team' is reserved"),
    ("routing.rules.1.when", {"event": "form_submitted"}, "routing.rules[1] (nordics).when: routing looks at the lead, not an event"),
    ("routing.rules.1.when", {"trait": "country"}, "routing.rules[1] (nordics).when: trait needs an operator"),
    # sla
    ("sla.escalations.0.notify", "boss", "sla.escalations[0].notify: Input should be 'owner' or 'manager'"),
    ("sla.escalations.0.after_business_hours", 0, "sla.escalations[0].after_business_hours: Input should be greater than 0"),
    ("sla.escalations.1.after_business_hours", 1, "sla: escalations[1].after_business_hours (1) must be greater than escalations[0].after_business_hours (1)"),
    ("sla.accept_within_business_hours", -1, "sla.accept_within_business_hours: Input should be greater than 0"),
    ("sla.business_hours.timezone", "Europe/Olso", "sla.business_hours.timezone: unknown time zone 'Europe/Olso'"),
    ("sla.business_hours.timezone", "../etc/passwd", "sla.business_hours.timezone: unknown time zone"),
    ("sla.business_hours.start", "9am", "sla.business_hours.start: not a HH:MM time of day: '9am'"),
    ("sla.business_hours.end", "24:00", "sla.business_hours.end: not a HH:MM time of day: '24:00'"),
    ("sla.business_hours.start", 540, "sla.business_hours.start: write times as quoted \"HH:MM\" strings"),
    ("sla.business_hours.start", "17:00", "sla.business_hours: start (17:00) must be before end (17:00)"),
    ("sla.business_hours.days", ["mon", "funday"], "sla.business_hours.days[1]: Input should be 'mon', 'tue'"),
    ("sla.business_hours.days", ["mon", "tue", "mon"], "sla.business_hours.days: days repeats mon"),
    ("sla.business_hours.days", [], "sla.business_hours.days: days must name at least one weekday"),
    ("sla.business_hours.holidays", ["2026-13-01"], "sla.business_hours.holidays[0]: Input should be a valid date"),
    # handoff
    ("handoff.assign_owner_at", "lead", "handoff.assign_owner_at: Input should be 'mql' or 'sql'"),
    ("handoff.alert_stages", ["sql", "opportunity"], "handoff.alert_stages[1]: Input should be 'mql' or 'sql'"),
    ("handoff.alert_stages", ["sql", "sql"], "handoff.alert_stages: alert_stages repeats sql"),
    ("handoff.reject_reasons", [], "handoff.reject_reasons: reject_reasons must name at least one reason"),
    ("handoff.reject_reasons", ["no_budget", "No Budget"], "handoff.reject_reasons: reject_reasons must be snake_case ids"),
    ("handoff.reject_reasons", ["other", "other"], "handoff.reject_reasons: reject_reasons repeats other"),
]


@pytest.mark.parametrize(("path", "value", "message"), INVALID, ids=[f"{p}={v!r}" for p, v, _ in INVALID])
def test_parse_rules_invalid_handoff_routing_or_sla_names_the_field(raw, path, value, message):
    data = _with(raw, "routing", ROUTING)
    _set(path, value)(data)
    with pytest.raises(RulesError) as exc:
        parse_rules(data)
    assert message in exc.value.message


def test_parse_rules_unquoted_yaml_time_names_the_number(raw):
    text = yaml.safe_dump(raw).replace("start: 09:00", "start: 9:00").replace("start: '09:00'", "start: 9:00")
    assert "start: 9:00" in text
    with pytest.raises(RulesError, match=r"sla\.business_hours\.start: write times as quoted .* number 540"):
        parse_rules(yaml.safe_load(text))


def test_parse_rules_routing_absent_is_valid(raw):
    data = copy.deepcopy(raw)
    data.pop("routing", None)
    assert parse_rules(data).routing is None


def test_parse_rules_empty_escalations_are_valid(raw):
    data = copy.deepcopy(raw)
    data["sla"]["escalations"] = []
    assert parse_rules(data).sla.escalations == []


def test_parse_rules_routing_example_in_default_file_is_valid(raw):
    from importlib import resources

    text = resources.files("leadflow").joinpath("rules/default.yaml").read_text()
    block = text.split("# routing:\n", 1)[1].split("\n\n", 1)[0]
    example = yaml.safe_load("routing:\n" + "\n".join(line[2:] for line in block.splitlines()))
    routing = parse_rules(_with(raw, "routing", example["routing"])).routing
    assert routing.default_team == "inbound"
    nordics = next(r for r in routing.rules if r.id == "nordics")
    assert "NO" in nordics.when.in_


def test_parse_rules_with_bare_no_in_country_list_names_the_yaml_trap(rules):
    import yaml

    from leadflow.domain.errors import RulesError
    from leadflow.domain.rules import parse_rules

    data = rules.model_dump(mode="json", by_alias=True, exclude_none=True)
    data["fit"]["rules"][0]["when"] = yaml.safe_load("{trait: country, in: [SE, NO, DK]}")

    with pytest.raises(RulesError, match="quote them"):
        parse_rules(data)
