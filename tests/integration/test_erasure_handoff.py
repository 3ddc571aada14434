"""Erasure through the handoff, on a moto server with real receivers on 127.0.0.1: what
was queued for the person delivers nothing afterwards (retries, dead-letter replays, a
stream the handoff had not caught up with), the ledger keeps nothing of them, and
HubSpot and Salesforce are asked to delete the contact once, retried while they are
down and dead-lettered when they refuse."""

from __future__ import annotations

import json
import time

import boto3
import pytest

from leadflow import container
from leadflow.domain.handoff import is_erasure
from leadflow_infra import dlq
from leadflow_infra.local.filters import stream_filter
from leadflow_infra.local.queue_poller import to_lambda_record as to_sqs_record
from leadflow_infra.local.stream_poller import to_lambda_record
from leadflow_infra.receivers import HubSpotReceiver, SalesforceReceiver, SlackReceiver, WebhookReceiver
from tests.integration.conftest import TABLE, moto_server_with_table, Context, http_event

SECRET = "whsec_" + "aW50ZWdyYXRpb24tdGVzdC1zZWNyZXQ="
EMAIL = "jane.erased@acme.io"
BUYER = {"first_name": "Jane", "last_name": "Erased", "phone": "+1 555 0100", "job_title": "VP Marketing",
         "company": "Acme", "company_size": 200, "industry": "software", "country": "US", "budget": "yes",
         "authority": "decision_maker", "need": "x", "timeline": "this_quarter"}
PERSONAL = (EMAIL, "Jane", "Erased", "555 0100")


@pytest.fixture
def stack(monkeypatch):
    with moto_server_with_table(monkeypatch) as (client, queues):
        yield from _with_receivers(monkeypatch, client, queues)


