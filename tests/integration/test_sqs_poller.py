"""SQS queues from the template and the poller standing in for Lambda's SQS event source mapping.

Everything runs against a real moto server over HTTP, as ``leadflow serve`` runs
it. moto's state is process-wide: every test resets it and names its queues
with a unique prefix. SQS delays and visibility timeouts are whole seconds, so
the slow paths use 1 second and the rest use a visibility timeout of 0.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
import uuid
from typing import Any

import boto3
import pytest

from leadflow_infra.local.moto_server import MotoServer
from leadflow_infra.local.queues import QueueSnapshot, create_queues, template_queues
from leadflow_infra.local.queue_poller import SqsPoller, failed_message_ids

REGION = "us-east-1"


# -- fixtures and helpers --------------------------------------------------------------


@pytest.fixture(scope="module")
def moto():
    server = MotoServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def sqs(moto):
    moto.reset()
    return boto3.client("sqs", endpoint_url=moto.url, region_name=REGION)


def retry_resources(*, visibility: int = 1, max_receive: int = 2) -> dict[str, dict[str, Any]]:
    """A retry queue listed before its dead-letter queue, as in the production design."""
    return {
        "RetryQueue": {
            "Type": "AWS::SQS::Queue",
            "Properties": {
                "VisibilityTimeout": visibility,
                "MessageRetentionPeriod": 1209600,
                "SqsManagedSseEnabled": True,
                "RedrivePolicy": {
                    "deadLetterTargetArn": {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]},
                    "maxReceiveCount": max_receive,
                },
            },
        },
        "DeadLetterQueue": {"Type": "AWS::SQS::Queue", "Properties": {"SqsManagedSseEnabled": True}},
    }


@pytest.fixture
def make_queues(sqs):
    def make(**options: Any):
        return create_queues(sqs, retry_resources(**options), prefix=f"t{uuid.uuid4().hex[:8]}")

    return make


class FakeHandler:
    """Records every batch; fails the bodies in ``fail`` (``fail_times`` times each); raises ``raise_times`` times."""

    def __init__(self, fail: set[str] | None = None, fail_times: int = 10**6, raise_times: int = 0) -> None:
        self.batches: list[list[dict[str, Any]]] = []
        self.times: list[float] = []
        self.fail = fail or set()
        self.fail_times = fail_times
        self.raise_times = raise_times
        self._failed: dict[str, int] = {}

    def __call__(self, event: dict[str, Any]) -> dict[str, Any]:
        records = event["Records"]
        self.batches.append(records)
        self.times.append(time.time())
        if self.raise_times > 0:
            self.raise_times -= 1
            raise RuntimeError("handler crashed")
        failures = []
        for record in records:
            body = record["body"]
            if body in self.fail and self._failed.get(body, 0) < self.fail_times:
                self._failed[body] = self._failed.get(body, 0) + 1
                failures.append({"itemIdentifier": record["messageId"]})
        return {"batchItemFailures": failures}

    def records(self) -> list[dict[str, Any]]:
        return [r for batch in self.batches for r in batch]

    def bodies(self) -> list[str]:
        return [r["body"] for r in self.records()]


@pytest.fixture
def make_poller(sqs):
    pollers: list[SqsPoller] = []

    def make(queue, handler, **options: Any) -> SqsPoller:
        options.setdefault("wait_seconds", 0)
        options.setdefault("poll_interval", 0.02)
        poller = SqsPoller(sqs, queue.url, queue.arn, handler, region=REGION, **options)
        pollers.append(poller)
        poller.start()
        return poller

    yield make
    for poller in pollers:
        poller.stop(drain_timeout=0)


def depth(sqs, url: str) -> dict[str, int]:
    attributes = sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=[
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        ],
    )["Attributes"]
    return {name: int(value) for name, value in attributes.items()}


def receive_all(sqs, url: str) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    while True:
        batch = sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, MessageSystemAttributeNames=["All"], MessageAttributeNames=["All"]
        ).get("Messages", [])
        if not batch:
            return messages
        messages.extend(batch)


def send(sqs, url: str, *bodies: str, **options: Any) -> None:
    for body in bodies:
        sqs.send_message(QueueUrl=url, MessageBody=body, **options)


# -- records -----------------------------------------------------------------------------


def test_receive_message_with_attributes_delivers_lambda_record_shape(sqs, make_queues, make_poller):
    queues = make_queues()
    retry = queues["RetryQueue"]
    handler = FakeHandler()
    sent_at = int(time.time() * 1000)
    sqs.send_message(
        QueueUrl=retry.url,
        MessageBody='{"lead_id": "ld_1"}',
        MessageAttributes={
            "kind": {"DataType": "String", "StringValue": "handoff"},
            "attempt": {"DataType": "Number", "StringValue": "3"},
            "blob": {"DataType": "Binary", "BinaryValue": b"\x00\xff"},
        },
    )
    poller = make_poller(retry, handler, wait_seconds=1)

    assert poller.drain(10)

    (record,) = handler.records()
    assert set(record) == {
        "messageId", "receiptHandle", "body", "attributes", "messageAttributes", "md5OfBody",
        "md5OfMessageAttributes", "eventSource", "eventSourceARN", "awsRegion",
    }
    assert record["body"] == '{"lead_id": "ld_1"}'
    assert record["md5OfBody"] == hashlib.md5(record["body"].encode()).hexdigest()
    assert record["eventSource"] == "aws:sqs"
    assert record["eventSourceARN"] == retry.arn
    assert record["eventSourceARN"].startswith(f"arn:aws:sqs:{REGION}:123456789012:")
    assert record["awsRegion"] == REGION
    assert record["messageId"] and record["receiptHandle"]
    attributes = record["attributes"]
    assert set(attributes) == {
        "ApproximateReceiveCount", "SentTimestamp", "SenderId", "ApproximateFirstReceiveTimestamp",
    }
    assert all(isinstance(value, str) for value in attributes.values())
    assert attributes["ApproximateReceiveCount"] == "1"
    assert abs(int(attributes["SentTimestamp"]) - sent_at) < 60_000
    assert int(attributes["ApproximateFirstReceiveTimestamp"]) >= int(attributes["SentTimestamp"])
    assert record["messageAttributes"] == {
        "kind": {"stringValue": "handoff", "stringListValues": [], "binaryListValues": [], "dataType": "String"},
        "attempt": {"stringValue": "3", "stringListValues": [], "binaryListValues": [], "dataType": "Number"},
        "blob": {
            "binaryValue": base64.b64encode(b"\x00\xff").decode(),
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": "Binary",
        },
    }
    json.dumps(handler.batches[0])  # the event is plain JSON, as Lambda delivers it


def test_message_without_attributes_delivers_empty_message_attributes_and_no_md5(sqs, make_queues, make_poller):
    retry = make_queues()["RetryQueue"]
    handler = FakeHandler()
    send(sqs, retry.url, "plain")
    poller = make_poller(retry, handler)

    assert poller.drain(10)

    (record,) = handler.records()
    assert record["messageAttributes"] == {}
    assert "md5OfMessageAttributes" not in record


# -- partial batch responses -------------------------------------------------------------


def test_handler_success_deletes_every_message_in_the_batch(sqs, make_queues, make_poller):
    retry = make_queues()["RetryQueue"]
    handler = FakeHandler()
    send(sqs, retry.url, "a", "b", "c")
    poller = make_poller(retry, handler)

    assert poller.drain(10)

    assert sorted(handler.bodies()) == ["a", "b", "c"]
    assert depth(sqs, retry.url) == {
        "ApproximateNumberOfMessages": 0,
        "ApproximateNumberOfMessagesNotVisible": 0,
        "ApproximateNumberOfMessagesDelayed": 0,
    }
    assert poller.stats["received"] == poller.stats["deleted"] == 3
    assert poller.stats["failed"] == poller.stats["errors"] == 0


def test_reported_item_failure_reappears_after_visibility_timeout_with_receive_count_2(sqs, make_queues, make_poller):
    retry = make_queues(visibility=1, max_receive=5)["RetryQueue"]
    handler = FakeHandler(fail={"b"}, fail_times=1)
    send(sqs, retry.url, "a", "b", "c")
    poller = make_poller(retry, handler)

    assert poller.drain(10)

    first, *later = handler.batches
    assert sorted(r["body"] for r in first) == ["a", "b", "c"]
    assert [r["body"] for batch in later for r in batch] == ["b"]
    failed = next(r for r in first if r["body"] == "b")
    (retried,) = later[0]
    assert retried["messageId"] == failed["messageId"]
    assert retried["receiptHandle"] != failed["receiptHandle"]
    assert retried["attributes"]["ApproximateReceiveCount"] == "2"
    assert handler.times[1] - handler.times[0] >= 0.9  # hidden for the 1 s visibility timeout
    assert poller.stats == {
        "received": 4, "invocations": 2, "deleted": 3, "failed": 1, "errors": 0, "poll_errors": 0,
    }


def test_item_failing_max_receive_count_times_lands_in_dead_letter_queue(sqs, make_queues, make_poller):
    queues = make_queues(visibility=0, max_receive=2)
    retry, dead = queues["RetryQueue"], queues["DeadLetterQueue"]
    handler = FakeHandler(fail={"poison"})
    send(sqs, retry.url, "poison", MessageAttributes={"kind": {"DataType": "String", "StringValue": "handoff"}})
    send(sqs, retry.url, "fine")
    poller = make_poller(retry, handler)

    assert poller.drain(10)

    assert handler.bodies().count("poison") == 2
    assert handler.bodies().count("fine") == 1
    poison = [r for r in handler.records() if r["body"] == "poison"]
    assert [r["attributes"]["ApproximateReceiveCount"] for r in poison] == ["1", "2"]
    (dead_letter,) = receive_all(sqs, dead.url)
    assert dead_letter["Body"] == "poison"
    assert dead_letter["MessageId"] == next(r["messageId"] for r in handler.records() if r["body"] == "poison")
    assert dead_letter["MessageAttributes"]["kind"]["StringValue"] == "handoff"
    assert depth(sqs, retry.url)["ApproximateNumberOfMessages"] == 0


def test_handler_exception_fails_whole_batch_and_deletes_nothing(sqs, make_queues, make_poller):
    retry = make_queues(visibility=0, max_receive=5)["RetryQueue"]
    handler = FakeHandler(raise_times=1)
    send(sqs, retry.url, "a", "b")
    poller = make_poller(retry, handler)

    assert poller.drain(10)

    first, second = handler.batches
    assert {r["messageId"] for r in second} == {r["messageId"] for r in first}
    assert {r["attributes"]["ApproximateReceiveCount"] for r in second} == {"2"}
    assert poller.stats["errors"] == 1
    assert poller.stats["failed"] == 2
    assert poller.stats["deleted"] == 2


def test_item_identifier_not_in_batch_fails_whole_batch(sqs, make_queues, make_poller):
    retry = make_queues(visibility=0, max_receive=5)["RetryQueue"]
    answers = [{"batchItemFailures": [{"itemIdentifier": "not-a-message-id"}]}, None]
    batches: list[list[str]] = []

    def handler(event):
        batches.append(sorted(r["body"] for r in event["Records"]))
        return answers.pop(0)

    send(sqs, retry.url, "a", "b")
    poller = make_poller(retry, handler)

    assert poller.drain(10)

    assert batches == [["a", "b"], ["a", "b"]]
    assert poller.stats["failed"] == 2
    assert poller.stats["deleted"] == 2
    assert poller.stats["errors"] == 0


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (None, set()),
        ({}, set()),
        ({"batchItemFailures": None}, set()),
        ({"batchItemFailures": []}, set()),
        ({"batchItemFailures": [{"itemIdentifier": "m1"}]}, {"m1"}),
        ({"batchItemFailures": [{"itemIdentifier": ""}]}, None),
        ({"batchItemFailures": [{"itemIdentifier": None}]}, None),
        ({"batchItemFailures": [{"itemId": "m1"}]}, None),
        ({"batchItemFailures": [{"itemIdentifier": "m9"}]}, None),
        ({"batchItemFailures": {"itemIdentifier": "m1"}}, None),
    ],
)
def test_failed_message_ids_with_lambda_response_rules_returns_failed_set_or_none(response, expected):
    assert failed_message_ids(response, {"m1", "m2"}) == expected


def test_batch_size_above_ten_with_batching_window_invokes_once_with_every_message(sqs, make_queues, make_poller):
    retry = make_queues()["RetryQueue"]
    handler = FakeHandler()
    bodies = [f"m{i}" for i in range(15)]
    for start in range(0, 15, 10):
        sqs.send_message_batch(
            QueueUrl=retry.url, Entries=[{"Id": b, "MessageBody": b} for b in bodies[start : start + 10]]
        )
    poller = make_poller(retry, handler, batch_size=15, max_batching_window=1)

    assert poller.drain(10)

    assert len(handler.batches) == 1
    assert sorted(handler.bodies()) == sorted(bodies)


def test_batch_size_above_ten_without_batching_window_is_rejected(sqs, make_queues):
    retry = make_queues()["RetryQueue"]

    with pytest.raises(ValueError, match="batching_window"):
        SqsPoller(sqs, retry.url, retry.arn, FakeHandler(), region=REGION, batch_size=11)


# -- delays and drain --------------------------------------------------------------------


def test_delayed_message_is_not_delivered_before_its_delay(sqs, make_queues, make_poller):
    retry = make_queues()["RetryQueue"]
    handler = FakeHandler()
    poller = make_poller(retry, handler)
    sent = time.time()
    send(sqs, retry.url, "later", DelaySeconds=2)
    delayed = depth(sqs, retry.url)["ApproximateNumberOfMessagesDelayed"]
    early = handler.batches[:]
    if time.time() - sent < 1.9:  # still inside the delay (a loaded machine may not be): nothing delivered yet
        assert early == [] and delayed == 1

    assert poller.drain(10)
    (record,) = handler.records()
    assert handler.times[0] - sent >= 1.95
    received, sent_ms = (int(record["attributes"][k]) for k in ("ApproximateFirstReceiveTimestamp", "SentTimestamp"))
    assert received - sent_ms >= 1950


def test_drain_with_delayed_message_waits_only_when_include_delayed(sqs, make_queues, make_poller):
    retry = make_queues()["RetryQueue"]
    handler = FakeHandler()
    poller = make_poller(retry, handler)
    send(sqs, retry.url, "later", DelaySeconds=1)

    assert poller.drain(5, include_delayed=False)
    assert handler.batches == []

    assert poller.drain(5, include_delayed=True)
    assert handler.bodies() == ["later"]


def test_drain_with_message_in_flight_waits_for_its_redelivery(sqs, make_queues, make_poller):
    retry = make_queues(visibility=1, max_receive=5)["RetryQueue"]
    handler = FakeHandler(fail={"flaky"}, fail_times=1)
    send(sqs, retry.url, "flaky")
    poller = make_poller(retry, handler)

    assert poller.drain(10)

    assert handler.bodies() == ["flaky", "flaky"]
    assert depth(sqs, retry.url)["ApproximateNumberOfMessagesNotVisible"] == 0


def test_drain_when_poller_stopped_returns_false(sqs, make_queues):
    retry = make_queues()["RetryQueue"]
    poller = SqsPoller(sqs, retry.url, retry.arn, FakeHandler(), region=REGION)

    assert poller.drain(0.2) is False


def test_stop_with_drain_timeout_delivers_pending_messages_first(sqs, make_queues, make_poller):
    retry = make_queues()["RetryQueue"]
    handler = FakeHandler()
    poller = make_poller(retry, handler)
    send(sqs, retry.url, "x", "y")

    assert poller.stop(drain_timeout=5)

    assert sorted(handler.bodies()) == ["x", "y"]
    assert not poller.running


# -- queues from the template and the snapshot -------------------------------------------


def test_create_queues_with_any_get_att_form_creates_targets_first_and_resolves_arns(sqs):
    policy = {"maxReceiveCount": "5"}
    resources = {
        "ShortForm": {"Type": "AWS::SQS::Queue", "Properties": {
            "RedrivePolicy": {**policy, "deadLetterTargetArn": {"Fn::GetAtt": ["Dlq", "Arn"]}},
            "VisibilityTimeout": 45, "DelaySeconds": 2, "ReceiveMessageWaitTimeSeconds": 3}},
        "DottedForm": {"Type": "AWS::SQS::Queue", "Properties": {
            "RedrivePolicy": {**policy, "deadLetterTargetArn": {"Fn::GetAtt": "Dlq.Arn"}},
            "KmsMasterKeyId": {"Ref": "Key"}}},
        "Dlq": {"Type": "AWS::SQS::Queue", "Properties": {
            "MessageRetentionPeriod": 1209600, "SqsManagedSseEnabled": True}},
    }

    queues = create_queues(sqs, resources)

    assert list(queues)[0] == "Dlq"
    assert {q.name for q in queues.values()} == {"ShortForm", "DottedForm", "Dlq"}
    dlq_arn = queues["Dlq"].arn
    assert dlq_arn == f"arn:aws:sqs:{REGION}:123456789012:Dlq"
    for logical_id in ("ShortForm", "DottedForm"):
        attributes = sqs.get_queue_attributes(QueueUrl=queues[logical_id].url, AttributeNames=["All"])["Attributes"]
        assert json.loads(attributes["RedrivePolicy"]) == {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 5}
        assert queues[logical_id].dead_letter_target == "Dlq"
    short = sqs.get_queue_attributes(QueueUrl=queues["ShortForm"].url, AttributeNames=["All"])["Attributes"]
    assert short["VisibilityTimeout"] == "45"
    assert short["DelaySeconds"] == "2"
    assert short["ReceiveMessageWaitTimeSeconds"] == "3"
    dlq = sqs.get_queue_attributes(QueueUrl=queues["Dlq"].url, AttributeNames=["All"])["Attributes"]
    assert dlq["MessageRetentionPeriod"] == "1209600"
    assert "KmsMasterKeyId" not in dlq


def test_create_queues_with_prefix_names_queues_prefix_dash_logical_id(sqs):
    queues = create_queues(sqs, retry_resources(), prefix="dev")

    assert queues["RetryQueue"].name == "dev-RetryQueue"
    assert queues["DeadLetterQueue"].url.endswith("/dev-DeadLetterQueue")


@pytest.mark.parametrize(
    ("resources", "message"),
    [
        ({"A": {"Type": "AWS::SQS::Queue", "Properties": {"RedrivePolicy": {
            "deadLetterTargetArn": {"Fn::GetAtt": ["Missing", "Arn"]}, "maxReceiveCount": 1}}}}, "Missing"),
        ({"A": {"Type": "AWS::SQS::Queue", "Properties": {"RedrivePolicy": {
            "deadLetterTargetArn": {"Fn::GetAtt": ["B", "Arn"]}, "maxReceiveCount": 1}}},
          "B": {"Type": "AWS::SQS::Queue", "Properties": {"RedrivePolicy": {
              "deadLetterTargetArn": {"Fn::GetAtt": ["A", "Arn"]}, "maxReceiveCount": 1}}}}, "cycle"),
    ],
)
def test_create_queues_with_unresolvable_redrive_target_raises_before_creating_anything(resources, message):
    with pytest.raises(ValueError, match=message):
        create_queues(None, resources)


def test_create_queues_from_template_resolves_every_redrive_target(sqs):
    resources = template_queues()
    if not resources:
        pytest.skip("template.yaml has no AWS::SQS::Queue resource yet")

    queues = create_queues(sqs, resources, prefix="tpl")

    assert set(queues) == set(resources)
    for logical_id, queue in queues.items():
        properties = resources[logical_id].get("Properties") or {}
        attributes = sqs.get_queue_attributes(QueueUrl=queue.url, AttributeNames=["All"])["Attributes"]
        for key in ("VisibilityTimeout", "MessageRetentionPeriod", "DelaySeconds"):
            if isinstance(properties.get(key), int):
                assert attributes[key] == str(properties[key]), (logical_id, key)
        if "RedrivePolicy" in properties:
            policy = json.loads(attributes["RedrivePolicy"])
            assert policy["deadLetterTargetArn"] == queues[queue.dead_letter_target].arn
            assert policy["maxReceiveCount"] == int(properties["RedrivePolicy"]["maxReceiveCount"])


def test_queue_snapshot_after_moto_reset_restores_every_message_undelayed(sqs, moto, tmp_path):
    resources = retry_resources(visibility=30)
    queues = create_queues(sqs, resources, prefix="snap")
    retry, dead = queues["RetryQueue"], queues["DeadLetterQueue"]
    attributes = {
        "kind": {"DataType": "String", "StringValue": "handoff"},
        "blob": {"DataType": "Binary", "BinaryValue": b"\x00\xff"},
    }
    send(sqs, dead.url, "dead-1", MessageAttributes=attributes)
    send(sqs, dead.url, "dead-2")
    send(sqs, retry.url, "backing-off", DelaySeconds=900)
    send(sqs, retry.url, "in-flight")
    assert [m["Body"] for m in receive_all(sqs, retry.url)] == ["in-flight"]  # now invisible for 30 s
    snapshot = QueueSnapshot(sqs, tmp_path, queues)

    assert snapshot.dump() == 4
    moto.reset()
    restored_queues = create_queues(sqs, resources, prefix="snap")
    assert QueueSnapshot(sqs, tmp_path, restored_queues).load() == 4

    assert [p.name for p in tmp_path.iterdir()] == ["sqs.json"]
    dead_letters = {m["Body"]: m for m in receive_all(sqs, dead.url)}
    assert set(dead_letters) == {"dead-1", "dead-2"}
    assert dead_letters["dead-1"]["MessageAttributes"] == attributes
    assert "MessageAttributes" not in dead_letters["dead-2"]
    assert sorted(m["Body"] for m in receive_all(sqs, retry.url)) == ["backing-off", "in-flight"]


def test_queue_snapshot_dump_leaves_messages_unreceived(sqs, tmp_path):
    queues = create_queues(sqs, retry_resources(), prefix="peek")
    send(sqs, queues["RetryQueue"].url, "one")

    assert QueueSnapshot(sqs, tmp_path, queues).dump() == 1

    (message,) = receive_all(sqs, queues["RetryQueue"].url)
    assert message["Attributes"]["ApproximateReceiveCount"] == "1"


def test_queue_snapshot_load_without_file_loads_nothing(sqs, tmp_path):
    queues = create_queues(sqs, retry_resources(), prefix="none")

    assert QueueSnapshot(sqs, tmp_path / "missing", queues).load() == 0


def test_drain_after_concurrent_sends_delivers_every_message_once_and_leaves_nothing_to_save(
    sqs, make_queues, make_poller, tmp_path
):
    queues = make_queues()
    retry = queues["RetryQueue"]
    handler = FakeHandler()
    poller = make_poller(retry, handler)
    senders = [
        threading.Thread(target=send, args=(sqs, retry.url, *[f"{n}-{i}" for i in range(10)])) for n in range(3)
    ]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join()

    assert poller.drain(10)

    assert sorted(handler.bodies()) == sorted(f"{n}-{i}" for n in range(3) for i in range(10))
    assert QueueSnapshot(sqs, tmp_path, queues).dump() == 0
