"""Real HTTP receivers on 127.0.0.1 that stand in for Slack, HubSpot, Salesforce and a
generic webhook endpoint: for the tests, the demo and the benchmark, and for anyone
trying the handoff on `leadflow serve` without a Slack workspace or a CRM.

Each receiver is a `ThreadingHTTPServer` on a free port, served from a daemon thread:

    with HubSpotReceiver(token="pat-test") as hubspot:
        sink = HubSpotSink("pat-test", base_url=hubspot.url)
        ...
        hubspot.wait_for(1)
        assert hubspot.contacts["jane@acme.example"]["lifecyclestage"] == "salesqualifiedlead"

(or `receiver.start()` / `receiver.stop()` around a longer-lived process such as
`leadflow serve`).

What every receiver offers:
- a record of every request (`requests`), split into `accepted` (answered 2xx by the
  receiver's own logic), `failed` (answered by the failure script) and `violations`
  (answered 400/401/404 because the request did not have the shape the real API
  documents; each with the reason);
- `wait_for(count_or_predicate, timeout)` for asynchronous senders;
- a failure script: `fail_next(n, status, retry_after, body)`, `timeout_next(n, seconds)`,
  `drop_next(n)` (close without answering), `down()` / `up()`.

The shape checks are deliberately strict: a test passing against these receivers
should mean the real API would have taken the request.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import threading
import time
import urllib.parse
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

__all__ = [
    "Request", "Reply", "Violation", "Receiver", "SlackReceiver", "HubSpotReceiver",
    "SalesforceReceiver", "WebhookReceiver", "Delivery",
]


# ---------------------------------------------------------------- records


@dataclass(frozen=True)
class Request:
    """One request as it arrived. Header names are lower-cased; `query` maps each name to
    its values; `received_at` is `time.time()` on arrival."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    received_at: float

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body parsed as JSON (raises ValueError when it is not JSON)."""
        return json.loads(self.body)

    def form(self) -> dict[str, str]:
        """The body parsed as application/x-www-form-urlencoded (last value wins)."""
        return dict(urllib.parse.parse_qsl(self.text, keep_blank_values=True))


@dataclass(frozen=True)
class Reply:
    """What a receiver answers."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, document: Any, headers: dict[str, str] | None = None) -> Reply:
        return cls(status, json.dumps(document).encode(), {"Content-Type": "application/json", **(headers or {})})

    @classmethod
    def text(cls, status: int, text: str, headers: dict[str, str] | None = None) -> Reply:
        return cls(status, text.encode(), {"Content-Type": "text/plain; charset=utf-8", **(headers or {})})

    @classmethod
    def empty(cls, status: int = 204) -> Reply:
        return cls(status)


@dataclass(frozen=True)
class Violation:
    """A request the real API would have refused, and why."""

    request: Request
    reason: str


class _Invalid(Exception):
    """Raised inside a receiver's `handle` to refuse a request as a violation."""

    def __init__(self, reply: Reply, reason: str):
        super().__init__(reason)
        self.reply = reply
        self.reason = reason


@dataclass
class _Scripted:
    reply: Reply
    delay: float = 0.0
    then_process: bool = False
    drop: bool = False
    when: Callable[["Request"], bool] | None = None  # only for requests this matches


# ---------------------------------------------------------------- the base receiver


