"""One place for logger, tracer and metrics. Emails and names never reach a log line.

Tracing costs a cold start: Powertools' Tracer imports the X-Ray SDK as soon as it is
built, even when tracing is off. So the real Tracer is built only when tracing is on
(the template's `Tracing` parameter sets POWERTOOLS_TRACE_DISABLED); otherwise the
handlers' `@tracer.capture_lambda_handler` is a no-op and nothing of X-Ray is loaded.
"""

from __future__ import annotations

import os
import re
import warnings
from contextlib import contextmanager
from typing import Any, Callable

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics.functions import is_metrics_disabled

TRUE = ("1", "true", "yes", "on")


def tracing_enabled(env: dict | None = None) -> bool:
    """As Powertools decides, without importing X-Ray to decide it: on in Lambda unless
    POWERTOOLS_TRACE_DISABLED is true; never under `sam local` or outside Lambda."""
    env = os.environ if env is None else env
    if env.get("POWERTOOLS_TRACE_DISABLED", "").strip().lower() in TRUE:
        return False
    if env.get("AWS_SAM_LOCAL", "").strip().lower() in TRUE:
        return False
    return bool(env.get("AWS_LAMBDA_FUNCTION_NAME"))


class _Untraced:
    """Stands in for Powertools' Tracer when tracing is off (its decorators pass through)."""

    disabled = True

    def capture_lambda_handler(self, lambda_handler: Callable | None = None, **_kwargs: Any) -> Callable:
        return lambda_handler if lambda_handler is not None else (lambda handler: handler)

    def capture_method(self, method: Callable | None = None, **_kwargs: Any) -> Callable:
        return method if method is not None else (lambda fn: fn)

    def put_annotation(self, key: str, value: Any) -> None:
        return None


def _tracer() -> Any:
    if not tracing_enabled():
        return _Untraced()
    from aws_lambda_powertools import Tracer

    return Tracer(service="leadflow")


logger = Logger(service="leadflow")
tracer = _tracer()
metrics = Metrics(namespace="Leadflow", service="leadflow")
# An invocation with no business metric (a read, a filtered batch) is normal, not a warning.
warnings.filterwarnings("ignore", message="No application metrics to publish", category=UserWarning)

_EMAIL = re.compile(r"([A-Za-z0-9._%+\-])[A-Za-z0-9._%+\-]*@([A-Za-z0-9])[A-Za-z0-9.\-]*(\.[A-Za-z]{2,})")


def mask_email(email: str | None) -> str | None:
    """jane.doe@acme.com -> j***@a***.com"""
    if not email:
        return email
    return _EMAIL.sub(lambda m: f"{m.group(1)}***@{m.group(2)}***{m.group(3)}", email)


def add(name: str, value: float = 1) -> None:
    """One count on the invocation's metrics (flushed with them)."""
    metrics.add_metric(name=name, unit="Count", value=value)


def count(name: str, value: float = 1, **dimensions: str) -> None:
    """One business metric with its own dimensions (e.g. source, reason), flushed at once
    so they do not leak onto the invocation's other metrics. Powertools' single_metric
    prints even when POWERTOOLS_METRICS_DISABLED is set, so that is checked here."""
    if is_metrics_disabled():
        return
    from aws_lambda_powertools.metrics import MetricUnit, single_metric

    with single_metric(name=name, unit=MetricUnit.Count, value=value, namespace="Leadflow") as metric:
        metric.add_dimension(name="service", value="leadflow")
        for key, val in dimensions.items():
            metric.add_dimension(name=key, value=str(val))


@contextmanager
def logged_failure(what: str, item: str | None):
    """A record that fails is retried by Lambda; say why in the log (the batch processor does not)."""
    try:
        yield
    except Exception:
        logger.exception(what, extra={"item": item})
        raise
