"""`leadflow dlq list|replay`: the handoff's dead letters from a terminal.

The listing and the replay are the API function's own (leadflow/usecases/dead_letters.py,
over leadflow/adapters/sqs.py), which the console's dead-letters page runs too: here
they are only given a client for the queues of the stack the command points at.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Iterable

from leadflow.adapters.sqs import SqsDeadLetterQueue
from leadflow.usecases.dead_letters import DeadLetter, DeadLetters

__all__ = ["DeadLetter", "peek", "replay"]


def peek(sqs: Any, queue_url: str, *, limit: int = 1000, rounds: int | None = None) -> list[DeadLetter]:
    """The dead letters, oldest first, left where they are."""
    return DeadLetters(SqsDeadLetterQueue(queue_url, None, client=sqs), None, None).list(limit=limit, rounds=rounds)


def replay(sqs: Any, ledger: Any, dead_letter_url: str, retry_url: str, *, leads: Any, ids: Iterable[str] = (),
           sink: str | None = None, now: datetime | None = None) -> list[dict[str, Any]]:
    """Re-drive the selected dead letters (all when no ids and no sink are given).
    `leads`: the lead store, read to drop the letters of erased leads."""
    letters = DeadLetters(SqsDeadLetterQueue(dead_letter_url, retry_url, client=sqs), ledger, leads)
    return letters.replay(ids=ids, sink=sink, now=now)
