"""The console's pages through the API handler (moto): the login and its session cookie,
CSRF on every action, pages that escape every value, and errors that are pages, not 500s;
the vendored chart library and the lead page's decay chart, the rules page, the dead
letters listed and replayed on moto's queues, and the HTML 404 of an unknown page."""

from __future__ import annotations

import hashlib
import html
import json
import re
import subprocess
import time
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from tests.integration.conftest import Context, http_event

KEY = "console-test-key-" + "k" * 32
BANT = {"budget": "yes", "authority": "decision_maker", "need": "replace spreadsheets", "timeline": "this_quarter"}
FORM = "application/x-www-form-urlencoded"


class Browser:
    """Requests as a browser sends them: cookies it was given come back, forms are posted
    url-encoded. Answers are the handler's raw Lambda responses."""

    def __init__(self, api_handler):
        self.handler = api_handler
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, *, query: str = "", form: dict | None = None,
                headers: dict | None = None, body=None) -> dict:
        hdrs = dict(headers or {})
        if self.cookies:
            hdrs["cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        raw = None
        if form is not None:
            hdrs.setdefault("content-type", FORM)
            raw = urlencode(form)
        resp = self.handler.handler(http_event(method, path, body, headers=hdrs, query=query, raw_body=raw), Context())
        for cookie in resp.get("cookies") or []:
            name, _, rest = cookie.partition("=")
            value = rest.split(";", 1)[0]
            if "Max-Age=0" in cookie:
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value
        return resp

    def get(self, path: str, **kw) -> dict:
        return self.request("GET", path, **kw)

    def post(self, path: str, form: dict, **kw) -> dict:
        return self.request("POST", path, form=form, **kw)

    def login(self, key: str = KEY) -> dict:
        return self.post("/console/login", {"key": key, "next": "/console"})

    def csrf(self, lead_id: str) -> str:
        page = self.get(f"/console/leads/{lead_id}")
        assert page["statusCode"] == 200, page["body"]
        return _hidden(page["body"], "csrf")


def _hidden(body: str, name: str) -> str:
    marker = f'name="{name}" value="'
    start = body.index(marker) + len(marker)
    return html.unescape(body[start:body.index('"', start)])


@pytest.fixture
def api_handler(aws, monkeypatch):
    from leadflow import container
    from leadflow.handlers import api

    monkeypatch.setenv("LEADFLOW_API_KEY", KEY)
    container.reset()
    return api


@pytest.fixture
def browser(api_handler) -> Browser:
    return Browser(api_handler)


def ingest(api_handler, email: str, **traits) -> dict:
    body = {"type": "form_submitted", "email": email, "properties": {"form_kind": "demo_request"},
            "traits": traits}
    resp = api_handler.handler(http_event("POST", "/v1/events", body, headers={"authorization": f"Bearer {KEY}"}),
                               Context())
    assert resp["statusCode"] == 200, resp["body"]
    return json.loads(resp["body"])


def sql_lead(api_handler, email: str = "bob@tiny.io", **traits) -> dict:
    lead = ingest(api_handler, email, first_name="Bob", last_name="Stone", company="Tiny", company_size=40,
                  **BANT, **traits)
    assert lead["stage"] == "sql"
    return lead


def v1_lead(api_handler, lead_id: str) -> dict:
    resp = api_handler.handler(http_event("GET", f"/v1/leads/{lead_id}", headers={"authorization": f"Bearer {KEY}"}),
                               Context())
    return json.loads(resp["body"])


def session_cookie(resp: dict) -> str:
    (cookie,) = [c for c in resp.get("cookies") or [] if c.startswith("leadflow_console=")]
    return cookie


# ---------------------------------------------------------------- login and session


def test_login_with_a_wrong_key_is_a_401_page_and_sets_no_cookie(browser):
    resp = browser.login("not-the-key")

    assert resp["statusCode"] == 401
    assert resp["headers"]["Content-Type"].startswith("text/html")
    assert "not this deployment&#39;s API key" in resp["body"]
    assert not resp.get("cookies") and not browser.cookies
    assert browser.get("/console")["statusCode"] == 303


def test_login_with_the_key_sets_a_signed_session_cookie_not_the_key(browser):
    resp = browser.login()

    assert resp["statusCode"] == 303 and resp["headers"]["Location"] == "/console"
    cookie = session_cookie(resp)
    attributes = {part.strip().split("=")[0] for part in cookie.split(";")[1:]}
    assert {"Path", "Max-Age", "HttpOnly", "SameSite"} <= attributes and "Secure" not in attributes  # plain http
    assert "; Path=/console" in cookie and "; SameSite=Strict" in cookie and "; Max-Age=43200" in cookie
    assert KEY not in cookie
    page = browser.get("/console")
    assert page["statusCode"] == 200 and "<h1>Leads</h1>" in page["body"]
    assert KEY not in page["body"]


def test_login_over_https_marks_the_cookie_secure(browser):
    resp = browser.post("/console/login", {"key": KEY}, headers={"x-forwarded-proto": "https"})

    assert resp["statusCode"] == 303
    assert "; Secure" in session_cookie(resp)


def test_login_returns_to_the_page_asked_for_but_never_to_another_site(browser):
    resp = browser.get("/console/leads/ld_abc", query="x=1")
    assert resp["statusCode"] == 303
    target = urlsplit(resp["headers"]["Location"])
    assert target.path == "/console/login"
    assert parse_qs(target.query)["next"] == ["/console/leads/ld_abc?x=1"]

    assert browser.post("/console/login", {"key": KEY, "next": "/console/leads/ld_abc?x=1"})["headers"][
        "Location"] == "/console/leads/ld_abc?x=1"
    browser.cookies.clear()
    for hostile in ("https://evil.example/", "//evil.example/console", "/console//evil.example", "/v1/leads",
                    "/console/../v1/leads", "/console\\@evil.example", "/console?\r\nSet-Cookie: x=1"):
        assert browser.post("/console/login", {"key": KEY, "next": hostile})["headers"]["Location"] == "/console"


def test_the_console_with_a_trailing_slash_is_the_console(browser):
    resp = browser.get("/console/")

    assert resp["statusCode"] == 303 and resp["headers"]["Location"] == "/console"


@pytest.mark.parametrize("path", ["/console", "/console/leads/ld_000000000000000000000000", "/console/rules",
                                  "/console/dead-letters"])
def test_pages_without_a_session_redirect_to_the_login_page(browser, path):
    resp = browser.get(path)

    assert resp["statusCode"] == 303
    assert resp["headers"]["Location"].startswith("/console/login?next=")
    assert not resp.get("body")


def test_a_tampered_expired_or_old_key_cookie_is_refused(browser, api_handler, monkeypatch):
    from leadflow import container
    from leadflow.routes.console import issue, session_secret, token

    browser.login()
    good = browser.cookies["leadflow_console"]
    expires, sid, signature = good.split(".")
    expired = token(issue(session_secret(KEY), time.time() - 13 * 3600))
    forged = token(issue(session_secret("another-key"), time.time()))
    stretched = f"{int(expires) + 86400}.{sid}.{signature}"
    for value in (f"{expires}.{sid}.{signature[:-2]}AA", f"{expires}.{sid}x.{signature}", stretched, expired, forged,
                  "garbage", ""):
        browser.cookies["leadflow_console"] = value
        assert browser.get("/console")["statusCode"] == 303, value

    browser.cookies["leadflow_console"] = good
    assert browser.get("/console")["statusCode"] == 200
    monkeypatch.setenv("LEADFLOW_API_KEY", "a-rotated-key-" + "r" * 30)  # a new key ends every session
    container.reset()
    assert browser.get("/console")["statusCode"] == 303


def test_logout_clears_the_cookie(browser):
    browser.login()
    resp = browser.post("/console/logout", {})

    assert resp["statusCode"] == 303 and resp["headers"]["Location"] == "/console/login"
    assert "Max-Age=0" in session_cookie(resp)
    assert browser.get("/console")["statusCode"] == 303


def test_without_a_key_locally_the_console_is_open_and_says_so(aws):
    from leadflow.handlers import api

    browser = Browser(api)  # the aws fixture leaves LEADFLOW_API_KEY unset; not in AWS
    page = browser.get("/console")

    assert page["statusCode"] == 200 and "open console" in page["body"]
    assert "leadflow_console" in browser.cookies  # a session all the same: it carries the CSRF token
    assert browser.get("/console/login")["statusCode"] == 303


def test_in_aws_without_a_key_the_console_is_a_503_like_the_api(aws, monkeypatch):
    from leadflow.handlers import api

    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "leadflow-api")
    for path in ("/console", "/console/login"):
        resp = Browser(api).get(path)
        assert resp["statusCode"] == 503 and "no API key is configured" in resp["body"], path


