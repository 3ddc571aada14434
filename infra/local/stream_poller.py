"""Feed a DynamoDB stream to the stream handler the way Lambda's event source mapping does.

What is copied from the mapping (``FunctionResponseTypes: [ReportBatchItemFailures]``):
- records are delivered as ``{"Records": [...]}`` in Lambda's record shape, with
  ``eventSourceARN`` and ``ApproximateCreationDateTime`` in epoch seconds;
- a filter (the template's ``FilterCriteria``) drops records before batching;
- the handler answers ``{"batchItemFailures": [{"itemIdentifier": <SequenceNumber>}]}``;
  the batch is retried from the lowest failed sequence number, with exponential
  backoff, up to ``max_retries`` times, and what is still failing then goes to the
  on-failure destination; an exception, or an identifier that is not in the batch,
  fails the whole batch;
- one shard is worked at a time, in order: a failing batch blocks its shard.

The default on-failure destination is a JSON-lines file standing in for the SQS
dead-letter queue: one line per discarded batch, in the shape Lambda sends to
the queue plus the records themselves (Lambda only sends their coordinates).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from leadflow_infra.local.persist import attributes_to_json

logger = logging.getLogger(__name__)

Record = dict[str, Any]
OnFailure = Callable[[list[Record], dict[str, Any]], None]


def is_lead_record(record: Mapping[str, Any]) -> bool:
    """The template's FilterCriteria: only changes to the lead item (sort key ``LEAD``)."""
    return record.get("dynamodb", {}).get("Keys", {}).get("SK", {}).get("S") == "LEAD"


