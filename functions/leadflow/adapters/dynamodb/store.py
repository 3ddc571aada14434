"""DynamoDB adapter: the lead store on one table.

One lead = one item (PK=LEAD#<id>, SK=LEAD). Each event is one conditional PutItem on
that item: new state, the event's dedupe key and any stage move together, guarded by
the version read (optimistic locking). The event log (SK=EVENT#…) is appended from the
table's stream. No transactions: they cost twice the write units and make moto crawl.
"""

from __future__ import annotations

import json
import zlib
from datetime import datetime
from decimal import Decimal
from functools import cached_property
from typing import Any, Iterable, Iterator

from leadflow.adapters.dynamodb.keys import ERASED_SK, LEAD_SK, counter_pk, event_sk, lead_pk, stage_gsi_pk, stage_gsi_sk
from leadflow.domain.events import AppliedEvent
from leadflow.domain.lead import Lead
from leadflow.domain.listing import INDEX_ATTRIBUTES, INDEXES, index_keys
from leadflow.domain.ports import LeadChange, Tombstone, VersionConflict

def to_plain(value: Any) -> Any:
    """DynamoDB numbers arrive as Decimal; give the models ints and floats."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    return value


def _to_dynamo(data: dict) -> dict:
    return json.loads(json.dumps(data), parse_float=Decimal)


def lead_to_item(lead: Lead) -> dict:
    """Top-level attributes for what is keyed, indexed or worth reading in the console;
    the rest of the lead (signals, history, explanation, dedupe keys) as one zlib-
    compressed JSON document in a Binary attribute. Write units are billed per KB of
    item, and a lead's state is repetitive (rule names, keys), so compression cuts the
    bill about threefold; a single opaque value also spares the local stack's moto from
    walking thousands of nested values on every call."""
    item: dict[str, Any] = {
        "PK": lead_pk(lead.lead_id),
        "SK": LEAD_SK,
        "kind": "alias" if lead.merged_into else ("lead" if lead.known else "visitor"),
        "lead_id": lead.lead_id,
        "version": lead.version,
        "stage": lead.stage,
        "score": Decimal(str(lead.score)),
        "fit_grade": lead.fit_grade,
        "engagement_score": Decimal(str(lead.engagement_score)),
        "disqualified": lead.disqualified,
        "updated_at": lead.updated_at.isoformat(),
        "state": zlib.compress(lead.model_dump_json(exclude={"applied", "version", "moves"}).encode(), 6),
    }
    if lead.email:
        item["email"] = lead.email
    if lead.first_touch_seconds is not None:
        item["first_touch_s"] = Decimal(str(round(lead.first_touch_seconds, 3)))
    if lead.merged_into:
        item["merged_into"] = lead.merged_into
    if lead.applied:
        item["applied"] = json.dumps(lead.applied, separators=(",", ":"))
    if lead.moves:
        # The outbox: the stage moves this write made. Only writes carrying it invoke
        # the handoff (the stream's filter tests for this attribute).
        item["moves"] = json.dumps(lead.moves, separators=(",", ":"))
    if lead.known and not lead.merged_into:
        item["GSI1PK"] = stage_gsi_pk(lead.stage)
        item["GSI1SK"] = stage_gsi_sk(lead.stage_entered_at.isoformat(), lead.lead_id)
        item.update(index_keys(lead))  # the lead lists' indexes (domain/listing.py)
    return item


def item_to_lead(item: dict) -> Lead:
    """From an item read with boto3 (Binary) or a stream image as Lambda delivers it,
    where Binary values stay base64 text (Powertools does not decode them)."""
    state = item["state"]
    if hasattr(state, "value"):
        state = state.value
    elif isinstance(state, str):
        import base64

        state = base64.b64decode(state)
    data = json.loads(zlib.decompress(state))
    data["version"] = int(item["version"])
    return Lead.model_validate(data)


def applied_events(image: dict) -> list[dict]:
    """The events a lead write applied, from a stream image (already deserialised)."""
    raw = image.get("applied")
    return json.loads(raw) if raw else []


def lead_change(event_name: str, keys: dict[str, Any], new_image: dict[str, Any] | None) -> LeadChange | None:
    """A stream record of the table as a change to a lead (None for any other item)."""
    pk = str(keys.get("PK", ""))
    if not pk.startswith("LEAD#") or keys.get("SK") != LEAD_SK:
        return None
    return LeadChange(lead_id=pk.split("#", 1)[1], removed=event_name == "REMOVE",
                      applied=applied_events(new_image or {}))


_META = ("PK", "SK", "GSI1PK", "GSI1SK", *INDEX_ATTRIBUTES, "kind", "ttl")
# Receipt fields that are a CRM's own id of the person's record (HubSpot's contact, the
# Salesforce Lead): kept in the tombstone for the CRM deletes, nothing else of a receipt.
RECORD_ID_KEYS = ("contact_id", "salesforce_id")


class DynamoTable:
    """What every adapter on the table shares: a lazily created client (injectable in
    tests) and a count of calls per operation (the bill, which the benchmarks read)."""

    def __init__(self, table_name: str, client: Any = None):
        self.table_name = table_name
        self._client = client
        self.calls: dict[str, int] = {}

    @cached_property
    def client(self):
        if self._client is None:
            import boto3  # lazily: clients must be created after the endpoint is known

            self._client = boto3.client("dynamodb")
        return self._client

    def _count(self, op: str) -> None:
        self.calls[op] = self.calls.get(op, 0) + 1

    def _pages(self, operation: str, **kwargs: Any) -> Iterator[dict]:
        """Every page of a Query or a Scan (`operation`: "query" or "scan"), each call
        counted, each page resumed from the last one's key."""
        call = getattr(self.client, operation)
        while True:
            self._count(operation.capitalize())
            resp = call(**kwargs)
            yield resp
            if "LastEvaluatedKey" not in resp:
                return
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]

    def _batch_get(self, keys: list[dict]) -> Iterator[dict]:
        """The items of these keys that exist: BatchGetItem, 100 keys a call, strongly
        consistent, re-asking for whatever DynamoDB left unprocessed."""
        for start in range(0, len(keys), 100):
            request: dict[str, Any] = {self.table_name: {"Keys": keys[start:start + 100], "ConsistentRead": True}}
            while request:
                self._count("BatchGetItem")
                resp = self.client.batch_get_item(RequestItems=request)
                yield from resp.get("Responses", {}).get(self.table_name, [])
                request = resp.get("UnprocessedKeys") or {}

    def _batch_write(self, writes: list[dict]) -> None:
        """BatchWriteItem in chunks of 25, re-sending whatever DynamoDB left unprocessed."""
        for i in range(0, len(writes), 25):
            requests = {self.table_name: writes[i:i + 25]}
            while requests:
                self._count("BatchWriteItem")
                resp = self.client.batch_write_item(RequestItems=requests)
                requests = resp.get("UnprocessedItems") or {}


