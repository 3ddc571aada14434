"""One place for logger, tracer and metrics. Emails and names never reach a log line."""

from __future__ import annotations

import re

from aws_lambda_powertools import Logger, Metrics, Tracer

logger = Logger(service="leadflow")
tracer = Tracer(service="leadflow")
metrics = Metrics(namespace="Leadflow", service="leadflow")

_EMAIL = re.compile(r"([A-Za-z0-9._%+\-])[A-Za-z0-9._%+\-]*@([A-Za-z0-9])[A-Za-z0-9.\-]*(\.[A-Za-z]{2,})")


def mask_email(email: str | None) -> str | None:
    """jane.doe@acme.com -> j***@a***.com"""
    if not email:
        return email
    return _EMAIL.sub(lambda m: f"{m.group(1)}***@{m.group(2)}***{m.group(3)}", email)


def mask_text(text: str) -> str:
    return _EMAIL.sub(lambda m: f"{m.group(1)}***@{m.group(2)}***{m.group(3)}", text)
