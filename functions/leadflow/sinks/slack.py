"""Slack incoming-webhook alerts, and the one function that posts any Slack message.

Incoming webhooks answer 200 "ok" or a plain-text error: 4xx such as `invalid_payload`,
`no_text`, `invalid_blocks`, `channel_not_found`, `invalid_token`, `no_service` can
never succeed on retry; 429 (with Retry-After) and 5xx can. `post` is reused for
response_url updates (the decided card) and SLA escalations, so every Slack message is
classified the same way. The SDK's own retry handlers are disabled: the dispatcher owns
retries, and a hidden second attempt would double-post an alert.
"""

from __future__ import annotations

import http.client
import logging
import urllib.error
from typing import Any, Iterable

from leadflow.domain.handoff import Notice, SinkKind
from leadflow.sinks.base import PermanentError, Receipt
from leadflow.sinks.http import Response, clip, raise_for, transport_error
from leadflow.sinks.slack_blocks import alert_message

# The SDK logs request bodies (names, emails) at DEBUG; its logger is pinned above that.
_SDK_LOGGER = logging.getLogger("leadflow.sinks.slack_sdk")
_SDK_LOGGER.setLevel(logging.WARNING)


class SlackSink:
    """Posts the alert card for a move into MQL or SQL to one incoming webhook."""

    name = "slack"
    kind: SinkKind = "alert"

    def __init__(self, webhook_url: str, *, timeout: float = 5.0, reject_reasons: Iterable[str] = ()):
        self.webhook_url = webhook_url
        self.timeout = timeout
        self.reject_reasons = tuple(reject_reasons)

    def deliver(self, notice: Notice) -> Receipt:
        post(self.webhook_url, alert_message(notice, self.reject_reasons), self.timeout)
        return {"posted": True}  # incoming webhooks answer "ok" and no message id

    def __repr__(self) -> str:  # the URL is a credential
        return f"SlackSink(timeout={self.timeout})"


def post(url: str, message: dict[str, Any], timeout: float = 5.0) -> None:
    """One POST of a full message dict to an incoming webhook or a response_url.
    Returns on 2xx; raises RetryableError / PermanentError otherwise."""
    from slack_sdk.errors import SlackRequestError
    from slack_sdk.webhook import WebhookClient

    if not url:
        raise PermanentError("slack: no webhook URL configured")
    client = WebhookClient(url, timeout=timeout, retry_handlers=[], logger=_SDK_LOGGER)  # type: ignore[arg-type]
    try:
        answer = client.send_dict(message)
    except SlackRequestError as error:  # a URL the SDK refuses (not http/https)
        raise PermanentError(f"slack: {clip(str(error), 80)}") from error
    except urllib.error.URLError as error:
        raise transport_error("slack", error.reason, timeout) from error
    except (OSError, http.client.HTTPException) as error:  # timeouts and resets are OSErrors
        raise transport_error("slack", error, timeout) from error
    classify(answer.status_code, answer.headers, answer.body)


def classify(status: int, headers: Any, body: str | bytes | None) -> None:
    """Slack's answer as a sink outcome, with the same rules as every HTTP sink."""
    lowered = {str(k).lower(): str(v) for k, v in (headers.items() if headers else [])}
    raw = body.encode("utf-8") if isinstance(body, str) else (body or b"")
    raise_for(Response(status, lowered, raw), "slack")