# ---------------------------------------------------------------- actions


def test_an_action_without_or_with_a_wrong_csrf_token_is_403_and_changes_nothing(browser, api_handler):
    lead = sql_lead(api_handler)
    browser.login()
    before = v1_lead(api_handler, lead["lead_id"])
    path = f"/console/leads/{lead['lead_id']}/actions"

    for form in ({"action": "accept"}, {"action": "accept", "csrf": "x" * 43}, {"action": "accept", "csrf": ""}):
        resp = browser.post(path, form)
        assert resp["statusCode"] == 403, form
        assert "did not come from the console" in resp["body"]
    # another session's token does not do either
    other = Browser(api_handler)
    other.login()
    resp = browser.post(path, {"action": "accept", "csrf": other.csrf(lead["lead_id"])})
    assert resp["statusCode"] == 403
    assert v1_lead(api_handler, lead["lead_id"])["history"] == before["history"]


def test_an_action_without_a_session_goes_to_the_login_page_and_changes_nothing(browser, api_handler):
    lead = sql_lead(api_handler)
    resp = browser.post(f"/console/leads/{lead['lead_id']}/actions", {"action": "accept", "csrf": "x"})

    assert resp["statusCode"] == 303
    assert resp["headers"]["Location"] == "/console/login?" + urlencode({"next": f"/console/leads/{lead['lead_id']}"})
    assert len(v1_lead(api_handler, lead["lead_id"])["history"]) == 1


