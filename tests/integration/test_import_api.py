"""`POST /v1/import` through the API handler on moto: rows become leads with their
history, stage and outcome, re-sending changes nothing, a bad row is named and the
others still apply, and nothing imported is put on sales' desk."""

from __future__ import annotations

from leadflow.adapters.dynamodb.keys import LEAD_SK, lead_pk
from tests.conftest import lead_id_for

BUYER = {"first_name": "Ada", "job_title": "VP Marketing", "company": "Acme", "company_size": 120, "country": "Norway"}


def row(n, email, *events, **extra):
    key = f"import:test:{n}"
    base = [{"event_id": f"{key}:0", "type": "identify", "email": email, "occurred_at": "2026-10-01T09:00:00Z",
             "traits": BUYER}]
    more = [{"event_id": f"{key}:{i + 1}", "email": email, "occurred_at": "2026-10-02T09:00:00Z", **e}
            for i, e in enumerate(events)]
    return {"row": n, "key": key, "events": base + more, **extra}


DEMO = {"type": "form_submitted", "properties": {"form_kind": "demo_request", "utm_source": "google", "utm_medium": "cpc",
                                                  "message": "Can we see a demo next week?"}}


def test_rows_become_leads_with_sources_messages_stages_and_outcomes(call):
    rows = [
        row(2, "ada@acme.com", DEMO, stage="opportunity", stage_at="2026-10-20T00:00:00Z"),
        row(3, "bo@globex.com", outcome={"result": "won", "at": "2026-11-01T00:00:00Z", "value": 4200}),
        row(4, "cy@initech.com", outcome={"result": "lost", "reason": "no_budget"}),
    ]
    status, body = call("POST", "/v1/import", {"rows": rows})
    assert status == 200, body
    assert [r["status"] for r in body["results"]] == ["imported"] * 3
    assert body["counts"] == {"imported": 3, "merged": 0, "unchanged": 0, "rejected": 0}

    _, ada = call("GET", "/v1/leads", query="email=ada@acme.com")
    assert ada["stage"] == "opportunity"
    assert (ada["first_touch"]["source"], ada["first_touch"]["medium"]) == ("google", "cpc")
    assert ada["message"]["text"] == "Can we see a demo next week?"
    assert ada["traits"]["country"] == "NO"
    last = ada["history"][-1]
    assert (last["to_stage"], last["cause"]["actor"], last["cause"]["action"], last["at"][:10]) == (
        "opportunity", "import", "set_stage", "2026-10-20")
    assert all(m["announced"] is False for m in ada["history"])

    _, bo = call("GET", "/v1/leads", query="email=bo@globex.com")
    assert bo["stage"] == "customer" and bo["outcome"]["result"] == "won" and bo["outcome"]["value"] == 4200
    assert bo["outcome"]["by"] == "import" and bo["history"][-1]["at"].startswith("2026-11-01")
    _, cy = call("GET", "/v1/leads", query="email=cy@initech.com")
    assert (cy["outcome"]["result"], cy["outcome"]["reason"]) == ("lost", "no_budget")


def test_imported_moves_never_reach_the_outbox(call, store):
    call("POST", "/v1/import", {"rows": [row(2, "ada@acme.com", DEMO, {"type": "meeting_booked"})]})
    item = store.client.get_item(TableName=store.table_name,
                                 Key={"PK": {"S": lead_pk(lead_id_for("ada@acme.com"))}, "SK": {"S": LEAD_SK}})["Item"]
    assert "moves" not in item  # the handoff's stream filter needs this attribute: nothing is announced
    assert "applied" in item  # the events still go to the event log


def test_a_rerun_writes_nothing_and_answers_unchanged(call, store):
    rows = [row(2, "ada@acme.com", DEMO, stage="sql"), row(3, "bo@globex.com", outcome={"result": "won"})]
    call("POST", "/v1/import", {"rows": rows})
    puts = store.calls.get("PutItem", 0)
    status, body = call("POST", "/v1/import", {"rows": rows})
    assert status == 200 and body["counts"]["unchanged"] == 2
    assert store.calls.get("PutItem", 0) == puts


