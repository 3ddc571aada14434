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
