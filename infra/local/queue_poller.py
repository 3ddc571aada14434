"""Feed an SQS queue to a handler the way Lambda's SQS event source mapping does.

The local stack passes the template's ``SQS`` event properties: ``BatchSize``,
``MaximumBatchingWindowInSeconds`` and ``FunctionResponseTypes``. The thread,
counters, stop and drain are :class:`~leadflow_infra.local.poller.Poller`'s.

What is copied from the mapping (``FunctionResponseTypes: [ReportBatchItemFailures]``):
- messages are received with every system and message attribute and delivered
  as ``{"Records": [...]}`` in Lambda's record shape: ``messageId``,
  ``receiptHandle``, ``body``, ``attributes`` (``ApproximateReceiveCount``,
  ``SentTimestamp``, ``SenderId``, ``ApproximateFirstReceiveTimestamp``, plus
  ``AWSTraceHeader`` and the FIFO ones when SQS returns them),
  ``messageAttributes`` in lower camel case (``stringValue``, ``binaryValue``
  as base64, ``stringListValues``, ``binaryListValues``, ``dataType``),
  ``md5OfBody`` (and ``md5OfMessageAttributes`` when there are attributes),
  ``eventSource`` ``"aws:sqs"``, ``eventSourceARN`` and ``awsRegion``;
- up to ``batch_size`` messages per invocation; above ten (one receive's
  limit) Lambda requires a batching window, and the poller keeps receiving
  until the batch is full or ``max_batching_window`` seconds have passed;
- the handler answers ``{"batchItemFailures": [{"itemIdentifier": <messageId>}]}``:
  every message not named there is deleted, the named ones are left alone and
  reappear when their visibility timeout ends, each time with a higher
  ``ApproximateReceiveCount``; the queue's ``RedrivePolicy`` moves a message to
  the dead-letter queue once it has been received ``maxReceiveCount`` times;
- no answer, ``None`` or an empty list is complete success; an exception, a
  ``batchItemFailures`` that is not a list, or an entry whose ``itemIdentifier``
  is missing, empty or not a message of the batch fails the whole batch
  (nothing is deleted);
- the mapping does not change visibility timeouts: a failed message waits out
  the queue's ``VisibilityTimeout`` (or the poller's ``visibility_timeout``).

What moto 5.2.5 does, checked over HTTP against :class:`~leadflow_infra.local.moto_server.MotoServer`:
- ``DelaySeconds`` (per message and the queue default) is honoured: a delayed
  message is neither received nor counted in ``ApproximateNumberOfMessages``
  before its time, and is counted in ``ApproximateNumberOfMessagesDelayed``.
- ``VisibilityTimeout`` (the queue's, or the receive's) is honoured: a received,
  undeleted message is invisible (``ApproximateNumberOfMessagesNotVisible``)
  until it runs out, then is received again with the count incremented.
- ``WaitTimeSeconds`` long polls: a send wakes the waiting receive at once; a
  message whose delay or visibility timeout runs out is noticed within a second.
- ``RedrivePolicy`` ``maxReceiveCount`` is honoured as in SQS: the receive
  after the one that reached the count moves the message to the dead-letter
  queue (same message id and body; the receive count keeps counting). The move
  only happens during a receive, so the poller must keep polling for it.
- All delays and timeouts are whole seconds (as in SQS); there is no
  sub-second delay or visibility timeout, so tests use 1 second.

What moto does not do:
- no ``DeadLetterQueueSourceArn`` attribute on dead-lettered messages;
- ``MessageRetentionPeriod`` is stored, but expired messages are not deleted:
  a receive marks them received (hidden, counted as in flight) without
  returning them, and they come back after the visibility timeout;
- it invokes no function by itself here (its own mapping support needs its
  Lambda backend): this poller is the event source mapping;
- the backend takes no lock: one poller per queue, as here, is safe.

None of these needs a work-around in the poller beyond polling steadily.
Not reproduced from Lambda: scaling to several concurrent batches, the 6 MB
invocation payload limit, and the maximum concurrency setting.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from leadflow_infra.local.poller import Poller

logger = logging.getLogger(__name__)

Record = dict[str, Any]

# System attributes Lambda puts in a record's "attributes" when SQS returns them.
_SYSTEM_ATTRIBUTES = (
    "ApproximateReceiveCount",
    "SentTimestamp",
    "SenderId",
    "ApproximateFirstReceiveTimestamp",
    "AWSTraceHeader",
    "SequenceNumber",
    "MessageGroupId",
    "MessageDeduplicationId",
    "DeadLetterQueueSourceArn",
)
_RECEIVE_LIMIT = 10  # MaxNumberOfMessages per ReceiveMessage
_DELETE_LIMIT = 10  # entries per DeleteMessageBatch
_DEPTH_ATTRIBUTES = (
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
)


def _b64(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(bytes(value)).decode("ascii")
    return str(value)


def to_lambda_message_attribute(value: Mapping[str, Any]) -> dict[str, Any]:
    """One ReceiveMessage message attribute as Lambda's event shows it."""
    attribute: dict[str, Any] = {}
    if value.get("StringValue") is not None:
        attribute["stringValue"] = value["StringValue"]
    if value.get("BinaryValue") is not None:
        attribute["binaryValue"] = _b64(value["BinaryValue"])
    attribute["stringListValues"] = list(value.get("StringListValues") or [])
    attribute["binaryListValues"] = [_b64(v) for v in value.get("BinaryListValues") or []]
    attribute["dataType"] = value["DataType"]
    return attribute


