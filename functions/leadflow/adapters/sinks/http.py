"""One HTTP attempt over the standard library, and one place that classifies its outcome.

The HTTP sinks (HubSpot, Salesforce, the generic webhook) share it so that "may this
succeed later?" has one answer everywhere: 429, 5xx, 408, 409 and 425 and every
transport failure (timeout, refused, reset, DNS) are retryable; any other non-2xx is
permanent. urllib is enough for one JSON request per move and costs nothing at cold
start. Redirects are not followed: urllib would silently turn a redirected POST into a
GET without a body, which for a webhook is a lost delivery reported as a success.

Reasons never carry a URL (a Slack webhook URL is a credential) and error excerpts
have emails masked, because reasons end up in the delivery ledger and dead letters.
"""

from __future__ import annotations

import http.client
import json
import re
import time
import urllib.error
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


_OPENER = urllib.request.build_opener(_NoRedirect())


def send(method: str, url: str, body: bytes | None, headers: Mapping[str, str], timeout: float,
         *, what: str = "request") -> Response:
    """One request. Any status comes back as a Response (urllib's HTTPError included);
    a transport failure raises RetryableError, since nothing was answered."""
    request = urllib.request.Request(url, data=body, method=method, headers=dict(headers))
    try:
        with _OPENER.open(request, timeout=timeout) as answer:
            return Response(answer.status, _lower(answer.headers), answer.read())
    except urllib.error.HTTPError as error:
        return Response(error.code, _lower(error.headers), _read_quietly(error))
    except urllib.error.URLError as error:
        raise transport_error(what, error.reason, timeout) from error
    except (OSError, http.client.HTTPException) as error:  # TimeoutError and resets are OSErrors
        raise transport_error(what, error, timeout) from error
    except ValueError as error:  # "unknown url type": a configuration no retry can fix
        raise PermanentError(f"{what}: invalid URL ({clip(str(error), 80)})") from error


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
        return RetryableError(f"{what}: timed out after {timeout:g}s")
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
