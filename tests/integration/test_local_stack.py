"""The local stack (`leadflow serve`) with small fake handlers, over real loopback sockets.

Each test starts its own stack on free ports with its own data directory. The
fake API handler writes with boto3, so whatever it writes travels the same path
as in AWS: table → stream → poller → stream handler.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest

from leadflow_infra.local.gateway import Gateway
from leadflow_infra.local.stream_poller import DeadLetterFile
from leadflow_infra.local.stream_poller import is_lead_record
from leadflow_infra.local.stack import LocalStack
from leadflow_infra.local.tables import create_table_kwargs, template_table_properties

REPO = Path(__file__).resolve().parents[2]
TABLE = "leadflow"


# -- helpers ---------------------------------------------------------------------------


def call(url: str, method: str, path: str, body: bytes | None = None, headers: list[tuple[str, str]] | None = None):
    """One request; returns (status, headers as a list of pairs, body bytes)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for name, value in headers or []:
            conn.putheader(name, value)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        return response.status, response.getheaders(), response.read()
    finally:
        conn.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def lead_item(lead_id: str, **extra: Any) -> dict[str, Any]:
    return {"PK": {"S": f"LEAD#{lead_id}"}, "SK": {"S": "LEAD"}, **extra}


def pk(record: dict[str, Any]) -> str:
    return record["dynamodb"]["Keys"]["PK"]["S"]


