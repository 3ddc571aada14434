"""The generic CRM webhook: every stage move, signed by the Standard Webhooks scheme.

The body is fixed by the public contract: `{"lead_id", "email", "from_stage", "to_stage",
"score", "occurred_at", "transition_id", "lead"}`, compact JSON. The headers are the
scheme's: `webhook-id` (the move id, stable across retries, so a receiver can
drop a redelivery), `webhook-timestamp` (unix seconds of this attempt) and
`webhook-signature` (`v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">`). Each retry
is signed afresh, so a receiver's timestamp tolerance never rejects a late retry.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from typing import Any, Callable

from leadflow.domain.handoff import Notice, SinkKind
from leadflow.domain.errors import PermanentError
from leadflow.domain.handoff import move_document
from leadflow.domain.ports import Receipt
from leadflow.adapters.sinks.http import raise_for, send

USER_AGENT = "leadflow"


def encode(document: dict[str, Any]) -> str:
    """Compact JSON, ASCII only: the signed bytes are exactly the sent bytes, whatever
    the receiver assumes about encodings."""
    return json.dumps(document, separators=(",", ":"), default=str)


class WebhookSink:
    """POSTs the signed contract body to one URL."""

    name = "webhook"
    kind: SinkKind = "crm"

    def __init__(self, url: str, secret: str, *, timeout: float = 5.0, clock: Callable[[], float] = time.time):
        self.url = url
        self.secret = secret
        self.timeout = timeout
        self.clock = clock

    def deliver(self, notice: Notice, *, deadline: float | None = None) -> Receipt:
        body = encode(move_document(notice))
        answer = send("POST", self.url, body.encode("ascii"), self.headers(notice.move_id, body),
                      self.timeout, what="webhook", deadline=deadline)
        raise_for(answer, "webhook")
        return {"status": answer.status}

    def headers(self, msg_id: str, body: str) -> dict[str, str]:
        """The Standard Webhooks headers for this body, signed now."""
        from standardwebhooks.webhooks import Webhook

        try:
            signer = Webhook(self.secret)
        except Exception as error:  # empty or not base64: a configuration no retry can fix
            raise PermanentError(f"webhook: unusable signing secret ({type(error).__name__})") from error
        seconds = int(self.clock())
        signature = signer.sign(msg_id=msg_id, timestamp=datetime.fromtimestamp(seconds, tz=timezone.utc), data=body)
        return {
            "webhook-id": msg_id,
            "webhook-timestamp": str(seconds),
            "webhook-signature": signature,
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
        }

    def __repr__(self) -> str:
        return "WebhookSink(url=<configured>)"
