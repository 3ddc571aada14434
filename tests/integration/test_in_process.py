"""The local stack's own clients reach the embedded endpoint without a socket or a signature,
and get the answers, errors, regions and accounts they would get over HTTP."""

from __future__ import annotations

import boto3
import pytest
from botocore.exceptions import ClientError

from leadflow_infra.local import in_process
from leadflow_infra.local.moto_server import MotoServer

KEY = [{"AttributeName": "PK", "KeyType": "HASH"}]
ATTRIBUTES = [{"AttributeName": "PK", "AttributeType": "S"}]


@pytest.fixture
def server():
    moto = MotoServer()
    moto.start()
    moto.reset()
    yield moto
    moto.reset()
    moto.stop()


def _client(url: str, service: str = "dynamodb", region: str = "us-east-1"):
    from botocore.config import Config

    return boto3.session.Session().client(service, region_name=region, endpoint_url=url,
                                          aws_access_key_id="testing", aws_secret_access_key="testing",
                                          config=Config(retries={"total_max_attempts": 1}, connect_timeout=2))


@pytest.fixture
def no_network(monkeypatch):
    """Fails any request that would leave through a socket, and any SigV4 signature."""
    from botocore.auth import SigV4Auth
    from botocore.httpsession import URLLib3Session

    sent = []

    def send(self, request):
        sent.append(request.url)
        raise AssertionError(f"a socket was used for {request.url}")

    def add_auth(self, request):
        raise AssertionError("a request was signed")

    monkeypatch.setattr(URLLib3Session, "send", send)
    monkeypatch.setattr(SigV4Auth, "add_auth", add_auth)
    return sent


def test_dynamodb_answers_and_errors_come_back_as_over_http(server, no_network):
    ddb = _client(server.url)
    ddb.create_table(TableName="t", KeySchema=KEY, AttributeDefinitions=ATTRIBUTES, BillingMode="PAY_PER_REQUEST")
    ddb.put_item(TableName="t", Item={"PK": {"S": "a"}, "n": {"N": "1"}, "b": {"B": b"\x00\xff"}})
    item = ddb.get_item(TableName="t", Key={"PK": {"S": "a"}}, ConsistentRead=True)["Item"]
    assert item == {"PK": {"S": "a"}, "n": {"N": "1"}, "b": {"B": b"\x00\xff"}}

    with pytest.raises(ClientError) as failed:
        ddb.put_item(TableName="t", Item={"PK": {"S": "a"}}, ConditionExpression="attribute_not_exists(PK)")
    assert failed.value.response["Error"]["Code"] == "ConditionalCheckFailedException"
    assert failed.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    with pytest.raises(ddb.exceptions.ResourceNotFoundException):
        ddb.get_item(TableName="missing", Key={"PK": {"S": "a"}})
    assert no_network == []


def test_the_region_of_the_call_picks_the_backend_as_over_http(server, no_network):
    from moto.backends import get_backend

    _client(server.url, region="eu-west-1").create_table(
        TableName="eu", KeySchema=KEY, AttributeDefinitions=ATTRIBUTES, BillingMode="PAY_PER_REQUEST")
    backends = get_backend("dynamodb")["123456789012"]
    assert "eu" in backends["eu-west-1"].tables and "eu" not in backends["us-east-1"].tables
    arn = _client(server.url, region="eu-west-1").describe_table(TableName="eu")["Table"]["TableArn"]
    assert arn == "arn:aws:dynamodb:eu-west-1:123456789012:table/eu"


def test_queues_work_in_process(server, no_network):
    sqs = _client(server.url, "sqs")
    url = sqs.create_queue(QueueName="q")["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody='{"lead_id": "ld_1"}')
    messages = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0)["Messages"]
    assert [m["Body"] for m in messages] == ['{"lead_id": "ld_1"}']


def test_other_endpoints_and_a_detached_one_still_go_over_http(server, monkeypatch):
    from botocore.httpsession import URLLib3Session

    sent = []
    send = URLLib3Session.send

    def counting(self, request):
        sent.append(request.url)
        return send(self, request)

    monkeypatch.setattr(URLLib3Session, "send", counting)
    ddb = _client(server.url)
    ddb.list_tables()
    assert sent == []
    in_process.detach(server.url)
    try:
        ddb.list_tables()  # the endpoint still listens, and answers the signed request
        assert sent == [server.url + "/"]
    finally:
        in_process.attach(server.url, server._server._server.app)
    with pytest.raises(Exception):
        _client("http://127.0.0.1:9").list_tables()  # nobody listens there: the socket was tried
    assert sent[-1] == "http://127.0.0.1:9/"
