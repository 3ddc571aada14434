"""write → stream → handler under moto, with the batch shape Lambda delivers."""

from __future__ import annotations

import boto3
import pytest

from leadflow import container
from leadflow.domain.engine import replay
from leadflow_infra.local.moto_server import MotoServer
from leadflow_infra.local.stream_poller import is_lead_record, to_lambda_record
from leadflow_infra.local.tables import create_table, template_table_properties
from tests.integration.conftest import TABLE, Context
from tests.conftest import TEST_LEAD_IDS, lead_id_for


@pytest.fixture
def aws(monkeypatch):
    """A real moto server over HTTP, as the local stack runs it (streams need it)."""
    server = MotoServer()
    url = server.start()
    server.reset()  # moto's data is process-wide: start every test empty
    for name in ("AWS_ENDPOINT_URL_DYNAMODB", "AWS_ENDPOINT_URL_DYNAMODB_STREAMS"):
        monkeypatch.setenv(name, url)
    monkeypatch.setenv("LEADFLOW_TABLE", TABLE)
    client = boto3.client("dynamodb")
    create_table(client, template_table_properties(), TABLE)
    container.reset()
    yield client
    container.reset()
    server.stop()


def _stream_batch(client):
    arn = client.describe_table(TableName=TABLE)["Table"]["LatestStreamArn"]
    ds = boto3.client("dynamodbstreams")
    shard = ds.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]
    it = ds.get_shard_iterator(StreamArn=arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    records = ds.get_records(ShardIterator=it, Limit=1000)["Records"]
    return {"Records": [to_lambda_record(r, arn, "us-east-1") for r in records if is_lead_record(r)]}


def test_stream_appends_event_log_and_replay_matches_lead(aws, call, store, rules):
    from leadflow.handlers import event_log as stream_handler

    for e in [{"type": "identify", "email": "log@acme.io", "traits": {"job_title": "CTO", "company_size": 300}},
              {"type": "content_downloaded", "email": "log@acme.io"},
              {"type": "page_viewed", "email": "log@acme.io", "properties": {"url": "/pricing"}}]:
        call("POST", "/v1/events", e)
    batch = _stream_batch(aws)
    assert len(batch["Records"]) == 3
    before = container.store().calls.get("BatchWriteItem", 0)
    assert stream_handler.handler(batch, Context("EventLogFunction")) == {"batchItemFailures": []}
    assert container.store().calls.get("BatchWriteItem", 0) - before == 1  # the batch's three logs in one write
    assert stream_handler.handler(batch, Context("EventLogFunction")) == {"batchItemFailures": []}  # redelivery: still once
    lead_id = lead_id_for("log@acme.io")
    events = store.events(lead_id)
    assert len(events) == 3
    lead = store.get(lead_id)
    rebuilt = replay(lead_id, "log@acme.io", events, rules)
    assert (rebuilt.stage, rebuilt.traits, rebuilt.signals) == (lead.stage, lead.traits, lead.signals)


def test_stream_remove_record_sweeps_event_log_after_erasure(aws, call, store):
    from leadflow.handlers import event_log as stream_handler

    _, body = call("POST", "/v1/events", {"type": "identify", "email": "bye@acme.io"})
    first = _stream_batch(aws)
    call("DELETE", f"/v1/leads/{body['lead_id']}")
    stream_handler.handler(first, Context("EventLogFunction"))  # the late log write races the erasure...
    assert len(store.events(body["lead_id"])) == 1
    stream_handler.handler(_stream_batch(aws), Context("EventLogFunction"))  # ...and the REMOVE record sweeps it
    assert store.events(body["lead_id"]) == []


def test_stream_bad_record_is_reported_as_partial_failure(aws):
    from leadflow.handlers import event_log as stream_handler

    bad = {"Records": [{"eventID": "1", "eventName": "MODIFY", "eventSource": "aws:dynamodb", "eventVersion": "1.1",
                        "awsRegion": "us-east-1", "eventSourceARN": "arn:aws:dynamodb:us-east-1:1:table/t/stream/x",
                        "dynamodb": {"Keys": {"PK": {"S": "LEAD#ld_x"}, "SK": {"S": "LEAD"}}, "SequenceNumber": "42",
                                     "NewImage": {"PK": {"S": "LEAD#ld_x"}, "applied": {"S": '[{"event_id": "e"}]'}},
                                     "StreamViewType": "NEW_AND_OLD_IMAGES", "SizeBytes": 1}}]}
    assert stream_handler.handler(bad, Context("EventLogFunction")) == {"batchItemFailures": [{"itemIdentifier": "42"}]}


def test_rescore_with_new_rules_version_rebuilds_signals_from_event_log(aws, call, store, rules):
    from leadflow.handlers import event_log as stream_handler

    from leadflow.domain.rules import parse_rules
    from leadflow.usecases.leads import LeadService

    for e in [{"type": "identify", "email": "docs@acme.io", "traits": {"job_title": "VP Sales", "company_size": 300}},
              {"type": "page_viewed", "email": "docs@acme.io", "properties": {"url": "https://acme.example/docs/api"}},
              {"type": "page_viewed", "email": "docs@acme.io", "properties": {"url": "https://acme.example/docs/sdk"}}]:
        call("POST", "/v1/events", e)
    stream_handler.handler(_stream_batch(aws), Context("EventLogFunction"))
    data = rules.model_dump(by_alias=True, exclude_none=True)
    data["version"] = "with-docs-rule"
    data["engagement"]["rules"].append({"id": "docs_page", "when": {"all": [{"event": "page_viewed"},
                                        {"property": "url", "contains_any": ["/docs"]}]}, "points": 30,
                                        "half_life_days": 30})
    new_rules = parse_rules(data)
    report = LeadService(store, new_rules, ids=TEST_LEAD_IDS).rescore_all()
    lead = store.get(lead_id_for("docs@acme.io"))
    assert report["updated"] == report["leads"] == 1, report
    assert lead.rules_version == "with-docs-rule"
    assert [s.rule for s in lead.signals].count("docs_page") == 2
    assert "docs_page" in {line["rule"] for line in lead.explanation}
