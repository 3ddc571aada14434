"""The local stack's durable store: what the stack acknowledged is on disk before the answer.

One SQLite database, ``<data-dir>/leadflow.db``, in write-ahead-log mode. SQLite's log is
the journal: a change is appended to ``leadflow.db-wal`` when it commits, and a crash
(``kill -9``, a power cut) at any moment leaves every committed change readable, a torn
last commit discarded (each WAL frame carries a checksum). Folding the log into the
database (a *checkpoint*, SQLite's compaction) copies only the pages that changed, so
persistence costs the same per write whatever the size of the table; it runs on its own
connection (:meth:`Journal.compact`), off the writer's path.

What is kept, each a table:

- ``items``: every item of the persisted DynamoDB tables, as its resulting image
  (DynamoDB JSON), keyed by table and key: replay is putting each image back;
- ``stream``: the table stream's records not yet handled by every consumer (with
  their sequence numbers), so a record written before a crash reaches its consumers
  after the restart, as a DynamoDB stream keeps records for 24 hours;
- ``checkpoints``: each stream consumer's position (the last sequence number handled);
- ``messages``: what the SQS queues hold (retries waiting out their backoff, dead letters).

Durability is group commit: writers commit under the caller's lock (SQLite's
``synchronous=NORMAL``: the commit is in the log, safe from a process crash), and
:meth:`Journal.sync` then ``fsync``\\ s the log outside that lock, once for every commit
made meanwhile, before the caller answers. ``fsync=False`` skips that last step (a
process crash still loses nothing committed; a power cut may).

SQLite rather than a log of our own: it is in the standard library, and its recovery
of a torn log, its checksums and its checkpoints have been proven for decades.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

try:  # POSIX: one stack per data directory
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

DB_NAME = "leadflow.db"
LOCK_NAME = "leadflow.lock"
FORMAT = 1
FILE_MODE = 0o600
DIR_MODE = 0o700
# The log file is cut back to this size when it starts over after a compaction.
WAL_LIMIT = 8 * 1024 * 1024

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    tbl TEXT NOT NULL, pk TEXT NOT NULL, sk TEXT NOT NULL, item TEXT NOT NULL,
    PRIMARY KEY (tbl, pk, sk)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS stream (
    tbl TEXT NOT NULL, n INTEGER NOT NULL, created REAL NOT NULL, record TEXT NOT NULL,
    PRIMARY KEY (tbl, n)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS checkpoints (consumer TEXT PRIMARY KEY, tbl TEXT NOT NULL, n INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS messages (id TEXT PRIMARY KEY, queue TEXT NOT NULL, message TEXT NOT NULL);
"""


class JournalError(RuntimeError):
    """The store cannot be opened or written; starting (or going on) would lose data."""


def secure_directory(path: Path) -> Path:
    """``path`` created if need be, readable by its owner only (0700)."""
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    try:
        os.chmod(path, DIR_MODE)
    except OSError:  # pragma: no cover - a directory someone else owns: leave it, say so
        logger.warning("could not make %s private (0700)", path)
    return path


def secure_file(path: Path) -> None:
    """Create ``path`` if missing; either way owner-only (0600)."""
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE))
    os.chmod(path, FILE_MODE)


def flush_to_disk(fd: int) -> None:
    """``fsync``, and on macOS the drive's own cache too (plain fsync stops at the drive there)."""
    full = getattr(fcntl, "F_FULLFSYNC", None) if fcntl is not None else None
    if full is not None:
        try:
            fcntl.fcntl(fd, full)
            return
        except OSError:  # pragma: no cover - a file system without it
            pass
    os.fsync(fd)


def _dumps(document: Any) -> str:
    # ASCII only: a lone surrogate that came in a request (JSON allows "\ud800") is kept
    # escaped, where UTF-8 could not encode it for SQLite.
    return json.dumps(document, separators=(",", ":"), default=_default)


def _default(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        import base64

        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"cannot journal a {type(value).__name__}")


