"""In-memory stand-ins for the ports, with the same conditional-write semantics."""

from __future__ import annotations

import copy
import threading
from datetime import datetime, timedelta

from leadflow.domain.ports import VersionConflict


class MemoryStore:
    def __init__(self):
        self.items = {}
        self.logs = {}
        self.lock = threading.Lock()
        self.writes = 0

    def get(self, lead_id):
        with self.lock:
            lead = self.items.get(lead_id)
            return copy.deepcopy(lead) if lead is not None else None

    def get_many(self, lead_ids):
        return {i: lead for i in lead_ids if (lead := self.get(i)) is not None}

    def put(self, lead, expected_version):
        with self.lock:
            held = self.items.get(lead.lead_id)
            if (held is None) != (expected_version is None) or (held is not None and held.version != expected_version):
                raise VersionConflict(copy.deepcopy(held))
            new = lead.model_copy(update={"version": (expected_version or 0) + 1}, deep=True)
            self.items[lead.lead_id] = new
            self.writes += 1
            return copy.deepcopy(new)

    def erase(self, lead, visitor_ids, *, now):
        from leadflow.domain.handoff import erasure_id
        from leadflow.domain.ports import Tombstone

        with self.lock:
            held = self.items.get(lead.lead_id)
            if held is None or held.version != lead.version:
                raise VersionConflict(copy.deepcopy(held))
            self.tombstones = getattr(self, "tombstones", {})
            self.tombstones[lead.lead_id] = Tombstone(lead.lead_id, now, erasure_id(held.version,
                                                                                    held.updated_at.isoformat()))
            for lead_id in (lead.lead_id, *visitor_ids):
                self.items.pop(lead_id, None)
                self.logs.pop(lead_id, None)
        return 1

    def tombstone(self, lead_id):
        return getattr(self, "tombstones", {}).get(lead_id)

    def erased_at(self, lead_id):
        found = self.tombstone(lead_id)
        return found.erased_at if found else None

    def events(self, lead_id):
        from leadflow.domain.events import AppliedEvent

        return [AppliedEvent.model_validate(r) for r in self.logs.get(lead_id, {}).values()]

    def append_events(self, lead_id, records):
        for r in records:
            self.logs.setdefault(lead_id, {})[r["event_id"]] = r

    def append_logs(self, logs):
        for lead_id, records in logs:
            self.append_events(lead_id, records)

    def purge_events(self, lead_id):
        return len(self.logs.pop(lead_id, {}))

    def needs_index(self, lead_id):
        return False  # every lead held here has its index keys (they are computed on read)

    def index_page(self, index, partition, *, prefix=None, ascending=False, start=None, limit=25):
        """The list indexes as DynamoDB keeps them: each lead's keys, sorted by the index's sort key."""
        from leadflow.domain.listing import INDEXES, index_keys, stage_partition

        pk, sk = INDEXES[index]
        rows = []
        with self.lock:
            for lead in self.items.values():
                if not lead.known or lead.merged_into:
                    continue
                keys = {**index_keys(lead), "email": lead.email, "GSI1PK": stage_partition(lead.stage),
                        "GSI1SK": f"{lead.stage_entered_at.isoformat()}#{lead.lead_id}"}
                if keys.get(pk) == partition and keys[sk].startswith(prefix or ""):
                    rows.append({"PK": f"LEAD#{lead.lead_id}", "SK": "LEAD", pk: partition, sk: keys[sk]})
        rows.sort(key=lambda r: (r[sk], r["PK"]), reverse=not ascending)
        if start:
            after = (start[sk], start["PK"])
            rows = [r for r in rows if ((r[sk], r["PK"]) > after if ascending else (r[sk], r["PK"]) < after)]
        page = rows[:limit]
        more = len(rows) > limit
        return [r["PK"].split("#", 1)[1] for r in page], (page[-1] if more and page else None)

    def scan_leads(self):
        return [copy.deepcopy(v) for v in self.items.values() if v.email and not v.merged_into]

    def count_stage(self, stage, since=None, until=None):
        def inside(lead):
            at = lead.stage_entered_at.isoformat()
            return (since is None or at >= since) and (until is None or at < until)
        return sum(1 for v in self.scan_leads() if v.stage == stage and inside(v))


    def next_turn(self, name):
        with self.lock:
            self.turns = getattr(self, "turns", {})
            n = self.turns.get(name, 0)
            self.turns[name] = n + 1
            return n

    def leads_in_stage(self, stage, entered_before=None):
        return [v for v in self.scan_leads() if v.stage == stage
                and (entered_before is None or v.stage_entered_at.isoformat() < entered_before)]

    def first_touch_seconds(self):
        return [v.first_touch_seconds for v in self.scan_leads() if v.first_touch_seconds is not None]


class MemoryLedger:
    """The delivery ledger's conditional semantics, in memory. `writes` counts write
    calls as DynamoDB bills them: one per claim_all or settle_all, whatever it covers."""

    def __init__(self):
        self.items = {}
        self.lock = threading.Lock()
        self.writes = 0

    def claim(self, lead_id, move_id, sink, *, now, lease_seconds):
        return self.claim_all(lead_id, move_id, [sink], now=now, lease_seconds=lease_seconds)[sink]

    def claim_all(self, lead_id, move_id, sinks, *, now, lease_seconds, first=True):
        from leadflow.domain.ports import Claim

        out = {}
        with self.lock:
            self.writes += 1
            epoch = now.timestamp()
            for sink in sinks:
                key = (lead_id, move_id, sink)
                item = self.items.get(key)
                if item is not None and item["status"] in ("sent", "dead"):
                    out[sink] = Claim(Claim.DONE, item["attempts"], item["status"])
                elif item is not None and item["status"] == "sending" and item["lease_until"] >= epoch:
                    out[sink] = Claim(Claim.BUSY, item["attempts"], "sending")
                else:
                    item = item or {"attempts": 0}
                    item.update(status="sending", lease_until=epoch + lease_seconds, attempts=item["attempts"] + 1)
                    self.items[key] = item
                    out[sink] = Claim(Claim.GRANTED, item["attempts"])
        return out

    def settle(self, lead_id, move_id, sink, *, status, now, detail=None):
        self.settle_all(lead_id, move_id, {sink: (status, detail)}, now=now)

    def settle_all(self, lead_id, move_id, outcomes, *, now):
        with self.lock:
            self.writes += 1
            for sink, (status, detail) in outcomes.items():
                item = self.items.setdefault((lead_id, move_id, sink), {"attempts": 0})
                item.update(status=status, detail=detail)
                item.pop("lease_until", None)

    def revive(self, lead_id, move_id, sink, *, now):
        with self.lock:
            self.writes += 1
            item = self.items.setdefault((lead_id, move_id, sink), {"attempts": 0})
            if item.get("status") == "sent":
                return False
            item.update(status="failed", attempts=0)
            return True

    def forget(self, lead_id, move_id):
        with self.lock:
            self.writes += 1
            for key in [k for k in self.items if k[:2] == (lead_id, move_id)]:
                del self.items[key]

    def deliveries(self, lead_id):
        return [{"move_id": t, "sink": s, **v} for (l, t, s), v in self.items.items() if l == lead_id]


class MemoryOutbox:
    def __init__(self):
        self.retries = []
        self.dead = []

    def retry_later(self, message, delay_seconds):
        self.retries.append((message, delay_seconds))

    def dead_letter(self, message):
        self.dead.append(message)


class StepClock:
    def __init__(self, start: datetime):
        self.t = start

    def __call__(self) -> datetime:
        return self.t

    def advance(self, **kw) -> None:
        self.t += timedelta(**kw)