def test_a_row_for_an_existing_lead_is_merged(call):
    call("POST", "/v1/events", {"type": "identify", "email": "ada@acme.com"})
    _, body = call("POST", "/v1/import", {"rows": [row(2, "ada@acme.com")]})
    assert body["results"][0]["status"] == "merged"


def test_bad_rows_are_named_and_the_rest_still_apply(call, store):
    rows = [
        row(2, "ada@acme.com", {"type": "call_logged"}),
        row(3, "bo@globex.com"),
        {**row(4, "cy@initech.com"), "events": [{"type": "identify", "email": "cy@initech.com",
                                                  "traits": {"company_size": "NaN"}}]},
        row(5, "di@hooli.com", stage="champion"),
        row(6, "ed@umbrella.com", outcome={"result": "maybe"}),
        {"row": 7, "key": "k", "events": []},
        {**row(8, "fa@stark.com"), "events": [{"type": "identify", "email": "fa@stark.com", "traits": {"x": float("inf")}}]},
    ]
    status, body = call("POST", "/v1/import", {"rows": rows})
    assert status == 200
    by_row = {r["row"]: r for r in body["results"]}
    assert by_row[3]["status"] == "imported"
    assert (by_row[2]["status"], by_row[2]["field"]) == ("rejected", "events[1].type")
    assert (by_row[4]["status"], by_row[4]["field"]) == ("rejected", "events[0].traits.company_size")
    assert (by_row[5]["field"], by_row[6]["field"], by_row[7]["field"]) == ("stage", "outcome.result", "events")
    assert (by_row[8]["status"], by_row[8]["field"]) == ("rejected", "events[0].traits.x")
    assert {lead.email for lead in store.scan_leads()} == {"bo@globex.com"}


def test_an_import_body_of_the_wrong_shape_is_422(call):
    for body in ({"rows": []}, {"rows": "x"}, [1, 2], {"rows": [{}] * 51}):
        status, answer = call("POST", "/v1/import", body)
        assert status == 422 and answer["field"] == "rows"


def test_nan_and_infinity_are_422_on_every_route_and_change_nothing(call, store):
    for path, body, headers in (
        ("/v1/events", '{"type": "identify", "email": "a@b.co", "traits": {"company_size": NaN}}', None),
        ("/v1/events", '{"type": "identify", "email": "a@b.co", "traits": {"company_size": "inf"}}', None),
        ("/v1/events", '{"type": "page_viewed", "email": "a@b.co", "properties": {"seconds": Infinity}}', None),
        ("/v1/events", '{"type": "identify", "email": "a@b.co", "traits": {"nps": 1e400}}', None),
        ("/v1/forms/contact", "email=a%40b.co&company_size=NaN", {"Content-Type": "application/x-www-form-urlencoded"}),
        ("/v1/forms/contact", '{"email": "a@b.co", "company_size": "-Infinity"}', None),
    ):
        status, answer = call("POST", path, raw_body=body, headers=headers)
        assert status == 422, (path, body, answer)
        assert answer["field"] in ("traits.company_size", "properties.seconds", "traits.nps"), answer
    assert list(store.scan_leads()) == []


def test_healthz_is_not_ready_with_broken_rules(call, monkeypatch, tmp_path):
    from leadflow import container

    status, body = call("GET", "/healthz")
    assert status == 200 and body["rules_version"]
    bad = tmp_path / "rules.yaml"
    bad.write_text("version: x\nfit: {}\n")
    monkeypatch.setenv("LEADFLOW_RULES", str(bad))
    container.reset()
    status, body = call("GET", "/healthz")
    assert status == 503 and body["status"] == "invalid_rules" and "fit.grades" in body["message"]
    monkeypatch.delenv("LEADFLOW_RULES")
    container.reset()
