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

The console's dead-letters page (the API function) and `leadflow dlq` both run this.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Protocol

from leadflow.domain.handoff import is_erasure
from leadflow.observability import mask_email
from leadflow.usecases.handoff import DEAD_TYPE, RETRY_TYPE, retry_message

MAX_REASON = 500  # characters of a receiver's answer shown beside a letter
HIDE_SECONDS = 30  # how long a replay holds a letter it took (it deletes it well before)
LOOK_SECONDS = 20  # how long a listing holds the letters it read (it lets them go at its end)


class DeadLetterQueue(Protocol):
    """The queue (adapters/sqs.py): messages in SQS's shape, `MessageId`, `ReceiptHandle`, `Body`."""

    def receive(self, *, hide_seconds: int) -> list[dict]: ...

    def release(self, receipt_handles: list[str]) -> None: ...

    def delete(self, receipt_handle: str) -> None: ...

    def requeue(self, message: dict) -> None: ...


@dataclass
class DeadLetter:
    message_id: str
    receipt_handle: str
    body: dict[str, Any]

    @property
    def notice(self) -> dict[str, Any]:
        """The whole move, in letters written before they carried ids only."""
        notice = self.body.get("notice")
        return notice if isinstance(notice, dict) else {}

    @property
    def sink(self) -> str:
        return str(self.body.get("sink"))

    @property
    def lead_id(self) -> str | None:
        return self.body.get("lead_id") or self.notice.get("lead_id")

    @property
    def move_id(self) -> str | None:
        return self.body.get("move_id") or self.notice.get("move_id") or self.notice.get("transition_id")

    @property
    def readable(self) -> bool:
        """A letter of ours (not some other message sent to the queue)."""
        return self.body.get("type") in (DEAD_TYPE, RETRY_TYPE)

    def row(self) -> dict[str, Any]:
        """What a listing shows: ids, sink and reason; nothing of the person (a receiver's
        answer quoted in the reason gets any address in it masked)."""
        reason = (self.body.get("reason") or self.body.get("last_error")
                  or ("retry message redriven after repeated failures" if self.readable else "not a leadflow dead letter"))
        return {
            "message_id": self.message_id,
            "dead_at": self.body.get("dead_at"),
            "sink": self.sink,
            "lead_id": self.lead_id,
            "transition_id": self.move_id,
            "erasure": is_erasure(self.move_id),
            "attempts": self.body.get("attempts", self.body.get("attempt")),
            "reason": mask_email(str(reason)[:MAX_REASON]),
        }


def parse(message: dict[str, Any]) -> DeadLetter | None:
    """The letter a queued message holds, or None when it is not one of ours."""
    try:
        body = json.loads(message["Body"])
    except (KeyError, TypeError, ValueError):
        return None
    if not isinstance(body, dict) or body.get("type") not in (DEAD_TYPE, RETRY_TYPE):
        return None
    return DeadLetter(message["MessageId"], message["ReceiptHandle"], body)


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class DeadLetters:
    """`leads`: the lead store, read to drop the letters of erased leads; `ledger`: the
    delivery ledger a replay revives the entry in."""

    def __init__(self, queue: DeadLetterQueue, ledger: Any, leads: Any, clock: Callable[[], datetime] = _utcnow):
        self.queue = queue
        self.ledger = ledger
        self.leads = leads
        self.clock = clock

    def list(self, *, limit: int = 1000, rounds: int | None = None) -> list[DeadLetter]:
        """The letters, oldest first, taken away from nothing. Each receive hides what it
        read for LOOK_SECONDS, so that the next one brings others (a queue answers its oldest
        first, and SQS samples its servers: read until two rounds bring nothing new), and
        the listing lets them all go at its end: visible again at once."""
        seen: dict[str, DeadLetter] = {}
        quiet = 0
        try:
            for _ in range(rounds or limit // 10 + 3):  # ten a receive, and two that bring none
                fresh = 0
                for message in self.queue.receive(hide_seconds=LOOK_SECONDS):
                    if message["MessageId"] in seen:
                        continue
                    letter = parse(message) or DeadLetter(message["MessageId"], message["ReceiptHandle"],
                                                          {"type": "unknown", "raw": str(message.get("Body", ""))[:200]})
                    seen[message["MessageId"]] = letter
                    fresh += 1
                quiet = quiet + 1 if fresh == 0 else 0
                if quiet >= 2 or len(seen) >= limit:
                    break
        finally:
            if seen:
                self.queue.release([letter.receipt_handle for letter in seen.values()])
        return sorted(seen.values(), key=lambda d: str(d.body.get("dead_at") or ""))[:limit]

    def erased(self, letter: DeadLetter) -> bool:
        """Whether the letter's lead was erased since: gone, or back as a new lead without
        this move. An erasure's own letter is judged by the ledger (its tombstone)."""
        if is_erasure(letter.move_id):
            return False
        lead = self.leads.get(letter.lead_id) if letter.lead_id else None
        return lead is None or all(m.move_id != letter.move_id for m in lead.history)

    def replay(self, *, ids: Iterable[str] = (), sink: str | None = None, limit: int | None = None,
               now: datetime | None = None) -> list[dict[str, Any]]:
        """Re-drive the selected dead letters (all when no ids and no sink are given), at
        most `limit` of them (a page's request has seconds, not minutes). Each comes back
        as its listing row with `replayed` and a `note` saying what became of it."""
        wanted = set(ids)
        now = now or self.clock()
        done: list[dict[str, Any]] = []
        taken: set[str] = set()
        # Letters received but not for this replay stay hidden until it ends, so that each
        # receive brings new ones (a queue answers its oldest first); then they are let go.
        held: dict[str, str] = {}
        quiet = 0
        try:
            for _ in range(200):
                if limit is not None and len(done) >= limit:
                    break
                fresh = 0
                for message in self.queue.receive(hide_seconds=HIDE_SECONDS):
                    message_id = message["MessageId"]
                    if message_id in taken:  # held for longer than HIDE_SECONDS: its newest handle
                        if message_id in held:
                            held[message_id] = message["ReceiptHandle"]
                        continue
                    taken.add(message_id)
                    fresh += 1
                    letter = parse(message)
                    if (letter is None or not letter.lead_id or not letter.move_id
                            or (wanted and letter.message_id not in wanted) or (sink is not None and letter.sink != sink)
                            or (limit is not None and len(done) >= limit)):
                        held[message_id] = message["ReceiptHandle"]
                        continue
                    done.append(self._replay_one(letter, now))
                quiet = quiet + 1 if fresh == 0 else 0
                if quiet >= 2 or (wanted and wanted <= taken):
                    break
        finally:
            if held:
                self.queue.release(list(held.values()))
        return done

    def _replay_one(self, letter: DeadLetter, now: datetime) -> dict[str, Any]:
        assert letter.lead_id and letter.move_id
        if self.erased(letter):
            revived, note = False, "lead erased; dropped"
        else:
            revived = self.ledger.revive(letter.lead_id, letter.move_id, letter.sink, now=now)
            note = "requeued" if revived else ("erasure superseded or already done; dropped"
                                               if is_erasure(letter.move_id) else "already delivered; dropped")
        row = letter.row()
        if revived:
            self.queue.requeue({**retry_message(letter.lead_id, letter.move_id, letter.sink, 1, row["reason"]),
                                "replayed_at": now.isoformat()})
        self.queue.delete(letter.receipt_handle)
        return {**row, "replayed": revived, "note": note}