class Receiver:
    """A real HTTP server that records requests and answers through `handle`.

    Subclasses implement `handle(request) -> Reply` (called with the receiver's lock
    held, so their state needs no locking of its own) and call `self.invalid(...)` to
    refuse a malformed request. The base class answers 200 "ok" to everything.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self._address = (host, port)
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._requests: list[Request] = []
        self._accepted: list[Request] = []
        self._failed: list[Request] = []
        self._violations: list[Violation] = []
        self._script: deque[_Scripted] = deque()
        self._down = False

    # -- lifecycle

    def start(self) -> Receiver:
        """Bind and serve in a daemon thread; returns self. Idempotent."""
        if self._server is not None:
            return self
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                receiver._serve(self)

            do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_GET

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                return None

        server = ThreadingHTTPServer(self._address, Handler)
        server.daemon_threads = True
        self._stopping.clear()
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"{type(self).__name__}:{server.server_address[1]}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port. Sleeping scripted timeouts are woken."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("receiver is not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """Base URL, without a trailing slash: http://127.0.0.1:<port>."""
        return f"http://127.0.0.1:{self.port}"

    # -- records

    @property
    def requests(self) -> list[Request]:
        """Every request received, in arrival order (a copy)."""
        with self._lock:
            return list(self._requests)

    @property
    def accepted(self) -> list[Request]:
        """Requests the receiver's own logic answered with 2xx."""
        with self._lock:
            return list(self._accepted)

    @property
    def failed(self) -> list[Request]:
        """Requests answered by the failure script (fail_next, timeout_next, drop_next, down)."""
        with self._lock:
            return list(self._failed)

    @property
    def violations(self) -> list[Violation]:
        """Requests refused because their shape was wrong, with the reason."""
        with self._lock:
            return list(self._violations)

    def reset(self) -> None:
        """Forget recorded requests and the failure script (subclass state is kept)."""
        with self._lock:
            self._requests.clear()
            self._accepted.clear()
            self._failed.clear()
            self._violations.clear()
            self._script.clear()
            self._down = False

    def wait_for(self, what: int | Callable[[Request], bool], timeout: float = 5.0, *, count: int = 1,
                 among: str = "accepted") -> list[Request]:
        """Block until enough requests arrived; return them.

        `wait_for(3)` waits for 3 requests; `wait_for(pred, count=2)` for 2 requests
        matching `pred(request)`. `among` is "accepted" (default), "requests", or
        "failed". Raises TimeoutError, saying what did arrive."""
        if among not in ("accepted", "requests", "failed"):
            raise ValueError("among must be 'accepted', 'requests' or 'failed'")
        predicate: Callable[[Request], bool] = (lambda _r: True) if isinstance(what, int) else what
        needed = what if isinstance(what, int) else count
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                pool = {"accepted": self._accepted, "requests": self._requests, "failed": self._failed}[among]
                matching = [r for r in pool if predicate(r)]
                if len(matching) >= needed:
                    return matching
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"{type(self).__name__}: waited {timeout}s for {needed} {among} request(s), "
                        f"{len(matching)} matched; received {len(self._requests)}, accepted {len(self._accepted)}, "
                        f"failed {len(self._failed)}, violations {[v.reason for v in self._violations]}")
                self._changed.wait(remaining)

    # -- failure script

    def fail_next(self, n: int = 1, status: int = 500, retry_after: float | str | None = None,
                  body: str | bytes = "scripted failure", *, when: Callable[[Request], bool] | None = None) -> None:
        """Answer the next `n` requests with `status` (and a Retry-After header when given),
        without processing them. With `when`, only requests it matches (e.g. one test's
        lead) count: deliveries still in flight for others pass untouched."""
        headers = {"Content-Type": "text/plain; charset=utf-8"}
        if retry_after is not None:
            headers["Retry-After"] = str(retry_after)
        raw = body.encode() if isinstance(body, str) else body
        with self._lock:
            self._script.extend(_Scripted(Reply(status, raw, headers), when=when) for _ in range(n))

    def timeout_next(self, n: int = 1, seconds: float = 1.0, *, then_process: bool = False,
                     when: Callable[[Request], bool] | None = None) -> None:
        """Hold the next `n` requests for `seconds` (longer than the client's timeout) before
        answering. By default they are then answered 504 and not processed; with
        `then_process=True` they are processed normally after the delay, like a receiver
        that applied the request but whose answer was lost."""
        with self._lock:
            self._script.extend(
                _Scripted(Reply.text(504, "scripted timeout"), delay=seconds, then_process=then_process, when=when)
                for _ in range(n))

    def drop_next(self, n: int = 1, *, when: Callable[[Request], bool] | None = None) -> None:
        """Close the connection on the next `n` requests without answering (the client sees
        a reset / "remote end closed connection"); they are not processed."""
        with self._lock:
            self._script.extend(_Scripted(Reply(0), drop=True, when=when) for _ in range(n))

    def down(self) -> None:
        """Answer 503 to everything until `up()`."""
        with self._lock:
            self._down = True

    def up(self) -> None:
        with self._lock:
            self._down = False

    # -- for subclasses

    def handle(self, request: Request) -> Reply:
        """The receiver's own answer. Override in subclasses."""
        return Reply.text(200, "ok")

    def invalid(self, reply: Reply, reason: str) -> _Invalid:
        """Build the exception that refuses a request as a violation: `raise self.invalid(...)`."""
        return _Invalid(reply, reason)

    # -- serving

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        request = self._read(handler)
        with self._changed:
            self._requests.append(request)
            scripted: _Scripted | None = None
            if self._down:
                scripted = _Scripted(Reply.text(503, "service unavailable (receiver is down)",
                                                {"Retry-After": "1"}))
            else:
                scripted = next((s for s in self._script if s.when is None or s.when(request)), None)
                if scripted is not None:
                    self._script.remove(scripted)
            self._changed.notify_all()
        if scripted is not None:
            if scripted.delay:
                self._stopping.wait(scripted.delay)
            if not scripted.then_process:
                with self._changed:
                    self._failed.append(request)
                    self._changed.notify_all()
                if scripted.drop:
                    handler.close_connection = True
                else:
                    self._write(handler, scripted.reply)
                return
        with self._changed:
            try:
                reply = self.handle(request)
            except _Invalid as refused:
                self._violations.append(Violation(request, refused.reason))
                reply = refused.reply
            if 200 <= reply.status < 300:
                self._accepted.append(request)
            self._changed.notify_all()
        self._write(handler, reply)

    @staticmethod
    def _read(handler: BaseHTTPRequestHandler) -> Request:
        split = urllib.parse.urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        return Request(
            method=handler.command,
            path=urllib.parse.unquote(split.path),
            query=urllib.parse.parse_qs(split.query, keep_blank_values=True),
            headers={k.lower(): v for k, v in handler.headers.items()},
            body=body,
            received_at=time.time(),
        )

    @staticmethod
    def _write(handler: BaseHTTPRequestHandler, reply: Reply) -> None:
        try:
            handler.send_response(reply.status)
            for name, value in reply.headers.items():
                handler.send_header(name, value)
            handler.send_header("Content-Length", str(len(reply.body)))
            handler.send_header("Connection", "close")
            handler.end_headers()
            if handler.command != "HEAD" and reply.body:
                handler.wfile.write(reply.body)
            handler.close_connection = True
        except OSError:  # the client gave up (a scripted timeout): nothing to answer
            handler.close_connection = True


