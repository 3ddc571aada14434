"""The handoff end to end: `leadflow serve` with real Slack, HubSpot, Salesforce and generic
webhook receivers on 127.0.0.1 that fail on command; EventBridge and SES on the stack's moto."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import boto3
import pytest

from tests.e2e.conftest import API_KEY, ROOT, Client, serving
from leadflow_infra.demo.handoff import team_rules
from leadflow_infra.receivers import SinkReceivers
from leadflow_infra.receivers import button_value as slack_button_value
from leadflow_infra.receivers import slack_button_press

pytestmark = pytest.mark.e2e

SLACK_SECRET = SinkReceivers.slack_secret
SLA_OWNER_HOURS = 0.0015  # ~5 s on a 24x7 calendar
SLA_MANAGER_HOURS = 0.003  # ~11 s

BUYER = {"first_name": "Jane", "last_name": "Doe", "job_title": "VP Marketing", "company": "Acme", "company_size": 200,
         "industry": "software", "country": "US", "budget": "yes", "authority": "decision_maker",
         "need": "replace spreadsheets", "timeline": "this_quarter"}


def rules_file(directory: Path) -> Path:
    return team_rules(directory, version="e2e-1", sla_hours=(SLA_OWNER_HOURS, SLA_MANAGER_HOURS))


class Handoff:
    def __init__(self, client: Client, data: Path, slack, hubspot, salesforce, webhook):
        self.client, self.data = client, data
        self.slack, self.hubspot, self.salesforce, self.webhook = slack, hubspot, salesforce, webhook
        info = json.loads((data / "stack.json").read_text())
        self.info = info
        self.aws = dict(endpoint_url=info["endpoint_url"], region_name=info["region"],
                        aws_access_key_id="testing", aws_secret_access_key="testing")

    def boto(self, service: str):
        return boto3.session.Session().client(service, **self.aws)

    def sweep_here(self, monkeypatch) -> dict[str, int]:
        """One SLA sweep in this process, on the served stack's table and with its sinks:
        what its scheduler runs every second, run synchronously so a test needs no clock."""
        from leadflow import container

        for name, value in {**self.env, "LEADFLOW_TABLE": self.info["table"], "AWS_ENDPOINT_URL": self.aws["endpoint_url"],
                            "AWS_DEFAULT_REGION": self.aws["region_name"], "AWS_ACCESS_KEY_ID": "testing",
                            "AWS_SECRET_ACCESS_KEY": "testing", "POWERTOOLS_METRICS_DISABLED": "true"}.items():
            monkeypatch.setenv(name, value)
        container.reset()
        try:
            return container.sla_watch().sweep()
        finally:
            container.reset()

    def new_sql(self, email: str | None = None, **traits) -> tuple[str, dict]:
        email = email or fresh_email()
        status, body = self.client.post("/v1/events", {"type": "form_submitted", "email": email,
                                                       "properties": {"form_kind": "demo_request"},
                                                       "traits": {**BUYER, **traits}})
        assert status == 200 and body["stage"] == "sql", body
        return email, body

    def alerts_for(self, email: str) -> list[dict]:
        return [m for m in self.slack.messages() if email in json.dumps(m) and m["text"].startswith("New ")
                and not m.get("replace_original")]

    def deliveries(self, lead_id: str) -> dict[str, str]:
        """"<sink>@<move id>": status, as the stack's delivery ledger holds them."""
        from leadflow.adapters.dynamodb.ledger import DynamoDeliveryLedger

        ledger = DynamoDeliveryLedger(self.info["table"], client=self.boto("dynamodb"))
        return {f"{d['sink']}@{d['move_id']}": d["status"] for d in ledger.deliveries(lead_id)}

    def wait_delivered(self, lead_id: str, sinks: set[str], timeout: float = 30.0) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while True:
            got = self.deliveries(lead_id)
            done = {k.split("@")[0] for k, v in got.items() if v in ("sent", "dead")}
            if sinks <= done or time.monotonic() > deadline:
                return got
            time.sleep(0.2)

    def press(self, value: str, action_id: str, *, user: str = "U0OLA", reason: str | None = None,
              secret: str = SLACK_SECRET, timestamp: int | None = None) -> tuple[int, dict]:
        body, headers = slack_button_press(value, action_id, secret=secret, user_id=user, user_name=user.lower(),
                                           response_url=f"{self.slack.url}/actions/T111/{uuid.uuid4().hex[:6]}",
                                           reason=reason, timestamp=timestamp)
        return self.client.request("POST", "/v1/webhooks/slack", raw=body, headers=headers)


