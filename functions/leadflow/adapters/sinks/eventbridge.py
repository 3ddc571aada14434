"""Every stage move as an EventBridge event, for whatever else the account wires up.

One `PutEvents` entry per move: source "leadflow", detail-type "LeadStageChanged", the
generic webhook's contract body as detail and the move's time as the event time, so
rules can match on `detail.to_stage` and consumers see the same document as webhook
receivers. PutEvents answers 200 even when the entry failed; the entry's ErrorCode
says whether it may pass later (throttling, internal errors) or never will.
"""

from __future__ import annotations

import json
from typing import Any

from leadflow.domain.handoff import Notice, SinkKind
from leadflow.domain.errors import PermanentError, RetryableError
from leadflow.domain.ports import Receipt
from leadflow.adapters.sinks.aws import call_aws, single_attempt_client
from leadflow.adapters.sinks.http import clip
from leadflow.domain.handoff import move_document

SOURCE = "leadflow"
DETAIL_TYPE = "LeadStageChanged"
RETRYABLE_CODES = frozenset({
    "ThrottlingException", "InternalFailure", "InternalException", "ServiceUnavailable",
    "ServiceUnavailableException", "TooManyRequestsException",
})


class EventBridgeSink:
    """Puts one LeadStageChanged event per move on a bus."""

    name = "eventbridge"
    kind: SinkKind = "crm"

    def __init__(self, bus: str, *, client: Any = None):
        self.bus = bus
        self._client = client

    def deliver(self, notice: Notice, *, deadline: float | None = None) -> Receipt:
        entry = {
            "Source": SOURCE,
            "DetailType": DETAIL_TYPE,
            "Detail": json.dumps(move_document(notice), separators=(",", ":"), default=str),
            "EventBusName": self.bus,
            "Time": notice.occurred_at,
        }
        answer = call_aws("eventbridge put_events", lambda: self._events().put_events(Entries=[entry]),
                          RETRYABLE_CODES)
        entries = answer.get("Entries") or [{}]
        first = entries[0]
        if answer.get("FailedEntryCount") or first.get("ErrorCode"):
            code = str(first.get("ErrorCode") or "Unknown")
            reason = f"eventbridge put_events: {code}: {clip(str(first.get('ErrorMessage') or ''), 160)}"
            if code in RETRYABLE_CODES:
                raise RetryableError(reason)
            raise PermanentError(reason)
        return {"event_id": first.get("EventId")}

    def _events(self) -> Any:
        if self._client is None:
            self._client = single_attempt_client("events")
        return self._client
