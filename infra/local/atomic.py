"""Make moto's DynamoDB behave like DynamoDB under concurrency.

DynamoDB checks a ConditionExpression and writes the item atomically. moto's backend
has no locking, and its server handles requests on many threads, so two conditional
writes to one item can both pass their check and one update is silently lost. The
local stack and the tests serialise the backend's operations with one lock: the
per-item atomicity DynamoDB guarantees, and scans never see a table mid-change.
"""

from __future__ import annotations

import functools
import threading

_LOCK = threading.RLock()
_OPERATIONS = ("put_item", "update_item", "delete_item", "transact_write_items", "get_item", "query", "scan",
               "execute_statement")


def make_dynamodb_atomic() -> None:
    from moto.dynamodb.models import DynamoDBBackend

    if getattr(DynamoDBBackend, "_leadflow_atomic", False):
        return
    for name in _OPERATIONS:
        original = getattr(DynamoDBBackend, name, None)
        if original is None:
            continue

        @functools.wraps(original)
        def locked(self, *args, _original=original, **kwargs):
            with _LOCK:
                return _original(self, *args, **kwargs)

        setattr(DynamoDBBackend, name, locked)
    DynamoDBBackend._leadflow_atomic = True
