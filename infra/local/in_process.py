"""The local stack's functions reach the embedded AWS endpoint without a socket.

In AWS a function's DynamoDB call is an HTTPS request to a fleet of servers; on the local
stack it was an HTTP request to a moto server in the *same process*: the function's thread
signed it (SigV4: canonical request, four HMACs), urllib3 wrote it to a loopback socket, a
werkzeug thread parsed it back, and the answer travelled the same way home. For one
event (a GetItem and a conditional PutItem of a lead) that transport cost more CPU than
moto's own work, and all of it holds the one interpreter lock the API, the stream
consumers and the journal share.

:func:`attach` hands a request bound for the endpoint's URL straight to the endpoint's
WSGI application, on the calling thread, and leaves its signature out (moto reads the
region and the account from the ``Authorization`` header's credential scope, which is
kept; it never checks the signature). What moto runs is unchanged: the same application
routes the request, the same backend answers it, under the same lock and journal, and a
write still returns only once it is on disk. Requests for any other URL, and every
client of other processes (the CLI, a test, a benchmark's raw ``UpdateItem``), go over
HTTP as before: the endpoint still listens.
"""

from __future__ import annotations

import sys
import threading
from io import BytesIO
from typing import Any, Callable
from urllib.parse import urlsplit

_lock = threading.Lock()
_apps: dict[str, Callable[..., Any]] = {}  # endpoint URL -> WSGI application
_installed = False


class _Body(BytesIO):
    """An answer's body, read the way botocore reads a urllib3 response."""

    def stream(self, **_: Any) -> Any:
        data = self.read()
        if data:
            yield data


def attach(url: str, app: Callable[..., Any]) -> None:
    """Serve requests for ``url`` (``http://host:port``) with ``app``, in process."""
    global _installed
    with _lock:
        _apps[url.rstrip("/")] = app
        if not _installed:
            _install()
            _installed = True


def detach(url: str) -> None:
    with _lock:
        _apps.pop(url.rstrip("/"), None)


def _target(url: str) -> Callable[..., Any] | None:
    if not _apps:
        return None
    parts = urlsplit(url)
    return _apps.get(f"{parts.scheme}://{parts.netloc}")


def _install() -> None:
    from botocore.endpoint import Endpoint
    from botocore.signers import RequestSigner

    send, sign = Endpoint._send, RequestSigner.sign

    def _send(self: Any, request: Any) -> Any:
        app = _target(request.url)
        if app is None:
            return send(self, request)
        return _call(app, request)

    def _sign(self: Any, operation_name: str, request: Any, region_name: str | None = None,
              signing_type: str = "standard", expires_in: int | None = None, signing_name: str | None = None) -> None:
        if signing_type != "standard" or _target(request.url) is None:
            return sign(self, operation_name, request, region_name, signing_type, expires_in, signing_name)
        credentials = self._credentials
        key = credentials.access_key if credentials is not None else "testing"
        scope = f"{key}/20200101/{region_name or self._region_name}/{signing_name or self._signing_name}/aws4_request"
        request.headers["Authorization"] = f"AWS4-HMAC-SHA256 Credential={scope}, SignedHeaders=host, Signature=0"
        return None

    Endpoint._send = _send
    RequestSigner.sign = _sign


def _call(app: Callable[..., Any], request: Any) -> Any:
    from botocore.awsrequest import AWSResponse

    parts = urlsplit(request.url)
    body = request.body
    if body is None:
        body = b""
    elif isinstance(body, str):
        body = body.encode("utf-8")
    elif not isinstance(body, (bytes, bytearray)):
        body = body.read()
    environ: dict[str, Any] = {
        "REQUEST_METHOD": request.method,
        "SCRIPT_NAME": "",
        "PATH_INFO": parts.path or "/",
        "QUERY_STRING": parts.query,
        "SERVER_NAME": parts.hostname or "127.0.0.1",
        "SERVER_PORT": str(parts.port or 80),
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": parts.scheme,
        "wsgi.input": BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        "HTTP_HOST": parts.netloc,
    }
    for name, value in request.headers.items():
        if isinstance(value, bytes):
            value = value.decode("latin-1")
        key = name.upper().replace("-", "_")
        if key == "CONTENT_TYPE":
            environ["CONTENT_TYPE"] = value
        elif key != "CONTENT_LENGTH":
            environ["HTTP_" + key] = value
    answer: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        answer["status"], answer["headers"] = int(status.split(" ", 1)[0]), headers

    chunks = app(environ, start_response)
    try:
        data = b"".join(chunks)
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    from botocore.compat import HTTPHeaders

    headers = HTTPHeaders()
    for name, value in answer["headers"]:
        headers[name] = value
    return AWSResponse(request.url, answer["status"], headers, _Body(data))
