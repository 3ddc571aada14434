"""Published rules versions and re-score runs, on the leads table.

- `PK=RULES, SK=HEAD`: the version in force (`seq`, `version`). One GetItem a minute per
  warm function is what "pick up within a minute" costs.
- `PK=RULES, SK=V#<seq>`: each published version, never changed after its write except
  for its run's summary: the YAML as published (zlib), who, when, what it changed.
  A publish first creates its version item (the next free `seq`, conditionally: two
  publishers cannot take the same one), then moves HEAD to it (conditionally: never
  back to an older one). A crash in between leaves a version that was never in force.
- `PK=RUN#<name>, SK=RUN` and `SK=SEG#<run id>#<n>`: a re-score run (`rules`: the one a
  publish starts; `rescore`: the hourly one) and each of its scan segments' cursor and
  counts, worked by whichever invocation holds the segment's lease.
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
        if not self._conditional(self.client.put_item, TableName=self.table_name, Item=item,
                                 ConditionExpression="attribute_not_exists(PK)"):
            raise VersionTaken(entry.seq)

    def move_head(self, seq: int, version: str) -> bool:
        """Put version `seq` in force unless a newer one already is."""
        self._count("UpdateItem")
        return self._conditional(
            self.client.update_item, TableName=self.table_name, Key=self._key(RULES_PK, HEAD_SK),
            UpdateExpression="SET seq = :s, version = :v, kind = :k",
            ConditionExpression="attribute_not_exists(seq) OR seq < :s",
            ExpressionAttributeValues={":s": {"N": str(seq)}, ":v": {"S": version}, ":k": {"S": "rules"}})

    def record_result(self, seq: int, result: dict[str, Any]) -> None:
        self._count("UpdateItem")
        self.client.update_item(
            TableName=self.table_name, Key=self._key(RULES_PK, version_sk(seq)),
            UpdateExpression="SET #r = :r", ExpressionAttributeNames={"#r": "result"},
            ExpressionAttributeValues={":r": {"S": json.dumps(result, ensure_ascii=False, default=str)}},
            ConditionExpression="attribute_exists(PK)",
        )

    # -- re-score runs ---------------------------------------------------------------------
    # A run is a header (`RUN#<name>`/`RUN`: its id, rules, status, summary) and one item
    # per scan segment (`RUN#<name>`/`SEG#<run id>#<n>`: cursor, counts, done, and the
    # lease of the invocation working it). Invocations claim free segments one by one, so
    # several work one run side by side, each on its own segments.

    def _conditional(self, call: Any, **kwargs: Any) -> bool:
        from botocore.exceptions import ClientError

        try:
            call(**kwargs)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def load_run(self, name: str) -> dict[str, Any] | None:
        self._count("GetItem")
        item = self.client.get_item(TableName=self.table_name, Key=self._key(f"RUN#{name}", "RUN"),
                                    ConsistentRead=True).get("Item")
        return json.loads(item["state"]["S"]) if item else None

    def _header(self, name: str, state: dict[str, Any]) -> dict[str, Any]:
        return {"PK": {"S": f"RUN#{name}"}, "SK": {"S": "RUN"}, "kind": {"S": "run"}, "run_id": {"S": state["id"]},
                "status": {"S": state["status"]}, "summary": {"S": state.get("summary") or ""},
                "state": {"S": json.dumps(state, default=str)}}

    def begin_run(self, name: str, state: dict[str, Any], *, replacing: str | None) -> bool:
        """Write a new run's header: when there is none, the one there is finished, or it
        is `replacing` (the id of the run a newer publish replaces)."""
        values: dict[str, Any] = {":done": {"S": "done"}}
        condition = "attribute_not_exists(PK) OR #st = :done"
        if replacing is not None:
            condition += " OR run_id = :old"
            values[":old"] = {"S": replacing}
        self._count("PutItem")
        return self._conditional(self.client.put_item, TableName=self.table_name, Item=self._header(name, state),
                                 ConditionExpression=condition, ExpressionAttributeNames={"#st": "status"},
                                 ExpressionAttributeValues=values)

    def update_run(self, name: str, state: dict[str, Any], *, expect_status: str, expect_id: str,
                   expect_summary: str | None = None) -> bool:
        """Rewrite the header of run `expect_id` if its status (and summary state, when
        given) are still as expected."""
        condition = "run_id = :id AND #st = :st"
        values = {":id": {"S": expect_id}, ":st": {"S": expect_status}}
        if expect_summary is not None:
            condition += " AND summary = :sum"
            values[":sum"] = {"S": expect_summary}
        self._count("PutItem")
        return self._conditional(self.client.put_item, TableName=self.table_name, Item=self._header(name, state),
                                 ConditionExpression=condition, ExpressionAttributeNames={"#st": "status"},
                                 ExpressionAttributeValues=values)

    def _seg_key(self, name: str, run_id: str, n: int) -> dict:
        return self._key(f"RUN#{name}", f"SEG#{run_id}#{n:03d}")

    def add_segments(self, name: str, run_id: str, numbers: list[int]) -> None:
        self._batch_write([{"PutRequest": {"Item": {
            **self._seg_key(name, run_id, n), "kind": {"S": "run_segment"}, "seg": {"N": str(n)},
            "done": {"BOOL": False}, "lease_until": {"N": "0"}, "counts": {"S": "{}"}}}} for n in numbers])

    def segments(self, name: str, run_id: str) -> list[dict[str, Any]]:
        kwargs: dict[str, Any] = {
            "TableName": self.table_name, "ConsistentRead": True,
            "KeyConditionExpression": "PK = :pk AND begins_with(SK, :p)",
            "ExpressionAttributeValues": {":pk": {"S": f"RUN#{name}"}, ":p": {"S": f"SEG#{run_id}#"}},
        }
        return [_segment(it) for resp in self._pages("query", **kwargs) for it in resp.get("Items", [])]

    def claim_segment(self, name: str, run_id: str, n: int, *, owner: str, now: float,
                      lease_until: float) -> dict[str, Any] | None:
        """Take segment `n` if it is not done and nobody's lease on it is live."""
        from botocore.exceptions import ClientError

        self._count("UpdateItem")
        try:
            resp = self.client.update_item(
                TableName=self.table_name, Key=self._seg_key(name, run_id, n),
                UpdateExpression="SET #o = :me, lease_until = :until",
                ConditionExpression="attribute_exists(PK) AND done = :f AND lease_until < :now",
                ExpressionAttributeNames={"#o": "owner"},
                ExpressionAttributeValues={":me": {"S": owner}, ":until": {"N": f"{lease_until:.3f}"},
                                           ":f": {"BOOL": False}, ":now": {"N": f"{now:.3f}"}},
                ReturnValues="ALL_NEW")
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return None
            raise
        return _segment(resp["Attributes"])

    def checkpoint(self, name: str, run_id: str, n: int, *, owner: str, cursor: Any, counts: dict[str, Any],
                   done: bool, lease_until: float) -> bool:
        """Record where segment `n` stands, if `owner` still holds it."""
        values: dict[str, Any] = {":me": {"S": owner}, ":c": {"S": json.dumps(counts)}, ":d": {"BOOL": done},
                                  ":until": {"N": f"{lease_until:.3f}"}}
        update = "SET counts = :c, done = :d, lease_until = :until"
        if cursor is not None:
            update += ", #cur = :cur"
            values[":cur"] = {"S": json.dumps(cursor)}
        self._count("UpdateItem")
        return self._conditional(
            self.client.update_item, TableName=self.table_name, Key=self._seg_key(name, run_id, n),
            UpdateExpression=update, ConditionExpression="#o = :me",
            ExpressionAttributeNames={"#o": "owner", **({"#cur": "cursor"} if cursor is not None else {})},
            ExpressionAttributeValues=values)


def _segment(item: dict) -> dict[str, Any]:
    return {"n": int(item["seg"]["N"]), "done": item.get("done", {}).get("BOOL", False),
            "lease_until": float(item.get("lease_until", {}).get("N", "0")),
            "owner": item.get("owner", {}).get("S"),
            "cursor": json.loads(item["cursor"]["S"]) if "cursor" in item else None,
            "counts": json.loads(item.get("counts", {}).get("S", "{}"))}


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
