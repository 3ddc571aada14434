"""The funnel's items in the table: the sums, and what each lead was counted as.

- `FUNNEL` / `HEAD`: the generation in force (and the one a rebuild is filling).
- `FUNNEL#<g>#<grain>#<cut>` / `<period>#<value>`: one item of sums per cohort period
  and value of a cut, each counter a top-level number (`n`, `r3`, `t2_1440`, `j:<reason>`).
  A funnel read is one Query of a cut's partition between two periods: it reads as many
  items as there are periods and values, whatever the number of leads.
- `FUNNEL#<g>#LEAD#<lead_id>` / `FACT`: what the lead was last counted as (its fact,
  version and incarnation). Kept under its own key so that an erasure, which deletes the
  lead's partition, leaves it for the stream's REMOVE to take the lead out of the sums.

Counting is one TransactWriteItems for a group of leads: their markers, each conditional
on the marker read, and an ADD of their summed deltas to every item whose counters
change (a batch's leads mostly share their cohorts and cuts: a few items for many
leads). Either all of it happens or none, so a stream batch delivered twice (or two
consumers racing) changes no figure.
"""

from __future__ import annotations

import json
from typing import Any, Iterable, Iterator, Mapping

from leadflow.adapters.dynamodb.store import DynamoTable
from leadflow.domain.funnel import Fact, ItemKey, StaleCount

HEAD_KEY = {"PK": {"S": "FUNNEL"}, "SK": {"S": "HEAD"}}
FACT_SK = "FACT"
_KEYS = ("PK", "SK")


def cut_pk(generation: int, grain: str, cut: str) -> str:
    return f"FUNNEL#{generation}#{grain}#{cut}"


def fact_pk(generation: int, lead_id: str) -> str:
    return f"FUNNEL#{generation}#LEAD#{lead_id}"