def _json_body(receiver: Receiver, request: Request, refuse: Callable[[str], Reply]) -> Any:
    if not request.headers.get("content-type", "").startswith("application/json"):
        raise receiver.invalid(refuse("content type is not application/json"), "content type is not application/json")
    try:
        return request.json()
    except ValueError:
        raise receiver.invalid(refuse("body is not JSON"), "body is not JSON") from None


# ---------------------------------------------------------------- Slack


class SlackReceiver(Receiver):
    """A Slack incoming webhook (any path, e.g. /services/T000/B000/XXX) and response_url.

    Checks what Slack checks: a JSON object with a non-empty `text` (the notification
    fallback), optional `blocks` (≤ 50 dicts, each with a `type`, within Block Kit's
    text limits), optional boolean `replace_original`. Answers 200 "ok", or 400 with
    Slack's plain-text error (`invalid_payload`, `no_text`, `invalid_blocks`)."""

    MAX_BLOCKS = 50

    def handle(self, request: Request) -> Reply:
        if request.method != "POST":
            raise self.invalid(Reply.text(405, "invalid_method"), f"method {request.method}")
        try:
            message = json.loads(request.body)
        except ValueError:
            raise self.invalid(Reply.text(400, "invalid_payload"), "body is not JSON") from None
        if not isinstance(message, dict):
            raise self.invalid(Reply.text(400, "invalid_payload"), "body is not a JSON object")
        if not isinstance(message.get("text"), str) or not message["text"].strip():
            raise self.invalid(Reply.text(400, "no_text"), "no text fallback")
        if "replace_original" in message and not isinstance(message["replace_original"], bool):
            raise self.invalid(Reply.text(400, "invalid_payload"), "replace_original is not a boolean")
        problem = self.block_problem(message.get("blocks"))
        if problem:
            raise self.invalid(Reply.text(400, "invalid_blocks"), problem)
        return Reply.text(200, "ok")

    def messages(self) -> list[dict[str, Any]]:
        """The accepted messages, parsed, in arrival order."""
        return [r.json() for r in self.accepted]

    @classmethod
    def block_problem(cls, blocks: Any) -> str | None:
        """Why Slack would refuse these blocks, or None."""
        if blocks is None:
            return None
        if not isinstance(blocks, list) or len(blocks) > cls.MAX_BLOCKS:
            return "blocks is not a list of at most 50"
        action_ids: set[str] = set()
        for i, block in enumerate(blocks):
            if not isinstance(block, dict) or not isinstance(block.get("type"), str):
                return f"block {i} has no type"
            kind = block["type"]
            if kind == "header":
                text = block.get("text") or {}
                if text.get("type") != "plain_text" or not 0 < len(text.get("text", "")) <= 150:
                    return f"block {i}: header text must be plain_text of 1..150 characters"
            elif kind == "section":
                if "text" not in block and "fields" not in block:
                    return f"block {i}: section needs text or fields"
                if "text" in block and not 0 < len(block["text"].get("text", "")) <= 3000:
                    return f"block {i}: section text must be 1..3000 characters"
                fields = block.get("fields", [])
                if len(fields) > 10 or any(not 0 < len(f.get("text", "")) <= 2000 for f in fields):
                    return f"block {i}: at most 10 fields of 1..2000 characters"
            elif kind == "actions":
                elements = block.get("elements") or []
                if not 0 < len(elements) <= 25:
                    return f"block {i}: actions need 1..25 elements"
                for element in elements:
                    action_id = element.get("action_id")
                    if action_id in action_ids:
                        return f"block {i}: duplicate action_id {action_id}"
                    action_ids.add(action_id)
                    if element.get("type") == "button" and len(element.get("value", "")) > 2000:
                        return f"block {i}: button value longer than 2000"
                    if element.get("type") == "static_select" and not element.get("options"):
                        return f"block {i}: static_select without options"
            elif kind == "context":
                if not 0 < len(block.get("elements") or []) <= 10:
                    return f"block {i}: context needs 1..10 elements"
        return None


