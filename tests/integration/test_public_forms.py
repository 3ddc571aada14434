"""The public form route as a website uses it: no key, an answer that reveals nothing, a
thank-you redirect for a plain HTML post, multipart bodies, the time trap, and what a
form may change on a lead handed to sales (`forms.public`). The API handler is called as
the local gateway calls it, against moto."""

from __future__ import annotations

import json
import time
import urllib.parse

import pytest
import yaml
from leadflow.settings import rules_text

from tests.integration.conftest import Context

KEY = "form-test-key"
AUTH = {"authorization": f"Bearer {KEY}"}
THANKS = "https://acme.example/thanks"
DEMO_THANKS = "https://acme.example/thanks-for-your-demo-request"
URLENCODED = "application/x-www-form-urlencoded"
BANT = {"budget": "yes", "authority": "decision_maker", "need": "speed", "timeline": "this_quarter"}


@pytest.fixture
def api(aws, monkeypatch, tmp_path):
    """The API with a key and rules that give forms a thank-you URL and one a time trap.
    Answers (status, headers, body text)."""
    from leadflow import container
    from leadflow.handlers import api as api_handler
    from leadflow_infra.local.gateway import build_event

    raw = yaml.safe_load(rules_text(None)[0])
    raw["forms"]["redirect_url"] = THANKS
    raw["forms"]["per_form"] = {"request-demo": {"redirect_url": DEMO_THANKS},
                                "trapped": {"time_trap": {"field": "_ts", "min_seconds": 600, "max_age_hours": 24}}}
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("LEADFLOW_RULES", str(path))
    monkeypatch.setenv("LEADFLOW_API_KEY", KEY)
    container.reset()

    def call(method: str, target: str, body: bytes | str = b"", headers: dict | None = None):
        data = body.encode("utf-8") if isinstance(body, str) else body
        event = build_event(method=method, target=target, headers=list((headers or {}).items()), body=data,
                            source_ip="127.0.0.1", server_port=443)
        resp = api_handler.handler(event, Context())
        return resp["statusCode"], {k.lower(): v for k, v in (resp.get("headers") or {}).items()}, resp.get("body") or ""

    call("GET", "/v1/leads?email=nobody%40acme.io", headers=AUTH)  # the stack set up: what follows writes leads only
    return call


def lead(api, email: str) -> dict:
    status, _, body = api("GET", f"/v1/leads?email={urllib.parse.quote(email)}", headers=AUTH)
    assert status == 200, body
    return json.loads(body)


def _form(fields: dict) -> str:
    return urllib.parse.urlencode(fields)


def test_a_form_cannot_hide_an_sql_from_sales(api):
    """The issue's case: without a key, a form post with an SQL's email tried to overwrite
    its job title and phone and disqualify it. The lead keeps both, stays an SQL, and
    lists what the form said for review."""
    event = {"type": "form_submitted", "email": "bob@tiny.io", "properties": {"form_kind": "demo_request"},
             "traits": {"company_size": 3, "phone": "+47 400 00 000", **BANT}}
    status, _, body = api("POST", "/v1/events", json.dumps(event), {"content-type": "application/json", **AUTH})
    assert status == 200 and json.loads(body)["stage"] == "sql"
    status, _, body = api("POST", "/v1/forms/contact", _form({"email": "bob@tiny.io", "jobtitle": "Student intern",
                                                             "phone": "000"}),
                          {"content-type": URLENCODED, "accept": "application/json"})
    assert (status, json.loads(body)) == (200, {"accepted": True})
    after = lead(api, "bob@tiny.io")
    assert (after["stage"], after["disqualified"]) == ("sql", False)
    assert after["traits"]["phone"] == "+47 400 00 000" and "job_title" not in after["traits"]
    review = {r["field"]: r for r in after["review"]}
    assert review["traits.job_title"]["reason"] == "would_disqualify"
    assert review["traits.phone"]["reason"] == "conflict"
    assert all(r["source"] == "form:contact" and "for sales to review" in r["detail"] for r in after["review"])
    assert after["trait_sources"]["phone"] == "api"


def test_the_public_answer_reveals_nothing_about_the_lead(api):
    for body in ({"email": "new@acme.io", "job_title": "CEO", **BANT, "submission_id": "s1"},
                 {"email": "new@acme.io", "job_title": "CEO", **BANT, "submission_id": "s1"},  # a duplicate
                 {"email": "new@acme.io", "form_kind": "demo_request"}):
        status, headers, text = api("POST", "/v1/forms/demo", json.dumps(body), {"content-type": "application/json"})
        assert status == 200 and headers["content-type"] == "application/json"
        assert json.loads(text) == {"accepted": True}
    assert lead(api, "new@acme.io")["stage"] == "sql"  # it was applied: only the answer is quiet


