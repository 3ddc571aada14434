"""Vendor payloads (the fixtures under tests/fixtures) mapped to canonical events."""

from __future__ import annotations

import copy
import json
import re
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leadflow.domain.errors import RulesError
from tests.conftest import rules_with
from leadflow.adapters.vendor_webhooks import SOURCES, Item, PayloadError
from leadflow.adapters.vendor_webhooks.mapping import HUBSPOT_STAGES, map_delivery

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
MAUTIC_AT = "2026-11-20T09:00:00+00:00"


def load(path: str):
    return json.loads((FIXTURES / path).read_bytes())


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)


def events(items: list[Item]) -> list:
    return [i.event for i in items if i.event is not None]


def only(items: list[Item]) -> Item:
    assert len(items) == 1, items
    return items[0]


@pytest.fixture(scope="module")
def raw_rules():
    return yaml.safe_load(resources.files("leadflow").joinpath("rules/default.yaml").read_text())




def mautic_delivery(**events_by_type) -> dict:
    """A real Mautic delivery: each type keyed to an array of events, each with its timestamp."""
    return {f"mautic.{kind}": [{**e, "timestamp": MAUTIC_AT} for e in evs] for kind, evs in events_by_type.items()}


def hubspot_event(**overrides) -> dict:
    base = {"eventId": 100, "subscriptionId": 7, "portalId": 33, "appId": 1, "occurredAt": 1_700_000_000_000,
            "subscriptionType": "contact.propertyChange", "attemptNumber": 0, "objectId": 501,
            "propertyName": "firstname", "propertyValue": "Kari", "changeSource": "CRM_UI"}
    return {**base, **overrides}


# HubSpot -------------------------------------------------------------------------------

def test_map_hubspot_creation_vector_gives_anonymous_identify_with_contact_id(rules):
    item = only(map_delivery("hubspot", load("hubspot/contact_creation_v1_vector_body.json"), rules))
    event = item.event
    assert item.ref == "[0]" and item.error is None and item.ignored is None
    assert event.type == "identify" and event.email is None
    assert event.anonymous_id == "hubspot:123"
    assert event.traits == {"hubspot_contact_id": "123"}
    assert event.event_id == "hubspot:12345:1:1564113600000"
    assert event.occurred_at == utc(2019, 7, 26, 4, 0)
    assert item.extra["hubspot_object_id"] == 123


def test_map_hubspot_docs_example_with_event_type_key_maps_lifecyclestage_and_creation(rules):
    items = map_delivery("hubspot", load("hubspot/contact_events_docs_example.json"), rules)
    # Same instant: the creation comes first.
    assert [i.ref for i in items] == ["[1]", "[0]"]
    creation, stage = items
    assert creation.event.anonymous_id == "hubspot:1246978"
    assert creation.event.event_id == "hubspot:22:3816279480:1462216307945"
    assert stage.event.type == "identify" and stage.event.anonymous_id == "hubspot:1246965"
    assert stage.event.traits == {"hubspot_contact_id": "1246965", "hubspot_lifecyclestage": "subscriber"}
    assert stage.extra == {"hubspot_object_id": 1246965, "portal_id": 33, "property": "lifecyclestage",
                           "value": "subscriber", "lifecyclestage": "subscriber", "stage": "subscriber",
                           "change_source": "ACADEMY"}
    assert stage.event.occurred_at == datetime.fromtimestamp(1462216307.945, tz=timezone.utc)


def test_map_hubspot_captured_firstname_change_sets_first_name_trait(rules):
    item = only(map_delivery("hubspot", load("hubspot/contact_propertychange_captured.json"), rules))
    assert item.event.traits == {"hubspot_contact_id": "173595202426", "first_name": "Briane"}
    assert item.event.anonymous_id == "hubspot:173595202426" and item.event.email is None
    assert item.event.event_id == "hubspot:4849549:714285774:1765043528476"
    assert item.extra == {"hubspot_object_id": 173595202426, "portal_id": 50687303, "property": "firstname",
                          "value": "Briane", "change_source": "CRM_UI"}


def test_map_hubspot_email_change_joins_email_and_visitor(rules):
    item = only(map_delivery("hubspot", [hubspot_event(propertyName="email", propertyValue=" Kari@Acme.Example ")],
                             rules))
    assert item.event.type == "identify"
    assert item.event.email == "kari@acme.example"
    assert item.event.anonymous_id == "hubspot:501"
    assert item.event.traits == {"hubspot_contact_id": "501"}


def test_map_hubspot_email_cleared_is_ignored(rules):
    item = only(map_delivery("hubspot", [hubspot_event(propertyName="email", propertyValue="")], rules))
    assert item.event is None and item.error is None and "cleared" in item.ignored


