"""Hostile input on every route: JSON nested without end, numbers DynamoDB cannot store,
NaN and infinities, dates outside any calendar we store, invisible and control
characters in emails, keys and text, broken UTF-8. Each is a 4xx naming the field, and
the table is exactly as it was (a 200 would mean the data is durable)."""

from __future__ import annotations

import base64
import json
import time
import urllib.parse

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from leadflow.adapters.vendor_webhooks.signatures import sign
from tests.integration.conftest import TABLE, Context, http_event

GENERIC_SECRET = "whsec_" + base64.b64encode(b"hostile-input-test-secret-32byte").decode()
MAUTIC_SECRET = "mautic-hostile-secret"
HOST = "hooks.leadflow.example"
EMAIL = "jane@acme.io"

INVISIBLE = st.sampled_from(["\x00", "\x07", "\x1b", "\x7f", "\x85", "\u200b", "\u200c", "\u200d", "\u2060", "\u202e",
                             "\u2066", "\ufeff", "\u2028", "\u2029", "\ue000", "\ud800"])
CONTROL = st.sampled_from(["\x00", "\x08", "\x1b", "\x7f", "\x9b", "\ud800", "\udfff"])


@st.composite
def hostile_emails(draw) -> str:
    if draw(st.booleans()):  # inside the address: leading and trailing white space is trimmed, not refused
        at = draw(st.integers(1, len(EMAIL) - 1))
        return EMAIL[:at] + draw(INVISIBLE) + EMAIL[at:]
    return draw(st.sampled_from(["jane..doe@acme.io", "jane@acme.io.", ".jane@acme.io", "jane@acme..io",
                                 "jane@localhost", "jane@acme", "ja ne@acme.io", "@acme.io", "jane@", "jane@@acme.io"]))


def _digits(n: int) -> str:
    return "9" * n


# Raw JSON number literals DynamoDB cannot store (or JSON cannot spell).
NUMBERS = st.one_of(
    st.integers(39, 5000).map(_digits),
    st.integers(39, 300).map(lambda n: "-" + _digits(n)),
    st.integers(126, 400).map(lambda e: f"1e{e}"),
    st.integers(126, 400).map(lambda e: f"-2.5e{e}"),
    st.integers(131, 400).map(lambda e: f"1e-{e}"),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1.8e308"]),
)
DEEP = st.integers(33, 20_000).map(lambda n: "[" * n + "]" * n)
DATES = st.one_of(
    st.sampled_from(["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "1969-12-31T23:59:59Z",
                     "0001-01-01T00:00:00Z"]),
    st.integers(1, 1969).map(lambda y: f"{y:04d}-06-15T12:00:00Z"),
)
TEXTS = st.tuples(st.text(max_size=10), CONTROL, st.text(max_size=10)).map("".join)


def _event(**fields) -> str:
    """A valid identify event as JSON text, with `fields` (raw JSON fragments) spliced in."""
    parts = {"type": '"identify"', "email": json.dumps(EMAIL), "traits": '{"first_name": "Jane"}', **fields}
    return "{" + ", ".join(f"{json.dumps(k)}: {v}" for k, v in parts.items()) + "}"


def _string(value: str) -> str:
    return json.dumps(value)  # \\u escapes keep lone surrogates and controls intact through the JSON text


EVENT_BODIES = st.one_of(
    NUMBERS.map(lambda n: _event(traits=f'{{"company_size": {n}}}')),
    NUMBERS.map(lambda n: _event(properties=f'{{"score_hint": [1, {n}]}}')),
    DEEP.map(lambda d: _event(traits=f'{{"x": {d}}}')),
    DEEP.map(lambda d: d),
    hostile_emails().map(lambda e: _event(email=_string(e))),
    DATES.map(lambda d: _event(occurred_at=_string(d))),
    TEXTS.map(lambda t: _event(traits=json.dumps({"job_title": t}))),
    st.tuples(INVISIBLE, st.text(min_size=1, max_size=8)).map(lambda p: _event(traits=json.dumps({p[1] + p[0] + "k": 1}))),
    INVISIBLE.map(lambda c: _event(event_id=_string(f"evt{c}1"))),
    INVISIBLE.map(lambda c: _event(anonymous_id=_string(f"v{c}1"))),
)


def _table(aws) -> list:
    items, start = [], None
    while True:
        page = aws.scan(TableName=TABLE, **({"ExclusiveStartKey": start} if start else {}))
        items.extend(page["Items"])
        start = page.get("LastEvaluatedKey")
        if not start:
            return sorted(items, key=lambda i: (i["PK"]["S"], i["SK"]["S"]))


