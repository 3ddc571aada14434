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


# -- Query -----------------------------------------------------------------------------------

QUERY_TABLE = "query-order"
GROUPS = ["A", "B", "C"]


def _query_table(client, *, range_key: bool = True) -> None:
    """A table with an index of each kind moto's query treats differently: keys only with a
    sort key that repeats (ties broken by the table's keys), a numeric sort key with every
    attribute, an INCLUDE projection, and a hash-only index."""
    schema = [{"AttributeName": "pk", "KeyType": "HASH"}]
    attributes = [{"AttributeName": name, "AttributeType": kind}
                  for name, kind in (("pk", "S"), ("g", "S"), ("gs", "S"), ("n", "N"), ("g2", "S"))]
    if range_key:
        schema.append({"AttributeName": "sk", "KeyType": "RANGE"})
        attributes.append({"AttributeName": "sk", "AttributeType": "S"})

    def index(name, hash_attr, range_attr, projection):
        keys = [{"AttributeName": hash_attr, "KeyType": "HASH"}]
        if range_attr:
            keys.append({"AttributeName": range_attr, "KeyType": "RANGE"})
        return {"IndexName": name, "KeySchema": keys, "Projection": projection}

    client.create_table(
        TableName=QUERY_TABLE, KeySchema=schema, AttributeDefinitions=attributes, BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        GlobalSecondaryIndexes=[
            index("BY_GS", "g", "gs", {"ProjectionType": "KEYS_ONLY"}),
            index("BY_N", "g", "n", {"ProjectionType": "ALL"}),
            index("INC", "g2", "gs", {"ProjectionType": "INCLUDE", "NonKeyAttributes": ["kind", "n"]}),
            index("HASH_ONLY", "g", None, {"ProjectionType": "KEYS_ONLY"}),
        ])


def _query_item(rng: random.Random, key: dict) -> dict:
    item = dict(key, kind={"S": rng.choice(["a", "b", "c"])})
    if rng.random() < 0.85:  # the others are in no index on g
        item["g"] = {"S": rng.choice(GROUPS)}
    if rng.random() < 0.9:
        item["gs"] = {"S": rng.choice(["ab", "abc", "b", "ba", "c#1", "c#2"])}  # few values: ties
    if rng.random() < 0.8:
        item["n"] = {"N": rng.choice(["-2", "0", "1", "1.5", "10", "2"])}
    if rng.random() < 0.5:
        item["g2"] = {"S": rng.choice(GROUPS[:2])}
    if rng.random() < 0.2:
        item["tags"] = {"SS": rng.sample(["x", "y", "z"], 2)}
    size = 240_000 if rng.random() < 0.1 else rng.randint(1, 300)
    item["blob"] = {"S": "x" * size}
    return item


def _query_keys(rng: random.Random, *, range_key: bool, count: int) -> list[dict]:
    keys = []
    for i in range(count):
        key = {"pk": {"S": f"P{rng.randrange(8 if range_key else 10 ** 6):02d}"}}
        if range_key:
            key["sk"] = {"S": rng.choice(["EV#", "LEAD", "RUN#"]) + f"{i:03d}"}
        keys.append(key)
    return keys