@pytest.mark.parametrize(("name", "value", "trait"), [
    ("lastname", "Nordmann", "last_name"),
    ("jobtitle", "VP Sales", "job_title"),
    ("company", "Acme", "company"),
    ("numemployees", "51-200", "company_size"),
    ("industry", "software", "industry"),
    ("country", "NO", "country"),
    ("phone", "+47 1234", "phone"),
    ("hs_lead_status", "OPEN_DEAL", "hubspot_lead_status"),
    ("favourite_color", "green", "hubspot_favourite_color"),
])
def test_map_hubspot_property_change_maps_property_to_trait(rules, name, value, trait):
    item = only(map_delivery("hubspot", [hubspot_event(propertyName=name, propertyValue=value)], rules))
    assert item.event.traits == {"hubspot_contact_id": "501", trait: value}
    assert item.extra["property"] == name and item.extra["value"] == value


@pytest.mark.parametrize(("value", "stage"), [
    ("subscriber", "subscriber"), ("lead", "lead"), ("marketingqualifiedlead", "mql"),
    ("salesqualifiedlead", "sql"), ("opportunity", "opportunity"), ("customer", "customer"),
    ("evangelist", "evangelist"), ("other", None), ("1234567", None),
])
def test_map_hubspot_lifecyclestage_gives_our_stage_in_extra(rules, value, stage):
    item = only(map_delivery("hubspot", [hubspot_event(propertyName="lifecyclestage", propertyValue=value)], rules))
    assert item.extra["lifecyclestage"] == value
    assert item.extra.get("stage") == stage
    assert item.event.traits["hubspot_lifecyclestage"] == value


def test_map_hubspot_stage_map_is_the_reverse_of_the_sink_map():
    from leadflow.adapters.sinks.hubspot import DEFAULT_LIFECYCLE_MAP

    assert HUBSPOT_STAGES == {hubspot: ours for ours, hubspot in DEFAULT_LIFECYCLE_MAP.items()}


def test_map_hubspot_out_of_order_events_are_sorted_by_occurred_at(rules):
    payload = [
        hubspot_event(eventId=3, occurredAt=1_700_000_003_000, propertyName="company", propertyValue="C"),
        hubspot_event(eventId=1, occurredAt=1_700_000_001_000, propertyName="company", propertyValue="A"),
        hubspot_event(eventId=2, occurredAt=1_700_000_002_000, propertyName="company", propertyValue="B"),
    ]
    items = map_delivery("hubspot", payload, rules)
    assert [i.ref for i in items] == ["[1]", "[2]", "[0]"]
    assert [i.event.traits["company"] for i in items] == ["A", "B", "C"]
    times = [i.event.occurred_at for i in items]
    assert times == sorted(times)


def test_map_hubspot_batch_with_malformed_item_maps_the_others(rules):
    payload = [
        hubspot_event(eventId=1),
        hubspot_event(eventId=2, objectId=None),
        "not an event",
        hubspot_event(eventId=4, occurredAt="yesterday"),
        hubspot_event(eventId=5, propertyName="email", propertyValue="not-an-email"),
        hubspot_event(eventId=6, propertyName="lastname", propertyValue="Hansen"),
    ]
    items = {i.ref: i for i in map_delivery("hubspot", payload, rules)}
    assert set(items) == {"[0]", "[1]", "[2]", "[3]", "[4]", "[5]"}
    assert items["[0]"].event.traits["first_name"] == "Kari"
    assert items["[5]"].event.traits["last_name"] == "Hansen"
    assert "objectId" in items["[1]"].error and items["[1]"].event is None
    assert "JSON object" in items["[2]"].error
    assert "occurredAt" in items["[3]"].error
    assert "email" in items["[4]"].error and items["[4]"].event is None


def test_map_hubspot_unknown_subscription_type_is_ignored(rules):
    items = map_delivery("hubspot", [hubspot_event(subscriptionType="deal.creation"),
                                     hubspot_event(subscriptionType="contact.deletion")], rules)
    assert [i.event for i in items] == [None, None]
    assert all(i.error is None and "not an event leadflow acts on" in i.ignored for i in items)


def test_map_hubspot_same_event_id_at_another_time_is_another_event(rules):
    items = map_delivery("hubspot", [hubspot_event(occurredAt=1_700_000_000_000),
                                     hubspot_event(occurredAt=1_700_000_000_001)], rules)
    assert len({i.event.event_id for i in items}) == 2


@pytest.mark.parametrize("payload", [
    load("hubspot/forms_v3_submit_gist_example.json"),
    load("hubspot/forms_v3_submit_reference_shape.json"),
    {"subscriptionType": "contact.creation"},
    "[]",
    None,
    [hubspot_event(eventId=i) for i in range(101)],
])
def test_map_hubspot_body_not_an_event_array_raises_payload_error(rules, payload):
    with pytest.raises(PayloadError):
        map_delivery("hubspot", payload, rules)


