"""The ports the service needs. Adapters implement them; unit tests use fakes."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping, Protocol, Sequence

if TYPE_CHECKING:  # annotations only: a port does not build the models it names
    from leadflow.domain.events import AppliedEvent
    from leadflow.domain.handoff import Erasure, Notice, Owner, SinkKind
    from leadflow.domain.lead import Lead


class VersionConflict(Exception):
    """The lead changed since it was read. Carries the current lead (None if it is gone),
    so the caller can retry without another read."""

    def __init__(self, current: Lead | None):
        super().__init__("version conflict")
        self.current = current


class LeadStore(Protocol):
    def get(self, lead_id: str) -> Lead | None: ...

    def get_many(self, lead_ids: Iterable[str]) -> dict[str, Lead]:
        """The leads that exist among `lead_ids`, read consistently (a batch of reads)."""
        ...

    def put(self, lead: Lead, expected_version: int | None) -> Lead:
        """Write the lead if its stored version is `expected_version` (None: must not exist).
        Returns the lead with its new version; raises VersionConflict otherwise."""
        ...

    def erase(self, lead: Lead, visitor_ids: Iterable[str], *, now: datetime) -> int:
        """The lead, its event log, and its visitor aliases `visitor_ids` with their logs,
        leaving a tombstone (the id and `now`, no personal data). Raises VersionConflict
        when the lead changed since it was read (erase what is there, read again)."""
        ...

    def erased_at(self, lead_id: str) -> datetime | None:
        """When the lead with this id was last erased (its tombstone), or None."""
        ...

    def tombstone(self, lead_id: str) -> Tombstone | None: ...

    def events(self, lead_id: str) -> list[AppliedEvent]: ...

    def append_events(self, lead_id: str, records: Iterable[dict]) -> None: ...

    def append_logs(self, logs: Iterable[tuple[str, Iterable[dict]]]) -> None:
        """Several leads' events appended at once, (lead id, events) each: the same items as
        `append_events` for each, in fewer calls."""
        ...

    def purge_events(self, lead_id: str) -> int: ...

    def scan_leads(self) -> Iterator[Lead]: ...

    def count_stage(self, stage: str, since: str | None = None, until: str | None = None) -> int: ...

    def next_turn(self, name: str) -> int:
        """An atomic counter per name, 0 on first call (the routing round-robin)."""
        ...

    def leads_in_stage(self, stage: str, entered_before: str | None = None) -> Iterator[Lead]: ...

    def first_touch_seconds(self) -> list[float]: ...

    def needs_index(self, lead_id: str) -> bool:
        """Whether the lead's stored item lacks the list indexes' keys (written before them):
        the re-score run then writes it once, even with nothing else changed."""
        ...

    def index_page(self, index: str, partition: str, *, prefix: str | None = None, ascending: bool = False,
                   start: dict[str, str] | None = None, limit: int = 25) -> tuple[list[str], dict[str, str] | None]:
        """One page of a list index (domain/listing.py): lead ids in order, and where the next starts."""
        ...


@dataclass
class Tombstone:
    """What an erasure leaves behind: the id, when, which erasure (see
    `domain.handoff.erasure_id`), and the CRMs' own record ids its deletes need."""

    lead_id: str
    erased_at: datetime
    erasure: str
    ids: dict[str, list[str]] = field(default_factory=dict)


class Claim:
    """The answer of a delivery ledger to "may I send this move to this sink now?"."""

    GRANTED = "granted"  # go ahead; `attempts` counts this one
    DONE = "done"  # already sent (or dead-lettered): never send again
    BUSY = "busy"  # another invocation is sending it right now: try later

    def __init__(self, state: str, attempts: int = 0, status: str | None = None):
        self.state = state
        self.attempts = attempts
        self.status = status  # the stored status when DONE or BUSY

    def __repr__(self) -> str:
        return f"Claim({self.state}, attempts={self.attempts}, status={self.status})"


