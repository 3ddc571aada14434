"""Shared fixtures. Tables are created from template.yaml, so tests cannot drift from it."""

from __future__ import annotations

import os
import time
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
# One lead-id key for the whole suite: the functions (through the container), the local
# stacks and the tests derive the same ids. Tests that need another say so.
TEST_LEAD_ID_KEY = "test-lead-id-key-0123456789abcdef0123456789"
os.environ["LEADFLOW_LEAD_ID_KEY"] = TEST_LEAD_ID_KEY

NOW = datetime(2026, 11, 20, 10, 0, tzinfo=timezone.utc)


def _test_lead_ids():
    from leadflow.domain.lead import LeadIds

    return LeadIds(TEST_LEAD_ID_KEY.encode())


TEST_LEAD_IDS = _test_lead_ids()


def lead_id_for(email: str) -> str:
    """The lead id of `email` under the suite's key (what the API answers)."""
    return TEST_LEAD_IDS.for_email(email)


@pytest.fixture
def lead_ids():
    return TEST_LEAD_IDS


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


def wait_until(condition, timeout: float = 20.0, interval: float = 0.1):
    """Poll `condition` until it returns something truthy (returned) or `timeout` passes (AssertionError)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)