def _random_query(rng: random.Random, keys: list[dict], *, range_key: bool) -> dict:
    kwargs: dict = {"TableName": QUERY_TABLE}
    values: dict = {}
    index = rng.choice([None, "BY_GS", "BY_N", "INC", "HASH_ONLY"])
    if index is None:
        condition = "pk = :h"
        values[":h"] = rng.choice(keys)["pk"] if rng.random() < 0.95 else {"S": "P-none"}
        range_attr, range_values = ("sk", ["EV#", "EV#010", "LEAD", "LEAD099", "RUN#", "Z"]) if range_key else (None, [])
    else:
        kwargs["IndexName"] = index
        hash_attr = "g2" if index == "INC" else "g"
        condition = f"{hash_attr} = :h"
        values[":h"] = {"S": rng.choice(GROUPS + ["D"])}
        range_attr, range_values = {"BY_GS": ("gs", ["a", "ab", "b", "ba", "c", "c#1", "d"]),
                                    "INC": ("gs", ["a", "ab", "b", "c#"]),
                                    "BY_N": ("n", ["-3", "0", "1", "1.50", "2", "9"])}.get(index, (None, []))
    if range_attr and rng.random() < 0.7:
        kind = "N" if range_attr == "n" else "S"
        op = rng.choice(["=", "<", "<=", ">", ">=", "BETWEEN", "begins_with"] if kind == "S" else
                        ["=", "<", "<=", ">", ">=", "BETWEEN"])
        low, high = sorted(rng.sample(range_values, 2), key=lambda v: float(v) if kind == "N" else v)
        if rng.random() < 0.1:
            low, high = high, low  # an empty BETWEEN
        values[":r"] = {kind: low}
        if op == "BETWEEN":
            condition += f" AND {range_attr} BETWEEN :r AND :r2"
            values[":r2"] = {kind: high}
        elif op == "begins_with":
            condition += f" AND begins_with({range_attr}, :r)"
        else:
            condition += f" AND {range_attr} {op} :r"
    kwargs["KeyConditionExpression"] = condition
    if rng.random() < 0.5:
        kwargs["ScanIndexForward"] = False
    limit = rng.choice([None, None, 1, 2, 3, 5, 8, 40, 1000] if rng.random() < 0.3 else [None, 3, 5, 8, 40])
    if limit:
        kwargs["Limit"] = limit
    extra = rng.random()
    if extra < 0.15:
        kwargs["FilterExpression"] = "kind = :k" if index not in ("BY_GS", "HASH_ONLY") else "attribute_exists(pk)"
        values[":k"] = {"S": "a"}
        if index in ("BY_GS", "HASH_ONLY"):
            del values[":k"]
    elif extra < 0.25:
        kwargs["ProjectionExpression"] = "pk, kind, tags" if index is None else "pk, g"
    elif extra < 0.35:
        kwargs["Select"] = "COUNT"
    kwargs["ExpressionAttributeValues"] = values
    return kwargs


