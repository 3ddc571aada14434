from __future__ import annotations

BUYER = {"first_name": "Jane", "job_title": "VP Marketing", "company": "Acme", "company_size": 120,
         "industry": "software", "country": "NO"}
BANT = {"budget": "yes", "authority": "decision_maker", "need": "replace spreadsheets", "timeline": "this_quarter"}


def test_post_event_new_email_creates_subscriber(call):
    status, body = call("POST", "/v1/events", {"type": "identify", "email": " Jane@Acme.com ", "traits": BUYER})
    assert status == 200
    assert body["stage"] == "subscriber" and body["duplicate"] is False
    status, lead = call("GET", "/v1/leads", query="email=jane@acme.com")
    assert status == 200 and lead["lead_id"] == body["lead_id"] and lead["email"] == "jane@acme.com"


def test_post_event_same_event_id_twice_is_duplicate_and_changes_nothing(call):
    event = {"event_id": "e-1", "type": "content_downloaded", "email": "jane@acme.com"}
    _, first = call("POST", "/v1/events", event)
    _, second = call("POST", "/v1/events", event)
    assert second["duplicate"] is True
    assert (second["lead_id"], second["stage"], second["score"]) == (first["lead_id"], first["stage"], first["score"])
    _, lead = call("GET", f"/v1/leads/{first['lead_id']}")
    assert lead["events_applied"] == 1


def test_post_event_demo_request_with_bant_is_sql_at_once(call):
    status, body = call("POST", "/v1/events", {
        "type": "form_submitted", "email": "bob@tiny.io", "properties": {"form_kind": "demo_request"},
        "traits": {"company_size": 3, **BANT}})
    assert status == 200 and body["stage"] == "sql"
    _, lead = call("GET", f"/v1/leads/{body['lead_id']}")
    assert [(m["from_stage"], m["to_stage"]) for m in lead["history"]] == [(None, "sql")]
    assert lead["history"][0]["cause"]["rule"] == "bant_hand_raise"


def test_post_event_unknown_type_is_422_naming_the_field(call):
    status, body = call("POST", "/v1/events", {"type": "page_visited", "email": "a@b.co"})
    assert status == 422 and body["field"] == "type" and "unknown event type" in body["message"]


def test_post_event_malformed_json_is_400_and_writes_nothing(call, store):
    status, body = call("POST", "/v1/events", raw_body='{"type": "identify", "email": ')
    assert status == 400 and body["error"] == "bad_request"
    assert list(store.scan_leads()) == []


def test_post_event_without_identity_is_422(call):
    status, body = call("POST", "/v1/events", {"type": "page_viewed"})
    assert status == 422 and "email or anonymous_id" in body["message"]


def test_post_event_body_over_256_kib_is_413(call):
    status, body = call("POST", "/v1/events", raw_body='{"x": "' + "a" * (256 * 1024) + '"}')
    assert status == 413 and body["error"] == "payload_too_large"


def test_unknown_route_is_404_json(call):
    status, body = call("GET", "/v1/nothing")
    assert status == 404 and body["error"] == "not_found"


def test_api_key_set_missing_bearer_is_401_but_forms_stay_open(call, monkeypatch):
    from leadflow import container

    monkeypatch.setenv("LEADFLOW_API_KEY", "s3cret")
    container.reset()
    status, _ = call("POST", "/v1/events", {"type": "identify", "email": "a@b.co"})
    assert status == 401
    status, _ = call("POST", "/v1/events", {"type": "identify", "email": "a@b.co"}, headers={"Authorization": "Bearer s3cret"})
    assert status == 200
    status, _ = call("POST", "/v1/forms/newsletter", {"email": "c@d.co"})
    assert status == 200


def test_form_urlencoded_post_maps_fields_and_kind(call):
    status, body = call("POST", "/v1/forms/request-demo",
                        raw_body="email=ann%40corp.io&firstname=Ann&jobtitle=CTO&employees=51-200&budget=yes"
                                 "&authority=decision_maker&need=speed&timeline=this_quarter",
                        headers={"content-type": "application/x-www-form-urlencoded", "accept": "application/json"})
    assert status == 200 and body == {"accepted": True}  # the public answer tells nothing about the lead
    _, lead = call("GET", "/v1/leads", query="email=ann@corp.io")
    assert lead["stage"] == "sql"
    assert lead["traits"]["job_title"] == "CTO" and lead["traits"]["company_size"] == 51


def test_form_honeypot_filled_is_dropped_without_error(call, store):
    status, body = call("POST", "/v1/forms/newsletter", {"email": "bot@spam.io", "_hp": "http://spam"})
    assert status == 200 and body == {"accepted": True}
    assert list(store.scan_leads()) == []


def test_form_without_email_is_422(call):
    status, body = call("POST", "/v1/forms/newsletter", {"first_name": "x"})
    assert status == 422 and body["field"] == "email"


def test_feedback_accept_on_mql_is_409_with_reason(call):
    events = [{"type": "identify", "email": "jane@acme.com", "traits": BUYER},
              {"type": "form_submitted", "email": "jane@acme.com", "properties": {"form_kind": "demo_request"}}]
    for e in events:
        _, body = call("POST", "/v1/events", e)
    assert body["stage"] == "mql"
    status, err = call("POST", f"/v1/leads/{body['lead_id']}/feedback", {"action": "accept"})
    assert status == 409 and "allowed from sql" in err["message"]


