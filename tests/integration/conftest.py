from __future__ import annotations

import json

import boto3
import pytest
from moto import mock_aws

from leadflow import container
from leadflow_infra.local.atomic import make_dynamodb_atomic
from leadflow_infra.local.tables import create_table, template_table_properties

make_dynamodb_atomic()

TABLE = "leadflow-test"


@pytest.fixture
def aws(monkeypatch):
    monkeypatch.setenv("LEADFLOW_TABLE", TABLE)
    monkeypatch.delenv("LEADFLOW_API_KEY", raising=False)
    monkeypatch.delenv("LEADFLOW_RULES", raising=False)
    with mock_aws():
        client = boto3.client("dynamodb")
        create_table(client, template_table_properties(), TABLE)
        container.reset()
        yield client
        container.reset()


@pytest.fixture
def store(aws):
    from leadflow.adapters.dynamodb.store import DynamoLeadStore

    return DynamoLeadStore(TABLE, client=aws)


class Context:
    function_name = "api"
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:api"
    memory_limit_in_mb = 512
    aws_request_id = "req-1"
    log_group_name = "/aws/lambda/api"
    log_stream_name = "local"

    def get_remaining_time_in_millis(self) -> int:
        return 10_000


def http_event(method: str, path: str, body=None, *, headers=None, query: str = "", raw_body: str | None = None) -> dict:
    hdrs = {"content-type": "application/json", **{k.lower(): v for k, v in (headers or {}).items()}}
    text = raw_body if raw_body is not None else (json.dumps(body) if body is not None else None)
    qs = dict(p.split("=", 1) for p in query.split("&") if "=" in p) if query else None
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": query,
        "headers": hdrs,
        "queryStringParameters": qs,
        "requestContext": {
            "accountId": "123456789012", "apiId": "local", "domainName": "localhost", "domainPrefix": "localhost",
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1", "userAgent": "t"},
            "requestId": "r", "routeKey": "$default", "stage": "$default", "time": "20/Nov/2026:10:00:00 +0000",
            "timeEpoch": 0,
        },
        "body": text,
        "isBase64Encoded": False,
    }


@pytest.fixture
def call(aws):
    from leadflow.handlers import api as api_handler

    def _call(method: str, path: str, body=None, **kw):
        resp = api_handler.handler(http_event(method, path, body, **kw), Context())
        return resp["statusCode"], json.loads(resp["body"]) if resp.get("body") else None

    return _call