def test_accept_from_the_lead_page_records_the_move_and_shows_it(browser, api_handler):
    lead = sql_lead(api_handler)
    browser.login()
    page = browser.get(f"/console/leads/{lead['lead_id']}")
    assert 'value="accept"' in page["body"] and 'value="won"' in page["body"]
    assert 'value="lost"' not in page["body"]  # lost is for an opportunity

    resp = browser.post(f"/console/leads/{lead['lead_id']}/actions",
                        {"action": "accept", "by": "ola@acme.example", "reason": "", "csrf": _hidden(page["body"], "csrf")})

    assert resp["statusCode"] == 303
    assert resp["headers"]["Location"] == f"/console/leads/{lead['lead_id']}?done=accept"
    after = v1_lead(api_handler, lead["lead_id"])
    assert after["history"][-1]["cause"] == {**after["history"][-1]["cause"], "action": "accept",
                                              "actor": "ola@acme.example"}
    assert after["first_touch_by"] == "ola@acme.example"
    shown = browser.get(f"/console/leads/{lead['lead_id']}", query="done=accept")["body"]
    assert "Done: accept." in shown and "accept by ola@acme.example" in shown
    assert 'value="accept"' not in shown  # accepted once


def test_an_action_the_lifecycle_refuses_is_a_readable_page_not_a_500(browser, api_handler):
    lead = sql_lead(api_handler)
    browser.login()
    csrf = browser.csrf(lead["lead_id"])
    path = f"/console/leads/{lead['lead_id']}/actions"

    no_reason = browser.post(path, {"action": "reject", "csrf": csrf})
    assert no_reason["statusCode"] == 422 and "reject needs a reason" in no_reason["body"]
    wrong_stage = browser.post(path, {"action": "lost", "csrf": csrf})
    assert wrong_stage["statusCode"] == 409 and "lost is allowed from opportunity" in wrong_stage["body"]
    unknown = browser.post(path, {"action": "<b>nonsense</b>", "csrf": csrf})
    assert unknown["statusCode"] == 422 and "<b>nonsense</b>" not in unknown["body"]
    assert len(v1_lead(api_handler, lead["lead_id"])["history"]) == 1

    done = browser.post(path, {"action": "reject", "reason": "no_budget", "csrf": csrf})
    assert done["statusCode"] == 303
    assert v1_lead(api_handler, lead["lead_id"])["stage"] == "lead"


# ---------------------------------------------------------------- pages


HOSTILE = {
    "first_name": "<script>alert('name')</script>",
    "company": '" onmouseover="alert(1)',
    "job_title": "</td><img src=x onerror=alert(2)>",
    "<img src=x onerror=alert(3)>": "key",
}


def test_hostile_trait_values_render_inert_on_every_page(browser, api_handler):
    lead = ingest(api_handler, "mallory@evil.example", **HOSTILE)
    browser.login()

    for page in (browser.get("/console"), browser.get("/console", query="q=mallory"),
                 browser.get(f"/console/leads/{lead['lead_id']}")):
        body = page["body"]
        assert page["statusCode"] == 200
        for raw in ("<script>alert", '" onmouseover=', "<img src=x", "</td><img"):
            assert raw not in body, raw
    body = browser.get(f"/console/leads/{lead['lead_id']}")["body"]
    assert "&lt;script&gt;alert(&#39;name&#39;)&lt;/script&gt;" in body
    assert "&#34; onmouseover=&#34;alert(1)" in body
    assert "&lt;img src=x onerror=alert(3)&gt;" in body


def test_pages_carry_a_content_security_policy_and_are_not_cached(browser):
    browser.login()
    headers = browser.get("/console")["headers"]
    policy = {d.split()[0]: d.split()[1:] for d in headers["Content-Security-Policy"].split("; ")}

    assert policy["default-src"] == ["'none'"]
    assert policy["script-src"] == ["'self'"]  # the console's own scripts: nothing inline, no eval
    assert policy["style-src"] == ["'self'"]
    assert headers["Cache-Control"] == "no-store" and headers["X-Frame-Options"] == "DENY"


