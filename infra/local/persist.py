"""Keep the local stack's state across restarts and crashes, and its memory bounded.

:class:`Durability` connects the embedded moto to the :class:`~leadflow_infra.local.journal.Journal`
of the data directory:

- **Every change before its answer.** Under the backend lock (:mod:`~leadflow_infra.local.atomic`),
  the records an operation added to the table's stream name the items it changed; their
  resulting images (or their deletion) and the stream records themselves are committed
  in one transaction, and the log is flushed to disk (shared by concurrent writers) once
  the lock is released, before moto answers. Queue messages likewise: a message sent to a
  persisted queue, moved to its dead-letter queue, deleted or purged is journaled before
  the call returns. A read waits for the flush of what it may have seen: a GetItem for
  its item's last change only, a Query or Scan for every commit before it.
- **No alert for a change that is not durable.** A stream read takes the same lock and
  waits for the same flush, so a consumer never sees a record before its change is on disk.
- **At-least-once to the stream consumers across crashes.** Each consumer's position is
  kept (:meth:`Durability.checkpoint`); at start the records after the slowest position
  are put back in the stream with their sequence numbers, and each consumer resumes after
  its own position, as Lambda resumes a shard from its checkpoint.
- **Bounded memory.** Records every consumer has handled, or older than a stream's 24
  hours, leave moto's stream and the journal; moto's ``get_item`` and ``delete_item`` no
  longer leave an empty partition behind for a key that is not there; moto no longer
  keeps every object it made (each item version, record, iterator and message) for its
  dashboard.
- **Start** puts back the kept items (straight into moto's tables, without stream records),
  messages and stream records. A data directory from before the journal
  (``dynamodb.json``, ``sqs.json``) is imported once, then those files are removed.

Without a data directory (``--no-persist``) only the last point applies.

The JSON helpers (:func:`write_json`, :class:`Snapshot`) remain for ``stack.json``, the
explicit export :meth:`LocalStack.dump` and the import of old data directories.
"""

from __future__ import annotations

import base64
import collections
import dataclasses
import datetime as dt
import functools
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from leadflow_infra.local import atomic
from leadflow_infra.local.journal import (
    Journal,
    JournalError,
    key_text,
    secure_directory,
)

logger = logging.getLogger(__name__)

SNAPSHOT_NAME = "dynamodb.json"
QUEUE_SNAPSHOT_NAME = "sqs.json"
FORMAT_VERSION = 1
_BATCH = 25
# moto numbers a new stream from here; the journal numbers records from it (n = seq - BASE).
BASE_SEQUENCE = 1100000000017454423009
STREAM_RETENTION = 86_400  # seconds a DynamoDB stream keeps a record
ACCOUNT_ID = "123456789012"

SnapshotError = JournalError  # the name the CLI and older callers catch


def write_json(path: Path, document: Any, *, indent: int | None = None) -> None:
    """``document`` as JSON to ``path``, atomically (temp file, fsync, rename): a reader
    sees the old file or the new one, and a crash mid-write leaves the old one intact.
    The file is its owner's only (0600), in a directory that is too (0700)."""
    secure_directory(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".json.tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(document, fh, indent=indent, separators=None if indent else (",", ":"))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_snapshot(path: Path, key: str, content: dict[str, Any]) -> None:
    """`{"version", "saved_at", key: content}` to `path`, atomically (:func:`write_json`).
    The table export (key "tables") and the old queue snapshot (key "queues") share it."""
    document = {
        "version": FORMAT_VERSION,
        "saved_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        key: content,
    }
    write_json(path, document)


def read_snapshot(path: Path, key: str) -> dict[str, Any] | None:
    """What `write_snapshot` saved under `key`; None when there is no file.
    Raises SnapshotError for a file that cannot be used."""
    if not path.exists():
        return None
    try:
        with path.open(encoding="utf-8") as fh:
            document = json.load(fh)
        content = document[key]
        if document.get("version") != FORMAT_VERSION or not isinstance(content, dict):
            raise ValueError(f"unsupported snapshot version {document.get('version')!r}")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SnapshotError(f"cannot read {path} ({exc}); move it away or start with --no-persist") from exc
    return content


def attributes_to_json(value: Any) -> Any:
    """boto3 attribute values → JSON: bytes become base64 text (as in Lambda's stream events)."""
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, dict):
        return {k: attributes_to_json(v) for k, v in value.items()}
    if isinstance(value, list | set | tuple):
        return [attributes_to_json(v) for v in value]
    return value