def button_value(alert: dict, action_id: str) -> str:
    value = slack_button_value(alert, action_id)
    assert value, f"no {action_id} button in {alert}"
    return value


@pytest.fixture(scope="module")
def handoff(tmp_path_factory):
    rx = SinkReceivers().start()
    data = tmp_path_factory.mktemp("handoff")
    env = {"LEADFLOW_API_KEY": API_KEY,
           **rx.environment(LEADFLOW_RULES=str(rules_file(data)), LEADFLOW_EVENT_BUS="leadflow-e2e",
                            LEADFLOW_SINK_TIMEOUT="1", LEADFLOW_RETRY_BASE_SECONDS="0.2",
                            LEADFLOW_RETRY_MAX_ATTEMPTS="4")}
    with serving(data, env, "--sla-every", "1") as base:
        h = Handoff(Client(base), data, rx.slack, rx.hubspot, rx.salesforce, rx.webhook)
        h.env = env
        h.events_queue = events_queue(h)
        yield h
    rx.stop()


def events_queue(h: Handoff) -> str:
    """A queue behind a rule on the stack's event bus: what EventBridge delivered, readable."""
    sqs, events = h.boto("sqs"), h.boto("events")
    url = sqs.create_queue(QueueName="e2e-events")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name="all-stage-changes", EventBusName="leadflow-e2e",
                    EventPattern=json.dumps({"source": ["leadflow"], "detail-type": ["LeadStageChanged"]}))
    events.put_targets(Rule="all-stage-changes", EventBusName="leadflow-e2e", Targets=[{"Id": "q", "Arn": arn}])
    return url


def fresh_email() -> str:
    return f"buyer-{uuid.uuid4().hex[:8]}@acme-{uuid.uuid4().hex[:4]}.com"


def about(email: str):
    """A scripted failure for this test's lead only: earlier tests' deliveries still in
    flight pass untouched, however busy the machine."""
    return lambda request: email in request.text


def test_qualified_buyer_produces_one_alert_and_one_push_per_sink_per_move(handoff):
    email, body = handoff.new_sql()
    lead_id = body["lead_id"]

    got = handoff.wait_delivered(lead_id, {"slack", "email", "webhook", "hubspot", "salesforce", "eventbridge"})
    handoff.slack.wait_for(lambda r: email in r.text and "New SQL" in r.text, timeout=15)
    status, lead = handoff.client.get(f"/v1/leads/{lead_id}")

    assert set(got.values()) == {"sent"}, got
    moves = [m for m in lead["history"]]
    assert len(handoff.alerts_for(email)) == len([m for m in moves if m["to_stage"] in ("mql", "sql")]) == 1
    pushes = [d for d in handoff.webhook.deliveries if d.payload["lead_id"] == lead_id]
    assert sorted(d.id for d in pushes) == sorted(m["transition_id"] for m in moves)
    assert pushes[0].payload["to_stage"] == "sql" and pushes[0].payload["email"] == email
    assert lead["owner"] in ("ola", "siri") and moves[-1]["owner"] == lead["owner"]
    assert "round-robin" in moves[-1]["routing"]["reason"]
    contact = handoff.hubspot.contacts[email]
    assert contact["lifecyclestage"] == "salesqualifiedlead"
    assert contact["hubspot_owner_id"] == {"ola": "111", "siri": "222"}[lead["owner"]]
    assert handoff.salesforce.leads[lead_id]["Status"] == "Working - Contacted"
    alert = handoff.alerts_for(email)[0]
    assert "Acme" in json.dumps(alert) and "VP Marketing" in json.dumps(alert)
    assert button_value(alert, "leadflow_accept").startswith(lead_id)
    assert handoff.slack.violations == [] and handoff.hubspot.violations == [] and handoff.salesforce.violations == []