def to_lambda_record(message: Mapping[str, Any], queue_arn: str, region: str) -> Record:
    """One ReceiveMessage message as Lambda's SQS event source mapping delivers it."""
    system = message.get("Attributes") or {}
    record: Record = {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message.get("Body", ""),
        "attributes": {name: str(system[name]) for name in _SYSTEM_ATTRIBUTES if system.get(name) is not None},
        "messageAttributes": {
            name: to_lambda_message_attribute(value) for name, value in (message.get("MessageAttributes") or {}).items()
        },
        "md5OfBody": message.get("MD5OfBody", ""),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    }
    if message.get("MD5OfMessageAttributes"):
        record["md5OfMessageAttributes"] = message["MD5OfMessageAttributes"]
    return record


def failed_message_ids(response: Any, batch_ids: set[str]) -> set[str] | None:
    """The message ids a handler's answer reports as failed; None when the whole batch failed.

    Lambda's rules: ``None``, an answer without ``batchItemFailures`` and an empty
    list are complete success; a list entry without a non-empty ``itemIdentifier``
    naming a message of the batch makes the whole batch a failure.
    """
    if not isinstance(response, Mapping):
        return set()
    failures = response.get("batchItemFailures")
    if failures is None:
        return set()
    if not isinstance(failures, list):
        logger.warning("batchItemFailures is a %s, not a list: whole batch failed", type(failures).__name__)
        return None
    failed: set[str] = set()
    for failure in failures:
        identifier = failure.get("itemIdentifier") if isinstance(failure, Mapping) else None
        if not isinstance(identifier, str) or identifier not in batch_ids:
            logger.warning("batchItemFailures names %r, not in the batch: whole batch failed", identifier)
            return None
        failed.add(identifier)
    return failed