def _decode(value: Any) -> Any:
    """JSON → boto3 attribute values: ``B`` and ``BS`` back to bytes."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, inner in value.items():
            if key == "B" and isinstance(inner, str):
                out[key] = base64.b64decode(inner)
            elif key == "BS" and isinstance(inner, list):
                out[key] = [base64.b64decode(v) for v in inner]
            else:
                out[key] = _decode(inner)
        return out
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def scan_items(client: Any, table_name: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for page in client.get_paginator("scan").paginate(TableName=table_name, ConsistentRead=True):
        items.extend(page.get("Items", []))
    return items


def write_items(client: Any, table_name: str, items: Iterable[dict[str, Any]], *, max_attempts: int = 10) -> int:
    """batch_write_item in groups of 25, retrying UnprocessedItems with backoff."""
    written = 0
    batch: list[dict[str, Any]] = []

    def flush() -> None:
        nonlocal written
        requests = {table_name: [{"PutRequest": {"Item": item}} for item in batch]}
        for attempt in range(max_attempts):
            unprocessed = client.batch_write_item(RequestItems=requests).get("UnprocessedItems") or {}
            if not unprocessed:
                written += len(batch)
                batch.clear()
                return
            requests = unprocessed
            time.sleep(min(0.05 * 2**attempt, 2.0))
        raise RuntimeError(f"could not write {len(requests.get(table_name, []))} items to {table_name}")

    for item in items:
        batch.append(item)
        if len(batch) == _BATCH:
            flush()
    if batch:
        flush()
    return written


class Snapshot:
    """Every item of the given tables as one JSON file, ``<data_dir>/dynamodb.json``: the
    explicit export, and how data directories were kept before the journal."""

    def __init__(self, client: Any, data_dir: str | os.PathLike[str], table_names: Iterable[str]) -> None:
        self._client = client
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / SNAPSHOT_NAME
        self._tables = list(table_names)
        self._lock = threading.Lock()

    def dump(self) -> int:
        """Write the snapshot; return the number of items saved."""
        with self._lock:
            tables = {name: attributes_to_json(scan_items(self._client, name)) for name in self._tables}
            write_snapshot(self.path, "tables", tables)
            count = sum(len(items) for items in tables.values())
            logger.debug("saved %d items to %s", count, self.path)
            return count

    def load(self) -> int:
        """Put every saved item back; return how many. No file, nothing to do."""
        tables = read_snapshot(self.path, "tables")
        if tables is None:
            return 0
        count = 0
        with self._lock:
            for name, items in tables.items():
                if name not in self._tables:
                    logger.warning("snapshot has items for unknown table %s; skipped", name)
                    continue
                count += write_items(self._client, name, (_decode(item) for item in items))
        logger.debug("loaded %d items from %s", count, self.path)
        return count


# -- moto, patched once per process -------------------------------------------------------

_active: Durability | None = None
_ABSENT = object()


def _created_epoch(record: Mapping[str, Any]) -> float:
    created = record["dynamodb"].get("ApproximateCreationDateTime")
    if isinstance(created, dt.datetime):
        if created.tzinfo is None:
            created = created.replace(tzinfo=dt.UTC)
        return created.timestamp()
    return float(created) if created is not None else time.time()


class _KeptRecord:
    """A stream record put back after a restart: what moto's shard holds, minus the model."""

    __slots__ = ("record",)

    def __init__(self, record: dict[str, Any]) -> None:
        self.record = record

    def to_json(self) -> dict[str, Any]:
        return self.record


