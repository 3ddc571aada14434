"""One place for logger, tracer and metrics. Emails and names never reach a log line."""

from __future__ import annotations

import os
import re
from typing import Any, Callable

from aws_lambda_powertools import Logger, Metrics, Tracer


class _NoMetrics:
    """Honours POWERTOOLS_METRICS_DISABLED, which Powertools' CloudWatch EMF provider
    ignores (it prints metric documents to stdout regardless, e.g. on the local stack)."""

    def add_metric(self, **_kwargs: Any) -> None:
        return None

    def log_metrics(self, lambda_handler: Callable | None = None, **_kwargs: Any) -> Callable:
        if lambda_handler is None:
            return lambda handler: handler
        return lambda_handler


def _metrics_disabled() -> bool:
    return os.environ.get("POWERTOOLS_METRICS_DISABLED", "").strip().lower() in ("1", "true", "yes", "on")


logger = Logger(service="leadflow")
tracer = Tracer(service="leadflow")
metrics: Any = _NoMetrics() if _metrics_disabled() else Metrics(namespace="Leadflow", service="leadflow")

_EMAIL = re.compile(r"([A-Za-z0-9._%+\-])[A-Za-z0-9._%+\-]*@([A-Za-z0-9])[A-Za-z0-9.\-]*(\.[A-Za-z]{2,})")


def mask_email(email: str | None) -> str | None:
    """jane.doe@acme.com -> j***@a***.com"""
    if not email:
        return email
    return _EMAIL.sub(lambda m: f"{m.group(1)}***@{m.group(2)}***{m.group(3)}", email)


def count(name: str, value: float = 1, **dimensions: str) -> None:
    """One business metric with its own dimensions (e.g. source, reason), flushed at once
    so they do not leak onto the invocation's other metrics."""
    if isinstance(metrics, _NoMetrics):
        return
    from aws_lambda_powertools.metrics import MetricUnit, single_metric

    with single_metric(name=name, unit=MetricUnit.Count, value=value, namespace="Leadflow") as metric:
        metric.add_dimension(name="service", value="leadflow")
        for key, val in dimensions.items():
            metric.add_dimension(name=key, value=str(val))
