"""The evidence the rules are judged by: every lead in a table with its event log, and the
outcome on record for it.

`backtest`, `rules diff` and `calibrate` read a table once, in parallel scan segments,
and keep each lead with its events (its anonymous visitor's events included). Nothing
is written. The outcomes are those sales and imports recorded on the leads (won, lost,
customer, rejected with a reason), or those of an outcomes CSV.
"""

from __future__ import annotations

import csv
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from leadflow.domain.events import AppliedEvent, normalise_email
from leadflow.domain.lead import Lead

POSITIVE_STAGES = frozenset({"customer", "evangelist"})
SALES_NO = frozenset({"reject", "disqualify"})


@dataclass(frozen=True)
class Label:
    """What became of a lead: converted or not, and how that is known."""

    converted: bool
    source: str  # won, customer, lost, rejected, disqualified, csv
    reason: str | None = None


def label_of(lead: Lead) -> Label | None:
    """The outcome on record: won or lost (sales or an import said so), a customer stage,
    or a sales reject / disqualification not followed by progress. None: still open."""
    if lead.outcome is not None:
        return Label(lead.outcome.result == "won", lead.outcome.result, lead.outcome.reason)
    if lead.stage in POSITIVE_STAGES:
        return Label(True, "customer")
    for move in reversed(lead.history):
        if move.cause.kind == "actor" and move.cause.action in SALES_NO:
            return Label(False, "rejected" if move.cause.action == "reject" else "disqualified", move.cause.reason)
        if move.to_stage in ("opportunity", "customer", "evangelist"):
            return None  # sales took it on after any reject: open until won or lost
    return None


@dataclass
class History:
    lead: Lead
    events: list[AppliedEvent] = field(default_factory=list)
    label: Label | None = None


def read_outcomes(path: str | Path) -> dict[str, Label]:
    """An outcomes CSV: a `lead_id` or `email` column, and an `outcome` column
    (won/lost, converted/not, 1/0, true/false, yes/no), optionally `reason`.
    Keyed by lead id, or by `email:<address>` for a row without one: lead ids are keyed
    with the deployment's secret, so an address is matched to its lead by the lead's own
    email (`histories`), never turned into an id here. A row it cannot read is an error
    naming the row."""
    yes = {"won", "converted", "1", "true", "yes", "customer"}
    no = {"lost", "not_converted", "not converted", "0", "false", "no", "rejected"}
    out: dict[str, Label] = {}
    with open(path, encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh)
        columns = {c.strip().lower(): c for c in reader.fieldnames or []}
        if "outcome" not in columns or not ({"lead_id", "email"} & set(columns)):
            raise ValueError(f"{path}: an outcomes file needs an `outcome` column and a `lead_id` or `email` column")
        for number, row in enumerate(reader, start=2):
            raw = (row.get(columns["outcome"]) or "").strip().lower()
            if raw not in yes | no:
                raise ValueError(f"{path}:{number}: outcome {raw!r} is not one of won/lost, 1/0, true/false, yes/no")
            lead_id = (row.get(columns["lead_id"]) or "").strip() if "lead_id" in columns else ""
            if not lead_id:
                email = (row.get(columns.get("email", ""), "") or "").strip()
                if not email:
                    raise ValueError(f"{path}:{number}: no lead_id or email")
                lead_id = "email:" + normalise_email(email)
            reason = (row.get(columns["reason"]) or "").strip() or None if "reason" in columns else None
            out[lead_id] = Label(raw in yes, "csv", reason)
    return out


# -- reading a table -----------------------------------------------------------------------


def _plain(item: dict) -> dict:
    from boto3.dynamodb.types import TypeDeserializer

    from leadflow.adapters.dynamodb.store import to_plain

    de = TypeDeserializer()
    return to_plain({k: de.deserialize(v) for k, v in item.items()})


def segments_for(client: Any, table: str) -> int:
    """Scan segments sized to the table as the re-score runs size them, from DescribeTable's
    item count (refreshed by DynamoDB about every six hours)."""
    from leadflow.usecases.rescoring import segments_for as by_count

    try:
        count = int(client.describe_table(TableName=table)["Table"].get("ItemCount", 0))
    except Exception:  # noqa: BLE001 - a count is a sizing hint, never a reason to fail
        count = 0
    return by_count(count)


def scan_items(client: Any, table: str, *, segments: int | None = None,
               progress: Callable[[int], None] | None = None) -> Iterable[dict]:
    """Every item of the table, read in parallel scan segments (each page as it comes)."""
    total = segments or segments_for(client, table)

    def segment(n: int) -> list[dict]:
        kwargs: dict[str, Any] = {"TableName": table, "Segment": n, "TotalSegments": total}
        items: list[dict] = []
        while True:
            resp = client.scan(**kwargs)
            items.extend(resp.get("Items", []))
            if progress:
                progress(len(resp.get("Items", [])))
            if "LastEvaluatedKey" not in resp:
                return items
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]

    with ThreadPoolExecutor(max_workers=min(total, 8)) as pool:
        for items in pool.map(segment, range(total)):
            yield from items


def histories(items: Iterable[dict], outcomes: dict[str, Label] | None = None) -> list[History]:
    """Leads (not visitors or aliases) with their event logs, from a table's items."""
    from leadflow.adapters.dynamodb.store import item_to_lead

    leads: dict[str, Lead] = {}
    events: dict[str, list[AppliedEvent]] = {}
    visitors: dict[str, list[str]] = {}  # lead id -> the ids of the visitors joined to it
    for item in items:
        pk, sk = item["PK"]["S"], item["SK"]["S"]
        if not pk.startswith("LEAD#"):
            continue
        lead_id = pk.split("#", 1)[1]
        kind = item.get("kind", {}).get("S")
        if sk == "LEAD" and kind == "lead":
            leads[lead_id] = item_to_lead({"state": item["state"]["B"], "version": item["version"]["N"]})
        elif sk == "LEAD" and kind == "alias":
            # A visitor's alias names the lead it joined: its events are that lead's, found
            # without deriving the visitor's id (which takes the deployment's key).
            alias = item_to_lead({"state": item["state"]["B"], "version": item["version"]["N"]})
            if alias.merged_into:
                visitors.setdefault(alias.merged_into, []).append(lead_id)
        elif sk.startswith("EVENT#"):
            data = {k: v for k, v in _plain(item).items() if k not in ("PK", "SK", "GSI1PK", "GSI1SK", "kind", "ttl")}
            events.setdefault(lead_id, []).append(AppliedEvent.model_validate(data))
    out = []
    for lead_id in sorted(leads):
        lead = leads[lead_id]
        log = list(events.get(lead_id, []))
        for visitor_id in sorted(visitors.get(lead_id, [])):
            log.extend(events.get(visitor_id, []))
        if outcomes is not None:
            label = outcomes.get(lead_id) or (outcomes.get("email:" + lead.email) if lead.email else None)
        else:
            label = label_of(lead)
        out.append(History(lead, log, label))
    return out