# ---------------------------------------------------------------- HubSpot


class HubSpotReceiver(Receiver):
    """HubSpot's contacts batch upsert: `POST /crm/v3/objects/contacts/batch/upsert`.

    Checks the Bearer token (401 with HubSpot's JSON error otherwise), the path, and each
    input: `idProperty` "email", `id` equal to `properties.email`, scalar property
    values, `lifecyclestage` one of HubSpot's internal values or "". Keeps contacts by
    email (`contacts[email]` is the current property dict, with `hs_object_id`) and
    applies lifecycle stages the way HubSpot does: forward only, unless cleared first.
    Answers the documented batch response (`status` COMPLETE, `results` with `id`,
    `properties`, `new`).

    And the GDPR delete, `POST /crm/v3/objects/contacts/gdpr-delete` with
    `{"objectId": <contact id>}` (204; 404 when no contact has that id) or
    `{"objectId": <email>, "idProperty": "email"}` (204; an address no contact has is
    added to `blocklist`, as HubSpot does). `gdpr_deleted` lists the contact ids deleted."""

    PATH = "/crm/v3/objects/contacts/batch/upsert"
    GDPR_DELETE_PATH = "/crm/v3/objects/contacts/gdpr-delete"
    LIFECYCLE_STAGES = ("subscriber", "lead", "marketingqualifiedlead", "salesqualifiedlead", "opportunity",
                        "customer", "evangelist", "other")
    MAX_INPUTS = 100

    def __init__(self, token: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.token = token
        self.contacts: dict[str, dict[str, str]] = {}
        self.lifecycle_history: dict[str, list[str]] = {}  # every value actually applied, per email
        self.gdpr_deleted: list[str] = []  # contact ids, in the order they were deleted
        self.blocklist: set[str] = set()
        self._next_id = 1001

    def handle(self, request: Request) -> Reply:
        if request.headers.get("authorization") != f"Bearer {self.token}":
            raise self.invalid(Reply.json(401, self._error(
                "Authentication credentials not found. This API supports OAuth 2.0 authentication and you can "
                "find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview",
                "INVALID_AUTHENTICATION")), "missing or wrong bearer token")
        if request.method == "POST" and request.path == self.GDPR_DELETE_PATH:
            return self._gdpr_delete(request)
        if request.method != "POST" or request.path != self.PATH:
            raise self.invalid(Reply.json(404, self._error(f"Unable to route {request.method} {request.path}",
                                                           "OBJECT_NOT_FOUND")), f"unknown route {request.path}")
        document = _json_body(self, request, lambda why: Reply.json(400, self._error(why, "VALIDATION_ERROR")))
        inputs = document.get("inputs") if isinstance(document, dict) else None
        if not isinstance(inputs, list) or not 0 < len(inputs) <= self.MAX_INPUTS:
            self._refuse(f"inputs must be a list of 1..{self.MAX_INPUTS}")
        ids = [i.get("id") for i in inputs if isinstance(i, dict)]
        if len(set(ids)) != len(ids):
            self._refuse("Duplicate IDs found in batch input")
        for item in inputs:
            self._check(item)
        started = _now_iso()
        results = [self._apply(item) for item in inputs]
        return Reply.json(200, {"status": "COMPLETE", "results": results, "requestedAt": started,
                                "startedAt": started, "completedAt": _now_iso(), "links": {}})

    def _gdpr_delete(self, request: Request) -> Reply:
        document = _json_body(self, request, lambda why: Reply.json(400, self._error(why, "VALIDATION_ERROR")))
        if not isinstance(document, dict) or not isinstance(document.get("objectId"), str) or not document["objectId"]:
            self._refuse("objectId is required and must be a string")
        unknown = sorted(set(document) - {"objectId", "idProperty"})
        if unknown:
            self._refuse(f"Unrecognized field {unknown[0]!r}")
        object_id, id_property = document["objectId"], document.get("idProperty")
        if id_property not in (None, "email"):
            self._refuse(f"idProperty must be 'email' when given, got {id_property!r}")
        if id_property == "email":
            email = next((e for e in self.contacts if e == object_id.strip().lower()), None)
            if email is None:
                self.blocklist.add(object_id.strip().lower())
                return Reply.empty(204)
        else:
            email = next((e for e, c in self.contacts.items() if c["hs_object_id"] == object_id), None)
            if email is None:
                return Reply.json(404, self._error(f"Object not found. objectId are usually numeric. {object_id}",
                                                   "OBJECT_NOT_FOUND"))
        contact = self.contacts.pop(email)
        self.lifecycle_history.pop(email, None)
        self.gdpr_deleted.append(contact["hs_object_id"])
        return Reply.empty(204)

    def _check(self, item: Any) -> None:
        if not isinstance(item, dict):
            self._refuse("each input must be an object")
        if item.get("idProperty") != "email":
            self._refuse(f"idProperty must be 'email', got {item.get('idProperty')!r}")
        properties = item.get("properties")
        if not isinstance(properties, dict):
            self._refuse("properties must be an object")
        if not isinstance(item.get("id"), str) or item.get("id") != properties.get("email"):
            self._refuse("id must equal properties.email")
        for name, value in properties.items():
            if not isinstance(value, (str, int, float, bool)):
                self._refuse(f"Property values were not valid: {name} is not a scalar")
        stage = properties.get("lifecyclestage")
        if stage is not None and stage != "" and stage not in self.LIFECYCLE_STAGES:
            self._refuse(f"Property values were not valid: {stage!r} was not one of the allowed options "
                         "for lifecyclestage")

    def _apply(self, item: dict[str, Any]) -> dict[str, Any]:
        email = item["id"]
        now = _now_iso()
        is_new = email not in self.contacts
        contact = self.contacts.setdefault(email, {"hs_object_id": str(self._next_id), "createdate": now})
        if is_new:
            self._next_id += 1
        for name, value in item["properties"].items():
            value = str(value) if not isinstance(value, bool) else str(value).lower()
            if name == "lifecyclestage":
                if not self._lifecycle_accepts(contact.get("lifecyclestage", ""), value):
                    continue  # HubSpot ignores a backward move silently
                self.lifecycle_history.setdefault(email, []).append(value)
            contact[name] = value
        contact["lastmodifieddate"] = now
        return {"id": contact["hs_object_id"], "properties": dict(contact), "createdAt": contact["createdate"],
                "updatedAt": now, "archived": False, "new": is_new}

    def _lifecycle_accepts(self, current: str, new: str) -> bool:
        if new == "" or current == "":
            return True
        order = self.LIFECYCLE_STAGES
        return order.index(new) >= order.index(current)

    def _refuse(self, why: str) -> None:
        raise self.invalid(Reply.json(400, self._error(why, "VALIDATION_ERROR")), why)

    @staticmethod
    def _error(message: str, category: str) -> dict[str, Any]:
        return {"status": "error", "message": message, "correlationId": str(uuid.uuid4()), "category": category}


# ---------------------------------------------------------------- Salesforce


class SalesforceReceiver(Receiver):
    """A Salesforce org's OAuth client-credentials token endpoint and Lead upsert by external id.

    - `POST /services/oauth2/token` (form-encoded, grant_type client_credentials, the right
      client id and secret) → `{"access_token", "instance_url": <this receiver>, "token_type":
      "Bearer", ...}`; otherwise 400 `{"error", "error_description"}`.
    - `PATCH /services/data/vXX.X/sobjects/Lead/<external_id_field>/<value>` with a valid
      Bearer token and a JSON body that has LastName and Company, no Id and no external-id
      field, only known Lead fields and a known Status → 201 `{"id", "success", "errors",
      "created": true}` on create, 204 on update. An unknown or expired token answers 401
      `[{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]`.

    - `DELETE` of the same URL (no body) → 204 and the Lead is gone (`deleted` lists the
      external ids); 404 `NOT_FOUND` when no Lead has that external id.

    `leads[external_id]` is the Lead's current fields (with "Id"); `expire_token()`
    invalidates every issued token; `token_requests` counts token calls."""

    TOKEN_PATH = "/services/oauth2/token"
    UPSERT = re.compile(r"^/services/data/v(\d+\.\d)/sobjects/([^/]+)/([^/]+)/(.+)$")
    LEAD_FIELDS = frozenset({
        "LastName", "FirstName", "Salutation", "Email", "Company", "Title", "Country", "Status", "OwnerId", "Phone",
        "MobilePhone", "Website", "Industry", "LeadSource", "NumberOfEmployees", "Description", "Rating",
        "Street", "City", "State", "PostalCode",
    })
    STATUSES = ("Open - Not Contacted", "Working - Contacted", "Closed - Converted", "Closed - Not Converted")

    def __init__(self, client_id: str, client_secret: str, *, external_id_field: str = "Leadflow_Id__c",
                 **kwargs: Any):
        super().__init__(**kwargs)
        self.client_id = client_id
        self.client_secret = client_secret
        self.external_id_field = external_id_field
        self.leads: dict[str, dict[str, Any]] = {}
        self.deleted: list[str] = []  # external ids of the Leads deleted, in order
        self.tokens: list[str] = []  # every token issued, in order
        self._valid_tokens: set[str] = set()
        self._next_id = 1

    @property
    def token_requests(self) -> int:
        return len([r for r in self.requests if r.path == self.TOKEN_PATH])

    def expire_token(self) -> None:
        """Invalidate every issued token: the next API call answers 401 INVALID_SESSION_ID."""
        with self._lock:
            self._valid_tokens.clear()

    def handle(self, request: Request) -> Reply:
        if request.path == self.TOKEN_PATH:
            return self._token(request)
        match = self.UPSERT.match(request.path)
        if request.method not in ("PATCH", "DELETE") or not match:
            raise self.invalid(self._errors(404, "NOT_FOUND", "The requested resource does not exist"),
                               f"unknown route {request.method} {request.path}")
        authorization = request.headers.get("authorization", "")
        if not authorization.startswith("Bearer "):
            raise self.invalid(self._errors(401, "INVALID_SESSION_ID", "Session expired or invalid"),
                               "no bearer token")
        if authorization[len("Bearer "):] not in self._valid_tokens:
            return self._errors(401, "INVALID_SESSION_ID", "Session expired or invalid")
        _version, sobject, id_field, value = match.groups()
        if sobject != "Lead":
            self._refuse(404, "NOT_FOUND", f"The requested resource does not exist: {sobject}")
        if id_field != self.external_id_field:
            self._refuse(404, "NOT_FOUND",
                         f"Provided external ID field does not exist or is not accessible: {id_field}")
        if request.method == "DELETE":
            if value not in self.leads:
                return self._errors(404, "NOT_FOUND", "The requested resource does not exist")
            del self.leads[value]
            self.deleted.append(value)
            return Reply.empty(204)
        fields = _json_body(self, request, lambda why: self._errors(400, "JSON_PARSER_ERROR", why))
        self._check(fields)
        return self._upsert(value, fields)

    def _token(self, request: Request) -> Reply:
        if request.method != "POST":
            raise self.invalid(Reply.json(405, {"error": "invalid_request"}), "token call is not a POST")
        if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            raise self.invalid(Reply.json(400, {"error": "invalid_request", "error_description":
                                                "must be application/x-www-form-urlencoded"}),
                               "token call is not form-encoded")
        form = request.form()
        if form.get("grant_type") != "client_credentials":
            raise self.invalid(Reply.json(400, {"error": "unsupported_grant_type",
                                                "error_description": "grant type not supported"}),
                               f"grant_type {form.get('grant_type')!r}")
        if form.get("client_id") != self.client_id or form.get("client_secret") != self.client_secret:
            raise self.invalid(Reply.json(400, {"error": "invalid_client",
                                                "error_description": "invalid client credentials"}),
                               "wrong client credentials")
        token = "00D000000000001!" + secrets.token_urlsafe(24)
        self.tokens.append(token)
        self._valid_tokens.add(token)
        return Reply.json(200, {
            "access_token": token,
            "signature": base64.b64encode(secrets.token_bytes(32)).decode(),
            "instance_url": self.url,
            "id": "https://login.salesforce.com/id/00D000000000001EAA/005000000000001AAA",
            "token_type": "Bearer",
            "issued_at": str(int(time.time() * 1000)),
        })

    def _check(self, fields: Any) -> None:
        if not isinstance(fields, dict):
            self._refuse(400, "JSON_PARSER_ERROR", "the body must be a JSON object")
        if "Id" in fields or self.external_id_field in fields:
            self._refuse(400, "INVALID_FIELD_FOR_INSERT_UPDATE",
                         "the external id and Id belong in the URL, not the body")
        unknown = sorted(set(fields) - self.LEAD_FIELDS)
        if unknown:
            self._refuse(400, "INVALID_FIELD", f"No such column '{unknown[0]}' on sobject of type Lead")
        for required in ("LastName", "Company"):
            if not isinstance(fields.get(required), str) or not fields[required].strip():
                self._refuse(400, "REQUIRED_FIELD_MISSING", f"Required fields are missing: [{required}]")
        if "Status" in fields and fields["Status"] not in self.STATUSES:
            self._refuse(400, "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST", f"Status: bad value for restricted "
                                                                          f"picklist field: {fields['Status']}")

    def _upsert(self, external_id: str, fields: dict[str, Any]) -> Reply:
        if external_id in self.leads:
            self.leads[external_id].update(fields)
            return Reply.empty(204)
        record_id = f"00Q{self._next_id:015d}"
        self._next_id += 1
        self.leads[external_id] = {"Id": record_id, self.external_id_field: external_id, **fields}
        return Reply.json(201, {"id": record_id, "success": True, "errors": [], "created": True})

    def _refuse(self, status: int, code: str, message: str) -> None:
        raise self.invalid(self._errors(status, code, message), f"{code}: {message}")

    @staticmethod
    def _errors(status: int, code: str, message: str) -> Reply:
        return Reply.json(status, [{"message": message, "errorCode": code}])


# ---------------------------------------------------------------- generic webhook


@dataclass(frozen=True)
class Delivery:
    """One verified webhook delivery: its `webhook-id`, `webhook-timestamp` and parsed body."""

    id: str
    timestamp: int
    payload: dict[str, Any]


class WebhookReceiver(Receiver):
    """A Standard Webhooks endpoint: verifies `webhook-id`, `webhook-timestamp` and
    `webhook-signature` with `standardwebhooks.Webhook(secret).verify` (401 when they do
    not verify, including a timestamp outside the scheme's 5-minute tolerance) and keeps
    each verified delivery in `deliveries`. Answers 204."""

    def __init__(self, secret: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.secret = secret
        self._deliveries: list[Delivery] = []

    @property
    def deliveries(self) -> list[Delivery]:
        with self._lock:
            return list(self._deliveries)

    def ids(self) -> list[str]:
        """The webhook-ids delivered, in order (a redelivery appears twice)."""
        return [d.id for d in self.deliveries]

    def handle(self, request: Request) -> Reply:
        from standardwebhooks.webhooks import Webhook, WebhookVerificationError

        if request.method != "POST":
            raise self.invalid(Reply.text(405, "method not allowed"), f"method {request.method}")
        try:
            document = Webhook(self.secret).verify(request.body, request.headers)
        except WebhookVerificationError as error:
            raise self.invalid(Reply.json(401, {"error": "invalid signature", "detail": str(error)}),
                               f"signature: {error}") from None
        except ValueError:
            raise self.invalid(Reply.json(400, {"error": "body is not JSON"}), "body is not JSON") from None
        if not request.headers.get("content-type", "").startswith("application/json"):
            raise self.invalid(Reply.json(415, {"error": "content type"}), "content type is not application/json")
        self._deliveries.append(Delivery(request.headers["webhook-id"], int(request.headers["webhook-timestamp"]),
                                         document))
        return Reply.empty(204)


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")



# ---------------------------------------------------------------- all four, for a stack


class SinkReceivers:
    """Slack, the generic webhook, HubSpot and Salesforce receivers together, and the
    environment that points `leadflow serve`'s sinks at them (SES and EventBridge go to
    the stack's own moto). A context manager: started on enter, stopped on exit."""

    slack_secret = "local-slack-signing-secret"
    crm_secret = "whsec_bG9jYWwtY3JtLXdlYmhvb2stc2VjcmV0"
    hubspot_token = "pat-local"
    salesforce_client = ("local-client", "local-secret")

    def __init__(self) -> None:
        self.slack = SlackReceiver()
        self.webhook = WebhookReceiver(self.crm_secret)
        self.hubspot = HubSpotReceiver(self.hubspot_token)
        self.salesforce = SalesforceReceiver(*self.salesforce_client)
        self.all = (self.slack, self.webhook, self.hubspot, self.salesforce)

    def start(self) -> "SinkReceivers":
        for receiver in self.all:
            receiver.start()
        return self

    def stop(self) -> None:
        for receiver in self.all:
            receiver.stop()

    def __enter__(self) -> "SinkReceivers":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def alerts_url(self) -> str:
        return f"{self.slack.url}/services/TLOCAL/BLOCAL/sales-alerts"

    @property
    def escalations_url(self) -> str:
        return f"{self.slack.url}/services/TLOCAL/BLOCAL/sales-managers"

    def environment(self, **overrides: str) -> dict[str, str]:
        env = {
            "LEADFLOW_SLACK_WEBHOOK_URL": self.alerts_url,
            "LEADFLOW_SLACK_ESCALATION_WEBHOOK_URL": self.escalations_url,
            "LEADFLOW_WEBHOOK_SECRET_SLACK": self.slack_secret,
            "LEADFLOW_CRM_WEBHOOK_URL": f"{self.webhook.url}/leadflow",
            "LEADFLOW_CRM_WEBHOOK_SECRET": self.crm_secret,
            "LEADFLOW_HUBSPOT_TOKEN": self.hubspot_token,
            "LEADFLOW_HUBSPOT_BASE_URL": self.hubspot.url,
            "LEADFLOW_SALESFORCE_INSTANCE_URL": self.salesforce.url,
            "LEADFLOW_SALESFORCE_CLIENT_ID": self.salesforce_client[0],
            "LEADFLOW_SALESFORCE_CLIENT_SECRET": self.salesforce_client[1],
            "LEADFLOW_SES_FROM": "alerts@leadflow.example",
            "LEADFLOW_EVENT_BUS": "default",
        }
        env.update(overrides)
        return env


# ---------------------------------------------------------------- Slack interactivity


def slack_button_press(value: str, action_id: str, *, secret: str, response_url: str, user_id: str = "U0SALES",
                       user_name: str = "sales.rep", reason: str | None = None,
                       timestamp: int | None = None) -> tuple[bytes, dict[str, str]]:
    """What Slack sends when someone presses a button on one of our messages: a
    `block_actions` payload (the shape of Slack's own bolt-python test fixture), form-
    encoded as `payload=<json>`, signed with the v0 scheme. Returns (body, headers)."""
    import hashlib
    import hmac

    payload: dict[str, Any] = {
        "type": "block_actions",
        "user": {"id": user_id, "username": user_name, "name": user_name, "team_id": "T111"},
        "api_app_id": "A111",
        "token": "verification_token",
        "container": {"type": "message", "message_ts": "111.222", "channel_id": "C111", "is_ephemeral": False},
        "trigger_id": "111.222.valid",
        "team": {"id": "T111", "domain": "workspace-domain"},
        "channel": {"id": "C111", "name": "sales-alerts"},
        "response_url": response_url,
        "actions": [{"action_id": action_id, "block_id": "leadflow_decision", "value": value, "type": "button",
                     "text": {"type": "plain_text", "text": action_id, "emoji": True},
                     "action_ts": f"{time.time():.6f}"}],
    }
    if reason is not None:
        payload["state"] = {"values": {"leadflow_decision": {"leadflow_reject_reason": {
            "type": "static_select",
            "selected_option": {"value": reason, "text": {"type": "plain_text", "text": reason}}}}}}
    body = "payload=" + urllib.parse.quote(json.dumps(payload))
    ts = str(int(time.time()) if timestamp is None else timestamp)
    signature = "v0=" + hmac.new(secret.encode(), f"v0:{ts}:{body}".encode(), hashlib.sha256).hexdigest()
    headers = {"content-type": "application/x-www-form-urlencoded", "x-slack-signature": signature,
               "x-slack-request-timestamp": ts}
    return body.encode(), headers


def button_value(message: dict[str, Any], action_id: str) -> str | None:
    """The value of the button `action_id` in a Block Kit message, if it has one."""
    for block in message.get("blocks") or []:
        for element in block.get("elements") or []:
            if isinstance(element, dict) and element.get("action_id") == action_id:
                return element.get("value")
    return None
