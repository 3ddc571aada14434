"""Keep the local tables across restarts: a JSON snapshot of every item.

The snapshot is low-level DynamoDB JSON (``{"S": ...}``, binary as base64),
written to a temporary file and renamed over the old one, so a crash mid-write
leaves the previous snapshot intact.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

SNAPSHOT_NAME = "dynamodb.json"
FORMAT_VERSION = 1
_BATCH = 25


def write_json(path: Path, document: Any, *, indent: int | None = None) -> None:
    """``document`` as JSON to ``path``, atomically (temp file, fsync, rename): a reader
    sees the old file or the new one, and a crash mid-write leaves the old one intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
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
    The table snapshot (key "tables") and the queue snapshot (key "queues") share it."""
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


class SnapshotError(RuntimeError):
    """The snapshot file exists but cannot be read; starting would overwrite it."""


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
    """Dump and load every item of the given tables to ``<data_dir>/dynamodb.json``."""

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


class PeriodicDump:
    """Dump every ``interval`` seconds when ``change_token()`` moved since the last dump."""

    def __init__(self, snapshot: Snapshot, change_token: Callable[[], Any], interval: float = 30.0) -> None:
        self._snapshot = snapshot
        self._change_token = change_token
        self._interval = interval
        self._saved_token: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._saved_token = self._change_token()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="leadflow-snapshot", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
            self._thread = None

    def dump_if_changed(self) -> bool:
        token = self._change_token()
        if token == self._saved_token:
            return False
        self._snapshot.dump()
        self._saved_token = token
        return True

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.dump_if_changed()
            except Exception:
                logger.exception("periodic snapshot failed; will try again")