@pytest.fixture
def api(aws, monkeypatch):
    """Calls the API handler as the local gateway would; the table holds one lead."""
    from leadflow import container
    from leadflow.handlers import api as api_handler

    monkeypatch.setenv("LEADFLOW_WEBHOOK_SECRET_GENERIC", GENERIC_SECRET)
    monkeypatch.setenv("LEADFLOW_WEBHOOK_SECRET_MAUTIC", MAUTIC_SECRET)
    container.reset()

    def call(method: str, path: str, text: str = "", *, content_type: str = "application/json", query: str = "",
             headers: dict | None = None, raw: bytes | None = None):
        event = http_event(method, path, headers={"content-type": content_type, "host": HOST,
                                                  "x-forwarded-proto": "https", **(headers or {})},
                           raw_body=text, query=query)
        if raw is not None:  # bytes API Gateway could not pass as text
            event["body"], event["isBase64Encoded"] = base64.b64encode(raw).decode(), True
        resp = api_handler.handler(event, Context())
        return resp["statusCode"], json.loads(resp["body"]) if resp.get("body") else None

    status, _ = call("POST", "/v1/events", _event(traits='{"job_title": "VP Sales", "company_size": 200}'))
    assert status == 200
    return call


def _refused(status: int, answer, *, statuses=(400, 413, 422)) -> None:
    assert status in statuses, answer
    assert answer["error"] and answer["message"] and answer.get("field"), answer


HYPOTHESIS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                             HealthCheck.too_slow])


@HYPOTHESIS
@given(body=EVENT_BODIES)
def test_events_refuse_hostile_bodies_and_write_nothing(api, aws, body):
    before = _table(aws)
    _refused(*api("POST", "/v1/events", body))
    assert _table(aws) == before


@HYPOTHESIS
@given(body=EVENT_BODIES)
def test_signed_generic_webhooks_refuse_hostile_bodies_and_write_nothing(api, aws, body):
    from standardwebhooks.webhooks import Webhook

    msg_id, now = "msg_hostile", time.time()
    from datetime import datetime, timezone

    signature = Webhook(GENERIC_SECRET).sign(msg_id, datetime.fromtimestamp(now, tz=timezone.utc), body)
    headers = {"webhook-id": msg_id, "webhook-timestamp": str(int(now)), "webhook-signature": signature}
    before = _table(aws)
    _refused(*api("POST", "/v1/webhooks/generic", body, headers=headers))
    assert _table(aws) == before


@HYPOTHESIS
@given(depth=st.integers(33, 20_000), number=NUMBERS)
def test_signed_mautic_deliveries_nested_too_deep_or_out_of_range_are_refused(api, aws, depth, number):
    before = _table(aws)
    for body in ('{"mautic.lead_post_save_update": ' + "[" * depth + "]" * depth + "}",
                 '{"mautic.form_on_submit": [{"submission": {"results": {"email": "jane@acme.io", "n": '
                 + number + "}}}]}"):
        path = "/v1/webhooks/mautic"
        headers = sign("mautic", body.encode(), MAUTIC_SECRET, method="POST", url=f"https://{HOST}{path}",
                       now=time.time())
        status, answer = api("POST", path, body, headers=headers)
        assert status in (400, 422), answer
    assert _table(aws) == before


FORM_FIELDS = st.one_of(
    hostile_emails().map(lambda e: {"email": e}),
    TEXTS.map(lambda t: {"email": EMAIL, "first_name": t}),
    st.tuples(INVISIBLE, st.text(min_size=1, max_size=8)).map(lambda p: {"email": EMAIL, p[1] + p[0] + "k": "x"}),
    st.sampled_from(["1e400", "Infinity", "NaN", _digits(4300), "1e200"]).map(
        lambda n: {"email": EMAIL, "company_size": n}),
    DATES.map(lambda d: {"email": EMAIL, "occurred_at": d}),
)


@HYPOTHESIS
@given(fields=FORM_FIELDS, as_json=st.booleans())
def test_public_forms_refuse_hostile_fields_and_write_nothing(api, aws, fields, as_json):
    before = _table(aws)
    if as_json:
        status, answer = api("POST", "/v1/forms/demo", json.dumps(fields))
    else:
        encoded = "&".join(f"{urllib.parse.quote(k, encoding='utf-8', errors='surrogatepass')}="
                           f"{urllib.parse.quote(v, encoding='utf-8', errors='surrogatepass')}" for k, v in fields.items())
        status, answer = api("POST", "/v1/forms/demo", encoded, content_type="application/x-www-form-urlencoded")
    _refused(status, answer)
    assert _table(aws) == before


@HYPOTHESIS
@given(depth=st.integers(33, 20_000), name=st.sampled_from(["email", "first_name", "company"]))
def test_forms_refuse_broken_utf8_and_deep_json(api, aws, depth, name):
    before = _table(aws)
    _refused(*api("POST", "/v1/forms/demo", f"email=jane%40acme.io&{name}=caf%C3%A9%FF%FE",
                  content_type="application/x-www-form-urlencoded"))
    _refused(*api("POST", "/v1/forms/demo", '{"email": "jane@acme.io", "x": ' + "[" * depth + "]" * depth + "}"))
    _refused(*api("POST", "/v1/events", raw=b'{"type": "identify", "email": "jane@acme.io", "traits": {"a": "\xff"}}'))
    assert _table(aws) == before


