"""A local API Gateway HTTP API: every request becomes a payload v2 event for one handler.

Matches API Gateway's ``$default`` route with a Lambda proxy integration
(payload format 2.0): lower-cased headers and repeated query parameters joined
with commas, cookies in their own field, non-text bodies base64-encoded, and
the handler's answer (structured, or any JSON value by format inference)
turned back into an HTTP response. ``GET /healthz`` is answered here, from the
local stack's own state, without invoking the handler.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 256 * 1024
_DISCARD_LIMIT = 10 * 1024 * 1024  # API Gateway's own payload limit
_TEXT_TYPES = ("application/json", "application/x-www-form-urlencoded", "application/xml", "application/javascript")
_NOT_MUTATING = frozenset({"GET", "HEAD", "OPTIONS"})
_HOP_BY_HOP = frozenset({"connection", "content-length", "transfer-encoding", "keep-alive"})

Health = Callable[[], Mapping[str, bool]]


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
    if body:
        if is_text_content_type(event_headers.get("content-type")):
            event["body"] = body.decode("utf-8", errors="replace")
            event["isBase64Encoded"] = False
        else:
            event["body"] = base64.b64encode(body).decode("ascii")
            event["isBase64Encoded"] = True
    else:
        event["isBase64Encoded"] = False
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


def error_response(status: int, error: str, message: str) -> Response:
    return Response.json(status, {"error": error, "message": message})


def translate_result(result: Any) -> Response:
    """A payload v2 handler result as an HTTP response (raises ValueError when malformed)."""
    if not isinstance(result, Mapping) or "statusCode" not in result:
        # Format inference: any JSON value is a 200 with that value as the body.
        return Response.json(200, result)
    status = int(result["statusCode"])
    if not 100 <= status <= 599:
        raise ValueError(f"statusCode {status} out of range")
    headers: list[tuple[str, str]] = []
    for name, value in (result.get("headers") or {}).items():
        if name.lower() not in _HOP_BY_HOP:
            headers.append((str(name), str(value)))
    for name, values in (result.get("multiValueHeaders") or {}).items():
        if name.lower() in _HOP_BY_HOP:
            continue
        for value in values if isinstance(values, list | tuple) else [values]:
            headers.append((str(name), str(value)))
    for cookie in result.get("cookies") or []:
        headers.append(("Set-Cookie", str(cookie)))
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


class Gateway:
    """A threading HTTP server invoking ``invoke(event)`` for every request."""

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
    ) -> None:
        self._invoke = invoke
        self._host = host
        self._port = port
        self._health = health or (lambda: {"gateway": True})
        self.max_body_bytes = max_body_bytes
        self._account_id = account_id
        self._access_log = access_log
        self._server: ThreadingHTTPServer | None = None
        self._bound_port: int | None = None
        self._thread: threading.Thread | None = None
        self._accepting = False
        self._counter_lock = threading.Lock()
        self.requests = 0
        self.mutating_requests = 0

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("gateway is not running")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def port(self) -> int:
        if self._bound_port is None:
            raise RuntimeError("gateway is not running")
        return self._bound_port

    @property
    def running(self) -> bool:
        return self._accepting

    def start(self) -> str:
        server = ThreadingHTTPServer((self._host, self._port), _make_request_handler(self))
        server.daemon_threads = True
        self._server = server
        self._bound_port = int(server.server_address[1])
        self._accepting = True
        self._thread = threading.Thread(target=server.serve_forever, args=(0.1,), name="leadflow-gateway", daemon=True)
        self._thread.start()
        return self.url

    def stop(self) -> None:
        """Stop accepting connections; requests already inside the handler finish."""
        self._accepting = False
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(10)
        self._thread = None

    # -- request handling, called from the server's threads -------------------------

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
            logger.exception("API handler failed for %s %s", method, path)
            return error_response(500, "internal_error", "Internal Server Error")


def _make_request_handler(gateway: Gateway) -> type[BaseHTTPRequestHandler]:
    class RequestHandler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "leadflow-local"
        sys_version = ""
        timeout = 120  # seconds an idle keep-alive connection is kept

        def _serve(self) -> None:
            started = time.monotonic()
            method = self.command.upper()
            try:
                body = self._read_body()
            except _BodyTooLarge:
                response = error_response(
                    413, "payload_too_large", f"request body exceeds {gateway.max_body_bytes} bytes"
                )
                self.close_connection = True
            except ValueError as exc:
                response = error_response(400, "bad_request", str(exc))
                self.close_connection = True
            else:
                response = gateway.handle(method, self.path, list(self.headers.items()), body, self.client_address[0])
            self._send(response, include_body=method != "HEAD")
            if gateway._access_log:
                logger.info(
                    "%s %s %d %.1fms", method, self.path, response.status, (time.monotonic() - started) * 1000
                )

        def _read_body(self) -> bytes:
            limit = gateway.max_body_bytes
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                return self._read_chunked(limit)
            length_header = self.headers.get("Content-Length")
            if not length_header:
                return b""
            try:
                length = int(length_header)
            except ValueError:
                raise ValueError("invalid Content-Length") from None
            if length < 0:
                raise ValueError("invalid Content-Length")
            if length > limit:
                self._discard(length)
                raise _BodyTooLarge
            return self.rfile.read(length)

        def _discard(self, length: int) -> None:
            # Read what the client is sending so it gets to see the 413 instead of a reset.
            remaining = min(length, _DISCARD_LIMIT)
            while remaining > 0:
                chunk = self.rfile.read(min(remaining, 65536))
                if not chunk:
                    break
                remaining -= len(chunk)

        def _read_chunked(self, limit: int) -> bytes:
            chunks: list[bytes] = []
            total = 0
            while True:
                size_line = self.rfile.readline(1024)
                try:
                    size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                except ValueError:
                    raise ValueError("invalid chunked encoding") from None
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                total += size
                if total > limit:
                    raise _BodyTooLarge
                chunks.append(self.rfile.read(size))
                self.rfile.readline(1024)

        def _send(self, response: Response, include_body: bool) -> None:
            self.send_response(response.status)
            names = {name.lower() for name, _ in response.headers}
            for name, value in response.headers:
                self.send_header(name, value)
            if "apigw-requestid" not in names:
                self.send_header("Apigw-Requestid", uuid.uuid4().hex[:16])
            self.send_header("Content-Length", str(len(response.body)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if include_body and response.body:
                self.wfile.write(response.body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
            logger.debug("gateway: " + format, *args)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _serve

    return RequestHandler


class _BodyTooLarge(Exception):
    pass
