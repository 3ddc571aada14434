"""`GET /openapi.json` describes the API as it is: every route and nothing else, a valid
OpenAPI 3.1 document, and every real answer of a session that touches each route (200s and
errors) validates against the schema the document gives for that route and status."""

from __future__ import annotations

import base64
import json
import re
import time

import pytest
import yaml
from jsonschema import Draft202012Validator
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from tests.integration.conftest import Context, http_event

BANT = {"budget": "yes", "authority": "decision_maker", "need": "replace spreadsheets", "timeline": "this_quarter"}
GENERIC_SECRET = "whsec_" + base64.b64encode(b"openapi-test-secret-0123456789ab").decode()


@pytest.fixture
def api(aws, monkeypatch):
    """Calls the API handler; answers the route, status and body, validated against the document."""
    from leadflow.handlers import api as api_handler

    monkeypatch.setenv("LEADFLOW_WEBHOOK_SECRET_GENERIC", GENERIC_SECRET)
    resp = api_handler.handler(http_event("GET", "/openapi.json"), Context())
    assert resp["statusCode"] == 200
    document = json.loads(resp["body"])
    registry = Registry().with_resource("urn:leadflow:openapi", DRAFT202012.create_resource(document))
    routes = [(m, p, re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", p) + "$"))
              for p, methods in document["paths"].items() for m in methods]
    checked: set[tuple[str, str, int]] = set()

    def call(method: str, path: str, body=None, *, query: str = "", headers: dict | None = None, raw: str | None = None):
        event = http_event(method, path, body, query=query, headers=headers, raw_body=raw)
        resp = api_handler.handler(event, Context())
        answer = json.loads(resp["body"]) if resp.get("body") else None
        status = resp["statusCode"]
        matches = [(m, p) for m, p, pattern in routes if m == method.lower() and pattern.match(path)]
        assert matches, f"{method} {path} is not in the document"
        m, p = max(matches, key=lambda mp: mp[1].count("/") - mp[1].count("{"))  # the most specific route
        documented = document["paths"][p][m]["responses"]
        assert str(status) in documented, f"{method} {p} answered {status}, which the document does not list: {answer}"
        schema = documented[str(status)].get("content", {}).get("application/json", {}).get("schema")
        if schema is not None:
            validator = Draft202012Validator({"$ref": "urn:leadflow:openapi" + schema["$ref"]} if "$ref" in schema
                                             else _rebased(schema), registry=registry)
            problems = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(answer)]
            assert not problems, f"{method} {p} {status} does not match the document: {problems}\n{answer}"
        checked.add((m, p, status))
        return status, answer

    call.document = document
    call.checked = checked
    return call


def _rebased(schema):
    """An inline schema (oneOf…) whose $refs point into the document."""
    if isinstance(schema, dict):
        return {k: ("urn:leadflow:openapi" + v if k == "$ref" else _rebased(v)) for k, v in schema.items()}
    if isinstance(schema, list):
        return [_rebased(v) for v in schema]
    return schema


def _signed(body: str) -> dict:
    from standardwebhooks.webhooks import Webhook
    from datetime import datetime, timezone

    now = time.time()
    msg = f"msg_{int(now * 1000)}"
    signature = Webhook(GENERIC_SECRET).sign(msg, datetime.fromtimestamp(now, tz=timezone.utc), body)
    return {"webhook-id": msg, "webhook-timestamp": str(int(now)), "webhook-signature": signature}


def test_the_document_is_valid_openapi_and_lists_exactly_the_routes(api):
    from openapi_spec_validator import validate

    from leadflow.routes.app import app
    from leadflow.routes.openapi import OPERATIONS

    document = api.document
    validate(document)
    assert document["openapi"].startswith("3.1")
    routes = {(r.method.lower(), r.openapi_path) for r in [*app._static_routes, *app._dynamic_routes]
              if r.include_in_schema}
    listed = {(m, p) for p, methods in document["paths"].items() for m in methods}
    assert listed == routes == set(OPERATIONS), (listed ^ routes) | (routes ^ set(OPERATIONS))
    for (method, path), operation in ((k, document["paths"][k[1]][k[0]]) for k in OPERATIONS):
        assert operation["summary"] and operation["description"], (method, path)
        assert "200" in operation["responses"], (method, path)
        opened = path.startswith(("/v1/forms/", "/v1/webhooks/")) or not path.startswith("/v1/")
        assert operation["security"] == ([] if opened else [{"bearer": []}]), (method, path)
    # Request bodies are the models the routes validate with.
    assert document["components"]["schemas"]["CanonicalEvent"]["additionalProperties"] is False
    assert "email" in document["components"]["schemas"]["FormFields"]["required"]


