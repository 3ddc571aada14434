"""Wiring: the service built once per cold start, lazily, so tests can swap its parts."""

from __future__ import annotations

from functools import lru_cache

from leadflow.adapters.dynamodb import DynamoLeadStore
from leadflow.service import LeadService
from leadflow.settings import rules, settings


@lru_cache(maxsize=1)
def service() -> LeadService:
    return LeadService(DynamoLeadStore(settings().table_name), rules())


def reset() -> None:
    """Forget everything cached: settings, rules, clients (tests and the local stack)."""
    service.cache_clear()
    settings.cache_clear()
    rules.cache_clear()