# Mautic --------------------------------------------------------------------------------

def test_map_mautic_form_on_submit_real_envelope_gives_form_submitted(rules):
    payload = mautic_delivery(form_on_submit=[load("mautic/form_on_submit.json")])
    item = only(map_delivery("mautic", payload, rules))
    event = item.event
    assert item.ref == "mautic.form_on_submit[0]"
    assert event.type == "form_submitted" and event.email == "email@formsubmit.com"
    assert event.anonymous_id == "mautic:26"
    assert event.properties["form_kind"] == "contact_request"
    assert event.properties["form_id"] == "leadpoints"
    assert event.properties["url"] == "http://mautic-gh.com/s/forms/preview/4"  # PHP's \/ is just JSON
    assert event.occurred_at == utc(2015, 8, 26, 1, 30, 34)
    assert event.event_id.startswith("mautic:form_on_submit:")


@pytest.mark.parametrize(("kinds", "expected"), [
    ({"leadpoints": "demo_request"}, "demo_request"),
    ({"4": "newsletter"}, "newsletter"),
    ({}, "contact_request"),
])
def test_map_mautic_form_kind_comes_from_forms_kinds_by_alias_or_id(raw_rules, kinds, expected):
    rules = rules_with(raw_rules, forms__kinds=kinds)
    payload = mautic_delivery(form_on_submit=[load("mautic/form_on_submit.json")])
    assert only(map_delivery("mautic", payload, rules)).event.properties["form_kind"] == expected


def test_map_mautic_form_results_map_to_traits_through_field_aliases(rules):
    raw = load("mautic/form_on_submit.json")
    raw["submission"]["results"] = {"email": "Pat@Acme.IO", "firstname": "Pat", "jobtitle": "VP Sales",
                                    "employees": "51-200", "budget": "yes", "message": "call me",
                                    "interests": ["a", "b"], "favourite": "tea"}
    event = only(map_delivery("mautic", mautic_delivery(form_on_submit=[raw]), rules)).event
    assert event.email == "pat@acme.io"
    assert event.traits == {"first_name": "Pat", "job_title": "VP Sales", "company_size": "51-200", "budget": "yes"}
    assert event.properties["message"] == "call me"
    assert event.properties["field_favourite"] == "tea"


def test_map_mautic_form_email_falls_back_to_the_lead(rules):
    raw = load("mautic/form_on_submit.json")
    raw["submission"]["results"] = []  # PHP's empty object
    event = only(map_delivery("mautic", mautic_delivery(form_on_submit=[raw]), rules)).event
    assert event.email == "email@formsubmit.com"


def test_map_mautic_form_without_any_email_is_an_error(rules):
    raw = load("mautic/form_on_submit.json")
    raw["submission"]["results"] = {"firstname": "Pat"}
    raw["submission"]["lead"]["fields"]["core"]["email"]["value"] = None
    item = only(map_delivery("mautic", mautic_delivery(form_on_submit=[raw]), rules))
    assert item.event is None and "no email" in item.error


def test_map_mautic_test_payload_envelope_maps_like_a_real_delivery(rules):
    inner = load("mautic/form_on_submit.json")
    test_shape = {"mautic.form_on_submit": inner, "timestamp": MAUTIC_AT}
    real = mautic_delivery(form_on_submit=[inner])
    test_item = only(map_delivery("mautic", test_shape, rules))
    real_item = only(map_delivery("mautic", real, rules))
    assert test_item.ref == "mautic.form_on_submit"
    # The envelope's timestamp is the event's: the same event, the same id.
    assert test_item.event == real_item.event


def test_map_mautic_real_delivery_with_several_types_keeps_every_item(rules):
    form = load("mautic/form_on_submit.json")
    other = copy.deepcopy(form)
    other["submission"]["id"] = 14
    payload = mautic_delivery(form_on_submit=[form, other], page_on_hit=[load("mautic/page_on_hit.json")],
                              email_on_send=[{"email": {"id": 1}}])
    items = map_delivery("mautic", payload, rules)
    assert [i.ref for i in items] == ["mautic.form_on_submit[0]", "mautic.form_on_submit[1]",
                                      "mautic.page_on_hit[0]", "mautic.email_on_send[0]"]
    assert [i.event.type for i in items[:3]] == ["form_submitted", "form_submitted", "page_viewed"]
    assert items[0].event.event_id != items[1].event.event_id
    assert items[3].event is None and "not an event leadflow acts on" in items[3].ignored