def install() -> None:
    """Patch moto (idempotent; the patches do nothing while no stack is running):

    - ``StreamShard.get`` takes the backend lock, skips what was trimmed, and returns only
      once its records' changes are durable;
    - ``Table.get_item`` and ``Table.delete_item`` leave no empty partition behind;
    - a persisted queue's ``add_message`` / ``delete_message`` / purge are journaled, and
      the SQS calls return only once that is durable;
    - moto no longer keeps every DynamoDB, Streams and SQS object it ever made.
    """
    _patch_streams()
    _patch_partitions()
    _patch_queues()
    _stop_instance_tracking()


# moto's packages whose objects are made per request: items (a new one per write),
# stream records, shard iterators (one per poll), messages.
_UNTRACKED = ("moto.dynamodb.", "moto.dynamodbstreams.", "moto.sqs.")


def _stop_instance_tracking() -> None:
    """moto appends every model object it creates to its class's ``instances_tracked``
    list, for its web dashboard (``/moto-api/data.json``), and lets go of them only on a
    reset: every version of every item ever written, every stream record (trimmed from
    the stream or not), every shard iterator a poller was handed, every message. That
    was most of the local stack's memory, growing by about 25 KB an event for good. The
    local stack never shows that dashboard; the objects of these services are no longer
    kept (those of other services, and S3, which reads its list when it resets, are)."""
    from moto.core.common_models import BaseModel

    if getattr(BaseModel, "_leadflow_untracked", False):
        return
    original = BaseModel.__new__

    def __new__(cls: type, *args: Any, **kwargs: Any) -> Any:
        if cls.__module__.startswith(_UNTRACKED):
            return object.__new__(cls)
        return original(cls, *args, **kwargs)

    BaseModel.__new__ = staticmethod(__new__)  # type: ignore[assignment, method-assign]
    BaseModel._leadflow_untracked = True  # type: ignore[attr-defined]


def _patch_streams() -> None:
    from moto.dynamodb.models.table import StreamShard

    if getattr(StreamShard, "_leadflow_durable", False):
        return
    original = StreamShard.get

    @functools.wraps(original)
    def get(self: Any, start: int, quantity: int) -> list[dict[str, Any]]:
        with atomic.lock():
            # Trimmed (handled by every consumer, or expired): read from what is left.
            start = max(int(start), self.starting_sequence_number)
            records = original(self, start, quantity)
            durability = _active
            mark = durability.records_mark(records) if durability is not None else None
        if durability is not None:
            durability.settle(mark)
        return records

    StreamShard.get = get
    StreamShard._leadflow_durable = True


def _patch_partitions() -> None:
    from moto.dynamodb.models.table import Table

    if getattr(Table, "_leadflow_no_empty_partitions", False):
        return
    original_get = Table.get_item
    original_delete = Table.delete_item

    @functools.wraps(original_get)
    def get_item(self: Any, hash_key: Any, range_key: Any = None, projection_expression: Any = None) -> Any:
        # moto's items is a defaultdict: items[hash][range] on a missing partition adds one.
        if range_key and self.range_key_attr is not None and hash_key not in self.items:
            return None
        return original_get(self, hash_key, range_key, projection_expression)

    @functools.wraps(original_delete)
    def delete_item(self: Any, hash_key: Any, range_key: Any) -> Any:
        if range_key and hash_key not in self.items:
            return None
        item = original_delete(self, hash_key, range_key)
        if range_key and not self.items.get(hash_key, _ABSENT):
            self.items.pop(hash_key, None)  # its last item is gone: so is the partition
        return item

    Table.get_item = get_item
    Table.delete_item = delete_item
    Table._leadflow_no_empty_partitions = True