def _with_receivers(monkeypatch, client, queues):
    receivers = {"slack": SlackReceiver().start(), "webhook": WebhookReceiver(SECRET).start(),
                 "hubspot": HubSpotReceiver("pat-test").start(), "salesforce": SalesforceReceiver("client", "secret").start()}
    env = {"LEADFLOW_SLACK_WEBHOOK_URL": f"{receivers['slack'].url}/services/T/B/x",
           "LEADFLOW_CRM_WEBHOOK_URL": f"{receivers['webhook'].url}/crm", "LEADFLOW_CRM_WEBHOOK_SECRET": SECRET,
           "LEADFLOW_HUBSPOT_TOKEN": "pat-test", "LEADFLOW_HUBSPOT_BASE_URL": receivers["hubspot"].url,
           "LEADFLOW_SALESFORCE_INSTANCE_URL": receivers["salesforce"].url,
           "LEADFLOW_SALESFORCE_CLIENT_ID": "client", "LEADFLOW_SALESFORCE_CLIENT_SECRET": "secret",
           "LEADFLOW_RETRY_BASE_SECONDS": "0"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    container.reset()
    yield Stack(client, queues, receivers)
    container.reset()
    for receiver in receivers.values():
        receiver.stop()


class Stack:
    def __init__(self, client, queues, receivers):
        self.dynamodb, self.queues, self.rx = client, queues, receivers
        self.sqs = boto3.client("sqs")
        self._seen = 0

    def call(self, method: str, path: str, body=None):
        from leadflow.handlers import api as api_handler

        resp = api_handler.handler(http_event(method, path, body), Context())
        return resp["statusCode"], json.loads(resp["body"]) if resp.get("body") else None

    def new_sql(self) -> str:
        status, body = self.call("POST", "/v1/events", {"type": "form_submitted", "email": EMAIL, "traits": BUYER,
                                                        "properties": {"form_kind": "demo_request"}})
        assert status == 200 and any(move.endswith("->sql") for move in body["moves"]), body
        return body["lead_id"]

    def erase(self, lead_id: str) -> None:
        assert self.call("DELETE", f"/v1/leads/{lead_id}")[0] == 200

    def handoff_batch(self) -> dict:
        """The stream records the HandoffFunction's FilterCriteria lets through, since the last call."""
        arn = self.dynamodb.describe_table(TableName=TABLE)["Table"]["LatestStreamArn"]
        streams = boto3.client("dynamodbstreams")
        shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]
        iterator = streams.get_shard_iterator(StreamArn=arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON")
        raw = streams.get_records(ShardIterator=iterator["ShardIterator"], Limit=1000)["Records"]
        wanted = stream_filter("HandoffFunction", "MoveStream")
        records = [to_lambda_record(r, arn, "us-east-1") for r in raw[self._seen:]]
        self._seen = len(raw)
        return {"Records": [r for r in records if wanted(r)]}

    def run_stream(self, batch: dict | None = None) -> dict:
        from leadflow.handlers import handoff as handoff_handler

        return handoff_handler.handler(batch if batch is not None else self.handoff_batch(), Context("HandoffFunction"))

    def sweep(self, lead_id: str) -> None:
        """What the event log function does with the lead's REMOVE record."""
        from leadflow.usecases import event_log

        event_log.record(container.store(), event_log.LeadChange(lead_id=lead_id, removed=True, applied=[]))

    def take(self, queue: str, count: int) -> list[dict]:
        """`count` messages of the queue, waiting out their delays (a generous deadline)."""
        url = self.queues[queue].url
        taken: dict[str, dict] = {}
        deadline = time.monotonic() + 60
        while len(taken) < count and time.monotonic() < deadline:
            got = self.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                           MessageAttributeNames=["All"], MessageSystemAttributeNames=["All"])
            taken.update({m["MessageId"]: m for m in got.get("Messages", [])})
        assert len(taken) == count, f"{len(taken)} messages on {queue}, {count} expected"
        return list(taken.values())

    def queued(self, queue: str) -> int:
        """Messages on the queue, visible, delayed or in flight."""
        names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesDelayed",
                 "ApproximateNumberOfMessagesNotVisible"]
        found = self.sqs.get_queue_attributes(QueueUrl=self.queues[queue].url, AttributeNames=names)["Attributes"]
        return sum(int(found[n]) for n in names)

    def run_retries(self, messages: list[dict]) -> dict:
        from leadflow.handlers import handoff_retry as handoff_retry_handler

        queue = self.queues["HandoffRetryQueue"]
        event = {"Records": [to_sqs_record(m, queue.arn, "us-east-1") for m in messages]}
        return handoff_retry_handler.handler(event, Context("HandoffRetryFunction"))

    def items(self, lead_id: str) -> list[dict]:
        return self.dynamodb.query(TableName=TABLE, KeyConditionExpression="PK = :pk",
                                   ExpressionAttributeValues={":pk": {"S": f"LEAD#{lead_id}"}})["Items"]

    def requests(self, name: str, method: str | None = None, path_part: str = "") -> list:
        return [r for r in self.rx[name].requests if (method is None or r.method == method) and path_part in r.path]


def holds_nothing_personal(text: str) -> bool:
    return not any(p in text for p in PERSONAL)


def test_queued_retry_after_erasure_delivers_nothing_and_leaves_no_ledger_item(stack):
    stack.rx["webhook"].fail_next(1, status=503)
    stack.rx["hubspot"].fail_next(1, status=503)
    lead_id = stack.new_sql()
    assert stack.run_stream() == {"batchItemFailures": []}
    queued = stack.take("HandoffRetryQueue", 2)
    assert sorted(json.loads(m["Body"])["sink"] for m in queued) == ["hubspot", "webhook"]
    assert all(holds_nothing_personal(m["Body"] + json.dumps(m.get("MessageAttributes", {}))) for m in queued)
    webhook_before = len(stack.rx["webhook"].accepted)

    stack.erase(lead_id)
    result = stack.run_retries(queued)

    assert result == {"batchItemFailures": []}  # acknowledged: nothing to retry
    assert len(stack.rx["webhook"].accepted) == webhook_before
    assert EMAIL not in stack.rx["hubspot"].contacts
    assert [it["SK"]["S"] for it in stack.items(lead_id)] == ["ERASED"]  # no ledger item came back