def test_map_mautic_page_on_hit_identified_contact_gives_page_viewed_with_url(rules):
    event = only(map_delivery("mautic", mautic_delivery(page_on_hit=[load("mautic/page_on_hit.json")]), rules)).event
    assert event.type == "page_viewed"
    assert event.email == "email@formsubmit.com" and event.anonymous_id == "mautic:26"
    assert event.properties["url"] == "http://mautic-gh.com/index_dev.php/pagehit"
    assert event.properties["title"] == "PageHit"
    assert event.traits["user_agent"].startswith("Mozilla/5.0 (Macintosh")
    assert event.occurred_at == utc(2015, 8, 26, 1, 32, 39)


def test_map_mautic_page_on_hit_anonymous_contact_uses_the_mautic_lead_id(rules):
    raw = load("mautic/page_on_hit.json")
    raw["hit"]["lead"]["fields"]["core"]["email"]["value"] = ""
    event = only(map_delivery("mautic", mautic_delivery(page_on_hit=[raw]), rules)).event
    assert event.email is None and event.anonymous_id == "mautic:26"


def test_map_mautic_email_on_open_gives_email_opened(rules):
    event = only(map_delivery("mautic", {"mautic.email_on_open": load("mautic/email_on_open.json"),
                                         "timestamp": MAUTIC_AT}, rules)).event
    assert event.type == "email_opened" and event.email == "test@test.com"
    assert event.anonymous_id == "mautic:26"
    assert event.occurred_at == utc(2015, 8, 26, 1, 35, 53)
    assert event.properties == {"email_id": 5, "email_name": "Email", "subject": "Email"}


def test_map_mautic_lead_points_change_sample_array_reads_the_contact(rules):
    payload = {"mautic.lead_points_change": load("mautic/lead_points_change.json"), "timestamp": MAUTIC_AT}
    item = only(map_delivery("mautic", payload, rules))
    event = item.event
    assert item.ref == "mautic.lead_points_change[0]"
    assert event.type == "identify" and event.email == "john@doe.name" and event.anonymous_id == "mautic:52"
    assert event.traits["mautic_points"] == 5
    assert event.traits["first_name"] == "John" and event.traits["last_name"] == "Doe"
    assert event.traits["company"] == "Mautic" and event.traits["city"] == "Prague"
    assert event.traits["phone"] == "333444555"  # mobile, as phone is empty
    assert "job_title" not in event.traits  # Mautic's title is a salutation ("Mr.")
    assert event.occurred_at == utc(2017, 6, 19, 9, 33, 59)  # the event's own timestamp wins


def test_map_mautic_lead_points_change_2015_uses_new_points_and_the_lead(rules):
    event = only(map_delivery("mautic", load("mautic/lead_points_change_2015_thirdparty.json"), rules)).event
    assert event.traits == {"mautic_points": 10}
    assert event.properties == {"old_points": 0, "new_points": 10}
    assert event.anonymous_id == "mautic:26" and event.email is None
    assert event.occurred_at == utc(2015, 11, 13, 4, 38, 10)


def test_map_mautic_contact_saved_gives_identify_with_core_traits(rules):
    contact = load("mautic/lead_points_change.json")[0]["contact"]
    payload = mautic_delivery(lead_post_save_new=[{"contact": contact}], lead_post_save_update=[{"lead": contact}])
    items = map_delivery("mautic", payload, rules)
    assert [i.event.type for i in items] == ["identify", "identify"]
    assert items[0].event.email == "john@doe.name"
    assert items[0].event.traits["last_name"] == "Doe"
    assert items[0].event.occurred_at == utc(2017, 6, 19, 9, 33, 58)


def test_map_mautic_contact_saved_without_email_is_ignored(rules):
    contact = copy.deepcopy(load("mautic/lead_points_change.json")[0]["contact"])
    contact["fields"]["core"]["email"]["value"] = None
    item = only(map_delivery("mautic", mautic_delivery(lead_post_save_update=[{"contact": contact}]), rules))
    assert item.event is None and item.error is None and "no email" in item.ignored


def test_map_mautic_redelivery_gives_the_same_ids_and_another_event_another_id(rules):
    payload = mautic_delivery(page_on_hit=[load("mautic/page_on_hit.json")])
    first = only(map_delivery("mautic", payload, rules)).event.event_id
    again = only(map_delivery("mautic", json.loads(json.dumps(payload)), rules)).event.event_id
    later = copy.deepcopy(payload)
    later["mautic.page_on_hit"][0]["hit"]["dateHit"] = "2015-08-26T01:40:00+00:00"
    assert first == again
    assert only(map_delivery("mautic", later, rules)).event.event_id != first


@pytest.mark.parametrize("payload", [
    load("mautic/form_on_submit.json"),  # the inner event alone, not a request body
    load("mautic/lead_points_change.json"),
    {"timestamp": MAUTIC_AT},
    [],
    "mautic.form_on_submit",
])
def test_map_mautic_body_without_an_event_type_key_raises_payload_error(rules, payload):
    with pytest.raises(PayloadError):
        map_delivery("mautic", payload, rules)


