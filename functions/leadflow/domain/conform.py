"""An event checked against the rules in force before anything is written: its type is
built in or declared, declared properties and typed traits have the type the rules
say. A value that cannot be what the rules expect is a 422 naming the field, never a
silent zero or a 500 later."""

from __future__ import annotations

import re
from typing import Any

from leadflow.domain.errors import InvalidInput
from leadflow.domain.events import CanonicalEvent
from leadflow.domain.inputs import number_problem
from leadflow.domain.rules import Rules

_RANGE = re.compile(r"^\s*(\d[\d,.]*)\s*(?:-|–|to)\s*(\d[\d,.]*)\s*$")
_PLUS = re.compile(r"^\s*(\d[\d,.]*)\s*\+\s*$")
_TRUE = frozenset({"true", "yes", "y", "1", "on"})
_FALSE = frozenset({"false", "no", "n", "0", "off"})


def _storable(number: int | float, where: str) -> int | float:
    problem = number_problem(number)
    if problem:
        raise InvalidInput(f"{where}: {problem}", field=where)
    return number


def _integral(number: float) -> int | float:
    return int(number) if number.is_integer() and abs(number) < 2 ** 53 else number


def as_number(value: Any, where: str) -> int | float:
    """A number from a number or from what people type: "1,200", "51-200" (the range's
    low end, as forms offer company sizes), "1000+"."""
    if isinstance(value, bool):
        raise InvalidInput(f"{where}: expected a number, not true/false", field=where)
    if isinstance(value, int):
        return _storable(value, where)
    if isinstance(value, float):
        return _integral(_storable(value, where))
    if isinstance(value, str):
        text = value.strip()
        m = _RANGE.match(text) or _PLUS.match(text)
        if m:
            text = m.group(1)
        try:
            number = float(text.replace(",", ""))
        except (ValueError, OverflowError):
            raise InvalidInput(f"{where}: not a number ({value[:40]!r})", field=where) from None
        return _integral(_storable(number, where))
    raise InvalidInput(f"{where}: expected a number", field=where)


def as_boolean(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise InvalidInput(f"{where}: expected true or false (yes/no), not {str(value)[:40]!r}", field=where)


def as_country(value: Any, where: str) -> str:
    """The ISO alpha-2 code when the value is a code or an English name; other text is
    kept as typed (a rule can still test it), so no visitor is refused for it."""
    if not isinstance(value, str):
        raise InvalidInput(f"{where}: expected a country name or code", field=where)
    from leadflow.domain.countries import country_code

    return country_code(value) or value.strip()


def typed(kind: str, value: Any, where: str) -> Any:
    if value is None or value == "":
        return value
    if kind == "number":
        return as_number(value, where)
    if kind == "boolean":
        return as_boolean(value, where)
    if kind == "country":
        return as_country(value, where)
    if isinstance(value, list):
        raise InvalidInput(f"{where}: expected text, not a list", field=where)
    return value if isinstance(value, str) else str(value).lower() if isinstance(value, bool) else str(value)


def conform(event: CanonicalEvent, rules: Rules) -> CanonicalEvent:
    """The event as the rules type it, or InvalidInput naming the first field that is wrong."""
    if event.type not in rules.event_types:
        raise InvalidInput(f"type: unknown event type {event.type!r}; expected one of {', '.join(rules.event_types)}",
                           field="type")
    properties = event.properties
    spec = rules.events.get(event.type)
    if spec is not None and spec.properties:
        properties = dict(properties)
        for name, kind in spec.properties.items():
            if name in properties:
                properties[name] = typed(kind, properties[name], f"properties.{name}")
    types = rules.trait_types
    traits = {name: typed(types[name], value, f"traits.{name}") if name in types else value
              for name, value in event.traits.items()}
    if properties is event.properties and traits == event.traits:
        return event
    return event.model_copy(update={"properties": properties, "traits": traits})
