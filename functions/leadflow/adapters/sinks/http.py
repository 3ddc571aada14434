"""One HTTP attempt over the standard library, and one place that classifies its outcome.

The HTTP sinks (HubSpot, Salesforce, the generic webhook) share it so that "may this
succeed later?" has one answer everywhere: 429, 5xx, 408, 409 and 425 and every
transport failure (timeout, refused, reset, DNS) are retryable; any other non-2xx is
permanent. urllib is enough for one JSON request per move and costs nothing at cold
start. Redirects are not followed: urllib would silently turn a redirected POST into a
GET without a body, which for a webhook is a lost delivery reported as a success.

A request has a deadline, not just a socket timeout. A socket timeout bounds each read,
so a receiver that drips a header line every few seconds could hold a request (and
whatever waits for it) for minutes. Here connecting, sending and every read share one
budget: each socket operation may wait at most what is left of it, and a timer shuts
the connection down when it runs out, which wakes whatever read is blocked. Name
resolution is the one step no socket can bound; the handoff's wait on each sink
(usecases/handoff.py) covers it.

Reasons never carry a URL (a Slack webhook URL is a credential) and error excerpts
have emails masked, because reasons end up in the delivery ledger and dead letters.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, Mapping

from leadflow.domain.errors import PermanentError, RetryableError

# Statuses that mean "not now" rather than "never": request timeout, conflict (a
# concurrent write on the receiver), too early, too many requests.
RETRYABLE_STATUSES = frozenset({408, 409, 425, 429})
EXCERPT_LIMIT = 200


@dataclass(frozen=True)
class Response:
    """What the receiver answered. Header names are lower-cased."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body parsed as JSON, or None when it is empty or not JSON."""
        if not self.body.strip():
            return None
        try:
            return json.loads(self.body)
        except ValueError:
            return None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001, D102
        return None  # urllib then raises HTTPError with the 3xx, classified as permanent


def deadline_after(seconds: float, deadline: float | None = None) -> float:
    """The `time.monotonic()` instant `seconds` from now, or `deadline` if that is sooner:
    a delivery attempt's end, which every request of the attempt shares."""
    until = time.monotonic() + seconds
    return until if deadline is None else min(until, deadline)


class _Deadline:
    """One request's time budget. Sockets it opens get at most what is left for each
    operation, and when the time is up a timer shuts them down: a read blocked on a
    receiver that sends a byte now and then returns at once instead of waiting on.

    The timer shuts down a duplicate of the socket's descriptor: TLS takes the original
    descriptor over (`wrap_socket` detaches it), and a shutdown reaches the connection
    through any descriptor of it."""

    def __init__(self, seconds: float):
        self.at = time.monotonic() + seconds
        self.expired = False
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> "_Deadline":
        self._timer.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._timer.cancel()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            sock.close()

    def left(self) -> float:
        return self.at - time.monotonic()

    def connect(self, address: tuple[str, int], timeout: Any = None, source_address: Any = None) -> socket.socket:
        """socket.create_connection within the budget; the socket is watched from then on."""
        left = self.left()
        if left <= 0:
            raise TimeoutError("no time left to connect")
        sock = socket.create_connection(address, left, source_address)
        sock.settimeout(max(0.001, self.left()))  # no single read or write outlives the budget either
        with self._lock:
            watched = sock.dup()
            self._sockets.append(watched)
            if self.expired:
                _shut(watched)
        return sock

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                _shut(sock)

    def opener(self) -> urllib.request.OpenerDirector:
        """An opener whose HTTP and HTTPS connections connect through this budget."""
        return urllib.request.build_opener(_NoRedirect(), _HTTPHandler(self), _HTTPSHandler(self))


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:  # not connected yet, or already closed: nothing blocks on it
        pass


def _within(connection_class: type, deadline: _Deadline) -> Any:
    def connection(host: str, **kwargs: Any) -> http.client.HTTPConnection:
        conn = connection_class(host, **kwargs)
        conn._create_connection = deadline.connect  # the seam http.client keeps for how it connects
        return conn

    return connection


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, deadline: _Deadline):
        super().__init__()
        self._deadline = deadline

    def http_open(self, req):  # noqa: ANN001, D102
        return self.do_open(_within(http.client.HTTPConnection, self._deadline), req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, deadline: _Deadline):
        super().__init__()
        self._deadline = deadline

    def https_open(self, req):  # noqa: ANN001, D102
        return self.do_open(_within(http.client.HTTPSConnection, self._deadline), req, context=self._context)