def key_text(value: Mapping[str, Any] | None) -> str:
    """A key attribute value (``{"S": "LEAD#1"}``) as the text it is stored under ("" for none)."""
    return "" if value is None else _dumps(dict(value))


class Journal:
    """The store of one data directory. Writers must serialise their calls of
    :meth:`record`, :meth:`checkpoint` and :meth:`trim` (the stack's backend lock does);
    :meth:`sync` and :meth:`compact` may be called from any thread."""

    def __init__(self, data_dir: str | os.PathLike[str], *, fsync: bool = True, wal_limit: int = WAL_LIMIT) -> None:
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / DB_NAME
        self._fsync = fsync
        self._wal_limit = wal_limit
        self._db: sqlite3.Connection | None = None
        self._compactor: sqlite3.Connection | None = None
        self._lock_fd: int | None = None
        self._wal_fd: int | None = None
        self._write_lock = threading.RLock()
        self._sync_lock = threading.Lock()
        self._compact_lock = threading.Lock()
        self._committed = 0
        self._durable = 0
        self._unfolded = 0  # bytes committed since the last compaction (about)
        self.created = False  # this open made a new store

    # -- opening and closing -------------------------------------------------------------

    def open(self) -> Journal:
        """Lock the directory, open (or create) the database and make it private."""
        if self._db is not None:
            return self
        secure_directory(self.data_dir)
        self._lock_directory()
        self.created = not self.path.exists()
        db: sqlite3.Connection | None = None
        try:
            for suffix in ("", "-wal", "-shm"):
                target = Path(f"{self.path}{suffix}")
                if suffix == "" or target.exists():
                    # SQLite gives the log and shared-memory files the database file's mode.
                    secure_file(target)
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
            if db.execute("PRAGMA journal_mode=WAL").fetchone()[0].lower() != "wal":
                raise JournalError(f"{self.path}: SQLite refused write-ahead logging")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA fullfsync=ON")  # macOS: SQLite's own flushes reach the disk too
            db.execute("PRAGMA checkpoint_fullfsync=ON")
            db.execute("PRAGMA wal_autocheckpoint=0")  # compact() folds the log, off the writers' path
            db.execute(f"PRAGMA journal_size_limit={self._wal_limit}")
            db.executescript(_SCHEMA)
            version = db.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
            if version is None:
                db.execute("INSERT INTO meta VALUES ('format', ?)", (str(FORMAT),))
            elif version[0] != str(FORMAT):
                raise JournalError(f"{self.path} has format {version[0]}, this leadflow reads {FORMAT}")
            # A write now: the log file exists from here on (sync() flushes it by its descriptor).
            db.execute("INSERT OR REPLACE INTO meta VALUES ('opened', datetime('now'))")
        except BaseException as exc:
            if db is not None:
                db.close()
            self._unlock_directory()
            if isinstance(exc, sqlite3.DatabaseError):
                raise JournalError(f"cannot open {self.path} ({exc}); move it away or start with --no-persist") from exc
            raise
        self._db = db
        self._wal_fd = os.open(f"{self.path}-wal", os.O_RDWR)
        for suffix in ("-wal", "-shm"):
            if Path(f"{self.path}{suffix}").exists():
                os.chmod(f"{self.path}{suffix}", FILE_MODE)
        self._sync_directory()
        return self

    def close(self) -> None:
        """Fold the log into the database and release everything (the directory lock last)."""
        if self._db is None:
            return
        self.sync()  # on disk, folded or not
        try:
            self.compact(full=True)
        except Exception:
            logger.exception("could not fold the journal into %s; it is replayed at the next start", self.path)
        with self._compact_lock:
            if self._compactor is not None:
                self._compactor.close()
                self._compactor = None
        with self._write_lock:
            self._db.close()
            self._db = None
        with self._sync_lock:
            if self._wal_fd is not None:
                os.close(self._wal_fd)
                self._wal_fd = None
        self._unlock_directory()

    @property
    def is_open(self) -> bool:
        return self._db is not None

    def _lock_directory(self) -> None:
        lock_path = self.data_dir / LOCK_NAME
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, FILE_MODE)
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise JournalError(f"{self.data_dir} is in use by another leadflow serve") from None
        self._lock_fd = fd

    def _unlock_directory(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing releases the lock
            self._lock_fd = None

    def _sync_directory(self) -> None:
        """Make the files' names durable too (a new database or log is a new directory entry)."""
        if not self._fsync or not hasattr(os, "O_DIRECTORY"):
            return
        fd = os.open(self.data_dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            flush_to_disk(fd)
        finally:
            os.close(fd)

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise JournalError("the journal is not open")
        return self._db

    # -- reading what was kept (at start) --------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        row = self._conn().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def set_meta(self, key: str, value: str) -> int:
        with self._write_lock:
            self._conn().execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))
            return self._commit_mark()

    def items(self, table: str | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
        """Every kept item as ``(table, DynamoDB JSON image)``, in key order."""
        query, args = "SELECT tbl, item FROM items", ()
        if table is not None:
            query, args = query + " WHERE tbl = ?", (table,)
        for tbl, item in self._conn().execute(query + " ORDER BY tbl, pk, sk", args):
            yield tbl, json.loads(item)

    def count_items(self) -> int:
        return int(self._conn().execute("SELECT count(*) FROM items").fetchone()[0])

    def stream_records(self, table: str) -> list[tuple[int, dict[str, Any]]]:
        """The kept stream records of ``table`` as ``(n, record)``, in order."""
        rows = self._conn().execute("SELECT n, record FROM stream WHERE tbl = ? ORDER BY n", (table,))
        return [(int(n), json.loads(record)) for n, record in rows]

    def next_stream_number(self, table: str) -> int:
        """The number the table's next stream record gets (one past every number ever used)."""
        row = self._conn().execute("SELECT max(n) FROM stream WHERE tbl = ?", (table,)).fetchone()
        kept = -1 if row[0] is None else int(row[0])
        trimmed = self.get_meta(f"stream-next:{table}")
        return max(kept + 1, int(trimmed) if trimmed is not None else 0)

    def checkpoints(self) -> dict[str, int]:
        return {consumer: int(n) for consumer, n in self._conn().execute("SELECT consumer, n FROM checkpoints")}

    def messages(self) -> list[tuple[str, dict[str, Any]]]:
        """Every kept message as ``(queue name, message)``, in the order they were queued."""
        rows = self._conn().execute("SELECT queue, message FROM messages ORDER BY rowid")
        return [(queue, json.loads(message)) for queue, message in rows]

    # -- writing (serialised by the caller) -------------------------------------------------

    def record(
        self,
        *,
        items: Iterable[tuple[str, str, str, Mapping[str, Any] | None]] = (),
        stream: Iterable[tuple[str, int, float, Mapping[str, Any]]] = (),
        messages: Iterable[tuple[str, str, Mapping[str, Any]]] = (),
        removed_messages: Iterable[str] = (),
        purged_queues: Iterable[str] = (),
    ) -> int:
        """Commit one change; return its mark for :meth:`sync`.

        ``items``: ``(table, pk text, sk text, image or None for a deletion)``;
        ``stream``: ``(table, n, created epoch, record)``; ``messages``: ``(id, queue,
        message)`` (a message id already kept moves to that queue, as a dead letter does);
        ``removed_messages``: ids; ``purged_queues``: names.
        """
        puts, deletes = [], []
        for tbl, pk, sk, image in items:
            if image is None:
                deletes.append((tbl, pk, sk))
            else:
                puts.append((tbl, pk, sk, _dumps(image)))
        records = [(tbl, n, created, _dumps(record)) for tbl, n, created, record in stream]
        queued = [(message_id, queue, _dumps(message)) for message_id, queue, message in messages]
        removed = [(message_id,) for message_id in removed_messages]
        purged = [(queue,) for queue in purged_queues]
        size = sum(len(row[-1]) for row in (*puts, *records, *queued)) + 100 * (len(deletes) + len(removed) + 1)
        with self._write_lock:
            db = self._conn()
            db.execute("BEGIN")
            try:
                if puts:
                    db.executemany("INSERT OR REPLACE INTO items VALUES (?, ?, ?, ?)", puts)
                if deletes:
                    db.executemany("DELETE FROM items WHERE tbl = ? AND pk = ? AND sk = ?", deletes)
                if records:
                    db.executemany("INSERT OR REPLACE INTO stream VALUES (?, ?, ?, ?)", records)
                if queued:
                    # Delete first: a moved message goes to the end of its new queue's order.
                    db.executemany("DELETE FROM messages WHERE id = ?", [(m[0],) for m in queued])
                    db.executemany("INSERT INTO messages VALUES (?, ?, ?)", queued)
                if removed:
                    db.executemany("DELETE FROM messages WHERE id = ?", removed)
                if purged:
                    db.executemany("DELETE FROM messages WHERE queue = ?", purged)
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            self._unfolded += size
            return self._commit_mark()

    def checkpoint(self, consumer: str, table: str, n: int) -> int:
        """Keep a stream consumer's position: every record up to ``n`` is handled."""
        with self._write_lock:
            self._conn().execute("INSERT OR REPLACE INTO checkpoints VALUES (?, ?, ?)", (consumer, table, n))
            return self._commit_mark()

    def trim(self, table: str, through: int) -> int:
        """Forget the table's stream records up to ``through`` (handled by everyone, or expired)."""
        with self._write_lock:
            db = self._conn()
            db.execute("BEGIN")
            try:
                db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (f"stream-next:{table}", str(
                    max(through + 1, int(self.get_meta(f"stream-next:{table}") or 0)))))
                db.execute("DELETE FROM stream WHERE tbl = ? AND n <= ?", (table, through))
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            return self._commit_mark()

    def _commit_mark(self) -> int:
        self._committed += 1
        return self._committed

    # -- durability ------------------------------------------------------------------------

    @property
    def committed(self) -> int:
        """The mark of the last commit (pass it to :meth:`sync`)."""
        return self._committed

    @property
    def durable(self) -> int:
        """The mark of the last commit known to be on disk."""
        return self._durable

    def sync(self, mark: int | None = None) -> None:
        """Return once every commit up to ``mark`` (default: all so far) survives a power cut.

        One ``fsync`` of the log covers every commit made before it started, so writers
        waiting together share it (group commit)."""
        mark = self._committed if mark is None else mark
        if not self._fsync or mark <= self._durable:
            return
        with self._sync_lock:
            if mark <= self._durable:
                return
            target = self._committed  # each commit up to here is already written to the log
            if self._wal_fd is None:
                return  # closed: closing folded every commit into the database, on disk
            flush_to_disk(self._wal_fd)
            self._durable = max(self._durable, target)

    def wal_size(self) -> int:
        """The log file's size (it is reused from its start after a compaction, not shrunk
        below the size limit)."""
        try:
            return os.path.getsize(f"{self.path}-wal")
        except OSError:
            return 0

    @property
    def unfolded_bytes(self) -> int:
        """About how much was committed since the last compaction."""
        return self._unfolded

    def compact(self, *, full: bool = False) -> None:
        """Fold the log into the database (SQLite's checkpoint) on a connection of its own.

        The bulk is copied while writers go on (a passive checkpoint copies what was
        committed when it started); then, with writers held for the moment it takes, the
        little they committed meanwhile, so the log is all folded and the next commit
        starts it over from its beginning (cut back to the size limit). The cost is the
        pages written since the last compaction, never the table. ``full`` (at close)
        also empties the log file."""
        if self._db is None:
            return
        with self._compact_lock:
            if self._compactor is None:
                self._compactor = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
                self._compactor.execute("PRAGMA synchronous=NORMAL")
                self._compactor.execute("PRAGMA fullfsync=ON")
                self._compactor.execute("PRAGMA checkpoint_fullfsync=ON")
            self._compactor.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            with self._write_lock:
                mode = "TRUNCATE" if full else "PASSIVE"
                self._compactor.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
                self._unfolded = 0