class DynamoLeadStore(DynamoTable):

    @cached_property
    def _ser(self):
        from boto3.dynamodb.types import TypeSerializer

        return TypeSerializer()

    @cached_property
    def _de(self):
        from boto3.dynamodb.types import TypeDeserializer

        return TypeDeserializer()

    def _item(self, data: dict) -> dict:
        return {k: self._ser.serialize(v) for k, v in data.items()}

    def _plain(self, item: dict) -> dict:
        return {k: self._de.deserialize(v) for k, v in item.items()}

    def get(self, lead_id: str) -> Lead | None:
        self._count("GetItem")
        resp = self.client.get_item(TableName=self.table_name, Key=self._key(lead_id), ConsistentRead=True)
        item = resp.get("Item")
        return item_to_lead(self._plain(item)) if item else None

    def get_many(self, lead_ids: Iterable[str]) -> dict[str, Lead]:
        """BatchGetItem, 100 keys a call, strongly consistent, re-asking for whatever
        DynamoDB left unprocessed."""
        found: dict[str, Lead] = {}
        for item in self._batch_get([self._key(i) for i in dict.fromkeys(lead_ids)]):
            lead = item_to_lead(self._plain(item))
            found[lead.lead_id] = lead
        return found

    def _key(self, lead_id: str) -> dict:
        return {"PK": {"S": lead_pk(lead_id)}, "SK": {"S": LEAD_SK}}

    def put(self, lead: Lead, expected_version: int | None) -> Lead:
        from botocore.exceptions import ClientError

        new = lead.model_copy(update={"version": (expected_version or 0) + 1})
        kwargs: dict[str, Any] = {
            "TableName": self.table_name,
            "Item": self._item(lead_to_item(new)),
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
        if expected_version is None:
            kwargs["ConditionExpression"] = "attribute_not_exists(PK)"
        else:
            kwargs["ConditionExpression"] = "version = :v"
            kwargs["ExpressionAttributeValues"] = {":v": {"N": str(expected_version)}}
        self._count("PutItem")
        try:
            self.client.put_item(**kwargs)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise
            old = exc.response.get("Item")
            raise VersionConflict(item_to_lead(self._plain(old)) if old else None) from None
        self._unindexed.discard(lead.lead_id)
        return new

    def _query_pk(self, lead_id: str, prefix: str | None = None, keys_only: bool = False) -> Iterator[dict]:
        kwargs: dict[str, Any] = {
            "TableName": self.table_name,
            "KeyConditionExpression": "PK = :pk" + (" AND begins_with(SK, :p)" if prefix else ""),
            "ExpressionAttributeValues": {":pk": {"S": lead_pk(lead_id)}, **({":p": {"S": prefix}} if prefix else {})},
        }
        if keys_only:
            kwargs["ProjectionExpression"] = "PK, SK"
        for resp in self._pages("query", **kwargs):
            yield from resp.get("Items", [])

    def _delete_keys(self, keys: list[dict]) -> int:
        self._batch_write([{"DeleteRequest": {"Key": k}} for k in keys])
        return len(keys)

    def erase(self, lead: Lead, visitor_ids: Iterable[str], *, now: datetime) -> int:
        """The lead, its event log, its delivery ledger and its visitor aliases (`visitor_ids`:
        the ids of its anonymous ids, derived by the caller with the deployment's key),
        leaving a tombstone. In this order, so that nothing can undo the erasure:

        1. the tombstone (PK=LEAD#<id>, SK=ERASED): when, which erasure (the lead item's
           version and last write time, as the stream's REMOVE record will carry them),
           and the CRMs' own record ids from the moves' receipts, which the CRM deletes
           use once the address is gone. Written first, so an event arriving meanwhile is
           already refused and the REMOVE record always finds it;
        2. the lead item, conditional on the version read: the REMOVE record is the
           erasure the tombstone names (a write in between: VersionConflict, read again);
        3. everything else under the id, and the aliases with their logs.
        Log items and ledger states the stream consumers write after this are swept when
        the event log meets the REMOVE record."""
        from botocore.exceptions import ClientError

        from leadflow.domain.handoff import erasure_id

        self._count("GetItem")
        held = self.client.get_item(TableName=self.table_name, Key=self._key(lead.lead_id), ConsistentRead=True,
                                    ProjectionExpression="version, updated_at").get("Item")
        if held is None:
            raise VersionConflict(None)
        version = held["version"]["N"]
        tombstone: dict[str, Any] = {
            "PK": {"S": lead_pk(lead.lead_id)}, "SK": {"S": ERASED_SK}, "kind": {"S": "erased"},
            "lead_id": {"S": lead.lead_id}, "erased_at": {"S": now.isoformat()},
            "erasure": {"S": erasure_id(int(version), held["updated_at"]["S"])},
        }
        crm_ids = self._crm_ids(lead.lead_id)
        if crm_ids:
            tombstone["crm_ids"] = {"M": {sink: {"SS": ids} for sink, ids in crm_ids.items()}}
        self._count("PutItem")
        self.client.put_item(TableName=self.table_name, Item=tombstone)
        self._count("DeleteItem")
        try:
            self.client.delete_item(TableName=self.table_name, Key=self._key(lead.lead_id),
                                    ConditionExpression="version = :v", ExpressionAttributeValues={":v": {"N": version}},
                                    ReturnValuesOnConditionCheckFailure="ALL_OLD")
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise
            old = exc.response.get("Item")
            raise VersionConflict(item_to_lead(self._plain(old)) if old else None) from None
        keys = [{"PK": it["PK"], "SK": it["SK"]} for it in self._query_pk(lead.lead_id, keys_only=True)
                if it["SK"]["S"] not in (LEAD_SK, ERASED_SK)]
        for visitor_id in visitor_ids:
            keys.append(self._key(visitor_id))
            keys.extend({"PK": it["PK"], "SK": it["SK"]} for it in self._query_pk(visitor_id, "EVENT#", keys_only=True))
        return 1 + self._delete_keys(keys)

    def _crm_ids(self, lead_id: str) -> dict[str, list[str]]:
        """sink -> the record ids the CRMs answered the lead's moves with (their receipts)."""
        from leadflow.adapters.dynamodb.ledger import delivery_entries

        found: dict[str, set[str]] = {}
        for item in self._query_pk(lead_id, "SEND#"):
            for entry in delivery_entries(item):
                detail = entry.get("detail") or {}
                for key in RECORD_ID_KEYS:
                    if detail.get(key):
                        found.setdefault(entry["sink"], set()).add(str(detail[key]))
        return {sink: sorted(ids) for sink, ids in found.items()}

    def _tombstone_item(self, lead_id: str, projection: str | None = None) -> dict | None:
        kwargs: dict[str, Any] = {"TableName": self.table_name, "ConsistentRead": True,
                                  "Key": {"PK": {"S": lead_pk(lead_id)}, "SK": {"S": ERASED_SK}}}
        if projection:
            kwargs["ProjectionExpression"] = projection
        self._count("GetItem")
        return self.client.get_item(**kwargs).get("Item")

    def erased_at(self, lead_id: str) -> datetime | None:
        item = self._tombstone_item(lead_id, "erased_at")
        return datetime.fromisoformat(item["erased_at"]["S"]) if item else None

    def tombstone(self, lead_id: str) -> Tombstone | None:
        item = self._tombstone_item(lead_id, "erased_at, erasure, crm_ids")
        if item is None:
            return None
        ids = {sink: sorted(v.get("SS", [])) for sink, v in item.get("crm_ids", {}).get("M", {}).items()}
        return Tombstone(lead_id=lead_id, erased_at=datetime.fromisoformat(item["erased_at"]["S"]),
                         erasure=item["erasure"]["S"], ids=ids)

    def purge_events(self, lead_id: str) -> int:
        """Sweep an erased lead's leftovers: event log items and delivery records written
        after the erasure by the stream consumers. The person may have come back since (a
        new interaction after the erasure makes a new lead under the same id): then only
        log items received up to the erasure go, and the new lead's ledger stays."""
        erased_at = self.erased_at(lead_id)
        back = erased_at is not None and self.get(lead_id) is not None
        upto = f"EVENT#{erased_at.isoformat()}~" if erased_at is not None else None  # "~" sorts after the id
        keys = []
        for it in self._query_pk(lead_id, keys_only=True):
            sk = it["SK"]["S"]
            if (sk.startswith("EVENT#") and (upto is None or sk <= upto)) or (sk.startswith("SEND#") and not back):
                keys.append({"PK": it["PK"], "SK": it["SK"]})
        return self._delete_keys(keys)

    def next_turn(self, name: str) -> int:
        """An atomic counter (0, 1, 2, …) per name: the routing round-robin's position."""
        self._count("UpdateItem")
        resp = self.client.update_item(
            TableName=self.table_name,
            Key={"PK": {"S": counter_pk(name)}, "SK": {"S": "COUNTER"}},
            UpdateExpression="ADD n :one SET kind = :k",
            ExpressionAttributeValues={":one": {"N": "1"}, ":k": {"S": "counter"}},
            ReturnValues="UPDATED_NEW",
        )
        return int(resp["Attributes"]["n"]["N"]) - 1

    def events(self, lead_id: str) -> list[AppliedEvent]:
        out = []
        for it in self._query_pk(lead_id, "EVENT#"):
            data = to_plain({k: v for k, v in self._plain(it).items() if k not in _META})
            out.append(AppliedEvent.model_validate(data))
        return out

    def append_events(self, lead_id: str, records: Iterable[dict]) -> None:
        """Idempotent: an event's log key is fixed, so a redelivered stream batch rewrites
        the same items."""
        self.append_logs([(lead_id, records)])

    def append_logs(self, logs: Iterable[tuple[str, Iterable[dict]]]) -> None:
        """Every lead's events in as few BatchWriteItem calls as 25 per call allows. One
        request may not name a key twice, and the same event logged twice is the same
        item: the last one stands."""
        puts: dict[tuple[str, str], dict] = {}
        for lead_id, records in logs:
            for rec in records:
                key = (lead_pk(lead_id), event_sk(rec["received_at"], rec["event_id"]))
                data = _to_dynamo({**rec, "PK": key[0], "SK": key[1], "kind": "event"})
                puts[key] = {"PutRequest": {"Item": self._item(data)}}
        self._batch_write(list(puts.values()))

    def scan_leads(self, consistent: bool = False) -> Iterator[Lead]:
        kwargs: dict[str, Any] = {
            "TableName": self.table_name,
            "ConsistentRead": consistent,
            "FilterExpression": "SK = :sk AND kind = :k",
            "ExpressionAttributeValues": {":sk": {"S": LEAD_SK}, ":k": {"S": "lead"}},
        }
        for resp in self._pages("scan", **kwargs):
            for it in resp.get("Items", []):
                yield item_to_lead(self._plain(it))

    def scan_page(self, segment: int, total: int, start: dict | None, limit: int | None = None
                  ) -> tuple[list[Lead], dict | None]:
        """One page (up to 1 MB read, or `limit` items) of one parallel-scan segment: the
        leads in it, and where the next page starts (None: the segment is done)."""
        kwargs: dict[str, Any] = {
            "TableName": self.table_name,
            "Segment": segment,
            "TotalSegments": total,
            "FilterExpression": "SK = :sk AND kind = :k",
            "ExpressionAttributeValues": {":sk": {"S": LEAD_SK}, ":k": {"S": "lead"}},
        }
        if start:
            kwargs["ExclusiveStartKey"] = start
        if limit:
            kwargs["Limit"] = limit
        self._count("Scan")
        resp = self.client.scan(**kwargs)
        leads = []
        for it in resp.get("Items", []):
            lead = item_to_lead(self._plain(it))
            if "LL" not in it:  # written before the list indexes: the run writes it once
                self._unindexed.add(lead.lead_id)
            leads.append(lead)
        return leads, resp.get("LastEvaluatedKey")

    @cached_property
    def _unindexed(self) -> set[str]:
        return set()

    def needs_index(self, lead_id: str) -> bool:
        """Whether a scan found this lead's item without the list indexes' keys."""
        return lead_id in self._unindexed

    def item_count(self) -> int:
        """The table's item count as DynamoDB last computed it (about every six hours)."""
        self._count("DescribeTable")
        return int(self.client.describe_table(TableName=self.table_name)["Table"].get("ItemCount", 0))

    def count_stage(self, stage: str, since: str | None = None, until: str | None = None) -> int:
        """Leads now in `stage`; with since/until, only those that entered it in [since, until)."""
        values: dict[str, Any] = {":pk": {"S": stage_gsi_pk(stage)}}
        condition = "GSI1PK = :pk"
        if since or until:
            condition += " AND GSI1SK BETWEEN :lo AND :hi"
            values[":lo"] = {"S": since or "0"}
            values[":hi"] = {"S": until or "9"}
        kwargs: dict[str, Any] = {
            "TableName": self.table_name,
            "IndexName": "GSI1",
            "KeyConditionExpression": condition,
            "ExpressionAttributeValues": values,
            "Select": "COUNT",
        }
        return sum(resp.get("Count", 0) for resp in self._pages("query", **kwargs))

    def index_page(self, index: str, partition: str, *, prefix: str | None = None, ascending: bool = False,
                   start: dict[str, str] | None = None, limit: int = 25) -> tuple[list[str], dict[str, str] | None]:
        """One page of a list index (keys only): lead ids in the index's order, and the key
        to resume from (None at the end). ``prefix`` narrows the sort key (a search)."""
        pk, sk = INDEXES[index]
        values: dict[str, Any] = {":pk": {"S": partition}}
        condition = f"{pk} = :pk"
        if prefix:
            condition += f" AND begins_with({sk}, :prefix)"
            values[":prefix"] = {"S": prefix}
        kwargs: dict[str, Any] = {"TableName": self.table_name, "IndexName": index, "Limit": limit,
                                  "KeyConditionExpression": condition, "ExpressionAttributeValues": values,
                                  "ScanIndexForward": ascending}
        if start:
            kwargs["ExclusiveStartKey"] = {name: {"S": value} for name, value in start.items()}
        self._count("Query")
        resp = self.client.query(**kwargs)
        ids = [item["PK"]["S"].split("#", 1)[1] for item in resp.get("Items", [])]
        last = resp.get("LastEvaluatedKey")
        return ids, ({name: value["S"] for name, value in last.items()} if last else None)

    def leads_in_stage(self, stage: str, entered_before: str | None = None) -> Iterator[Lead]:
        """Leads now in `stage` (that entered it before `entered_before`, ISO), by the stage
        index (keys only: its sort key starts with the entry time), each read consistently."""
        kwargs: dict[str, Any] = {
            "TableName": self.table_name,
            "IndexName": "GSI1",
            "KeyConditionExpression": "GSI1PK = :pk",
            "ExpressionAttributeValues": {":pk": {"S": stage_gsi_pk(stage)}},
        }
        if entered_before:
            kwargs["KeyConditionExpression"] += " AND GSI1SK < :before"
            kwargs["ExpressionAttributeValues"][":before"] = {"S": entered_before}
        for resp in self._pages("query", **kwargs):
            for it in resp.get("Items", []):
                lead = self.get(it["PK"]["S"].split("#", 1)[1])
                if lead is not None and lead.stage == stage:
                    yield lead

    def first_touch_seconds(self) -> list[float]:
        """Every lead's time from SQL to first touch (a scan of one small attribute)."""
        kwargs: dict[str, Any] = {
            "TableName": self.table_name,
            "FilterExpression": "attribute_exists(first_touch_s) AND SK = :sk",
            "ProjectionExpression": "first_touch_s",
            "ExpressionAttributeValues": {":sk": {"S": LEAD_SK}},
        }
        return [float(it["first_touch_s"]["N"]) for resp in self._pages("scan", **kwargs)
                for it in resp.get("Items", [])]