def send(method: str, url: str, body: bytes | None, headers: Mapping[str, str], timeout: float,
         *, what: str = "request", deadline: float | None = None) -> Response:
    """One request, over in `timeout` seconds at most (connecting, sending and reading
    the whole answer), or by `deadline` (a `time.monotonic()` instant) if that is sooner.
    Any status comes back as a Response (urllib's HTTPError included); a transport
    failure, or running out of time, raises RetryableError, since nothing was answered."""
    try:
        if urllib.parse.urlsplit(url).scheme.lower() not in ("http", "https"):
            raise ValueError("not http or https")
        request = urllib.request.Request(url, data=body, method=method, headers=dict(headers))
    except ValueError as error:
        # A configuration no retry can fix. The URL stays out of the reason: some are credentials.
        raise PermanentError(f"{what}: invalid URL (not an http or https URL)") from error
    budget = timeout if deadline is None else min(timeout, deadline - time.monotonic())
    if budget <= 0:
        raise RetryableError(f"{what}: timed out (no time left for the request)")
    limit = _Deadline(budget)
    try:
        with limit:
            try:
                with limit.opener().open(request, timeout=budget) as answer:
                    response = Response(answer.status, _lower(answer.headers), answer.read())
            except urllib.error.HTTPError as error:
                response = Response(error.code, _lower(error.headers), _read_quietly(error))
            if limit.expired:  # the answer was cut short: what was read of it is not the answer
                raise TimeoutError
            return response
    except (OSError, http.client.HTTPException) as error:  # URLError, resets and timeouts are OSErrors
        cause = error.reason if isinstance(error, urllib.error.URLError) else error
        if limit.expired:
            cause = TimeoutError()
        raise transport_error(what, cause, budget) from error


def raise_for(response: Response, what: str, *, detail: str | None = None) -> Response:
    """Returns a 2xx response unchanged; raises RetryableError or PermanentError otherwise.

    `detail` replaces the excerpt of the body when the caller understands the
    receiver's error shape better (Salesforce's errorCode, HubSpot's category)."""
    if response.ok:
        return response
    status = response.status
    text = detail if detail is not None else excerpt(response.body)
    reason = f"{what}: HTTP {status}" + (f": {text}" if text else "")
    if is_retryable_status(status):
        raise RetryableError(reason, status=status, retry_after=retry_after(response.headers.get("retry-after")))
    raise PermanentError(reason, status=status)


def is_retryable_status(status: int) -> bool:
    return status in RETRYABLE_STATUSES or status >= 500


def retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta seconds or an HTTP-date,
    never negative; None when absent or unreadable."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment is None:
        return None
    return max(0.0, moment.timestamp() - (time.time() if now is None else now))


_WHITESPACE = re.compile(r"\s+")


def excerpt(body: bytes | str, limit: int = EXCERPT_LIMIT) -> str:
    """A short, single-line, email-masked excerpt of an error body for a reason string.

    For JSON bodies the usual message fields are preferred over the raw document."""
    text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
    try:
        text = _message_of(json.loads(text)) or text
    except ValueError:
        pass
    return clip(text, limit)


def clip(text: str, limit: int = EXCERPT_LIMIT) -> str:
    """Collapse whitespace, mask emails, truncate: safe to keep in a ledger."""
    from leadflow.observability import mask_email

    text = mask_email(_WHITESPACE.sub(" ", text).strip()) or ""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _message_of(document: Any) -> str | None:
    """The human part of common JSON error shapes: {"message"}, {"error", "error_description"},
    [{"message", "errorCode"}]."""
    if isinstance(document, list) and document and isinstance(document[0], dict):
        document = document[0]
    if not isinstance(document, dict):
        return None
    code = document.get("errorCode") or document.get("category") or document.get("error")
    message = document.get("message") or document.get("error_description")
    parts = [str(p) for p in (code, message) if p and isinstance(p, (str, int))]
    return ": ".join(parts) or None


def transport_error(what: str, cause: Any, timeout: float) -> RetryableError:
    """A failure before any answer: the receiver may be back in a moment."""
    if isinstance(cause, TimeoutError):  # socket.timeout is TimeoutError
        return RetryableError(f"{what}: timed out after {max(0.1, round(timeout, 1)):g}s")
    detail = (str(cause) or type(cause).__name__) if isinstance(cause, BaseException) else str(cause)
    return RetryableError(f"{what}: connection failed ({clip(detail, 120)})")


def _lower(headers: Any) -> dict[str, str]:
    if headers is None:
        return {}
    return {str(k).lower(): str(v) for k, v in headers.items()}


def _read_quietly(error: urllib.error.HTTPError) -> bytes:
    try:
        return error.read() or b""
    except (OSError, http.client.HTTPException):
        return b""