def test_every_route_answers_as_documented(api):
    status, _ = api("GET", "/healthz")
    assert status == 200
    status, sql = api("POST", "/v1/events", {"type": "form_submitted", "email": "bob@tiny.io",
                                             "properties": {"form_kind": "demo_request"},
                                             "traits": {"company_size": 40, **BANT}})
    assert status == 200 and sql["stage"] == "sql"
    assert api("POST", "/v1/events", {"type": "page_visited", "email": "a@b.co"})[0] == 422
    assert api("POST", "/v1/events", raw="[" * 100 + "]" * 100)[0] == 400
    assert api("POST", "/v1/forms/demo", {"email": "ann@acme.io", "first_name": "Ann"}) == (200, {"accepted": True})
    status, imported = api("POST", "/v1/import", {"rows": [
        {"row": 0, "key": "k1", "events": [{"type": "identify", "email": "cy@acme.io"}], "stage": "mql"},
        {"row": 1, "key": "k2", "events": [{"type": "identify", "email": "not an address"}]}]})
    assert status == 200 and imported["counts"] == {"imported": 1, "merged": 0, "unchanged": 0, "rejected": 1}

    status, page = api("GET", "/v1/leads", query="limit=2")
    assert status == 200 and len(page["items"]) == 2 and page["next_cursor"]
    assert api("GET", "/v1/leads", query="q=bo&stage=sql")[0] == 200
    assert api("GET", "/v1/leads", query="stage=nowhere")[0] == 422
    status, lead = api("GET", "/v1/leads", query="email=bob@tiny.io")
    assert status == 200 and lead["lead_id"] == sql["lead_id"]
    assert api("GET", "/v1/leads", query="email=nobody@tiny.io")[0] == 404
    assert api("GET", "/v1/leads", query="email=not-an-address")[0] == 422
    assert api("GET", f"/v1/leads/{sql['lead_id']}")[0] == 200
    assert api("GET", "/v1/leads/ld_000000000000000000000000")[0] == 404
    status, accepted = api("POST", f"/v1/leads/{sql['lead_id']}/feedback", {"action": "accept", "by": "rep@acme.io"})
    assert status == 200 and accepted["move"]["cause"]["action"] == "accept"
    assert api("POST", f"/v1/leads/{sql['lead_id']}/feedback", {"action": "nonsense"})[0] in (409, 422)

    assert api("GET", "/v1/funnel", query="since=2020-01-01")[0] == 200
    assert api("GET", "/v1/funnel", query="since=yesterday")[0] == 422
    status, history = api("GET", "/v1/funnel", query="by=source&cohort=week")
    assert status == 200 and history["by"] == "source" and history["cohort"] == "week"
    assert api("GET", "/v1/funnel", query="by=channel")[0] == 422

    status, rules = api("GET", "/v1/rules")
    assert status == 200
    source = yaml.safe_load(rules["source"])
    source["version"] = "2026.11.99"
    status, published = api("POST", "/v1/rules", {"source": yaml.safe_dump(source, sort_keys=False), "by": "ops"})
    assert status == 200 and published["action"] == "publish"
    assert api("POST", "/v1/rules", {"source": "version: x\nnot: rules\n"})[0] == 422
    status, rolled = api("POST", "/v1/rules/rollback", {"by": "ops"})
    assert status == 200 and rolled["action"] == "rollback"

    one = json.dumps({"type": "identify", "email": "dee@acme.io", "event_id": "wh-1"})
    assert api("POST", "/v1/webhooks/generic", raw=one, headers=_signed(one))[0] == 200
    many = json.dumps([{"type": "identify", "email": "eve@acme.io", "event_id": "wh-2"}])
    status, answers = api("POST", "/v1/webhooks/generic", raw=many, headers=_signed(many))
    assert status == 200 and isinstance(answers, list)
    assert api("POST", "/v1/webhooks/generic", raw=one, headers={**_signed(one), "webhook-signature": "v1,AAAA"})[0] == 401
    assert api("POST", "/v1/webhooks/nowhere", {"x": 1})[0] == 404

    status, erased = api("DELETE", f"/v1/leads/{sql['lead_id']}")
    assert status == 200 and erased["erased"] is True
    assert api("GET", f"/v1/leads/{sql['lead_id']}")[0] == 404

    from leadflow.routes.openapi import OPERATIONS

    answered = {(m, p) for m, p, s in api.checked if s == 200}
    assert answered == set(OPERATIONS), set(OPERATIONS) - answered


def test_with_a_key_the_document_stays_open_and_the_routes_do_not(api, monkeypatch):
    from leadflow import container

    monkeypatch.setenv("LEADFLOW_API_KEY", "k" * 40)
    container.reset()
    assert api("GET", "/v1/rules")[0] == 401  # documented: the answer is checked against ErrorAnswer
    status, _ = api("GET", "/v1/rules", headers={"authorization": "Bearer " + "k" * 40})
    assert status == 200


def test_the_document_is_not_on_the_cold_start_path():
    """The API function imports the document's models only when the document is asked for."""
    from tests.integration.conftest import cold_start_modules

    assert cold_start_modules("leadflow.routes.openapi") == []


def test_the_docs_page_and_its_assets_are_served_by_the_function(aws):
    """`GET /docs` is Swagger UI from the function itself: the page asks for the document
    and for its two assets relative to its own URL, and each is served; nothing else is."""
    from pathlib import Path

    import aws_lambda_powertools.event_handler.openapi.swagger_ui as bundle
    from leadflow.handlers import api as api_handler

    def get(path: str):
        return api_handler.handler(http_event("GET", path), Context())

    page = get("/docs")
    assert page["statusCode"] == 200 and page["headers"]["Content-Type"].startswith("text/html")
    html = page["body"]
    assert 'url: "openapi.json"' in html and "https://" not in html and "http://" not in html
    shipped = Path(bundle.__file__).parent
    for asset, file_name, kind in (("swagger-ui.css", "swagger-ui.min.css", "text/css"),
                                   ("swagger-ui-bundle.js", "swagger-ui-bundle.min.js", "text/javascript")):
        assert f'"docs/{asset}"' in html
        resp = get(f"/docs/{asset}")
        assert resp["statusCode"] == 200 and resp["headers"]["Content-Type"].startswith(kind)
        body = base64.b64decode(resp["body"]) if resp.get("isBase64Encoded") else resp["body"].encode("utf-8")
        assert body == (shipped / file_name).read_bytes()
    missing = get("/docs/..%2Fhandlers%2Fapi.py")
    assert missing["statusCode"] == 404 and json.loads(missing["body"])["field"] == "asset"
