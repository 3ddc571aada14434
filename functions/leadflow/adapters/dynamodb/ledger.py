"""The delivery ledger on the leads table: one item per stage move, one map per sink.

Key: PK = LEAD#<lead id> (so an erasure removes it with the lead), SK = SEND#<move id>.
Each sink's state is a top-level attribute of the move's item, `sink_<name>`, holding
`{st, n, lease, at, detail}`: status (sending, sent, failed, dead), attempts, the lease
of a sender (epoch seconds, while sending), when it last changed, and the receipt or
error. Top-level attributes, not one map of sinks, so that writes about different sinks
of one move (the stream's fan-out, a retry of one sink) never overwrite each other.

A sink is called only after a conditional write claims it: absent, failed before, or
claimed by an invocation whose lease ran out (it crashed mid-send). A sent or
dead-lettered sink is never claimed again, so a redelivered stream batch or retry
message cannot send twice. A move's sinks are claimed in one UpdateItem whose condition
holds each sink's own test, and settled in one more: two writes per move when every
sink answers, instead of two per sink. When the claim's condition fails, DynamoDB hands
back the item as it stands (ALL_OLD), and the claim is made again for the sinks that
are still free, without a read; each round leaves out at least one sink, so it ends.
A retry of one sink is a claim and a settle of that sink's attribute alone.

An erasure's deliveries (the CRM deletes) live in the lead's tombstone (SK=ERASED), the
one item of the lead the erasure keeps, claimed only while it names that erasure: a
stale REMOVE record redelivered after a later erasure finds its claims "superseded",
and no claim ever creates a tombstone. A move whose lead was erased while it was being
claimed is forgotten (its item deleted), so no ledger item outlives an erasure.

Moves delivered before this layout (one item per sink, SEND#<move id>#<sink>) are still
listed by `deliveries`, so the SLA watch does not escalate a level twice; a claim does
not consult them.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Mapping, Sequence

from leadflow.adapters.dynamodb.store import DynamoTable
from leadflow.adapters.dynamodb.keys import ERASED_SK, delivery_sk, lead_pk
from leadflow.domain.handoff import is_erasure
from leadflow.domain.ports import Claim

SINK_PREFIX = "sink_"
DONE = ("sent", "dead")


def sink_attribute(sink: str) -> str:
    return SINK_PREFIX + sink


class DynamoDeliveryLedger(DynamoTable):
    def _key(self, lead_id: str, move_id: str) -> dict:
        # An erasure's deliveries (the CRM deletes) are recorded in the tombstone itself:
        # the sweep of the lead's leftovers never removes it, and it holds no personal data.
        return {"PK": {"S": lead_pk(lead_id)}, "SK": {"S": ERASED_SK if is_erasure(move_id) else delivery_sk(move_id)}}

    # -- claims ------------------------------------------------------------------------

    def claim(self, lead_id: str, move_id: str, sink: str, *, now: datetime, lease_seconds: float) -> Claim:
        """One sink, most likely new to the move (an SLA escalation level)."""
        return self.claim_all(lead_id, move_id, [sink], now=now, lease_seconds=lease_seconds)[sink]

    def claim_all(self, lead_id: str, move_id: str, sinks: Sequence[str], *, now: datetime, lease_seconds: float,
                  first: bool = True) -> dict[str, Claim]:
        """Claim every free sink of the move in one conditional UpdateItem.

        `first` picks the write most likely to pass at once: a stream record's sinks are
        new to the ledger (create each sink's state); a retried sink has a state to take
        over (it failed, or its sender's lease ran out)."""
        from botocore.exceptions import ClientError

        epoch = int(now.timestamp())
        out: dict[str, Claim] = {}
        # sink -> True: expected absent (create its state); False: expected claimable (take it over)
        plan = {sink: first for sink in dict.fromkeys(sinks)}
        for _ in range(len(plan) + 2):
            if not plan:
                return out
            try:
                item = self._claim(lead_id, move_id, plan, now=now, epoch=epoch, lease_seconds=lease_seconds)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                    raise
                old = exc.response.get("Item") or {}
                if is_erasure(move_id) and old.get("erasure", {}).get("S") != move_id:
                    # No tombstone, or one of a later erasure: this one is over (a stale record).
                    out.update({sink: Claim(Claim.DONE, 0, "superseded") for sink in plan})
                    return out
                plan = {}
                for sink in dict.fromkeys(sinks):
                    if sink in out:
                        continue
                    state = _state(old.get(sink_attribute(sink)))
                    if state is None:
                        plan[sink] = True
                    elif state["st"] in DONE:
                        out[sink] = Claim(Claim.DONE, state["n"], state["st"])
                    elif state["st"] == "sending" and state["lease"] >= epoch:
                        out[sink] = Claim(Claim.BUSY, state["n"], "sending")
                    else:
                        plan[sink] = False
                continue
            for sink in plan:
                out[sink] = Claim(Claim.GRANTED, (_state(item.get(sink_attribute(sink))) or {"n": 1})["n"])
            return out
        raise RuntimeError(f"delivery ledger: the claim of move {move_id} kept meeting concurrent changes")

    def _claim(self, lead_id: str, move_id: str, plan: dict[str, bool], *, now: datetime, epoch: int,
               lease_seconds: float) -> dict:
        lease = {"N": str(epoch + int(lease_seconds))}
        names: dict[str, str] = {}
        values: dict[str, Any] = {":kind": {"S": "delivery"}}
        sets, conditions = ["kind = :kind"], []
        if is_erasure(move_id):  # claimed on its own tombstone only: never creates an item
            sets = []
            names["#erasure"] = "erasure"
            values = {":erasure": {"S": move_id}}
            conditions.append("#erasure = :erasure")
        for i, (sink, absent) in enumerate(plan.items()):
            a = f"#s{i}"
            names[a] = sink_attribute(sink)
            if absent:
                values[":fresh"] = {"M": {"st": {"S": "sending"}, "n": {"N": "1"}, "lease": lease,
                                          "at": {"S": now.isoformat()}}}
                sets.append(f"{a} = :fresh")
                conditions.append(f"attribute_not_exists({a})")
            else:
                names.update({"#st": "st", "#n": "n", "#lease": "lease", "#at": "at"})
                values.update({":sending": {"S": "sending"}, ":failed": {"S": "failed"}, ":epoch": {"N": str(epoch)},
                               ":lease": lease, ":now": {"S": now.isoformat()}, ":one": {"N": "1"}})
                sets += [f"{a}.#st = :sending", f"{a}.#lease = :lease", f"{a}.#at = :now", f"{a}.#n = {a}.#n + :one"]
                conditions.append(f"({a}.#st = :failed OR ({a}.#st = :sending AND {a}.#lease < :epoch))")
        self._count("UpdateItem")
        resp = self.client.update_item(
            TableName=self.table_name,
            Key=self._key(lead_id, move_id),
            UpdateExpression="SET " + ", ".join(sets),
            ConditionExpression=" AND ".join(conditions),
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
            ReturnValues="ALL_NEW",
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
        return resp.get("Attributes") or {}

    # -- outcomes ----------------------------------------------------------------------

    def settle(self, lead_id: str, move_id: str, sink: str, *, status: str, now: datetime,
               detail: dict | None = None) -> None:
        self.settle_all(lead_id, move_id, {sink: (status, detail)}, now=now)

    def settle_all(self, lead_id: str, move_id: str, outcomes: Mapping[str, tuple[str, dict | None]], *,
                   now: datetime) -> None:
        """Record each claimed sink's outcome in one UpdateItem; other sinks' states are
        left as they are. Attempts were counted by the claim.

        No condition on the lease: an attempt ends at its deadline, seconds before the
        lease (minutes) could pass to another sender. The one condition is that each
        sink's state still exists: a lead erased while its move was being sent leaves no
        record behind."""
        from botocore.exceptions import ClientError

        if not outcomes:
            return
        names = {"#st": "st", "#lease": "lease", "#at": "at", "#d": "detail"}
        values: dict[str, Any] = {":now": {"S": now.isoformat()}}
        sets, removes, conditions = [], [], []
        for i, (sink, (status, detail)) in enumerate(outcomes.items()):
            a = f"#s{i}"
            names[a] = sink_attribute(sink)
            values[f":st{i}"] = {"S": status}
            sets += [f"{a}.#st = :st{i}", f"{a}.#at = :now"]
            removes.append(f"{a}.#lease")
            if detail is None:
                removes.append(f"{a}.#d")  # no detail left over from an earlier attempt
            else:
                values[f":d{i}"] = {"S": json.dumps(detail, separators=(",", ":"), default=str)}
                sets.append(f"{a}.#d = :d{i}")
            conditions.append(f"attribute_exists({a})")
        self._count("UpdateItem")
        try:
            self.client.update_item(
                TableName=self.table_name,
                Key=self._key(lead_id, move_id),
                UpdateExpression="SET " + ", ".join(sets) + " REMOVE " + ", ".join(removes),
                ConditionExpression=" AND ".join(conditions),
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise
            from leadflow.observability import logger

            logger.warning("handoff.settled_after_erasure", extra={"move_id": move_id, "sinks": sorted(outcomes)})

    def revive(self, lead_id: str, move_id: str, sink: str, *, now: datetime) -> bool:
        """False when it was sent meanwhile, or (an erasure) its tombstone is gone or
        belongs to a later erasure."""
        from botocore.exceptions import ClientError

        names = {"#s": sink_attribute(sink), "#st": "st"}
        values: dict[str, Any] = {
            ":failed": {"M": {"st": {"S": "failed"}, "n": {"N": "0"}, "at": {"S": now.isoformat()}}},
            ":sent": {"S": "sent"}}
        update, condition = "SET #s = :failed", "(attribute_not_exists(#s) OR #s.#st <> :sent)"
        if is_erasure(move_id):
            names["#erasure"] = "erasure"
            values[":erasure"] = {"S": move_id}
            condition += " AND #erasure = :erasure"
        else:
            update += ", kind = :kind"
            values[":kind"] = {"S": "delivery"}
        self._count("UpdateItem")
        try:
            self.client.update_item(
                TableName=self.table_name,
                Key=self._key(lead_id, move_id),
                UpdateExpression=update,
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise
            return False
        return True

    def forget(self, lead_id: str, move_id: str) -> None:
        """The move's item goes: its lead was erased, and a claim made at the same time
        may have written it again after the erasure's sweep."""
        self._count("DeleteItem")
        self.client.delete_item(TableName=self.table_name, Key=self._key(lead_id, move_id))

    # -- reading -----------------------------------------------------------------------

    def deliveries(self, lead_id: str) -> list[dict]:
        kwargs: dict[str, Any] = {
            "TableName": self.table_name,
            "KeyConditionExpression": "PK = :pk AND begins_with(SK, :p)",
            "ExpressionAttributeValues": {":pk": {"S": lead_pk(lead_id)}, ":p": {"S": "SEND#"}},
        }
        return [entry for resp in self._pages("query", **kwargs) for it in resp.get("Items", [])
                for entry in delivery_entries(it)]


def _state(value: dict | None) -> dict | None:
    """A sink's stored state as plain values, or None when the sink has none."""
    if not value or "M" not in value:
        return None
    m = value["M"]
    return {"st": m.get("st", {}).get("S"), "n": int(m.get("n", {}).get("N", "0")),
            "lease": int(m.get("lease", {}).get("N", "0")), "at": m.get("at", {}).get("S"),
            "detail": json.loads(m["detail"]["S"]) if "detail" in m else None}


def delivery_entries(item: dict) -> list[dict]:
    """One entry per (move, sink) of a ledger item: {move_id, sink, status, attempts,
    updated_at[, detail]}."""
    parts = item["SK"]["S"].split("#", 2)
    if len(parts) == 3:  # the earlier layout: one item per (move, sink)
        entry = {"move_id": parts[1], "sink": parts[2], "status": item.get("status", {}).get("S"),
                 "attempts": int(item.get("attempts", {}).get("N", "0")),
                 "updated_at": item.get("updated_at", {}).get("S")}
        if "detail" in item:
            entry["detail"] = json.loads(item["detail"]["S"])
        return [entry]
    out = []
    for name, value in item.items():
        state = _state(value) if name.startswith(SINK_PREFIX) else None
        if state is None:
            continue
        entry = {"move_id": parts[1], "sink": name[len(SINK_PREFIX):], "status": state["st"],
                 "attempts": state["n"], "updated_at": state["at"]}
        if state["detail"] is not None:
            entry["detail"] = state["detail"]
        out.append(entry)
    return out
