"""The console: HTML pages for marketing and sales, served by the API function itself
(`leadflow serve` locally, the same function and HTTP API in AWS: nothing else to host).

Pages are rendered on the server with Jinja2, autoescaping every value: traits, names and
form fields come from anyone who can post a form, so no value is ever written into a page
unescaped. Charts are drawn by Chart.js, vendored in console/assets/ with our charts.js:
a page carries each chart's figures as a JSON block (`tojson`, never executed) beside a
table of the same figures, so the Content-Security-Policy allows scripts from the
console's own assets only, and every page is complete without JavaScript. Stylesheet and
scripts are served from the function; nothing is fetched from elsewhere.
Jinja2 is imported on the first console request only: the API's cold start on
`/v1/events` does not pay for it.

Authentication: the API key, exchanged once for a session cookie.
A browser cannot send `Authorization: Bearer` when it follows a link, and the deployment
already has exactly one secret that stands for "may read and act on leads": the API key
`/v1` requires. So `/console/login` asks for that key (compared in constant time) and
answers with a cookie that is not the key but a token signed (HMAC-SHA256) with a key
derived from it: the key never travels again nor sits in the browser, and rotating the
API key invalidates every session. The cookie is HttpOnly, SameSite=Strict, Path=/console,
Secure when the request came over https, and expires after SESSION_HOURS. A page without
a valid session redirects (303) to the login page. Every POST also carries a CSRF token
derived from the session (checked in constant time): SameSite is a browser's courtesy,
not a guarantee. Without an API key outside AWS (`leadflow serve` with an open API) the
console is open too, and says so; in AWS without a key it answers 503, as `/v1` does.
Nothing here logs the key, the cookie or a person's data.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import re
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.shared.cookies import Cookie, SameSite
from pydantic import BaseModel, ConfigDict, Field

from leadflow import container
from leadflow.domain.errors import InvalidInput, LeadflowError, Misconfigured, NotFound, UnsupportedMediaType
from leadflow.domain.events import Identity, Text, validated
from leadflow.observability import logger
from leadflow.routes.access import api_key_in_force
from leadflow.routes.forms import media_type, parse_form_body
from leadflow.routes.webhooks import raw_body

router = Router()

CONSOLE_DIR = Path(__file__).resolve().parent.parent / "console"  # templates/ and assets/
COOKIE = "leadflow_console"
COOKIE_PATH = "/console"
SESSION_HOURS = 12
SESSION_SECONDS = SESSION_HOURS * 3600
MAX_TRAIL = 20  # "newer" pages remembered in the list's URL
MAX_EVENTS_SHOWN = 50
LEAD_ID = re.compile(r"[A-Za-z0-9_.:-]{1,200}")
CURSOR = re.compile(r"[A-Za-z0-9_-]{1,4000}")
LIST_LETTERS = 200  # dead letters a page lists
REPLAY_AT_ONCE = 100  # dead letters one "replay all" re-drives (a request has 29 s)
MESSAGE_ID = re.compile(r"[A-Za-z0-9_-]{1,100}")
JS = "text/javascript; charset=utf-8"
ASSETS = {"console.css": "text/css; charset=utf-8", "chart.umd.min.js": JS, "charts.js": JS,
          "LICENSE-chart.js.txt": "text/plain; charset=utf-8"}
CHART_SCRIPTS = ("chart.umd.min.js", "charts.js")

# What an HTML answer may do: its own stylesheet and scripts, and forms posting to itself;
# no inline script or style, no eval, no frame, no other origin.
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}

# A secret for sessions of an open console (no API key, outside AWS only): per process,
# which is all `leadflow serve` runs the API in; a restart starts new sessions.
_OPEN_SECRET = secrets.token_bytes(32)


# ---------------------------------------------------------------- sessions


@dataclass(frozen=True)
class Session:
    sid: str
    expires: int
    secret: bytes
    fresh: bool = False  # issued by this request: the answer sets the cookie

    @property
    def csrf(self) -> str:
        return _mac(self.secret, f"csrf|{self.sid}")


def session_secret(api_key: str | None) -> bytes:
    """The key sessions are signed with: derived from the API key (a new key, new
    sessions), never the key itself."""
    if not api_key:
        return _OPEN_SECRET
    return hmac.new(api_key.encode("utf-8"), b"leadflow console session v1", hashlib.sha256).digest()


def _mac(secret: bytes, text: str) -> str:
    digest = hmac.new(secret, text.encode("utf-8"), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


def issue(secret: bytes, now: float) -> Session:
    sid = secrets.token_urlsafe(18)
    return Session(sid=sid, expires=int(now) + SESSION_SECONDS, secret=secret, fresh=True)


def token(session: Session) -> str:
    """The cookie's value: `<expiry>.<session id>.<signature>`."""
    body = f"{session.expires}.{session.sid}"
    return f"{body}.{_mac(session.secret, 'session|' + body)}"


