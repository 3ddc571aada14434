"""The local API gateway over real loopback sockets: load, odd requests, CORS, the access log.

Requests go through http.client where a well-behaved client is the point, and through a
raw socket where the request itself is the hostile part (a malformed request line,
oversized headers, an unknown transfer coding).
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import socket
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from leadflow_infra.local.cors import Cors, template_cors
from leadflow_infra.local.gateway import Gateway, build_event, mask_target
from leadflow_infra.template import load_template

REPO = Path(__file__).resolve().parents[2]
ORIGIN = "https://www.example.com"
GATEWAY_LOGGER = "leadflow_infra.local.gateway"


class Recorder:
    """An API handler that records every event and echoes it back; `/cors` sets its own CORS header."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def __call__(self, event: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self.events.append(event)
        headers = {"content-type": "application/json"}
        if event["rawPath"] == "/cors":
            headers["access-control-allow-origin"] = "https://evil.example"
        return {"statusCode": 200, "headers": headers, "body": json.dumps(event)}


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def start_gateway(recorder):
    gateways: list[Gateway] = []

    def start(**options: Any) -> Gateway:
        options.setdefault("access_log", False)
        gateway = Gateway(recorder, port=0, **options)
        gateway.start()
        gateways.append(gateway)
        return gateway

    yield start
    for gateway in gateways:
        gateway.stop()


def connect(url: str, timeout: float = 30) -> http.client.HTTPConnection:
    parts = urlsplit(url)
    return http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)


