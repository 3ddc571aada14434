"""The table's record of how its lead ids are derived: one item, written once.

A lead id is the key of every item of a lead (`LEAD#<id>`), so a table can only be read
with the derivation its ids were written with. The record says which: `hmac-sha256` with
the key's check (an HMAC of a fixed text: it tells keys apart and reveals none), or
`legacy` (the unkeyed hash of tables written before keyed ids).
"""

from __future__ import annotations

from typing import Any

SCHEME_PK = "META#lead-ids"
SCHEME_SK = "META"
_FIELDS = ("scheme", "check")


class DynamoLeadIdScheme:
    def __init__(self, table_name: str, client: Any):
        self.table_name = table_name
        self.client = client

    def _key(self) -> dict:
        return {"PK": {"S": SCHEME_PK}, "SK": {"S": SCHEME_SK}}

    def read(self) -> dict[str, str] | None:
        item = self.client.get_item(TableName=self.table_name, Key=self._key(), ConsistentRead=True).get("Item")
        if not item:
            return None
        return {name: item[name]["S"] for name in _FIELDS if name in item}

    def claim(self, record: dict[str, str]) -> dict[str, str]:
        """Write the record unless one is there; the record in force either way (two cold
        starts on a new table race, and both end with the winner's record)."""
        try:
            self.client.put_item(
                TableName=self.table_name,
                Item={**self._key(), "kind": {"S": "meta"}, **{k: {"S": v} for k, v in record.items()}},
                ConditionExpression="attribute_not_exists(PK)",
            )
            return dict(record)
        except self.client.exceptions.ConditionalCheckFailedException:
            found = self.read()
            if found is None:  # deleted between the two calls: try again
                return self.claim(record)
            return found

    def has_leads(self) -> bool:
        """Whether any lead, visitor or alias is in the table: asked once, when the table
        has no record yet (a table written before the record existed, or a new one)."""
        kwargs: dict[str, Any] = {
            "TableName": self.table_name,
            "FilterExpression": "begins_with(PK, :lead) AND SK = :sk",
            "ExpressionAttributeValues": {":lead": {"S": "LEAD#"}, ":sk": {"S": "LEAD"}},
            "ProjectionExpression": "PK",
        }
        while True:
            resp = self.client.scan(**kwargs)
            if resp.get("Items"):
                return True
            if "LastEvaluatedKey" not in resp:
                return False
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]