# Typeform ------------------------------------------------------------------------------

TYPEFORM_MAPPING = {
    "lT4Z3j": {
        "kind": "demo_request",
        "fields": {"readable_ref_email": "email", "readable_ref_short_text": "company",
                   "[readable_ref_long_text": "need"},
        "hidden": {"utm_source": "utm_source", "utm_campaign": "utm_campaign"},
    },
}


def test_map_typeform_without_mapping_takes_the_first_email_answer(rules):
    item = only(map_delivery("typeform", load("typeform/form_response.json"), rules))
    event = item.event
    assert item.ref == "form_response"
    assert event.type == "form_submitted" and event.email == "laura@example.com"
    assert event.event_id == "typeform:LtWXD3crgy"
    assert event.occurred_at == utc(2018, 1, 18, 18, 17, 2)
    assert event.properties["form_id"] == "lT4Z3j"
    assert event.properties["form_kind"] == "contact_request"
    assert event.traits == {}  # no ref names a trait


def test_map_typeform_without_mapping_keeps_answers_whose_ref_names_a_trait(rules):
    payload = load("typeform/form_response.json")
    fields = payload["form_response"]["definition"]["fields"]
    refs = {"JwWggjAKtOkA": "firstname", "k6TP9oLGgHjl": "country", "PNe8ZKBK8C2Q": "industry"}
    for field in fields:
        field["ref"] = refs.get(field["id"], field["ref"])
    payload["form_response"]["hidden"] = {"user_id": "abc", "utm_source": "newsletter", "job_title": "CTO"}
    event = only(map_delivery("typeform", payload, rules)).event
    assert event.traits == {"first_name": "Laura", "country": "London", "industry": "London, Sydney",
                            "job_title": "CTO"}
    assert event.properties["utm_source"] == "newsletter"


def test_map_typeform_with_rules_mapping_maps_fields_and_hidden_utm_source(raw_rules):
    rules = rules_with(raw_rules, webhooks={"typeform": {"forms": TYPEFORM_MAPPING}})
    payload = load("typeform/form_response.json")
    payload["form_response"]["hidden"] = {"user_id": "abc123456", "utm_source": "linkedin"}
    event = only(map_delivery("typeform", payload, rules)).event
    assert event.email == "laura@example.com"
    assert event.properties["form_kind"] == "demo_request"
    assert event.traits["company"] == "Laura"
    assert event.traits["need"].startswith("It's cold right now!")
    assert event.traits["utm_source"] == "linkedin"
    assert "utm_campaign" not in event.traits and "user_id" not in event.traits


def test_map_typeform_unlisted_form_takes_the_default_kind(raw_rules):
    rules = rules_with(raw_rules, webhooks={"typeform": {"forms": {"other1": {"kind": "webinar"}},
                                                         "default_kind": "newsletter"}})
    event = only(map_delivery("typeform", load("typeform/form_response.json"), rules)).event
    assert event.properties["form_kind"] == "newsletter"


def test_map_typeform_mapping_without_an_email_target_takes_the_email_answer(raw_rules):
    rules = rules_with(raw_rules, webhooks={"typeform": {"forms": {"lT4Z3j": {"fields": {"readable_ref_short_text":
                                                                                          "first_name"}}}}})
    event = only(map_delivery("typeform", load("typeform/form_response.json"), rules)).event
    assert event.email == "laura@example.com" and event.traits == {"first_name": "Laura"}


def test_map_typeform_hidden_field_mapped_to_email_gives_the_email(raw_rules):
    rules = rules_with(raw_rules, webhooks={"typeform": {"forms": {"lT4Z3j": {"hidden": {"user_email": "email"}}}}})
    payload = load("typeform/form_response.json")
    answers = payload["form_response"]["answers"]
    payload["form_response"]["answers"] = [a for a in answers if a["type"] != "email"]
    payload["form_response"]["hidden"] = {"user_email": "Laura@Example.com"}
    assert only(map_delivery("typeform", payload, rules)).event.email == "laura@example.com"


def test_map_typeform_response_without_any_email_is_an_error(rules):
    payload = load("typeform/form_response.json")
    payload["form_response"]["answers"] = [a for a in payload["form_response"]["answers"] if a["type"] != "email"]
    item = only(map_delivery("typeform", payload, rules))
    assert item.event is None and "no email" in item.error


def test_map_typeform_other_event_type_is_ignored(rules):
    item = only(map_delivery("typeform", {"event_id": "x", "event_type": "form_response_partial"}, rules))
    assert item.event is None and "form_response_partial" in item.ignored


@pytest.mark.parametrize("payload", [[], {"form_response": {}}, "form_response", None])
def test_map_typeform_body_without_event_type_raises_payload_error(rules, payload):
    with pytest.raises(PayloadError):
        map_delivery("typeform", payload, rules)