def request(url: str, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None):
    conn = connect(url)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def raw_exchange(url: str, data: bytes, timeout: float = 30) -> bytes:
    """Sends `data` as is and reads until the server closes the connection."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def parse_raw(response: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


# -- load -------------------------------------------------------------------------------


def test_64_parallel_keep_alive_clients_are_all_served_while_every_connection_stays_open(start_gateway, recorder):
    # 64 clients connect at once, each asks once, then all hold their idle connections
    # open until every one has its first answer: a server spending a thread per open
    # connection (16 here) would never answer the other 48. Then each asks again.
    gateway = start_gateway()
    clients, per_client = 64, 4
    connect_together = threading.Barrier(clients)
    all_answered_once = threading.Barrier(clients)
    answers: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def client(n: int) -> None:
        try:
            connect_together.wait(timeout=60)
            conn = connect(gateway.url, timeout=60)
            conn.connect()
            for i in range(per_client):
                conn.request("GET", f"/v1/ping?client={n}&i={i}")
                response = conn.getresponse()
                response.read()
                with lock:
                    answers.append(response.status)
                if i == 0:
                    all_answered_once.wait(timeout=60)
            conn.close()
        except BaseException as exc:  # noqa: BLE001 - every failure is the finding
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)

    assert errors == []
    assert answers == [200] * (clients * per_client)
    assert len(recorder.events) == clients * per_client


# -- what the gateway keeps doing ---------------------------------------------------------


def test_chunked_body_reaches_handler_whole(start_gateway, recorder):
    gateway = start_gateway()
    raw = (b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
           b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
           b"5\r\n{\"a\":\r\n3\r\n 1}\r\n0\r\n\r\n")

    status, _, _ = parse_raw(raw_exchange(gateway.url, raw))

    assert status == 200
    assert recorder.events[0]["body"] == '{"a": 1}'


def test_chunked_body_over_limit_is_413_without_invoking_handler(start_gateway, recorder):
    gateway = start_gateway(max_body_bytes=10)
    raw = (b"POST /v1/events HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"8\r\n12345678\r\n8\r\n12345678\r\n0\r\n\r\n")

    status, headers, body = parse_raw(raw_exchange(gateway.url, raw))

    assert status == 413
    assert json.loads(body)["error"] == "payload_too_large"
    assert headers["connection"] == "close"
    assert recorder.events == []


def test_body_over_limit_with_expect_100_continue_is_413_before_the_body_is_sent(start_gateway, recorder):
    gateway = start_gateway()
    raw = (b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
           b"Content-Length: 999999\r\nExpect: 100-continue\r\n\r\n")  # and no body: the client waits

    status, _, body = parse_raw(raw_exchange(gateway.url, raw))

    assert status == 413
    assert json.loads(body)["field"] == "body"
    assert recorder.events == []


def test_head_answers_headers_with_the_get_length_and_no_body(start_gateway):
    gateway = start_gateway()
    conn = connect(gateway.url)
    try:
        conn.request("HEAD", "/v1/leads")
        response = conn.getresponse()
        assert response.read() == b""
        head_length = int(response.getheader("content-length"))
        conn.request("GET", "/v1/leads")  # the same connection: HEAD left it clean
        response = conn.getresponse()
        get_body = response.read()
    finally:
        conn.close()

    assert response.status == 200
    assert head_length > 0 and get_body


def test_every_answer_carries_an_apigw_request_id(start_gateway):
    gateway = start_gateway()

    _, headers, _ = request(gateway.url, "GET", "/v1/x")

    assert headers["apigw-requestid"]


# -- JSON errors for every method and malformed request -----------------------------------


@pytest.mark.parametrize("method", ["TRACE", "CONNECT"])
def test_trace_and_connect_are_405_json_naming_the_allowed_methods(start_gateway, recorder, method):
    gateway = start_gateway()
    target = "www.example.com:443" if method == "CONNECT" else "/v1/leads"

    status, headers, body = parse_raw(raw_exchange(
        gateway.url, f"{method} {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    ))

    assert status == 405
    assert headers["content-type"] == "application/json"
    assert json.loads(body) == {"error": "method_not_allowed", "message": f"{method} is not served", "field": "method"}
    assert "POST" in headers["allow"] and "TRACE" not in headers["allow"]
    assert recorder.events == []


@pytest.mark.parametrize("method", ["BREW", "PROPFIND", "get"])
def test_unknown_method_is_501_json(start_gateway, recorder, method):
    gateway = start_gateway()

    status, headers, body = request(gateway.url, method, "/v1/leads")

    assert status == 501
    assert headers["content-type"] == "application/json"
    document = json.loads(body)
    assert document["error"] == "not_implemented" and document["field"] == "method"
    assert recorder.events == []


@pytest.mark.parametrize(
    "raw, status, error",
    [
        (b"GARBAGE\r\n\r\n", 400, "bad_request"),
        (b"GET /v1/leads HTTP/1.1 extra\r\nHost: x\r\n\r\n", 400, "bad_request"),
        (b"GET /v1/\xffleads HTTP/1.1\r\nHost: x\r\n\r\n", 400, "bad_request"),
        (b"GET /v1/leads HTTP/1.1\r\nBad Header Line\r\n\r\n", 400, "bad_request"),
        (b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400, "bad_request"),
        (b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400,
         "bad_request"),
        (b"POST /v1/events HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400, "bad_request"),
        (b"POST /v1/events HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501, "not_implemented"),
        (b"GET /v1/leads HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n", 431,
         "request_header_fields_too_large"),
        (b"GET /v1/leads HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000, 431, "request_header_fields_too_large"),
    ],
    ids=["no-target", "extra-token", "non-ascii-target", "header-without-colon", "negative-length",
         "conflicting-lengths", "bad-chunk-size", "unknown-transfer-coding", "headers-too-large",
         "headers-never-ending"],
)
def test_unparseable_request_is_answered_with_json_and_never_reaches_handler(start_gateway, recorder, raw, status, error):
    gateway = start_gateway()

    got_status, headers, body = parse_raw(raw_exchange(gateway.url, raw))

    assert got_status == status
    assert headers["content-type"] == "application/json"
    assert json.loads(body)["error"] == error
    assert json.loads(body)["message"]
    assert recorder.events == []


# -- bodies that are not text ---------------------------------------------------------------


def test_text_body_that_is_not_utf8_is_passed_base64_encoded_not_repaired():
    body = b'{"first_name": "J\xe9r\xf4me"}'  # Latin-1, not UTF-8

    event = build_event(method="POST", target="/v1/events", headers=[("Content-Type", "application/json")],
                        body=body, source_ip="127.0.0.1", server_port=80)

    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == body


def test_text_body_in_utf8_stays_text():
    event = build_event(method="POST", target="/v1/events", headers=[("Content-Type", "text/plain; charset=utf-8")],
                        body="Jérôme".encode(), source_ip="127.0.0.1", server_port=80)

    assert event["body"] == "Jérôme"
    assert event["isBase64Encoded"] is False


# -- CORS -----------------------------------------------------------------------------------

CORS = Cors(allow_origins=(ORIGIN,), allow_methods=("GET", "POST", "DELETE"),
            allow_headers=("authorization", "content-type"), max_age=600)


def preflight(url: str, origin: str, path: str = "/v1/forms/contact"):
    return request(url, "OPTIONS", path, headers={
        "Origin": origin, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type, authorization",
    })


def test_preflight_from_allowed_origin_is_answered_by_the_gateway_with_the_configuration(start_gateway, recorder):
    gateway = start_gateway(cors=CORS)

    status, headers, body = preflight(gateway.url, ORIGIN)

    assert status == 204 and body == b""
    assert headers["access-control-allow-origin"] == ORIGIN
    assert headers["access-control-allow-methods"] == "GET,POST,DELETE"
    assert headers["access-control-allow-headers"] == "authorization,content-type"
    assert headers["access-control-max-age"] == "600"
    assert "origin" in headers["vary"].lower()
    assert recorder.events == []


def test_preflight_from_other_origin_gets_no_cors_headers_and_never_reaches_handler(start_gateway, recorder):
    gateway = start_gateway(cors=CORS)

    status, headers, _ = preflight(gateway.url, "https://evil.example")

    assert status == 204
    assert not [name for name in headers if name.startswith("access-control-")]
    assert recorder.events == []


def test_request_from_allowed_origin_gets_allow_origin_and_handlers_own_cors_headers_are_dropped(start_gateway):
    gateway = start_gateway(cors=CORS)

    status, headers, _ = request(gateway.url, "POST", "/cors", body=b"{}",
                                 headers={"Origin": ORIGIN, "Content-Type": "application/json"})
    _, other, _ = request(gateway.url, "POST", "/cors", body=b"{}",
                          headers={"Origin": "https://evil.example", "Content-Type": "application/json"})

    assert status == 200
    assert headers["access-control-allow-origin"] == ORIGIN
    assert "access-control-allow-origin" not in other


def test_gateway_errors_carry_cors_headers_so_the_page_can_read_them(start_gateway):
    gateway = start_gateway(cors=CORS, max_body_bytes=4)

    status, headers, _ = request(gateway.url, "POST", "/v1/events", body=b"123456789",
                                 headers={"Origin": ORIGIN, "Content-Type": "application/json"})

    assert status == 413
    assert headers["access-control-allow-origin"] == ORIGIN


def test_without_cors_configuration_options_is_the_handlers_and_nothing_is_added(start_gateway, recorder):
    gateway = start_gateway()

    status, headers, _ = preflight(gateway.url, ORIGIN)

    assert status == 200  # the recorder's answer
    assert recorder.events[0]["requestContext"]["http"]["method"] == "OPTIONS"
    assert not [name for name in headers if name.startswith("access-control-")]


@pytest.mark.parametrize(
    "allowed, origin, expected",
    [
        (("*",), "https://any.example", "*"),
        (("https://*",), "https://any.example", "https://any.example"),
        (("https://*",), "http://any.example", None),
        ((ORIGIN,), ORIGIN.upper(), ORIGIN.upper()),
        ((ORIGIN,), ORIGIN + ".evil.example", None),
    ],
)
def test_origin_patterns_match_as_api_gateway_documents(allowed, origin, expected):
    cors = Cors(allow_origins=allowed)

    headers = dict(cors.response_headers(origin))

    assert headers.get("Access-Control-Allow-Origin") == expected


def test_template_has_no_cors_unless_origins_are_given():
    template = load_template(REPO / "template.yaml")

    assert template_cors(template) is None
    assert template_cors(template, origins="") is None


def test_template_cors_with_origins_allows_them_with_the_templates_methods_and_headers():
    template = load_template(REPO / "template.yaml")

    cors = template_cors(template, origins=[ORIGIN, "https://example.com"])

    assert cors is not None
    assert cors.allow_origins == (ORIGIN, "https://example.com")
    assert {"GET", "POST"} <= set(cors.allow_methods)
    assert {"authorization", "content-type"} <= set(cors.allow_headers)  # the API key travels as a bearer token
    assert cors.max_age and not cors.allow_credentials


@pytest.mark.parametrize("origins", ["https://www.example.com/path", "www.example.com", "ftp://a.example", "https://a b"])
def test_template_cors_refuses_an_origin_the_template_would_refuse(origins):
    template = load_template(REPO / "template.yaml")

    with pytest.raises(ValueError, match="CorsOrigins"):
        template_cors(template, origins=origins)


# -- the access log ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "target, logged",
    [
        ("/v1/leads?email=jane%40acme.example", "/v1/leads?email=***"),
        ("/v1/leads?email=jane@acme.example&limit=5", "/v1/leads?email=***&limit=5"),
        ("/v1/funnel?api_key=s3cret&key=k&token=t&q=jane", "/v1/funnel?api_key=***&key=***&token=***&q=***"),
        ("/v1/x?contact=jane%40acme.example&stage=sql", "/v1/x?contact=***&stage=sql"),
        ("/v1/leads/jane@acme.example", "/v1/leads/***"),
        ("/v1/x?jane@acme.example", "/v1/x?***"),
        ("/v1/x?Email=&limit=5", "/v1/x?Email=&limit=5"),
        ("/v1/leads/ld_123", "/v1/leads/ld_123"),
    ],
)
def test_mask_target_masks_emails_and_sensitive_parameters(target, logged):
    assert mask_target(target) == logged


def test_access_log_writes_no_email_and_no_key_from_query_strings(start_gateway, caplog):
    gateway = start_gateway(access_log=True)
    caplog.set_level(logging.INFO, logger=GATEWAY_LOGGER)

    request(gateway.url, "GET", "/v1/leads?email=jane%40acme.example")
    request(gateway.url, "GET", "/v1/leads?email=joe@acme.example&limit=2")
    request(gateway.url, "GET", "/v1/funnel?api_key=s3cret-key-value")

    text = "\n".join(record.getMessage() for record in caplog.records)
    assert "GET /v1/leads?email=*** 200" in text
    assert "GET /v1/leads?email=***&limit=2 200" in text
    for secret in ("jane", "joe", "acme", "s3cret"):
        assert secret not in text


def test_stopped_gateway_frees_its_port_for_a_restart_on_the_same_port(recorder):
    first = Gateway(recorder, port=0, access_log=False)
    first.start()
    port = first.port
    request(first.url, "GET", "/v1/x")
    first.stop()

    second = Gateway(recorder, port=port, access_log=False)
    try:
        second.start()
        status, _, _ = request(second.url, "GET", "/v1/x")
    finally:
        second.stop()

    assert status == 200