def read_token(secret: bytes, value: str | None, now: float) -> Session | None:
    """The session a cookie value holds, or None when it is malformed, forged or expired."""
    if not value or len(value) > 200:
        return None
    parts = value.split(".")
    if len(parts) != 3 or not parts[0].isdigit():
        return None
    expires, sid, given = int(parts[0]), parts[1], parts[2]
    if not hmac.compare_digest(given.encode("ascii", "replace"),
                               _mac(secret, f"session|{expires}.{sid}").encode("ascii")):
        return None
    if not now < expires <= now + SESSION_SECONDS + 60:
        return None
    return Session(sid=sid, expires=expires, secret=secret)


class _Refused(Exception):
    def __init__(self, response: Response):
        self.response = response


def _api_key() -> str | None:
    """The API key, or a 503 page when none can be had in AWS (as `/v1` answers)."""
    try:
        return api_key_in_force("console")
    except Misconfigured as exc:
        raise _Refused(_error_page(exc)) from None


def _cookie_value() -> str | None:
    event = router.current_event.raw_event
    found = None
    for raw in event.get("cookies") or []:
        name, _, value = raw.partition("=")
        if name.strip() == COOKIE:
            found = value.strip()
    return found


def _session() -> tuple[Session, bool]:
    """The request's session and whether the console is open (no key). Without a valid
    session: a fresh one when open, else a redirect to the login page."""
    key = _api_key()
    secret = session_secret(key)
    now = time.time()
    session = read_token(secret, _cookie_value(), now)
    if session is not None:
        return session, key is None
    if key is None:
        return issue(secret, now), True
    back = _here() if router.current_event.http_method == "GET" else \
        _here().split("?")[0].removesuffix("/actions").removesuffix("/replay")  # a form's page
    raise _Refused(_redirect("/console/login" + _query({"next": back})))


def _check_csrf(session: Session, form: dict[str, str]) -> None:
    given = form.get("csrf") or ""
    if session.fresh or not hmac.compare_digest(given.encode("utf-8", "replace"), session.csrf.encode("ascii")):
        logger.warning("console.csrf_refused")
        raise _Refused(_error_page(_Forbidden("this form has expired or did not come from the console; "
                                              "reload the page and try again")))


class _Forbidden(LeadflowError):
    status = 403
    code = "forbidden"


def _https() -> bool:
    headers = {k.lower(): v for k, v in (router.current_event.raw_event.get("headers") or {}).items()}
    return headers.get("x-forwarded-proto", "").split(",")[0].strip().lower() == "https"


def _session_cookie(session: Session) -> Cookie:
    return Cookie(COOKIE, token(session), path=COOKIE_PATH, secure=_https(), http_only=True,
                  max_age=SESSION_SECONDS, same_site=SameSite.STRICT_MODE)


def _cleared_cookie() -> Cookie:
    return Cookie(COOKIE, "", path=COOKIE_PATH, secure=_https(), http_only=True, max_age=0,
                  same_site=SameSite.STRICT_MODE)


# ---------------------------------------------------------------- answers