class DynamoFunnelStore(DynamoTable):

    def head(self) -> dict[str, int]:
        """The generation in force (1 until a rebuild) and, while one runs, the one being built."""
        self._count("GetItem")
        item = self.client.get_item(TableName=self.table_name, Key=HEAD_KEY, ConsistentRead=True).get("Item") or {}
        head = {"generation": int(item["generation"]["N"]) if "generation" in item else 1}
        if "building" in item:
            head["building"] = int(item["building"]["N"])
        return head

    def set_head(self, generation: int, building: int | None, expected: Mapping[str, int]) -> bool:
        """Move the head, conditionally on the head read (False: someone else moved it)."""
        from botocore.exceptions import ClientError

        item: dict[str, Any] = {**HEAD_KEY, "generation": {"N": str(generation)}}
        if building is not None:
            item["building"] = {"N": str(building)}
        values: dict[str, Any] = {":g": {"N": str(expected["generation"])}}
        condition = "(attribute_not_exists(generation) OR generation = :g)"
        if "building" in expected:
            condition += " AND building = :b"
            values[":b"] = {"N": str(expected["building"])}
        else:
            condition += " AND attribute_not_exists(building)"
        self._count("PutItem")
        try:
            self.client.put_item(TableName=self.table_name, Item=item, ConditionExpression=condition,
                                 ExpressionAttributeValues=values)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def counted(self, generation: int, lead_ids: Iterable[str]) -> dict[str, Fact]:
        """What each lead was last counted as in a generation (absent: not counted)."""
        keys = [{"PK": {"S": fact_pk(generation, i)}, "SK": {"S": FACT_SK}} for i in dict.fromkeys(lead_ids)]
        found: dict[str, Fact] = {}
        for item in self._batch_get(keys):
            lead_id = item["PK"]["S"].split("#LEAD#", 1)[1]
            found[lead_id] = Fact.from_json(lead_id, json.loads(item["f"]["S"]))
        return found

    def count(self, generation: int, leads: list[tuple[str, Fact | None, Fact | None]],
              adds: Mapping[ItemKey, Mapping[str, int]]) -> None:
        """Count each lead as `now` instead of `was` (either None), adding `adds` (their
        deltas summed) to the sums: one transaction, conditional on every marker still
        being `was` (StaleCount otherwise: nothing written). At most 100 items in all."""
        from botocore.exceptions import ClientError

        writes = [self._marker(generation, lead_id, was, now) for lead_id, was, now in leads]
        for (grain, cut, period, value), counters in adds.items():
            names = {f"#a{n}": name for n, name in enumerate(counters)}
            numbers = {f":a{n}": {"N": str(count)} for n, count in enumerate(counters.values())}
            writes.append({"Update": {
                "TableName": self.table_name,
                "Key": {"PK": {"S": cut_pk(generation, grain, cut)}, "SK": {"S": f"{period}#{value}"}},
                "UpdateExpression": "ADD " + ", ".join(f"#a{n} :a{n}" for n in range(len(counters))),
                "ExpressionAttributeNames": names, "ExpressionAttributeValues": numbers}})
        self._count("TransactWriteItems")
        try:
            self.client.transact_write_items(TransactItems=writes)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            reasons = exc.response.get("CancellationReasons") or []
            if error.get("Code") == "TransactionCanceledException" \
                    and any(r.get("Code") == "ConditionalCheckFailed" for r in reasons[:len(leads)]):
                raise StaleCount([lead_id for lead_id, _, _ in leads]) from None
            raise

    def _marker(self, generation: int, lead_id: str, was: Fact | None, now: Fact | None) -> dict[str, Any]:
        key = {"PK": {"S": fact_pk(generation, lead_id)}, "SK": {"S": FACT_SK}}
        values: dict[str, Any] = {}
        if was is None:
            condition = "attribute_not_exists(PK)"
        else:
            condition = "v = :v AND i = :i"
            values = {":v": {"N": str(was.version)}, ":i": {"N": str(was.incarnation)}}
        op: dict[str, Any] = {"TableName": self.table_name, "ConditionExpression": condition}
        if values:
            op["ExpressionAttributeValues"] = values
        if now is None:
            return {"Delete": {**op, "Key": key}}
        item = {**key, "f": {"S": json.dumps(now.to_json(), separators=(",", ":"))},
                "v": {"N": str(now.version)}, "i": {"N": str(now.incarnation)}}
        return {"Put": {**op, "Item": item}}

    def rows(self, generation: int, grain: str, cut: str, lo: str | None, hi: str | None
             ) -> Iterator[tuple[str, str, dict[str, int]]]:
        """The sums of a cut between two periods (inclusive; None: unbounded), as
        (period, value, counters)."""
        values: dict[str, Any] = {":pk": {"S": cut_pk(generation, grain, cut)}}
        condition = "PK = :pk"
        if lo and hi:
            condition += " AND SK BETWEEN :lo AND :hi"
            values.update({":lo": {"S": lo + "#"}, ":hi": {"S": hi + "#\uffff"}})
        elif lo:
            condition += " AND SK >= :lo"
            values[":lo"] = {"S": lo + "#"}
        elif hi:
            condition += " AND SK <= :hi"
            values[":hi"] = {"S": hi + "#\uffff"}
        for resp in self._pages("query", TableName=self.table_name, KeyConditionExpression=condition,
                                ExpressionAttributeValues=values):
            for item in resp.get("Items", []):
                name, _, value = item["SK"]["S"].partition("#")
                yield name, value, {k: int(v["N"]) for k, v in item.items() if k not in _KEYS and "N" in v}

    def generation_keys(self, generation: int) -> Iterator[dict[str, Any]]:
        """Every key of a generation's items (a Scan: only a finished rebuild drops one)."""
        for resp in self._pages("scan", TableName=self.table_name, ProjectionExpression="PK, SK",
                                FilterExpression="begins_with(PK, :p)",
                                ExpressionAttributeValues={":p": {"S": f"FUNNEL#{generation}#"}}):
            yield from resp.get("Items", [])

    def delete(self, keys: list[dict[str, Any]]) -> int:
        self._batch_write([{"DeleteRequest": {"Key": k}} for k in keys])
        return len(keys)
