"""The local stack's faster moto answers exactly what moto answers.

Scans: each scenario runs twice on a fresh mock (or twice on one table), once with the
local stack's scan and once with moto's original, and the pages (items, counts, last
evaluated keys) must be equal. Responses: every item-returning operation's body, with
every attribute type, must be the same JSON with and without the faster serializer.
"""

from __future__ import annotations

import base64
import json
import random

import boto3
import pytest
from moto import mock_aws
from moto.core.serialize import BaseJSONSerializer
from moto.dynamodb.models.table import Table

from leadflow_infra.local.fast_moto import make_moto_fast

make_moto_fast()

TABLE = "scan-order"


def _table(client, *, range_key: bool = True) -> None:
    schema = [{"AttributeName": "pk", "KeyType": "HASH"}]
    attributes = [{"AttributeName": "pk", "AttributeType": "S"}]
    if range_key:
        schema.append({"AttributeName": "sk", "KeyType": "RANGE"})
        attributes.append({"AttributeName": "sk", "AttributeType": "S"})
    client.create_table(TableName=TABLE, KeySchema=schema, AttributeDefinitions=attributes,
                        BillingMode="PAY_PER_REQUEST")


def _seed(client, rng: random.Random, *, range_key: bool = True, partitions: int = 60) -> list[dict]:
    keys = []
    for p in range(partitions):
        for s in range(rng.randint(1, 6) if range_key else 1):
            key = {"pk": {"S": f"LEAD#{rng.randrange(10 ** 6):06d}-{p}"}}
            if range_key:
                key["sk"] = {"S": rng.choice(["LEAD", "EVENT#", "RUN#"]) + f"{s:03d}"}
            size = 200_000 if len(keys) % 15 == 0 else rng.randint(10, 400)
            item = {**key, "n": {"N": str(rng.randint(-5, 500))}, "blob": {"S": "x" * size},
                    "kind": {"S": rng.choice(["a", "b", "c"])}}
            client.put_item(TableName=TABLE, Item=item)
            keys.append(key)
    # An update of an existing item and a read of a missing partition change no key.
    client.update_item(TableName=TABLE, Key=keys[0], UpdateExpression="SET kind = :k",
                       ExpressionAttributeValues={":k": {"S": "z"}})
    missing = {"pk": {"S": "LEAD#missing"}}
    if range_key:
        missing["sk"] = {"S": "LEAD"}
    client.get_item(TableName=TABLE, Key=missing)
    return keys


def _pages(client, mutate=None, **kwargs) -> list[tuple]:
    pages, start = [], None
    while True:
        args = dict(kwargs, TableName=TABLE)
        if start:
            args["ExclusiveStartKey"] = start
        page = client.scan(**args)
        pages.append((page["Items"], page["Count"], page["ScannedCount"], page.get("LastEvaluatedKey")))
        start = page.get("LastEvaluatedKey")
        if mutate is not None and len(pages) == 1:
            mutate(client)
        if not start:
            return pages


def _scan_both(client, monkeypatch, **kwargs) -> list:
    fast = _pages(client, **kwargs)
    with monkeypatch.context() as patch:
        patch.setattr(Table, "scan", Table.scan.__wrapped__)
        assert fast == _pages(client, **kwargs), kwargs
    return fast


def _run(scenario, *, original: bool, monkeypatch) -> list:
    with monkeypatch.context() as patch:
        if original:
            patch.setattr(Table, "scan", Table.scan.__wrapped__)
        with mock_aws():
            return scenario(boto3.client("dynamodb", region_name="us-east-1"))


SCANS = [
    {},
    {"Limit": 7},
    {"Segment": 2, "TotalSegments": 7},
    {"Segment": 0, "TotalSegments": 1, "Limit": 13},
    {"Segment": 3, "TotalSegments": 4, "Limit": 5, "FilterExpression": "kind = :k",
     "ExpressionAttributeValues": {":k": {"S": "a"}}},
    {"ProjectionExpression": "pk, n", "Limit": 11},
    {"ScanFilter": {"n": {"AttributeValueList": [{"N": "100"}], "ComparisonOperator": "GT"}}},
]


