"""The stream pollers' in-process reads answer what moto's HTTP endpoint answers.

The same stream is read twice from the start, once through boto3 (moto's serializer,
botocore's parser) and once through :class:`LocalStreams`, and each record, as Lambda
delivers it (``to_lambda_record``), must be the same: every attribute type, nested
binary values, inserts, updates and removals. The poller's use of it is covered by the
local stack's own tests, which run on it.
"""

from __future__ import annotations

import boto3
import pytest
from botocore.exceptions import ClientError

from leadflow_infra.local.moto_server import LocalStreams, MotoServer
from leadflow_infra.local.stream_poller import to_lambda_record

REGION = "us-east-1"
ACCOUNT = "123456789012"


@pytest.fixture
def stream():
    """A moto server over HTTP, as the local stack runs it (moto's streams need one)."""
    server = MotoServer()
    url = server.start()
    server.reset()  # moto's data is process-wide: start empty
    try:
        ddb = boto3.client("dynamodb", region_name=REGION, endpoint_url=url)
        table = ddb.create_table(
            TableName="t",
            KeySchema=[{"AttributeName": "PK", "KeyType": "HASH"}, {"AttributeName": "SK", "KeyType": "RANGE"}],
            AttributeDefinitions=[{"AttributeName": "PK", "AttributeType": "S"},
                                  {"AttributeName": "SK", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
            StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        )["TableDescription"]
        yield ddb, table["LatestStreamArn"], boto3.client("dynamodbstreams", region_name=REGION, endpoint_url=url)
    finally:
        server.reset()
        server.stop()


def _every_type(n: int) -> dict:
    return {
        "PK": {"S": f"LEAD#{n}"}, "SK": {"S": "LEAD"},
        "s": {"S": "text é \u2028"}, "n": {"N": "-12.50"}, "b": {"B": bytes([0, 255, n])},
        "ss": {"SS": ["a", "b"]}, "ns": {"NS": ["1", "2.5"]}, "bs": {"BS": [b"\x00", b"\x01\x02"]},
        "m": {"M": {"inner": {"B": b"\xfe\xff"}, "deep": {"M": {"x": {"N": "3"}}},
                    "list": {"L": [{"S": "y"}, {"B": b"z"}, {"NULL": True}]}}},
        "l": {"L": [{"N": "1"}, {"M": {"k": {"BOOL": False}}}]},
        "t": {"BOOL": True}, "z": {"NULL": True},
    }


def _read_all(client, arn: str) -> list[dict]:
    shard = client.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]
    iterator = client.get_shard_iterator(StreamArn=arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON")[
        "ShardIterator"]
    records = []
    while True:
        page = client.get_records(ShardIterator=iterator, Limit=2)
        records += page["Records"]
        if not page["Records"]:
            return records
        iterator = page["NextShardIterator"]


def test_records_are_what_the_endpoint_answers(stream):
    ddb, arn, boto_streams = stream
    for n in range(3):
        ddb.put_item(TableName="t", Item=_every_type(n))
    ddb.update_item(TableName="t", Key={"PK": {"S": "LEAD#1"}, "SK": {"S": "LEAD"}},
                    UpdateExpression="SET s = :s ADD n :one",
                    ExpressionAttributeValues={":s": {"S": "changed"}, ":one": {"N": "1"}})
    ddb.delete_item(TableName="t", Key={"PK": {"S": "LEAD#2"}, "SK": {"S": "LEAD"}})

    over_http = _read_all(boto_streams, arn)
    in_process = _read_all(LocalStreams(region=REGION, account_id=ACCOUNT), arn)

    assert [r["eventName"] for r in over_http] == ["INSERT"] * 3 + ["MODIFY", "REMOVE"]
    assert [to_lambda_record(r, arn, REGION) for r in in_process] == \
        [to_lambda_record(r, arn, REGION) for r in over_http]


def test_positions_and_shards_match(stream):
    ddb, arn, boto_streams = stream
    for n in range(4):
        ddb.put_item(TableName="t", Item=_every_type(n))
    local = LocalStreams(region=REGION, account_id=ACCOUNT)
    shards = boto_streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]
    assert local.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"] == shards
    second = boto_streams.get_records(ShardIterator=boto_streams.get_shard_iterator(
        StreamArn=arn, ShardId=shards[0]["ShardId"], ShardIteratorType="TRIM_HORIZON")["ShardIterator"],
        Limit=2)["Records"][1]["dynamodb"]["SequenceNumber"]
    for kind in ("AFTER_SEQUENCE_NUMBER", "AT_SEQUENCE_NUMBER", "LATEST"):
        args = {"StreamArn": arn, "ShardId": shards[0]["ShardId"], "ShardIteratorType": kind}
        if kind != "LATEST":
            args["SequenceNumber"] = second
        expected = boto_streams.get_records(ShardIterator=boto_streams.get_shard_iterator(**args)["ShardIterator"])
        got = local.get_records(ShardIterator=local.get_shard_iterator(**args)["ShardIterator"])
        assert [r["dynamodb"]["SequenceNumber"] for r in got["Records"]] == \
            [r["dynamodb"]["SequenceNumber"] for r in expected["Records"]], kind


def test_an_unknown_iterator_is_a_client_error(stream):
    with pytest.raises(ClientError) as raised:
        LocalStreams(region=REGION, account_id=ACCOUNT).get_records(ShardIterator="gone", Limit=10)
    assert raised.value.response["Error"]["Code"] == "ExpiredIteratorException"