def test_the_lead_page_explains_the_score_in_sentences_and_shows_the_timeline(browser, api_handler):
    lead = sql_lead(api_handler)
    view = v1_lead(api_handler, lead["lead_id"])
    browser.login()
    body = browser.get(f"/console/leads/{lead['lead_id']}")["body"]

    for line in view["explanation"]:
        assert html.escape(line["detail"]) in body
    assert "rule bant_hand_raise on form_submitted" in body
    assert f"rules {view['rules_version']}" in body
    assert "Bob Stone" in body and "bob@tiny.io" in body and "unassigned" in body


def test_an_unknown_lead_is_a_404_page(browser):
    browser.login()
    for lead_id in ("ld_000000000000000000000000", "x" * 300, "%3Cscript%3E"):
        resp = browser.get(f"/console/leads/{lead_id}")
        assert resp["statusCode"] == 404, lead_id
        assert resp["headers"]["Content-Type"].startswith("text/html") and "Not found" in resp["body"]
        assert "<script>" not in resp["body"]


@pytest.mark.parametrize("query, says", [
    ("stage=nowhere", "unknown stage"),
    ("sort=sideways", "sort: expected one of"),
    ("q=a", "search for at least 2 characters"),
    ("q=bo&sort=oldest", "leave sort out"),
    ("cursor=not-a-cursor", "cursor"),
    ("limit=100000", "limit"),
])
def test_bad_filters_show_the_message_not_a_500(browser, api_handler, query, says):
    sql_lead(api_handler)
    browser.login()
    resp = browser.get("/console", query=query)
    assert resp["statusCode"] == 422, resp["body"][:500]
    assert says in html.unescape(resp["body"]) and "<h1>Leads</h1>" in resp["body"]


def test_the_list_filters_searches_and_pages(browser, api_handler):
    for n in range(5):
        ingest(api_handler, f"person{n}@acme{n}.example", first_name=f"Per{n}", last_name="Son", company=f"Acme{n}")
    sql_lead(api_handler, "zed@zeta.example")
    browser.login()

    found = browser.get("/console", query="q=per3")["body"]
    assert "person3@acme3.example" in found and "person1@acme1.example" not in found
    sqls = browser.get("/console", query="stage=sql")["body"]
    assert "zed@zeta.example" in sqls and "person0@" not in sqls

    seen, path, query, newer_links = [], "/console", "limit=2", []
    for _ in range(4):
        body = browser.get(path, query=query)["body"]
        seen.append(_shown(body))
        older = _link(body, "next")
        newer_links.append(_link(body, "prev"))
        if older is None:
            break
        path, _, query = older.partition("?")
    assert [e for page in seen for e in page] == ["zed@", "person4@", "person3@", "person2@", "person1@", "person0@"]
    assert newer_links[0] is None and all(newer_links[1:])
    back_path, _, back_query = newer_links[-1].partition("?")  # newer from the last page: the page before it
    body = browser.get(back_path, query=back_query)["body"]
    assert _shown(body) == seen[-2]


def _shown(body: str) -> list[str]:
    """The test's leads a list page shows, in the page's order."""
    found = [e for e in ("zed@", *(f"person{n}@" for n in range(5))) if e in body]
    return sorted(found, key=body.index)


def _link(body: str, rel: str) -> str | None:
    marker = f'" rel="{rel}"'
    if marker not in body:
        return None
    end = body.index(marker)
    return html.unescape(body[body.rindex('href="', 0, end) + len('href="'):end])


def test_the_stylesheet_is_served_with_a_cache_header_and_without_a_session(browser):
    login = browser.get("/console/login")
    assert login["statusCode"] == 200
    href = login["body"].split('rel="stylesheet" href="', 1)[1].split('"', 1)[0]
    assert href.startswith("/console/assets/console.css?v=")

    css = browser.get("/console/assets/console.css")
    assert css["statusCode"] == 200 and css["headers"]["Content-Type"].startswith("text/css")
    assert "max-age" in css["headers"]["Cache-Control"]
    assert browser.get("/console/assets/..%2Froutes%2Fconsole.py")["statusCode"] == 404


def test_the_console_is_not_on_the_cold_start_path():
    """The API function loads the template engine on the first console page, never for `/v1`."""
    from tests.integration.conftest import cold_start_modules

    assert cold_start_modules("jinja2", "markupsafe") == []


# ---------------------------------------------------------------- charts


ASSETS = Path(__file__).resolve().parents[2] / "functions" / "leadflow" / "console" / "assets"


def _json_block(body: str, block_id: str) -> dict:
    start = body.index(f'<script type="application/json" id="{block_id}">') + len(
        f'<script type="application/json" id="{block_id}">')
    return json.loads(body[start:body.index("</script>", start)])