# Rules: the webhooks section -----------------------------------------------------------

def test_parse_rules_default_has_no_typeform_forms(rules):
    assert rules.webhooks.typeform.forms == {}
    assert rules.webhooks.typeform.default_kind == "contact_request"


def test_parse_rules_commented_webhooks_example_in_default_yaml_is_valid(raw_rules):
    text = resources.files("leadflow").joinpath("rules/default.yaml").read_text()
    block = re.search(r"^# webhooks:\n(?:#   .*\n)+", text, re.MULTILINE).group(0)
    section = yaml.safe_load(re.sub(r"^# ?", "", block, flags=re.MULTILINE))
    rules = rules_with(raw_rules, webhooks=section["webhooks"])
    form = rules.webhooks.typeform.forms["lT4Z3j"]
    assert form.kind == "demo_request" and form.fields["[readable_ref_long_text"] == "need"


@pytest.mark.parametrize(("webhooks", "message"), [
    ({"typeform": {"forms": {"lT4Z3j": {"kind": "demo"}}}},
     r"webhooks\.typeform\.forms\.lT4Z3j\.kind: unknown form kind 'demo'"),
    ({"typeform": {"default_kind": "lead"}}, r"webhooks\.typeform\.default_kind: unknown form kind 'lead'"),
    ({"typeform": {"forms": {"lT4Z3j": {"fields": {"readable_ref_email": "E-mail"}}}}},
     r"webhooks\.typeform\.forms\.lT4Z3j\.fields: 'readable_ref_email' maps to 'E-mail'"),
    ({"typeform": {"forms": {"lT4Z3j": {"hidden": {"utm_source": ""}}}}},
     r"webhooks\.typeform\.forms\.lT4Z3j\.hidden: 'utm_source' maps to ''"),
    ({"typeform": {"forms": {"lT4Z3j": {"feilds": {}}}}}, r"webhooks\.typeform\.forms\.lT4Z3j\.feilds"),
    ({"typefrom": {}}, r"webhooks\.typefrom"),
    ({"typeform": {"forms": ["lT4Z3j"]}}, r"webhooks\.typeform\.forms: Input should be a valid dictionary"),
])
def test_parse_rules_bad_webhooks_section_is_refused_naming_the_field(raw_rules, webhooks, message):
    with pytest.raises(RulesError, match=message):
        rules_with(raw_rules, webhooks=webhooks)


def test_parse_rules_numeric_typeform_form_id_is_read_as_text(raw_rules):
    forms = {123456: {"kind": "webinar", "fields": {42: "email"}}}
    rules = rules_with(raw_rules, webhooks={"typeform": {"forms": forms}})
    assert rules.webhooks.typeform.forms["123456"].fields == {"42": "email"}


# Calendly ------------------------------------------------------------------------------

def test_map_calendly_invitee_created_gives_meeting_booked(rules):
    item = only(map_delivery("calendly", load("calendly/invitee_created.json"), rules))
    event = item.event
    assert event.type == "meeting_booked" and event.email == "test@example.com"
    assert event.traits == {"first_name": "John", "last_name": "Doe"}
    invitee = "https://api.calendly.com/scheduled_events/AAAAAAAAAAAAAAAA/invitees/AAAAAAAAAAAAAAAA"
    assert event.event_id == f"calendly:{invitee}:invitee.created"
    assert event.occurred_at == utc(2020, 11, 23, 17, 51, 18, 327602)
    assert event.properties == {"scheduled_event": "https://api.calendly.com/scheduled_events/AAAAAAAAAAAAAAAA"}


def test_map_calendly_current_payload_adds_event_type_schedule_and_known_answers(rules):
    payload = load("calendly/invitee_created.json")
    payload["payload"].update(
        first_name="Kari", last_name="Nordmann", name="Kari Nordmann",
        scheduled_event={"uri": "https://api.calendly.com/scheduled_events/E1", "name": "Demo",
                         "event_type": "https://api.calendly.com/event_types/T1",
                         "start_time": "2020-11-30T15:00:00.000000Z"},
        questions_and_answers=[{"question": "Company", "answer": "Acme", "position": 0},
                               {"question": "Job title?", "answer": "Head of Sales", "position": 1},
                               {"question": "Company size", "answer": "51-200", "position": 2},
                               {"question": "Anything we should know?", "answer": "Yes", "position": 3}],
        tracking={"utm_source": "google", "utm_campaign": None},
    )
    event = only(map_delivery("calendly", payload, rules)).event
    assert event.traits == {"first_name": "Kari", "last_name": "Nordmann", "company": "Acme",
                            "job_title": "Head of Sales", "company_size": "51-200"}
    assert event.properties["event_type"] == "https://api.calendly.com/event_types/T1"
    assert event.properties["event_name"] == "Demo"
    assert event.properties["scheduled_at"] == "2020-11-30T15:00:00.000000Z"
    assert event.properties["utm_source"] == "google" and "utm_campaign" not in event.properties


