"""Slack interactivity: v0 signature (Slack's published vector), the replay window, and
which interactions act."""

from __future__ import annotations

import json
import urllib.parse
from pathlib import Path

import pytest

from leadflow.adapters.vendor_webhooks.slack import parse, verify
from leadflow.domain.errors import BadRequest, Unauthorized
from leadflow_infra.receivers import slack_button_press

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "slack"
# Slack's worked example (api.slack.com/authentication/verifying-requests-from-slack).
VECTOR_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
VECTOR_TS = 1531420618
VECTOR_BODY = ("token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V"
               "&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text="
               "&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN"
               "&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c")
VECTOR_SIG = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"


def headers(sig: str = VECTOR_SIG, ts: int | str = VECTOR_TS) -> dict[str, str]:
    return {"X-Slack-Signature": sig, "X-Slack-Request-Timestamp": str(ts)}


def test_verify_slack_published_vector_passes():
    verify(VECTOR_BODY, headers(), VECTOR_SECRET, now=lambda: VECTOR_TS + 10)


def test_verify_lowercased_headers_pass():
    verify(VECTOR_BODY, {k.lower(): v for k, v in headers().items()}, VECTOR_SECRET, now=lambda: VECTOR_TS)


@pytest.mark.parametrize(("body", "hdrs", "secret", "now", "reason"), [
    (VECTOR_BODY + "x", headers(), VECTOR_SECRET, VECTOR_TS, "does not match"),
    (VECTOR_BODY, headers(), "another-secret", VECTOR_TS, "does not match"),
    (VECTOR_BODY, headers(), VECTOR_SECRET, VECTOR_TS + 301, "5-minute window"),
    (VECTOR_BODY, headers(), VECTOR_SECRET, VECTOR_TS - 301, "5-minute window"),
    (VECTOR_BODY, headers(ts="yesterday"), VECTOR_SECRET, VECTOR_TS, "not a number"),
    (VECTOR_BODY, {}, VECTOR_SECRET, VECTOR_TS, "missing"),
    (VECTOR_BODY, headers(), None, VECTOR_TS, "no signing secret"),
])
def test_verify_forged_stale_or_unsigned_request_is_unauthorized(body, hdrs, secret, now, reason):
    with pytest.raises(Unauthorized, match=reason):
        verify(body, hdrs, secret, now=lambda: now)


def test_parse_fixture_shaped_button_press_names_lead_move_user_and_reason():
    body, _ = slack_button_press("ld_abc|tr_def", "leadflow_reject", secret="s", response_url="https://hooks.slack.com/x",
                                 user_id="U1", user_name="ola", reason="no_budget")

    got = parse(body.decode())

    assert (got.action, got.lead_id, got.move_id, got.user_id, got.reason) == ("reject", "ld_abc", "tr_def", "U1", "no_budget")
    assert got.reply_to == "https://hooks.slack.com/x"


def test_parse_vendor_block_actions_fixture_from_another_app_is_ignored():
    payload = json.loads((FIXTURES / "block_actions.json").read_text())
    body = "payload=" + urllib.parse.quote(json.dumps(payload))

    assert parse(body) is None  # action_id "a" is not one of ours


def test_parse_choosing_a_reject_reason_is_not_an_action():
    body, _ = slack_button_press("ld_abc|tr_def", "leadflow_reject_reason", secret="s", response_url="https://x")

    assert parse(body.decode()) is None


@pytest.mark.parametrize("body", ["token=1", "payload=%7Bnot-json", ])
def test_parse_body_without_json_payload_is_bad_request(body):
    with pytest.raises(BadRequest):
        parse(body)


def test_parse_button_value_that_is_not_ours_is_bad_request():
    body, _ = slack_button_press("junk", "leadflow_accept", secret="s", response_url="https://x")

    with pytest.raises(BadRequest, match="lead reference"):
        parse(body.decode())


def test_legal_actions_after_accept_offer_the_next_sales_moves(rules):
    from leadflow.domain.lifecycle import legal_follow_ups as legal_actions
    from leadflow.domain.engine import apply_action, apply_event, new_lead
    from leadflow.domain.events import CanonicalEvent, finalise
    from tests.conftest import NOW

    buyer = {"job_title": "VP Marketing", "company_size": 200, "industry": "software", "country": "US", "budget": "yes",
             "authority": "decision_maker", "need": "x", "timeline": "this_quarter"}
    event = finalise(CanonicalEvent(type="form_submitted", email="j@acme.com", event_id="e1", traits=buyer,
                                    properties={"form_kind": "demo_request"}), now=NOW, source="test")
    sql = apply_event(new_lead("ld_1", email="j@acme.com", now=NOW), event, rules, NOW).lead
    accepted = apply_action(sql, "accept", reason=None, by="rep", rules=rules, now=NOW).lead
    opportunity = apply_action(accepted, "opportunity", reason=None, by="rep", rules=rules, now=NOW).lead

    assert legal_actions(accepted) == ["opportunity", "won", "reject", "recycle", "disqualify"]
    assert legal_actions(opportunity) == ["won", "lost", "recycle", "disqualify"]
