"""What every sink is: one attempt per call, failures classified for the dispatcher.

The dispatcher (not the sink) owns retries, backoff, the delivery ledger and the
dead-letter queue. A sink only says whether a failure may succeed later
(`RetryableError`, with the receiver's `Retry-After` if it gave one) or never will
(`PermanentError`: a 4xx that retrying cannot fix, such as a bad token or a
rejected payload).
"""

from __future__ import annotations

from typing import Any, Protocol

from leadflow.domain.handoff import Notice, SinkKind


class SinkError(Exception):
    def __init__(self, reason: str, *, status: int | None = None):
        super().__init__(reason)
        self.reason = reason
        self.status = status


class RetryableError(SinkError):
    """Timeouts, connection errors, 429, 5xx (and 408/409/425)."""

    def __init__(self, reason: str, *, status: int | None = None, retry_after: float | None = None):
        super().__init__(reason, status=status)
        self.retry_after = retry_after


class PermanentError(SinkError):
    """A 4xx (other than 408/409/425/429) or a configuration the sink cannot use."""


Receipt = dict[str, Any]  # what the receiver answered that is worth keeping (ids), JSON-safe, no PII


class Sink(Protocol):
    name: str  # "slack", "email", "hubspot", "salesforce", "webhook", "eventbridge"
    kind: SinkKind

    def deliver(self, notice: Notice) -> Receipt:
        """One attempt. Returns a receipt or raises RetryableError / PermanentError."""
        ...