def test_the_vendored_chart_library_is_the_published_build_with_its_license(browser):
    notes = (ASSETS / "LICENSE-chart.js.txt").read_text(encoding="utf-8")
    data = (ASSETS / "chart.umd.min.js").read_bytes()
    recorded = re.search(r"sha256 of chart\.umd\.min\.js: ([0-9a-f]{64})", notes).group(1)
    version = re.search(r"chart\.js@(\d+\.\d+\.\d+)", notes).group(1)

    assert hashlib.sha256(data).hexdigest() == recorded, "chart.umd.min.js is not the build LICENSE-chart.js.txt names"
    assert data.startswith(f"/*!\n * Chart.js v{version}\n".encode()) and b"Released under the MIT License" in data[:200]
    assert version.startswith("4.") and "Permission is hereby granted, free of charge" in notes
    for name, kind in (("chart.umd.min.js", "text/javascript"), ("charts.js", "text/javascript"),
                       ("LICENSE-chart.js.txt", "text/plain")):
        resp = browser.get(f"/console/assets/{name}")  # open, like the stylesheet
        assert resp["statusCode"] == 200 and resp["headers"]["Content-Type"].startswith(kind), name
        assert resp["body"] == (ASSETS / name).read_text(encoding="utf-8")
    assert not re.search(r"\beval\(|new Function\(", (ASSETS / "charts.js").read_text(encoding="utf-8"))


