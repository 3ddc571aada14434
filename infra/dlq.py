"""Dead letters of the handoff: list them, and re-drive them through the retry queue.

A dead letter names one delivery (a stage move, or an erasure's CRM delete) for one
sink by its ids, with the reason it could not be delivered (`leadflow.dead_letter`
messages written by the handoff, or retry messages SQS moved here after repeated
crashes). It holds nothing of the person: the retry reads the move from the lead.
Replaying one makes its ledger entry claimable again and puts it back on the retry
queue as a first attempt; the retry function then delivers it with the usual backoff,
and the ledger still refuses a second send of anything already delivered. A dead
letter whose lead was erased since is dropped, never re-sent (letters written before
they carried ids only hold the whole move: replay drops those too, whatever they hold).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable

from leadflow.domain.handoff import is_erasure
from leadflow.usecases.handoff import DEAD_TYPE, RETRY_TYPE, retry_message


@dataclass
class DeadLetter:
    message_id: str
    receipt_handle: str
    body: dict[str, Any]

    @property
    def notice(self) -> dict[str, Any]:
        """The whole move, in letters written before they carried ids only."""
        return self.body.get("notice") or {}

    @property
    def sink(self) -> str:
        return str(self.body.get("sink"))

    @property
    def lead_id(self) -> str | None:
        return self.body.get("lead_id") or self.notice.get("lead_id")

    @property
    def move_id(self) -> str | None:
        return self.body.get("move_id") or self.notice.get("move_id") or self.notice.get("transition_id")

    def row(self) -> dict[str, Any]:
        """What `dlq list` shows: ids, sink and reason; nothing of the person."""
        return {
            "message_id": self.message_id,
            "dead_at": self.body.get("dead_at"),
            "sink": self.sink,
            "lead_id": self.lead_id,
            "transition_id": self.move_id,
            "erasure": is_erasure(self.move_id),
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


def erased(leads: Any, letter: DeadLetter) -> bool:
    """Whether the letter's lead was erased since: gone, or back as a new lead without
    this move. An erasure's own letter is judged by the ledger (its tombstone)."""
    if is_erasure(letter.move_id):
        return False
    lead = leads.get(letter.lead_id) if letter.lead_id else None
    return lead is None or all(m.move_id != letter.move_id for m in lead.history)


def replay(sqs: Any, ledger: Any, dead_letter_url: str, retry_url: str, *, leads: Any, ids: Iterable[str] = (),
           sink: str | None = None, now: datetime | None = None) -> list[dict[str, Any]]:
    """Re-drive the selected dead letters (all when no ids and no sink are given).
    `leads`: the lead store, read to drop the letters of erased leads."""
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
            if not letter.lead_id or not letter.move_id:
                sqs.change_message_visibility(QueueUrl=dead_letter_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0)
                continue
            if erased(leads, letter):
                revived, note = False, "lead erased; dropped"
            else:
                revived = ledger.revive(letter.lead_id, letter.move_id, letter.sink, now=now)
                note = "requeued" if revived else ("erasure superseded or already done; dropped"
                                                   if is_erasure(letter.move_id) else "already delivered; dropped")
            if revived:
                body = {**retry_message(letter.lead_id, letter.move_id, letter.sink, 1, letter.row()["reason"]),
                        "replayed_at": now.isoformat()}
                sqs.send_message(QueueUrl=retry_url, MessageBody=json.dumps(body, separators=(",", ":")))
            sqs.delete_message(QueueUrl=dead_letter_url, ReceiptHandle=message["ReceiptHandle"])
            done.append({**letter.row(), "replayed": revived, "note": note})
    return done
