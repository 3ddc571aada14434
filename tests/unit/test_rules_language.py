"""Rules language 2: custom events, aggregates, per-unit points and bands, engagement
groups, stage criteria, typed traits and explanations a rep can read."""

from __future__ import annotations

import copy
import math
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from leadflow.domain.conform import conform
from leadflow.domain.engine import apply_action, apply_event, new_lead
from leadflow.domain.errors import InvalidInput, RulesError
from leadflow.domain.events import finalise, parse_event
from leadflow.domain.forms import to_event
from leadflow.domain.rules import parse_rules
from leadflow.domain.scoring import Subject, matches
from tests.conftest import NOW, lead_id_for, rules_with as shared_rules_with

BASE = yaml.safe_load((Path(__file__).parents[2] / "functions/leadflow/rules/default.yaml").read_text())


def rules_with(**changes):
    """The default rules as language 2, with sections replaced."""
    if "engagement__rules" in changes:
        changes.setdefault("engagement__repeats", [])  # the default repeat counts a default rule
    return shared_rules_with({**BASE, "language": 2}, **changes)


SITE = {"site_visit": {"description": "A visit to the website", "properties": {"seconds": "number", "pages": "number"}},
        "sms_sent": {"description": "An SMS sent to the lead"}}
TIME_ON_SITE = {"id": "time_on_site", "description": "time on site", "of": {"event": "site_visit"}, "fn": "sum",
                "property": "seconds", "window_days": 30, "unit": "s"}
VISITS = {"id": "visits", "of": {"event": "site_visit"}, "fn": "count", "window_days": 30}


def ev(type_, days_ago=0.0, email="jane@acme.com", **kw):
    return {"type": type_, "email": email, "occurred_at": (NOW - timedelta(days=days_ago)).isoformat(), **kw}


def play(rules, raws, now=NOW):
    lead = None
    for i, raw in enumerate(raws):
        event = finalise(conform(parse_event({"event_id": f"e{i}", **raw}), rules), now=now)
        if lead is None:
            lead = new_lead(lead_id_for(event.email), email=event.email, now=now)
        lead = apply_event(lead, event, rules, now).lead
    return lead


def line(lead, rule_id):
    return next(l for l in lead.explanation if l["rule"] == rule_id)


# -- versions ---------------------------------------------------------------------------


def test_a_language_1_file_loads_unchanged_and_keeps_its_thresholds():
    rules = parse_rules(copy.deepcopy(BASE))
    assert rules.language == 1
    assert rules.lifecycle.mql.criterion.all[1].metric == "engagement"


def test_language_2_features_in_a_language_1_file_say_how_to_migrate():
    data = copy.deepcopy(BASE)
    data["events"] = SITE
    with pytest.raises(RulesError, match="need rules language 2: add `language: 2`"):
        parse_rules(data)


def test_an_unknown_language_is_refused():
    data = copy.deepcopy(BASE)
    data["language"] = 3
    with pytest.raises(RulesError, match="reads rules language 1 and 2, not 3"):
        parse_rules(data)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nan_and_infinity_are_never_thresholds(bad):
    data = copy.deepcopy(BASE)
    data["fit"]["rules"][5]["when"] = {"trait": "company_size", "gte": bad}
    with pytest.raises(RulesError, match=r"fit.rules\[5\] \(company_mid_market\).when.gte"):
        parse_rules(data)


# -- custom events and typed values -----------------------------------------------------


def test_a_declared_event_type_is_accepted_and_an_undeclared_one_is_422():
    rules = rules_with(events=SITE)
    assert conform(parse_event(ev("sms_sent")), rules).type == "sms_sent"
    with pytest.raises(InvalidInput) as caught:
        conform(parse_event(ev("call_logged")), rules)
    assert caught.value.field == "type" and "sms_sent" in str(caught.value)


def test_a_rule_on_an_undeclared_event_type_names_it_at_load():
    data = copy.deepcopy(BASE)
    data["engagement"]["rules"][0]["when"] = {"event": "sms_sent"}
    with pytest.raises(RulesError, match=r"engagement.rules\[0\] \(newsletter_signup\).when.event: unknown event type 'sms_sent'"):
        parse_rules(data)


def test_declared_property_types_are_checked():
    rules = rules_with(events=SITE)
    ok = conform(parse_event(ev("site_visit", properties={"seconds": "812", "pages": 3})), rules)
    assert ok.properties == {"seconds": 812, "pages": 3}
    with pytest.raises(InvalidInput) as caught:
        conform(parse_event(ev("site_visit", properties={"seconds": "a while"})), rules)
    assert caught.value.field == "properties.seconds"