def test_retry_message_in_the_earlier_shape_is_checked_against_the_erasure(stack):
    from leadflow.usecases.handoff import RETRY_TYPE

    lead_id = stack.new_sql()
    lead = container.store().get(lead_id)
    notice = container.handoff().notices(lead, [lead.history[-1].move_id])[0]
    old_shape = {"type": RETRY_TYPE, "sink": "webhook", "attempt": 2, "last_error": "HTTP 503",
                 "notice": notice.model_dump(mode="json")}
    stack.erase(lead_id)

    assert container.handoff().on_retry(old_shape) == "erased"
    assert stack.rx["webhook"].accepted == []
    assert [it["SK"]["S"] for it in stack.items(lead_id)] == ["ERASED"]


def test_stream_behind_the_erasure_sends_nothing_of_the_erased_person(stack):
    lead_id = stack.new_sql()
    batch = stack.handoff_batch()  # the move, not yet handed off...
    stack.erase(lead_id)  # ...when the person is erased

    stack.run_stream(batch)

    assert stack.rx["slack"].accepted == [] and stack.rx["webhook"].accepted == []
    assert EMAIL not in stack.rx["hubspot"].contacts and stack.rx["salesforce"].leads == {}
    assert [it["SK"]["S"] for it in stack.items(lead_id)] == ["ERASED"]


def test_dlq_replay_after_erasure_resends_nothing_and_list_shows_nothing_of_them(stack):
    stack.rx["hubspot"].fail_next(1, status=400, body='{"status":"error","message":"Property values were not valid"}')
    lead_id = stack.new_sql()
    stack.run_stream()
    letters = dlq.peek(stack.sqs, stack.queues["HandoffDeadLetterQueue"].url)
    assert [letter.sink for letter in letters] == ["hubspot"]
    stack.erase(lead_id)

    listed = [letter.row() for letter in dlq.peek(stack.sqs, stack.queues["HandoffDeadLetterQueue"].url)]
    rows = dlq.replay(stack.sqs, container.handoff().ledger, stack.queues["HandoffDeadLetterQueue"].url,
                      stack.queues["HandoffRetryQueue"].url, leads=container.store())

    assert holds_nothing_personal(json.dumps(listed)) and holds_nothing_personal(json.dumps(letters[0].body))
    assert [(r["sink"], r["replayed"], r["note"]) for r in rows] == [("hubspot", False, "lead erased; dropped")]
    assert stack.queued("HandoffRetryQueue") == 0  # nothing re-queued
    assert EMAIL not in stack.rx["hubspot"].contacts
    assert [it["SK"]["S"] for it in stack.items(lead_id)] == ["ERASED"]  # the replay created no ledger item


def test_erasure_deletes_the_contact_in_hubspot_and_salesforce_once_under_a_redelivered_batch(stack):
    lead_id = stack.new_sql()
    stack.run_stream()
    contact_id = stack.rx["hubspot"].contacts[EMAIL]["hs_object_id"]
    assert lead_id in stack.rx["salesforce"].leads
    stack.erase(lead_id)
    stack.sweep(lead_id)

    batch = stack.handoff_batch()
    assert [r["eventName"] for r in batch["Records"]] == ["REMOVE"]
    first = stack.run_stream(batch)
    again = stack.run_stream(batch)  # the stream redelivers the batch

    assert first == again == {"batchItemFailures": []}
    assert stack.rx["hubspot"].gdpr_deleted == [contact_id] and EMAIL not in stack.rx["hubspot"].contacts
    assert len(stack.requests("hubspot", "POST", "gdpr-delete")) == 1  # by the contact id, once
    assert json.loads(stack.requests("hubspot", "POST", "gdpr-delete")[0].body) == {"objectId": contact_id}
    assert stack.rx["salesforce"].deleted == [lead_id] and len(stack.requests("salesforce", "DELETE")) == 1
    (tombstone,) = stack.items(lead_id)
    states = {k: v["M"]["st"]["S"] for k, v in tombstone.items() if k.startswith("sink_")}
    assert states == {"sink_hubspot": "sent", "sink_salesforce": "sent"}
    assert holds_nothing_personal(json.dumps(tombstone))


