"""Shared fixtures. Tables are created from template.yaml, so tests cannot drift from it."""

from __future__ import annotations

import os
from datetime import datetime, timezone

import pytest

os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
os.environ.setdefault("POWERTOOLS_DEV", "false")
for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB", "AWS_ENDPOINT_URL_DYNAMODB_STREAMS"):
    os.environ.pop(name, None)

NOW = datetime(2026, 11, 20, 10, 0, tzinfo=timezone.utc)


@pytest.fixture(scope="session")
def rules():
    from leadflow.settings import load_rules

    return load_rules(None)


def rules_with(raw_rules: dict, **sections):
    """Rules parsed from a copy of `raw_rules` with sections replaced: `fit__grades=...`
    sets raw["fit"]["grades"]."""
    import copy

    from leadflow.domain.rules import parse_rules

    data = copy.deepcopy(raw_rules)
    for path, value in sections.items():
        node = data
        *parents, last = path.split("__")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    return parse_rules(data)
