from __future__ import annotations

import json
from contextlib import contextmanager
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import wait_until  # noqa: F401 - the e2e tests import it from here

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "e2e-key"
GENERIC_SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Client:
    def __init__(self, base: str, token: str | None = API_KEY, data: Path | None = None):
        self.base = base
        self.token = token
        self.data = data  # the stack's data directory (its stack.json says where moto listens)

    def aws(self, service: str):
        """A boto3 client on the running stack's embedded endpoint."""
        import boto3

        info = json.loads((self.data / "stack.json").read_text())
        return boto3.session.Session().client(service, endpoint_url=info["endpoint_url"], region_name=info["region"],
                                              aws_access_key_id="testing", aws_secret_access_key="testing")

    def items(self, lead_id: str, prefix: str) -> list[dict]:
        """The table's items of one lead whose sort key starts with `prefix` (EVENT#, SEND#)."""
        info = json.loads((self.data / "stack.json").read_text())
        return self.aws("dynamodb").query(
            TableName=info["table"], KeyConditionExpression="PK = :pk AND begins_with(SK, :p)",
            ExpressionAttributeValues={":pk": {"S": f"LEAD#{lead_id}"}, ":p": {"S": prefix}})["Items"]

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


@contextmanager
def serving(data: Path, env: dict[str, str], *args: str):
    """`leadflow serve` on a free port with `env` added, until /healthz answers; yields
    its base URL and stops it (SIGTERM) afterwards. Its output goes to `data/serve.log`:
    an unread pipe would fill up and block the server."""
    port = free_port()
    full_env = {**os.environ, "PYTHONPATH": str(ROOT / "functions"), **env}
    log_path = data / "serve.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "leadflow_infra.cli", "serve", "--port", str(port), "--data-dir",
                                 str(data), "--quiet", *args], cwd=ROOT, env=full_env, stdout=log,
                                stderr=subprocess.STDOUT, text=True)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    with urllib.request.urlopen(base + "/healthz", timeout=2) as resp:
                        if resp.status == 200:
                            break
                except OSError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("leadflow serve did not become healthy:\n" + log_path.read_text())
                time.sleep(0.2)
            yield base
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    data = tmp_path_factory.mktemp("data")
    with serving(data, {"LEADFLOW_API_KEY": API_KEY, "LEADFLOW_WEBHOOK_SECRET_GENERIC": GENERIC_SECRET}) as base:
        yield Client(base, data=data)