def _page(template: str, status: int = 200, *, session: Session | None = None, open_console: bool = False,
          cookies: list[Cookie] | None = None, charts: bool = False, **values: Any) -> Response[Any]:
    """`charts`: the page draws charts (its `<canvas data-chart>`): it loads the scripts."""
    scripts = [_asset_url(name) for name in CHART_SCRIPTS] if charts else []
    html = _templates().get_template(template).render(
        session=session, open_console=open_console, css=_asset_url("console.css"), scripts=scripts, **values)
    cookies = list(cookies or [])
    if session is not None and session.fresh:
        cookies.append(_session_cookie(session))
    return Response(status_code=status, content_type="text/html; charset=utf-8", body=html,
                    headers=dict(PAGE_HEADERS), cookies=cookies)


def _error_page(error: LeadflowError, **values: Any) -> Response[Any]:
    return _page("error.html", error.status, error=error, **values)


def _redirect(location: str, cookies: list[Cookie] | None = None) -> Response[Any]:
    return Response(status_code=303, content_type="text/html; charset=utf-8", body="",
                    headers={"Location": location, "Cache-Control": "no-store"}, cookies=cookies or [])


def _query(params: dict[str, Any]) -> str:
    kept = {k: v for k, v in params.items() if v not in (None, "")}
    return "?" + urlencode(kept) if kept else ""


def _here() -> str:
    event = router.current_event.raw_event
    path = event.get("rawPath") or "/console"
    query = event.get("rawQueryString") or ""
    return path + ("?" + query if query else "")


def _safe_next(value: str | None) -> str:
    """Where to go after logging in: a console page, never another site."""
    if value and re.fullmatch(r"/console(/[A-Za-z0-9_.:/-]*)?(\?[^\\\s]*)?", value) and "//" not in value \
            and ".." not in value:
        return value
    return "/console"


def _form() -> dict[str, str]:
    event = router.current_event.raw_event
    headers = {k.lower(): v for k, v in (event.get("headers") or {}).items()}
    kind = media_type(headers.get("content-type"))
    if kind not in ("application/x-www-form-urlencoded", "multipart/form-data"):
        raise UnsupportedMediaType("the console's forms post application/x-www-form-urlencoded",
                                   field="content-type")
    fields = parse_form_body(raw_body(event), headers.get("content-type", ""))
    return {k: v for k, v in fields.items() if isinstance(v, str)}


def _guarded(handler):
    """A page behind the session: refusals (login redirect, 403, 503) and domain errors
    become pages, never a JSON body or a 500."""

    @functools.wraps(handler)
    def run(*args, **kwargs):
        try:
            return handler(*args, **kwargs)
        except _Refused as refused:
            return refused.response
        except LeadflowError as exc:
            if exc.status >= 500:
                logger.warning("console.failed", extra={"error": exc.code})
            return _error_page(exc)

    return run


# ---------------------------------------------------------------- rendering


