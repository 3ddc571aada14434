"""The handoff's outbox on SQS: a retry queue read back by the retry function (delays
give the backoff), and the dead-letter queue that the console's dead-letters page and
`leadflow dlq` list and replay (usecases/dead_letters.py). Messages carry ids (lead,
move, sink) and the reason, never the person: an erasure leaves nothing of them queued."""

from __future__ import annotations

import json
from functools import cached_property
from typing import Any

from leadflow.domain.errors import Misconfigured

MAX_DELAY_SECONDS = 900  # SQS's limit


class _Queues:
    """The handoff's two queues and a lazily created SQS client (injectable in tests)."""

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


class SqsOutbox(_Queues):

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


class SqsDeadLetterQueue(_Queues):
    """The dead-letter queue read by hand, and the retry queue a replayed letter goes back
    to. Messages come back in SQS's own shape (`MessageId`, `ReceiptHandle`, `Body`)."""

    def __init__(self, dead_letter_queue_url: str | None, retry_queue_url: str | None, client: Any = None):
        super().__init__(retry_queue_url, dead_letter_queue_url, client)

    def _dead(self) -> str:
        if not self.dead_letter_queue_url:
            raise Misconfigured("LEADFLOW_DLQ_URL is not set: there is no dead-letter queue to read",
                                field="LEADFLOW_DLQ_URL")
        return self.dead_letter_queue_url

    def receive(self, *, hide_seconds: int) -> list[dict]:
        """Up to 10 messages, hidden from other readers for `hide_seconds`."""
        resp = self.client.receive_message(QueueUrl=self._dead(), MaxNumberOfMessages=10,
                                           VisibilityTimeout=hide_seconds, WaitTimeSeconds=0)
        return resp.get("Messages", [])

    def release(self, receipt_handles: list[str]) -> None:
        """Visible again at once: messages received but not taken (ten a call). One that
        cannot be let go reappears when its hiding time ends."""
        for start in range(0, len(receipt_handles), 10):
            entries = [{"Id": str(n), "ReceiptHandle": handle, "VisibilityTimeout": 0}
                       for n, handle in enumerate(receipt_handles[start:start + 10])]
            self.client.change_message_visibility_batch(QueueUrl=self._dead(), Entries=entries)

    def delete(self, receipt_handle: str) -> None:
        self.client.delete_message(QueueUrl=self._dead(), ReceiptHandle=receipt_handle)

    def requeue(self, message: dict) -> None:
        """A replayed delivery, on the retry queue (no delay: a person asked for it)."""
        if not self.retry_queue_url:
            raise Misconfigured("LEADFLOW_RETRY_QUEUE_URL is not set: cannot put a dead letter back on the retry "
                                "queue", field="LEADFLOW_RETRY_QUEUE_URL")
        self.client.send_message(QueueUrl=self.retry_queue_url,
                                 MessageBody=json.dumps(message, separators=(",", ":"), default=str),
                                 MessageAttributes=_attributes(message))
