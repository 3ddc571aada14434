"""Slack interactivity: the Accept / Reject buttons on SQL alerts.

Slack POSTs `application/x-www-form-urlencoded` with one field, `payload` (JSON), and
signs the raw body with its v0 scheme (`X-Slack-Signature: v0=hex(HMAC-SHA256(secret,
"v0:<ts>:<body>"))`, `X-Slack-Request-Timestamp` in seconds, 5-minute window). Nothing
is parsed before the signature passes. Slack wants an answer within 3 seconds and
ignores its body: outcomes (the updated message, or why an action could not be done)
go back through the interaction's `response_url`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import parse_qs

from leadflow.domain.errors import BadRequest, LeadflowError, Unauthorized
from leadflow.observability import logger, metrics

WINDOW_SECONDS = 300
# Every sales action has its button: Accept / Reject on the alert, then the moves the
# lead's new stage allows (opportunity, won, lost, recycle, disqualify) on the update.
ACTIONS = {f"leadflow_{name}": name
           for name in ("accept", "reject", "recycle", "disqualify", "opportunity", "won", "lost")}
FOLLOW_UPS = ("opportunity", "won", "lost", "reject", "recycle", "disqualify")
REASON_ACTION_ID = "leadflow_reject_reason"
RESPONSE_TIMEOUT_S = 2.5


@dataclass
class Interaction:
    action: str
    lead_id: str
    transition_id: str
    user_id: str
    user_name: str
    reason: str | None
    response_url: str | None


def verify(body: str, headers: dict[str, str], secret: str | None, now: Callable[[], float] = time.time) -> None:
    if not secret:
        raise Unauthorized("no signing secret is configured for Slack (LEADFLOW_WEBHOOK_SECRET_SLACK)")
    h = {k.lower(): v for k, v in headers.items()}
    signature = h.get("x-slack-signature")
    timestamp = h.get("x-slack-request-timestamp")
    if not signature or not timestamp:
        raise Unauthorized("missing X-Slack-Signature or X-Slack-Request-Timestamp")
    try:
        ts = int(timestamp)
    except ValueError:
        raise Unauthorized("X-Slack-Request-Timestamp is not a number of seconds") from None
    if abs(now() - ts) > WINDOW_SECONDS:
        raise Unauthorized("X-Slack-Request-Timestamp is outside the 5-minute window (replayed or clock skew)")
    from slack_sdk.signature import SignatureVerifier

    class _Clock:
        def now(self) -> float:
            return now()

    if not SignatureVerifier(secret, clock=_Clock()).is_valid(body, timestamp, signature):
        raise Unauthorized("X-Slack-Signature does not match the body")


def parse(body: str) -> Interaction | None:
    """The button press in a verified body; None for interactions we do not act on
    (choosing a reject reason in the menu, other apps' actions)."""
    from leadflow.sinks.slack_blocks import parse_action_value

    fields = parse_qs(body, keep_blank_values=True)
    raw = (fields.get("payload") or [None])[0]
    if raw is None:
        raise BadRequest("Slack interaction without a payload field", field="payload")
    try:
        payload = json.loads(raw)
    except ValueError as exc:
        raise BadRequest(f"payload is not JSON: {exc}", field="payload") from None
    if not isinstance(payload, dict) or payload.get("type") != "block_actions":
        return None
    actions = payload.get("actions") or []
    pressed = next((a for a in actions if isinstance(a, dict) and a.get("action_id") in ACTIONS), None)
    if pressed is None:
        return None
    try:
        lead_id, transition_id = parse_action_value(str(pressed.get("value", "")))
    except ValueError:
        raise BadRequest("button value is not a leadflow lead reference", field="payload.actions[0].value") from None
    user = payload.get("user") or {}
    return Interaction(
        action=ACTIONS[pressed["action_id"]],
        lead_id=lead_id,
        transition_id=transition_id,
        user_id=str(user.get("id") or ""),
        user_name=str(user.get("username") or user.get("name") or user.get("id") or "slack user"),
        reason=_selected_reason(payload),
        response_url=payload.get("response_url"),
    )


def _selected_reason(payload: dict[str, Any]) -> str | None:
    values = ((payload.get("state") or {}).get("values") or {})
    for block in values.values():
        if isinstance(block, dict) and REASON_ACTION_ID in block:
            option = (block[REASON_ACTION_ID] or {}).get("selected_option") or {}
            return option.get("value")
    return None


def handle(body: str, headers: dict[str, str], secret: str | None, *, service, post: Callable[..., None] | None = None,
           now: Callable[[], float] = time.time) -> dict[str, Any]:
    """Verify, act, answer through response_url. Returns what the HTTP answer says."""
    verify(body, headers, secret, now)
    interaction = parse(body)
    if interaction is None:
        return {"ok": True, "ignored": True}
    if post is None:
        from leadflow.sinks.slack import post
    from leadflow.domain.handoff import notice_for
    from leadflow.domain.routing import owner_by_id, rep_for_actor

    rules = service.rules
    rep = rep_for_actor(interaction.user_id, rules) if rules.routing is not None else None
    actor = rep.id if rep else f"slack:{interaction.user_name}"
    if interaction.action == "reject" and not interaction.reason:
        _reply(post, interaction, {"response_type": "ephemeral", "replace_original": False,
                                   "text": "Choose a reject reason in the menu first, then press Reject."})
        return {"ok": False, "error": "reason_required"}
    try:
        result = service.act(interaction.lead_id, interaction.action, reason=interaction.reason, by=actor)
    except LeadflowError as exc:
        _reply(post, interaction, {"response_type": "ephemeral", "replace_original": False,
                                   "text": f"Could not {interaction.action} this lead: {exc.message}"})
        logger.info("slack.action_refused", extra={"lead_id": interaction.lead_id, "action": interaction.action,
                                                   "error": exc.code})
        return {"ok": False, "error": exc.code}
    lead = result.lead
    move = next((m for m in lead.history if m.transition_id == interaction.transition_id), result.moves[0])
    owner = owner_by_id(lead.owner, rules) if lead.owner and rules.routing is not None else None
    from leadflow.sinks.slack_blocks import decided_message

    message = decided_message(notice_for(lead, move, owner), list(rules.handoff.reject_reasons),
                              action=interaction.action, actor=f"<@{interaction.user_id}>" if interaction.user_id else actor,
                              reason=interaction.reason, at=result.moves[0].at, next_actions=legal_actions(lead))
    _reply(post, interaction, message)
    metrics.add_metric(name="SlackDecision", unit="Count", value=1)
    logger.info("slack.action", extra={"lead_id": lead.lead_id, "action": interaction.action, "stage": lead.stage})
    return {"ok": True, "action": interaction.action, "lead_id": lead.lead_id, "stage": lead.stage}


def legal_actions(lead) -> list[str]:
    """The follow-up actions the lifecycle allows for the lead now (a reason stands in
    for the ones that need one: the menu supplies it when pressed)."""
    from leadflow.domain.lifecycle import check_action

    legal = []
    for name in FOLLOW_UPS:
        try:
            check_action(lead, name, "reason")
        except LeadflowError:
            continue
        legal.append(name)
    return legal


def _reply(post: Callable[..., None], interaction: Interaction, message: dict[str, Any]) -> None:
    if not interaction.response_url:
        return
    try:
        post(interaction.response_url, message, timeout=RESPONSE_TIMEOUT_S)
    except Exception as exc:  # the action stands; only the message update failed
        logger.warning("slack.response_url_failed", extra={"lead_id": interaction.lead_id, "error": str(exc)[:200]})