def test_erasure_while_the_crm_is_down_is_retried_without_the_address_and_deletes_once(stack):
    lead_id = stack.new_sql()
    stack.run_stream()
    contact_id = stack.rx["hubspot"].contacts[EMAIL]["hs_object_id"]
    stack.erase(lead_id)
    stack.rx["hubspot"].down()
    stack.rx["salesforce"].down()

    assert stack.run_stream() == {"batchItemFailures": []}
    queued = stack.take("HandoffRetryQueue", 2)
    bodies = [json.loads(m["Body"]) for m in queued]
    assert sorted(b["sink"] for b in bodies) == ["hubspot", "salesforce"]
    assert all(is_erasure(b["move_id"]) and b["lead_id"] == lead_id for b in bodies)
    assert all(holds_nothing_personal(m["Body"]) for m in queued)
    stack.rx["hubspot"].up()
    stack.rx["salesforce"].up()

    assert stack.run_retries(queued) == {"batchItemFailures": []}
    assert stack.run_retries(queued) == {"batchItemFailures": []}  # SQS delivers at least once

    assert stack.rx["hubspot"].gdpr_deleted == [contact_id]
    assert stack.rx["salesforce"].deleted == [lead_id]
    assert len([r for r in stack.rx["hubspot"].accepted if "gdpr-delete" in r.path]) == 1  # once, not twice


def test_erasure_the_crm_refuses_is_dead_lettered_and_a_replay_deletes_it(stack):
    lead_id = stack.new_sql()
    stack.run_stream()
    stack.erase(lead_id)
    stack.rx["salesforce"].fail_next(1, status=403, body='[{"message":"insufficient access","errorCode":"INSUFFICIENT_ACCESS"}]',
                                     when=lambda r: r.method == "DELETE")

    stack.run_stream()
    letters = dlq.peek(stack.sqs, stack.queues["HandoffDeadLetterQueue"].url)

    assert [(letter.sink, is_erasure(letter.move_id)) for letter in letters] == [("salesforce", True)]
    assert "INSUFFICIENT_ACCESS" in letters[0].row()["reason"] and holds_nothing_personal(json.dumps(letters[0].body))
    assert lead_id in stack.rx["salesforce"].leads  # not deleted yet
    rows = dlq.replay(stack.sqs, container.handoff().ledger, stack.queues["HandoffDeadLetterQueue"].url,
                      stack.queues["HandoffRetryQueue"].url, leads=container.store())
    assert [r["note"] for r in rows] == ["requeued"]
    assert stack.run_retries(stack.take("HandoffRetryQueue", 1)) == {"batchItemFailures": []}
    assert stack.rx["salesforce"].deleted == [lead_id]


def test_erasure_of_a_person_never_pushed_to_hubspot_deletes_by_the_address_on_the_first_attempt(stack):
    stack.rx["hubspot"].fail_next(1, status=400, body='{"status":"error","message":"Property values were not valid"}')
    lead_id = stack.new_sql()
    stack.run_stream()  # the HubSpot push was refused: no contact id is known
    stack.erase(lead_id)

    stack.run_stream()

    (request,) = stack.requests("hubspot", "POST", "gdpr-delete")
    assert json.loads(request.body) == {"objectId": EMAIL, "idProperty": "email"}
    assert EMAIL in stack.rx["hubspot"].blocklist  # HubSpot had no such contact: it blocks the address


def test_remove_record_of_a_stale_erasure_deletes_nothing_after_a_later_one(stack):
    lead_id = stack.new_sql()
    stack.run_stream()
    stack.erase(lead_id)
    stale = stack.handoff_batch()  # the first erasure's REMOVE record, held back
    status, body = stack.call("POST", "/v1/events", {"type": "identify", "email": EMAIL})  # the person is back
    assert status == 200 and body["lead_id"] == lead_id
    stack.run_stream()
    stack.erase(lead_id)
    stack.run_stream()  # the second erasure deletes what is there now
    deletes = len(stack.requests("salesforce", "DELETE"))

    assert stack.run_stream(stale) == {"batchItemFailures": []}  # the stale record, redelivered late

    assert len(stack.requests("salesforce", "DELETE")) == deletes