def test_the_api_artifact_carries_the_console_assets(tmp_path):
    """The Makefile's `code` step (what `sam build` runs for every function) copies them."""
    done = subprocess.run(["make", "--no-print-directory", "-C", str(ASSETS.parents[2]), "code",
                           f"ARTIFACTS_DIR={tmp_path}"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    shipped = tmp_path / "leadflow" / "console" / "assets"
    for name in ("chart.umd.min.js", "charts.js", "LICENSE-chart.js.txt", "console.css"):
        assert (shipped / name).read_bytes() == (ASSETS / name).read_bytes(), name


def test_the_lead_page_charts_each_signals_decay_from_the_scores_own_lines(browser, api_handler):
    from leadflow import container

    lead = sql_lead(api_handler)
    view = v1_lead(api_handler, lead["lead_id"])
    browser.login()
    body = browser.get(f"/console/leads/{lead['lead_id']}")["body"]

    chart = _json_block(body, "decay-chart")
    engaged = {line["rule"]: line["points"] for line in view["explanation"] if line["axis"] == "engagement"}
    assert engaged, view["explanation"]
    assert chart["type"] == "line" and chart["x"]["title"] == "days from now"
    assert {d["label"]: d["data"][0] for d in chart["datasets"]} == engaged  # the first point is the score's
    assert all(len(d["data"]) == len(chart["labels"]) for d in chart["datasets"]) and chart["labels"][0] == "0"
    rules = container.rules()
    for rule_id in engaged:
        half_life = rules.engagement_by_id[rule_id].half_life_days if rule_id in rules.engagement_by_id else None
        row = body[body.index(f"<strong>{rule_id}</strong>"):]
        row = row[:row.index("</tr>")]
        assert (f"half-life {half_life:g} days" if half_life else "no decay") in row, row
    # The page loads the chart scripts (served by the console) and canvas names the block.
    assert '<canvas data-chart="decay-chart"' in body
    for name in ("chart.umd.min.js", "charts.js"):
        assert re.search(rf'<script src="/console/assets/{re.escape(name)}\?v=[0-9a-f]{{12}}" defer></script>', body)
    assert "<script>" not in body  # no inline script


def test_a_page_without_charts_loads_no_script(browser, api_handler):
    sql_lead(api_handler)
    browser.login()

    assert "<script" not in browser.get("/console")["body"]


# ---------------------------------------------------------------- rules


def _pre(body: str, element_id: str) -> str:
    start = body.index(f'id="{element_id}">') + len(f'id="{element_id}">')
    return html.unescape(body[start:body.index("</pre>", start)])


def test_the_rules_page_shows_the_deployed_file_when_nothing_was_published(browser):
    from leadflow.settings import rules_text

    browser.login()
    page = browser.get("/console/rules")

    assert page["statusCode"] == 200
    body = page["body"]
    assert 'href="/console/rules"' in body  # in the header's navigation
    assert "nothing has been published" in body and "Nothing published yet" in body
    assert _pre(body, "rules-source") == rules_text(None)[0]


def test_the_rules_page_shows_the_version_in_force_escaped_and_its_history(browser, api_handler, monkeypatch):
    from leadflow import container
    from leadflow.handlers import jobs
    from leadflow.settings import rules_text

    monkeypatch.setenv("LEADFLOW_RULES_TTL_SECONDS", "0")  # the jobs' re-score follows the publish at once
    container.reset()
    sql_lead(api_handler)
    base = rules_text(None)[0]
    source = re.sub(r'(?m)^version: .*$', 'version: "2099.1.1"', base, count=1) + "# </pre><script>alert(1)</script>\n"
    resp = api_handler.handler(http_event("POST", "/v1/rules", {"source": source, "by": "<b>ops</b>"},
                                          headers={"authorization": f"Bearer {KEY}"}), Context())
    assert resp["statusCode"] == 200, resp["body"]
    jobs.handler({"job": "rules"}, Context("JobsFunction"))
    browser.login()
    body = browser.get("/console/rules")["body"]

    assert '<span id="rules-version">2099.1.1</span>' in body
    assert "published by <strong>&lt;b&gt;ops&lt;/b&gt;</strong>" in body
    assert _pre(body, "rules-source") == source.strip()  # the YAML as published (the API strips it), escaped
    assert "<script>alert(1)</script>" not in body and "</pre><script>" not in body
    history = body[body.index('id="history"'):]
    rows = history.split("<tr")[2:]  # after the header's row
    assert len(rows) == 2 and "2099.1.1" in rows[0] and "in force" in rows[0] and "deployed file" in rows[1]
    assert "1 leads, " in rows[0]  # its re-score's result
    assert "rollback" not in rows[0]


# ---------------------------------------------------------------- dead letters


@pytest.fixture
def queues(api_handler, monkeypatch):
    """The template's handoff queues in moto, named in the environment as in AWS."""
    import boto3

    from leadflow import container
    from leadflow_infra.local.queues import create_queues, template_queues

    made = create_queues(boto3.client("sqs"), template_queues())
    monkeypatch.setenv("LEADFLOW_RETRY_QUEUE_URL", made["HandoffRetryQueue"].url)
    monkeypatch.setenv("LEADFLOW_DLQ_URL", made["HandoffDeadLetterQueue"].url)
    container.reset()
    return {"sqs": boto3.client("sqs"), "dead": made["HandoffDeadLetterQueue"].url,
            "retry": made["HandoffRetryQueue"].url}


def dead_letter(queues, lead_id: str, move_id: str, *, sink: str = "hubspot",
                reason: str = 'HTTP 400: {"message":"Property values were not valid"}') -> str:
    """A dead letter as the handoff writes it; its message id."""
    from datetime import datetime, timezone

    from leadflow.usecases.handoff import dead_letter_message

    body = dead_letter_message(lead_id, move_id, sink, 1, reason, "refused", datetime.now(timezone.utc))
    return queues["sqs"].send_message(QueueUrl=queues["dead"], MessageBody=json.dumps(body))["MessageId"]


def queued(queues, which: str) -> list[dict]:
    messages = queues["sqs"].receive_message(QueueUrl=queues[which], MaxNumberOfMessages=10, VisibilityTimeout=0)
    return [json.loads(m["Body"]) for m in messages.get("Messages", [])]


def _letters_csrf(browser) -> str:
    page = browser.get("/console/dead-letters")
    assert page["statusCode"] == 200, page["body"]
    return _hidden(page["body"], "csrf")


def test_the_dead_letters_page_lists_ids_sink_and_reason_never_the_person(browser, api_handler, queues):
    lead = sql_lead(api_handler, "dora.dead@tiny.io")
    move_id = v1_lead(api_handler, lead["lead_id"])["history"][-1]["transition_id"]
    message_id = dead_letter(queues, lead["lead_id"], move_id, reason="HTTP 400: contact dora.dead@tiny.io refused")
    browser.login()
    page = browser.get("/console/dead-letters")

    assert page["statusCode"] == 200
    body = page["body"]
    row = body[body.index(f'id="letter-{message_id}"'):]
    row = row[:row.index("</tr>")]
    assert "hubspot" in row and lead["lead_id"] in row and move_id in row and "refused" in row
    assert f'name="id" value="{message_id}"' in row
    assert "dora.dead@tiny.io" not in body and "Bob" not in body and "Stone" not in body  # not the person
    assert 'href="/console/dead-letters"' in body and 'id="replay-all"' in body


def test_replaying_one_letter_moves_it_to_the_retry_queue_and_off_the_list(browser, api_handler, queues):
    lead = sql_lead(api_handler)
    move_id = v1_lead(api_handler, lead["lead_id"])["history"][-1]["transition_id"]
    first = dead_letter(queues, lead["lead_id"], move_id, sink="hubspot")
    other = dead_letter(queues, lead["lead_id"], move_id, sink="salesforce")
    browser.login()
    csrf = _letters_csrf(browser)

    resp = browser.post("/console/dead-letters/replay", {"csrf": csrf, "id": first})

    assert resp["statusCode"] == 303
    assert resp["headers"]["Location"] == "/console/dead-letters?replayed=1&dropped=0"
    (retry,) = queued(queues, "retry")
    assert {k: retry[k] for k in ("type", "lead_id", "move_id", "sink", "attempt")} == {
        "type": "leadflow.delivery", "lead_id": lead["lead_id"], "move_id": move_id, "sink": "hubspot", "attempt": 1}
    assert [m["sink"] for m in queued(queues, "dead")] == ["salesforce"]
    body = browser.get("/console/dead-letters", query="replayed=1&dropped=0")["body"]
    assert "Replayed 1; dropped 0." in body
    assert f'id="letter-{first}"' not in body and f'id="letter-{other}"' in body

    again = browser.post("/console/dead-letters/replay", {"csrf": csrf, "id": first})  # gone meanwhile
    path, _, query = again["headers"]["Location"].partition("?")
    assert parse_qs(query) == {"replayed": ["0"], "dropped": ["0"], "missing": ["1"]}
    assert "no longer in the queue" in browser.get(path, query=query)["body"]
    assert len(queued(queues, "retry")) == 1


def test_replaying_the_newest_of_many_letters_finds_it_and_leaves_the_others_listed(browser, api_handler, queues):
    lead = sql_lead(api_handler)
    move_id = v1_lead(api_handler, lead["lead_id"])["history"][-1]["transition_id"]
    ids = [dead_letter(queues, lead["lead_id"], move_id, sink=f"sink{n}") for n in range(13)]  # > one receive
    browser.login()

    resp = browser.post("/console/dead-letters/replay", {"csrf": _letters_csrf(browser), "id": ids[-1]})

    assert resp["headers"]["Location"] == "/console/dead-letters?replayed=1&dropped=0"
    assert [m["sink"] for m in queued(queues, "retry")] == ["sink12"]
    body = browser.get("/console/dead-letters")["body"]  # the letters looked at are back at once
    assert [i for i in ids if f'id="letter-{i}"' in body] == ids[:-1]


def test_a_long_queue_is_listed_and_replayed_a_page_at_a_time(browser, api_handler, queues, monkeypatch):
    from datetime import datetime, timezone

    from leadflow.routes import console
    from leadflow.usecases.handoff import dead_letter_message

    # Pages of 200 and replays of 100 in production; smaller here, as moto's SQS reads
    # every message of the queue at each receive.
    LIST_LETTERS, REPLAY_AT_ONCE = 12, 5
    monkeypatch.setattr(console, "LIST_LETTERS", LIST_LETTERS)
    monkeypatch.setattr(console, "REPLAY_AT_ONCE", REPLAY_AT_ONCE)
    lead = sql_lead(api_handler)
    move_id = v1_lead(api_handler, lead["lead_id"])["history"][-1]["transition_id"]
    total = LIST_LETTERS + 3
    bodies = [json.dumps(dead_letter_message(lead["lead_id"], move_id, f"sink{n}", 1, "HTTP 400", "refused",
                                             datetime.now(timezone.utc))) for n in range(total)]
    for start in range(0, total, 10):
        queues["sqs"].send_message_batch(QueueUrl=queues["dead"], Entries=[
            {"Id": str(n), "MessageBody": body} for n, body in enumerate(bodies[start:start + 10])])
    browser.login()

    body = browser.get("/console/dead-letters")["body"]
    assert body.count('<tr id="letter-') == LIST_LETTERS and 'id="more-letters"' in body
    resp = browser.post("/console/dead-letters/replay", {"csrf": _hidden(body, "csrf"), "all": "1"})

    assert resp["headers"]["Location"] == f"/console/dead-letters?replayed={REPLAY_AT_ONCE}&dropped=0&more=1"
    after = browser.get("/console/dead-letters", query=resp["headers"]["Location"].split("?")[1])["body"]
    assert after.count('<tr id="letter-') == total - REPLAY_AT_ONCE and 'id="more-letters"' not in after
    assert len(queued(queues, "retry")) == REPLAY_AT_ONCE
    assert "More remain: replay again." in after


def test_replay_all_drops_an_erased_leads_letter_and_requeues_the_rest(browser, api_handler, queues):
    kept = sql_lead(api_handler, "kept@tiny.io")
    gone = sql_lead(api_handler, "gone@tiny.io")
    kept_move = v1_lead(api_handler, kept["lead_id"])["history"][-1]["transition_id"]
    gone_move = v1_lead(api_handler, gone["lead_id"])["history"][-1]["transition_id"]
    dead_letter(queues, kept["lead_id"], kept_move)
    dead_letter(queues, gone["lead_id"], gone_move)
    erased = api_handler.handler(http_event("DELETE", f"/v1/leads/{gone['lead_id']}",
                                            headers={"authorization": f"Bearer {KEY}"}), Context())
    assert erased["statusCode"] == 200, erased["body"]
    browser.login()

    resp = browser.post("/console/dead-letters/replay", {"csrf": _letters_csrf(browser), "all": "1"})

    assert resp["headers"]["Location"] == "/console/dead-letters?replayed=1&dropped=1"
    assert [m["lead_id"] for m in queued(queues, "retry")] == [kept["lead_id"]]
    assert queued(queues, "dead") == []
    body = browser.get("/console/dead-letters", query="replayed=1&dropped=1")["body"]
    assert "No dead letters" in body and "the lead was erased" in body


def test_a_message_that_is_not_a_dead_letter_is_listed_as_such_and_left_alone(browser, api_handler, queues):
    foreign = queues["sqs"].send_message(QueueUrl=queues["dead"], MessageBody="<b>not json</b>")["MessageId"]
    browser.login()
    body = browser.get("/console/dead-letters")["body"]
    row = body[body.index(f'id="letter-{foreign}"'):]

    assert "not a leadflow dead letter" in row[:row.index("</tr>")] and "<b>not json" not in body
    resp = browser.post("/console/dead-letters/replay", {"csrf": _hidden(body, "csrf"), "all": "1"})
    assert resp["headers"]["Location"] == "/console/dead-letters?replayed=0&dropped=0"
    assert queued(queues, "retry") == []
    assert len(queues["sqs"].receive_message(QueueUrl=queues["dead"], VisibilityTimeout=0).get("Messages", [])) == 1


def test_replay_without_the_csrf_token_or_with_a_hostile_id_changes_nothing(browser, api_handler, queues):
    lead = sql_lead(api_handler)
    move_id = v1_lead(api_handler, lead["lead_id"])["history"][-1]["transition_id"]
    dead_letter(queues, lead["lead_id"], move_id)
    browser.login()
    csrf = _letters_csrf(browser)

    for form in ({"all": "1"}, {"all": "1", "csrf": "x" * 43}):
        resp = browser.post("/console/dead-letters/replay", form)
        assert resp["statusCode"] == 403 and "did not come from the console" in resp["body"], form
    logged_out = Browser(api_handler).post("/console/dead-letters/replay", {"all": "1", "csrf": csrf})
    assert logged_out["statusCode"] == 303
    assert logged_out["headers"]["Location"] == "/console/login?" + urlencode({"next": "/console/dead-letters"})
    for form, says in (({"csrf": csrf, "id": "<script>x</script>"}, "id: not a dead letter"),
                       ({"csrf": csrf}, "id: give one dead letter"),
                       ({"csrf": csrf, "id": "abc", "all": "1"}, "id: give one dead letter")):
        resp = browser.post("/console/dead-letters/replay", form)
        assert resp["statusCode"] == 422 and says in html.unescape(resp["body"]), form
        assert "<script>x" not in resp["body"]
    assert len(queued(queues, "dead")) == 1 and queued(queues, "retry") == []


def test_without_the_handoff_queues_the_dead_letters_page_says_so(browser, monkeypatch):
    from leadflow import container

    monkeypatch.delenv("LEADFLOW_DLQ_URL", raising=False)
    monkeypatch.delenv("LEADFLOW_RETRY_QUEUE_URL", raising=False)
    container.reset()
    browser.login()
    resp = browser.get("/console/dead-letters")

    assert resp["statusCode"] == 503 and "LEADFLOW_DLQ_URL" in resp["body"]
    assert resp["headers"]["Content-Type"].startswith("text/html")


def test_the_api_function_may_read_the_dead_letters_and_requeue_them():
    from leadflow_infra.template import find_template, load_template

    policies = load_template(find_template())["Resources"]["ApiFunction"]["Properties"]["Policies"]
    pollers = [p["SQSPollerPolicy"]["QueueName"] for p in policies if isinstance(p, dict) and "SQSPollerPolicy" in p]
    senders = [p["SQSSendMessagePolicy"]["QueueName"] for p in policies
               if isinstance(p, dict) and "SQSSendMessagePolicy" in p]

    assert pollers == [{"Fn::GetAtt": ["HandoffDeadLetterQueue", "QueueName"]}]  # receive, delete, visibility
    assert senders == [{"Fn::GetAtt": ["HandoffRetryQueue", "QueueName"]}]


# ---------------------------------------------------------------- not found


@pytest.mark.parametrize("path", ["/console/nowhere", "/console/leads/ld_1/extra", "/console/assets/x/y.js",
                                  "/console/%3Cscript%3Ealert(1)%3C%2Fscript%3E"])
def test_an_unknown_console_address_is_an_html_404_with_a_way_back(browser, path):
    resp = browser.get(path)

    assert resp["statusCode"] == 404
    assert resp["headers"]["Content-Type"].startswith("text/html")
    assert resp["headers"]["Content-Security-Policy"].startswith("default-src 'none'")
    assert "Not found" in resp["body"] and 'href="/console"' in resp["body"]
    assert "<script>" not in resp["body"]


def test_an_unknown_api_address_stays_a_json_404(api_handler):
    resp = api_handler.handler(http_event("GET", "/v1/nowhere", headers={"authorization": f"Bearer {KEY}"}),
                               Context())

    assert resp["statusCode"] == 404 and json.loads(resp["body"])["error"] == "not_found"
