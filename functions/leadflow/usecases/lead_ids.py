"""Which lead-id derivation a table is read with: decided once per container.

The configured key alone cannot decide it. A table written before keyed ids holds every
lead under the unkeyed hash of its email: reading it with a key would make each returning
lead a new, empty one. So the table records its derivation (adapters.dynamodb.lead_ids),
and this decides from the record and the key:

- no record, no lead in the table: a new deployment; the key is recorded, ids are keyed.
- no record, leads in the table: written before keyed ids; `legacy` is recorded, the
  unkeyed derivation goes on for this table (no lead is split), and every cold start
  warns that its ids can be computed from an address.
- `hmac-sha256`: keyed; the configured key must be the recorded one (its check), else
  nothing is served: a changed key would split every lead just as surely.
"""

from __future__ import annotations

from typing import Callable, Protocol

from leadflow.domain.errors import Misconfigured
from leadflow.domain.lead import LeadIds

KEYED = "hmac-sha256"
LEGACY = "legacy"
LEGACY_WARNING = ("this table's lead ids are unkeyed (it was written before keyed ids): anyone with an address can "
                  "compute its lead id. They stay unkeyed on this table so that no returning lead becomes a new one; "
                  "keyed ids need a new table (see the README, Upgrading: lead ids)")


class SchemeRecord(Protocol):
    def read(self) -> dict[str, str] | None: ...

    def claim(self, record: dict[str, str]) -> dict[str, str]: ...

    def has_leads(self) -> bool: ...


def lead_ids_in_force(key: str | None, table: SchemeRecord, warn: Callable[[str], None]) -> LeadIds:
    keyed = LeadIds(key.encode("utf-8")) if key else None
    record = table.read()
    if record is None:
        if table.has_leads():
            record = table.claim({"scheme": LEGACY})
        elif keyed is None:
            raise Misconfigured("LEADFLOW_LEAD_ID_KEY is not set: lead ids are derived with a per-deployment "
                                "secret (the template creates one; `leadflow serve` keeps one in its data directory)")
        else:
            record = table.claim({"scheme": KEYED, "check": keyed.check() or ""})
    scheme = record.get("scheme")
    if scheme == LEGACY:
        warn(LEGACY_WARNING)
        return LeadIds(None)
    if scheme == KEYED:
        if keyed is None:
            raise Misconfigured("LEADFLOW_LEAD_ID_KEY is not set, and this table's lead ids were derived with a key")
        if record.get("check") != keyed.check():
            raise Misconfigured("LEADFLOW_LEAD_ID_KEY is not the key this table's lead ids were derived with: "
                                "restore the key (a new one would make every returning lead a new one)")
        return keyed
    raise Misconfigured(f"this table records an unknown lead-id scheme {scheme!r}")
