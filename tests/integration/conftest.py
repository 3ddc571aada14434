from __future__ import annotations

import contextlib
import functools
import json

import boto3
import pytest
from moto import mock_aws

from leadflow import container
from leadflow_infra.local.atomic import make_dynamodb_atomic
from leadflow_infra.local.fast_moto import make_moto_fast
from leadflow_infra.local.gateway import build_event
from leadflow_infra.local.invoke import LambdaContext
from leadflow_infra.local.tables import create_table, template_table_properties
from leadflow_infra.template import FunctionSpec, find_template, function_spec, load_template

make_dynamodb_atomic()
make_moto_fast()

TABLE = "leadflow-test"


@contextlib.contextmanager
def moto_server_with_table(monkeypatch):
    """A real moto server over HTTP, as the local stack runs it (streams need it), with the
    template's table and queues and the environment naming them; yields (DynamoDB client,
    queues). Replaces the in-process moto of the other integration tests."""
    from leadflow_infra.local.moto_server import MotoServer
    from leadflow_infra.local.queues import create_queues, template_queues

    server = MotoServer()
    url = server.start()
    server.reset()  # moto's data is process-wide: start every test empty
    try:
        for name in ("AWS_ENDPOINT_URL_DYNAMODB", "AWS_ENDPOINT_URL_DYNAMODB_STREAMS", "AWS_ENDPOINT_URL_SQS"):
            monkeypatch.setenv(name, url)
        monkeypatch.setenv("LEADFLOW_TABLE", TABLE)
        monkeypatch.delenv("LEADFLOW_API_KEY", raising=False)
        monkeypatch.delenv("LEADFLOW_RULES", raising=False)
        client = boto3.client("dynamodb")
        create_table(client, template_table_properties(), TABLE)
        queues = create_queues(boto3.client("sqs"), template_queues())
        monkeypatch.setenv("LEADFLOW_RETRY_QUEUE_URL", queues["HandoffRetryQueue"].url)
        monkeypatch.setenv("LEADFLOW_DLQ_URL", queues["HandoffDeadLetterQueue"].url)
        yield client, queues
    finally:
        server.stop()


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


@functools.cache
def _function(logical_id: str) -> FunctionSpec:
    return function_spec(load_template(find_template()), logical_id)


class Context(LambdaContext):
    """The local stack's Lambda context for a template function (default: the API's)."""

    def __init__(self, function: str = "ApiFunction") -> None:
        spec = _function(function)
        super().__init__(spec.name, memory_mb=spec.memory_mb, timeout_s=spec.timeout, log_group_name=spec.log_group)


def http_event(method: str, path: str, body=None, *, headers=None, query: str = "", raw_body: str | None = None) -> dict:
    """The payload v2 event the local gateway (API Gateway's stand-in) builds for this request.

    ``body`` is sent as JSON, ``raw_body`` as its UTF-8 bytes; the content type is
    application/json unless ``headers`` names one.
    """
    hdrs = {"content-type": "application/json", **{k.lower(): v for k, v in (headers or {}).items()}}
    text = raw_body if raw_body is not None else (json.dumps(body) if body is not None else None)
    target = f"{path}?{query}" if query else path
    return build_event(method=method, target=target, headers=list(hdrs.items()),
                       body=text.encode("utf-8") if text is not None else b"", source_ip="127.0.0.1", server_port=443)


@pytest.fixture
def call(aws):
    from leadflow.handlers import api as api_handler

    def _call(method: str, path: str, body=None, **kw):
        resp = api_handler.handler(http_event(method, path, body, **kw), Context())
        return resp["statusCode"], json.loads(resp["body"]) if resp.get("body") else None

    return _call


@pytest.fixture
def start_stack():
    """Starts a LocalStack from its options, quiet and without snapshots unless told
    otherwise, and stops every one it started when the test ends."""
    from leadflow_infra.local.stack import LocalStack

    stacks: list = []

    def start(**options):
        options.setdefault("snapshot_every", 0)
        options.setdefault("access_log", False)
        stack = LocalStack(**options)
        stacks.append(stack)
        return stack.start()

    yield start
    for stack in stacks:
        stack.stop()


def cold_start_modules(*prefixes: str) -> list[str]:
    """The modules under these prefixes that importing the API handler loads, in a fresh
    interpreter (what a cold start pays for before the first request)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    script = ("import sys, leadflow.handlers.api; prefixes = sys.argv[1:]; "
              "print('\\n'.join(sorted(m for m in sys.modules if any(m == p or m.startswith(p + '.') "
              "for p in prefixes))))")
    out = subprocess.run([sys.executable, "-c", script, *prefixes], capture_output=True, text=True, timeout=60,
                         check=True, cwd=root, env={**os.environ, "PYTHONPATH": str(root / "functions"),
                                                    "LEADFLOW_TABLE": "t", "AWS_DEFAULT_REGION": "us-east-1"})
    return out.stdout.split()
