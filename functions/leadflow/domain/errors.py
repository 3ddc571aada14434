"""Domain errors. The API maps each to one status code in one place."""

from __future__ import annotations


class LeadflowError(Exception):
    status = 500
    code = "internal_error"

    def __init__(self, message: str, *, field: str | None = None, details: list[dict] | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        self.details = details or []

    def body(self) -> dict:
        out: dict = {"error": self.code, "message": self.message}
        if self.field:
            out["field"] = self.field
        if self.details:
            out["details"] = self.details
        return out


class BadRequest(LeadflowError):
    status = 400
    code = "bad_request"


class Unauthorized(LeadflowError):
    status = 401
    code = "unauthorized"


class NotFound(LeadflowError):
    status = 404
    code = "not_found"


class IllegalTransition(LeadflowError):
    status = 409
    code = "illegal_transition"


class Conflict(LeadflowError):
    """The request contradicts the current state (publishing the version in force)."""

    status = 409
    code = "conflict"


class Erased(LeadflowError):
    """The event is about a person erased after it happened: applying it would undo the
    erasure (a replayed delivery, an old export). Nothing is written."""

    status = 410
    code = "erased"


class PayloadTooLarge(LeadflowError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(LeadflowError):
    status = 415
    code = "unsupported_media_type"


class InvalidInput(LeadflowError):
    status = 422
    code = "validation_error"


class TooManyConflicts(LeadflowError):
    status = 503
    code = "contention"


class RulesError(LeadflowError):
    code = "invalid_rules"


class Misconfigured(LeadflowError):
    """The deployment cannot serve this safely as configured (no API key in AWS, a lead-id
    key that is not the table's): refused, never served in a weaker way."""

    status = 503
    code = "misconfigured"


class DeliveryFailed(Exception):
    """A sink's one attempt failed. The handoff (not the sink) owns retries, backoff,
    the delivery ledger and dead letters; the sink only says which kind of failure."""

    def __init__(self, reason: str, *, status: int | None = None):
        super().__init__(reason)
        self.reason = reason
        self.status = status


class RetryableError(DeliveryFailed):
    """May pass later: timeouts, connection errors, 429, 5xx (and 408/409/425), with the
    receiver's Retry-After when it gave one."""

    def __init__(self, reason: str, *, status: int | None = None, retry_after: float | None = None):
        super().__init__(reason, status=status)
        self.retry_after = retry_after


class PermanentError(DeliveryFailed):
    """Never will: a 4xx (other than 408/409/425/429), or a configuration the sink cannot use."""