@pytest.mark.parametrize("value", ["NaN", "nan", "inf", "-Infinity", "1e400"])
def test_nan_and_infinity_as_text_are_422_naming_the_trait(value, rules):
    with pytest.raises(InvalidInput) as caught:
        conform(parse_event(ev("identify", traits={"company_size": value})), rules)
    assert caught.value.field == "traits.company_size"


@pytest.mark.parametrize("where", ["traits", "properties"])
def test_nan_and_infinity_as_numbers_are_422_naming_the_field(where):
    for bad in (float("nan"), float("inf")):
        with pytest.raises(InvalidInput) as caught:
            parse_event(ev("page_viewed", **{where: {"x": bad}}))
        assert caught.value.field == f"{where}.x" and "NaN and infinities" in str(caught.value)


def test_form_ranges_and_plus_sizes_stay_numbers(rules):
    for text, number in (("51-200", 51), ("1,000+", 1000), (" 120 ", 120), ("12.5", 12.5)):
        assert conform(parse_event(ev("identify", traits={"company_size": text})), rules).traits["company_size"] == number


def test_numbers_compare_as_numbers_not_text(rules):
    cond = parse_rules({**copy.deepcopy(BASE), "intent_validation": [
        {"id": "two", "reason": "two", "when": {"trait": "seats", "equals": 2}},
        {"id": "list", "reason": "list", "when": {"trait": "seats", "in": [1, 2]}}]}).intent_validation
    for value in (2, 2.0, "2", "2.00"):
        subject = Subject(traits={"seats": value})
        assert matches(cond[0].when, subject) and matches(cond[1].when, subject), value
    assert not matches(cond[0].when, Subject(traits={"seats": "20"}))


def test_nan_fails_every_numeric_test():
    rules = parse_rules(copy.deepcopy(BASE))
    mid_market = rules.fit.rules[5].when
    assert not matches(mid_market, Subject(traits={"company_size": float("nan")}))


@pytest.mark.parametrize("typed", ["United States", "united states", "USA", "US", "us", "United States of America"])
def test_countries_by_code_or_english_name(typed, rules):
    lead = play(rules, [ev("identify", traits={"country": typed})])
    assert lead.traits["country"] == "US"
    assert "country_served" in {l["rule"] for l in lead.explanation}


def test_a_rules_file_may_name_countries_in_english():
    data = copy.deepcopy(BASE)
    data["fit"]["rules"][8]["when"] = {"trait": "country", "in": ["Norway", "Sweden"]}
    rules = parse_rules(data)
    assert "country_served" in {l["rule"] for l in play(rules, [ev("identify", traits={"country": "NO"})]).explanation}


def test_an_unknown_country_is_kept_as_typed(rules):
    lead = play(rules, [ev("identify", traits={"country": "Asia/Pacific Region"})])
    assert lead.traits["country"] == "Asia/Pacific Region"


# -- aggregates, per-unit points, bands ----------------------------------------------------


def visit(days_ago, seconds, pages=2):
    return ev("site_visit", days_ago=days_ago, properties={"seconds": seconds, "pages": pages})


def test_sum_over_a_window_scores_per_unit_with_a_cap_and_says_so():
    rules = rules_with(events=SITE, engagement__aggregates=[TIME_ON_SITE], engagement__rules=[
        {"id": "time_spent", "description": "Time on site", "aggregate": "time_on_site", "points": 4, "per": 100,
         "cap": 30}])
    lead = play(rules, [visit(40, 5000), visit(10, 400), visit(2, 412)])
    got = line(lead, "time_spent")
    assert got["points"] == 30  # 812 s -> 8 units x 4 = 32, capped at 30; the 40-day-old visit is out of the window
    assert "time on site 812 s over 30 days (2 events)" in got["detail"] and "capped at 30" in got["detail"]
    assert got["values"] == {"time_on_site": 812}


def test_count_in_a_band_says_exactly_one_visit():
    rules = rules_with(events=SITE, engagement__aggregates=[VISITS], engagement__rules=[
        {"id": "single_visit", "aggregate": "visits", "between": [1, 1], "points": -5}])
    assert line(play(rules, [visit(1, 30)]), "single_visit")["points"] == -5
    assert "single_visit" not in {l["rule"] for l in play(rules, [visit(1, 30), visit(2, 30)]).explanation}


@pytest.mark.parametrize("fn,expected", [("avg", 300.0), ("min", 100.0), ("max", 500.0), ("count", 3.0), ("sum", 900.0)])
def test_aggregate_functions(fn, expected):
    agg = {**TIME_ON_SITE, "id": "agg", "fn": fn}
    if fn == "count":
        agg.pop("property")
    rules = rules_with(events=SITE, engagement__aggregates=[agg])
    lead = play(rules, [visit(3, 100), visit(2, 300), visit(1, 500)])
    from leadflow.domain.engine import score_lead

    assert score_lead(lead, rules, NOW).aggregates["agg"] == pytest.approx(expected)