@pytest.mark.parametrize(("rescheduled", "note"), [(False, "does not un-book"), (True, "rescheduled")])
def test_map_calendly_invitee_canceled_is_ignored_with_the_reason(rules, rescheduled, note):
    payload = load("calendly/invitee_created.json")
    payload["event"] = "invitee.canceled"
    payload["payload"].update(status="canceled", canceled=True, rescheduled=rescheduled)
    item = only(map_delivery("calendly", payload, rules))
    assert item.event is None and item.error is None and note in item.ignored


def test_map_calendly_invitee_without_email_is_an_error(rules):
    payload = load("calendly/invitee_created.json")
    del payload["payload"]["email"]
    item = only(map_delivery("calendly", payload, rules))
    assert item.event is None and "email" in item.error


@pytest.mark.parametrize("payload", [[], {"event": "invitee.created"}, {"payload": {}}, "invitee.created"])
def test_map_calendly_body_without_event_and_payload_raises_payload_error(rules, payload):
    with pytest.raises(PayloadError):
        map_delivery("calendly", payload, rules)


# SendGrid ------------------------------------------------------------------------------

def sendgrid_event(**overrides) -> dict:
    base = {"email": "pat@acme.io", "timestamp": 1_700_000_000, "event": "open", "sg_event_id": "ev1",
            "sg_message_id": "m1", "category": ["newsletter"]}
    return {**base, **overrides}


def test_map_sendgrid_fixture_events_map_to_engagement_types(rules):
    items = map_delivery("sendgrid", load("sendgrid/events_open_click_unsubscribe.json"), rules)
    assert [i.event.type for i in items] == ["email_opened", "email_clicked", "email_unsubscribed",
                                             "email_unsubscribed"]
    assert all(i.event.email == "example@test.com" for i in items)
    assert all(i.event.occurred_at == utc(2017, 12, 15, 0, 59, 29) for i in items)
    assert items[1].event.properties["url"] == "http://www.sendgrid.com/"
    assert "url" not in items[3].event.properties
    assert items[3].event.properties["asm_group_id"] == 10
    # The sample reuses one placeholder sg_event_id: the event name keeps the four apart.
    assert [i.event.event_id for i in items] == ["sendgrid:sg_event_id:open", "sendgrid:sg_event_id:click",
                                                 "sendgrid:sg_event_id:unsubscribe",
                                                 "sendgrid:sg_event_id:group_unsubscribe"]


def test_map_sendgrid_dropped_bounced_address_vector_is_a_bounce(rules):
    body = (FIXTURES / "sendgrid/dropped_ecdsa_vector_body.json").read_bytes()
    assert body.endswith(b"\r\n")
    event = only(map_delivery("sendgrid", json.loads(body), rules)).event
    assert event.type == "email_bounced" and event.email == "hello@world.com"
    assert event.event_id == "sendgrid:ZHJvcC0xMDk5NDkxOS1MUnpYbF9OSFN0T0doUTRrb2ZTbV9BLTA:dropped"
    assert event.occurred_at == utc(2020, 9, 14, 19, 41, 32)
    assert event.properties["reason"] == "Bounced Address"


@pytest.mark.parametrize(("category", "expected"), [
    ("cat facts", ["cat facts"]),
    (["cat facts", "promo"], ["cat facts", "promo"]),
    ([], None),
    (None, None),
])
def test_map_sendgrid_category_string_or_array_gives_a_list(rules, category, expected):
    event = only(map_delivery("sendgrid", [sendgrid_event(category=category)], rules)).event
    assert event.properties.get("category") == expected


def test_map_sendgrid_machine_open_is_ignored(rules):
    items = map_delivery("sendgrid", [sendgrid_event(sg_machine_open=True),
                                      sendgrid_event(sg_event_id="ev2", sg_machine_open=False)], rules)
    assert items[0].event is None and "machine open" in items[0].ignored
    assert items[1].event.type == "email_opened"


@pytest.mark.parametrize("kind", ["processed", "deferred", "delivered", "group_resubscribe", "something_new"])
def test_map_sendgrid_delivery_status_is_ignored(rules, kind):
    item = only(map_delivery("sendgrid", [sendgrid_event(event=kind)], rules))
    assert item.event is None and item.error is None and kind in item.ignored