@pytest.mark.parametrize("range_key", [True, False], ids=["pk+sk", "pk"])
def test_pages_equal_moto(monkeypatch, range_key):
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        _table(client, range_key=range_key)
        _seed(client, random.Random(7), range_key=range_key, partitions=40 if range_key else 100)
        for kwargs in SCANS:
            _scan_both(client, monkeypatch, **kwargs)
        # The 1 MB page limit is reached without a Limit.
        assert len(_scan_both(client, monkeypatch)) > 1


@pytest.mark.parametrize("change", ["insert", "delete", "update"])
def test_keys_changed_mid_scan_are_seen_as_moto_sees_them(monkeypatch, change):
    new_key = {"pk": {"S": "LEAD#999999-new"}, "sk": {"S": "LEAD"}}

    def scenario(client):
        _table(client)
        keys = _seed(client, random.Random(11), partitions=25)

        def mutate(client):
            if change == "insert":
                client.put_item(TableName=TABLE, Item={**new_key, "n": {"N": "1"}, "kind": {"S": "a"}})
            elif change == "delete":
                client.delete_item(TableName=TABLE, Key=keys[-1])
            else:
                client.put_item(TableName=TABLE, Item={**keys[-2], "n": {"N": "2"}, "kind": {"S": "b"}})

        return _pages(client, mutate=mutate, Limit=9)

    fast = _run(scenario, original=False, monkeypatch=monkeypatch)
    assert fast == _run(scenario, original=True, monkeypatch=monkeypatch)
    keys = [{k: item[k] for k in ("pk", "sk")} for page in fast for item in page[0]]
    assert (new_key in keys) is (change == "insert")


EVERY_TYPE = {
    "pk": {"S": "LEAD#1"}, "sk": {"S": "LEAD"},
    "s": {"S": "Zoë \u200b<b>"}, "empty": {"S": ""}, "n": {"N": "-12.50"}, "b": {"B": b"\x00\xffbytes"},
    "ss": {"SS": ["a", "b"]}, "ns": {"NS": ["1", "2.5"]}, "bs": {"BS": [b"x", b"\x01"]},
    "null": {"NULL": True}, "bool": {"BOOL": False},
    "m": {"M": {"l": {"L": [{"S": "x"}, {"N": "1"}, {"M": {"deep": {"L": [{"BOOL": True}, {"B": b"z"}]}}}]},
                "empty_m": {"M": {}}, "empty_l": {"L": []}}},
}


def _responses(client) -> list:
    """Every DynamoDB operation that returns items, and one that fails with the item."""
    bodies: list = []
    client.meta.events.register("after-call.dynamodb",
                                lambda http_response, **_: bodies.append(http_response.content))
    key = {"pk": EVERY_TYPE["pk"], "sk": EVERY_TYPE["sk"]}
    client.put_item(TableName=TABLE, Item=EVERY_TYPE)
    client.put_item(TableName=TABLE, Item=EVERY_TYPE, ReturnValues="ALL_OLD", ReturnConsumedCapacity="TOTAL")
    client.get_item(TableName=TABLE, Key=key, ReturnConsumedCapacity="INDEXES")
    client.get_item(TableName=TABLE, Key=key, ProjectionExpression="m.l[2], b, ns")
    client.update_item(TableName=TABLE, Key=key, UpdateExpression="SET n = n + :one", ReturnValues="ALL_NEW",
                       ExpressionAttributeValues={":one": {"N": "1"}})
    client.query(TableName=TABLE, KeyConditionExpression="pk = :pk", ExpressionAttributeValues={":pk": key["pk"]})
    client.scan(TableName=TABLE, Limit=1)
    client.batch_get_item(RequestItems={TABLE: {"Keys": [key]}})
    client.transact_get_items(TransactItems=[{"Get": {"TableName": TABLE, "Key": key}}])
    client.execute_statement(Statement=f'SELECT * FROM "{TABLE}"')
    client.describe_table(TableName=TABLE)
    with pytest.raises(client.exceptions.ConditionalCheckFailedException):
        client.put_item(TableName=TABLE, Item=EVERY_TYPE, ConditionExpression="attribute_not_exists(pk)",
                        ReturnValuesOnConditionCheckFailure="ALL_OLD")
    client.delete_item(TableName=TABLE, Key=key, ReturnValues="ALL_OLD")
    return [_without_volatile(json.loads(body)) for body in bodies]


