from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "e2e-key"
GENERIC_SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Client:
    def __init__(self, base: str, token: str | None = API_KEY):
        self.base = base
        self.token = token

    def request(self, method: str, path: str, body=None, *, raw: bytes | None = None, headers=None):
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        hdrs = {"content-type": "application/json", **(headers or {})}
        if self.token:
            hdrs.setdefault("authorization", f"Bearer {self.token}")
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=hdrs)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read() or b"null")

    def post(self, path, body=None, **kw):
        return self.request("POST", path, body, **kw)

    def get(self, path):
        return self.request("GET", path)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    port = free_port()
    data = tmp_path_factory.mktemp("data")
    env = {**os.environ, "LEADFLOW_API_KEY": API_KEY, "LEADFLOW_WEBHOOK_SECRET_GENERIC": GENERIC_SECRET,
           "PYTHONPATH": str(ROOT / "functions")}
    proc = subprocess.Popen([sys.executable, "-m", "leadflow.cli", "serve", "--port", str(port), "--data-dir", str(data),
                             "--quiet"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(base + "/healthz", timeout=2) as resp:
                if resp.status == 200:
                    break
        except OSError:
            time.sleep(0.2)
        if proc.poll() is not None:
            raise RuntimeError(proc.stdout.read())
    else:
        proc.kill()
        raise RuntimeError("leadflow serve did not become healthy")
    yield Client(base)
    proc.terminate()
    proc.wait(timeout=30)
