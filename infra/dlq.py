"""Dead letters of the handoff: list them, and re-drive them through the retry queue.

A dead letter is a whole stage move for one sink, with the reason it could not be
delivered (`leadflow.dead_letter` messages written by the handoff, or retry
messages SQS moved here after repeated crashes). Replaying one makes its ledger
entry claimable again and puts it back on the retry queue as a first attempt; the
retry function then delivers it with the usual backoff, and the ledger still
refuses a second send of anything already delivered.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable

from leadflow.usecases.handoff import DEAD_TYPE, RETRY_TYPE


@dataclass
class DeadLetter:
    message_id: str
    receipt_handle: str
    body: dict[str, Any]

    @property
    def notice(self) -> dict[str, Any]:
        return self.body.get("notice") or {}

    @property
    def sink(self) -> str:
        return str(self.body.get("sink"))

    def row(self) -> dict[str, Any]:
        """What `dlq list` shows: ids, sink, stage and reason; no emails or names."""
        n = self.notice
        return {
            "message_id": self.message_id,
            "dead_at": self.body.get("dead_at"),
            "sink": self.sink,
            "lead_id": n.get("lead_id"),
            "transition_id": n.get("move_id") or n.get("transition_id"),
            "move": f"{n.get('from_stage') or 'new'}->{n.get('to_stage')}",
            "attempts": self.body.get("attempts", self.body.get("attempt")),
            "reason": self.body.get("reason") or self.body.get("last_error") or "retry message redriven after repeated failures",
        }


def _parse(message: dict[str, Any]) -> DeadLetter | None:
    try:
        body = json.loads(message["Body"])
    except (KeyError, ValueError):
        return None
    if not isinstance(body, dict) or body.get("type") not in (DEAD_TYPE, RETRY_TYPE):
        return None
    return DeadLetter(message["MessageId"], message["ReceiptHandle"], body)


def peek(sqs: Any, queue_url: str, *, limit: int = 1000, rounds: int = 20) -> list[DeadLetter]:
    """Read the queue without taking messages away (visibility 0), deduplicated by id.
    SQS samples servers, so a receive may miss some: read until rounds bring nothing new."""
    seen: dict[str, DeadLetter] = {}
    quiet = 0
    for _ in range(rounds):
        resp = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, VisibilityTimeout=0, WaitTimeSeconds=0)
        fresh = 0
        for message in resp.get("Messages", []):
            if message["MessageId"] in seen:
                continue
            letter = _parse(message) or DeadLetter(message["MessageId"], message["ReceiptHandle"],
                                                   {"type": "unknown", "raw": message.get("Body", "")[:200]})
            seen[message["MessageId"]] = letter
            fresh += 1
        quiet = quiet + 1 if fresh == 0 else 0
        if quiet >= 2 or len(seen) >= limit:
            break
    return sorted(seen.values(), key=lambda d: str(d.body.get("dead_at") or ""))


def replay(sqs: Any, ledger: Any, dead_letter_url: str, retry_url: str, *, ids: Iterable[str] = (),
           sink: str | None = None, now: datetime | None = None) -> list[dict[str, Any]]:
    """Re-drive the selected dead letters (all when no ids and no sink are given)."""
    wanted = set(ids)
    now = now or datetime.now(timezone.utc)
    done = []
    taken: dict[str, dict] = {}
    quiet = 0
    for _ in range(200):
        resp = sqs.receive_message(QueueUrl=dead_letter_url, MaxNumberOfMessages=10, VisibilityTimeout=30, WaitTimeSeconds=0)
        messages = [m for m in resp.get("Messages", []) if m["MessageId"] not in taken]
        if not messages:
            quiet += 1
            if quiet >= 2:
                break
            continue
        quiet = 0
        for message in messages:
            taken[message["MessageId"]] = message
            letter = _parse(message)
            selected = letter is not None and (not wanted or letter.message_id in wanted) and (sink is None or letter.sink == sink)
            if not selected:
                sqs.change_message_visibility(QueueUrl=dead_letter_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0)
                continue
            n = letter.notice
            revived = ledger.revive(n["lead_id"], n.get("move_id") or n.get("transition_id"), letter.sink, now=now)
            if revived:
                body = {"type": RETRY_TYPE, "sink": letter.sink, "attempt": 1, "last_error": letter.row()["reason"],
                        "replayed_at": now.isoformat(), "notice": n}
                sqs.send_message(QueueUrl=retry_url, MessageBody=json.dumps(body, separators=(",", ":")))
            sqs.delete_message(QueueUrl=dead_letter_url, ReceiptHandle=message["ReceiptHandle"])
            done.append({**letter.row(), "replayed": revived,
                         "note": "requeued" if revived else "already delivered; dropped"})
    return done
