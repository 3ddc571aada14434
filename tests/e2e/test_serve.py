"""`leadflow serve` driven over real HTTP, as an integrator and the acceptance checks do."""

from __future__ import annotations

import json
import threading
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from standardwebhooks.webhooks import Webhook

from tests.e2e.conftest import GENERIC_SECRET, Client, wait_until

pytestmark = pytest.mark.e2e

BUYER = {"first_name": "Jane", "job_title": "VP Marketing", "company": "Acme", "company_size": 120,
         "industry": "software", "country": "NO"}
BANT = {"budget": "yes", "authority": "decision_maker", "need": "pipeline visibility", "timeline": "this_quarter"}


def email(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:8]}@acme.example"


def ago(days: float) -> str:
    return (datetime.now(timezone.utc) - timedelta(days=days)).isoformat()


def test_buyer_engagement_reaches_mql_not_sql_over_http(stack: Client):
    who = email("buyer")
    events = [{"type": "identify", "email": who, "traits": BUYER},
              {"type": "content_downloaded", "email": who, "occurred_at": ago(4)},
              {"type": "content_downloaded", "email": who, "occurred_at": ago(3)},
              {"type": "webinar_attended", "email": who, "occurred_at": ago(2)}]
    events += [{"type": "page_viewed", "email": who, "occurred_at": ago(d), "properties": {"url": "/pricing"}} for d in (2, 1, 0.5)]
    for e in events:
        status, body = stack.post("/v1/events", e)
        assert status == 200
    assert body["stage"] == "mql"
    status, lead = stack.get(f"/v1/leads/{body['lead_id']}")
    assert [m["to_stage"] for m in lead["history"]] == ["subscriber", "lead", "mql"]
    assert lead["explanation"] and all("points" in line and "rule" in line for line in lead["explanation"])


def test_newsletter_alone_stays_subscriber(stack: Client):
    who = email("news")
    status, body = stack.post("/v1/forms/newsletter", raw=f"email={who}&firstname=Ola".encode(),
                              headers={"content-type": "application/x-www-form-urlencoded", "accept": "application/json"})
    assert (status, body) == (200, {"accepted": True})  # the public answer says nothing about the lead
    status, lead = stack.get(f"/v1/leads?email={who}")
    assert status == 200 and lead["stage"] == "subscriber"


def test_demo_with_bant_is_sql_and_student_never_reaches_sales(stack: Client):
    _, sql = stack.post("/v1/events", {"type": "form_submitted", "email": email("founder"),
                                       "properties": {"form_kind": "demo_request"}, "traits": {"company_size": 4, **BANT}})
    assert sql["stage"] == "sql"
    student = f"student-{uuid.uuid4().hex[:6]}@gmail.com"
    for e in [{"type": "content_downloaded", "email": student, "traits": {"job_title": "Student"}},
              {"type": "content_downloaded", "email": student},
              {"type": "form_submitted", "email": student, "properties": {"form_kind": "demo_request"}, "traits": BANT}]:
        _, body = stack.post("/v1/events", e)
    assert body["disqualified"] is True and body["stage"] not in ("mql", "sql")


def test_year_old_activity_qualifies_nobody(stack: Client):
    who = email("old")
    stack.post("/v1/events", {"type": "identify", "email": who, "traits": {**BUYER, **BANT}})
    for i in range(3):
        _, body = stack.post("/v1/events", {"type": "form_submitted", "email": who, "occurred_at": ago(365 - i),
                                            "properties": {"form_kind": "demo_request"}})
    assert body["stage"] == "lead" and body["engagement_score"] == 0  # converted back then; qualifies nobody today


def test_duplicate_event_id_answers_as_first_time(stack: Client):
    event = {"event_id": f"dup-{uuid.uuid4().hex}", "type": "webinar_attended", "email": email("dup")}
    _, first = stack.post("/v1/events", event)
    _, again = stack.post("/v1/events", event)
    assert again["duplicate"] is True and again["lead_id"] == first["lead_id"] and again["score"] == first["score"]


def test_concurrent_events_on_one_lead_all_applied_once(stack: Client):
    who = email("hot")
    ids = [f"c-{uuid.uuid4().hex}" for _ in range(24)]
    results = []

    def send(chunk):
        for i in chunk:
            results.append(stack.post("/v1/events", {"event_id": i, "type": "email_opened", "email": who})[0])

    threads = [threading.Thread(target=send, args=(ids[k::6] + ids[k::6],)) for k in range(6)]  # each id twice
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert results.count(200) == 48
    status, lead = stack.get("/v1/leads?email=" + who)
    assert lead["events_applied"] == 24 and [m["to_stage"] for m in lead["history"]] == ["subscriber"]