class FakeApi:
    """Echoes the event; `/put?id=X` writes lead X with boto3; `/boom` raises."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.contexts: list[Any] = []

    def __call__(self, event: dict[str, Any], context: Any) -> Any:
        self.events.append(event)
        self.contexts.append(context)
        path = event["rawPath"]
        if path == "/boom":
            raise RuntimeError("secret internals")
        if path == "/put":
            lead_id = event["queryStringParameters"]["id"]
            boto3.client("dynamodb").put_item(TableName=os.environ["LEADFLOW_TABLE"], Item=lead_item(lead_id))
            return {"statusCode": 201, "body": json.dumps({"id": lead_id})}
        if path == "/respond":
            return {
                "statusCode": 202,
                "headers": {"content-type": "image/png", "x-one": "1"},
                "multiValueHeaders": {"x-many": ["a", "b"]},
                "cookies": ["session=abc; Path=/", "theme=dark"],
                "body": base64.b64encode(b"\x89PNG\x00").decode(),
                "isBase64Encoded": True,
            }
        if path == "/inferred":
            return {"hello": "world"}
        return {"statusCode": 200, "headers": {"content-type": "application/json"}, "body": json.dumps(event)}


class FakeStream:
    """Records every batch; fails the records whose PK is in `fail` (`fail_times` times each)."""

    def __init__(self, fail: set[str] | None = None, fail_times: int = 10**6, raise_times: int = 0) -> None:
        self.batches: list[list[dict[str, Any]]] = []
        self.fail = fail or set()
        self.fail_times = fail_times
        self.raise_times = raise_times
        self._failed: dict[str, int] = {}

    def __call__(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        records = event["Records"]
        self.batches.append(records)
        if self.raise_times > 0:
            self.raise_times -= 1
            raise RuntimeError("stream handler crashed")
        failures = []
        for record in records:
            key = pk(record)
            if key in self.fail and self._failed.get(key, 0) < self.fail_times:
                self._failed[key] = self._failed.get(key, 0) + 1
                failures.append({"itemIdentifier": record["dynamodb"]["SequenceNumber"]})
        return {"batchItemFailures": failures}

    def delivered(self) -> list[str]:
        return [pk(r) for batch in self.batches for r in batch]


@pytest.fixture
def table_properties() -> dict[str, Any]:
    return template_table_properties("LeadsTable")


@pytest.fixture
def make_stack(tmp_path, table_properties, start_stack):
    def make(**options: Any) -> LocalStack:
        options.setdefault("api", FakeApi())
        options.setdefault("stream", FakeStream())
        options.setdefault("jobs", None)
        options.setdefault("handoff", None)
        options.setdefault("handoff_retry", None)
        options.setdefault("record_filter", is_lead_record)
        options.setdefault("data_dir", tmp_path / "data")
        options.setdefault("table_properties", table_properties)
        options.setdefault("retry_base_delay", 0.01)
        options.setdefault("poll_interval", 0.02)
        return start_stack(**options)

    return make


@pytest.fixture
def gateway():
    api = FakeApi()
    gw = Gateway(lambda event: api(event, None), port=0, access_log=False)
    gw.start()
    gw.api = api  # type: ignore[attr-defined]
    yield gw
    gw.stop()


# -- gateway ---------------------------------------------------------------------------


def test_gateway_json_post_with_query_headers_and_cookies_builds_v2_event(gateway):
    status, _, body = call(
        gateway.url,
        "POST",
        "/v1/echo?a=1&a=2&b=x%20y",
        body=b'{"email": "jane@acme.com"}',
        headers=[
            ("Content-Type", "application/json"),
            ("X-Repeated", "one"),
            ("X-Repeated", "two"),
            ("Cookie", "c1=v1; c2=v2"),
            ("User-Agent", "tests/1.0"),
        ],
    )

    assert status == 200
    event = json.loads(body)
    assert event["version"] == "2.0"
    assert event["routeKey"] == "$default"
    assert event["rawPath"] == "/v1/echo"
    assert event["rawQueryString"] == "a=1&a=2&b=x%20y"
    assert event["queryStringParameters"] == {"a": "1,2", "b": "x y"}
    assert event["headers"]["x-repeated"] == "one,two"
    assert event["headers"]["content-type"] == "application/json"
    assert all(name == name.lower() for name in event["headers"])
    assert "cookie" not in event["headers"]
    assert event["cookies"] == ["c1=v1", "c2=v2"]
    assert event["body"] == '{"email": "jane@acme.com"}'
    assert event["isBase64Encoded"] is False
    assert "pathParameters" not in event
    context = event["requestContext"]
    assert context["http"] == {
        "method": "POST",
        "path": "/v1/echo",
        "protocol": "HTTP/1.1",
        "sourceIp": "127.0.0.1",
        "userAgent": "tests/1.0",
    }
    assert context["stage"] == "$default"
    assert context["routeKey"] == "$default"
    assert context["apiId"] == "local"
    assert context["accountId"] and context["requestId"] and context["domainName"] and context["time"]
    assert abs(context["timeEpoch"] / 1000 - time.time()) < 60


def test_gateway_get_without_query_or_body_omits_them(gateway):
    status, _, body = call(gateway.url, "GET", "/v1/leads/ld_1")

    event = json.loads(body)
    assert status == 200
    assert event["requestContext"]["http"]["method"] == "GET"
    assert event["rawQueryString"] == ""
    assert "queryStringParameters" not in event
    assert "body" not in event
    assert "cookies" not in event
    assert event["isBase64Encoded"] is False


def test_gateway_form_body_passes_as_text(gateway):
    form = b"email=jane%40acme.com&first_name=Jane"
    _, _, body = call(
        gateway.url,
        "POST",
        "/v1/forms/contact",
        body=form,
        headers=[("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")],
    )

    event = json.loads(body)
    assert event["body"] == form.decode()
    assert event["isBase64Encoded"] is False


def test_gateway_binary_body_is_base64_encoded(gateway):
    payload = bytes(range(256))
    _, _, body = call(
        gateway.url, "PUT", "/upload", body=payload, headers=[("Content-Type", "application/octet-stream")]
    )

    event = json.loads(body)
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == payload


def test_gateway_structured_result_maps_status_headers_cookies_and_base64_body(gateway):
    status, headers, body = call(gateway.url, "GET", "/respond")

    assert status == 202
    assert body == b"\x89PNG\x00"
    assert ("Content-Type", "image/png") in headers or ("content-type", "image/png") in headers
    lowered = [(name.lower(), value) for name, value in headers]
    assert ("x-one", "1") in lowered
    assert [v for n, v in lowered if n == "x-many"] == ["a", "b"]
    assert [v for n, v in lowered if n == "set-cookie"] == ["session=abc; Path=/", "theme=dark"]


def test_gateway_plain_json_result_is_inferred_as_200_json(gateway):
    status, headers, body = call(gateway.url, "GET", "/inferred")

    assert status == 200
    assert dict((n.lower(), v) for n, v in headers)["content-type"] == "application/json"
    assert json.loads(body) == {"hello": "world"}


def test_gateway_body_over_256kib_returns_413_without_invoking_handler(gateway):
    status, _, body = call(
        gateway.url, "POST", "/v1/events", body=b"x" * (256 * 1024 + 1), headers=[("Content-Type", "application/json")]
    )

    assert status == 413
    assert json.loads(body)["error"] == "payload_too_large"
    assert json.loads(body)["message"]
    assert gateway.api.events == []


def test_gateway_body_of_exactly_256kib_reaches_handler(gateway):
    status, _, _ = call(
        gateway.url, "POST", "/v1/events", body=b"x" * (256 * 1024), headers=[("Content-Type", "text/plain")]
    )

    assert status == 200
    assert len(gateway.api.events) == 1


def test_gateway_handler_exception_returns_500_json_without_details(gateway):
    status, _, body = call(gateway.url, "POST", "/boom", body=b"{}", headers=[("Content-Type", "application/json")])

    assert status == 500
    document = json.loads(body)
    assert document["error"] == "internal_error"
    assert "secret internals" not in body.decode()
    assert "Traceback" not in body.decode()


def test_healthz_with_a_component_not_ready_returns_503_without_invoking_handler():
    api = FakeApi()
    gw = Gateway(lambda event: api(event, None), health=lambda: {"moto": True, "poller": False}, access_log=False)
    gw.start()
    try:
        status, _, body = call(gw.url, "GET", "/healthz")
    finally:
        gw.stop()

    assert status == 503
    assert json.loads(body)["poller"] is False
    assert api.events == []


# -- the whole stack -------------------------------------------------------------------


def test_healthz_when_stack_started_returns_200_with_every_component(make_stack):
    stack = make_stack()

    status, _, body = call(stack.url, "GET", "/healthz")

    document = json.loads(body)
    assert status == 200
    assert document["status"] == "ok"
    assert document["moto"] and document["tables"] and document["poller"] and document["scheduler"]
    assert document["published"] and (stack.data_dir / "stack.json").exists()
    assert stack.functions["api"].invocations == 0


def test_api_write_reaches_stream_handler_in_lambda_record_shape(make_stack):
    stream = FakeStream()
    stack = make_stack(stream=stream)

    status, _, _ = call(stack.url, "POST", "/put?id=1", body=b"", headers=[("Content-Type", "application/json")])
    assert stack.drain(10)

    assert status == 201
    assert len(stream.batches) == 1
    (record,) = stream.batches[0]
    assert record["eventName"] == "INSERT"
    assert record["eventVersion"] == "1.1"
    assert record["eventSource"] == "aws:dynamodb"
    assert record["awsRegion"] == stack.region
    assert record["eventSourceARN"] == stack.stream_arn
    assert record["eventSourceARN"].startswith(f"arn:aws:dynamodb:{stack.region}:")
    change = record["dynamodb"]
    assert isinstance(change["ApproximateCreationDateTime"], int | float)
    assert abs(change["ApproximateCreationDateTime"] - time.time()) < 60
    assert change["Keys"] == {"PK": {"S": "LEAD#1"}, "SK": {"S": "LEAD"}}
    assert change["NewImage"] == lead_item("1")
    assert "OldImage" not in change
    assert change["StreamViewType"] == "NEW_AND_OLD_IMAGES"
    assert change["SequenceNumber"].isdigit()
    assert change["SizeBytes"] > 0


def test_api_handler_gets_a_lambda_context_per_invocation(make_stack):
    api = FakeApi()
    stack = make_stack(api=api)

    call(stack.url, "GET", "/a")
    call(stack.url, "GET", "/b")

    first, second = api.contexts
    assert first.function_name == "leadflow-api"
    assert first.invoked_function_arn.endswith(":function:leadflow-api")
    assert first.memory_limit_in_mb > 0
    assert first.log_group_name and first.log_stream_name and first.function_version
    assert 0 < first.get_remaining_time_in_millis() <= 30_000
    assert first.aws_request_id != second.aws_request_id


def test_stream_update_delivers_modify_with_both_images_and_skips_non_lead_items(make_stack):
    stream = FakeStream()
    stack = make_stack(stream=stream)
    client = stack.client()

    client.put_item(TableName=TABLE, Item=lead_item("1", stage={"S": "lead"}))
    client.put_item(TableName=TABLE, Item={"PK": {"S": "LEAD#1"}, "SK": {"S": "EVENT#1"}})
    client.put_item(TableName=TABLE, Item=lead_item("1", stage={"S": "mql"}))
    assert stack.drain(10)

    records = [r for batch in stream.batches for r in batch]
    assert [r["eventName"] for r in records] == ["INSERT", "MODIFY"]
    assert records[1]["dynamodb"]["OldImage"]["stage"] == {"S": "lead"}
    assert records[1]["dynamodb"]["NewImage"]["stage"] == {"S": "mql"}
    assert stack.poller.stats["records_filtered_out"] == 1


def _write_batch(stack: LocalStack, ids: list[str]) -> None:
    stack.client().batch_write_item(
        RequestItems={TABLE: [{"PutRequest": {"Item": lead_item(i)}} for i in ids]}
    )


def test_stream_reported_failure_redelivers_it_and_later_records_only(make_stack):
    stream = FakeStream(fail={"LEAD#2"}, fail_times=1)
    stack = make_stack(stream=stream)

    _write_batch(stack, ["0", "1", "2", "3", "4"])
    assert stack.drain(10)

    first = next(batch for batch in stream.batches if "LEAD#2" in [pk(r) for r in batch])
    failed_at = [pk(r) for r in first].index("LEAD#2")
    retried = stream.batches[stream.batches.index(first) + 1]
    assert [r["dynamodb"]["SequenceNumber"] for r in retried] == [
        r["dynamodb"]["SequenceNumber"] for r in first[failed_at:]
    ]
    delivered = stream.delivered()
    assert delivered.count("LEAD#0") == 1
    assert delivered.count("LEAD#1") == 1
    assert delivered.count("LEAD#2") == 2
    assert stack.poller.stats["retries"] == 1
    assert not stack.dead_letter_path.exists()


def test_stream_handler_exception_with_template_bisect_splits_the_batch_and_retries_nothing(make_stack):
    stream = FakeStream(raise_times=1)
    stack = make_stack(stream=stream)  # EventLogStream: BisectBatchOnFunctionError true, window 1 s

    _write_batch(stack, ["0", "1", "2"])
    assert stack.drain(10)

    first, *after = stream.batches
    assert [pk(r) for r in first] == ["LEAD#0", "LEAD#1", "LEAD#2"]  # gathered within the batching window
    assert after == [first[:1], first[1:]]  # the two halves, first half first
    assert stack.poller.stats["bisections"] == 1
    assert stack.poller.stats["retries"] == 0
    assert not stack.dead_letter_path.exists()


def test_stream_handler_exception_without_bisect_retries_the_whole_batch(make_stack):
    stream = FakeStream(raise_times=1)
    stack = make_stack(stream=stream, bisect_on_error=False)

    _write_batch(stack, ["0", "1", "2"])
    assert stack.drain(10)

    # The batch that raised comes again, whole, once; the poller may have split the
    # three writes over several batches, and later batches arrive once.
    first, retried = stream.batches[0], stream.batches[1]
    assert retried == first
    later = [pk(r) for batch in stream.batches[2:] for r in batch]
    assert sorted([pk(r) for r in first] + later) == ["LEAD#0", "LEAD#1", "LEAD#2"]
    assert stack.poller.stats["bisections"] == 0


def test_stream_failure_after_retry_limit_lands_in_dead_letter_file_and_stream_moves_on(make_stack):
    stream = FakeStream(fail={"LEAD#1"})
    stack = make_stack(stream=stream, max_retries=2)

    _write_batch(stack, ["0", "1", "2"])
    assert stack.drain(10)
    stack.client().put_item(TableName=TABLE, Item=lead_item("later"))
    assert stack.drain(10)

    assert stream.delivered().count("LEAD#1") == 3  # the first attempt and two retries
    (line,) = DeadLetterFile(stack.dead_letter_path).read()
    assert line["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert line["requestContext"]["approximateInvokeCount"] == 3
    dead = [pk(r) for r in line["records"]]
    assert dead[0] == "LEAD#1"
    assert "LEAD#0" not in dead
    info = line["DDBStreamBatchInfo"]
    assert info["streamArn"] == stack.stream_arn
    assert info["startSequenceNumber"] == line["records"][0]["dynamodb"]["SequenceNumber"]
    assert info["batchSize"] == len(dead)
    assert stream.batches[-1][0]["dynamodb"]["Keys"]["PK"]["S"] == "LEAD#later"


def test_handoff_lanes_from_template_deliver_every_key_in_write_order_once(make_stack):
    lock = threading.Lock()
    seen: list[tuple[str, str]] = []

    def handoff(event, context):
        with lock:
            seen.extend((pk(r), r["dynamodb"]["NewImage"]["v"]["N"]) for r in event["Records"])
        return {"batchItemFailures": []}

    stack = make_stack(handoff=handoff, record_filter="template")
    client = stack.client()
    moves = {"S": "[]"}  # the handoff's FilterCriteria: lead items with a `moves` outbox
    for version in range(3):
        client.batch_write_item(RequestItems={TABLE: [
            {"PutRequest": {"Item": lead_item(str(i), v={"N": str(version)}, moves=moves)}} for i in range(8)]})
    client.put_item(TableName=TABLE, Item=lead_item("no-moves"))
    assert stack.drain(10)

    lanes = stack.pollers["handoff"].settings.parallelization_factor
    assert lanes > 1 and stack.functions["handoff"].concurrency == lanes
    for i in range(8):
        assert [v for key, v in seen if key == f"LEAD#{i}"] == ["0", "1", "2"]
    assert len(seen) == 24


def test_restart_on_same_data_dir_restores_items_without_redelivering_them(make_stack, tmp_path):
    data_dir = tmp_path / "restart"
    first_stream = FakeStream()
    first = make_stack(stream=first_stream, data_dir=data_dir)
    client = first.client()
    client.put_item(TableName=TABLE, Item=lead_item("1", blob={"B": b"\x00\xff"}, n={"N": "3.5"}))
    client.put_item(TableName=TABLE, Item={"PK": {"S": "LEAD#1"}, "SK": {"S": "EVENT#1"}})
    assert first.drain(10)
    first.stop()
    assert first.saved_items == 2
    assert (data_dir / "leadflow.db").exists()

    second_stream = FakeStream()
    second = make_stack(stream=second_stream, data_dir=data_dir)
    client = second.client()
    restored = client.get_item(TableName=TABLE, Key={"PK": {"S": "LEAD#1"}, "SK": {"S": "LEAD"}})["Item"]
    client.put_item(TableName=TABLE, Item=lead_item("2"))
    assert second.drain(10)

    assert second.loaded_items == 2
    assert restored["blob"] == {"B": b"\x00\xff"}
    assert restored["n"] == {"N": "3.5"}
    assert second_stream.delivered() == ["LEAD#2"]


def kept_items(data_dir: Path) -> list[dict[str, Any]]:
    """The items the running (or stopped) stack's store holds on disk, read beside it."""
    with sqlite3.connect(data_dir / "leadflow.db") as db:
        return [json.loads(item) for (item,) in db.execute("SELECT item FROM items")]


