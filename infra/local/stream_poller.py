"""Feed a DynamoDB stream to a function the way Lambda's event source mapping does.

The settings are the mapping's (the stack passes the template's ``DynamoDB`` event
properties; the constructor's defaults are AWS's defaults):

- records are delivered as ``{"Records": [...]}`` in Lambda's record shape, with
  ``eventSourceARN`` and ``ApproximateCreationDateTime`` in epoch seconds;
- ``FilterCriteria`` (``record_filter``) drops records before batching; dropped
  records count as handled;
- ``BatchSize`` (``batch_size``): at most that many records per invocation;
- ``MaximumBatchingWindowInSeconds`` (``batching_window``): after a read finds
  records, the shard is read again (every ``poll_interval``) until the batch is
  full (a batch per lane, with parallelization) or the window has passed, then
  the function is invoked. Kept although it only delays the local stack (up to
  the window per batch): what a function gets in one batch locally is then what
  it can get in AWS;
- ``FunctionResponseTypes: [ReportBatchItemFailures]`` (``report_item_failures``):
  the function answers ``{"batchItemFailures": [{"itemIdentifier": <SequenceNumber>}]}``;
  the records before the lowest failed sequence number are done (the checkpoint
  moves there) and the batch is retried from it. An answer naming an identifier
  that is not in the batch (or an empty one) fails the whole batch. Without the
  setting, whatever the function returns is success, as in Lambda;
- ``BisectBatchOnFunctionError`` (``bisect_on_error``): when the function raises
  (a function error), a batch of more than one record is split in two halves,
  which are invoked one after the other, the first half first; each may be split
  again, down to single records. Splitting is not a retry: it takes nothing from
  the retry budget, and the first half is invoked without a backoff wait (a
  record's retries are counted once it is alone, or when a failure cannot be
  split). A whole-batch failure that
  is not a function error (a malformed ``batchItemFailures``) is retried unsplit.
  With item failures reported, the retry starts at the lowest failed record
  (Lambda: "the batch is bisected at the returned sequence number");
- ``MaximumRetryAttempts`` (``max_retries``; -1 or None: until the record expires):
  each failed invocation that is not a split is one retry of the records retried,
  with exponential backoff (``retry_base_delay`` doubling up to
  ``retry_max_delay``, a local choice: Lambda's own backoff is not documented).
  Records whose retries are used up go to the on-failure destination, condition
  ``RetryAttemptsExhausted``, and the shard moves on;
- ``MaximumRecordAgeInSeconds`` (``max_record_age``; -1 or None: the stream's 24
  hour retention): before every invocation, first ones included, records older
  than that (by ``ApproximateCreationDateTime`` and ``clock``) are not invoked but
  go to the on-failure destination, condition ``RecordAgeExceeded``;
- ``ParallelizationFactor`` (``parallelization``): the records read from a shard
  (up to ``batch_size`` times that many a read) are split into that many lanes
  by a hash (CRC-32) of the record's partition key
  (``partition_key``, the table's HASH key; all of ``Keys`` when None), so all
  changes of one item, and of one partition key, go through one lane, in stream
  order. Each lane delivers its records in batches, in order, with the retry rules
  above; different lanes are delivered concurrently (one thread each), so the
  function needs that many execution environments. The next read of the shard
  waits until every lane has finished the records of the previous read: a lane
  that retries holds its shard up (Lambda may let the other lanes move on; the
  per-key order is the same either way).

Shards are read one after another, each in sequence order; a closed shard's
children are adopted from their beginning. After every read whose records are all
handled (delivered, filtered out or sent to the on-failure destination), the poller
reports its position to ``on_checkpoint(shard_id, sequence_number)``; the stack keeps
it, and a restart resumes after it (``start("AFTER_SEQUENCE_NUMBER", seq)``), as
Lambda resumes a shard from its checkpoint. When the poller stops while a batch is
being retried, a ``resumable`` poller leaves the batch (and the rest of that read) to
the next start; otherwise the batch goes to the on-failure destination, condition
``Shutdown`` (a local condition).

The default on-failure destination is a JSON-lines file standing in for the SQS
dead-letter queue: one line per discarded batch, in the shape Lambda sends to
the queue plus each record's keys, event name and sequence number, never its
images (Lambda only sends the batch's coordinates): the file holds nothing of a person
that an erasure would have to find. ``on_failure`` may be called from several lanes at
once.

Not reproduced: ``TumblingWindowInSeconds``, the 6 MB invocation payload limit,
``StartingPosition: AT_TIMESTAMP`` and the mapping's own polling rate (4 reads a
second per shard; here ``poll_interval``).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
import time
import uuid
import zlib
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from leadflow_infra.local.journal import secure_directory
from leadflow_infra.local.persist import attributes_to_json
from leadflow_infra.local.poller import Poller

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
    """On-failure destination writing one JSON line per discarded batch.

    A record is kept by its coordinates (keys, event name, sequence number, time), not
    its images: the lead item's images hold the person (email, name, phone), and a file
    on disk that kept them would outlive their erasure. Lines written with images by an
    earlier version are rewritten without them when the file is first opened."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._scrubbed = False

    def __call__(self, records: list[Record], info: dict[str, Any]) -> None:
        line = json.dumps({**info, "records": [coordinates(r) for r in records]}, default=str, separators=(",", ":"))
        with self._lock:
            self._scrub()
            secure_directory(self.path.parent)
            # Keys are lead ids: the file is its owner's only (0600).
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            os.chmod(self.path, 0o600)  # one written before files were kept private
            with os.fdopen(fd, "a", encoding="utf-8") as fh:
                fh.write(line + "\n")
                fh.flush()
                os.fsync(fh.fileno())

    def scrub(self) -> bool:
        """Rewrite the file without records' images (atomically, 0600); True if it changed."""
        with self._lock:
            self._scrubbed = False
            return self._scrub()

    def _scrub(self) -> bool:
        if self._scrubbed:
            return False
        self._scrubbed = True
        if not self.path.exists():
            return False
        with self.path.open(encoding="utf-8") as fh:
            lines = [json.loads(line) for line in fh if line.strip()]
        if not any(_has_images(r) for line in lines for r in line.get("records") or []):
            return False
        temporary = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            for line in lines:
                line["records"] = [coordinates(r) for r in line.get("records") or []]
                fh.write(json.dumps(line, default=str, separators=(",", ":")) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(temporary, self.path)
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
        return True

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        with self.path.open(encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.strip()]


_COORDINATES = ("Keys", "SequenceNumber", "ApproximateCreationDateTime", "SizeBytes", "StreamViewType")


def coordinates(record: Mapping[str, Any]) -> Record:
    """A stream record without its images: what names it, not what it held."""
    change = record.get("dynamodb") or {}
    return {**{k: v for k, v in record.items() if k != "dynamodb"},
            "dynamodb": {k: change[k] for k in _COORDINATES if k in change}}


def _has_images(record: Mapping[str, Any]) -> bool:
    change = record.get("dynamodb") or {}
    return "NewImage" in change or "OldImage" in change


STREAM_RETENTION = 86_400  # seconds DynamoDB Streams keeps a record


@dataclass(frozen=True)
class StreamSettings:
    """The event source mapping settings a :class:`StreamPoller` runs with (template names)."""

    batch_size: int
    maximum_batching_window: float
    bisect_batch_on_function_error: bool
    maximum_retry_attempts: int  # -1: until the record expires
    maximum_record_age: int  # -1: the stream's retention
    parallelization_factor: int
    report_batch_item_failures: bool


def lane_of(record: Mapping[str, Any], lanes: int, partition_key: str | None = None) -> int:
    """The lane (0..lanes-1) of a Lambda-shaped stream record: a stable hash of its partition key."""
    if lanes <= 1:
        return 0
    keys = record.get("dynamodb", {}).get("Keys", {})
    key = keys.get(partition_key) if partition_key else keys
    data = json.dumps(key, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return zlib.crc32(data) % lanes


class StreamPoller(Poller):
    """One thread reading every shard of one stream and invoking ``handler(event)``.

    ``handler`` takes the event only: the caller wraps the Lambda handler with its
    context. ``client`` is a boto3 ``dynamodbstreams`` client.
    """

    thread_name = "leadflow-stream-poller"
    source_kind = "stream"

    def __init__(
        self,
        client: Any,
        stream_arn: str,
        handler: Callable[[dict[str, Any]], Any],
        *,
        region: str = "us-east-1",
        batch_size: int = 100,
        batching_window: float = 0.0,
        bisect_on_error: bool = False,
        max_retries: int | None = None,
        max_record_age: float | None = None,
        parallelization: int = 1,
        report_item_failures: bool = False,
        partition_key: str | None = None,
        retry_base_delay: float = 0.1,
        retry_max_delay: float = 5.0,
        poll_interval: float = 0.05,
        idle_poll_interval: float = 0.1,
        record_filter: Callable[[Mapping[str, Any]], bool] | None = None,
        on_failure: OnFailure | None = None,
        on_checkpoint: Callable[[str, str], None] | None = None,
        resumable: bool = False,
        function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:leadflow-event-log",
        forget_iterator: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not 1 <= batch_size <= 10_000:
            raise ValueError("batch_size must be between 1 and 10000")
        if not 1 <= parallelization <= 10:
            raise ValueError("parallelization must be between 1 and 10")
        if not 0 <= batching_window <= 300:
            raise ValueError("batching_window must be between 0 and 300 seconds")
        super().__init__(
            counters=(
                "records_seen",
                "records_filtered_out",
                "invocations",
                "batches_delivered",
                "records_delivered",
                "retries",
                "bisections",
                "batches_dead_lettered",
                "records_dead_lettered",
                "records_expired",
            ),
            poll_interval=poll_interval,
            idle_poll_interval=idle_poll_interval,
        )
        self._client = client
        self.stream_arn = stream_arn
        self._handler = handler
        self._region = region
        self._batch_size = batch_size
        self._batching_window = float(batching_window)
        self._bisect = bool(bisect_on_error)
        self._max_retries = None if max_retries is None or max_retries < 0 else int(max_retries)
        self._max_record_age = None if max_record_age is None or max_record_age < 0 else float(max_record_age)
        self._parallelization = int(parallelization)
        self._report_item_failures = bool(report_item_failures)
        self._partition_key = partition_key
        self._retry_base_delay = retry_base_delay
        self._retry_max_delay = retry_max_delay
        self._filter = record_filter
        self._on_failure = on_failure
        self._on_checkpoint = on_checkpoint
        self._resumable = bool(resumable)
        self._function_arn = function_arn
        self._forget_iterator = forget_iterator
        self._clock = clock

        self._iterators: dict[str, str] = {}
        self._last_seq: dict[str, str] = {}
        self._checkpointed: dict[str, str] = {}
        self._closed_shards: set[str] = set()
        self._lanes: ThreadPoolExecutor | None = None

    @property
    def settings(self) -> StreamSettings:
        return StreamSettings(
            batch_size=self._batch_size,
            maximum_batching_window=self._batching_window,
            bisect_batch_on_function_error=self._bisect,
            maximum_retry_attempts=-1 if self._max_retries is None else self._max_retries,
            maximum_record_age=-1 if self._max_record_age is None else int(self._max_record_age),
            parallelization_factor=self._parallelization,
            report_batch_item_failures=self._report_item_failures,
        )

    # -- lifecycle -----------------------------------------------------------------

    def start(self, position: str = "LATEST", sequence_number: str | None = None) -> None:
        """Position on every open shard (synchronously), then poll in a thread.

        ``LATEST`` skips everything already in the stream; ``TRIM_HORIZON`` replays
        it; ``AFTER_SEQUENCE_NUMBER`` with ``sequence_number`` resumes after a kept
        checkpoint (the local stream has one shard).
        """
        if self._thread is not None:
            raise RuntimeError("poller already started")
        if (position == "AFTER_SEQUENCE_NUMBER") != (sequence_number is not None):
            raise ValueError("AFTER_SEQUENCE_NUMBER takes a sequence_number, and only it does")
        for shard in self._describe_shards():
            shard_id = shard["ShardId"]
            if "EndingSequenceNumber" in shard.get("SequenceNumberRange", {}):
                if position == "LATEST":
                    self._closed_shards.add(shard_id)
                    continue
            kwargs: dict[str, Any] = {"StreamArn": self.stream_arn, "ShardId": shard_id,
                                      "ShardIteratorType": position}
            if sequence_number is not None:
                kwargs["SequenceNumber"] = sequence_number
                self._last_seq[shard_id] = self._checkpointed[shard_id] = sequence_number
            self._iterators[shard_id] = self._client.get_shard_iterator(**kwargs)["ShardIterator"]
        if self._parallelization > 1:
            self._lanes = ThreadPoolExecutor(self._parallelization, thread_name_prefix="leadflow-stream-lane")
        self._start_thread()

    def stop(self, drain_timeout: float = 10.0) -> bool:
        """Deliver what is in the stream (up to ``drain_timeout``), then stop the thread.

        Returns whether the drain completed. A batch still being retried when the
        time is up goes to the on-failure destination rather than being lost.
        """
        return super().stop(drain_timeout)

    def _stopped(self) -> None:
        if self._lanes is not None:
            self._lanes.shutdown(wait=True)
            self._lanes = None

    # -- counters ------------------------------------------------------------------

    @property
    def delivered_batches(self) -> int:
        return self.stats["batches_delivered"]

    @property
    def delivered_records(self) -> int:
        return self.stats["records_delivered"]

    # -- reading -------------------------------------------------------------------

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

    def _recover(self) -> None:
        for shard_id in list(self._iterators):
            try:
                self._reposition(shard_id)
            except Exception:
                logger.debug("could not reposition shard %s", shard_id, exc_info=True)

    def _read(self, shard_id: str) -> tuple[bool, list[Record]]:
        """One get_records on the shard: (whether it found anything, the records that pass the filter).

        A shard found closed counts as found (its children are adopted).
        """
        iterator = self._iterators[shard_id]
        # Enough for a full batch in every lane (GetRecords returns at most 1000).
        limit = min(1000, self._batch_size * self._parallelization)
        response = self._client.get_records(ShardIterator=iterator, Limit=limit)
        if self._forget_iterator is not None:
            self._forget_iterator(iterator)
        raw_records = response.get("Records", [])
        next_iterator = response.get("NextShardIterator")
        if next_iterator:
            self._iterators[shard_id] = next_iterator
        else:
            logger.debug("shard %s closed", shard_id)
            del self._iterators[shard_id]
            self._closed_shards.add(shard_id)
            self._adopt_new_shards()
        if not raw_records:
            return not next_iterator, []
        self._last_seq[shard_id] = str(raw_records[-1]["dynamodb"]["SequenceNumber"])
        self._count("records_seen", len(raw_records))
        records = [to_lambda_record(r, self.stream_arn, self._region) for r in raw_records]
        kept = [r for r in records if self._filter is None or self._filter(r)]
        self._count("records_filtered_out", len(records) - len(kept))
        return True, kept

    def _poll_once(self) -> bool:
        found = False
        for shard_id in list(self._iterators):
            if self._stop.is_set():
                return True
            if shard_id not in self._iterators:
                continue
            read, records = self._read(shard_id)
            if not read:
                continue
            found = True
            if records and self._batching_window > 0:
                records = self._gather(shard_id, records)
            if records and not self._dispatch(shard_id, records):
                return True  # stopping with records left: the next start delivers them
            self._checkpoint(shard_id)
        return found

    def _checkpoint(self, shard_id: str) -> None:
        """Everything read from the shard so far is handled: report the position."""
        position = self._last_seq.get(shard_id)
        if self._on_checkpoint is None or position is None or self._checkpointed.get(shard_id) == position:
            return
        try:
            self._on_checkpoint(shard_id, position)
        except Exception:
            logger.exception("could not keep the stream position %s; its records may be delivered again", position)
            return
        self._checkpointed[shard_id] = position

    def _gather(self, shard_id: str, records: list[Record]) -> list[Record]:
        """Read the shard again until the batch is full or the batching window has passed."""
        deadline = time.monotonic() + self._batching_window
        full = self._batch_size * self._parallelization
        while len(records) < full and shard_id in self._iterators and not self._stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._stop.wait(min(self._poll_interval, remaining))
            _, more = self._read(shard_id)
            records.extend(more)
        return records

    # -- delivering ----------------------------------------------------------------

    def _dispatch(self, shard_id: str, records: list[Record]) -> bool:
        """Split the records into lanes and deliver every lane (concurrently when several).

        Returns whether every record was handled (False: stopped with some left)."""
        lanes: dict[int, list[Record]] = {}
        for record in records:
            lanes.setdefault(lane_of(record, self._parallelization, self._partition_key), []).append(record)
        # Lists, not generators: every lane is delivered (or waited for) before answering.
        if len(lanes) == 1 or self._lanes is None:
            return all([self._deliver_lane(shard_id, lane_records) for lane_records in lanes.values()])
        futures = [self._lanes.submit(self._deliver_lane, shard_id, lane) for _, lane in sorted(lanes.items())]
        return all([future.result() for future in futures])

    def _deliver_lane(self, shard_id: str, records: list[Record]) -> bool:
        for start in range(0, len(records), self._batch_size):
            if not self._deliver(shard_id, records[start : start + self._batch_size]):
                return False
        return True

    def _invoke(self, batch: list[Record]) -> tuple[set[str] | None, str | None]:
        """Invoke once; return (failed sequence numbers, or None for the whole batch; function error)."""
        self._count("invocations")
        try:
            response = self._handler({"Records": batch})
        except Exception:
            logger.exception("stream handler raised; the whole batch of %d failed", len(batch))
            return None, "Unhandled"
        if not self._report_item_failures or not isinstance(response, Mapping):
            return set(), None
        failures = response.get("batchItemFailures")
        if not failures:
            return set(), None
        if not isinstance(failures, list):
            logger.warning("batchItemFailures is a %s, not a list: whole batch failed", type(failures).__name__)
            return None, None
        in_batch = {r["dynamodb"]["SequenceNumber"] for r in batch}
        failed: set[str] = set()
        for failure in failures:
            identifier = failure.get("itemIdentifier") if isinstance(failure, Mapping) else None
            if not identifier or str(identifier) not in in_batch:
                logger.warning("batchItemFailures names %r, not in the batch: whole batch failed", identifier)
                return None, None
            failed.add(str(identifier))
        return failed, None

    def _expired(self, record: Record) -> bool:
        created = record["dynamodb"].get("ApproximateCreationDateTime")
        if created is None:
            return False
        limit = STREAM_RETENTION if self._max_record_age is None else min(self._max_record_age, STREAM_RETENTION)
        return self._clock() - float(created) > limit

    def _deliver(self, shard_id: str, batch: list[Record]) -> bool:
        """Deliver one batch with retries, bisection, record age and the on-failure destination.

        Work is a queue of segments (records, retries used, invocations so far),
        worked front first, so records are invoked in stream order. Returns False when a
        ``resumable`` poller stopped with records of the batch not handled.
        """
        segments: deque[tuple[list[Record], int, int]] = deque([(batch, 0, 0)])
        while segments:
            records, retries, invokes = segments.popleft()
            kept: list[Record] = []
            expired: list[Record] = []
            for record in records:
                (expired if self._expired(record) else kept).append(record)
            if expired:
                self._count("records_expired", len(expired))
                self._dead_letter(shard_id, expired, invokes, "RecordAgeExceeded", None)
                records = kept
                if not records:
                    continue
            failed, function_error = self._invoke(records)
            invokes += 1
            if failed is not None and not failed:
                self._count("batches_delivered")
                self._count("records_delivered", len(records))
                continue
            if failed is not None:
                lowest = min(int(s) for s in failed)
                start = next(i for i, r in enumerate(records) if _seq(r) == lowest)
                self._count("records_delivered", start)
                records = records[start:]
            elif function_error is not None and self._bisect and len(records) > 1 and not self._stop.is_set():
                middle = len(records) // 2
                self._count("bisections")
                logger.warning(
                    "stream batch of %d failed with a function error; bisecting at sequence %s",
                    len(records),
                    records[middle]["dynamodb"]["SequenceNumber"],
                )
                segments.appendleft((records[middle:], retries, invokes))
                segments.appendleft((records[:middle], retries, invokes))
                continue
            retries += 1
            exhausted = self._max_retries is not None and retries > self._max_retries
            if not exhausted and self._stop.is_set() and self._resumable:
                logger.warning("stopping with a stream batch from sequence %s not delivered; the next start "
                               "delivers it", records[0]["dynamodb"]["SequenceNumber"])
                return False
            if exhausted or self._stop.is_set():
                condition = "RetryAttemptsExhausted" if exhausted else "Shutdown"
                self._dead_letter(shard_id, records, invokes, condition, function_error)
                continue
            delay = min(self._retry_base_delay * (2 ** (retries - 1)), self._retry_max_delay)
            self._count("retries")
            logger.warning(
                "stream batch failed from sequence %s (%d records); retry %d of %s in %.2fs",
                records[0]["dynamodb"]["SequenceNumber"],
                len(records),
                retries,
                "unlimited" if self._max_retries is None else self._max_retries,
                delay,
            )
            self._stop.wait(delay)
            segments.appendleft((records, retries, invokes))
        return True

    def _dead_letter(
        self, shard_id: str, records: list[Record], invokes: int, condition: str, function_error: str | None
    ) -> None:
        self._count("batches_dead_lettered")
        self._count("records_dead_lettered", len(records))
        info = {
            "requestContext": {
                "requestId": str(uuid.uuid4()),
                "functionArn": self._function_arn,
                "condition": condition,
                "approximateInvokeCount": invokes,
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
            "stream batch discarded after %d invocations (%s): sequence %s..%s",
            invokes,
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
