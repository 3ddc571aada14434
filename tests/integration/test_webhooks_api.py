"""Vendor webhooks through the API handler on moto: each vendor's sample payload, signed as
that vendor signs it, updates the right lead; forged, stale, replayed and malformed
deliveries are refused or deduplicated, and change nothing."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leadflow.adapters.vendor_webhooks.signatures import generate_sendgrid_keypair, sign
from tests.integration.conftest import Context, http_event
from tests.conftest import lead_id_for

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
HOST = "hooks.leadflow.example"
SECRETS = {"hubspot": "hs-client-secret", "mautic": "mySuperWebhookSecretKey", "typeform": "abc123",
           "calendly": "secret_key"}
SG_PRIVATE, SG_PUBLIC = generate_sendgrid_keypair()


@pytest.fixture
def send(aws, monkeypatch):
    from leadflow.handlers import api as api_handler

    for source, secret in SECRETS.items():
        monkeypatch.setenv(f"LEADFLOW_WEBHOOK_SECRET_{source.upper()}", secret)
    monkeypatch.setenv("LEADFLOW_WEBHOOK_SECRET_SENDGRID", SG_PUBLIC)
    from leadflow import container

    container.reset()

    def _send(source: str, body: bytes, *, headers: dict | None = None, signed: bool = True, now: float | None = None):
        path = f"/v1/webhooks/{source}"
        hdrs = {"content-type": "application/json", "host": HOST, "x-forwarded-proto": "https"}
        if signed:
            secret = SG_PRIVATE if source == "sendgrid" else SECRETS[source]
            hdrs.update(sign(source, body, secret, method="POST", url=f"https://{HOST}{path}",
                             now=time.time() if now is None else now))
        hdrs.update(headers or {})
        event = http_event("POST", path, headers=hdrs, raw_body=body.decode("utf-8"))
        resp = api_handler.handler(event, Context())
        return resp["statusCode"], json.loads(resp["body"]) if resp.get("body") else None

    return _send


def fixture(path: str) -> bytes:
    return (FIXTURES / path).read_bytes()


def lead_count(aws) -> int:
    items = aws.scan(TableName="leadflow-test", FilterExpression="SK = :s", ExpressionAttributeValues={":s": {"S": "LEAD"}})
    return items["Count"]


def typeform_body() -> bytes:
    doc = json.loads(fixture("typeform/form_response.json"))
    return json.dumps(doc).encode()


def test_typeform_sample_response_signed_by_typeform_creates_the_lead(send, call):
    body = fixture("typeform/form_response.json")

    status, answer = send("typeform", body)

    assert status == 200 and answer["applied"] == 1, answer
    lead_id = answer["items"][0]["lead_id"]
    _, lead = call("GET", f"/v1/leads/{lead_id}")
    assert lead["email"] and lead["history"][-1]["to_stage"] in ("lead", "mql", "sql", "subscriber")


def test_replayed_delivery_is_accepted_as_duplicate_and_applied_once(send, call):
    body = fixture("typeform/form_response.json")

    first = send("typeform", body)[1]
    again = send("typeform", body)[1]
    _, lead = call("GET", f"/v1/leads/{first['items'][0]['lead_id']}")

    assert first["applied"] == 1 and again["duplicate"] == 1 and again["applied"] == 0
    assert lead["events_applied"] == 1


def test_calendly_booking_is_a_meeting_booked_event(send, call):
    status, answer = send("calendly", fixture("calendly/invitee_created.json"))

    assert status == 200 and answer["applied"] == 1, answer
    _, lead = call("GET", f"/v1/leads/{answer['items'][0]['lead_id']}")
    assert any(line["rule"] for line in lead["explanation"])
    assert lead["events_applied"] == 1


def test_sendgrid_batch_applies_every_item_and_unsubscribe_stops_marketing_email(send, call):
    body = fixture("sendgrid/events_open_click_unsubscribe.json")

    status, answer = send("sendgrid", body)

    assert status == 200 and answer["received"] == 4 and answer["failed"] == 0, answer
    emails = {json.loads(body)[i]["email"] for i in range(4)}
    for email in emails:
        _, lead = call("GET", f"/v1/leads/{lead_id_for(email.strip().lower())}")
        kinds = {e["event"] for e in json.loads(body) if e["email"] == email}
        if kinds & {"unsubscribe", "group_unsubscribe"}:
            assert lead["marketing_email"] == "unsubscribed" and lead["stage"]  # kept, not erased


def test_sendgrid_vendor_vector_body_signed_with_our_key_maps_dropped_bounce(send):
    status, answer = send("sendgrid", fixture("sendgrid/dropped_ecdsa_vector_body.json"))

    assert status == 200 and answer["received"] == 1, answer


@pytest.mark.parametrize("name", ["form_on_submit", "page_on_hit", "email_on_open", "lead_points_change"])
def test_mautic_sample_payloads_in_a_real_delivery_envelope_are_applied(send, name):
    inner = json.loads(fixture(f"mautic/{name}.json"))
    events = inner if isinstance(inner, list) else [inner]
    body = json.dumps({f"mautic.{name}": events}).replace("/", "\\/").encode()  # PHP's json_encode

    status, answer = send("mautic", body)

    assert status == 200 and answer["failed"] == 0 and answer["applied"] + answer["ignored"] >= 1, answer


def test_hubspot_batch_with_a_bad_item_applies_the_others_and_names_the_failure(send):
    events = json.loads(fixture("hubspot/contact_events_docs_example.json"))
    events.append({"eventId": 1, "subscriptionId": 25, "portalId": 33, "subscriptionType": "contact.propertyChange",
                   "objectId": "not-an-id", "propertyName": "email", "propertyValue": "x@y.z"})

    status, answer = send("hubspot", json.dumps(events).encode())

    assert status == 200 and answer["failed"] == 1, answer
    failed = [i for i in answer["items"] if i["status"] == "failed"]
    assert failed[0]["reason"]
    assert answer["applied"] + answer["ignored"] == 2


def test_hubspot_lifecycle_stage_set_by_a_person_moves_the_lead_explicitly(send, call):
    email = "ops.lead@acme-corp.example"
    object_id = 9001
    base = {"subscriptionId": 25, "portalId": 33, "appId": 1, "attemptNumber": 0, "objectId": object_id,
            "subscriptionType": "contact.propertyChange"}
    now_ms = int(time.time() * 1000)
    send("hubspot", json.dumps([{**base, "eventId": 1, "occurredAt": now_ms - 2000, "propertyName": "email",
                                 "propertyValue": email, "changeSource": "CRM_UI"}]).encode())

    status, answer = send("hubspot", json.dumps([{**base, "eventId": 2, "occurredAt": now_ms - 1000,
                                                  "propertyName": "lifecyclestage",
                                                  "propertyValue": "salesqualifiedlead",
                                                  "changeSource": "CRM_UI"}]).encode())
    _, lead = call("GET", f"/v1/leads/{lead_id_for(email)}")

    assert status == 200 and answer["items"][0]["stage_change"] == "moved", answer
    assert lead["stage"] == "sql"
    cause = lead["history"][-1]["cause"]
    assert (cause["kind"], cause["action"], cause["actor"]) == ("actor", "set_stage", "hubspot")
    assert cause["reason"] == "lifecyclestage set to salesqualifiedlead in hubspot"
    assert cause["event_id"] == "hubspot:25:2:" + str(now_ms - 1000)


def test_hubspot_lifecycle_stage_written_by_an_integration_is_not_echoed_back(send, call):
    email = "echo@acme-corp.example"
    base = {"subscriptionId": 25, "portalId": 33, "appId": 1, "attemptNumber": 0, "objectId": 77,
            "subscriptionType": "contact.propertyChange"}
    now_ms = int(time.time() * 1000)
    send("hubspot", json.dumps([{**base, "eventId": 1, "occurredAt": now_ms - 2000, "propertyName": "email",
                                 "propertyValue": email, "changeSource": "CRM_UI"}]).encode())

    _, answer = send("hubspot", json.dumps([{**base, "eventId": 2, "occurredAt": now_ms - 1000,
                                             "propertyName": "lifecyclestage", "propertyValue": "customer",
                                             "changeSource": "INTEGRATION"}]).encode())
    _, lead = call("GET", f"/v1/leads/{lead_id_for(email)}")

    assert answer["items"][0]["stage_change"] == "ignored" and lead["stage"] != "customer"


@pytest.mark.parametrize("source,path", [("typeform", "typeform/form_response.json"),
                                         ("calendly", "calendly/invitee_created.json"),
                                         ("sendgrid", "sendgrid/events_open_click_unsubscribe.json"),
                                         ("hubspot", "hubspot/contact_events_docs_example.json")])
def test_forged_delivery_is_401_with_a_reason_and_writes_nothing(send, aws, source, path):
    body = fixture(path)
    status, _ = send(source, body)  # a genuine one first, so the table is not empty
    before = lead_count(aws)
    tampered = body.replace(b"a", b"b", 1)
    headers = sign(source, body, SG_PRIVATE if source == "sendgrid" else SECRETS[source], method="POST",
                   url=f"https://{HOST}/v1/webhooks/{source}", now=time.time())

    status, err = send(source, tampered, headers=headers, signed=False)

    assert status == 401 and err["error"] == "unauthorized" and source in err["message"]
    assert lead_count(aws) == before


@pytest.mark.parametrize("source", ["hubspot", "calendly"])
def test_stale_delivery_is_401_outside_the_window(send, aws, source):
    body = fixture("calendly/invitee_created.json" if source == "calendly" else "hubspot/contact_events_docs_example.json")

    status, err = send(source, body, now=time.time() - 3600)

    assert status == 401 and "window" in err["message"]
    assert lead_count(aws) == 0


def test_unsigned_delivery_and_missing_secret_are_401(send, monkeypatch):
    from leadflow import container

    assert send("typeform", fixture("typeform/form_response.json"), signed=False)[0] == 401
    monkeypatch.delenv("LEADFLOW_WEBHOOK_SECRET_TYPEFORM")
    container.reset()
    status, err = send("typeform", fixture("typeform/form_response.json"))
    assert status == 401 and "LEADFLOW_WEBHOOK_SECRET_TYPEFORM" in err["message"]


def test_signed_but_malformed_json_is_400_and_wrong_shape_is_422(send, aws):
    assert send("mautic", b"{not json")[0] == 400
    status, err = send("sendgrid", b'{"an": "object, not the array SendGrid sends"}')
    assert status == 422 and err["field"] == "body"
    assert lead_count(aws) == 0


def test_unknown_source_is_404(call):
    status, err = call("POST", "/v1/webhooks/zapier", {"x": 1})
    assert status == 404 and "zapier" in err["message"]


SOURCES = st.sampled_from(["hubspot", "mautic", "typeform", "calendly", "sendgrid", "slack", "generic"])
HEADER_NAMES = st.sampled_from(["x-hubspot-signature-v3", "x-hubspot-request-timestamp", "webhook-signature",
                                "typeform-signature", "calendly-webhook-signature", "x-slack-signature",
                                "x-slack-request-timestamp", "x-twilio-email-event-webhook-signature",
                                "x-twilio-email-event-webhook-timestamp", "webhook-id", "webhook-timestamp",
                                "content-type", "x-anything"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(source=SOURCES, body=st.binary(max_size=400), headers=st.dictionaries(HEADER_NAMES, st.text(max_size=60), max_size=5),
       base64_encoded=st.booleans())
def test_any_body_headers_or_encoding_never_500_and_never_write_without_a_valid_signature(send, aws, source, body,
                                                                                          headers, base64_encoded):
    from leadflow.handlers import api as api_handler

    raw = base64.b64encode(body).decode() if base64_encoded else body.decode("utf-8", "replace")
    event = http_event("POST", f"/v1/webhooks/{source}", headers={"host": HOST, **headers}, raw_body=raw)
    event["isBase64Encoded"] = base64_encoded
    before = lead_count(aws)

    resp = api_handler.handler(event, Context())

    assert resp["statusCode"] < 500, resp
    assert resp["statusCode"] in (400, 401, 404, 413, 415, 422), resp
    assert lead_count(aws) == before


ROUTES = st.sampled_from([("POST", "/v1/events"), ("POST", "/v1/forms/demo"), ("POST", "/v1/leads/ld_x/feedback"),
                          ("GET", "/v1/leads"), ("GET", "/v1/funnel"), ("DELETE", "/v1/leads/ld_x"), ("PUT", "/v1/x")])


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(route=ROUTES, body=st.one_of(st.binary(max_size=300), st.builds(lambda v: json.dumps(v).encode(), st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=12))),
       content_type=st.sampled_from(["application/json", "application/x-www-form-urlencoded", "text/plain", ""]),
       query=st.sampled_from(["", "email=", "email=%00", "since=x&until=y", "since=2026-01-01"]),
       base64_encoded=st.booleans())
def test_any_request_to_any_route_never_answers_500(send, route, body, content_type, query, base64_encoded):
    from leadflow.handlers import api as api_handler

    method, path = route
    raw = base64.b64encode(body).decode() if base64_encoded else body.decode("utf-8", "replace")
    event = http_event(method, path, headers={"content-type": content_type}, raw_body=raw, query=query)
    event["isBase64Encoded"] = base64_encoded
    event["requestContext"]["http"]["method"] = method

    resp = api_handler.handler(event, Context())

    assert resp["statusCode"] < 500, resp