def _without_volatile(document):
    # The table's creation time and a missing item's request id are the only values that differ run to run.
    if isinstance(document, dict):
        return {k: _without_volatile(v) for k, v in document.items() if k not in ("CreationDateTime",)}
    if isinstance(document, list):
        return [_without_volatile(v) for v in document]
    return document


def test_responses_with_every_attribute_type_are_the_bytes_moto_sends(monkeypatch):
    def scenario(client):
        _table(client)
        return _responses(client)

    fast = _run(scenario, original=False, monkeypatch=monkeypatch)
    with monkeypatch.context() as patch:
        patch.setattr(BaseJSONSerializer, "_serialize_type_structure",
                      BaseJSONSerializer._serialize_type_structure.__wrapped__)
        slow = _run(scenario, original=False, monkeypatch=monkeypatch)
    assert len(fast) == 13
    assert fast == slow
    assert fast[2]["Item"]["b"] == {"B": base64.b64encode(b"\x00\xffbytes").decode()}


def _sizes_at_the_limit(client) -> list:
    """Items around moto's item-size limit, built at once (PutItem) and grown by an update:
    each answers what moto answers (stored, or the same error)."""
    _table(client)
    outcomes = []
    for total in (404_900, 404_990, 405_000, 405_001, 405_100, 410_000):
        for split in (1, 3):  # the limit crossed by the last attribute, or by an earlier one
            item = {"pk": {"S": f"size-{total}-{split}"}, "sk": {"S": "x"}}
            used = sum(len(k) + len(v["S"]) for k, v in item.items())
            names = [f"a{i}" for i in range(split)]
            share = (total - used - sum(len(n) for n in names)) // split
            for i, name in enumerate(names):
                last = total - used - sum(len(n) for n in names) - share * (split - 1)
                item[name] = {"S": "y" * (last if i == split - 1 else share)}
            item[f"z{split}"] = {"N": "1"}  # an attribute after the large ones
            try:
                client.put_item(TableName=TABLE, Item=item)
                stored = client.get_item(TableName=TABLE, Key={"pk": item["pk"], "sk": item["sk"]}).get("Item")
                outcomes.append(("stored", stored == item))
            except client.exceptions.ClientError as exc:
                outcomes.append((exc.response["Error"]["Code"], exc.response["Error"]["Message"]))
    key = {"pk": {"S": "grown"}, "sk": {"S": "x"}}
    client.put_item(TableName=TABLE, Item={**key, "a": {"S": "y" * 300_000}})
    try:
        client.update_item(TableName=TABLE, Key=key, UpdateExpression="SET b = :b",
                           ExpressionAttributeValues={":b": {"S": "y" * 200_000}})
        outcomes.append(("updated",))
    except client.exceptions.ClientError as exc:
        outcomes.append((exc.response["Error"]["Code"], exc.response["Error"]["Message"]))
    return outcomes


def test_item_size_limit_is_moto_s(monkeypatch):
    from moto.dynamodb.models.dynamo_type import Item

    fast = _run(_sizes_at_the_limit, original=False, monkeypatch=monkeypatch)
    with monkeypatch.context() as patch:
        patch.setattr(Item, "__init__", Item.__init__.__wrapped__)
        slow = _run(_sizes_at_the_limit, original=False, monkeypatch=monkeypatch)
    assert fast == slow
    verdicts = [outcome[0] for outcome in fast]
    assert "stored" in verdicts and "ValidationException" in verdicts  # both sides of the limit are covered
    assert fast[-1][0] == "ValidationException"  # an update past the limit is refused too


def test_routing_answers_as_moto_worked_out_once():
    import moto.backends as backends
    import moto.core.responses as responses
    from moto.dynamodb.responses import DynamoHandler

    assert list(backends.list_of_moto_modules()) == list(backends.list_of_moto_modules.__wrapped__())
    assert "dynamodb" in backends.list_of_moto_modules()
    names = responses.method_names_from_class(DynamoHandler)
    assert names == responses.method_names_from_class.__wrapped__(DynamoHandler)
    names.append("changed by a caller")  # each caller gets its own list
    assert "changed by a caller" not in responses.method_names_from_class(DynamoHandler)