def test_anonymous_visitor_history_joins_on_identify(stack: Client):
    anon = f"v-{uuid.uuid4().hex}"
    for _ in range(3):
        stack.post("/v1/events", {"type": "page_viewed", "anonymous_id": anon, "properties": {"url": "/pricing"}})
    who = email("anon")
    stack.post("/v1/forms/ebook", {"email": who, "anonymous_id": anon, "jobtitle": "Head of Sales"})
    _, lead = stack.get(f"/v1/leads?email={who}")
    assert anon in lead["anonymous_ids"] and {"pricing_page", "pricing_page_repeat"} <= {l["rule"] for l in lead["explanation"]}


def test_bad_input_answers_contract_errors_and_writes_nothing(stack: Client):
    who = email("bad")
    assert stack.post("/v1/events", raw=b'{"type": ')[0] == 400
    status, err = stack.post("/v1/events", {"type": "teleported", "email": who})
    assert status == 422 and err["field"] == "type"
    assert stack.post("/v1/events", raw=b'{"a":"' + b"x" * (300 * 1024) + b'"}')[0] == 413
    assert stack.get("/v1/nope")[0] == 404
    assert stack.post("/v1/webhooks/nosuch", {"x": 1})[0] == 404
    assert Client(stack.base, token=None).post("/v1/events", {"type": "identify", "email": who})[0] == 401
    assert Client(stack.base, token="wrong").get("/v1/funnel")[0] == 401
    assert stack.get("/v1/leads?email=" + who)[0] == 404


def test_illegal_feedback_is_409_and_reject_needs_reason(stack: Client):
    _, lead = stack.post("/v1/events", {"type": "identify", "email": email("fb")})
    status, err = stack.post(f"/v1/leads/{lead['lead_id']}/feedback", {"action": "opportunity"})
    assert status == 409 and "allowed from sql" in err["message"]
    _, sql = stack.post("/v1/events", {"type": "form_submitted", "email": email("fb2"),
                                       "properties": {"form_kind": "contact_request"}, "traits": BANT})
    assert stack.post(f"/v1/leads/{sql['lead_id']}/feedback", {"action": "reject"})[0] == 422
    status, after = stack.post(f"/v1/leads/{sql['lead_id']}/feedback", {"action": "accept", "by": "rep@acme.example"})
    assert status == 200 and after["history"][-1]["cause"]["action"] == "accept"
    assert stack.post("/v1/leads/ld_unknown/feedback", {"action": "accept"})[0] == 404


def test_erasure_removes_lead_history_and_event_log(stack: Client):
    who = email("erase")
    _, body = stack.post("/v1/events", {"type": "identify", "email": who, "anonymous_id": f"v-{uuid.uuid4().hex}"})
    wait_until(lambda: stack.items(body["lead_id"], "EVENT#"))  # the stream has written the event log
    status, out = stack.request("DELETE", f"/v1/leads/{body['lead_id']}")
    assert status == 200 and out["items_deleted"] >= 2
    assert stack.get(f"/v1/leads/{body['lead_id']}")[0] == 404
    assert stack.get("/v1/leads?email=" + who)[0] == 404


def _signed(body: bytes, msg_id: str) -> dict:
    ts = datetime.now(timezone.utc)
    sig = Webhook(GENERIC_SECRET).sign(msg_id, ts, body.decode())
    return {"webhook-id": msg_id, "webhook-timestamp": str(int(ts.timestamp())), "webhook-signature": sig}


def test_generic_webhook_signed_list_applies_and_replay_is_duplicate(stack: Client):
    who = email("hook")
    body = json.dumps([{"type": "identify", "email": who, "traits": BUYER},
                       {"type": "content_downloaded", "email": who}]).encode()
    headers = _signed(body, f"msg_{uuid.uuid4().hex}")
    status, out = stack.post("/v1/webhooks/generic", raw=body, headers=headers)
    assert status == 200 and [r["duplicate"] for r in out] == [False, False] and out[-1]["stage"] == "lead"
    status, again = stack.post("/v1/webhooks/generic", raw=body, headers=headers)
    assert status == 200 and [r["duplicate"] for r in again] == [True, True]


def test_generic_webhook_forged_signature_is_401_and_writes_nothing(stack: Client):
    who = email("forged")
    body = json.dumps({"type": "identify", "email": who}).encode()
    headers = _signed(body, "msg_forged")
    headers["webhook-signature"] = "v1," + "A" * 44
    assert stack.post("/v1/webhooks/generic", raw=body, headers=headers)[0] == 401
    assert stack.post("/v1/webhooks/generic", raw=body)[0] == 401
    assert stack.get("/v1/leads?email=" + who)[0] == 404
