"""A local API Gateway HTTP API: every request becomes a payload v2 event for one handler.

Matches API Gateway's ``$default`` route with a Lambda proxy integration
(payload format 2.0): lower-cased headers and repeated headers and query parameters
joined with commas, cookies in their own field, non-text bodies (and text bodies that
are not valid UTF-8) base64-encoded, and the handler's answer (structured, or any JSON
value by format inference) turned back into an HTTP response. ``GET /healthz`` is
answered here, from the local stack's own state, without invoking the handler. CORS,
when the template configures it, is the gateway's as in API Gateway (see
:mod:`leadflow_infra.local.cors`).

How it serves. HTTP is uvicorn, embedded: its h11 protocol (pure Python) on an
asyncio loop in one thread, the handler in a bounded pool of threads.

- Why an ASGI server and not a WSGI one (waitress, cheroot): ASGI hands over the
  header lines as received, repeated ones included and in order; WSGI joins repeated
  headers with ", " or keeps only the last, so payload v2's comma-joined headers and
  its ``cookies`` list could not be rebuilt as API Gateway builds them.
- Connections: the socket listens with a backlog of 2048 (the kernel caps it at
  ``net.core.somaxconn``) and the loop accepts as fast as clients connect, so a burst
  of clients waits in the queue instead of being reset. An open keep-alive connection
  costs a socket, not a thread: idle clients hold nothing; they are closed after 120 s.
- Threads: at most ``max_concurrency`` invocations at once (the local API function has
  its own execution environments behind that); more requests wait for a thread with
  their connections open. A request takes a thread only once its body is in, so a slow
  client holds none.
- Requests: h11 parses the request line, headers (16 KiB at most) and bodies
  (Content-Length or chunked) and refuses malformed framing (conflicting lengths, bad
  chunk sizes, transfer codings other than chunked); h11 0.16 is the release that
  closed a chunked-encoding request smuggling bug. A body over ``max_body_bytes``
  is read and dropped, up to API Gateway's own 10 MiB, so that the client sees the 413
  rather than a reset; a client waiting on ``Expect: 100-continue`` gets the 413 without
  sending anything.
- Errors are JSON ``{"error", "message"}``, every one: unparseable requests 400 (431
  for oversized headers, 501 for a transfer coding other than chunked), TRACE and
  CONNECT 405, methods API Gateway does not route 501, a handler failure 500.

The access log (INFO, one line per request) never holds personal data: see
:func:`mask_target`.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import http
import json
import logging
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote_plus

from leadflow_infra.local.cors import Cors, is_cors_header, is_preflight

if TYPE_CHECKING:  # the server is imported when a gateway starts: build_event's users need none of it
    import uvicorn

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 256 * 1024
MAX_CONCURRENCY = 16
BACKLOG = 2048
MAX_HEADER_BYTES = 16 * 1024  # request line and headers together
LINGER_SECONDS = 2.0
KEEP_ALIVE_SECONDS = 120
_DISCARD_LIMIT = 10 * 1024 * 1024  # API Gateway's own payload limit
_TEXT_TYPES = ("application/json", "application/x-www-form-urlencoded", "application/xml", "application/javascript")
# The methods an ``ANY`` route receives; TRACE and CONNECT are known and refused (405),
# anything else is not implemented (501).
ROUTED_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
_REFUSED_METHODS = frozenset({"TRACE", "CONNECT"})
_NOT_MUTATING = frozenset({"GET", "HEAD", "OPTIONS"})
_HOP_BY_HOP = frozenset({"connection", "content-length", "transfer-encoding", "keep-alive", "upgrade", "te", "trailer"})
_NO_BODY_STATUSES = frozenset({204, 304})
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(r"[\x00\r\n]")

Health = Callable[[], Mapping[str, bool]]


# -- the access log: no personal data ---------------------------------------------------

MASK = "***"
# A query parameter whose name contains one of these never has its value logged; nor
# does one named exactly as in _SENSITIVE_NAMES (free-text searches, short key names).
_SENSITIVE_PARTS = ("email", "mail", "key", "token", "secret", "passw", "auth", "signature", "session",
                    "cookie", "phone", "name", "address")
_SENSITIVE_NAMES = frozenset({"q", "query", "search", "sig", "code", "state", "ip", "who", "user"})


def is_sensitive_parameter(name: str) -> bool:
    lowered = name.lower()
    return lowered in _SENSITIVE_NAMES or any(part in lowered for part in _SENSITIVE_PARTS)


def mask_target(target: str) -> str:
    """The request target as the access log writes it: what could name a person replaced by ``***``.

    The rule: a query value is masked when its parameter's name is sensitive (it
    contains email, mail, key, token, secret, passw, auth, signature, session, cookie,
    phone, name or address, or it is q, query, search, sig, code, state, ip, who or
    user) or when the value, percent-decoded, holds an ``@``; a query item without
    ``=`` and a path segment are masked when they hold an ``@``. Parameter names and
    the rest of the path stay, so the line still says which route was asked what.
    """
    path, sep, query = target.partition("?")
    segments = path.split("/")
    path = "/".join(MASK if "@" in _decoded(segment) else segment for segment in segments)
    if not sep:
        return path
    items = []
    for item in query.split("&"):
        name, eq, value = item.partition("=")
        decoded_name = _decoded(name)
        if not eq:
            items.append(MASK if "@" in decoded_name else item)
        elif "@" in decoded_name:
            items.append(MASK)
        elif is_sensitive_parameter(decoded_name) or "@" in _decoded(value):
            items.append(f"{name}={MASK}" if value else item)
        else:
            items.append(item)
    return f"{path}?{'&'.join(items)}"


def _decoded(text: str) -> str:
    try:
        return unquote_plus(text, errors="strict")
    except UnicodeDecodeError:
        return text


# -- the payload v2 event and the handler's answer -------------------------------------


def is_text_content_type(content_type: str | None) -> bool:
    """Whether API Gateway would pass a body of this type as text rather than base64."""
    if not content_type:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media.startswith("text/") or media in _TEXT_TYPES or media.endswith(("+json", "+xml"))


def _query_parameters(raw_query: str) -> dict[str, str] | None:
    if not raw_query:
        return None
    params: dict[str, list[str]] = {}
    for key, value in parse_qsl(raw_query, keep_blank_values=True):
        params.setdefault(key, []).append(value)
    return {key: ",".join(values) for key, values in params.items()} or None


def build_event(
    *,
    method: str,
    target: str,
    headers: list[tuple[str, str]],
    body: bytes,
    source_ip: str,
    server_port: int,
    protocol: str = "HTTP/1.1",
    account_id: str = "123456789012",
    api_id: str = "local",
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """The payload v2 event API Gateway would send for this request."""
    now = now or dt.datetime.now(dt.UTC)
    raw_path, _, raw_query = target.partition("?")
    raw_path = raw_path or "/"
    joined: dict[str, list[str]] = {}
    cookies: list[str] = []
    for name, value in headers:
        lname = name.lower()
        if lname == "cookie":
            cookies.extend(part.strip() for part in value.split(";") if part.strip())
            continue
        joined.setdefault(lname, []).append(value)
    event_headers = {name: ",".join(values) for name, values in joined.items()}
    forwarded_for = event_headers.get("x-forwarded-for")
    event_headers["x-forwarded-for"] = f"{forwarded_for}, {source_ip}" if forwarded_for else source_ip
    event_headers.setdefault("x-forwarded-port", str(server_port))
    event_headers.setdefault("x-forwarded-proto", "http")
    event_headers.setdefault("x-amzn-trace-id", f"Root=1-{int(now.timestamp()):08x}-{uuid.uuid4().hex[:24]}")
    domain_name = event_headers.get("host", f"localhost:{server_port}").split(":", 1)[0]
    request_id = base64.urlsafe_b64encode(uuid.uuid4().bytes[:12]).decode("ascii").rstrip("=")

    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": raw_path,
        "rawQueryString": raw_query,
    }
    if cookies:
        event["cookies"] = cookies
    event["headers"] = event_headers
    query = _query_parameters(raw_query)
    if query is not None:
        event["queryStringParameters"] = query
    event["requestContext"] = {
        "accountId": account_id,
        "apiId": api_id,
        "domainName": domain_name,
        "domainPrefix": domain_name.split(".", 1)[0],
        "http": {
            "method": method,
            "path": raw_path,
            "protocol": protocol,
            "sourceIp": source_ip,
            "userAgent": event_headers.get("user-agent", ""),
        },
        "requestId": request_id,
        "routeKey": "$default",
        "stage": "$default",
        "time": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
        "timeEpoch": int(now.timestamp() * 1000),
    }
    text = None
    if body and is_text_content_type(event_headers.get("content-type")):
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            # Bytes that are not text whatever the header says: passed as they came,
            # base64-encoded, for the handler to refuse, never "repaired" into
            # replacement characters that it would store.
            text = None
    if not body:
        event["isBase64Encoded"] = False
    elif text is not None:
        event["body"] = text
        event["isBase64Encoded"] = False
    else:
        event["body"] = base64.b64encode(body).decode("ascii")
        event["isBase64Encoded"] = True
    return event


class Response:
    """An HTTP response: status, (name, value) header pairs, body bytes."""

    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    @classmethod
    def json(cls, status: int, document: Any) -> Response:
        return cls(status, [("Content-Type", "application/json")], json.dumps(document).encode("utf-8"))


def error_response(status: int, error: str, message: str, *, field: str | None = None) -> Response:
    document = {"error": error, "message": message}
    if field:
        document["field"] = field
    return Response.json(status, document)


def _header(name: Any, value: Any) -> tuple[str, str]:
    name, value = str(name), str(value)
    if not _TOKEN.fullmatch(name) or _BAD_VALUE.search(value):
        raise ValueError(f"header {name!r} is not a valid HTTP header")
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError(f"header {name!r} has characters HTTP headers cannot carry") from None
    return name, value


def translate_result(result: Any) -> Response:
    """A payload v2 handler result as an HTTP response (raises ValueError when malformed)."""
    if not isinstance(result, Mapping) or "statusCode" not in result:
        # Format inference: any JSON value is a 200 with that value as the body.
        return Response.json(200, result)
    status = int(result["statusCode"])
    if not 200 <= status <= 599:
        raise ValueError(f"statusCode {status} out of range")
    headers: list[tuple[str, str]] = []
    for name, value in (result.get("headers") or {}).items():
        if str(name).lower() not in _HOP_BY_HOP:
            headers.append(_header(name, value))
    for name, values in (result.get("multiValueHeaders") or {}).items():
        if str(name).lower() in _HOP_BY_HOP:
            continue
        for value in values if isinstance(values, list | tuple) else [values]:
            headers.append(_header(name, value))
    for cookie in result.get("cookies") or []:
        headers.append(_header("Set-Cookie", cookie))
    body = result.get("body")
    if body is None:
        payload = b""
    elif result.get("isBase64Encoded"):
        payload = base64.b64decode(body)
    elif isinstance(body, bytes):
        payload = body
    else:
        payload = str(body).encode("utf-8")
    return Response(status, headers, payload)


# -- the gateway -----------------------------------------------------------------------


class Gateway:
    """An HTTP server invoking ``invoke(event)`` for every request (see the module docstring)."""

    def __init__(
        self,
        invoke: Callable[[dict[str, Any]], Any],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        health: Health | None = None,
        max_body_bytes: int = MAX_BODY_BYTES,
        account_id: str = "123456789012",
        access_log: bool = True,
        cors: Cors | None = None,
        max_concurrency: int = MAX_CONCURRENCY,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1, got {max_concurrency}")
        self._invoke = invoke
        self._host = host
        self._port = port
        self._health = health or (lambda: {"gateway": True})
        self.max_body_bytes = max_body_bytes
        self._account_id = account_id
        self._access_log = access_log
        self.cors = cors
        self._max_concurrency = max_concurrency
        self._socket: socket.socket | None = None
        self._server: uvicorn.Server | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._bound: tuple[str, int] | None = None
        self._thread: threading.Thread | None = None
        self._accepting = False
        self._counter_lock = threading.Lock()
        self.requests = 0
        self.mutating_requests = 0

    @property
    def url(self) -> str:
        if self._bound is None:
            raise RuntimeError("gateway is not running")
        host, port = self._bound
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    @property
    def port(self) -> int:
        if self._bound is None:
            raise RuntimeError("gateway is not running")
        return self._bound[1]

    @property
    def running(self) -> bool:
        return self._accepting

    def start(self) -> str:
        """Listen (an OSError, e.g. the port in use, surfaces here) and serve in a thread."""
        import uvicorn

        family, kind, proto, _, address = socket.getaddrinfo(
            self._host, self._port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
        try:
            # A restart on the same port must not wait for the last run's TIME_WAIT.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            sock.listen(BACKLOG)
        except OSError:
            sock.close()
            raise
        self._socket = sock
        self._bound = (str(sock.getsockname()[0]), int(sock.getsockname()[1]))
        self._executor = ThreadPoolExecutor(self._max_concurrency, thread_name_prefix="leadflow-gateway")
        config = uvicorn.Config(
            self._asgi,
            interface="asgi3",
            http=_protocol_class(self),
            ws="none",
            lifespan="off",
            loop="asyncio",
            log_config=None,
            access_log=False,  # the gateway writes its own, masked
            proxy_headers=False,  # the client address is the socket's; X-Forwarded-For is appended to
            server_header=False,
            backlog=BACKLOG,
            timeout_keep_alive=KEEP_ALIVE_SECONDS,
            timeout_graceful_shutdown=10,
            h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        )
        server = uvicorn.Server(config)
        self._server = server
        failure: list[BaseException] = []

        def serve() -> None:
            try:
                server.run(sockets=[sock])
            except BaseException as exc:  # noqa: BLE001 - reported to start() or logged
                failure.append(exc)
                logger.exception("gateway stopped unexpectedly")

        self._accepting = True
        self._thread = threading.Thread(target=serve, name="leadflow-gateway", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.005)
        if not server.started:
            self._accepting = False
            self.stop()
            raise RuntimeError("the gateway did not start") from (failure[0] if failure else None)
        return self.url

    def stop(self) -> None:
        """Stop accepting connections; requests already inside the handler finish."""
        self._accepting = False
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(15)
        self._thread = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None

    # -- request handling, called from the pool's threads -----------------------------

    def health(self) -> Response:
        states = {name: bool(ok) for name, ok in self._health().items()}
        states["gateway"] = self._accepting
        ready = all(states.values())
        return Response.json(200 if ready else 503, {"status": "ok" if ready else "starting", **states})

    def handle(self, method: str, target: str, headers: list[tuple[str, str]], body: bytes, client_ip: str) -> Response:
        path = target.partition("?")[0]
        if path == "/healthz" and method in ("GET", "HEAD"):
            return self.health()
        if not self._accepting:
            return error_response(503, "unavailable", "the local stack is shutting down")
        with self._counter_lock:
            self.requests += 1
            if method not in _NOT_MUTATING:
                self.mutating_requests += 1
        event = build_event(
            method=method,
            target=target,
            headers=headers,
            body=body,
            source_ip=client_ip,
            server_port=self.port,
            account_id=self._account_id,
        )
        try:
            return translate_result(self._invoke(event))
        except Exception:
            logger.exception("API handler failed for %s %s", method, mask_target(path))
            return error_response(500, "internal_error", "Internal Server Error")

    # -- HTTP, on the server's event loop ---------------------------------------------

    async def _asgi(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] != "http":  # lifespan and websockets are off
            return
        started = time.monotonic()
        method = scope["method"]
        target = scope["raw_path"].decode("latin-1")
        if scope["query_string"]:
            target += "?" + scope["query_string"].decode("latin-1")
        headers = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in scope["headers"]]
        lowered = {name.lower(): value for name, value in headers}
        close = preflight = False
        try:
            body = await self._read_body(receive, lowered)
        except _Disconnected:
            return
        except _BodyTooLarge:
            response = error_response(
                413, "payload_too_large", f"request body exceeds {self.max_body_bytes} bytes", field="body"
            )
            close = True
        else:
            if len(target) + sum(len(name) + len(value) + 4 for name, value in headers) > MAX_HEADER_BYTES:
                # h11 bounds only headers still incomplete; whole ones are measured here.
                response = error_response(
                    431, "request_header_fields_too_large",
                    f"request line and headers exceed {MAX_HEADER_BYTES} bytes", field="headers",
                )
                close = True
            elif self.cors is not None and is_preflight(method, lowered):
                # API Gateway answers a preflight itself; the function never sees it.
                response = Response(204, self.cors.preflight_headers(
                    lowered.get("origin"),
                    lowered.get("access-control-request-method", ""),
                    lowered.get("access-control-request-headers", ""),
                ), b"")
                preflight = True
            elif method in _REFUSED_METHODS:
                response = error_response(405, "method_not_allowed", f"{method} is not served", field="method")
                response.headers.append(("Allow", ", ".join(ROUTED_METHODS)))
            elif method not in ROUTED_METHODS:
                response = error_response(
                    501, "not_implemented", f"method {method!r} is not supported; use one of "
                    f"{', '.join(ROUTED_METHODS)}", field="method"
                )
            else:
                client = scope.get("client")
                try:
                    response = await asyncio.get_running_loop().run_in_executor(
                        self._executor, self.handle, method, target, headers, body, client[0] if client else "127.0.0.1"
                    )
                except Exception:
                    logger.exception("gateway failed for %s %s", method, mask_target(target))
                    response = error_response(500, "internal_error", "Internal Server Error")
        if self.cors is not None and not preflight:
            response = self._with_cors(self.cors, response, lowered.get("origin"))
        await _send(send, response, close=close)
        if self._access_log:
            logger.info("%s %s %d %.1fms", method, mask_target(target), response.status,
                        (time.monotonic() - started) * 1000)

    @staticmethod
    def _with_cors(cors: Cors, response: Response, origin: str | None) -> Response:
        # With CORS configured, API Gateway ignores the CORS headers the function sets.
        headers = [(n, v) for n, v in response.headers if not is_cors_header(n)]
        headers += cors.response_headers(origin)
        return Response(response.status, headers, response.body)

    async def _read_body(self, receive: Callable[..., Any], headers: Mapping[str, str]) -> bytes:
        limit = self.max_body_bytes
        declared = None  # as h11 frames it: chunked wins over a Content-Length (which h11 checked)
        if "transfer-encoding" not in headers and "content-length" in headers:
            declared = int(headers["content-length"])
        too_large = declared is not None and declared > limit
        if too_large and headers.get("expect", "").lower() == "100-continue":
            raise _BodyTooLarge  # before receive(): no "100 Continue", the body never comes
        if declared == 0:
            return b""
        chunks: list[bytes] = []
        total = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Disconnected
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > limit:
                too_large = True
                chunks.clear()
            if too_large:
                if total > _DISCARD_LIMIT:
                    raise _BodyTooLarge
            elif chunk:
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        if too_large:
            raise _BodyTooLarge
        return b"".join(chunks)


async def _send(send: Callable[..., Any], response: Response, *, close: bool) -> None:
    headers = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in response.headers]
    if not any(name.lower() == b"apigw-requestid" for name, _ in headers):
        headers.append((b"apigw-requestid", _request_id()))
    body = response.body
    if response.status in _NO_BODY_STATUSES:
        body = b""
    else:
        headers.append((b"content-length", str(len(body)).encode("ascii")))
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def _request_id() -> bytes:
    return uuid.uuid4().hex[:16].encode("ascii")


# h11's verdict on a request it cannot parse, as the JSON error the client gets.
_PARSE_ERRORS = {
    431: ("request_header_fields_too_large", "request headers are too large", "headers"),
    501: ("not_implemented", "only the chunked transfer coding is supported", "transfer-encoding"),
}


def _protocol_class(gateway: Gateway) -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol, answering what h11 cannot parse with the gateway's JSON errors."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class _Connection(h11.Connection):
        last_error: h11.RemoteProtocolError | None = None

        def next_event(self) -> Any:
            try:
                return super().next_event()
            except h11.RemoteProtocolError as exc:
                self.last_error = exc
                raise

    class GatewayProtocol(H11Protocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.conn = _Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
            self._lingering = False

        def data_received(self, data: bytes) -> None:
            if not self._lingering:
                super().data_received(data)

        def send_400_response(self, msg: str) -> None:  # noqa: ARG002 - h11's words stay out of logs
            error = getattr(self.conn, "last_error", None)
            status = getattr(error, "error_status_hint", 400)
            code, message, field = _PARSE_ERRORS.get(status, ("bad_request", "malformed HTTP request", None))
            document = {"error": code, "message": message}
            if field:
                document["field"] = field
            body = json.dumps(document).encode("utf-8")
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode("ascii")),
                (b"apigw-requestid", _request_id()),
                (b"connection", b"close"),
            ]
            try:
                reason = http.HTTPStatus(status).phrase.encode("ascii")
                for event in (h11.Response(status_code=status, headers=headers, reason=reason),
                              h11.Data(data=body), h11.EndOfMessage()):
                    self.transport.write(self.conn.send(event))
            except h11.LocalProtocolError:
                self.transport.close()  # an answer was already under way: closing is all that is left
                return
            # Close gently: the client may still be sending what h11 gave up on, and a
            # close with unread bytes is a reset that can destroy the answer before the
            # client reads it. So: end our side, drop what still comes, and close when the
            # client does (or after a few seconds).
            self._lingering = True
            if self.transport.can_write_eof():
                self.transport.write_eof()
            self.loop.call_later(LINGER_SECONDS, self.transport.close)
            if gateway._access_log:
                logger.info("- (unparseable request) %d", status)

    return GatewayProtocol


class _BodyTooLarge(Exception):
    pass


class _Disconnected(Exception):
    pass