def test_distinct_counts_different_values():
    rules = rules_with(engagement__aggregates=[
        {"id": "pages", "of": {"event": "page_viewed"}, "fn": "distinct", "property": "url", "window_days": 14}])
    lead = play(rules, [ev("page_viewed", properties={"url": u}) for u in ("/a", "/b", "/A", "/b")])
    from leadflow.domain.engine import score_lead

    assert score_lead(lead, rules, NOW).aggregates["pages"] == 2


def test_decay_weights_each_event_in_sum_and_count():
    agg = {**TIME_ON_SITE, "half_life_days": 10}
    rules = rules_with(events=SITE, engagement__aggregates=[agg], engagement__rules=[
        {"id": "time_spent", "aggregate": "time_on_site", "points": 1, "per": 1}])
    lead = play(rules, [visit(10, 800), visit(0, 100)])
    got = line(lead, "time_spent")
    assert got["values"]["time_on_site"] == pytest.approx(500)  # 800 x 0.5 + 100
    assert "decayed with a 10-day half-life" in got["detail"]


def test_a_decayed_minimum_is_refused():
    with pytest.raises(RulesError, match="half_life_days decays each event's weight; min has no weights"):
        rules_with(events=SITE, engagement__aggregates=[{**TIME_ON_SITE, "fn": "min", "half_life_days": 7}])


def test_per_unit_points_on_events():
    rules = rules_with(events={"purchase": {"properties": {"amount": "number"}}}, engagement__rules=[
        {"id": "spend", "when": {"event": "purchase"}, "points": 1, "per": 10, "value_of": "amount", "cap": 20}])
    assert line(play(rules, [ev("purchase", properties={"amount": 57})]), "spend")["points"] == 5
    assert line(play(rules, [ev("purchase", properties={"amount": 570})]), "spend")["points"] == 20


def test_between_bands_on_fit_traits():
    data = copy.deepcopy(BASE)
    data["fit"]["rules"][5]["when"] = {"trait": "company_size", "between": [50, 5000]}
    rules = parse_rules(data)
    for size, hit in ((49, False), (50, True), (5000, True), (5001, False)):
        assert matches(rules.fit.rules[5].when, Subject(traits={"company_size": size})) is hit


def test_an_aggregate_rule_needs_a_band_or_a_unit():
    with pytest.raises(RulesError, match="needs a band"):
        rules_with(events=SITE, engagement__aggregates=[TIME_ON_SITE],
                   engagement__rules=[{"id": "x", "aggregate": "time_on_site", "points": 5}])


# -- groups ----------------------------------------------------------------------------


SMS_RULES = [
    {"id": "sms", "description": "An SMS went out", "when": {"event": "sms_sent"}, "points": 20, "group": "contacted"},
    {"id": "call", "when": {"event": "call_logged"}, "points": 15, "group": "contacted"},
]


def test_a_best_group_counts_only_its_strongest_rule():
    rules = rules_with(events={**SITE, "call_logged": {}}, engagement__rules=SMS_RULES)
    lead = play(rules, [ev("sms_sent"), ev("call_logged")])
    assert {l["rule"] for l in lead.explanation if l["axis"] == "engagement"} == {"sms"}
    assert lead.engagement_score == 20


def test_a_sum_group_adds_up_to_its_cap_and_shows_the_excess():
    rules = rules_with(events={**SITE, "call_logged": {}}, engagement__rules=SMS_RULES,
                       engagement__groups={"contacted": {"mode": "sum", "cap": 25}})
    lead = play(rules, [ev("sms_sent"), ev("call_logged")])
    assert lead.engagement_score == 25
    assert line(lead, "contacted")["points"] == -10 and "capped at 25" in line(lead, "contacted")["detail"]


# -- stage criteria --------------------------------------------------------------------


def test_mql_on_total_score_and_an_aggregate():
    rules = rules_with(events=SITE, engagement__aggregates=[TIME_ON_SITE], lifecycle__mql={"when": {"all": [
        {"metric": "score", "gte": 10}, {"metric": "time_on_site", "gt": 700}]}})
    assert play(rules, [visit(1, 650), ev("content_downloaded")]).stage == "lead"
    assert play(rules, [visit(1, 650), visit(0, 100), ev("content_downloaded")]).stage == "mql"


