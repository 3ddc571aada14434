"""Make moto's DynamoDB behave like DynamoDB under concurrency.

DynamoDB checks a ConditionExpression and writes the item atomically. moto's backend
has no locking, and its server handles requests on many threads, so two conditional
writes to one item can both pass their check and one update is silently lost. The
local stack and the tests serialise the backend's operations with one lock: the
per-item atomicity DynamoDB guarantees, and scans never see a table mid-change.
A ``BatchWriteItem`` holds the lock for its whole batch (one change to journal).

An *observer* (:func:`observe`; the local stack's durable store) sees every outermost
operation: ``before(backend, writes, item)`` and ``after(backend, token)`` run under the
lock, around the operation (``after`` also when it raised), and ``settle(mark)``
runs once the lock is released, before the answer goes back: the store journals the
change under the lock and waits for the disk outside it, so writers share a flush.
"""

from __future__ import annotations

import functools
import threading
from typing import Any, Protocol

_LOCK = threading.RLock()
_READS = ("get_item", "query", "scan")
_WRITES = ("put_item", "update_item", "delete_item", "transact_write_items", "execute_statement",
           "execute_transaction", "batch_execute_statement")
_local = threading.local()


class Observer(Protocol):
    def before(self, backend: Any, writes: bool, item: tuple[str, Any] | None = None) -> Any: ...

    def after(self, backend: Any, token: Any) -> Any: ...

    def settle(self, mark: Any) -> None: ...


_observer: Observer | None = None


def lock() -> threading.RLock:
    """The lock every backend operation holds (stream reads and trims take it too)."""
    return _LOCK


def observe(observer: Observer | None) -> None:
    """Let ``observer`` see every operation from now on (None: nobody)."""
    global _observer
    _observer = observer


def run(backend: Any, writes: bool, call: Any, *args: Any, _item: tuple[str, Any] | None = None, **kwargs: Any) -> Any:
    """``call(*args, **kwargs)`` as one atomic, observed operation on ``backend``; ``_item``
    names the one item a read reads, ``(table name, key)``, when it reads just one.

    Nested operations (a transaction's puts, a batch's deletes) belong to the outermost one."""
    if getattr(_local, "depth", 0):
        return call(*args, **kwargs)
    observer = _observer
    mark = None
    with _LOCK:
        _local.depth = 1
        try:
            token = observer.before(backend, writes, _item) if observer is not None else None
            try:
                result = call(*args, **kwargs)
            finally:
                if observer is not None:
                    mark = observer.after(backend, token)
        finally:
            _local.depth = 0
    if observer is not None:
        observer.settle(mark)
    return result


def make_dynamodb_atomic() -> None:
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.responses import DynamoHandler

    if getattr(DynamoDBBackend, "_leadflow_atomic", False):
        return
    for name in (*_READS, *_WRITES):
        original = getattr(DynamoDBBackend, name, None)
        if original is None:
            continue

        @functools.wraps(original)
        def locked(self, *args, _original=original, _writes=name in _WRITES, _get=name == "get_item", **kwargs):
            item = None
            if _get:  # get_item(table_name, keys, ...): a read of one item, which need wait only for it
                table_name = args[0] if args else kwargs.get("table_name")
                keys = args[1] if len(args) > 1 else kwargs.get("keys")
                item = (table_name, keys) if isinstance(table_name, str) and isinstance(keys, dict) else None
            return run(self, _writes, _original, self, *args, _item=item, **kwargs)

        setattr(DynamoDBBackend, name, locked)

    original_batch = DynamoHandler.batch_write_item

    @functools.wraps(original_batch)
    def batch_write_item(self, *args, **kwargs):
        return run(self.dynamodb_backend, True, original_batch, self, *args, **kwargs)

    DynamoHandler.batch_write_item = batch_write_item
    DynamoDBBackend._leadflow_atomic = True