def _query_pages(client, kwargs: dict, start=None) -> list[tuple]:
    pages = []
    args = dict(kwargs)
    if start is not None:
        args["ExclusiveStartKey"] = start
    while True:
        page = client.query(**args)
        pages.append((page.get("Items"), page["Count"], page["ScannedCount"], page.get("LastEvaluatedKey")))
        if "LastEvaluatedKey" not in page or len(pages) > 200:
            return pages
        args["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _query_both(client, monkeypatch, kwargs: dict, start=None) -> list[tuple]:
    fast = _query_pages(client, kwargs, start)
    with monkeypatch.context() as patch:
        patch.setattr(Table, "query", Table.query.__wrapped__)
        assert fast == _query_pages(client, kwargs, start), kwargs
    return fast


def _mutate(client, rng: random.Random, keys: list[dict], *, range_key: bool) -> None:
    """Every way an item changes: puts (new and over an old one), updates in place that move
    it between index partitions or out of an index, an update that creates an item, deletes,
    a batch, a transaction that commits and one that rolls back."""
    for key in rng.sample(keys, 12):
        choice = rng.random()
        if choice < 0.3:
            client.update_item(TableName=QUERY_TABLE, Key=key, UpdateExpression="SET g = :g, gs = :s, n = :n",
                               ExpressionAttributeValues={":g": {"S": rng.choice(GROUPS)}, ":s": {"S": "ab"},
                                                          ":n": {"N": "1.0"}})
        elif choice < 0.45:
            client.update_item(TableName=QUERY_TABLE, Key=key, UpdateExpression="REMOVE g, g2")
        elif choice < 0.55:
            client.update_item(TableName=QUERY_TABLE, Key=key, UpdateExpression="ADD tags :t SET kind = :k",
                               ExpressionAttributeValues={":t": {"SS": ["w"]}, ":k": {"S": "a"}})
        elif choice < 0.7:
            client.delete_item(TableName=QUERY_TABLE, Key=key)
        else:
            client.put_item(TableName=QUERY_TABLE, Item=_query_item(rng, key))
    fresh = _query_keys(rng, range_key=range_key, count=6)
    for i, key in enumerate(fresh):
        key = dict(key, **({"sk": {"S": f"NEW#{rng.randrange(10 ** 6):06d}"}} if range_key else {}))
        if i == 0:
            client.update_item(TableName=QUERY_TABLE, Key=key, UpdateExpression="SET g = :g, gs = :s",
                               ExpressionAttributeValues={":g": {"S": "A"}, ":s": {"S": "b"}})
        else:
            client.put_item(TableName=QUERY_TABLE, Item=_query_item(rng, key))
        keys.append(key)
    gone = rng.sample(keys, 3)
    client.batch_write_item(RequestItems={QUERY_TABLE: [
        *({"DeleteRequest": {"Key": key}} for key in gone),
        {"PutRequest": {"Item": _query_item(rng, keys[0])}}]})
    for key in gone:
        keys.remove(key)
    moved, kept = keys[1], keys[2]
    client.transact_write_items(TransactItems=[
        {"Update": {"TableName": QUERY_TABLE, "Key": moved, "UpdateExpression": "SET g = :g",
                    "ExpressionAttributeValues": {":g": {"S": "C"}}}}])
    with pytest.raises(client.exceptions.TransactionCanceledException):
        client.transact_write_items(TransactItems=[
            {"Update": {"TableName": QUERY_TABLE, "Key": kept, "UpdateExpression": "SET g = :g",
                        "ExpressionAttributeValues": {":g": {"S": "B"}}}},
            {"ConditionCheck": {"TableName": QUERY_TABLE, "Key": moved,
                                "ConditionExpression": "attribute_not_exists(pk)"}}])


@pytest.mark.parametrize("range_key", [True, False], ids=["pk+sk", "pk"])
def test_queries_equal_moto_as_the_table_changes(monkeypatch, range_key):
    rng = random.Random(12 if range_key else 21)
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        _query_table(client, range_key=range_key)
        keys = _query_keys(rng, range_key=range_key, count=70)
        for key in keys:
            client.put_item(TableName=QUERY_TABLE, Item=_query_item(rng, key))
        seen = {"paged": 0, "limited": 0, "empty": 0, "reversed": 0}
        for _ in range(3):
            for _ in range(32):
                kwargs = _random_query(rng, keys, range_key=range_key)
                pages = _query_both(client, monkeypatch, kwargs)
                seen["paged"] += len(pages) > 1
                seen["limited"] += "Limit" in kwargs and len(pages) > 1
                seen["empty"] += pages[0][1] == 0
                seen["reversed"] += kwargs.get("ScanIndexForward") is False and pages[0][1] > 1
                # Resuming from an item's own keys, as a caller holding a page key does.
                if pages[0][0]:
                    sample = rng.choice(keys)
                    item = client.get_item(TableName=QUERY_TABLE, Key=sample).get("Item")
                    if item is not None and all(name in item for name in ("g", "gs", "n", "g2")):
                        _query_both(client, monkeypatch, kwargs, start=item)
            _mutate(client, rng, keys, range_key=range_key)
        assert all(count >= 5 for count in seen.values()), seen


def test_a_query_page_stops_at_a_large_item_past_the_range_as_moto_does(monkeypatch):
    """moto stops a page (with a last evaluated key) at any item after the matches that
    would take it past 1 MB, matching or not; a smaller one does not stop it."""
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        _query_table(client)
        for i, (gs, size) in enumerate([("a", 240_000), ("b", 250_000), ("b", 250_000), ("b", 250_000),
                                        ("c", 150_000), ("d", 300_000), ("e", 10)]):
            client.put_item(TableName=QUERY_TABLE, Item={
                "pk": {"S": "P"}, "sk": {"S": f"S{i}"}, "g": {"S": "A"}, "gs": {"S": gs}, "blob": {"S": "x" * size}})
        outcomes = []
        for upper in ("b", "c"):  # the range ends before the 150 KB item, or takes it in
            for forward in (True, False):
                for index in ("BY_GS", None):
                    condition = "g = :h AND gs BETWEEN :lo AND :hi" if index else "pk = :h AND sk BETWEEN :lo AND :hi"
                    kwargs = {"TableName": QUERY_TABLE, "KeyConditionExpression": condition,
                              "ScanIndexForward": forward,
                              "ExpressionAttributeValues": {":h": {"S": "A" if index else "P"},
                                                            ":lo": {"S": "b" if index else "S1"},
                                                            ":hi": {"S": upper if index else f"S{3 + (upper == 'c')}"}}}
                    if index:
                        kwargs["IndexName"] = index
                    pages = _query_both(client, monkeypatch, kwargs)
                    outcomes.append(pages[0][3] is not None)
        assert True in outcomes and False in outcomes  # both a stop and no stop are compared


def test_keys_changed_mid_query_are_seen_as_moto_sees_them(monkeypatch):
    def scenario(client):
        _query_table(client)
        rng = random.Random(5)
        keys = _query_keys(rng, range_key=True, count=80)
        for key in keys:
            client.put_item(TableName=QUERY_TABLE, Item=dict(_query_item(rng, key), g={"S": "A"}))
        pages, start = [], None
        for step in range(40):
            args = {"TableName": QUERY_TABLE, "IndexName": "BY_GS", "Limit": 3,
                    "KeyConditionExpression": "g = :h", "ExpressionAttributeValues": {":h": {"S": "A"}}}
            if start:
                args["ExclusiveStartKey"] = start
            page = client.query(**args)
            pages.append((page["Items"], page.get("LastEvaluatedKey")))
            start = page.get("LastEvaluatedKey")
            if not start:
                break
            key = keys[(step * 7) % len(keys)]
            if step % 3 == 0:
                client.update_item(TableName=QUERY_TABLE, Key=key, UpdateExpression="SET gs = :s",
                                   ExpressionAttributeValues={":s": {"S": "zz"}})
            elif step % 3 == 1:
                client.delete_item(TableName=QUERY_TABLE, Key=key)
            else:
                client.update_item(TableName=QUERY_TABLE, Key=key, UpdateExpression="SET g = :g",
                                   ExpressionAttributeValues={":g": {"S": "B"}})
        return pages

    fast = _run(scenario, original=False, monkeypatch=monkeypatch)
    with monkeypatch.context() as patch:
        patch.setattr(Table, "query", Table.query.__wrapped__)
        slow = _run(scenario, original=False, monkeypatch=monkeypatch)
    assert fast == slow
    assert len(fast) > 5


def test_an_item_grown_in_place_past_the_limit_sends_queries_to_moto(monkeypatch):
    """moto does not re-size an item when an update grows a map inside it; past its item
    limit such an item could stop a page anywhere, so from then on moto answers."""
    from leadflow_infra.local import fast_moto

    monkeypatch.setattr(fast_moto, "_oversize", False)
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        _query_table(client)
        key = {"pk": {"S": "P"}, "sk": {"S": "S"}}
        client.put_item(TableName=QUERY_TABLE, Item={**key, "g": {"S": "A"}, "gs": {"S": "a"},
                                                      "m": {"M": {"a": {"S": "x" * 300_000}}}})
        query = {"TableName": QUERY_TABLE, "IndexName": "BY_N", "KeyConditionExpression": "g = :h",
                 "ExpressionAttributeValues": {":h": {"S": "A"}}}
        client.update_item(TableName=QUERY_TABLE, Key=key, UpdateExpression="SET n = :n",
                           ExpressionAttributeValues={":n": {"N": "1"}})
        _query_both(client, monkeypatch, query)
        assert fast_moto._oversize is False  # a top-level SET is checked by moto itself
        client.update_item(TableName=QUERY_TABLE, Key=key, UpdateExpression="SET m.b = :b",
                           ExpressionAttributeValues={":b": {"S": "y" * 200_000}})
        assert fast_moto._oversize is True
        _query_both(client, monkeypatch, query)


def test_query_install_is_idempotent_and_keeps_moto_s_own():
    from moto.dynamodb.parsing.executors import UpdateExpressionExecutor

    wrapped = Table.query
    make_moto_fast()
    assert Table.query is wrapped
    assert Table.query.__wrapped__.__module__ == "moto.dynamodb.models.table"
    assert UpdateExpressionExecutor.execute.__wrapped__.__module__ == "moto.dynamodb.parsing.executors"


def _transactions(client) -> list:
    """A sequence of transactions: ADDs creating and growing counters, a marker put on
    condition, a failed condition (nothing written), an ADD to a string (moto's own
    update, refused), a delete, a condition check. What each answered, then every item."""
    _table(client)
    key = lambda pk, sk: {"pk": {"S": pk}, "sk": {"S": sk}}  # noqa: E731

    def add(pk, sk, **counts):
        names = {f"#a{n}": name for n, name in enumerate(counts)}
        values = {f":a{n}": {"N": str(v)} for n, v in enumerate(counts.values())}
        return {"Update": {"TableName": TABLE, "Key": key(pk, sk), "ExpressionAttributeNames": names,
                           "ExpressionAttributeValues": values,
                           "UpdateExpression": "ADD " + ", ".join(f"#a{n} :a{n}" for n in range(len(counts)))}}

    def marker(pk, version, expect=None):
        op = {"TableName": TABLE, "Item": {**key(pk, "FACT"), "v": {"N": str(version)}}}
        if expect is None:
            op["ConditionExpression"] = "attribute_not_exists(pk)"
        else:
            op["ConditionExpression"] = "v = :v"
            op["ExpressionAttributeValues"] = {":v": {"N": str(expect)}}
        return {"Put": op}

    client.put_item(TableName=TABLE, Item={**key("S", "1"), "n": {"S": "text"}})
    steps = [
        [marker("M1", 1), add("F", "2026-01#a", n=1, r0=1), add("F", "2026-01#b", n=1)],
        [marker("M1", 2, expect=1), add("F", "2026-01#a", r1=1, c0=-1, c1=1), add("F", "2026-01#b", n=-1)],
        [marker("M1", 3, expect=1), add("F", "2026-01#a", n=5)],  # stale marker: cancelled, nothing written
        [marker("M2", 1), add("S", "1", n=1)],  # ADD to a string: moto's own update refuses it
        [{"Delete": {"TableName": TABLE, "Key": key("M1", "FACT"), "ConditionExpression": "v = :v",
                     "ExpressionAttributeValues": {":v": {"N": "2"}}}}, add("F", "2026-01#a", n=-1)],
        [{"ConditionCheck": {"TableName": TABLE, "Key": key("F", "2026-01#b"), "ConditionExpression": "n = :z",
                             "ExpressionAttributeValues": {":z": {"N": "0"}}}}, add("F", "2026-02#a", n=2)],
    ]
    answers = []
    for items in steps:
        try:
            client.transact_write_items(TransactItems=items)
            answers.append("ok")
        except client.exceptions.TransactionCanceledException as exc:
            answers.append(("cancelled", [r.get("Code") for r in exc.response.get("CancellationReasons", [])]))
        except Exception as exc:  # noqa: BLE001 - whatever moto answers, both must answer it
            answers.append((type(exc).__name__, str(exc)[:80]))
    items = sorted(client.scan(TableName=TABLE)["Items"], key=lambda i: (i["pk"]["S"], i["sk"]["S"]))
    return [answers, items]


def test_transactions_answer_and_write_as_moto_does(monkeypatch):
    from moto.dynamodb.models import DynamoDBBackend

    with mock_aws():
        fast = _transactions(boto3.client("dynamodb", region_name="us-east-1"))
    monkeypatch.setattr(DynamoDBBackend, "transact_write_items", DynamoDBBackend.transact_write_items.__wrapped__)
    with mock_aws():
        slow = _transactions(boto3.client("dynamodb", region_name="us-east-1"))
    assert fast == slow
    assert fast[0][2] == ("cancelled", ["ConditionalCheckFailed", "None"])