class DeliveryLedger(Protocol):
    """A record per (stage move, sink): what makes each sink get each move once.

    A move's sinks are claimed together and settled together (`claim_all`, `settle_all`),
    each sink keeping its own state, so a retry of one sink claims and settles that sink
    alone."""

    def claim(self, lead_id: str, move_id: str, sink: str, *, now: datetime, lease_seconds: float) -> Claim: ...

    def claim_all(self, lead_id: str, move_id: str, sinks: Sequence[str], *, now: datetime, lease_seconds: float,
                  first: bool = True) -> dict[str, Claim]:
        """One claim per sink, in as few writes as the ledger can. `first`: the move is
        most likely new to these sinks (a stream record) rather than retried."""
        ...

    def settle(self, lead_id: str, move_id: str, sink: str, *, status: str, now: datetime,
               detail: dict | None = None) -> None:
        """status: "sent", "failed" (a retry is scheduled) or "dead" (dead-lettered)."""
        ...

    def settle_all(self, lead_id: str, move_id: str, outcomes: Mapping[str, tuple[str, dict | None]], *,
                   now: datetime) -> None:
        """sink -> (status, detail) for sinks this caller claimed, in one write."""
        ...

    def revive(self, lead_id: str, move_id: str, sink: str, *, now: datetime) -> bool:
        """Make a dead-lettered delivery claimable again (for a replay). False if it was sent."""
        ...

    def forget(self, lead_id: str, move_id: str) -> None:
        """Remove the move's record: its lead was erased while it was being claimed."""
        ...

    def deliveries(self, lead_id: str) -> list[dict]: ...


class Outbox(Protocol):
    """Where deliveries that must be tried again later, and dead letters, go (SQS in AWS)."""

    def retry_later(self, message: dict, delay_seconds: int) -> None: ...

    def dead_letter(self, message: dict) -> None: ...


Receipt = dict[str, Any]  # what a receiver answered that is worth keeping (ids), JSON-safe, no PII


class Sink(Protocol):
    """Where stage moves go (Slack, email, HubSpot, Salesforce, the CRM webhook, EventBridge)."""

    name: str
    kind: SinkKind

    def deliver(self, notice: Notice, *, deadline: float | None = None) -> Receipt:
        """One attempt, over by `deadline` (a `time.monotonic()` instant) at the latest.
        Returns a receipt or raises RetryableError / PermanentError."""
        ...


class Eraser(Protocol):
    """A sink that can also delete an erased person's record (HubSpot, Salesforce)."""

    name: str

    def erase(self, erasure: Erasure, *, deadline: float | None = None) -> Receipt:
        """Ask the receiver to delete the person's record. One attempt, like `deliver`;
        a record that is already gone is a success."""
        ...


class Escalator(Protocol):
    """Tells people that an SQL waits past its follow-up SLA (Slack in production)."""

    def escalate(self, notice: Notice, *, level: int, audience: str, person: Owner | None,
                 waited_minutes: int) -> None:
        """`audience` is "owner" or "manager"; `person` is who to name (None: whoever is
        there). Raises RetryableError / PermanentError."""
        ...


@dataclass
class SalesAction:
    """A sales action taken in a chat tool (a button pressed on an alert)."""

    action: str
    lead_id: str
    move_id: str  # the move the alert was about
    user_id: str  # the chat tool's member id
    user_name: str
    reason: str | None
    reply_to: str | None  # where the outcome goes back (Slack's response_url)


class Replies(Protocol):
    """Answers to whoever pressed a button: the updated alert, or why nothing happened."""

    def decided(self, action: SalesAction, notice: Notice, *, actor: str, at: datetime,
                next_actions: list[str], reject_reasons: list[str]) -> None: ...

    def refused(self, action: SalesAction, text: str) -> None: ...


@dataclass
class LeadChange:
    """A change to a lead item, as the table's stream reports it."""

    lead_id: str
    removed: bool  # the lead was erased
    applied: list[dict]  # the events the write applied (empty for other writes)


@dataclass
class PublishedRules:
    seq: int
    version: str
    text: str | None  # the YAML as published (None when read without it)
    by: str
    at: str
    action: str  # initial, publish, rollback
    previous: int | None = None  # the seq this one replaced
    restores: int | None = None  # for a rollback: the seq it brought back
    announce: bool = False
    changes: list[str] = field(default_factory=list)
    result: dict[str, Any] | None = None  # what its re-score run did

    def entry(self) -> dict[str, Any]:
        return {"seq": self.seq, "version": self.version, "action": self.action, "by": self.by, "at": self.at,
                "previous": self.previous, "restores": self.restores, "announce": self.announce,
                "changes": self.changes, "result": self.result}


class VersionTaken(Exception):
    """Another publish took this sequence number first."""