def _epoch_seconds(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        # DynamoDB Streams rounds the creation time down to the second.
        return float(int(value.timestamp()))
    return float(value)


def to_lambda_record(raw: Mapping[str, Any], stream_arn: str, region: str) -> Record:
    """One get_records record as Lambda's event source mapping delivers it."""
    source = raw.get("dynamodb", {})
    change: dict[str, Any] = {}
    created = _epoch_seconds(source.get("ApproximateCreationDateTime"))
    if created is not None:
        change["ApproximateCreationDateTime"] = created
    change["Keys"] = attributes_to_json(source.get("Keys", {}))
    for image in ("NewImage", "OldImage"):
        if image in source:
            change[image] = attributes_to_json(source[image])
    change["SequenceNumber"] = str(source["SequenceNumber"])
    change["SizeBytes"] = int(source.get("SizeBytes", 0))
    change["StreamViewType"] = source.get("StreamViewType", "NEW_AND_OLD_IMAGES")
    record: Record = {
        "eventID": raw.get("eventID") or uuid.uuid4().hex,
        "eventName": raw["eventName"],
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": region,
        "dynamodb": change,
        "eventSourceARN": stream_arn,
    }
    if raw.get("userIdentity"):
        record["userIdentity"] = dict(raw["userIdentity"])
    return record


def _seq(record: Mapping[str, Any]) -> int:
    return int(record["dynamodb"]["SequenceNumber"])


def _iso(epoch: float | None) -> str:
    moment = dt.datetime.fromtimestamp(epoch or time.time(), tz=dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class DeadLetterFile:
    """On-failure destination writing one JSON line per discarded batch."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def __call__(self, records: list[Record], info: dict[str, Any]) -> None:
        line = json.dumps({**info, "records": records}, default=str, separators=(",", ":"))
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(line + "\n")
                fh.flush()
                os.fsync(fh.fileno())

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        with self.path.open(encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.strip()]


class StreamPoller:
    """One thread reading every shard of one stream and invoking ``handler(event)``.

    ``handler`` takes the event only: the caller wraps the Lambda handler with its
    context. ``client`` is a boto3 ``dynamodbstreams`` client.
    """

    def __init__(
        self,
        client: Any,
        stream_arn: str,
        handler: Callable[[dict[str, Any]], Any],
        *,
        region: str = "us-east-1",
        batch_size: int = 100,
        max_retries: int = 5,
        retry_base_delay: float = 0.1,
        retry_max_delay: float = 5.0,
        poll_interval: float = 0.05,
        idle_poll_interval: float = 0.1,
        record_filter: Callable[[Mapping[str, Any]], bool] | None = is_lead_record,
        on_failure: OnFailure | None = None,
        function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:leadflow-stream",
        forget_iterator: Callable[[str], None] | None = None,
    ) -> None:
        self._client = client
        self.stream_arn = stream_arn
        self._handler = handler
        self._region = region
        self._batch_size = batch_size
        self._max_retries = max_retries
        self._retry_base_delay = retry_base_delay
        self._retry_max_delay = retry_max_delay
        self._poll_interval = poll_interval
        self._idle_poll_interval = max(idle_poll_interval, poll_interval)
        self._filter = record_filter
        self._on_failure = on_failure
        self._function_arn = function_arn
        self._forget_iterator = forget_iterator

        self._iterators: dict[str, str] = {}
        self._last_seq: dict[str, str] = {}
        self._closed_shards: set[str] = set()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._cycles_started = 0
        self._last_idle_cycle = 0
        self._counters = {
            "records_seen": 0,
            "records_filtered_out": 0,
            "invocations": 0,
            "batches_delivered": 0,
            "records_delivered": 0,
            "retries": 0,
            "batches_dead_lettered": 0,
            "records_dead_lettered": 0,
            "poll_errors": 0,
        }

    # -- lifecycle -----------------------------------------------------------------

    def start(self, position: str = "LATEST") -> None:
        """Position on every open shard (synchronously), then poll in a thread.

        ``LATEST`` skips everything already in the stream (for instance the
        INSERTs produced by loading persisted items); ``TRIM_HORIZON`` replays it.
        """
        if self._thread is not None:
            raise RuntimeError("poller already started")
        for shard in self._describe_shards():
            shard_id = shard["ShardId"]
            if "EndingSequenceNumber" in shard.get("SequenceNumberRange", {}):
                if position == "LATEST":
                    self._closed_shards.add(shard_id)
                    continue
            self._iterators[shard_id] = self._client.get_shard_iterator(
                StreamArn=self.stream_arn, ShardId=shard_id, ShardIteratorType=position
            )["ShardIterator"]
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="leadflow-stream-poller", daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stop.is_set()

    def stop(self, drain_timeout: float = 10.0) -> bool:
        """Deliver what is in the stream (up to ``drain_timeout``), then stop the thread.

        Returns whether the drain completed. A batch still being retried when the
        time is up goes to the on-failure destination rather than being lost.
        """
        if self._thread is None:
            return True
        drained = self.drain(drain_timeout) if drain_timeout > 0 else False
        self._stop.set()
        self._thread.join(timeout=max(drain_timeout, 5.0))
        self._thread = None
        return drained

    def drain(self, timeout: float = 10.0) -> bool:
        """Return True once every record in the stream when called has been handled.

        "Handled" means delivered, filtered out or dead-lettered: the poller has
        completed a read that started after this call and found nothing new.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            target = self._cycles_started
            while self._last_idle_cycle <= target:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self.running:
                    return False
                self._cond.wait(min(remaining, 0.5))
        return True

    # -- counters ------------------------------------------------------------------

    @property
    def stats(self) -> dict[str, int]:
        return dict(self._counters)

    @property
    def delivered_batches(self) -> int:
        return self._counters["batches_delivered"]

    @property
    def delivered_records(self) -> int:
        return self._counters["records_delivered"]

    # -- the loop ------------------------------------------------------------------

    def _describe_shards(self) -> list[dict[str, Any]]:
        shards: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"StreamArn": self.stream_arn}
        while True:
            description = self._client.describe_stream(**kwargs)["StreamDescription"]
            shards.extend(description.get("Shards", []))
            last = description.get("LastEvaluatedShardId")
            if not last:
                return shards
            kwargs["ExclusiveStartShardId"] = last

    def _adopt_new_shards(self) -> None:
        """After a shard closes, start its children (and any other new shard) at the beginning."""
        for shard in self._describe_shards():
            shard_id = shard["ShardId"]
            if shard_id in self._iterators or shard_id in self._closed_shards:
                continue
            self._iterators[shard_id] = self._client.get_shard_iterator(
                StreamArn=self.stream_arn, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
            )["ShardIterator"]

    def _reposition(self, shard_id: str) -> None:
        """Get a fresh iterator after an error (expired iterator, endpoint hiccup)."""
        kwargs: dict[str, Any] = {"StreamArn": self.stream_arn, "ShardId": shard_id}
        if shard_id in self._last_seq:
            kwargs.update(ShardIteratorType="AFTER_SEQUENCE_NUMBER", SequenceNumber=self._last_seq[shard_id])
        else:
            kwargs["ShardIteratorType"] = "TRIM_HORIZON"
        self._iterators[shard_id] = self._client.get_shard_iterator(**kwargs)["ShardIterator"]

    def _run(self) -> None:
        empty_polls = 0
        while not self._stop.is_set():
            with self._cond:
                self._cycles_started += 1
                cycle = self._cycles_started
            try:
                found = self._poll_once()
            except Exception:
                self._counters["poll_errors"] += 1
                logger.exception("stream poll failed; retrying")
                self._stop.wait(1.0)
                for shard_id in list(self._iterators):
                    try:
                        self._reposition(shard_id)
                    except Exception:
                        logger.debug("could not reposition shard %s", shard_id, exc_info=True)
                continue
            if found:
                empty_polls = 0
                continue
            with self._cond:
                self._last_idle_cycle = cycle
                self._cond.notify_all()
            # Poll fast while records flow; after a second of silence, a little slower.
            empty_polls += 1
            quiet = empty_polls * self._poll_interval >= 1.0
            self._stop.wait(self._idle_poll_interval if quiet else self._poll_interval)

    def _poll_once(self) -> bool:
        found = False
        for shard_id, iterator in list(self._iterators.items()):
            if self._stop.is_set():
                return True
            response = self._client.get_records(ShardIterator=iterator, Limit=self._batch_size)
            if self._forget_iterator is not None:
                self._forget_iterator(iterator)
            records = response.get("Records", [])
            if records:
                found = True
                self._handle(shard_id, records)
                self._last_seq[shard_id] = str(records[-1]["dynamodb"]["SequenceNumber"])
            next_iterator = response.get("NextShardIterator")
            if next_iterator:
                self._iterators[shard_id] = next_iterator
            else:
                logger.debug("shard %s closed", shard_id)
                del self._iterators[shard_id]
                self._closed_shards.add(shard_id)
                self._adopt_new_shards()
                found = True
        return found

    def _handle(self, shard_id: str, raw_records: list[dict[str, Any]]) -> None:
        self._counters["records_seen"] += len(raw_records)
        records = [to_lambda_record(r, self.stream_arn, self._region) for r in raw_records]
        batch = [r for r in records if self._filter is None or self._filter(r)]
        self._counters["records_filtered_out"] += len(records) - len(batch)
        if batch:
            self._deliver(shard_id, batch)

    def _invoke(self, batch: list[Record]) -> tuple[set[str] | None, str | None]:
        """Invoke once; return (failed sequence numbers or None for all, function error)."""
        self._counters["invocations"] += 1
        try:
            response = self._handler({"Records": batch})
        except Exception:
            logger.exception("stream handler raised; the whole batch of %d failed", len(batch))
            return None, "Unhandled"
        failures = (response or {}).get("batchItemFailures") if isinstance(response, Mapping) else None
        if not failures:
            return set(), None
        in_batch = {r["dynamodb"]["SequenceNumber"] for r in batch}
        failed: set[str] = set()
        for failure in failures:
            identifier = failure.get("itemIdentifier") if isinstance(failure, Mapping) else None
            if not identifier or str(identifier) not in in_batch:
                logger.warning("batchItemFailures names %r, not in the batch: whole batch failed", identifier)
                return None, None
            failed.add(str(identifier))
        return failed, None

    def _deliver(self, shard_id: str, batch: list[Record]) -> None:
        pending = batch
        attempt = 0
        while True:
            attempt += 1
            failed, function_error = self._invoke(pending)
            if failed is not None and not failed:
                self._counters["batches_delivered"] += 1
                self._counters["records_delivered"] += len(pending)
                return
            if failed is None:
                start = 0
            else:
                lowest = min(int(s) for s in failed)
                start = next(i for i, r in enumerate(pending) if _seq(r) == lowest)
            self._counters["records_delivered"] += start
            pending = pending[start:]
            if attempt > self._max_retries or self._stop.is_set():
                self._dead_letter(shard_id, pending, attempt, function_error)
                return
            delay = min(self._retry_base_delay * (2 ** (attempt - 1)), self._retry_max_delay)
            self._counters["retries"] += 1
            logger.warning(
                "stream batch failed from sequence %s (%d records); retry %d of %d in %.2fs",
                pending[0]["dynamodb"]["SequenceNumber"],
                len(pending),
                attempt,
                self._max_retries,
                delay,
            )
            self._stop.wait(delay)

    def _dead_letter(self, shard_id: str, records: list[Record], attempts: int, function_error: str | None) -> None:
        self._counters["batches_dead_lettered"] += 1
        self._counters["records_dead_lettered"] += len(records)
        condition = "RetryAttemptsExhausted" if attempts > self._max_retries else "Shutdown"
        info = {
            "requestContext": {
                "requestId": str(uuid.uuid4()),
                "functionArn": self._function_arn,
                "condition": condition,
                "approximateInvokeCount": attempts,
            },
            "responseContext": {
                "statusCode": 200,
                "executedVersion": "$LATEST",
                "functionError": function_error,
            },
            "version": "1.0",
            "timestamp": _iso(None),
            "DDBStreamBatchInfo": {
                "shardId": shard_id,
                "startSequenceNumber": records[0]["dynamodb"]["SequenceNumber"],
                "endSequenceNumber": records[-1]["dynamodb"]["SequenceNumber"],
                "approximateArrivalOfFirstRecord": _iso(records[0]["dynamodb"].get("ApproximateCreationDateTime")),
                "approximateArrivalOfLastRecord": _iso(records[-1]["dynamodb"].get("ApproximateCreationDateTime")),
                "batchSize": len(records),
                "streamArn": self.stream_arn,
            },
        }
        logger.error(
            "stream batch discarded after %d attempts (%s): sequence %s..%s",
            attempts,
            condition,
            info["DDBStreamBatchInfo"]["startSequenceNumber"],
            info["DDBStreamBatchInfo"]["endSequenceNumber"],
        )
        if self._on_failure is None:
            return
        try:
            self._on_failure(records, info)
        except Exception:
            logger.exception("on-failure destination failed; %d records lost", len(records))