@pytest.mark.parametrize(("raw", "expected"), [
    ({"event": "spamreport"}, "email_unsubscribed"),
    ({"event": "bounce", "type": "bounce", "reason": "550 5.1.1 user unknown"}, "email_bounced"),
    ({"event": "bounce", "type": "blocked", "reason": "IP blocklisted"}, None),
    ({"event": "dropped", "reason": "Invalid"}, "email_bounced"),
    ({"event": "dropped", "reason": "Unsubscribed Address"}, None),
    ({"event": "dropped", "reason": "Spam Reporting Address"}, None),
])
def test_map_sendgrid_bounce_like_events_are_bounces_only_for_dead_addresses(rules, raw, expected):
    item = only(map_delivery("sendgrid", [sendgrid_event(**raw)], rules))
    assert (item.event.type if item.event else None) == expected
    if expected is None:
        assert item.ignored and item.error is None


def test_map_sendgrid_bad_items_are_errors_and_the_others_map(rules):
    payload = [sendgrid_event(email=None), sendgrid_event(sg_event_id=None), sendgrid_event(timestamp="soon"),
               42, sendgrid_event(event="click", url="https://acme.example/pricing")]
    items = map_delivery("sendgrid", payload, rules)
    assert [bool(i.error) for i in items] == [True, True, True, True, False]
    assert items[4].event.type == "email_clicked"


@pytest.mark.parametrize("payload", [{"event": "open"}, "[]", None, 3])
def test_map_sendgrid_body_not_an_array_raises_payload_error(rules, payload):
    with pytest.raises(PayloadError):
        map_delivery("sendgrid", payload, rules)


# Every source --------------------------------------------------------------------------

DELIVERIES = [
    ("hubspot", load("hubspot/contact_creation_v1_vector_body.json")),
    ("hubspot", load("hubspot/contact_events_docs_example.json")),
    ("hubspot", load("hubspot/contact_propertychange_captured.json")),
    ("mautic", mautic_delivery(form_on_submit=[load("mautic/form_on_submit.json")],
                               page_on_hit=[load("mautic/page_on_hit.json")],
                               email_on_open=[load("mautic/email_on_open.json")],
                               lead_points_change=load("mautic/lead_points_change.json"))),
    ("mautic", {"mautic.email_on_open": load("mautic/email_on_open.json"), "timestamp": MAUTIC_AT}),
    ("mautic", load("mautic/lead_points_change_2015_thirdparty.json")),
    ("typeform", load("typeform/form_response.json")),
    ("calendly", load("calendly/invitee_created.json")),
    ("sendgrid", load("sendgrid/events_open_click_unsubscribe.json")),
    ("sendgrid", load("sendgrid/dropped_ecdsa_vector_body.json")),
]


@pytest.mark.parametrize(("source", "payload"), DELIVERIES)
def test_map_delivery_same_payload_twice_gives_the_same_event_ids(rules, source, payload):
    first = map_delivery(source, copy.deepcopy(payload), rules)
    again = map_delivery(source, copy.deepcopy(payload), rules)
    ids = [i.event.event_id for i in first if i.event]
    assert ids and ids == [i.event.event_id for i in again if i.event]
    assert all(i.startswith(f"{source}:") for i in ids)
    assert len(set(ids)) == len(ids)
    assert len({i.ref for i in first}) == len(first)
    assert [i.event for i in first] == [i.event for i in again]
    assert all(i.event.occurred_at is not None for i in first if i.event)


def test_map_delivery_unknown_source_raises_value_error(rules):
    with pytest.raises(ValueError, match="unknown webhook source"):
        map_delivery("mailchimp", [], rules)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)
SAMPLES = {source: [p for s, p in DELIVERIES if s == source] for source in SOURCES}


@st.composite
def mutated(draw, value):
    """A vendor payload with subtrees replaced by arbitrary JSON: the mapper's deep paths."""
    if draw(st.integers(0, 9)) == 0:
        return draw(JSON)
    if isinstance(value, dict):
        out = {k: draw(mutated(v)) for k, v in value.items() if draw(st.integers(0, 14)) != 0}
        return out
    if isinstance(value, list):
        return [draw(mutated(v)) for v in value]
    return value


def check_items(items: list) -> None:
    assert isinstance(items, list)
    for item in items:
        assert isinstance(item, Item)
        assert sum(x is not None for x in (item.event, item.ignored, item.error)) == 1, item
        if item.event is not None:
            assert item.event.event_id
    assert len({i.ref for i in items}) == len(items)


def map_or_refuse(source: str, payload, rules) -> None:
    try:
        items = map_delivery(source, payload, rules)
    except PayloadError as exc:
        assert exc.reason
        return
    check_items(items)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(source=st.sampled_from(SOURCES), payload=JSON)
def test_map_delivery_arbitrary_json_raises_nothing_but_payload_error(rules, source, payload):
    map_or_refuse(source, payload, rules)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data(), source=st.sampled_from(SOURCES))
def test_map_delivery_mutated_vendor_payload_raises_nothing_but_payload_error(rules, data, source):
    sample = data.draw(st.sampled_from(SAMPLES[source]))
    map_or_refuse(source, data.draw(mutated(sample)), rules)
