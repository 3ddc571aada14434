"""The handoff's outbox on SQS: a retry queue read back by the retry function (delays
give the backoff), and the dead-letter queue `leadflow dlq` lists and replays. Messages
carry ids (lead, move, sink) and the reason, never the person: an erasure leaves nothing
of them queued."""

from __future__ import annotations

import json
from functools import cached_property
from typing import Any

MAX_DELAY_SECONDS = 900  # SQS's limit


class SqsOutbox:
    def __init__(self, retry_queue_url: str | None, dead_letter_queue_url: str | None, client: Any = None):
        self.retry_queue_url = retry_queue_url
        self.dead_letter_queue_url = dead_letter_queue_url
        self._client = client

    @cached_property
    def client(self):
        if self._client is None:
            import boto3

            self._client = boto3.client("sqs")
        return self._client

    def retry_later(self, message: dict, delay_seconds: int) -> None:
        if not self.retry_queue_url:
            raise RuntimeError("LEADFLOW_RETRY_QUEUE_URL is not set: cannot schedule a delivery retry")
        self.client.send_message(
            QueueUrl=self.retry_queue_url,
            MessageBody=json.dumps(message, separators=(",", ":"), default=str),
            DelaySeconds=max(0, min(MAX_DELAY_SECONDS, int(delay_seconds))),
            MessageAttributes=_attributes(message),
        )

    def dead_letter(self, message: dict) -> None:
        if not self.dead_letter_queue_url:
            raise RuntimeError("LEADFLOW_DLQ_URL is not set: cannot dead-letter a delivery")
        self.client.send_message(
            QueueUrl=self.dead_letter_queue_url,
            MessageBody=json.dumps(message, separators=(",", ":"), default=str),
            MessageAttributes=_attributes(message),
        )


def _attributes(message: dict) -> dict:
    """Sink and move as attributes, so a queue can be browsed without parsing bodies.
    Ids only: a message holds nothing of the person (the move is read from the lead)."""
    attrs = {"sink": message.get("sink"), "move_id": message.get("move_id"), "lead_id": message.get("lead_id")}
    return {k: {"DataType": "String", "StringValue": str(v)} for k, v in attrs.items() if v}
