"""Published rules versions and re-score runs, on the leads table.

- `PK=RULES, SK=HEAD`: the version in force (`seq`, `version`). One GetItem a minute per
  warm function is what "pick up within a minute" costs.
- `PK=RULES, SK=V#<seq>`: each published version, never changed after its write except
  for its run's summary: the YAML as published (zlib), who, when, what it changed.
  A publish first creates its version item (the next free `seq`, conditionally: two
  publishers cannot take the same one), then moves HEAD to it (conditionally: never
  back to an older one). A crash in between leaves a version that was never in force.
- `PK=RUN#<name>, SK=RUN`: a re-score run (`rules`: the one a publish starts;
  `rescore`: the scheduled one), its segments' cursors and counts, held by one
  invocation at a time through a lease.
"""

from __future__ import annotations

import json
import zlib
from typing import Any

from leadflow.adapters.dynamodb.store import DynamoTable
from leadflow.domain.ports import PublishedRules, VersionTaken

RULES_PK = "RULES"
HEAD_SK = "HEAD"


def version_sk(seq: int) -> str:
    return f"V#{seq:08d}"


class DynamoRulesStore(DynamoTable):
    def _key(self, pk: str, sk: str) -> dict:
        return {"PK": {"S": pk}, "SK": {"S": sk}}

    def head(self) -> tuple[int, str] | None:
        """(seq, version) in force, or None when nothing was ever published."""
        self._count("GetItem")
        item = self.client.get_item(TableName=self.table_name, Key=self._key(RULES_PK, HEAD_SK),
                                    ConsistentRead=True).get("Item")
        if not item:
            return None
        return int(item["seq"]["N"]), item["version"]["S"]

    def get(self, seq: int, *, text: bool = True) -> PublishedRules | None:
        self._count("GetItem")
        kwargs: dict[str, Any] = {"TableName": self.table_name, "Key": self._key(RULES_PK, version_sk(seq)),
                                  "ConsistentRead": True}
        item = self.client.get_item(**kwargs).get("Item")
        return _published(item, text=text) if item else None

    def history(self, limit: int = 50, *, text: bool = False) -> list[PublishedRules]:
        """The newest `limit` versions, newest first."""
        kwargs: dict[str, Any] = {
            "TableName": self.table_name,
            "KeyConditionExpression": "PK = :pk AND begins_with(SK, :v)",
            "ExpressionAttributeValues": {":pk": {"S": RULES_PK}, ":v": {"S": "V#"}},
            "ScanIndexForward": False,
            "Limit": limit,
            "ConsistentRead": True,
        }
        self._count("Query")
        return [_published(it, text=text) for it in self.client.query(**kwargs).get("Items", [])]

    def add(self, entry: PublishedRules) -> None:
        """Create version `entry.seq`; VersionTaken if it exists."""
        from botocore.exceptions import ClientError

        item: dict[str, Any] = {
            "PK": {"S": RULES_PK}, "SK": {"S": version_sk(entry.seq)}, "kind": {"S": "rules"},
            "seq": {"N": str(entry.seq)}, "version": {"S": entry.version},
            "source": {"B": zlib.compress((entry.text or "").encode("utf-8"), 6)},
            "by": {"S": entry.by}, "at": {"S": entry.at}, "action": {"S": entry.action},
            "announce": {"BOOL": entry.announce},
            "changes": {"S": json.dumps(entry.changes, ensure_ascii=False)},
        }
        if entry.previous is not None:
            item["previous"] = {"N": str(entry.previous)}
        if entry.restores is not None:
            item["restores"] = {"N": str(entry.restores)}
        self._count("PutItem")
        try:
            self.client.put_item(TableName=self.table_name, Item=item, ConditionExpression="attribute_not_exists(PK)")
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                raise VersionTaken(entry.seq) from None
            raise

    def move_head(self, seq: int, version: str) -> bool:
        """Put version `seq` in force unless a newer one already is."""
        from botocore.exceptions import ClientError

        self._count("UpdateItem")
        try:
            self.client.update_item(
                TableName=self.table_name, Key=self._key(RULES_PK, HEAD_SK),
                UpdateExpression="SET seq = :s, version = :v, kind = :k",
                ConditionExpression="attribute_not_exists(seq) OR seq < :s",
                ExpressionAttributeValues={":s": {"N": str(seq)}, ":v": {"S": version}, ":k": {"S": "rules"}},
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def record_result(self, seq: int, result: dict[str, Any]) -> None:
        self._count("UpdateItem")
        self.client.update_item(
            TableName=self.table_name, Key=self._key(RULES_PK, version_sk(seq)),
            UpdateExpression="SET #r = :r", ExpressionAttributeNames={"#r": "result"},
            ExpressionAttributeValues={":r": {"S": json.dumps(result, ensure_ascii=False, default=str)}},
            ConditionExpression="attribute_exists(PK)",
        )

    # -- re-score runs ---------------------------------------------------------------------

    def load_run(self, name: str) -> dict[str, Any] | None:
        self._count("GetItem")
        item = self.client.get_item(TableName=self.table_name, Key=self._key(f"RUN#{name}", "RUN"),
                                    ConsistentRead=True).get("Item")
        return json.loads(item["state"]["S"]) if item else None

    def save_run(self, name: str, state: dict[str, Any], *, expect_token: str | None, token: str) -> bool:
        """Write the run's state if its stored token is `expect_token` (None: no run, or
        a finished one): whoever holds the run is the only writer. False when another
        invocation took it over (its lease ran out) or a newer run replaced it."""
        from botocore.exceptions import ClientError

        kwargs: dict[str, Any] = {
            "TableName": self.table_name,
            "Item": {"PK": {"S": f"RUN#{name}"}, "SK": {"S": "RUN"}, "kind": {"S": "run"},
                     "token": {"S": token}, "state": {"S": json.dumps(state, default=str)}},
        }
        if expect_token is None:
            kwargs["ConditionExpression"] = "attribute_not_exists(PK)"
        else:
            kwargs["ConditionExpression"] = "#t = :t"
            kwargs["ExpressionAttributeNames"] = {"#t": "token"}
            kwargs["ExpressionAttributeValues"] = {":t": {"S": expect_token}}
        self._count("PutItem")
        try:
            self.client.put_item(**kwargs)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def run_token(self, name: str) -> str | None:
        self._count("GetItem")
        item = self.client.get_item(TableName=self.table_name, Key=self._key(f"RUN#{name}", "RUN"),
                                    ConsistentRead=True, ProjectionExpression="#t",
                                    ExpressionAttributeNames={"#t": "token"}).get("Item")
        return item["token"]["S"] if item else None


def _published(item: dict, *, text: bool) -> PublishedRules:
    source = item.get("source", {}).get("B")
    if hasattr(source, "value"):
        source = source.value
    return PublishedRules(
        seq=int(item["seq"]["N"]),
        version=item["version"]["S"],
        text=zlib.decompress(source).decode("utf-8") if text and source is not None else None,
        by=item["by"]["S"],
        at=item["at"]["S"],
        action=item["action"]["S"],
        previous=int(item["previous"]["N"]) if "previous" in item else None,
        restores=int(item["restores"]["N"]) if "restores" in item else None,
        announce=bool(item.get("announce", {}).get("BOOL", False)),
        changes=json.loads(item["changes"]["S"]) if "changes" in item else [],
        result=json.loads(item["result"]["S"]) if "result" in item else None,
    )