def test_a_change_is_on_disk_when_its_call_returns_without_a_stop(make_stack, tmp_path):
    data_dir = tmp_path / "periodic"
    stack = make_stack(data_dir=data_dir, snapshot_every=0.2)

    stack.client().put_item(TableName=TABLE, Item=lead_item("1"))

    assert kept_items(data_dir) == [lead_item("1")]


def test_no_persist_starts_empty_and_writes_no_snapshot(make_stack, tmp_path):
    data_dir = tmp_path / "ephemeral"
    first = make_stack(data_dir=data_dir, persist=False)
    first.client().put_item(TableName=TABLE, Item=lead_item("1"))
    first.stop()

    second = make_stack(data_dir=data_dir, persist=False)

    assert not (data_dir / "leadflow.db").exists()
    assert second.client().scan(TableName=TABLE)["Count"] == 0


def test_tables_created_from_template_leads_table_match_its_definition(make_stack, table_properties):
    stack = make_stack()
    client = stack.client()

    table = client.describe_table(TableName=TABLE)["Table"]
    ttl = client.describe_time_to_live(TableName=TABLE)["TimeToLiveDescription"]

    assert {k["AttributeName"]: k["KeyType"] for k in table["KeySchema"]} == {
        k["AttributeName"]: k["KeyType"] for k in table_properties["KeySchema"]
    }
    indexes = {gsi["IndexName"]: gsi for gsi in table["GlobalSecondaryIndexes"]}
    assert set(indexes) == {gsi["IndexName"] for gsi in table_properties["GlobalSecondaryIndexes"]}
    assert all(gsi["Projection"]["ProjectionType"] == "KEYS_ONLY" for gsi in indexes.values())
    assert table["StreamSpecification"] == {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"}
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert ttl == {"AttributeName": "ttl", "TimeToLiveStatus": "ENABLED"}


def test_create_table_kwargs_drop_what_create_table_cannot_take():
    properties = {
        "TableName": {"Fn::Sub": "${AWS::StackName}-leads"},
        "AttributeDefinitions": [{"AttributeName": "PK", "AttributeType": "S"}],
        "KeySchema": [{"AttributeName": "PK", "KeyType": "HASH"}],
        "BillingMode": "PAY_PER_REQUEST",
        "StreamSpecification": {"StreamViewType": "NEW_IMAGE"},
        "TimeToLiveSpecification": {"AttributeName": "ttl", "Enabled": True},
        "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
        "SSESpecification": {"SSEEnabled": True},
        "DeletionProtectionEnabled": {"Fn::If": ["Protected", True, False]},
        "Tags": [{"Key": "stack", "Value": {"Ref": "AWS::StackName"}}],
    }

    kwargs = create_table_kwargs(properties, "local")

    assert kwargs == {
        "TableName": "local",
        "AttributeDefinitions": properties["AttributeDefinitions"],
        "KeySchema": properties["KeySchema"],
        "BillingMode": "PAY_PER_REQUEST",
        "StreamSpecification": {"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"},
    }


def test_scheduler_runs_jobs_after_one_interval_and_survives_failures(make_stack):
    calls: list[dict[str, Any]] = []
    ran = threading.Event()

    def jobs(event, context):
        calls.append(event)
        if len(calls) >= 2:
            ran.set()
        raise RuntimeError("job failed")

    stack = make_stack(jobs=jobs, rescore_every=0.2)
    assert calls == []  # not at start

    assert ran.wait(5)
    assert calls[:2] == [{"job": "rescore"}, {"job": "rescore"}]
    assert stack.scheduler.running
    assert stack.health()["scheduler"]


def test_scheduler_run_now_invokes_jobs_handler_with_the_job(make_stack):
    seen: list[tuple[dict[str, Any], str]] = []
    stack = make_stack(jobs=lambda event, context: seen.append((event, context.function_name)) or "done")

    assert stack.run_job("funnel") == "done"
    assert seen == [({"job": "funnel"}, "leadflow-jobs")]


# -- the command -----------------------------------------------------------------------


def test_serve_command_runs_real_handlers_until_sigterm_then_exits_zero_and_saves_data(tmp_path):
    port = free_port()
    data_dir = tmp_path / "serve"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "functions"), str(REPO), env.get("PYTHONPATH")]))
    process = subprocess.Popen(
        [sys.executable, "-m", "leadflow_infra.cli", "serve", "--port", str(port), "--data-dir", str(data_dir), "--quiet"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120  # start-up on a loaded machine; the loop ends at the first 200
        status = None
        while time.monotonic() < deadline and process.poll() is None:
            try:
                status, _, _ = call(f"http://127.0.0.1:{port}", "GET", "/healthz")
            except OSError:
                status = None
            if status == 200:
                break
            time.sleep(0.1)
        assert status == 200, process.stderr.read() if process.poll() is not None else "no /healthz 200"
        event = {"type": "form_submitted", "email": "jane@acme.com", "properties": {"form_kind": "newsletter"}}
        status, _, body = call(
            f"http://127.0.0.1:{port}",
            "POST",
            "/v1/events",
            body=json.dumps(event).encode(),
            headers=[("Content-Type", "application/json")],
        )
        assert status == 200, body

        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()

    assert process.returncode == 0, err
    assert f"http://127.0.0.1:{port}" in out
    assert kept_items(data_dir), "the event's lead was not saved"
