"""`leadflow serve`'s gateway under load and hostile requests, with CORS configured, over real HTTP."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import threading
import uuid
from urllib.parse import urlsplit

import pytest

from tests.e2e.conftest import API_KEY, ROOT, Client, serving

pytestmark = pytest.mark.e2e

ORIGIN = "https://www.example.com"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    data = tmp_path_factory.mktemp("data")
    with serving(data, {"LEADFLOW_API_KEY": API_KEY}, "--cors-origin", ORIGIN) as base:
        yield Client(base, data=data)


def exchange(base: str, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None):
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def test_64_parallel_clients_through_the_api_function_see_no_connection_error(stack: Client):
    clients, per_client = 64, 3
    together = threading.Barrier(clients)
    statuses: list[int] = []
    errors: list[str] = []
    lock = threading.Lock()
    parts = urlsplit(stack.base)

    def client(n: int) -> None:
        try:
            together.wait(timeout=60)
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
            for i in range(per_client):
                conn.request("GET", f"/v1/leads/ld_missing_{n}_{i}", headers={"authorization": f"Bearer {API_KEY}"})
                response = conn.getresponse()
                document = json.loads(response.read())
                with lock:
                    statuses.append(response.status)
                assert document["error"] == "not_found"
            conn.close()
        except BaseException as exc:  # noqa: BLE001 - every failure is the finding
            with lock:
                errors.append(repr(exc))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)

    assert errors == []
    assert statuses == [404] * (clients * per_client)


@pytest.mark.parametrize("method, status", [("TRACE", 405), ("BREW", 501)])
def test_odd_methods_get_json_errors(stack: Client, method, status):
    got, headers, body = exchange(stack.base, method, "/v1/leads")

    assert got == status
    assert headers["content-type"] == "application/json"
    assert json.loads(body)["field"] == "method"


def test_preflight_for_the_public_form_is_answered_for_the_configured_origin(stack: Client):
    status, headers, _ = exchange(stack.base, "OPTIONS", "/v1/forms/contact", headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type",
    })

    assert status == 204
    assert headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in headers["access-control-allow-methods"]
    assert "content-type" in headers["access-control-allow-headers"]


def test_form_post_from_the_configured_origin_may_be_read_by_the_page_and_from_others_not(stack: Client):
    form = f"email=cors-{uuid.uuid4().hex[:8]}%40acme.example".encode()
    form_type = {"Content-Type": "application/x-www-form-urlencoded"}

    status, headers, _ = exchange(stack.base, "POST", "/v1/forms/contact", form, {**form_type, "Origin": ORIGIN})
    _, other, _ = exchange(stack.base, "POST", "/v1/forms/contact", form, {**form_type, "Origin": "https://evil.example"})

    assert status < 500
    assert headers["access-control-allow-origin"] == ORIGIN
    assert "access-control-allow-origin" not in other


def test_text_body_that_is_not_utf8_is_refused_and_writes_nothing(stack: Client):
    who = f"latin1-{uuid.uuid4().hex[:8]}@acme.example"
    body = json.dumps({"type": "identify", "email": who, "traits": {"first_name": "J\u00e9r\u00f4me"}}, ensure_ascii=False)

    status, answer = stack.post("/v1/events", raw=body.encode("latin-1"))

    assert status == 400
    assert answer["field"] == "body" and "UTF-8" in answer["message"]
    assert stack.get("/v1/leads?email=" + who)[0] == 404


@pytest.mark.parametrize("how", ["option", "environment"])
def test_serve_refuses_to_start_on_an_origin_the_template_would_refuse(tmp_path, how):
    args = ["--cors-origin", "https://www.example.com/path"] if how == "option" else []
    env = {**os.environ, "PYTHONPATH": str(ROOT / "functions")}
    if how == "environment":
        env["LEADFLOW_CORS_ORIGINS"] = "www.example.com"

    done = subprocess.run([sys.executable, "-m", "leadflow_infra.cli", "serve", "--port", "0", "--data-dir",
                           str(tmp_path), "--no-persist", "--quiet", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)

    assert done.returncode == 2
    assert "CorsOrigins" in done.stderr