def test_sql_criteria_any_of_a_hand_raise_or_a_high_score():
    rules = rules_with(lifecycle__sql={"when": {"any": [
        {"all": [{"hand_raise_within_days": 30}, {"fit_grade": "C"}]}, {"metric": "engagement", "gte": 55}]}})
    lead = play(rules, [ev("identify", traits={"job_title": "VP Sales", "company_size": 200}),
                        ev("form_submitted", properties={"form_kind": "demo_request"})])
    assert lead.stage == "sql" and lead.history[-1].cause.rule == "sql_threshold"


def test_an_unknown_metric_in_a_criterion_is_named():
    with pytest.raises(RulesError, match="lifecycle.mql: unknown metric time_on_site"):
        rules_with(lifecycle__mql={"when": {"metric": "time_on_site", "gte": 1}})


def test_legacy_and_new_stage_forms_do_not_mix():
    with pytest.raises(RulesError, match="either `when` or min_fit_grade"):
        rules_with(lifecycle__mql={"when": {"metric": "score", "gte": 1}, "min_fit_grade": "C", "min_engagement": 4})


# -- forms, sources, messages, explanations, outcomes ----------------------------------------


def test_any_form_field_becomes_a_trait_the_rules_can_test():
    rules = rules_with(forms__traits={"current_occupation": "occupation", "Heard-About-Us": "heard_from"})
    event = to_event("signup", {"email": "a@b.co", "Current_Occupation": "Student", "heard-about-us": "a friend"},
                     rules.forms, fallback_id="x")
    assert event.traits == {"occupation": "Student", "heard_from": "a friend"}
    lead = play(rules, [event.model_dump(mode="json", exclude={"event_id"})])
    assert lead.disqualified and lead.disqualified_reason == "student"


def form_post(days_ago, **fields):
    return {"type": "form_submitted", "email": "jane@acme.com",
            "occurred_at": (NOW - timedelta(days=days_ago)).isoformat(), "properties": {"form_kind": "contact_request", **fields}}


def test_utm_and_referrer_become_first_and_last_touch_and_the_message_is_kept(rules):
    lead = play(rules, [
        form_post(3, utm_source="linkedin", utm_medium="paid_social", utm_campaign="q4", message="Pricing for 50 seats?"),
        form_post(5, referrer="https://www.g2.com/products/x"),
        form_post(1, utm_source="newsletter", utm_medium="email", message="Can we see a demo next week?"),
        form_post(0),
    ])
    assert (lead.first_touch.source, lead.first_touch.medium) == ("g2.com", "referral")
    assert (lead.last_touch.source, lead.last_touch.medium, lead.last_touch.campaign) == ("newsletter", "email", None)
    assert lead.message.text == "Can we see a demo next week?"


def test_explanations_carry_the_matched_values_and_descriptions(rules):
    lead = play(rules, [ev("identify", traits={"job_title": "VP Marketing", "company_size": 120, "country": "Norway"})])
    title = line(lead, "seniority_executive")
    assert title["detail"] == "C-level, VP, founder or owner (can sign): job title VP Marketing"
    assert title["values"] == {"job title": "VP Marketing"} and title["description"].startswith("C-level")
    assert line(lead, "country_served")["detail"].endswith("country NO")


def test_won_and_lost_are_kept_as_the_outcome(rules):
    lead = play(rules, [ev("identify", traits={"job_title": "VP Sales", "company_size": 120}),
                        ev("meeting_booked")])
    assert lead.stage == "sql"
    lead = apply_action(lead, "opportunity", reason=None, by="ola", rules=rules, now=NOW).lead
    lost = apply_action(lead, "lost", reason="no_budget", by="ola", rules=rules, now=NOW).lead
    assert (lost.outcome.result, lost.outcome.reason, lost.outcome.by) == ("lost", "no_budget", "ola")
    won = apply_action(lead, "won", reason=None, by="ola", rules=rules, now=NOW).lead
    assert won.outcome.result == "won" and won.stage == "customer"


def test_scores_are_finite_whatever_the_inputs(rules):
    lead = play(rules, [ev("identify", traits={"company_size": "9.9e125", "nps": 10})])
    assert math.isfinite(lead.score)


def test_an_any_branch_that_failed_leaves_no_values_in_the_explanation():
    cond = parse_rules({**copy.deepcopy(BASE), "intent_validation": [{"id": "x", "reason": "x", "when": {"any": [
        {"all": [{"trait": "role", "equals": "buyer"}, {"trait": "budget", "equals": "none"}]},
        {"trait": "company", "exists": True}]}}]}).intent_validation[0].when
    found: list = []
    assert matches(cond, Subject(traits={"role": "buyer", "budget": "yes", "company": "Acme"}), found)
    assert found == [("company", "Acme")]
