"""The delivery ledger on the leads table: one item per (stage move, sink).

Key: PK = LEAD#<lead id> (so an erasure removes it with the lead), SK =
SEND#<move id>#<sink>. A sink is called only after a conditional write
claims the item: absent, failed before, or claimed by an invocation whose lease ran
out (it crashed mid-send). A sent or dead-lettered item is never claimed again, so a
redelivered stream batch or retry message cannot send twice. Two writes per
delivery (claim, settle); moves are rare next to events, so this is off the hot path.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from leadflow.adapters.dynamodb.store import DynamoTable
from leadflow.adapters.dynamodb.keys import lead_pk, send_sk
from leadflow.domain.ports import Claim


class DynamoDeliveryLedger(DynamoTable):
    def _key(self, lead_id: str, move_id: str, sink: str) -> dict:
        return {"PK": {"S": lead_pk(lead_id)}, "SK": {"S": send_sk(move_id, sink)}}

    def claim(self, lead_id: str, move_id: str, sink: str, *, now: datetime, lease_seconds: float) -> Claim:
        from botocore.exceptions import ClientError

        epoch = int(now.timestamp())
        self._count("UpdateItem")
        try:
            resp = self.client.update_item(
                TableName=self.table_name,
                Key=self._key(lead_id, move_id, sink),
                UpdateExpression="SET #st = :sending, lease_until = :lease, updated_at = :now, kind = :kind ADD attempts :one",
                ConditionExpression="attribute_not_exists(PK) OR #st = :failed OR (#st = :sending AND lease_until < :epoch)",
                ExpressionAttributeNames={"#st": "status"},
                ExpressionAttributeValues={
                    ":sending": {"S": "sending"},
                    ":failed": {"S": "failed"},
                    ":lease": {"N": str(epoch + int(lease_seconds))},
                    ":epoch": {"N": str(epoch)},
                    ":now": {"S": now.isoformat()},
                    ":kind": {"S": "delivery"},
                    ":one": {"N": "1"},
                },
                ReturnValues="UPDATED_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise
            old = exc.response.get("Item") or {}
            status = old.get("status", {}).get("S")
            attempts = int(old.get("attempts", {}).get("N", "0"))
            if status in ("sent", "dead"):
                return Claim(Claim.DONE, attempts, status)
            return Claim(Claim.BUSY, attempts, status)
        return Claim(Claim.GRANTED, int(resp["Attributes"]["attempts"]["N"]))

    def settle(self, lead_id: str, move_id: str, sink: str, *, status: str, now: datetime,
               detail: dict | None = None) -> None:
        names = {"#st": "status"}
        values: dict[str, Any] = {":st": {"S": status}, ":now": {"S": now.isoformat()}}
        update = "SET #st = :st, updated_at = :now REMOVE lease_until"
        if detail:
            update = "SET #st = :st, updated_at = :now, detail = :d REMOVE lease_until"
            values[":d"] = {"S": json.dumps(detail, separators=(",", ":"), default=str)}
        self._count("UpdateItem")
        self.client.update_item(
            TableName=self.table_name,
            Key=self._key(lead_id, move_id, sink),
            UpdateExpression=update,
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
        )

    def revive(self, lead_id: str, move_id: str, sink: str, *, now: datetime) -> bool:
        from botocore.exceptions import ClientError

        self._count("UpdateItem")
        try:
            self.client.update_item(
                TableName=self.table_name,
                Key=self._key(lead_id, move_id, sink),
                UpdateExpression="SET #st = :failed, updated_at = :now, attempts = :zero",
                ConditionExpression="attribute_not_exists(PK) OR #st <> :sent",
                ExpressionAttributeNames={"#st": "status"},
                ExpressionAttributeValues={":failed": {"S": "failed"}, ":sent": {"S": "sent"},
                                           ":now": {"S": now.isoformat()}, ":zero": {"N": "0"}},
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise
            return False
        return True

    def deliveries(self, lead_id: str) -> list[dict]:
        kwargs: dict[str, Any] = {
            "TableName": self.table_name,
            "KeyConditionExpression": "PK = :pk AND begins_with(SK, :p)",
            "ExpressionAttributeValues": {":pk": {"S": lead_pk(lead_id)}, ":p": {"S": "SEND#"}},
        }
        out = []
        while True:
            self._count("Query")
            resp = self.client.query(**kwargs)
            for it in resp.get("Items", []):
                _, move_id, sink = it["SK"]["S"].split("#", 2)
                entry = {"move_id": move_id, "sink": sink, "status": it.get("status", {}).get("S"),
                         "attempts": int(it.get("attempts", {}).get("N", "0")), "updated_at": it.get("updated_at", {}).get("S")}
                if "detail" in it:
                    entry["detail"] = json.loads(it["detail"]["S"])
                out.append(entry)
            if "LastEvaluatedKey" not in resp:
                return out
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]
