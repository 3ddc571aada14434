"""write → stream → handoff handler under moto, with the batch shapes Lambda delivers
(the stream filtered by the template's FilterCriteria; the retry queue's SQS records)."""

from __future__ import annotations

import json

import boto3
import pytest

from leadflow import container
from leadflow_infra.local.filters import stream_filter
from leadflow_infra.local.stream_poller import to_lambda_record
from leadflow_infra.receivers import SlackReceiver, WebhookReceiver
from leadflow_infra.local.queue_poller import to_lambda_record as to_sqs_record
from tests.integration.conftest import TABLE, moto_server_with_table, Context

SECRET = "whsec_" + "aW50ZWdyYXRpb24tdGVzdC1zZWNyZXQ="
BUYER = {"first_name": "Jane", "job_title": "VP Marketing", "company": "Acme", "company_size": 200, "industry": "software",
         "country": "US", "budget": "yes", "authority": "decision_maker", "need": "x", "timeline": "this_quarter"}


@pytest.fixture
def aws(monkeypatch):
    """A real moto server over HTTP (streams need it), real Slack and CRM webhook receivers."""
    with moto_server_with_table(monkeypatch) as (client, queues):
        yield from _with_receivers(monkeypatch, client, queues)


def _with_receivers(monkeypatch, client, queues):
    slack, webhook = SlackReceiver().start(), WebhookReceiver(SECRET).start()
    monkeypatch.setenv("LEADFLOW_SLACK_WEBHOOK_URL", f"{slack.url}/services/T/B/x")
    monkeypatch.setenv("LEADFLOW_CRM_WEBHOOK_URL", f"{webhook.url}/crm")
    monkeypatch.setenv("LEADFLOW_CRM_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("LEADFLOW_RETRY_BASE_SECONDS", "0")
    container.reset()
    client.stack = {"dynamodb": client, "slack": slack, "webhook": webhook, "queues": queues}
    yield client
    container.reset()
    slack.stop()
    webhook.stop()


def handoff_batch(client) -> dict:
    """Every stream record so far that the HandoffFunction's FilterCriteria lets through."""
    arn = client.describe_table(TableName=TABLE)["Table"]["LatestStreamArn"]
    ds = boto3.client("dynamodbstreams")
    shard = ds.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]
    it = ds.get_shard_iterator(StreamArn=arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    wanted = stream_filter("HandoffFunction", "MoveStream")
    records = [to_lambda_record(r, arn, "us-east-1") for r in ds.get_records(ShardIterator=it, Limit=1000)["Records"]]
    return {"Records": [r for r in records if wanted(r)]}


@pytest.fixture
def stack(aws):
    return aws.stack


def test_sql_write_reaches_slack_and_crm_once_even_when_the_batch_is_redelivered(stack, call):
    from leadflow.handlers import handoff as handoff_handler

    call("POST", "/v1/events", {"type": "page_viewed", "email": "jane@acme.io", "properties": {"url": "/blog"}})
    call("POST", "/v1/events", {"type": "form_submitted", "email": "jane@acme.io", "traits": BUYER,
                                "properties": {"form_kind": "demo_request"}})
    call("POST", "/v1/events", {"type": "page_viewed", "email": "jane@acme.io", "properties": {"url": "/docs"}})
    batch = handoff_batch(stack["dynamodb"])

    first = handoff_handler.handler(batch, Context("HandoffFunction"))
    again = handoff_handler.handler(batch, Context("HandoffFunction"))

    # Only the writes that moved the lead invoke the handoff: new -> subscriber, -> sql.
    assert len(batch["Records"]) == 2
    assert first == again == {"batchItemFailures": []}
    assert [m["text"].split(":")[0] for m in stack["slack"].messages()] == ["New SQL"]
    assert sorted(d.payload["to_stage"] for d in stack["webhook"].deliveries) == ["sql", "subscriber"]
    assert len(set(stack["webhook"].ids())) == 2


def test_crm_outage_goes_to_the_retry_queue_and_the_retry_handler_delivers_it_once(stack, call):
    from leadflow.handlers import handoff as handoff_handler
    from leadflow.handlers import handoff_retry as handoff_retry_handler

    stack["webhook"].fail_next(1, status=503)
    call("POST", "/v1/events", {"type": "form_submitted", "email": "ann@acme.io", "traits": BUYER,
                                "properties": {"form_kind": "demo_request"}})

    assert handoff_handler.handler(handoff_batch(stack["dynamodb"]), Context("HandoffFunction")) == {"batchItemFailures": []}
    sqs = boto3.client("sqs")
    queue = stack["queues"]["HandoffRetryQueue"]
    messages = sqs.receive_message(QueueUrl=queue.url, MaxNumberOfMessages=10, WaitTimeSeconds=2,
                                   MessageAttributeNames=["All"], MessageSystemAttributeNames=["All"])["Messages"]
    event = {"Records": [to_sqs_record(m, queue.arn, "us-east-1") for m in messages]}
    result = handoff_retry_handler.handler(event, Context("HandoffRetryFunction"))
    replayed = handoff_retry_handler.handler(event, Context("HandoffRetryFunction"))  # SQS delivers at least once

    assert [json.loads(m["Body"])["sink"] for m in messages] == ["webhook"]
    assert result == replayed == {"batchItemFailures": []}
    assert len(stack["slack"].messages()) == 1  # Slack was not sent again by the retry
    assert len(stack["webhook"].deliveries) == 1 and len(stack["webhook"].failed) == 1


def test_every_sink_answering_costs_at_most_two_ledger_writes_per_move(stack, call, monkeypatch):
    """Six sinks on, every one answering: the delivery ledger writes at most twice per
    move (a claim of every sink, then their outcomes), counted on the ledger's client."""
    import os

    from leadflow.handlers import handoff as handoff_handler
    from leadflow_infra.receivers import HubSpotReceiver, SalesforceReceiver

    endpoint = os.environ["AWS_ENDPOINT_URL_DYNAMODB"]  # the moto server: SES and EventBridge too
    for name in ("AWS_ENDPOINT_URL_SESV2", "AWS_ENDPOINT_URL_EVENTBRIDGE"):
        monkeypatch.setenv(name, endpoint)
    boto3.client("sesv2").create_email_identity(EmailIdentity="alerts@leadflow.example")
    boto3.client("events").create_event_bus(Name="leadflow-test")
    with HubSpotReceiver("pat-test") as hubspot, SalesforceReceiver("client", "secret") as salesforce:
        for name, value in {"LEADFLOW_HUBSPOT_TOKEN": "pat-test", "LEADFLOW_HUBSPOT_BASE_URL": hubspot.url,
                            "LEADFLOW_SALESFORCE_INSTANCE_URL": salesforce.url,
                            "LEADFLOW_SALESFORCE_CLIENT_ID": "client", "LEADFLOW_SALESFORCE_CLIENT_SECRET": "secret",
                            "LEADFLOW_SES_FROM": "alerts@leadflow.example", "LEADFLOW_SALES_EMAIL": "sales@vendor.example",
                            "LEADFLOW_EVENT_BUS": "leadflow-test"}.items():
            monkeypatch.setenv(name, value)
        container.reset()
        call("POST", "/v1/events", {"type": "form_submitted", "email": "eve@acme.io", "traits": BUYER,
                                    "properties": {"form_kind": "demo_request"}})
        batch = handoff_batch(stack["dynamodb"])
        assert {s.name for s in container.handoff().sinks.values()} == {
            "slack", "email", "webhook", "hubspot", "salesforce", "eventbridge"}
        writes: list[str] = []
        container.handoff().ledger.client.meta.events.register(
            "before-call.dynamodb", lambda model, **_: writes.append(model.name)
            if model.name in ("UpdateItem", "PutItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems") else None)

        result = handoff_handler.handler(batch, Context("HandoffFunction"))
        lead_id = batch["Records"][0]["dynamodb"]["Keys"]["PK"]["S"].removeprefix("LEAD#")
        deliveries = container.handoff().ledger.deliveries(lead_id)

    moves = sum(len(json.loads(r["dynamodb"]["NewImage"]["moves"]["S"])) for r in batch["Records"])
    assert result == {"batchItemFailures": []}
    assert moves >= 1 and len(writes) <= 2 * moves, writes
    assert {d["status"] for d in deliveries} == {"sent"}
    assert len(deliveries) == 4 * moves + 2  # every move to the four CRM sinks; the SQL to Slack and email
