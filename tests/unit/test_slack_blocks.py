"""The Slack messages as data: what a rep sees, what comes back from the buttons, and
that nothing a lead typed can break the card or ping a channel."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import pytest

from leadflow.domain.handoff import Notice, Owner
from leadflow.adapters.sinks.slack_blocks import (
    ACCEPT_ACTION_ID,
    DECISION_BLOCK_ID,
    REJECT_ACTION_ID,
    REJECT_REASON_ACTION_ID,
    action_value,
    alert_message,
    decided_message,
    escalation_message,
    parse_action_value,
)
from tests.conftest import NOW
from leadflow_infra.receivers import SlackReceiver

REJECT_REASONS = ["no_budget", "bad_timing", "not_decision_maker"]
OWNER = Owner(id="rep-1", name="Sam Seller", email="sam@vendor.example", slack_user="U012AB3CD")


def make_notice(**overrides: Any) -> Notice:
    fields: dict[str, Any] = {
        "move_id": "tr_0001",
        "lead_id": "ld_0123456789abcdef01234567",
        "email": "jane@acme.example",
        "from_stage": "mql",
        "to_stage": "sql",
        "occurred_at": NOW,
        "score": 87.0,
        "fit_grade": "A",
        "engagement_score": 42.5,
        "reasons": [
            {"rule": "seniority_executive", "points": 30, "detail": "VP or C-level title"},
            {"rule": "demo_request", "points": 25, "detail": "asked for a demo"},
            {"rule": "competitor_domain", "points": -10, "detail": "works at a competitor"},
        ],
        "traits": {"first_name": "Jane", "last_name": "Doe", "company": "Acme", "job_title": "VP Marketing"},
        "owner": OWNER,
    }
    fields.update(overrides)
    return Notice(**fields)


def blocks_of(message: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [b for b in message["blocks"] if b["type"] == kind]


def field_texts(message: dict[str, Any]) -> dict[str, str]:
    fields = next(b["fields"] for b in message["blocks"] if b["type"] == "section" and "fields" in b)
    return {f["text"].split("\n", 1)[0].strip("*"): f["text"].split("\n", 1)[1] for f in fields}


def test_alert_for_sql_shows_header_facts_reasons_and_decision_controls():
    message = alert_message(make_notice(), REJECT_REASONS)

    assert blocks_of(message, "header")[0]["text"]["text"] == "New SQL: Jane Doe"
    facts = field_texts(message)
    assert facts == {
        "Name": "Jane Doe", "Email": "jane@acme.example", "Company": "Acme", "Job title": "VP Marketing",
        "Stage": "MQL → SQL", "Fit grade": "A", "Engagement score": "42.5", "Score": "87", "Owner": "<@U012AB3CD>",
    }
    why = [b for b in blocks_of(message, "section") if "text" in b][0]["text"]["text"]
    assert why.splitlines()[1:] == [
        "+30 VP or C-level title",
        "+25 asked for a demo",
        "-10 works at a competitor",
    ]
    assert message["text"] == "New SQL: Jane Doe (Acme), score 87"
    assert SlackReceiver.block_problem(message["blocks"]) is None


def test_alert_shows_the_visitors_message_and_first_source():
    message = alert_message(make_notice(message="Can we see a demo next week?\n<!channel> please", source="google / cpc, spring"),
                            REJECT_REASONS)

    assert field_texts(message)["Source"] == "google / cpc, spring"
    said = next(b["text"]["text"] for b in blocks_of(message, "section") if "text" in b
                and b["text"]["text"].startswith("*Message*"))
    assert said.splitlines()[1:] == ["> Can we see a demo next week?", "> &lt;!channel&gt; please"]
    assert SlackReceiver.block_problem(message["blocks"]) is None


def test_alert_for_sql_buttons_carry_lead_and_transition():
    actions = blocks_of(alert_message(make_notice(), REJECT_REASONS), "actions")

    assert len(actions) == 1 and actions[0]["block_id"] == DECISION_BLOCK_ID
    by_id = {e["action_id"]: e for e in actions[0]["elements"]}
    assert set(by_id) == {REJECT_REASON_ACTION_ID, ACCEPT_ACTION_ID, REJECT_ACTION_ID}
    accept, reject = by_id[ACCEPT_ACTION_ID], by_id[REJECT_ACTION_ID]
    assert (accept["style"], accept["text"]["text"]) == ("primary", "Accept")
    assert (reject["style"], reject["text"]["text"]) == ("danger", "Reject")
    assert accept["value"] == reject["value"] == "ld_0123456789abcdef01234567|tr_0001"
    assert parse_action_value(accept["value"]) == ("ld_0123456789abcdef01234567", "tr_0001")


def test_alert_reject_reason_options_use_code_as_value_and_spaced_label():
    actions = blocks_of(alert_message(make_notice(), REJECT_REASONS), "actions")[0]
    select = next(e for e in actions["elements"] if e["action_id"] == REJECT_REASON_ACTION_ID)

    assert select["type"] == "static_select"
    assert select["placeholder"]["text"] == "Reject reason…"
    assert [(o["value"], o["text"]["text"]) for o in select["options"]] == [
        ("no_budget", "no budget"), ("bad_timing", "bad timing"), ("not_decision_maker", "not decision maker")]


def test_alert_without_reject_reasons_omits_the_select_slack_would_refuse():
    message = alert_message(make_notice(), [])

    elements = blocks_of(message, "actions")[0]["elements"]
    assert [e["action_id"] for e in elements] == [ACCEPT_ACTION_ID, REJECT_ACTION_ID]
    assert SlackReceiver.block_problem(message["blocks"]) is None


def test_alert_for_mql_has_no_decision_controls():
    message = alert_message(make_notice(from_stage="lead", to_stage="mql"), REJECT_REASONS)

    assert blocks_of(message, "header")[0]["text"]["text"] == "New MQL: Jane Doe"
    assert blocks_of(message, "actions") == []
    assert field_texts(message)["Stage"] == "Lead → MQL"


def test_alert_escapes_lead_text_so_it_cannot_ping_or_link():
    notice = make_notice(traits={"name": "Eve <!channel>", "company": "A&B <https://evil.example|click>",
                                 "job_title": "<@U999> boss"},
                         reasons=[{"rule": "title", "points": 5, "detail": "title <!here>"}])

    message = alert_message(notice, REJECT_REASONS)

    dumped = json.dumps([b for b in message["blocks"] if b["type"] != "header"]) + message["text"]
    for raw in ("<!channel>", "<!here>", "<https://evil", "<@U999>"):
        assert raw not in dumped
    facts = field_texts(message)
    assert facts["Company"] == "A&amp;B &lt;https://evil.example|click&gt;"
    assert facts["Job title"] == "&lt;@U999&gt; boss"
    assert "title &lt;!here&gt;" in json.dumps(message["blocks"])


def test_alert_owner_without_slack_id_shows_name_and_without_owner_says_unassigned():
    named = alert_message(make_notice(owner=Owner(id="rep-2", name="Kim <K>")), [])
    unassigned = alert_message(make_notice(owner=None), [])
    spoofed = alert_message(make_notice(owner=Owner(id="rep-3", name="X", slack_user="!channel")), [])

    assert field_texts(named)["Owner"] == "Kim &lt;K&gt;"
    assert field_texts(unassigned)["Owner"] == "unassigned"
    assert field_texts(spoofed)["Owner"] == "X"


def test_alert_clips_oversized_values_within_slack_limits():
    huge = "x" * 5000
    notice = make_notice(traits={"name": huge, "company": huge, "job_title": huge},
                         reasons=[{"rule": f"r{i}", "points": i, "detail": huge} for i in range(40)])

    message = alert_message(notice, REJECT_REASONS)

    assert len(blocks_of(message, "header")[0]["text"]["text"]) <= 150
    assert SlackReceiver.block_problem(message["blocks"]) is None
    assert len(message["text"]) <= 3000


def test_alert_without_name_falls_back_to_email_and_missing_values_show_a_dash():
    message = alert_message(make_notice(traits={}), [])

    assert blocks_of(message, "header")[0]["text"]["text"] == "New SQL: jane@acme.example"
    assert field_texts(message)["Company"] == "—"


def test_decided_message_replaces_card_without_controls_and_says_who_and_when():
    at = datetime(2026, 11, 20, 10, 2, 31, tzinfo=timezone.utc)

    message = decided_message(make_notice(), REJECT_REASONS, action="accept", actor="U0ACTOR1", reason=None, at=at)

    assert message["replace_original"] is True
    assert blocks_of(message, "actions") == []
    context = blocks_of(message, "context")[-1]["elements"][0]["text"]
    assert context == "✅ Accepted by <@U0ACTOR1> at 2026-11-20 10:02 UTC"
    assert "Accepted by <@U0ACTOR1> at 2026-11-20 10:02 UTC" in message["text"]
    assert SlackReceiver.block_problem(message["blocks"]) is None


def test_decided_message_for_reject_names_the_reason():
    at = datetime(2026, 11, 20, 11, 0, tzinfo=timezone.utc)

    message = decided_message(make_notice(), REJECT_REASONS, action="reject", actor="Sam Seller",
                              reason="no_budget", at=at)

    context = blocks_of(message, "context")[-1]["elements"][0]["text"]
    assert context == "↩️ Rejected by Sam Seller (no_budget) at 2026-11-20 11:00 UTC"
    assert "Rejected by Sam Seller (no_budget)" in message["text"]


def test_escalation_message_names_overdue_lead_and_mentions_who_should_act():
    message = escalation_message(make_notice(), level=2, mention="U0MANAGER", overdue_minutes=45)

    assert message["text"].startswith("SLA: SQL Jane Doe (Acme) not accepted after 45 minutes")
    assert "<@U0MANAGER>" in message["text"]
    first = message["blocks"][0]["text"]["text"]
    assert "not accepted after 45 minutes" in first and "<@U0MANAGER>" in first and "level 2" in first
    facts = field_texts(message)
    assert facts["Email"] == "jane@acme.example" and facts["Score"] == "87" and facts["Owner"] == "<@U012AB3CD>"
    assert SlackReceiver.block_problem(message["blocks"]) is None


def test_escalation_message_with_a_plain_name_escapes_it_and_without_company_omits_it():
    message = escalation_message(make_notice(traits={"name": "Jane Doe"}), level=1, mention="<!channel> team",
                                 overdue_minutes=1)

    assert message["text"].startswith("SLA: SQL Jane Doe not accepted after 1 minute")
    assert "<!channel>" not in json.dumps(message)


@pytest.mark.parametrize("value", ["", "ld_1", "ld_1|", "|tr_1", "ld_1|tr_1|x", None, 42, "a" * 2001])
def test_parse_action_value_rejects_junk(value):
    with pytest.raises(ValueError):
        parse_action_value(value)


def test_action_value_round_trips_and_refuses_ids_with_the_separator():
    assert parse_action_value(action_value("ld_1", "tr_1")) == ("ld_1", "tr_1")
    with pytest.raises(ValueError):
        action_value("ld|1", "tr_1")
    with pytest.raises(ValueError):
        action_value("ld_1", "")


def test_decided_message_with_next_actions_offers_their_buttons_and_a_reason_menu():
    at = datetime(2026, 11, 20, 10, 2, tzinfo=timezone.utc)

    message = decided_message(make_notice(), REJECT_REASONS, action="accept", actor="U0ACTOR1", reason=None, at=at,
                              next_actions=["opportunity", "won", "reject", "not_an_action"])

    (block,) = [b for b in message["blocks"] if b["type"] == "actions"]
    ids = [e["action_id"] for e in block["elements"]]
    assert block["block_id"] == "leadflow_next"
    assert ids == ["leadflow_reject_reason", "leadflow_opportunity", "leadflow_won", "leadflow_reject"]
    assert SlackReceiver.block_problem(message["blocks"]) is None