def _patch_queues() -> None:
    from moto.sqs.models import Queue, SQSBackend

    if getattr(Queue, "_leadflow_durable", False):
        return
    original_add = Queue.add_message
    original_delete = Queue.delete_message
    original_purge = SQSBackend.purge_queue

    @functools.wraps(original_add)
    def add_message(self: Any, message: Any) -> None:
        durability = _active
        if durability is None or not durability.keeps_queue(self):
            return original_add(self, message)
        with atomic.lock():
            before = len(self._messages)
            original_add(self, message)
            if len(self._messages) > before:  # not dropped as a FIFO duplicate
                durability.journal_messages(queued=[(self.name, message)])

    @functools.wraps(original_delete)
    def delete_message(self: Any, receipt_handle: str) -> None:
        durability = _active
        if durability is None or not durability.keeps_queue(self):
            return original_delete(self, receipt_handle)
        with atomic.lock():
            before = {message.id for message in self._messages}
            original_delete(self, receipt_handle)
            removed = before - {message.id for message in self._messages}
            if removed:
                durability.journal_messages(removed=sorted(removed))

    @functools.wraps(original_purge)
    def purge_queue(self: Any, queue_name: str) -> None:
        durability = _active
        queue = self.queues.get(queue_name)
        if durability is None or queue is None or not durability.keeps_queue(queue):
            return original_purge(self, queue_name)
        with atomic.lock():
            original_purge(self, queue_name)
            durability.journal_messages(purged=[queue_name])

    Queue.add_message = add_message
    Queue.delete_message = delete_message
    SQSBackend.purge_queue = purge_queue

    # The calls a client makes return only once what they changed is durable (a receive
    # can move messages to the dead-letter queue).
    for name in ("send_message", "send_message_batch", "receive_message", "delete_message",
                 "delete_message_batch", "purge_queue"):
        original = getattr(SQSBackend, name)

        @functools.wraps(original)
        def durable(self: Any, *args: Any, _original: Any = original, **kwargs: Any) -> Any:
            result = _original(self, *args, **kwargs)
            durability = _active
            if durability is not None:
                durability.settle(durability.mark())
            return result

        setattr(SQSBackend, name, durable)
    Queue._leadflow_durable = True


def _message_document(message: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "id": message.id,
        "body": message.body,
        "attributes": attributes_to_json(dict(message.message_attributes or {})),
        "delayed_until": float(message.delayed_until or 0.0),
    }
    for name in ("group_id", "deduplication_id", "sequence_number"):
        if getattr(message, name, None):
            document[name] = getattr(message, name)
    if getattr(message, "system_attributes", None):
        document["system_attributes"] = attributes_to_json(dict(message.system_attributes))
    return document


def _message_from_document(document: Mapping[str, Any]) -> Any:
    from leadflow_infra.local.queues import message_attributes_from_json
    from moto.sqs.models import Message

    message = Message(document["id"], document["body"], dict(document.get("system_attributes") or {}) or None)
    message.message_attributes = message_attributes_from_json(document.get("attributes") or {})
    message.group_id = document.get("group_id")
    message.deduplication_id = document.get("deduplication_id")
    message.sequence_number = document.get("sequence_number")
    message.mark_sent()
    # A retry waiting out its backoff is still waiting after a restart; one due meanwhile is due now.
    message.delayed_until = float(document.get("delayed_until") or 0.0)
    return message


@dataclasses.dataclass(frozen=True)
class _ItemRead:
    """A read of one item: which table, which key (as the request gave it)."""

    table_name: str
    keys: Mapping[str, Any]