def test_feedback_reject_without_reason_is_422_and_with_reason_moves_back(call):
    _, body = call("POST", "/v1/events", {"type": "form_submitted", "email": "bob@tiny.io",
                                          "properties": {"form_kind": "demo_request"}, "traits": BANT})
    status, err = call("POST", f"/v1/leads/{body['lead_id']}/feedback", {"action": "reject"})
    assert status == 422 and err["field"] == "reason"
    status, lead = call("POST", f"/v1/leads/{body['lead_id']}/feedback", {"action": "reject", "reason": "no_budget", "by": "rep@x.io"})
    assert status == 200 and lead["stage"] == "lead"
    assert lead["history"][-1]["cause"] == {"kind": "actor", "action": "reject", "actor": "rep@x.io", "reason": "no_budget",
                                            "rule": None, "event_id": None, "event_type": None}


def test_feedback_unknown_lead_is_404(call):
    status, _ = call("POST", "/v1/leads/ld_nope/feedback", {"action": "accept"})
    assert status == 404


def test_delete_lead_erases_lead_and_events(call, store):
    _, body = call("POST", "/v1/events", {"type": "identify", "email": "gone@acme.com", "anonymous_id": "v-9"})
    lead_id = body["lead_id"]
    store.append_events(lead_id, [{"event_id": "x", "type": "identify", "occurred_at": "2026-11-20T10:00:00Z",
                                   "received_at": "2026-11-20T10:00:00Z", "email": "gone@acme.com"}])
    status, out = call("DELETE", f"/v1/leads/{lead_id}")
    assert status == 200 and out["erased"] is True
    assert call("GET", f"/v1/leads/{lead_id}")[0] == 404
    assert store.events(lead_id) == []
    assert call("GET", "/v1/leads", query="email=gone@acme.com")[0] == 404


def test_anonymous_history_joins_lead_when_visitor_identifies(call):
    for _ in range(3):
        call("POST", "/v1/events", {"type": "page_viewed", "anonymous_id": "v-1", "properties": {"url": "https://x.io/pricing"}})
    _, body = call("POST", "/v1/events", {"type": "identify", "email": "kim@acme.com", "anonymous_id": "v-1", "traits": BUYER})
    _, lead = call("GET", f"/v1/leads/{body['lead_id']}")
    rules = {line["rule"] for line in lead["explanation"]}
    assert "pricing_page" in rules and "pricing_page_repeat" in rules
    # later anonymous events follow the visitor to the lead
    _, after = call("POST", "/v1/events", {"type": "page_viewed", "anonymous_id": "v-1", "properties": {"url": "/pricing"}})
    assert after["lead_id"] == body["lead_id"]


def test_funnel_counts_stages_and_filters_by_entry_window(call):
    call("POST", "/v1/events", {"type": "identify", "email": "a@acme.io"})
    call("POST", "/v1/events", {"type": "form_submitted", "email": "b@tiny.io", "properties": {"form_kind": "demo_request"},
                                "traits": BANT})
    status, body = call("GET", "/v1/funnel")
    assert status == 200 and body["stages"]["subscriber"] == 1 and body["stages"]["sql"] == 1 and body["total"] == 2
    assert body["conversion"]["subscriber_to_lead"] == 0.5
    status, past = call("GET", "/v1/funnel", query="since=2020-01-01&until=2020-02-01")
    assert status == 200 and past["total"] == 0


def test_funnel_after_an_accept_reports_time_to_first_touch(call):
    _, sql = call("POST", "/v1/events", {"type": "form_submitted", "email": "t@acme.io",
                                         "properties": {"form_kind": "demo_request"}, "traits": BANT})
    _, before = call("GET", "/v1/funnel")
    status, accepted = call("POST", f"/v1/leads/{sql['lead_id']}/feedback", {"action": "accept", "by": "rep@x.io"})
    _, after = call("GET", "/v1/funnel")
    again, err = call("POST", f"/v1/leads/{sql['lead_id']}/feedback", {"action": "accept", "by": "rep@x.io"})

    assert before["time_to_first_touch"] == {"leads": 0, "median_seconds": None, "p90_seconds": None}
    assert status == 200 and accepted["first_touch_by"] == "rep@x.io" and accepted["first_touch_seconds"] >= 0
    assert after["time_to_first_touch"]["leads"] == 1
    assert after["time_to_first_touch"]["median_seconds"] == accepted["first_touch_seconds"]
    assert again == 409 and "already accepted" in err["message"]


def test_funnel_bad_date_is_422(call):
    status, body = call("GET", "/v1/funnel", query="since=yesterday")
    assert status == 422 and body["field"] == "since"


def test_logs_never_contain_email_or_name(call, caplog):
    import logging

    from leadflow.observability import logger

    caplog.set_level(logging.DEBUG, logger="leadflow")
    call("POST", "/v1/events", {"type": "identify", "email": "Secret.Person@acme.io",
                                "traits": {"first_name": "Zebulon", "last_name": "Quixote"}})
    call("POST", "/v1/forms/demo", {"email": "secret.person@acme.io", "firstname": "Zebulon"})
    logs = "\n".join(logger.registered_formatter.format(r) for r in caplog.records).lower()
    assert "event.applied" in logs  # the log lines were emitted...
    assert "secret.person@acme.io" not in logs and "zebulon" not in logs and "quixote" not in logs  # ...masked