class SqsPoller(Poller):
    """One thread receiving from one queue and invoking ``handler(event)``.

    ``handler`` takes the event only: the caller wraps the Lambda handler with its
    context. ``client`` is a boto3 ``sqs`` client. ``wait_seconds`` is the long-poll
    time of each receive (Lambda uses 20; short here so :meth:`stop` is quick).
    ``visibility_timeout`` None keeps the queue's own, as Lambda does.
    ``report_item_failures`` is ``FunctionResponseTypes: [ReportBatchItemFailures]``:
    without it a ``batchItemFailures`` answer is success, as in Lambda.
    """

    thread_name = "leadflow-sqs-poller"
    source_kind = "queue"

    def __init__(
        self,
        client: Any,
        queue_url: str,
        queue_arn: str,
        handler: Callable[[dict[str, Any]], Any],
        *,
        region: str,
        batch_size: int = 10,
        wait_seconds: int = 1,
        visibility_timeout: int | None = None,
        max_batching_window: float = 0,
        report_item_failures: bool = True,
        poll_interval: float = 0.05,
    ) -> None:
        if not 1 <= batch_size <= 10_000:
            raise ValueError("batch_size must be between 1 and 10000")
        if batch_size > _RECEIVE_LIMIT and max_batching_window < 1:
            raise ValueError("a batch_size above 10 needs a max_batching_window of at least 1 second (as in Lambda)")
        if not 0 <= max_batching_window <= 300:
            raise ValueError("max_batching_window must be between 0 and 300 seconds")
        if not 0 <= int(wait_seconds) <= 20:
            raise ValueError("wait_seconds must be between 0 and 20")
        if visibility_timeout is not None and not 0 <= int(visibility_timeout) <= 43_200:
            raise ValueError("visibility_timeout must be between 0 and 43200 seconds")
        super().__init__(
            counters=("received", "invocations", "deleted", "failed", "errors"),
            poll_interval=poll_interval,
            join_timeout=int(wait_seconds) + 5.0,
        )
        self._client = client
        self.queue_url = queue_url
        self.queue_arn = queue_arn
        self._handler = handler
        self._region = region
        self._batch_size = batch_size
        self._wait_seconds = int(wait_seconds)
        self._visibility_timeout = None if visibility_timeout is None else int(visibility_timeout)
        self._max_batching_window = float(max_batching_window)
        self._report_item_failures = bool(report_item_failures)

    @property
    def settings(self) -> dict[str, Any]:
        """The event source mapping settings it runs with (template names)."""
        return {
            "batch_size": self._batch_size,
            "maximum_batching_window": self._max_batching_window,
            "report_batch_item_failures": self._report_item_failures,
        }

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> None:
        self._start_thread()

    def stop(self, drain_timeout: float = 10.0) -> bool:
        """Deliver what is in the queue (up to ``drain_timeout``), then stop the thread.

        Returns whether the drain completed. Messages not delivered stay in the
        queue (a batch being handled when the time is up is finished first).
        """
        return super().stop(drain_timeout)

    def drain(self, timeout: float = 10.0, *, include_delayed: bool = True) -> bool:
        """Return True once the queue is done: nothing visible, in flight or (optionally) delayed.

        "Done" means a receive that started after this call found no visible
        message and, after it, the queue reports no message in flight (handed
        out and not deleted: including failed ones waiting out their visibility
        timeout, which are redelivered or dead-lettered first) and, when
        ``include_delayed``, none delayed. With ``include_delayed=False`` a
        message sent with ``DelaySeconds`` does not hold the drain up.
        Returns False after ``timeout`` seconds or when the poller is not running.
        """
        return self._drain(timeout, lambda: self._queue_settled(include_delayed))

    # -- counters ------------------------------------------------------------------

    @property
    def stats(self) -> dict[str, int]:
        """``received`` messages, handler ``invocations``, messages ``deleted``,
        messages ``failed`` (left for redelivery), handler ``errors`` (exceptions)
        and ``poll_errors`` (receive or delete calls that failed)."""
        return super().stats

    # -- the loop ------------------------------------------------------------------

    def _queue_settled(self, include_delayed: bool) -> bool:
        """Nothing visible, in flight or (optionally) delayed, in two reads one after the other.

        moto computes each count at its own instant, so a delay that ends between them
        reads once as neither delayed nor visible; from then on the message is visible
        until received, so a second empty read cannot be that straddle again."""
        names = [n for n in _DEPTH_ATTRIBUTES if include_delayed or n != "ApproximateNumberOfMessagesDelayed"]
        for _ in range(2):
            try:
                attributes = self._client.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=names)["Attributes"]
            except Exception:
                logger.debug("could not read the queue depth of %s", self.queue_url, exc_info=True)
                return False
            if any(int(attributes.get(name, 0)) for name in names):
                return False
        return True

    def _poll_once(self) -> bool:
        messages = self._gather()
        if messages:
            self._deliver(messages)
        return bool(messages)

    def _receive(self, count: int, wait_seconds: int) -> list[dict[str, Any]]:
        kwargs: dict[str, Any] = {
            "QueueUrl": self.queue_url,
            "MaxNumberOfMessages": count,
            "WaitTimeSeconds": wait_seconds,
            "MessageSystemAttributeNames": ["All"],
            "MessageAttributeNames": ["All"],
        }
        if self._visibility_timeout is not None:
            kwargs["VisibilityTimeout"] = self._visibility_timeout
        return self._client.receive_message(**kwargs).get("Messages", [])

    def _gather(self) -> list[dict[str, Any]]:
        """One batch: the first receive long-polls; more follow within the batching window."""
        batch = self._receive(min(_RECEIVE_LIMIT, self._batch_size), self._wait_seconds)
        if not batch or self._max_batching_window <= 0:
            return batch
        deadline = time.monotonic() + self._max_batching_window
        while len(batch) < self._batch_size and not self._stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            wait = min(self._wait_seconds, int(remaining))
            more = self._receive(min(_RECEIVE_LIMIT, self._batch_size - len(batch)), wait)
            batch.extend(more)
            if not more and wait == 0:
                self._stop.wait(min(self._poll_interval, max(deadline - time.monotonic(), 0)))
        return batch

    def _deliver(self, messages: list[dict[str, Any]]) -> None:
        self._count("received", len(messages))
        records = [to_lambda_record(m, self.queue_arn, self._region) for m in messages]
        self._count("invocations")
        try:
            response = self._handler({"Records": records})
        except Exception:
            self._count("errors")
            self._count("failed", len(messages))
            logger.exception("SQS handler raised; the whole batch of %d failed", len(messages))
            return
        if not self._report_item_failures:
            response = None  # without ReportBatchItemFailures, Lambda ignores the answer
        failed = failed_message_ids(response, {m["MessageId"] for m in messages})
        if failed is None:
            self._count("failed", len(messages))
            return
        done = [m for m in messages if m["MessageId"] not in failed]
        self._count("failed", len(messages) - len(done))
        if failed:
            logger.warning("SQS batch: %d of %d messages failed; they return after the visibility timeout",
                           len(messages) - len(done), len(messages))
        self._delete(done)

    def _delete(self, messages: list[dict[str, Any]]) -> None:
        for start in range(0, len(messages), _DELETE_LIMIT):
            chunk = messages[start : start + _DELETE_LIMIT]
            entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)]
            try:
                response = self._client.delete_message_batch(QueueUrl=self.queue_url, Entries=entries)
            except Exception:
                self._count("poll_errors")
                logger.exception("deleting %d handled messages failed; they will be delivered again", len(chunk))
                continue
            for failure in response.get("Failed") or []:
                self._count("poll_errors")
                logger.error("could not delete a handled message (%s); it will be delivered again",
                             failure.get("Message"))
            self._count("deleted", len(response.get("Successful") or []))
