"""Lambda event filtering (FilterCriteria) for the local pollers, read from template.yaml.

The local stack does not hard-code which stream records reach which function: it
compiles the very patterns the template gives Lambda's event source mappings, so
the two cannot drift. Supported pattern syntax (what the template uses, and the
common part of Lambda's): exact values in a list, `{"exists": true|false}`,
`{"prefix": "…"}`, `{"anything-but": [...]}` and nesting. Filters in one
FilterCriteria are ORed; keys within a pattern are ANDed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from leadflow_infra.template import function_spec, resolve_template

_MISSING = object()


def _match_value(rules: list[Any], value: Any) -> bool:
    for rule in rules:
        if isinstance(rule, Mapping):
            if "exists" in rule:
                if (value is not _MISSING) == bool(rule["exists"]):
                    return True
            elif "prefix" in rule:
                if isinstance(value, str) and value.startswith(rule["prefix"]):
                    return True
            elif "anything-but" in rule:
                banned = rule["anything-but"]
                banned = banned if isinstance(banned, list) else [banned]
                if value is not _MISSING and value not in banned:
                    return True
            else:
                raise ValueError(f"unsupported filter rule {rule!r}")
        elif value is not _MISSING and value == rule:
            return True
    return False


def matches(pattern: Mapping[str, Any], record: Any) -> bool:
    for key, expected in pattern.items():
        value = record.get(key, _MISSING) if isinstance(record, Mapping) else _MISSING
        if isinstance(expected, Mapping):
            if value is _MISSING or not matches(expected, value):
                return False
        elif isinstance(expected, list):
            if not _match_value(expected, value):
                return False
        else:
            raise ValueError(f"filter pattern values must be lists or objects, got {expected!r} at {key!r}")
    return True


def compile_filters(filter_criteria: Mapping[str, Any] | None) -> Callable[[Mapping[str, Any]], bool] | None:
    """A predicate over Lambda-shaped records; None when there is no filter."""
    filters = (filter_criteria or {}).get("Filters") or []
    patterns = [json.loads(f["Pattern"]) if isinstance(f["Pattern"], str) else f["Pattern"] for f in filters]
    if not patterns:
        return None
    return lambda record: any(matches(p, record) for p in patterns)


def stream_filter(function: str, event: str, template: Mapping[str, Any] | None = None) -> Callable[[Mapping[str, Any]], bool] | None:
    """The FilterCriteria of `function`'s stream event `event` in template.yaml, compiled
    (read through the same function reader as the local stack)."""
    for source in function_spec(resolve_template(template), function).streams:
        if source.name == event:
            return compile_filters(source.filter_criteria)
    raise KeyError(f"template.yaml has no stream event {event} on {function}")
