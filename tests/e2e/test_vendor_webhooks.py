"""Each vendor's sample payload, signed as that vendor signs it by `leadflow webhooks test`,
sent to `leadflow serve` over HTTP, updates the right lead; a forged one changes nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from leadflow.adapters.vendor_webhooks.signatures import generate_sendgrid_keypair
from tests.e2e.conftest import API_KEY, ROOT, Client, serving

pytestmark = pytest.mark.e2e

FIXTURES = ROOT / "tests" / "fixtures"
SECRETS = {"hubspot": "hs-secret", "mautic": "mautic-secret", "typeform": "tf-secret", "calendly": "cal-secret"}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    data = tmp_path_factory.mktemp("vendors")
    private_pem, public_b64 = generate_sendgrid_keypair()
    key_file = data / "sendgrid-private.pem"
    key_file.write_text(private_pem)
    env = {"LEADFLOW_API_KEY": API_KEY, "LEADFLOW_WEBHOOK_SECRET_SENDGRID": public_b64,
           **{f"LEADFLOW_WEBHOOK_SECRET_{k.upper()}": v for k, v in SECRETS.items()},
           # No sinks: a developer's own Slack or CRM settings never get test traffic.
           **{name: "" for name in ("LEADFLOW_SLACK_WEBHOOK_URL", "LEADFLOW_CRM_WEBHOOK_URL", "LEADFLOW_HUBSPOT_TOKEN",
                                    "LEADFLOW_SALESFORCE_INSTANCE_URL", "LEADFLOW_SES_FROM", "LEADFLOW_EVENT_BUS")}}
    with serving(data, env) as base:
        yield {"client": Client(base), "data": data, "key_file": key_file}


def webhooks_test(served, source: str, path: Path, *, secret: str | None = None) -> tuple[int, dict]:
    secret = secret or (str(served["key_file"]) if source == "sendgrid" else SECRETS[source])
    done = subprocess.run([sys.executable, "-m", "leadflow_infra.cli", "webhooks", "test", source, str(path),
                           "--data-dir", str(served["data"]), "--secret", secret],
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT / "functions")},
                          capture_output=True, text=True, timeout=60)
    first, _, rest = done.stdout.partition("\n")
    assert first.startswith("POST "), done.stdout + done.stderr
    return int(first.rsplit(" ", 1)[1]), json.loads(rest)


def lead(served, lead_id: str) -> dict:
    status, body = served["client"].get(f"/v1/leads/{lead_id}")
    assert status == 200, body
    return body


def test_typeform_sample_creates_a_lead_with_its_answers(served):
    status, answer = webhooks_test(served, "typeform", FIXTURES / "typeform/form_response.json")

    assert status == 200 and answer["applied"] == 1, answer
    got = lead(served, answer["items"][0]["lead_id"])
    assert got["events_applied"] == 1 and got["history"]


def test_calendly_sample_booking_is_applied_with_its_own_age(served):
    status, answer = webhooks_test(served, "calendly", FIXTURES / "calendly/invitee_created.json")

    assert status == 200 and answer["applied"] == 1, answer
    got = lead(served, answer["items"][0]["lead_id"])
    # Booked in 2020: a conversion is a fact (a lead for good), but the hand it raised
    # is far past the rule's max age, so it qualifies nobody today.
    assert got["events_applied"] == 1 and got["stage"] == "lead"


def test_calendly_booking_today_by_a_fitting_buyer_is_a_strong_sql_signal(served, tmp_path):
    doc = json.loads((FIXTURES / "calendly/invitee_created.json").read_text())
    now = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
    doc["created_at"] = doc["payload"]["created_at"] = now
    doc["payload"].update(email="vp.sales@fabrikam-buyer.example", name="Vera Buyer",
                          uri=doc["payload"]["uri"].replace("AAAAAAAAAAAAAAAA/invitees", "BBBB/invitees"))
    served["client"].post("/v1/events", {"type": "identify", "email": "vp.sales@fabrikam-buyer.example",
                                         "traits": {"job_title": "VP Sales", "company_size": 300, "industry": "software",
                                                    "country": "US"}})
    path = tmp_path / "booking.json"
    path.write_text(json.dumps(doc))

    status, answer = webhooks_test(served, "calendly", path)

    got = lead(served, answer["items"][0]["lead_id"])
    assert status == 200 and answer["applied"] == 1, answer
    assert any(line["rule"] == "meeting_booked" for line in got["explanation"]), got["explanation"]
    assert got["stage"] == "sql", got["history"]


def test_sendgrid_batch_signed_with_ecdsa_applies_each_event(served):
    status, answer = webhooks_test(served, "sendgrid", FIXTURES / "sendgrid/events_open_click_unsubscribe.json")

    assert status == 200 and answer["received"] == 4 and answer["failed"] == 0, answer
    unsubscribed = [i for i in answer["items"] if i["status"] == "applied"]
    assert unsubscribed


def test_mautic_test_payload_shape_is_applied(served, tmp_path):
    body = {"mautic.form_on_submit": json.loads((FIXTURES / "mautic/form_on_submit.json").read_text()),
            "timestamp": "2026-11-23T08:00:00+00:00"}
    path = tmp_path / "mautic.json"
    path.write_text(json.dumps(body).replace("/", "\\/"))

    status, answer = webhooks_test(served, "mautic", path)
    again_status, again = webhooks_test(served, "mautic", path)

    assert status == 200 and answer["applied"] == 1, answer
    assert again_status == 200 and again["duplicate"] == 1  # Mautic has no ids: the same body is a duplicate


def test_hubspot_sample_delivery_is_applied_and_a_wrong_secret_is_refused(served):
    status, answer = webhooks_test(served, "hubspot", FIXTURES / "hubspot/contact_events_docs_example.json")
    forged_status, forged = webhooks_test(served, "hubspot", FIXTURES / "hubspot/contact_propertychange_captured.json",
                                          secret="not-the-client-secret")

    assert status == 200 and answer["failed"] == 0 and answer["received"] == 2, answer
    assert forged_status == 401 and "signature" in forged["message"]
