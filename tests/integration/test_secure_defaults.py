"""Secure by default, through the real handler on moto: keyed lead ids (and the table's
record of them, which keeps an upgraded or re-keyed table from splitting its leads), an
API that never serves unauthenticated in AWS, and the local stack's own lead-id key."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import urllib.request

import boto3

from leadflow import container
from leadflow.adapters.dynamodb.lead_ids import SCHEME_PK, SCHEME_SK
from leadflow.domain.engine import new_lead
from leadflow.domain.lead import LeadIds
from leadflow_infra.local.lead_id_key import KEY_FILE, local_lead_id_key
from tests.conftest import NOW, TEST_LEAD_ID_KEY, lead_id_for
from tests.integration.conftest import TABLE

OTHER_KEY = "another-deployment-key-0123456789abcdefghij"


def plain_hash(email: str) -> str:
    """The id before keyed ids: anyone with the address could compute it."""
    return "ld_" + hashlib.sha256(("email:" + email).encode()).hexdigest()[:24]


def every_item(client) -> list[dict]:
    items, start = [], None
    while True:
        page = client.scan(TableName=TABLE, **({"ExclusiveStartKey": start} if start else {}))
        items.extend(page["Items"])
        start = page.get("LastEvaluatedKey")
        if not start:
            return items


def logs(caplog) -> str:
    from leadflow.observability import logger

    return "\n".join(logger.registered_formatter.format(r) for r in caplog.records)


def scheme_record(client) -> dict | None:
    item = client.get_item(TableName=TABLE, Key={"PK": {"S": SCHEME_PK}, "SK": {"S": SCHEME_SK}}).get("Item")
    return None if item is None else {k: v["S"] for k, v in item.items() if k in ("scheme", "check")}


# ---------------------------------------------------------------- keyed lead ids


def test_the_api_answers_keyed_ids_and_the_table_records_which_key(call, aws):
    status, body = call("POST", "/v1/events", {"type": "identify", "email": "jane@acme.io"})

    assert status == 200
    assert body["lead_id"] == lead_id_for("jane@acme.io") != plain_hash("jane@acme.io")
    assert scheme_record(aws) == {"scheme": "hmac-sha256", "check": LeadIds(TEST_LEAD_ID_KEY.encode()).check()}
    assert TEST_LEAD_ID_KEY not in json.dumps(every_item(aws), default=str)  # the key itself is nowhere in the table
    status, lead = call("GET", "/v1/leads", query="email=jane@acme.io")
    assert (status, lead["lead_id"]) == (200, body["lead_id"])


def test_another_key_on_the_same_table_is_refused_rather_than_splitting_every_lead(call, aws, monkeypatch):
    call("POST", "/v1/events", {"type": "identify", "email": "jane@acme.io"})
    monkeypatch.setenv("LEADFLOW_LEAD_ID_KEY", OTHER_KEY)
    container.reset()  # a new cold start with the changed key

    status, body = call("POST", "/v1/events", {"type": "identify", "email": "jane@acme.io"})

    assert (status, body["error"]) == (503, "misconfigured")
    assert "not the key this table" in body["message"] and OTHER_KEY not in body["message"]
    assert call("GET", "/v1/leads", query="email=jane@acme.io")[0] == 503
    leads = [i for i in every_item(aws) if i["SK"]["S"] == "LEAD"]
    assert [i["PK"]["S"] for i in leads] == [f"LEAD#{lead_id_for('jane@acme.io')}"]  # no second lead


def test_a_table_from_before_keyed_ids_keeps_its_leads_and_warns_at_every_cold_start(call, aws, store, caplog):
    caplog.set_level(logging.WARNING, logger="leadflow")
    legacy = LeadIds(None)
    store.put(new_lead(legacy.for_email("old@acme.io"), email="old@acme.io", now=NOW), None)

    status, body = call("POST", "/v1/events", {"type": "content_downloaded", "email": "old@acme.io"})

    assert status == 200 and body["lead_id"] == plain_hash("old@acme.io")  # the same lead, not a new one
    assert len([i for i in every_item(aws) if i["SK"]["S"] == "LEAD"]) == 1
    assert scheme_record(aws) == {"scheme": "legacy"}
    logged = logs(caplog)
    assert "lead_ids.legacy" in logged and "unkeyed" in logged and TEST_LEAD_ID_KEY not in logged
    container.reset()
    status, body = call("POST", "/v1/events", {"type": "identify", "email": "new@acme.io"})
    assert status == 200 and body["lead_id"] == plain_hash("new@acme.io")  # one derivation per table
    assert logs(caplog).count("lead_ids.legacy") == 2


def test_erasure_finds_the_visitor_alias_under_its_keyed_id(call, aws):
    call("POST", "/v1/events", {"type": "page_viewed", "anonymous_id": "v-77", "properties": {"url": "/pricing"}})
    _, body = call("POST", "/v1/events", {"type": "identify", "email": "jane@acme.io", "anonymous_id": "v-77"})
    visitor = LeadIds(TEST_LEAD_ID_KEY.encode()).for_anonymous("v-77")
    assert any(i["PK"]["S"] == f"LEAD#{visitor}" for i in every_item(aws))

    status, _ = call("DELETE", f"/v1/leads/{body['lead_id']}")

    assert status == 200
    assert not any(i["PK"]["S"] in (f"LEAD#{visitor}", f"LEAD#{body['lead_id']}") and i["SK"]["S"] == "LEAD"
                   for i in every_item(aws))


# ---------------------------------------------------------------- never open in AWS


def test_in_aws_without_an_api_key_every_authenticated_route_refuses(call, monkeypatch):
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "leadflow-api")

    for method, path, query in [("GET", "/v1/leads", "email=jane@acme.io"), ("GET", "/v1/funnel", ""),
                                ("DELETE", "/v1/leads/ld_0123", ""), ("POST", "/v1/events", "")]:
        status, body = call(method, path, {"type": "identify", "email": "jane@acme.io"} if method == "POST" else None,
                            query=query)
        assert (status, body["error"], body["field"]) == (503, "misconfigured", "authorization"), path
        assert "LEADFLOW_API_KEY" in body["message"]
    assert call("GET", "/healthz")[0] == 200
    assert call("POST", "/v1/forms/newsletter", {"email": "c@d.co"})[0] == 200  # forms stay public


def test_sam_local_and_the_local_stack_stay_keyless_as_documented(call, monkeypatch):
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "leadflow-api")
    monkeypatch.setenv("AWS_SAM_LOCAL", "true")

    assert call("GET", "/v1/funnel")[0] == 200


def test_in_aws_with_a_key_the_bearer_is_checked(call, monkeypatch):
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "leadflow-api")
    monkeypatch.setenv("LEADFLOW_API_KEY", "k3y")
    container.reset()

    assert call("GET", "/v1/funnel")[0] == 401
    assert call("GET", "/v1/funnel", headers={"authorization": "Bearer k3y"})[0] == 200


def test_a_key_that_cannot_be_read_refuses_rather_than_opens(call, aws, monkeypatch):
    missing = "arn:aws:secretsmanager:us-east-1:123456789012:secret:leadflow-api-key-AbCdEf"
    monkeypatch.setenv("LEADFLOW_API_KEY", f"secretsmanager:{missing}")
    container.reset()

    status, body = call("GET", "/v1/funnel")

    assert (status, body["error"]) == (503, "misconfigured") and "could not be read" in body["message"]


def test_the_generated_secret_is_read_through_its_reference(call, aws, monkeypatch):
    secrets = boto3.client("secretsmanager")
    arn = secrets.create_secret(Name="leadflow-api-key", SecretString="Zq81bWc0aX4kVt7nP2rL9sD5fG3hJ6mN")["ARN"]
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "leadflow-api")
    monkeypatch.setenv("LEADFLOW_API_KEY", f"secretsmanager:{arn}")
    container.reset()

    assert call("GET", "/v1/funnel")[0] == 401
    assert call("GET", "/v1/funnel", headers={"authorization": "Bearer Zq81bWc0aX4kVt7nP2rL9sD5fG3hJ6mN"})[0] == 200


# ---------------------------------------------------------------- the local stack's key


def test_the_local_key_is_made_once_private_and_reused(tmp_path, monkeypatch):
    monkeypatch.delenv("LEADFLOW_LEAD_ID_KEY", raising=False)
    data = tmp_path / "data"

    key = local_lead_id_key(data)

    assert len(key) == 64 and local_lead_id_key(data) == key
    assert stat.S_IMODE(os.stat(data / KEY_FILE).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(data).st_mode) == 0o700
    assert local_lead_id_key(None) != local_lead_id_key(None)  # no data kept: a fresh key each start
    monkeypatch.setenv("LEADFLOW_LEAD_ID_KEY", OTHER_KEY)
    assert local_lead_id_key(data) == OTHER_KEY  # the environment's wins
    (data / KEY_FILE).write_text("", encoding="ascii")  # a crash between creating and writing it
    monkeypatch.delenv("LEADFLOW_LEAD_ID_KEY")
    assert len(local_lead_id_key(data)) == 64


def test_leadflow_serve_derives_ids_with_its_data_directorys_key_across_restarts(monkeypatch, start_stack, tmp_path):
    # monkeypatch first: its undoing runs last, after the stacks have put their environment back
    monkeypatch.delenv("LEADFLOW_LEAD_ID_KEY", raising=False)
    monkeypatch.delenv("LEADFLOW_API_KEY", raising=False)
    data = tmp_path / "serve"

    def post(stack, email: str) -> str:
        request = urllib.request.Request(f"{stack.url}/v1/events", method="POST",
                                         data=json.dumps({"type": "identify", "email": email}).encode(),
                                         headers={"content-type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as answer:
            return json.loads(answer.read())["lead_id"]

    options = dict(stream=None, jobs=None, handoff=None, handoff_retry=None, data_dir=data)
    first = start_stack(**options)
    lead_id = post(first, "jane@acme.io")
    first.stop()
    key = (data / KEY_FILE).read_text(encoding="ascii").strip()
    assert "LEADFLOW_LEAD_ID_KEY" not in os.environ  # the stack's environment is put back

    second = start_stack(**options)
    again = post(second, "jane@acme.io")
    second.stop()
    assert again == lead_id == LeadIds(key.encode()).for_email("jane@acme.io")
    assert lead_id not in (plain_hash("jane@acme.io"), lead_id_for("jane@acme.io"))
