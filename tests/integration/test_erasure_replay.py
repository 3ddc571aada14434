"""An erasure cannot be undone by a replay: vendor deliveries signed before it (Typeform,
Mautic), an API event or an import row that happened before it are refused and write
nothing, while the person coming back afterwards (a new form fill) is a new lead."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from leadflow.adapters.vendor_webhooks.signatures import sign
from tests.integration.conftest import TABLE, Context, http_event

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
HOST = "hooks.leadflow.example"
SECRETS = {"mautic": "mySuperWebhookSecretKey", "typeform": "abc123"}


@pytest.fixture
def send(aws, monkeypatch):
    from leadflow import container
    from leadflow.handlers import api as api_handler

    for source, secret in SECRETS.items():
        monkeypatch.setenv(f"LEADFLOW_WEBHOOK_SECRET_{source.upper()}", secret)
    container.reset()

    def _send(source: str, body: bytes):
        path = f"/v1/webhooks/{source}"
        headers = {"content-type": "application/json", "host": HOST, "x-forwarded-proto": "https",
                   **sign(source, body, SECRETS[source], method="POST", url=f"https://{HOST}{path}", now=time.time())}
        resp = api_handler.handler(http_event("POST", path, headers=headers, raw_body=body.decode("utf-8")), Context())
        return resp["statusCode"], json.loads(resp["body"])

    return _send


def lead_items(aws) -> list[dict]:
    """Every item kept under a lead id (the table's own records, such as the lead-id scheme, aside)."""
    return [item for item in aws.scan(TableName=TABLE)["Items"] if item["PK"]["S"].startswith("LEAD#")]


def mautic_body(name: str) -> bytes:
    inner = json.loads((FIXTURES / f"mautic/{name}.json").read_bytes())
    events = inner if isinstance(inner, list) else [inner]
    return json.dumps({f"mautic.{name}": events}).replace("/", "\\/").encode()  # PHP's json_encode


def erase_every_lead(call, answer: dict) -> list[str]:
    ids = sorted({item["lead_id"] for item in answer["items"] if item.get("lead_id")})
    for lead_id in ids:
        status, _ = call("DELETE", f"/v1/leads/{lead_id}")
        assert status == 200
    return ids


def test_typeform_body_signed_before_the_erasure_does_not_recreate_the_lead(send, call, aws):
    body = (FIXTURES / "typeform/form_response.json").read_bytes()
    status, first = send("typeform", body)
    assert status == 200 and first["applied"] == 1, first
    (lead_id,) = erase_every_lead(call, first)

    status, again = send("typeform", body)  # the same delivery, replayed after the erasure

    assert status == 200, again  # 2xx: the vendor stops re-sending
    assert again["applied"] == 0 and again["ignored"] == 1 and "erased" in again["items"][0]["reason"]
    assert call("GET", f"/v1/leads/{lead_id}")[0] == 404
    kinds = sorted(item["kind"]["S"] for item in lead_items(aws))
    assert kinds == ["erased"]  # the tombstone alone
    assert "laura@example.com" not in json.dumps(lead_items(aws))


def test_mautic_body_signed_before_the_erasure_does_not_recreate_the_lead(send, call, aws):
    body = mautic_body("form_on_submit")
    status, first = send("mautic", body)
    assert status == 200 and first["applied"] >= 1, first
    erased = erase_every_lead(call, first)

    status, again = send("mautic", body)

    assert status == 200 and again["applied"] == 0 and again["failed"] == 0, again
    assert all(call("GET", f"/v1/leads/{lead_id}")[0] == 404 for lead_id in erased)
    assert {item["kind"]["S"] for item in lead_items(aws)} == {"erased"}


def test_a_new_form_fill_after_the_erasure_is_a_new_lead(send, call):
    document = json.loads((FIXTURES / "typeform/form_response.json").read_bytes())
    status, first = send("typeform", json.dumps(document).encode())
    (lead_id,) = erase_every_lead(call, first)

    # The person fills the form again, after the erasure: a new consent, a new lead.
    document["event_id"] = "01NEWFILLAFTERERASURE"
    document["form_response"]["token"] = "new-fill-after-erasure"
    document["form_response"]["submitted_at"] = (datetime.now(timezone.utc) + timedelta(seconds=1)).strftime(
        "%Y-%m-%dT%H:%M:%SZ")
    status, again = send("typeform", json.dumps(document).encode())

    assert status == 200 and again["applied"] == 1, again
    status, lead = call("GET", f"/v1/leads/{lead_id}")
    assert status == 200 and lead["events_applied"] == 1  # nothing from before the erasure came back
    # And the old delivery, replayed now, still adds nothing to the new lead.
    status, old = send("typeform", (FIXTURES / "typeform/form_response.json").read_bytes())
    assert status == 200 and old["applied"] == 0 and old["ignored"] == 1
    assert call("GET", f"/v1/leads/{lead_id}")[1]["events_applied"] == 1


def test_api_event_that_happened_before_the_erasure_is_410_and_writes_nothing(call, aws):
    old = "2026-01-05T09:00:00Z"
    _, body = call("POST", "/v1/events", {"type": "identify", "email": "gone@acme.io", "occurred_at": old,
                                          "event_id": "before-1", "traits": {"first_name": "Gone"}})
    call("DELETE", f"/v1/leads/{body['lead_id']}")

    status, err = call("POST", "/v1/events", {"type": "page_viewed", "email": "gone@acme.io", "occurred_at": old,
                                              "event_id": "before-2", "properties": {"url": "/pricing"}})

    assert status == 410 and err["error"] == "erased" and err["field"] == "occurred_at", err
    assert {item["kind"]["S"] for item in lead_items(aws)} == {"erased"}
    status, fresh = call("POST", "/v1/events", {"type": "identify", "email": "gone@acme.io", "event_id": "after-1"})
    assert status == 200 and fresh["lead_id"] == body["lead_id"]  # now: the person is back, a new lead


def test_tombstone_holds_no_personal_data(call, aws):
    _, body = call("POST", "/v1/events", {"type": "identify", "email": "kept@acme.io",
                                          "traits": {"first_name": "Kim", "phone": "+44 20 7946 0000"}})
    call("DELETE", f"/v1/leads/{body['lead_id']}")

    (item,) = lead_items(aws)
    text = json.dumps(item)
    assert item["SK"]["S"] == "ERASED" and item["lead_id"]["S"] == body["lead_id"]
    assert "kept@acme.io" not in text and "Kim" not in text and "7946" not in text
    assert datetime.fromisoformat(item["erased_at"]["S"]) <= datetime.now(timezone.utc)


def test_import_row_from_before_the_erasure_is_rejected_and_writes_nothing(call, aws):
    row = {"row": 7, "key": "import:erased:7", "events": [
        {"event_id": "import:erased:7:0", "type": "identify", "email": "old@acme.io",
         "occurred_at": "2026-01-05T09:00:00Z", "traits": {"first_name": "Old"}}]}
    status, first = call("POST", "/v1/import", {"rows": [row]})
    assert status == 200 and first["counts"]["imported"] == 1, first
    call("DELETE", f"/v1/leads/{first['results'][0]['lead_id']}")

    status, again = call("POST", "/v1/import", {"rows": [{**row, "key": "import:erased:7b"}]})

    assert status == 200 and again["counts"]["rejected"] == 1, again
    assert again["results"][0]["field"] == "events" and "erased" in again["results"][0]["reason"]
    assert {item["kind"]["S"] for item in lead_items(aws)} == {"erased"}