@functools.cache
def _templates():
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

    env = Environment(loader=FileSystemLoader(CONSOLE_DIR / "templates"), autoescape=select_autoescape(default=True),
                      undefined=StrictUndefined, auto_reload=False, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(when=_when, duration=_duration, points=_points, value=_value)
    env.globals.update(lead_url=lambda lead_id: "/console/leads/" + quote(str(lead_id), safe=""),
                       session_hours=SESSION_HOURS)
    return env


@functools.cache
def _asset(name: str) -> str:
    return (CONSOLE_DIR / "assets" / name).read_text("utf-8")


@functools.cache
def _asset_url(name: str) -> str:
    digest = hashlib.sha256((CONSOLE_DIR / "assets" / name).read_bytes()).hexdigest()[:12]
    return f"/console/assets/{name}?v={digest}"


def _when(value: Any) -> str:
    if not value:
        return "—"
    try:
        at = value if isinstance(value, datetime) else datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return str(value)
    return at.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _duration(seconds: Any) -> str:
    if seconds is None:
        return "—"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 120:
        return f"{minutes} min"
    hours = minutes // 60
    return f"{hours} h {minutes % 60} min" if hours < 48 else f"{hours // 24} days {hours % 24} h"


def _points(value: Any) -> str:
    number = float(value or 0)
    text = f"{number:+.1f}".rstrip("0").rstrip(".")
    return "0" if text in ("+0", "-0") else text


def _value(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    if value is None:
        return "—"
    return str(value)


# ---------------------------------------------------------------- routes


@router.get("/console/assets/<name>", include_in_schema=False)
def console_asset(name: str) -> Response[Any]:
    """The stylesheet and the chart scripts (open: they hold nothing but code and layout,
    and the login page needs the stylesheet)."""
    if name not in ASSETS:
        return _error_page(NotFound(f"no asset {name!r}", field="asset"))
    return Response(status_code=200, content_type=ASSETS[name], body=_asset(name),
                    headers={"Cache-Control": "public, max-age=86400", "X-Content-Type-Options": "nosniff"})


@router.get("/console/login", include_in_schema=False)
@_guarded
def login_page() -> Response[Any]:
    params = router.current_event.query_string_parameters or {}
    key = _api_key()
    if key is None:
        return _redirect("/console")
    if read_token(session_secret(key), _cookie_value(), time.time()) is not None:
        return _redirect(_safe_next(params.get("next")))
    return _page("login.html", next=_safe_next(params.get("next")), message=None)


@router.post("/console/login", include_in_schema=False)
@_guarded
def login() -> Response[Any]:
    key = _api_key()
    if key is None:
        return _redirect("/console")
    form = _form()
    target = _safe_next(form.get("next"))
    given = (form.get("key") or "").strip()
    if not hmac.compare_digest(given.encode("utf-8", "replace"), key.encode("utf-8")):
        logger.info("console.login_refused")
        return _page("login.html", 401, next=target, message="That is not this deployment's API key.")
    logger.info("console.login")
    session = issue(session_secret(key), time.time())
    return _redirect(target, cookies=[_session_cookie(session)])


@router.route("/console/logout", ["GET", "POST"], include_in_schema=False)
def logout() -> Response[Any]:
    """Ends the session in this browser. Not CSRF-checked: its only effect is logging out."""
    return _redirect("/console/login", cookies=[_cleared_cookie()])


@router.get("/console/", include_in_schema=False)
def console_slash() -> Response[Any]:
    return _redirect("/console")


@router.get("/console", include_in_schema=False)
@_guarded
def lead_list() -> Response[Any]:
    from leadflow.domain.listing import parse_list_query
    from leadflow.domain.stages import STAGES

    session, open_console = _session()
    params = {k: v for k, v in (router.current_event.query_string_parameters or {}).items() if v.strip()}
    filters = {k: params[k] for k in ("stage", "owner", "source", "q", "sort", "limit") if k in params}
    cursor = params.get("cursor")
    trail = [c for c in params.get("back", "").split(".") if c][-MAX_TRAIL:]
    if not all(c == "0" or CURSOR.fullmatch(c) for c in trail):
        trail = []
    page, error, status = {"items": [], "next_cursor": None}, None, 200
    try:
        query = parse_list_query(filters)
        if cursor is not None and not CURSOR.fullmatch(cursor):
            raise InvalidInput("cursor: not a cursor of this list", field="cursor")
        page = container.lister().page(query, cursor)
    except InvalidInput as exc:
        error, status = exc, exc.status
    older = newer = None
    if page["next_cursor"]:
        older = "/console" + _query({**filters, "cursor": page["next_cursor"], "back": ".".join([*trail, cursor or "0"])})
    if cursor:
        previous = trail[-1] if trail else "0"
        newer = "/console" + _query({**filters, "cursor": None if previous == "0" else previous,
                                     "back": ".".join(trail[:-1])})
    return _page("leads.html", status, session=session, open_console=open_console, filters=filters,
                 stages=STAGES, items=page["items"], error=error, older=older, newer=newer,
                 first="/console" + _query(filters) if cursor else None)


def _lead_page(lead_id: str, session: Session, open_console: bool, *, status: int = 200,
               error: LeadflowError | None = None, done: str | None = None, form: dict[str, str] | None = None):
    from leadflow.domain.lifecycle import ACTIONS, check_action
    from leadflow.usecases.signal_decay import decay_curves

    if not LEAD_ID.fullmatch(lead_id):
        raise NotFound(f"no lead {lead_id}", field="lead_id")
    svc = container.service()
    lead = svc.get(lead_id)
    view = svc.view(lead)
    decay = decay_curves(lead, svc.rules, datetime.fromisoformat(view["scored_at"]))
    actions = []
    for name, action in ACTIONS.items():
        try:
            check_action(lead, name, "reason")
        except LeadflowError:
            continue
        actions.append({"name": name, "needs_reason": action.requires_reason})
    timeline = [{"kind": "move", "at": m["at"], "move": m} for m in view["history"]]
    events = sorted(svc.event_log(lead), key=lambda e: e.occurred_at, reverse=True)
    timeline += [{"kind": "event", "at": e.occurred_at.isoformat(), "event": e.model_dump(mode="json")}
                 for e in events[:MAX_EVENTS_SHOWN]]
    timeline.sort(key=lambda entry: _when_key(entry["at"]), reverse=True)
    traits = view["traits"] or {}
    name = " ".join(str(traits[k]) for k in ("first_name", "last_name") if traits.get(k))
    return _page("lead.html", status, session=session, open_console=open_console, lead=view, name=name,
                 actions=actions, timeline=timeline, events_total=len(events), events_shown=MAX_EVENTS_SHOWN,
                 error=error, done=done if done in ACTIONS else None, form=form or {},
                 decay=decay, decay_chart=_decay_chart(decay), charts=bool(decay["lines"]))


def _decay_chart(decay: dict[str, Any]) -> dict[str, Any]:
    """The signals' curves in charts.js's format: one line per rule scoring now."""
    return {"type": "line", "labels": [f"{day:g}" for day in decay["days"]],
            "datasets": [{"label": line["rule"], "data": line["points"]} for line in decay["lines"]],
            "x": {"title": "days from now"}, "y": {"title": "points"}}


def _when_key(value: str) -> float:
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


@router.get("/console/leads/<lead_id>", include_in_schema=False)
@_guarded
def lead_page(lead_id: str) -> Response[Any]:
    session, open_console = _session()
    params = router.current_event.query_string_parameters or {}
    return _lead_page(lead_id, session, open_console, done=params.get("done"))


@router.post("/console/leads/<lead_id>/actions", include_in_schema=False)
@_guarded
def lead_action(lead_id: str) -> Response[Any]:
    """A sales action from the lead page's form, as `POST /v1/leads/{id}/feedback` takes it.
    Done: back to the lead page (303, so a reload does not post again). Refused by the
    lifecycle (or a missing reason): the lead page again, saying why."""
    session, open_console = _session()
    form = _form()
    _check_csrf(session, form)
    if not LEAD_ID.fullmatch(lead_id):
        raise NotFound(f"no lead {lead_id}", field="lead_id")
    try:
        action = _validated_action(form)
        container.service().act(lead_id, action.action, reason=action.reason, by=action.by or "console")
    except NotFound:
        raise
    except LeadflowError as exc:
        return _lead_page(lead_id, session, open_console, status=exc.status, error=exc, form=form)
    logger.info("lead.feedback", extra={"lead_id": lead_id, "action": action.action, "via": "console"})
    return _redirect(f"/console/leads/{quote(lead_id, safe='')}?done={quote(action.action)}")


class ConsoleAction(BaseModel):
    """The lead page's action form: the fields `POST /v1/leads/{id}/feedback` takes."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    action: Identity = Field(min_length=1, max_length=40)
    reason: Text | None = Field(default=None, max_length=200)
    by: Text | None = Field(default=None, max_length=200)


def _validated_action(form: dict[str, str]) -> ConsoleAction:
    fields = {k: v for k, v in form.items() if k in ("action", "reason", "by") and v.strip()}
    return validated(ConsoleAction, fields, what="the form")


# ---------------------------------------------------------------- rules


@router.get("/console/rules", include_in_schema=False)
@_guarded
def rules_page() -> Response[Any]:
    """The rules version in force (its YAML, escaped) and the published history: what
    `GET /v1/rules` answers, from the same use case."""
    session, open_console = _session()
    rules = container.publisher().describe()
    history = rules["history"]
    current = next((e for e in history if e["seq"] == rules["seq"]), None) if rules["seq"] is not None else None
    return _page("rules.html", session=session, open_console=open_console, rules=rules, history=history,
                 current=current)


# ---------------------------------------------------------------- funnel

FUNNEL_STEPS = (("lead_to_mql", "lead → MQL"), ("mql_to_sql", "MQL → SQL"), ("sql_to_opportunity", "SQL → opportunity"),
                ("opportunity_to_customer", "opportunity → won"), ("mql_to_customer", "MQL → won"))
FUNNEL_CUTS = (("source", "first-touch source"), ("last_source", "last-touch source"), ("form", "first form"),
               ("fit_grade", "fit grade"), ("country", "country"), ("owner", "owner"))
FUNNEL_SHOWN = 12  # values charted (the table lists them all)


@router.get("/console/funnel", include_in_schema=False)
@_guarded
def funnel_page() -> Response[Any]:
    """The funnel from history as charts and tables: conversion by the chosen cut, the
    cohorts' curves, velocity; the same figures `GET /v1/funnel` answers."""
    from leadflow.domain.funnel import parse_funnel_query
    from leadflow.domain.inputs import query_date

    session, open_console = _session()
    params = dict(router.current_event.query_string_parameters or {})
    params = {k: v for k, v in params.items() if v != ""}
    params.setdefault("by", "source")
    dates = [query_date(params.get(name), name) for name in ("since", "until")]
    asked = parse_funnel_query({k: v for k, v in params.items() if k != "format"},
                               *(day.date() if day else None for day in dates))
    grain = asked.cohort or "month"
    answer = container.funnel().report(by=asked.by, grain=grain, since=asked.since, until=asked.until)
    groups = answer.get("groups", [])
    shown = groups[:FUNNEL_SHOWN]
    conversion_chart = {
        "type": "bar", "labels": [g["value"] for g in shown],
        "datasets": [{"label": label, "data": [g["conversion"][key] for g in shown]} for key, label in FUNNEL_STEPS[:4]],
        "y": {"title": "converted", "percent": True, "min": 0, "max": 1},
    }
    cohorts = answer["total"]["cohorts"]
    cohort_chart = {
        "type": "line", "labels": [c["period"] for c in cohorts],
        "datasets": [{"label": label, "data": [c["conversion"][key] for c in cohorts]} for key, label in FUNNEL_STEPS],
        "x": {"title": f"cohort ({grain})"}, "y": {"title": "converted", "percent": True, "min": 0, "max": 1},
    }
    velocity = answer["total"]["velocity"]
    stages = [name for name in velocity if name.startswith("days_in_")]
    velocity_chart = {
        "type": "bar", "labels": [name.removeprefix("days_in_") for name in stages],
        "datasets": [{"label": "median days", "data": [velocity[n]["median_days"] for n in stages]},
                     {"label": "p90 days", "data": [velocity[n]["p90_days"] for n in stages]}],
        "y": {"title": "days in stage"},
    }
    csv_link = "/v1/funnel" + _query({"by": asked.by, "cohort": grain, "since": params.get("since"),
                                      "until": params.get("until"), "format": "csv"})
    return _page("funnel.html", session=session, open_console=open_console, answer=answer, groups=groups,
                 cuts=FUNNEL_CUTS, steps=FUNNEL_STEPS, by=asked.by, grain=grain, params=params,
                 conversion_chart=conversion_chart, cohort_chart=cohort_chart, velocity_chart=velocity_chart,
                 charted=len(shown), csv_link=csv_link, charts=bool(answer["total"]["leads"]))


# ---------------------------------------------------------------- dead letters


class _Unavailable(LeadflowError):
    status = 503
    code = "unavailable"


def _dead_letters():
    """The use case, or a 503 page when this deployment has no dead-letter queue."""
    from leadflow.settings import settings

    cfg = settings()
    if not cfg.dead_letter_queue_url or not cfg.retry_queue_url:
        raise Misconfigured("the handoff's queues are not configured here (LEADFLOW_DLQ_URL and "
                            "LEADFLOW_RETRY_QUEUE_URL): there are no dead letters to show", field="LEADFLOW_DLQ_URL")
    return container.dead_letters()


def _queue_call(what: str, call):
    """A call to the queues; SQS refusing (permissions, throttling) is a readable 503."""
    try:
        return call()
    except LeadflowError:
        raise
    except Exception as exc:  # noqa: BLE001 - botocore's errors, shown by name only
        code = (getattr(exc, "response", None) or {}).get("Error", {}).get("Code")
        logger.warning("console.dead_letters_failed", extra={"error": type(exc).__name__, "code": code})
        raise _Unavailable(f"the dead-letter queue could not be {what} ({code or type(exc).__name__}); "
                           "try again in a moment") from None


@router.get("/console/dead-letters", include_in_schema=False)
@_guarded
def dead_letters_page() -> Response[Any]:
    session, open_console = _session()
    params = router.current_event.query_string_parameters or {}
    letters = _queue_call("read", lambda: _dead_letters().list(limit=LIST_LETTERS + 1))
    rows = [letter.row() for letter in letters[:LIST_LETTERS]]
    done = None
    if params.get("replayed", "").isdigit() and params.get("dropped", "").isdigit():
        done = {"replayed": int(params["replayed"]), "dropped": int(params["dropped"]),
                "more": params.get("more") == "1", "missing": params.get("missing") == "1"}
    return _page("dead_letters.html", session=session, open_console=open_console, rows=rows,
                 more=len(letters) > LIST_LETTERS, shown=LIST_LETTERS, done=done, replay_at_once=REPLAY_AT_ONCE)


@router.post("/console/dead-letters/replay", include_in_schema=False)
@_guarded
def replay_dead_letters() -> Response[Any]:
    """Replays one letter (`id`) or, with `all`, up to REPLAY_AT_ONCE of them; then back to
    the list (303), which says what became of them."""
    session, _ = _session()
    form = _form()
    _check_csrf(session, form)
    message_id = (form.get("id") or "").strip()
    every = form.get("all") == "1"
    if every == bool(message_id):
        raise InvalidInput("id: give one dead letter's id, or all=1 to replay them all", field="id")
    if message_id and not MESSAGE_ID.fullmatch(message_id):
        raise InvalidInput("id: not a dead letter's id (letters, digits and dashes)", field="id")
    letters = _dead_letters()
    if every:
        rows = _queue_call("replayed", lambda: letters.replay(limit=REPLAY_AT_ONCE))
    else:
        rows = _queue_call("replayed", lambda: letters.replay(ids=[message_id], limit=1))
    replayed = sum(1 for row in rows if row["replayed"])
    logger.info("dead_letters.replayed", extra={"replayed": replayed, "dropped": len(rows) - replayed,
                                                "via": "console", "all": every})
    query = {"replayed": replayed, "dropped": len(rows) - replayed}
    if every and len(rows) >= REPLAY_AT_ONCE:
        query["more"] = 1
    if not every and not rows:
        query["missing"] = 1
    return _redirect("/console/dead-letters" + _query(query))


# ---------------------------------------------------------------- not found


def not_found_page() -> Response[Any]:
    """An unknown console address, as a page of the console with a way back (the API's
    JSON 404 is for `/v1`). Nothing about the session is read: it says nothing either way."""
    return _error_page(NotFound("there is no such page in the console"))
