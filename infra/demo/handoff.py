"""The handoff part of ``make demo``: every sink on, pointed at local receivers.

Slack, the generic CRM webhook, HubSpot and Salesforce are real HTTP servers on
127.0.0.1 (``leadflow_infra.receivers``) that check requests the way those APIs do;
email (SES) and EventBridge go to the stack's moto. Slack and the webhook are made to
fail at first (a 500 twice, a 429 with Retry-After), so the demo shows alerts
arriving once despite the outage. Routing and a seconds-long SLA are added to the
default rules, so owners are assigned and an ignored SQL is escalated while you watch.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

from leadflow_infra.receivers import SinkReceivers, button_value, slack_button_press

SLA_HOURS = (0.0015, 0.003)  # ~5 s to the owner, ~11 s to the manager, on a 24x7 calendar
# Every variable the handoff reads: a user's real channels and CRMs never get demo traffic.
SINK_VARIABLES = (
    "LEADFLOW_SLACK_WEBHOOK_URL", "LEADFLOW_SLACK_ESCALATION_WEBHOOK_URL", "LEADFLOW_WEBHOOK_SECRET_SLACK",
    "LEADFLOW_CRM_WEBHOOK_URL", "LEADFLOW_CRM_WEBHOOK_SECRET", "LEADFLOW_HUBSPOT_TOKEN", "LEADFLOW_HUBSPOT_BASE_URL",
    "LEADFLOW_SALESFORCE_INSTANCE_URL", "LEADFLOW_SALESFORCE_CLIENT_ID", "LEADFLOW_SALESFORCE_CLIENT_SECRET",
    "LEADFLOW_SES_FROM", "LEADFLOW_SALES_EMAIL", "LEADFLOW_EVENT_BUS", "LEADFLOW_SINK_TIMEOUT",
    "LEADFLOW_RETRY_BASE_SECONDS", "LEADFLOW_RETRY_MAX_ATTEMPTS",
)


def team_rules(directory: Path, *, version: str | None = None, weights: tuple[int, int] = (1, 1),
               sla_hours: tuple[float, float] | None = None) -> Path:
    """The shipped default rules plus a sales team of two reps with Slack ids and CRM
    owner ids (scoring unchanged), optionally a 24x7 SLA of `sla_hours` (owner, manager);
    written to `directory` for LEADFLOW_RULES."""
    import yaml
    from importlib import resources

    data = yaml.safe_load(resources.files("leadflow").joinpath("rules/default.yaml").read_text(encoding="utf-8"))
    if version:
        data["version"] = version
    data["routing"] = {
        "default_team": "inbound",
        "teams": [{"id": "inbound", "manager": {"name": "Kari Manager", "slack_user": "U0MANAGER"},
                   "reps": [{"id": "ola", "name": "Ola Seller", "email": "ola@seller.example", "slack_user": "U0OLA",
                             "weight": weights[0], "hubspot_owner_id": "111", "salesforce_owner_id": "005000000000001"},
                            {"id": "siri", "name": "Siri Seller", "email": "siri@seller.example", "slack_user": "U0SIRI",
                             "weight": weights[1], "hubspot_owner_id": "222", "salesforce_owner_id": "005000000000002"}]}],
    }
    if sla_hours:
        data["sla"] = {
            "accept_within_business_hours": sla_hours[0],
            "escalations": [{"after_business_hours": sla_hours[0], "notify": "owner"},
                            {"after_business_hours": sla_hours[1], "notify": "manager"}],
            "business_hours": {"timezone": "UTC", "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
                               "start": "00:00", "end": "23:59"},
        }
    path = directory / "rules.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def demo_rules(directory: Path) -> Path:
    """Two reps (weights 2:1) and a seconds-long SLA on the default rules."""
    return team_rules(directory, weights=(2, 1), sla_hours=SLA_HOURS)


class Receivers(SinkReceivers):
    """The receivers, started with an outage: Slack answers 500 twice, the CRM webhook
    429 once; both recover."""

    def start(self) -> "Receivers":
        super().start()
        self.slack.fail_next(2, status=500)
        self.webhook.fail_next(1, status=429, retry_after=1)
        return self

    def alerts(self) -> list[dict[str, Any]]:
        return [r.json() for r in self.slack.accepted
                if r.path.endswith("/sales-alerts") and r.json()["text"].startswith("New ")]


def wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def check_handoff(api: Any, stack: Any, rx: Receivers, ids: dict[str, str],
                  check: Callable[[bool, str, str], None], accept_email: str) -> list[tuple[str, list[str]]]:
    """Deliveries as the contract states them, a Slack button press, the SLA watchdog.
    Each check is reported as (passed, what, result). Returns the SQLs by owner, for the report."""
    leads = {email: api.ok("GET", f"/v1/leads/{lead_id}") for email, lead_id in ids.items()}
    moves = {e: lead["history"] for e, lead in leads.items() if lead.get("email")}
    wanted = {e: sum(1 for m in h if _alerts(m)) for e, h in moves.items()}
    alert_moves = sum(wanted.values())
    all_moves = sum(len(h) for h in moves.values())

    stack.drain(30.0, retries=True)
    wait_until(lambda: len(rx.alerts()) >= alert_moves and len(rx.webhook.deliveries) >= all_moves, 30.0)
    alerts = rx.alerts()
    per_lead = {e: sum(1 for a in alerts if e in json.dumps(a)) for e in moves}
    check(per_lead == wanted and len(rx.slack.failed) >= 2, "Slack",
          f"{len(alerts)} alerts for {alert_moves} moves into MQL/SQL, one each "
          f"({len(rx.slack.failed)} attempts refused during the outage were retried)")
    ids_seen = [d.id for d in rx.webhook.deliveries]
    check(len(ids_seen) == all_moves and len(set(ids_seen)) == len(ids_seen), "CRM webhook",
          f"{len(ids_seen)} signed pushes for {all_moves} stage moves, no duplicate webhook-id "
          f"(a 429 with Retry-After was honoured)")
    check(len(rx.hubspot.contacts) == len(moves) and len(rx.salesforce.leads) == len(moves) and not
          rx.hubspot.violations and not rx.salesforce.violations, "HubSpot and Salesforce",
          f"{len(rx.hubspot.contacts)} contacts upserted by email, {len(rx.salesforce.leads)} "
          f"leads upserted by external id; no request refused for its shape")

    # Press Accept in Slack on the first SQL alert of `accept_email`.
    alert = next((a for a in alerts if accept_email in json.dumps(a) and a["text"].startswith("New SQL")), None)
    value = button_value(alert, "leadflow_accept") if alert else None
    if value:
        response_url = f"{rx.slack.url}/actions/TDEMO/1/demo"
        body, headers = slack_button_press(value, "leadflow_accept", secret=rx.slack_secret, response_url=response_url,
                                           user_id="U0OLA", user_name="ola")
        status, answer = api.request_raw("POST", "/v1/webhooks/slack", body, headers)
        updated = wait_until(lambda: any(r.path.startswith("/actions/") for r in rx.slack.accepted), 10.0)
        lead = api.ok("GET", f"/v1/leads/{ids[accept_email]}")
        last = lead["history"][-1]
        message = next((r.json() for r in rx.slack.accepted if r.path.startswith("/actions/")), {})
        text = message.get("text", "")
        # What the press added to the alert (who accepted; the time is the press's own).
        shown = text[text.find("Accepted"):].split(" at ")[0] if "Accepted" in text else text[-60:]
        check(status == 200 and last["cause"].get("action") == "accept" and updated and "Accepted" in text,
              f"Accept pressed in Slack for {accept_email}", f"lead {last['from_stage']} -> {last['to_stage']} by "
              f"{last['cause'].get('actor')}, first touch after {lead.get('first_touch_seconds') or 0:.0f} s, "
              f"message updated: \"{shown}\"")
    else:
        check(False, f"Accept pressed in Slack for {accept_email}", "no SQL alert with an Accept button")

    # Escalations: the SLA watchdog runs every second here; each ignored SQL escalates
    # to its owner, then to the manager, once each.
    sql_now = [e for e, lead in leads.items() if lead["stage"] == "sql" and e != accept_email]

    def escalated() -> dict[str, int]:
        counts: dict[str, int] = {}
        for r in rx.slack.accepted:
            if r.json()["text"].startswith("SLA"):
                for e in sql_now:
                    if ids[e] in r.text:
                        counts[e] = counts.get(e, 0) + 1
        return counts

    # Each ignored SQL's own two levels (the accepted lead may have escalated before its
    # accept: a total count could be reached with one level still to come).
    wait_until(lambda: all(escalated().get(e, 0) >= 2 for e in sql_now), 30.0)
    time.sleep(2.5)  # more sweeps: nothing may be sent twice
    esc = [r for r in rx.slack.accepted if r.json()["text"].startswith("SLA")]
    by_lead = escalated()
    accepted_count = sum(1 for r in esc if ids[accept_email] in r.text)
    check(all(by_lead.get(e) == 2 for e in sql_now) and accepted_count <= 2, "SLA watchdog",
          f"{len(sql_now)} ignored SQLs escalated once to the owner and once to the manager "
          f"({len(esc)} messages in all)")
    owners: dict[str, list[str]] = {}
    for email, lead in leads.items():
        if lead["stage"] in ("sql", "opportunity"):
            owners.setdefault(lead.get("owner") or "-", []).append(email)
    return sorted(owners.items())


def _alerts(move: dict[str, Any]) -> bool:
    """The contract: a move into mql or sql (from another stage) alerts people."""
    return move["to_stage"] in ("mql", "sql") and move["from_stage"] != move["to_stage"]
