"""The ports the service needs. Adapters implement them; unit tests use fakes."""

from __future__ import annotations

from datetime import datetime
from typing import Iterable, Iterator, Protocol

from leadflow.domain.events import AppliedEvent
from leadflow.domain.lead import Lead


class VersionConflict(Exception):
    """The lead changed since it was read. Carries the current lead (None if it is gone),
    so the caller can retry without another read."""

    def __init__(self, current: Lead | None):
        super().__init__("version conflict")
        self.current = current


class LeadStore(Protocol):
    def get(self, lead_id: str) -> Lead | None: ...

    def put(self, lead: Lead, expected_version: int | None) -> Lead:
        """Write the lead if its stored version is `expected_version` (None: must not exist).
        Returns the lead with its new version; raises VersionConflict otherwise."""
        ...

    def erase(self, lead: Lead) -> int: ...

    def events(self, lead_id: str) -> list[AppliedEvent]: ...

    def append_events(self, lead_id: str, records: Iterable[dict]) -> None: ...

    def purge_events(self, lead_id: str) -> int: ...

    def scan_leads(self) -> Iterator[Lead]: ...

    def count_stage(self, stage: str, since: str | None = None, until: str | None = None) -> int: ...


class Clock(Protocol):
    def now(self) -> datetime: ...
