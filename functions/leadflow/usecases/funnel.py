"""The funnel from history: kept from the table's stream, read in bounded items, rebuilt
from the leads when it must be.

`FunnelKeeper.record` takes a stream batch's lead changes. A change that leaves the
lead's fact as it was (most event writes: a score, a signal) costs nothing. Otherwise
the lead's marker says what it was counted as, and one transaction counts it as it is
now: a batch delivered again finds the marker already there and changes no figure.

A rebuild fills the next generation from every lead while the stream keeps counting
into both, then puts it in force and drops the old one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Iterable, Iterator, Protocol

from leadflow.domain.funnel import ALL, Fact, ItemKey, StaleCount, delta, fact_of, period_bounds, report
from leadflow.domain.lead import Lead

logger = logging.getLogger("leadflow")

ATTEMPTS = 20  # a lead whose marker keeps changing under us is left to the next delivery
MAX_ITEMS = 100  # a transaction's items (DynamoDB's limit)


class FunnelStore(Protocol):
    def head(self) -> dict[str, int]: ...
    def set_head(self, generation: int, building: int | None, expected: dict[str, int]) -> bool: ...
    def counted(self, generation: int, lead_ids: Iterable[str]) -> dict[str, Fact]: ...
    def count(self, generation: int, leads: list[tuple[str, Fact | None, Fact | None]],
              adds: dict[ItemKey, dict[str, int]]) -> None: ...
    def rows(self, generation: int, grain: str, cut: str, lo: str | None, hi: str | None
             ) -> Iterator[tuple[str, str, dict[str, int]]]: ...
    def generation_keys(self, generation: int) -> Iterator[dict[str, Any]]: ...
    def delete(self, keys: list[dict[str, Any]]) -> int: ...


@dataclass
class Change:
    """A lead item's change as the stream gives it: the images before and after (None:
    not there), already read as leads."""

    lead_id: str
    old: Lead | None
    new: Lead | None


@dataclass
class Counted:
    leads: int = 0  # leads whose counting was needed
    written: int = 0  # transactions that changed the sums
    unchanged: int = 0  # changes that left the lead's figures as they were
    stale: int = 0  # records older than what was counted
    conflicts: int = 0  # markers changed under us (read again)
    failed: list[str] = field(default_factory=list)


@dataclass
class _Due:
    """A lead to count: its fact now (None: not counted any more), and the lead an erasure
    removed (whose incarnation its marker must match)."""

    lead_id: str
    now: Fact | None
    removed: Lead | None = None


def _adds(due: _Due, was: Fact | None, result: Counted) -> dict[ItemKey, dict[str, int]] | None:
    """What counting `due` over the marker `was` adds to the sums, or None when there is
    nothing to write: an older state than the one counted, or the same figures (the marker
    then keeps its version)."""
    if not _newer(due.now, due.removed, was):
        result.stale += 1
        return None
    adds = delta(was, due.now)
    if not adds and was is not None and due.now is not None:
        return None
    return adds


def _newer(now: Fact | None, removed: Lead | None, was: Fact | None) -> bool:
    """Whether `now` (or the removal of `removed`) is a later state of the lead than the one counted."""
    if now is None:
        if was is None or removed is None:
            return False
        return int(removed.created_at.timestamp() * 1000) == was.incarnation
    if was is None:
        return True
    return now.incarnation > was.incarnation or (now.incarnation == was.incarnation and now.version > was.version)


class FunnelKeeper:
    def __init__(self, store: FunnelStore):
        self.store = store

    def record(self, changes: Iterable[Change]) -> Counted:
        """Count a batch's lead changes (in stream order: the last per lead wins)."""
        latest: dict[str, _Due] = {}
        moved: set[str] = set()
        result = Counted()
        for change in changes:
            before, after = fact_of(change.old), fact_of(change.new)
            if (before is None) != (after is None) or (after is not None and not after.same_figures(before)):
                moved.add(change.lead_id)
            latest[change.lead_id] = _Due(change.lead_id, after, change.old if change.new is None else None)
        result.unchanged = len(latest) - len(moved)
        if not moved:
            return result
        head = self.store.head()
        for generation in [head["generation"], *([head["building"]] if "building" in head else [])]:
            self._count(generation, [latest[lead_id] for lead_id in sorted(moved)], result)
        result.leads = len(moved)
        return result

    def _count(self, generation: int, dues: list[_Due], result: Counted) -> None:
        """Count the leads in as few transactions as fit (markers and summed deltas, at
        most 100 items each); a group a concurrent count got to first is counted again
        lead by lead, each from its marker read again."""
        markers = self.store.counted(generation, [due.lead_id for due in dues])
        group: list[tuple[_Due, Fact | None]] = []
        sums: dict[ItemKey, dict[str, int]] = {}

        def flush() -> None:
            if not group:
                return
            try:
                self.store.count(generation, [(due.lead_id, was, due.now) for due, was in group],
                                 {k: v for k, v in sums.items() if v})
                result.written += len(group)
            except StaleCount:
                result.conflicts += 1
                for due, _ in group:
                    self._count_one(generation, due, result)
            group.clear()
            sums.clear()

        for due in dues:
            was = markers.get(due.lead_id)
            adds = _adds(due, was, result)
            if adds is None:
                continue
            if len(group) + 1 + len(set(sums) | set(adds)) > MAX_ITEMS:
                flush()
            group.append((due, was))
            for key, counters in adds.items():
                into = sums.setdefault(key, {})
                for name, count in counters.items():
                    into[name] = into.get(name, 0) + count
                    if not into[name]:
                        del into[name]
        flush()

    def _count_one(self, generation: int, due: _Due, result: Counted) -> None:
        for _ in range(ATTEMPTS):
            was = self.store.counted(generation, [due.lead_id]).get(due.lead_id)
            adds = _adds(due, was, result)
            if adds is None:
                return
            try:
                self.store.count(generation, [(due.lead_id, was, due.now)], adds)
                result.written += 1
                return
            except StaleCount:
                result.conflicts += 1
        result.failed.append(due.lead_id)
        logger.warning("funnel.lead_unsettled", extra={"lead_id": due.lead_id})

    # ------------------------------------------------------------- reading

    def report(self, *, by: str | None, grain: str, since: date | None, until: date | None) -> dict[str, Any]:
        generation = self.store.head()["generation"]
        lo, hi = period_bounds(grain, since, until)
        rows = self.store.rows(generation, grain, by or ALL, lo, hi)
        answer = report(rows, by=by, grain=grain, since=since, until=until)
        answer["generation"] = generation
        return answer

    # ------------------------------------------------------------- rebuilding

    def rebuild(self, leads: Iterable[Lead], *, progress: Any = None) -> dict[str, int]:
        """Count every lead again into a new generation, from the leads as stored (their
        histories), while the stream goes on counting changes into both; then put the new
        generation in force and delete the old one. Raises if another rebuild holds the head."""
        head = self.store.head()
        if "building" in head:
            # A rebuild that stopped half-way: its generation is refilled from the start.
            target = head["building"]
        else:
            target = head["generation"] + 1
            if not self.store.set_head(head["generation"], target, head):
                raise RuntimeError("the funnel's head moved: another rebuild started")
            head = {**head, "building": target}
        result = Counted()
        batch: list[_Due] = []
        seen = 0
        for lead in leads:
            batch.append(_Due(lead.lead_id, fact_of(lead)))
            seen += 1
            if len(batch) == 100:
                self._count(target, batch, result)
                batch = []
                if progress:
                    progress(seen)
        if batch:
            self._count(target, batch, result)
        if progress:
            progress(seen)
        old = head["generation"]
        if not self.store.set_head(target, None, head):
            raise RuntimeError("the funnel's head moved during the rebuild")
        dropped = self.store.delete(list(self.store.generation_keys(old)))
        return {"leads": seen, "counted": result.written, "generation": target, "dropped_items": dropped,
                "failed": len(result.failed)}