def test_eventbridge_receives_lead_stage_changed_for_the_move(handoff):
    email, body = handoff.new_sql()
    handoff.wait_delivered(body["lead_id"], {"eventbridge"})
    sqs = handoff.boto("sqs")

    seen = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any(e["detail"]["lead_id"] == body["lead_id"] for e in seen):
        for m in sqs.receive_message(QueueUrl=handoff.events_queue, MaxNumberOfMessages=10).get("Messages", []):
            seen.append(json.loads(m["Body"]))

    event = next(e for e in seen if e["detail"]["lead_id"] == body["lead_id"])
    assert event["source"] == "leadflow" and event["detail-type"] == "LeadStageChanged"
    assert event["detail"]["to_stage"] == "sql"


def test_receiver_outages_delay_alerts_but_never_duplicate_them(handoff):
    email = fresh_email()
    handoff.slack.fail_next(2, status=500, when=about(email))
    handoff.webhook.fail_next(1, status=429, retry_after=1, when=about(email))
    handoff.hubspot.timeout_next(1, seconds=1.5, then_process=True, when=about(email))  # applied, answer lost
    handoff.salesforce.drop_next(1, when=about(email))

    email, body = handoff.new_sql(email)
    lead_id = body["lead_id"]
    got = handoff.wait_delivered(lead_id, {"slack", "webhook", "hubspot", "salesforce"}, timeout=45)

    assert {k.split("@")[0]: v for k, v in got.items()}["slack"] == "sent", got
    assert set(got.values()) == {"sent"}, got
    assert len(handoff.alerts_for(email)) == 1
    assert len([d for d in handoff.webhook.deliveries if d.payload["lead_id"] == lead_id]) == 1
    assert handoff.hubspot.contacts[email]["lifecyclestage"] == "salesqualifiedlead"
    assert handoff.salesforce.leads[lead_id]["Email"] == email


def test_accept_button_moves_lead_records_first_touch_and_updates_message(handoff):
    email, body = handoff.new_sql()
    handoff.slack.wait_for(lambda r: email in r.text and "New SQL" in r.text, timeout=15)
    alert = handoff.alerts_for(email)[0]

    status, answer = handoff.press(button_value(alert, "leadflow_accept"), "leadflow_accept", user="U0SIRI")
    update = handoff.slack.wait_for(lambda r: "/actions/" in r.path and email in r.text, timeout=10)[0].json()
    _, lead = handoff.client.get(f"/v1/leads/{body['lead_id']}")

    assert status == 200 and answer["ok"] is True
    assert lead["history"][-1]["cause"]["action"] == "accept"
    assert lead["first_touch_at"] and lead["first_touch_seconds"] >= 0
    assert update["replace_original"] is True and "Accepted" in update["text"]
    assert not any(b.get("block_id") == "leadflow_decision" for b in update["blocks"])  # nothing to press twice

    # The update offers the next sales moves; opening the opportunity moves the lead on.
    status, answer = handoff.press(button_value(update, "leadflow_opportunity"), "leadflow_opportunity", user="U0SIRI")
    _, lead = handoff.client.get(f"/v1/leads/{body['lead_id']}")

    assert status == 200 and answer["stage"] == "opportunity" and lead["stage"] == "opportunity"
    assert handoff.wait_delivered(body["lead_id"], {"hubspot"})  # the CRM hears of it too
    deadline = time.monotonic() + 10
    while handoff.hubspot.contacts[email]["lifecyclestage"] != "opportunity" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert handoff.hubspot.contacts[email]["lifecyclestage"] == "opportunity"


