"""Slack interactivity in: the Accept / Reject (and follow-up) buttons on alerts.

Slack POSTs `application/x-www-form-urlencoded` with one field, `payload` (JSON), and
signs the raw body with its v0 scheme (`X-Slack-Signature: v0=hex(HMAC-SHA256(secret,
"v0:<ts>:<body>"))`, `X-Slack-Request-Timestamp` in seconds, 5-minute window). Nothing
is parsed before the signature passes.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from leadflow.domain.errors import BadRequest, Unauthorized
from leadflow.domain.ports import SalesAction

WINDOW_SECONDS = 300
ACTIONS = {f"leadflow_{name}": name
           for name in ("accept", "reject", "recycle", "disqualify", "opportunity", "won", "lost")}
REASON_ACTION_ID = "leadflow_reject_reason"


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


def parse(body: str) -> SalesAction | None:
    """The button press in a verified body; None for interactions we do not act on
    (choosing a reject reason in the menu, other apps' actions)."""
    from leadflow.adapters.sinks.slack_blocks import parse_action_value

    from leadflow.domain.inputs import parse_json, parse_urlencoded

    raw = (parse_urlencoded(body).get("payload") or [None])[0]
    if raw is None:
        raise BadRequest("Slack interaction without a payload field", field="payload")
    payload = parse_json(raw, field="payload")
    if not isinstance(payload, dict) or payload.get("type") != "block_actions":
        return None
    actions = payload.get("actions") or []
    pressed = next((a for a in actions if isinstance(a, dict) and a.get("action_id") in ACTIONS), None)
    if pressed is None:
        return None
    try:
        lead_id, move_id = parse_action_value(str(pressed.get("value", "")))
    except ValueError:
        raise BadRequest("button value is not a leadflow lead reference", field="payload.actions[0].value") from None
    user = payload.get("user") or {}
    return SalesAction(
        action=ACTIONS[pressed["action_id"]],
        lead_id=lead_id,
        move_id=move_id,
        user_id=str(user.get("id") or ""),
        user_name=str(user.get("username") or user.get("name") or user.get("id") or "slack user"),
        reason=_selected_reason(payload),
        reply_to=payload.get("response_url"),
    )


def _selected_reason(payload: dict[str, Any]) -> str | None:
    values = ((payload.get("state") or {}).get("values") or {})
    for block in values.values():
        if isinstance(block, dict) and REASON_ACTION_ID in block:
            option = (block[REASON_ACTION_ID] or {}).get("selected_option") or {}
            return option.get("value")
    return None
