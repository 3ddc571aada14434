"""The console's pages through the API handler (moto): the login and its session cookie,
CSRF on every action, pages that escape every value, and errors that are pages, not 500s."""

from __future__ import annotations

import html
import json
import time
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


@pytest.mark.parametrize("path", ["/console", "/console/leads/ld_000000000000000000000000"])
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

    assert "script-src" not in headers["Content-Security-Policy"]  # default-src 'none': no script at all
    assert "default-src 'none'" in headers["Content-Security-Policy"]
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