def test_an_html_form_post_is_redirected_to_the_forms_thank_you_url(api):
    browser = {"content-type": URLENCODED, "accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
    status, headers, _ = api("POST", "/v1/forms/request-demo", _form({"email": "ann@corp.io"}), browser)
    assert status == 303 and headers["location"] == DEMO_THANKS
    status, headers, _ = api("POST", "/v1/forms/newsletter", _form({"email": "ann@corp.io"}), browser)
    assert status == 303 and headers["location"] == THANKS  # the forms default
    assert lead(api, "ann@corp.io")["events_applied"] == 2


def test_the_redirect_is_never_taken_from_the_request(api):
    status, headers, _ = api("POST", "/v1/forms/newsletter?redirect_url=https://evil.example/",
                             _form({"email": "ann@corp.io", "redirect_url": "https://evil.example/",
                                    "redirect": "https://evil.example/", "_next": "https://evil.example/"}),
                             {"content-type": URLENCODED, "referer": "https://evil.example/", "sec-fetch-mode": "navigate"})
    assert status == 303 and headers["location"] == THANKS


@pytest.mark.parametrize("headers, html", [
    ({"content-type": URLENCODED}, True),  # a plain form post with no preference
    ({"content-type": URLENCODED, "accept": "application/json"}, False),
    ({"content-type": URLENCODED, "accept": "text/html;q=0.5, application/json"}, False),
    ({"content-type": URLENCODED, "accept": "*/*"}, True),
    ({"content-type": "application/json"}, False),
    ({"content-type": "application/json", "accept": "text/html"}, True),
    ({"content-type": URLENCODED, "sec-fetch-mode": "cors", "accept": "*/*"}, False),  # fetch() from a page
    ({"content-type": "application/json", "sec-fetch-mode": "navigate"}, True),
])
def test_browsers_get_a_page_and_scripts_get_json(aws, monkeypatch, headers, html):
    """Which answer, with no thank-you URL configured: a plain thank-you page, else JSON."""
    from leadflow import container
    from leadflow.handlers import api as api_handler
    from leadflow_infra.local.gateway import build_event

    monkeypatch.delenv("LEADFLOW_RULES", raising=False)
    container.reset()
    body = _form({"email": "a@b.co"}) if headers["content-type"] == URLENCODED else json.dumps({"email": "a@b.co"})
    event = build_event(method="POST", target="/v1/forms/newsletter", headers=list(headers.items()),
                        body=body.encode(), source_ip="127.0.0.1", server_port=443)
    resp = api_handler.handler(event, Context())
    assert resp["statusCode"] == 200
    kind = {k.lower(): v for k, v in resp["headers"].items()}["content-type"]
    if html:
        assert kind.startswith("text/html") and "Thank you" in resp["body"] and "a@b.co" not in resp["body"]
    else:
        assert kind == "application/json" and json.loads(resp["body"]) == {"accepted": True}


def test_errors_stay_json_for_a_browser_post(api):
    status, headers, body = api("POST", "/v1/forms/contact", _form({"first_name": "x"}),
                                {"content-type": URLENCODED, "accept": "text/html"})
    assert status == 422 and json.loads(body)["field"] == "email" and headers["content-type"] == "application/json"


# -- multipart/form-data -----------------------------------------------------------------------


def multipart(parts: list[tuple[str, bytes | str, str | None]], boundary: str = "----leadflowBoundary7MA4YWxk") -> tuple[bytes, str]:
    """A multipart/form-data body as browsers send it: (name, value, filename or None)."""
    out = b""
    for name, value, filename in parts:
        data = value.encode("utf-8") if isinstance(value, str) else value
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n".encode()
        if filename is not None:
            out += b"Content-Type: application/octet-stream\r\n"
        out += b"\r\n" + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def test_multipart_fields_are_applied_and_files_ignored(api):
    body, kind = multipart([("email", "marit@fjord.no", None), ("firstname", "Marit", None),
                            ("jobtitle", "Head of Sales", None), ("message", "Hei!\r\nKan vi ta en demo?\r\n", None),
                            ("café_notes", "blåbær", None), ("cv", b"%PDF-1.4 \x00\xff\xfe binary", "cv.pdf"),
                            ("empty_upload", b"", "")])
    status, _, text = api("POST", "/v1/forms/contact", body, {"content-type": kind, "accept": "application/json"})
    assert (status, json.loads(text)) == (200, {"accepted": True}), text
    got = lead(api, "marit@fjord.no")
    assert got["traits"]["first_name"] == "Marit" and got["traits"]["job_title"] == "Head of Sales"
    assert got["message"]["text"] == "Hei!\r\nKan vi ta en demo?"
    status, _, text = api("GET", f"/v1/leads/{got['lead_id']}", headers=AUTH)
    assert "cv.pdf" not in text and "PDF" not in text


def test_a_browser_multipart_post_is_redirected(api):
    body, kind = multipart([("email", "ola@fjord.no", None)])
    status, headers, _ = api("POST", "/v1/forms/request-demo", body, {"content-type": kind})
    assert status == 303 and headers["location"] == DEMO_THANKS


def _table(aws) -> list:
    from tests.integration.conftest import TABLE

    return sorted(json.dumps(i, sort_keys=True) for i in aws.scan(TableName=TABLE)["Items"])


@pytest.mark.parametrize("parts, content_type, status, field", [
    ([("email", "a@b.co", None), ("company", b"caf\xc3\xa9\xff", None)], None, 400, "company"),
    ([("email", "a@b.co", None), ("first_name", "x\x00y", None)], None, 422, "traits.first_name"),
    ([("email", "a@b.co", None)], "multipart/form-data", 400, "content-type"),
    ([("email", "a@b.co", None)], "truncated", 400, "body"),
    ([("email", "not an address", None)], None, 422, "email"),
    ([("email", "a@b.co", None)] + [(f"f{i}", "x", None) for i in range(200)], None, 422, "body"),
    ([("email", "a@b.co", None), ("company_size", "1e400", None)], None, 422, "traits.company_size"),
])
def test_bad_multipart_is_a_4xx_naming_the_field_and_writes_nothing(api, aws, parts, content_type, status, field):
    body, kind = multipart(parts)
    if content_type == "truncated":
        body = body[: len(body) - 20]
    elif content_type is not None:
        kind = content_type
    before = _table(aws)
    got, headers, text = api("POST", "/v1/forms/contact", body, {"content-type": kind})
    answer = json.loads(text)
    assert (got, answer["field"]) == (status, field), answer
    assert headers["content-type"] == "application/json"
    assert _table(aws) == before


def test_an_unnamed_part_or_a_bad_header_is_a_400(api, aws):
    before = _table(aws)
    boundary = "b0undary"
    for part in (b"Content-Disposition: form-data\r\n\r\nx", b"Content-Disposition: form-data; name=\"caf\xff\"\r\n\r\nx"):
        body = f"--{boundary}\r\n".encode() + part + f"\r\n--{boundary}--\r\n".encode()
        status, _, text = api("POST", "/v1/forms/contact", body, {"content-type": f"multipart/form-data; boundary={boundary}"})
        assert status == 400 and json.loads(text)["field"] == "body", text
    assert _table(aws) == before


# -- spam traps --------------------------------------------------------------------------------


def test_the_time_trap_answers_like_any_post_and_applies_nothing(api, aws):
    before = _table(aws)
    now = time.time()
    for stamp in (None, str(int(now)), str(int(now * 1000)), str(int(now + 3600)), str(int(now - 48 * 3600)), "x"):
        fields = {"email": "bot@spam.io"} | ({"_ts": stamp} if stamp is not None else {})
        status, _, text = api("POST", "/v1/forms/trapped", json.dumps(fields), {"content-type": "application/json"})
        assert (status, json.loads(text)) == (200, {"accepted": True})
        status, headers, _ = api("POST", "/v1/forms/trapped", _form(fields), {"content-type": URLENCODED})
        assert status == 303 and headers["location"] == THANKS  # a bot is sent where a person would be
    assert _table(aws) == before
    status, _, _ = api("POST", "/v1/forms/trapped", _form({"email": "human@acme.io", "_ts": str(int(now - 3600))}),
                       {"content-type": URLENCODED, "accept": "application/json"})
    assert status == 200
    got = lead(api, "human@acme.io")
    assert got["events_applied"] == 1 and "field__ts" not in json.dumps(got)


def test_the_honeypot_still_drops_silently_with_the_same_answer(api, aws):
    before = _table(aws)
    status, headers, _ = api("POST", "/v1/forms/newsletter", _form({"email": "bot@spam.io", "_hp": "x"}),
                             {"content-type": URLENCODED})
    assert status == 303 and headers["location"] == THANKS
    assert _table(aws) == before
