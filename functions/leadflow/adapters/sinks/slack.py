"""Slack incoming-webhook alerts, and the one function that posts any Slack message.

Incoming webhooks answer 200 "ok" or a plain-text error: 4xx such as `invalid_payload`,
`no_text`, `invalid_blocks`, `channel_not_found`, `invalid_token`, `no_service` can
never succeed on retry; 429 (with Retry-After) and 5xx can. `post` is reused for
response_url updates (the decided card) and SLA escalations, so every Slack message is
classified the same way. A post is one JSON POST through the HTTP sinks' own `send`
(adapters/sinks/http.py), so it has the same deadline for the whole request, no
redirect followed and no hidden second attempt: the dispatcher owns retries, and a
retry inside one attempt would double-post an alert.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Iterable

from leadflow.domain.handoff import Notice, SinkKind
from leadflow.domain.errors import PermanentError
from leadflow.domain.ports import Receipt, SalesAction
from leadflow.adapters.sinks.http import Response, deadline_after, raise_for, send
from leadflow.adapters.sinks.slack_blocks import (
    alert_message, decided_message, escalation_message, rules_summary_message,
)

USER_AGENT = "leadflow"


class SlackSink:
    """Posts the alert card for a move into MQL or SQL to one incoming webhook."""

    name = "slack"
    kind: SinkKind = "alert"

    def __init__(self, webhook_url: str, *, timeout: float = 5.0, reject_reasons: Iterable[str] = ()):
        self.webhook_url = webhook_url
        self.timeout = timeout
        self.reject_reasons = tuple(reject_reasons)

    def deliver(self, notice: Notice, *, deadline: float | None = None) -> Receipt:
        post(self.webhook_url, alert_message(notice, self.reject_reasons), self.timeout,
             deadline=deadline_after(self.timeout, deadline))
        return {"posted": True}  # incoming webhooks answer "ok" and no message id

    def __repr__(self) -> str:  # the URL is a credential
        return f"SlackSink(timeout={self.timeout})"


class SlackEscalator:
    """SLA escalations on Slack: the owner is mentioned in the alerts channel, a manager in
    the escalation channel (the alerts channel when there is none)."""

    def __init__(self, alerts_url: str, escalation_url: str | None = None, *, timeout: float = 5.0):
        self.alerts_url = alerts_url
        self.escalation_url = escalation_url
        self.timeout = timeout

    def escalate(self, notice: Notice, *, level: int, audience: str, person: Any, waited_minutes: int) -> None:
        url = self.escalation_url if audience == "manager" and self.escalation_url else self.alerts_url
        message = escalation_message(notice, level=level, mention=mention(person, audience),
                                     overdue_minutes=waited_minutes)
        post(url, message, self.timeout)

    def __repr__(self) -> str:  # the URLs are credentials
        return f"SlackEscalator(timeout={self.timeout})"


class SlackAnnouncer:
    """The one summary of a rules publish, in the alerts channel."""

    def __init__(self, webhook_url: str, *, timeout: float = 5.0):
        self.webhook_url = webhook_url
        self.timeout = timeout

    def rules_summary(self, **summary: Any) -> None:
        post(self.webhook_url, rules_summary_message(**summary), self.timeout)

    def __repr__(self) -> str:  # the URL is a credential
        return f"SlackAnnouncer(timeout={self.timeout})"


class SlackReplies:
    """Answers a button press through the interaction's response_url: the alert replaced
    by the decided card, or a note only the presser sees. Slack wants the HTTP answer
    within 3 seconds, so a reply gets 2.5; a reply that fails is logged, and the action
    stands."""

    def __init__(self, *, timeout: float = 2.5):
        self.timeout = timeout

    def decided(self, action: SalesAction, notice: Notice, *, actor: str, at: datetime, next_actions: list[str],
                reject_reasons: list[str]) -> None:
        who = f"<@{action.user_id}>" if action.user_id else actor
        self._reply(action, decided_message(notice, reject_reasons, action=action.action, actor=who,
                                            reason=action.reason, at=at, next_actions=next_actions))

    def refused(self, action: SalesAction, text: str) -> None:
        self._reply(action, {"response_type": "ephemeral", "replace_original": False, "text": text})

    def _reply(self, action: SalesAction, message: dict[str, Any]) -> None:
        if not action.reply_to:
            return
        try:
            post(action.reply_to, message, timeout=self.timeout)
        except Exception as exc:  # the action stands; only the message update failed
            from leadflow.observability import logger

            logger.warning("slack.response_url_failed", extra={"lead_id": action.lead_id, "error": str(exc)[:200]})


def mention(person: Any, audience: str) -> str | None:
    """How Slack names someone: their member id as a mention, else their name; a manager
    nobody configured is everyone in the channel."""
    if person is not None and getattr(person, "slack_user", None):
        return f"<@{person.slack_user}>"
    if person is not None and getattr(person, "name", None):
        return person.name
    return "<!here>" if audience == "manager" else None


def post(url: str, message: dict[str, Any], timeout: float = 5.0, *, deadline: float | None = None) -> None:
    """One POST of a full message dict to an incoming webhook or a response_url, over in
    `timeout` seconds (or by `deadline`, a `time.monotonic()` instant, if sooner).
    Returns on 2xx; raises RetryableError / PermanentError otherwise."""
    if not url:
        raise PermanentError("slack: no webhook URL configured")
    body = json.dumps(message, separators=(",", ":")).encode("utf-8")
    answer = send("POST", url, body, {"Content-Type": "application/json; charset=utf-8", "User-Agent": USER_AGENT},
                  timeout, what="slack", deadline=deadline)
    classify(answer.status, answer.headers, answer.body)


def classify(status: int, headers: Any, body: str | bytes | None) -> None:
    """Slack's answer as a sink outcome, with the same rules as every HTTP sink."""
    lowered = {str(k).lower(): str(v) for k, v in (headers.items() if headers else [])}
    raw = body.encode("utf-8") if isinstance(body, str) else (body or b"")
    raise_for(Response(status, lowered, raw), "slack")