class Durability:
    """The stack's persisted tables, queues and stream consumers (see the module docstring).

    ``data_dir`` None keeps nothing on disk (``--no-persist``) and only trims the stream.
    ``compact_every`` is how often, at most, the journal is folded into the database when
    it has changed (it is folded sooner once it holds ``Journal``'s size limit); 0 folds
    it only at stop.
    """

    def __init__(
        self,
        *,
        data_dir: str | os.PathLike[str] | None,
        table: str,
        queues: Iterable[str] = (),
        region: str,
        account_id: str = ACCOUNT_ID,
        compact_every: float = 30.0,
        fsync: bool = True,
        clock: Any = time.time,
    ) -> None:
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self.table = table
        self._queues = frozenset(queues)
        self.region = region
        self.account_id = account_id
        self._compact_every = compact_every
        self._clock = clock
        self.journal: Journal | None = Journal(self.data_dir, fsync=fsync) if self.data_dir is not None else None
        self._positions: dict[str, int] = {}  # consumers of this run: last handled n
        self._kept_positions: dict[str, int] = {}  # as the journal had them at start
        self._trimmed_through = -1
        self._failed: BaseException | None = None
        # The journal mark of each item's last change not yet known to be on disk: a read of
        # one item waits for that flush only, not for everyone's latest (see after()).
        self._item_marks: dict[tuple[str, str], int] = {}
        # (last stream record number, mark) of each commit not yet known to be on disk: a
        # stream read waits for the flush of the records it returns, and no other.
        self._record_marks: collections.deque[tuple[int, int]] = collections.deque()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.loaded_items = 0
        self.loaded_messages = 0
        self.redelivered_records = 0
        self.imported = False

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, import_queues: Any = None) -> Durability:
        """Open the journal, put back what it kept, then journal every change.

        ``import_queues()`` loads an old data directory's ``sqs.json`` through the queues'
        API (journaled like any send) and returns how many messages it sent."""
        global _active
        install()
        if _active is not None and _active is not self:
            raise RuntimeError("another local stack keeps this process's moto state")
        if self.journal is not None:
            self.journal.open()
            try:
                self._restore()
            except BaseException:
                self.journal.close()
                raise
        _active = self
        if self.journal is not None:
            atomic.observe(self)
            if self.journal.get_meta("ready") is None:
                self._import_legacy(import_queues)
        self._stop.clear()
        self._thread = threading.Thread(target=self._maintain, name="leadflow-store", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> int | None:
        """Stop journaling, fold the journal into the database and close it; returns the
        number of items kept (None without a data directory)."""
        global _active
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        with atomic.lock():
            if _active is self:
                atomic.observe(None)
                _active = None
        if self.journal is None or not self.journal.is_open:
            return None
        try:
            self.journal.sync()
            return self.journal.count_items()
        finally:
            self.journal.close()

    @property
    def path(self) -> Path | None:
        return self.journal.path if self.journal is not None else None

    @property
    def healthy(self) -> bool:
        return self._failed is None

    # -- the backend lock's observer --------------------------------------------------------

    def before(self, backend: Any, writes: bool, item: tuple[str, Any] | None = None) -> Any:
        if self._failed is not None:
            raise JournalError(f"the local store failed ({self._failed}); restart leadflow serve")
        if not writes:
            return _ItemRead(*item) if item is not None and self._is_ours(backend) else None
        if not self._is_ours(backend):
            return None
        table = backend.tables.get(self.table)
        shard = table.stream_shard if table is not None else None
        return None if shard is None else (table, shard, len(shard.items))

    def after(self, backend: Any, token: Any) -> int | None:
        journal = self.journal
        if journal is None:
            return None
        if token is None:
            return journal.committed
        if isinstance(token, _ItemRead):
            return self._read_mark(backend, token)
        table, shard, before = token
        current = backend.tables.get(self.table)
        if current is not table or current.stream_shard is not shard or len(shard.items) <= before:
            return journal.committed  # nothing changed, or a transaction rolled back
        added = shard.items[before:]
        try:
            return self._journal_changes(table, added)
        except BaseException as exc:
            # Not on disk: no consumer may see these records, and nothing more is answered.
            del shard.items[before:]
            self._failed = exc
            logger.exception("could not journal a change to %s; the local stack stops answering", self.table)
            raise

    def settle(self, mark: int | None) -> None:
        if mark is not None and self.journal is not None:
            self.journal.sync(mark)

    def _read_mark(self, backend: Any, read: "_ItemRead") -> int | None:
        """What a read of one item must wait for before it answers: the flush of that item's
        last change, if it is not on disk yet (None: nothing). Whatever else was committed
        meanwhile is not this read's to wait for: a write built on what it read is flushed
        with everything committed before it. Anything this cannot name exactly (another
        table, a key that is not text) waits for every commit, as any other read does."""
        journal = self.journal
        assert journal is not None
        table = backend.tables.get(self.table)
        if read.table_name != self.table or table is None:
            return journal.committed
        hash_value = read.keys.get(table.hash_key_attr)
        range_value = read.keys.get(table.range_key_attr) if table.range_key_attr else None
        if not all(isinstance(v, dict) and set(v) == {"S"} for v in (hash_value, range_value) if v is not None):
            return journal.committed
        mark = self._item_marks.get((key_text(hash_value), key_text(range_value)))
        return mark if mark is not None and mark > journal.durable else None

    def records_mark(self, records: list[dict[str, Any]]) -> int | None:
        """Under the backend lock: what a stream read returning ``records`` must wait for
        before a consumer sees them (the flush of the commit of the last one), or None."""
        if not records or self.journal is None:
            return None
        last = int(records[-1]["dynamodb"]["SequenceNumber"]) - BASE_SEQUENCE
        durable = self.journal.durable
        for number, mark in self._record_marks:
            if number >= last:
                return mark if mark > durable else None
        return None  # committed before this run, or on disk and forgotten since

    def _remember_marks(self, keys: Iterable[tuple[str, str]], mark: int) -> None:
        """Under the backend lock, after a commit: the items it changed, and (now and then)
        forget the ones on disk since, so the map holds only what is in flight."""
        marks = self._item_marks
        for key in keys:
            marks[key] = mark
        if len(marks) > 10_000:
            durable = self.journal.durable if self.journal is not None else mark
            for key in [k for k, m in marks.items() if m <= durable]:
                del marks[key]

    def mark(self) -> int | None:
        return self.journal.committed if self.journal is not None else None

    def _is_ours(self, backend: Any) -> bool:
        return getattr(backend, "account_id", None) == self.account_id and \
            getattr(backend, "region_name", None) == self.region

    def _journal_changes(self, table: Any, added: list[Any]) -> int:
        from moto.dynamodb.models.dynamo_type import DynamoType

        hash_attr, range_attr = table.hash_key_attr, table.range_key_attr
        images: dict[tuple[str, str], Mapping[str, Any] | None] = {}
        records = []
        for stream_record in added:
            record = stream_record.record
            keys = record["dynamodb"]["Keys"]
            hash_value, range_value = keys[hash_attr], keys.get(range_attr) if range_attr else None
            key = (key_text(hash_value), key_text(range_value))
            if key not in images:
                partition = table.items.get(DynamoType(hash_value))
                item = partition
                if range_attr is not None:
                    item = partition.get(DynamoType(range_value)) if partition else None
                images[key] = item.to_json()["Attributes"] if item is not None else None
            created = _created_epoch(record)
            kept = dict(record, dynamodb=dict(record["dynamodb"], ApproximateCreationDateTime=created))
            records.append((self.table, int(record["dynamodb"]["SequenceNumber"]) - BASE_SEQUENCE, created, kept))
        mark = self.journal.record(  # type: ignore[union-attr]
            items=[(self.table, pk, sk, image) for (pk, sk), image in images.items()], stream=records)
        self._remember_marks(images, mark)
        if records:
            marks, durable = self._record_marks, self.journal.durable  # type: ignore[union-attr]
            while marks and marks[0][1] <= durable:
                marks.popleft()
            marks.append((max(n for _, n, _, _ in records), mark))
        return mark

    # -- queues ------------------------------------------------------------------------------

    def keeps_queue(self, queue: Any) -> bool:
        return self.journal is not None and queue.name in self._queues and \
            queue.account_id == self.account_id and queue.region == self.region

    def journal_messages(self, *, queued: Iterable[tuple[str, Any]] = (), removed: Iterable[str] = (),
                         purged: Iterable[str] = ()) -> None:
        """Under the backend lock: one queue change into the journal."""
        if self._failed is not None:
            raise JournalError(f"the local store failed ({self._failed}); restart leadflow serve")
        try:
            self.journal.record(  # type: ignore[union-attr]
                messages=[(message.id, queue, _message_document(message)) for queue, message in queued],
                removed_messages=removed, purged_queues=purged)
        except BaseException as exc:
            self._failed = exc
            logger.exception("could not journal a queue change; the local stack stops answering")
            raise

    # -- stream consumers --------------------------------------------------------------------

    def consumer_start(self, consumer: str) -> str:
        """The sequence number a stream consumer resumes after: its kept position, or, for a
        consumer the journal does not know, the stream's end (kept as its position now)."""
        with atomic.lock():
            shard = self._shard()
            end = shard.starting_sequence_number + len(shard.items) - 1 - BASE_SEQUENCE
            position = self._kept_positions.get(consumer)
            if position is None or position > end:
                position = end
            self._positions[consumer] = position
            if self.journal is not None:
                self.journal.checkpoint(consumer, self.table, position)
            mark = self.mark()
        self.settle(mark)
        return str(BASE_SEQUENCE + position)

    def checkpoint(self, consumer: str, sequence_number: str) -> None:
        """Every record up to ``sequence_number`` is handled by ``consumer``: keep that, and
        trim what every consumer has handled. No flush: a position lost in a crash only
        means records handled again."""
        n = int(sequence_number) - BASE_SEQUENCE
        with atomic.lock():
            if n <= self._positions.get(consumer, -2):
                return
            self._positions[consumer] = n
            if self.journal is not None and self._failed is None:
                self.journal.checkpoint(consumer, self.table, n)
            self._trim(min(self._positions.values()))

    def _shard(self) -> Any:
        from moto.dynamodb.models import dynamodb_backends

        table = dynamodb_backends[self.account_id][self.region].tables[self.table]
        if table.stream_shard is None:
            raise RuntimeError(f"table {self.table} has no stream")
        return table.stream_shard

    def _trim(self, through: int) -> None:
        """Under the backend lock: drop the stream's records up to ``through``."""
        if through <= self._trimmed_through:
            return
        shard = self._shard()
        drop = min(BASE_SEQUENCE + through + 1 - shard.starting_sequence_number, len(shard.items))
        if drop > 0:
            del shard.items[:drop]
            shard.starting_sequence_number += drop
        if self.journal is not None and self._failed is None:
            self.journal.trim(self.table, through)
        self._trimmed_through = through

    def expire(self) -> None:
        """Drop the records older than a stream keeps them (24 hours)."""
        cutoff = self._clock() - STREAM_RETENTION
        with atomic.lock():
            try:
                shard = self._shard()
            except KeyError:
                return
            old = 0
            for record in shard.items:
                if _created_epoch(record.record) >= cutoff:
                    break
                old += 1
            if old:
                self._trim(shard.starting_sequence_number + old - 1 - BASE_SEQUENCE)

    # -- start ---------------------------------------------------------------------------

    def _restore(self) -> None:
        from moto.dynamodb.models import dynamodb_backends
        from moto.sqs.models import sqs_backends

        journal = self.journal
        assert journal is not None
        table = dynamodb_backends[self.account_id][self.region].tables[self.table]
        shard, table.stream_shard = table.stream_shard, None  # the kept items are no changes
        try:
            count = 0
            for _, image in journal.items(self.table):
                # Binary values as a request brings them to moto: bytes (the journal has base64).
                table.put_item(_decode(image), overwrite=True)
                count += 1
        finally:
            table.stream_shard = shard
        self.loaded_items = count

        if shard is not None:
            kept = journal.stream_records(self.table)
            cutoff = self._clock() - STREAM_RETENTION
            while kept and _created_epoch(kept[0][1]) < cutoff:
                kept.pop(0)
            for index in range(len(kept) - 1, 0, -1):  # moto's shard is a list: keep a gapless tail
                if kept[index][0] != kept[index - 1][0] + 1:
                    logger.warning("stream records before %d are not contiguous; not redelivered", kept[index][0])
                    kept = kept[index:]
                    break
            first = kept[0][0] if kept else journal.next_stream_number(self.table)
            shard.starting_sequence_number = BASE_SEQUENCE + first
            shard.items = [_KeptRecord(self._moto_record(record)) for _, record in kept]
            self._trimmed_through = first - 1
        self._kept_positions = journal.checkpoints()
        self.redelivered_records = len(shard.items) if shard is not None else 0

        queues = sqs_backends[self.account_id][self.region].queues
        restored = 0
        for name, document in journal.messages():
            queue = queues.get(name)
            if queue is None:
                logger.warning("the journal has a message for queue %s, which this stack does not have", name)
                continue
            message = _message_from_document(document)
            with queue._messages_lock:
                queue._messages.append(message)
                queue._messages_lock.notify_all()
            restored += 1
        self.loaded_messages = restored

    @staticmethod
    def _moto_record(record: dict[str, Any]) -> dict[str, Any]:
        """A kept record as moto's shard holds one: a naive UTC datetime, binary values as bytes."""
        change = dict(record["dynamodb"])
        change["ApproximateCreationDateTime"] = dt.datetime.fromtimestamp(_created_epoch(record), tz=dt.UTC).replace(
            tzinfo=None)
        for image in ("Keys", "NewImage", "OldImage"):
            if image in change:
                change[image] = _decode(change[image])
        return dict(record, dynamodb=change)

    def _import_legacy(self, import_queues: Any) -> None:
        """A data directory kept by JSON snapshots: put its items and messages in the journal
        (a start interrupted before ``ready`` imports again), then remove the old files."""
        journal = self.journal
        assert journal is not None and self.data_dir is not None
        tables_file = self.data_dir / SNAPSHOT_NAME
        queues_file = self.data_dir / QUEUE_SNAPSHOT_NAME
        tables = read_snapshot(tables_file, "tables") or {}
        for name in set(tables) - {self.table}:
            logger.warning("snapshot has items for unknown table %s; skipped", name)
        imported = self._import_items(tables.get(self.table) or [])
        if queues_file.exists() and import_queues is not None:
            self.loaded_messages += import_queues()
        if imported or queues_file.exists():
            self.imported = True
            logger.warning("imported %d items from the snapshot files in %s; they are removed", imported,
                           self.data_dir)
        journal.sync(journal.set_meta("ready", dt.datetime.now(dt.UTC).isoformat(timespec="seconds")))
        for path in (tables_file, queues_file):
            path.unlink(missing_ok=True)

    def _import_items(self, items: list[dict[str, Any]]) -> int:
        """Snapshot items (DynamoDB JSON, binary as base64) into moto and the journal, as kept items."""
        from moto.dynamodb.models import dynamodb_backends

        if not items:
            return 0
        table = dynamodb_backends[self.account_id][self.region].tables[self.table]
        rows = []
        with atomic.lock():
            shard, table.stream_shard = table.stream_shard, None
            try:
                for image in items:
                    item = table.put_item(_decode(image), overwrite=True)
                    range_value = item.range_key.to_json() if table.range_key_attr else None
                    rows.append((self.table, key_text(item.hash_key.to_json()), key_text(range_value),
                                 item.to_json()["Attributes"]))
            finally:
                table.stream_shard = shard
            self.journal.record(items=rows)  # type: ignore[union-attr]
        self.loaded_items += len(rows)
        return len(rows)

    # -- the background work ---------------------------------------------------------------

    def _maintain(self) -> None:
        """Expire old stream records; fold the journal into the database when it is large,
        or has changed and ``compact_every`` has passed. Never under the backend lock."""
        interval = min(1.0, self._compact_every) if self._compact_every > 0 else 1.0
        last_fold, folded_at = time.monotonic(), self.mark()
        while not self._stop.wait(interval):
            try:
                self.expire()
                journal = self.journal
                if journal is None or self._compact_every <= 0:
                    continue
                due = time.monotonic() - last_fold >= self._compact_every and self.mark() != folded_at
                if due or journal.unfolded_bytes >= WAL_FOLD:
                    journal.compact()
                    last_fold, folded_at = time.monotonic(), self.mark()
            except Exception:
                logger.exception("local store upkeep failed; will try again")


WAL_FOLD = 4 * 1024 * 1024