def test_reject_button_needs_a_reason_then_moves_lead_back_to_nurture(handoff):
    email, body = handoff.new_sql()
    handoff.slack.wait_for(lambda r: email in r.text and "New SQL" in r.text, timeout=15)
    value = button_value(handoff.alerts_for(email)[0], "leadflow_reject")

    status, answer = handoff.press(value, "leadflow_reject")
    _, unchanged = handoff.client.get(f"/v1/leads/{body['lead_id']}")
    status2, answer2 = handoff.press(value, "leadflow_reject", reason="no_budget")
    _, lead = handoff.client.get(f"/v1/leads/{body['lead_id']}")

    assert answer == {"ok": False, "error": "reason_required"} and unchanged["stage"] == "sql"
    assert answer2["ok"] is True and lead["stage"] == "lead"
    assert lead["history"][-1]["cause"]["reason"] == "no_budget"
    handoff.slack.wait_for(lambda r: "/actions/" in r.path and email in r.text and "Rejected" in r.text, timeout=10)


@pytest.mark.parametrize("forgery", ["wrong_secret", "stale", "unsigned"])
def test_forged_slack_interaction_is_401_and_changes_nothing(handoff, forgery):
    email, body = handoff.new_sql()
    value = f"{body['lead_id']}|tr_forged"
    if forgery == "unsigned":
        status, err = handoff.client.request("POST", "/v1/webhooks/slack", raw=b"payload=%7B%7D",
                                             headers={"content-type": "application/x-www-form-urlencoded"})
    else:
        status, err = handoff.press(value, "leadflow_accept", **(
            {"secret": "not-the-secret"} if forgery == "wrong_secret" else {"timestamp": int(time.time()) - 600}))
    _, lead = handoff.client.get(f"/v1/leads/{body['lead_id']}")

    assert status == 401 and err["error"] == "unauthorized"
    assert lead["stage"] == "sql" and not any(m["cause"].get("action") for m in lead["history"])


def test_permanent_refusal_dead_letters_then_dlq_replay_delivers_once(handoff):
    email = fresh_email()
    handoff.hubspot.fail_next(1, status=400, body='{"status":"error","message":"Property values were not valid"}',
                              when=about(email))
    email, body = handoff.new_sql(email)
    lead_id = body["lead_id"]
    got = handoff.wait_delivered(lead_id, {"hubspot"})
    assert [v for k, v in got.items() if k.startswith("hubspot@")] == ["dead"]

    cli = [sys.executable, "-m", "leadflow_infra.cli", "dlq"]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "functions")}
    listed = subprocess.run([*cli, "list", "--data-dir", str(handoff.data), "--json"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    mine = [r for r in rows if r["lead_id"] == lead_id]
    assert listed.returncode == 0 and len(mine) == 1, listed.stderr
    assert mine[0]["sink"] == "hubspot" and "400" in mine[0]["reason"] and email not in listed.stdout

    replayed = subprocess.run([*cli, "replay", mine[0]["message_id"], "--data-dir", str(handoff.data)], cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=60)
    assert replayed.returncode == 0, replayed.stderr
    deadline = time.monotonic() + 120
    while email not in handoff.hubspot.contacts and time.monotonic() < deadline:
        time.sleep(0.2)

    assert handoff.hubspot.contacts[email]["lifecyclestage"] == "salesqualifiedlead"
    assert [v for k, v in handoff.deliveries(lead_id).items() if k.startswith("hubspot@")] == ["sent"]
    again = subprocess.run([*cli, "list", "--data-dir", str(handoff.data), "--json"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=60)
    assert lead_id not in again.stdout


def test_sla_watchdog_escalates_an_ignored_sql_once_per_level(handoff, monkeypatch):
    email, body = handoff.new_sql()
    lead_id = body["lead_id"]

    def escalations():
        return [r for r in handoff.slack.accepted if "SLA" in r.text and lead_id in r.text]

    handoff.slack.wait_for(lambda r: "SLA" in r.text and lead_id in r.text, timeout=30, count=2)
    # Both levels are sent: further sweeps (here, racing the stack's own every second) send nothing.
    again = [handoff.sweep_here(monkeypatch) for _ in range(3)]
    found = escalations()

    assert all(sweep["checked"] >= 1 for sweep in again), again  # this lead was looked at each time

    assert len(found) == 2
    owner_level, manager_level = sorted(found, key=lambda r: r.received_at)
    assert owner_level.path.endswith("/sales-alerts") and "U0" in owner_level.text
    assert manager_level.path.endswith("/sales-managers") and "U0MANAGER" in manager_level.text