OTHER_ROUTES = st.one_of(
    TEXTS.map(lambda t: ("POST", "/v1/leads/{lead}/feedback", json.dumps({"action": "reject", "reason": t}))),
    INVISIBLE.map(lambda c: ("POST", "/v1/leads/{lead}/feedback", json.dumps({"action": "acc" + c + "ept"}))),
    DEEP.map(lambda d: ("POST", "/v1/leads/{lead}/feedback", d)),
    TEXTS.map(lambda t: ("POST", "/v1/rules", json.dumps({"source": "version: x\n", "by": t}))),
    CONTROL.filter(lambda c: c >= "\ud800").map(lambda c: ("POST", "/v1/rules", json.dumps({"source": f"version: x{c}\n"}))),
    NUMBERS.map(lambda n: ("POST", "/v1/rules/rollback", f'{{"to": {n}}}')),
    DATES.map(lambda d: ("POST", "/v1/import", json.dumps({"rows": [{"row": 0, "key": "k1", "events": [
        {"type": "identify", "email": "ann@acme.io"}], "outcome": {"result": "won", "at": d}}]}))),
    hostile_emails().map(lambda e: ("POST", "/v1/import", json.dumps({"rows": [{"row": 0, "key": "k1", "events": [
        {"type": "identify", "email": e}]}]}))),
    NUMBERS.map(lambda n: ("POST", "/v1/import", f'{{"rows": [{{"row": 0, "key": "k1", "events": [{{"type": "identify", '
                                                 f'"email": "ann@acme.io", "traits": {{"nps": {n}}}}}]}}]}}')),
    hostile_emails().map(lambda e: ("GET", "/v1/leads?" + urllib.parse.urlencode(
        {"email": e}, encoding="utf-8", errors="surrogatepass"), "")),
    DATES.map(lambda d: ("GET", "/v1/funnel?" + urllib.parse.urlencode({"since": d}), "")),
    st.tuples(st.sampled_from(["stage", "owner", "source", "q", "sort", "limit", "cursor"]), TEXTS).map(
        lambda p: ("GET", "/v1/leads?" + urllib.parse.urlencode({p[0]: p[1]}, encoding="utf-8", errors="surrogatepass"),
                   "")),
    INVISIBLE.map(lambda c: ("GET", "/v1/leads?" + urllib.parse.urlencode(
        {"q": "ja" + c + "ne"}, encoding="utf-8", errors="surrogatepass"), "")),
    NUMBERS.map(lambda n: ("GET", f"/v1/leads?limit={n}", "")),
)


@HYPOTHESIS
@given(request=OTHER_ROUTES)
@example(request=("POST", "/v1/import",  # a lone surrogate once reached the id derivation before validation
                  '{"rows": [{"row": 0, "key": "k1", "events": [{"type": "identify", "email": "j\\ud800ane@acme.io"}]}]}'))
@example(request=("GET", "/v1/leads?email=j%ED%A0%80ane%40acme.io", ""))  # broken escapes decode to U+FFFD
def test_every_other_route_refuses_hostile_input_and_writes_nothing(api, aws, request):
    from tests.conftest import lead_id_for

    method, target, body = request
    path, _, query = target.format(lead=lead_id_for(EMAIL)).partition("?")
    before = _table(aws)
    status, answer = api(method, path, body, query=query)
    if path == "/v1/import" and status == 200:  # rows are answered one by one: each must be refused
        assert answer["counts"]["rejected"] == len(answer["results"]) == 1, answer
        assert answer["results"][0]["field"], answer
    else:
        _refused(status, answer)
    assert _table(aws) == before


def test_the_refusals_name_the_field_and_say_why(api):
    status, answer = api("POST", "/v1/events", _event(traits='{"company_size": 1e400}'))
    assert (status, answer["field"]) == (422, "traits.company_size")
    status, answer = api("POST", "/v1/events", _event(email=_string("jane\u200b@acme.io")))
    assert (status, answer["field"]) == (422, "email") and "U+200B ZERO WIDTH SPACE" in answer["message"]
    status, answer = api("POST", "/v1/events", _event(occurred_at='"0001-01-01T00:00:00+01:00"'))
    assert (status, answer["field"]) == (422, "occurred_at")
    status, answer = api("POST", "/v1/events", "[" * 10_000 + "]" * 10_000)
    assert (status, answer["field"]) == (400, "body") and "nested deeper than 32" in answer["message"]
    status, answer = api("POST", "/v1/events", _event(traits='{"company_size": NaN}'))
    assert (status, answer["field"]) == (422, "traits.company_size") and "NaN and infinities" in answer["message"]
    from tests.conftest import lead_id_for

    # One visible address is one person: compatibility forms (full-width letters) and white
    # space around the address (a pasted line break, a no-break space) are normalised away.
    for same in ("ｊａｎｅ@ＡＣＭＥ.io", " Jane@Acme.io\u2028", "\xa0jane@acme.io\n", "JANE@acme.io\u3000"):
        status, answer = api("POST", "/v1/events", _event(email=_string(same)))
        assert (status, answer["lead_id"]) == (200, lead_id_for(EMAIL)), same
