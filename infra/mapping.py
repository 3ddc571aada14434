"""Import mappings: how the columns of a CRM or marketing-automation export (HubSpot,
Salesforce, Mautic CSV exports) become the rows of `POST /v1/import`.

A mapping is a YAML file (format `mapping: 1`). `load_mapping(path)` validates it and
raises `MappingError` with every problem and its location (`events[1].when: ...`);
`RowMapper(mapping, header, base_dir=...)` reads the mapping's lookup files (once) and
checks the columns it names against the file's header and the lookup files' headers, and
`RowMapper.map_row(row, cells, now=...)` turns one CSV record into one import row, or
raises `RowRejected` naming the column at fault. No I/O beyond reading the YAML file and
the lookup files, no clock (the caller passes `now`, the default time of a row's events).

Values (a VALUE spec) are one of:
- `Column Name`, or `{column: C}` with optional `map: {cell: value}` (exact match after
  trimming, then case-insensitive; a non-empty cell the map does not name becomes
  `default:` when given, the cell itself with `map_missing: keep`, else empty).
  `column: [A, B]` reads the first of those cells that is not empty (the map applies to
  the cell chosen); the plain-string shorthand is always one column,
- `{lookup: accounts, column: sector}`: a column of the row that the lookup `accounts`
  joins to this row (a list of columns works as above); no joined row reads as empty,
- `{value: constant}`,
- `{template: "{Lead Number}@x-education.example"}` (an empty referenced cell makes the
  value empty; `{{` and `}}` are literal braces),
each with an optional `type: number|date|text|boolean` (`format:` a strptime format
for dates, and implies `type: date`). Every cell read is trimmed; blank cells and the
mapping's `null_values` (case-insensitive) are empty. Empty values are left out. A
`column` (or `lookup`) spec may give `if_empty: constant`, the value used when the cells
are empty or the lookup joins nothing (written like a cell: it is not mapped, and `type`
converts it); `default` is for non-empty cells the map does not name.

Lookups (joins) are a top-level section, `lookups: {accounts: {file: accounts.csv, key:
account, on: account}}`: `file` is a CSV file (read like the export: BOM, delimiter)
relative to `base_dir`, the directory of the file being imported (or absolute); it is read
once into a table by its `key` column (trimmed, exact match; the first row of a duplicate
key wins, blank keys are skipped). `on` is this file's column whose trimmed cell picks the
row, or a VALUE spec over this file's columns (e.g. with a `map` and `map_missing: keep`
to normalise names that the lookup file spells differently). `RowMapper.digest()` is the
mapping's digest together with the lookup files' sha256, so a changed lookup file does
not resume an import made with the old one.

Event ids are `import:<name>:<sha256(row key)[:24]>:<n>` (identify is 0, `events[i]`
is i + 1): the same row under the same mapping always makes the same ids, so the
server applies a re-sent row once.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import re
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from leadflow.domain.events import CanonicalEvent, normalise_email, validation_details
from leadflow.domain.stages import STAGES

__all__ = [
    "FORMAT_VERSION", "MappingError", "RowRejected", "ImportMapping", "ValueSpec", "WhenSpec", "EventSpec",
    "OutcomeSpec", "LookupSpec", "load_mapping", "parse_mapping", "RowMapper", "event_id",
    "parse_number", "parse_date", "parse_boolean",
]

FORMAT_VERSION = 1
# The canonical event's type pattern (leadflow.domain.events): checked here so a
# constant type is refused before any row is read.
_TYPE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
# The name goes into every event id between colons.
_MAPPING_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_LOOKUP_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")
_FIELD_NAME_MAX = 100  # the canonical event's limit on a trait or property name
_SHOWN = 40  # characters of a bad cell quoted in a rejection

ValueType = Literal["number", "date", "text", "boolean"]
Constant = str | bool | int | float


class MappingError(Exception):
    """The mapping cannot be used: every problem, each with its location."""

    def __init__(self, problems: list[str], *, source: str | None = None, hint: str | None = None):
        self.problems = problems
        self.source = source
        self.hint = hint
        head = f"{source}: " if source else ""
        lines = [f"{head}{p}" for p in problems] + ([hint] if hint else [])
        super().__init__("\n".join(lines))


class RowRejected(Exception):
    """One row the client cannot map. `field` is the column at fault when there is one
    (else the mapping location); `reason` says what is wrong and where it was read for."""

    def __init__(self, field: str, reason: str):
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


# ---------------------------------------------------------------- cell values


def _shown(text: Any) -> str:
    text = str(text)
    return repr(text if len(text) <= _SHOWN else text[: _SHOWN - 1] + "…")


# Thousands separators only where they group by three: "1,200" is 1200, while "1,2"
# (a decimal comma) is refused rather than read as 12.
_NUMBER = re.compile(r"^[+-]?(?:\d{1,3}(?:,\d{3})+|\d*)(?:\.\d*)?(?:[eE][+-]?\d+)?$")
_INTEGER = re.compile(r"^[+-]?\d+$")
_TRUE = frozenset({"true", "yes", "y", "t", "1", "on"})
_FALSE = frozenset({"false", "no", "n", "f", "0", "off"})


def parse_number(text: str) -> int | float:
    """`"1,200"` → 1200, `"12.5"` → 12.5. Raises ValueError for anything else, NaN and
    infinities included (they would pass no rule and every rule at once)."""
    text = text.strip()
    if not _NUMBER.match(text) or not any(c.isdigit() for c in text):
        raise ValueError("not a number")
    plain = text.replace(",", "")
    if _INTEGER.match(plain):
        return int(plain)
    value = float(plain)
    if not math.isfinite(value):
        raise ValueError("not a finite number")
    return value


def parse_boolean(text: str) -> bool:
    folded = text.strip().casefold()
    if folded in _TRUE:
        return True
    if folded in _FALSE:
        return False
    raise ValueError("not true or false")


def parse_date(text: str, fmt: str | None = None) -> datetime:
    """An ISO 8601 date or date-time (or `fmt`, a strptime format), in UTC. A time
    without a zone is UTC."""
    text = text.strip()
    value = datetime.strptime(text, fmt) if fmt else datetime.fromisoformat(text)
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def _iso(value: datetime) -> str:
    return value.astimezone(timezone.utc).isoformat()


def _convert(value: Any, kind: str | None, fmt: str | None) -> Any:
    """`value` (a cell, or what a map or constant gave) as `kind`. Raises ValueError."""
    if kind is None:
        return value
    if kind == "text":
        if isinstance(value, bool):
            return "true" if value else "false"
        return value if isinstance(value, str) else str(value)
    if kind == "number":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ValueError("not a finite number")
            return value
        return parse_number(str(value))
    if kind == "boolean":
        return value if isinstance(value, bool) else parse_boolean(str(value))
    if kind == "date":
        if isinstance(value, bool) or not isinstance(value, str):
            raise ValueError("not a date")
        try:
            return parse_date(value, fmt)
        except ValueError:
            raise ValueError(f"not a date in the format {fmt!r}" if fmt else "not an ISO 8601 date") from None
    raise AssertionError(kind)


# ---------------------------------------------------------------- the mapping file


# `{Column Name}` in a template; `{{` and `}}` stand for literal braces.
_TEMPLATE_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")


def _template_parts(template: str) -> list[tuple[bool, str]]:
    """`(is_column, text)` pieces of a template. Raises ValueError for stray braces."""
    parts: list[tuple[bool, str]] = []
    at = 0
    for match in _TEMPLATE_TOKEN.finditer(template):
        if match.start() > at:
            parts.append((False, template[at: match.start()]))
        token = match.group(0)
        if token in ("{{", "}}"):
            parts.append((False, token[0]))
        elif token in ("{", "}"):
            raise ValueError(f"unmatched {token!r} at character {match.start() + 1} (write {token * 2} for a brace)")
        else:
            column = match.group(1).strip()
            if not column:
                raise ValueError("empty {} (put a column name between the braces)")
            parts.append((True, column))
        at = match.end()
    if at < len(template):
        parts.append((False, template[at:]))
    if not any(is_column for is_column, _ in parts):
        raise ValueError("names no column; use {value: ...} for a constant")
    return parts


class ValueSpec(BaseModel):
    """Where one value comes from. A plain string is a column name."""

    model_config = ConfigDict(extra="forbid")

    column: str | list[str] | None = None
    lookup: str | None = None
    value: Constant | None = None
    template: str | None = Field(default=None, min_length=1)
    map: dict[str, Constant | None] | None = None
    default: Constant | None = None
    map_missing: Literal["empty", "keep"] = "empty"
    type: ValueType | None = None
    format: str | None = Field(default=None, min_length=1)
    if_empty: Constant | None = None

    _parts: list[tuple[bool, str]] = PrivateAttr(default_factory=list)
    _exact: dict[str, Any] = PrivateAttr(default_factory=dict)
    _folded: dict[str, Any] = PrivateAttr(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, raw: Any) -> Any:
        if isinstance(raw, str):
            return {"column": raw}
        if not isinstance(raw, dict):
            raise ValueError("expected a column name, or a mapping with one of column, value, template")
        raw = dict(raw)
        if isinstance(raw.get("map"), dict):
            # YAML reads `1: won` with an integer key; a cell is always text.
            raw["map"] = {_key_text(k): v for k, v in raw["map"].items()}
        return raw

    @field_validator("column", mode="before")
    @classmethod
    def _column(cls, raw: Any) -> Any:
        # One column, or a list of them: the first non-empty cell.
        if isinstance(raw, str):
            if not raw:
                raise ValueError("a column name cannot be empty")
            return raw
        if isinstance(raw, list):
            if not raw:
                raise ValueError("give at least one column (the first non-empty one is read)")
            if any(not isinstance(c, str) or not c for c in raw):
                raise ValueError("a list of column names (text, not empty)")
            return raw
        if raw is None:
            raise ValueError("give a column name")
        raise ValueError("a column name, or a list of column names (the first non-empty one is read)")

    @field_validator("lookup", mode="before")
    @classmethod
    def _lookup_name(cls, raw: Any) -> Any:
        if not isinstance(raw, str) or not raw:
            raise ValueError("the name of one of the mapping's lookups")
        return raw

    @model_validator(mode="after")
    def _one_source(self) -> "ValueSpec":
        given = [name for name in ("column", "value", "template") if name in self.model_fields_set]
        if self.lookup is not None and self.column is None:
            raise ValueError("lookup needs column: the lookup file's column to read"
                             + (f" (not {' and '.join(given)})" if given else ""))
        if len(given) != 1:
            raise ValueError("give exactly one of column, value, template" + (f" (not {' and '.join(given)})" if given else ""))
        if "value" in given and self.value is None:
            raise ValueError("value: give a constant (leave the field out for no value)")
        if isinstance(self.value, float) and not math.isfinite(self.value):
            raise ValueError("value: NaN and infinities are not numbers")
        if "if_empty" in self.model_fields_set:
            if self.column is None:
                raise ValueError("if_empty applies to a column or a lookup")
            if self.if_empty is None:
                raise ValueError("if_empty: give a constant (leave the field out for no value)")
            if isinstance(self.if_empty, float) and not math.isfinite(self.if_empty):
                raise ValueError("if_empty: NaN and infinities are not numbers")
        with_map = {"map", "default", "map_missing"} & self.model_fields_set
        if with_map and self.column is None:
            raise ValueError(f"{_names(with_map)} {'apply' if len(with_map) > 1 else 'applies'} to a column")
        if with_map - {"map"} and self.map is None:
            raise ValueError(f"{_names(with_map - {'map'})} {'need' if len(with_map) > 2 else 'needs'} a map")
        if "default" in self.model_fields_set and self.map_missing == "keep":
            raise ValueError("give default or map_missing: keep, not both")
        if self.format is not None:
            if self.type not in (None, "date"):
                raise ValueError(f"format applies to dates, not to type: {self.type}")
            self.type = "date"
        if self.if_empty is not None and self.type is not None:
            try:
                _convert(self.if_empty, self.type, self.format)
            except ValueError as exc:
                raise ValueError(f"if_empty {_shown(self.if_empty)}: {exc}") from None
        if self.template is not None:
            self._parts = _template_parts(self.template)
        if self.map:
            for cell, mapped in self.map.items():
                self._exact.setdefault(cell.strip(), mapped)
                self._folded.setdefault(cell.strip().casefold(), mapped)
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> Any:
        # Fields left out stay out of the dump, so a mapping written before lookups and
        # if_empty existed keeps its digest (and an interrupted import still resumes).
        data = handler(self)
        if isinstance(data, dict):
            for name in ("lookup", "if_empty"):
                if data.get(name) is None:
                    data.pop(name, None)
        return data

    @property
    def column_list(self) -> list[str]:
        """The columns a `column` spec reads, in order (empty for value and template)."""
        if self.column is None:
            return []
        return [self.column] if isinstance(self.column, str) else list(self.column)

    def columns(self) -> list[str]:
        """Every column the spec reads: the lookup file's when `lookup` is given."""
        if self.column is not None:
            return self.column_list
        return [text for is_column, text in self._parts if is_column]

    def mapped(self, cell: str) -> tuple[bool, Any]:
        """The map's value for a cell: exact after trimming, then case-insensitive."""
        if cell in self._exact:
            return True, self._exact[cell]
        folded = cell.casefold()
        if folded in self._folded:
            return True, self._folded[folded]
        return False, None


def _names(names: set[str]) -> str:
    return " and ".join(sorted(names))


def _key_text(key: Any) -> str:
    if isinstance(key, bool):
        return "true" if key else "false"
    return "" if key is None else str(key)


def _of_kind(spec: ValueSpec | None, kind: str, *, choices: tuple[str, ...] = ()) -> ValueSpec | None:
    """A spec read where only `kind` makes sense (a date for a time, text for an email).
    A constant is checked now, so a typo fails before any row is read."""
    if spec is None:
        return None
    if spec.type not in (None, kind):
        raise ValueError(f"is a {kind}; type: {spec.type} does not fit")
    for label, constant in (("value", spec.value), ("if_empty", spec.if_empty)):
        if constant is None:
            continue
        try:
            value = _convert(constant, spec.type or kind, spec.format)
        except ValueError as exc:
            raise ValueError(f"{label} {_shown(constant)}: {exc}") from None
        if choices and value.casefold() not in choices:
            raise ValueError(f"{label} {_shown(constant)}: expected one of {', '.join(choices)}")
    return spec


_CONDITIONS = ("equals", "in", "not_in", "gt", "gte", "lt", "lte", "present")


class WhenSpec(BaseModel):
    """A row filter: one column and one condition. An empty cell matches only
    `present: false` and `not_in`."""

    model_config = ConfigDict(extra="forbid", populate_by_name=False)

    column: str = Field(min_length=1)
    equals: Constant | None = None
    in_: list[Constant] | None = Field(default=None, alias="in", min_length=1)
    not_in: list[Constant] | None = Field(default=None, min_length=1)
    gt: float | None = None
    gte: float | None = None
    lt: float | None = None
    lte: float | None = None
    present: bool | None = None

    @model_validator(mode="after")
    def _one_condition(self) -> "WhenSpec":
        given = [name for name in _CONDITIONS if getattr(self, "in_" if name == "in" else name) is not None]
        if len(given) != 1:
            raise ValueError(f"give the column and exactly one of {', '.join(_CONDITIONS)}"
                             + (f" (not {' and '.join(given)})" if given else ""))
        return self

    @property
    def condition(self) -> tuple[str, Any]:
        for name in _CONDITIONS:
            value = getattr(self, "in_" if name == "in" else name)
            if value is not None:
                return name, value
        raise AssertionError("validated")


def _check_names(value: dict[str, Any]) -> dict[str, Any]:
    if len(value) > 100:
        raise ValueError("at most 100 names")
    for name in value:
        if not name or len(name) > _FIELD_NAME_MAX:
            raise ValueError(f"name {name[:40]!r} must be 1 to {_FIELD_NAME_MAX} characters")
    return value


class EventSpec(BaseModel):
    """At most one event per row. `type` is a constant event type, or a VALUE spec (a row
    whose type comes out empty has no such event)."""

    model_config = ConfigDict(extra="forbid")

    type: ValueSpec
    when: WhenSpec | None = None
    occurred_at: ValueSpec | None = None
    properties: dict[str, ValueSpec] = Field(default_factory=dict)

    @field_validator("type", mode="before")
    @classmethod
    def _constant_type(cls, raw: Any) -> Any:
        # Here, unlike everywhere else, a plain string is the type itself, not a column.
        if isinstance(raw, str):
            if not _TYPE_NAME.match(raw):
                raise ValueError(f"{_shown(raw)} is not an event type (lower case letters, digits and _)")
            return {"value": raw}
        return raw

    @field_validator("type")
    @classmethod
    def _type_text(cls, spec: ValueSpec) -> ValueSpec:
        _of_kind(spec, "text")
        if spec.value is not None and not _TYPE_NAME.match(str(spec.value)):
            raise ValueError(f"{_shown(spec.value)} is not an event type (lower case letters, digits and _)")
        return spec

    @field_validator("occurred_at")
    @classmethod
    def _date(cls, spec: ValueSpec | None) -> ValueSpec | None:
        return _of_kind(spec, "date")

    @field_validator("properties")
    @classmethod
    def _property_names(cls, value: dict[str, ValueSpec]) -> dict[str, ValueSpec]:
        return _check_names(value)


class OutcomeSpec(BaseModel):
    """The won/lost outcome the source system holds. A row whose result comes out empty
    has no outcome."""

    model_config = ConfigDict(extra="forbid")

    result: ValueSpec
    at: ValueSpec | None = None
    reason: ValueSpec | None = None
    value: ValueSpec | None = None

    @field_validator("result")
    @classmethod
    def _result(cls, spec: ValueSpec) -> ValueSpec | None:
        return _of_kind(spec, "text", choices=("won", "lost"))

    @field_validator("at")
    @classmethod
    def _at(cls, spec: ValueSpec | None) -> ValueSpec | None:
        return _of_kind(spec, "date")

    @field_validator("reason")
    @classmethod
    def _reason(cls, spec: ValueSpec | None) -> ValueSpec | None:
        return _of_kind(spec, "text")

    @field_validator("value")
    @classmethod
    def _value(cls, spec: ValueSpec | None) -> ValueSpec | None:
        return _of_kind(spec, "number")


class LookupSpec(BaseModel):
    """A join: the row of `file` whose `key` column equals this row's `on` value."""

    model_config = ConfigDict(extra="forbid")

    file: str = Field(min_length=1)
    key: str = Field(min_length=1)
    on: ValueSpec

    @field_validator("on")
    @classmethod
    def _on(cls, spec: ValueSpec) -> ValueSpec:
        if spec.lookup is not None:
            raise ValueError("reads this file's columns; a lookup cannot join through another lookup")
        if spec.value is not None:
            raise ValueError("give a column of this file (or a template over its columns), not a constant")
        return _of_kind(spec, "text")  # type: ignore[return-value]


class ImportMapping(BaseModel):
    """The whole mapping file."""

    model_config = ConfigDict(extra="forbid")

    mapping: int
    name: str
    key: list[str] = Field(min_length=1)
    null_values: list[str] = Field(default_factory=list)
    lookups: dict[str, LookupSpec] = Field(default_factory=dict)
    email: ValueSpec
    occurred_at: ValueSpec | None = None
    traits: dict[str, ValueSpec] = Field(default_factory=dict)
    events: list[EventSpec] = Field(default_factory=list)
    stage: ValueSpec | None = None
    stage_at: ValueSpec | None = None
    outcome: OutcomeSpec | None = None
    owner: ValueSpec | None = None

    @field_validator("mapping", mode="before")
    @classmethod
    def _version(cls, raw: Any) -> Any:
        if raw != FORMAT_VERSION or isinstance(raw, bool):
            raise ValueError(f"unsupported format version {raw!r}; this leadflow reads mapping: {FORMAT_VERSION}")
        return raw

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not re.match(_MAPPING_NAME, value):
            raise ValueError("1 to 64 letters, digits, '_', '.' or '-' (it goes into every event id)")
        return value

    @field_validator("key", mode="before")
    @classmethod
    def _key(cls, raw: Any) -> Any:
        if isinstance(raw, str):
            raw = [raw]
        if isinstance(raw, list) and any(not isinstance(c, str) or not c.strip() for c in raw):
            raise ValueError("column names (text, not empty)")
        return raw

    @field_validator("null_values", mode="before")
    @classmethod
    def _nulls(cls, raw: Any) -> Any:
        # Unquoted `null` in YAML is None; in this list it can only mean the text "null".
        if isinstance(raw, list):
            return ["null" if v is None else _key_text(v) if isinstance(v, (bool, int, float)) else v for v in raw]
        return raw

    @field_validator("email", "owner")
    @classmethod
    def _text(cls, spec: ValueSpec | None) -> ValueSpec | None:
        return _of_kind(spec, "text")

    @field_validator("stage")
    @classmethod
    def _stage(cls, spec: ValueSpec | None) -> ValueSpec | None:
        return _of_kind(spec, "text", choices=STAGES)

    @field_validator("occurred_at", "stage_at")
    @classmethod
    def _date(cls, spec: ValueSpec | None) -> ValueSpec | None:
        return _of_kind(spec, "date")

    @field_validator("traits")
    @classmethod
    def _trait_names(cls, value: dict[str, ValueSpec]) -> dict[str, ValueSpec]:
        return _check_names(value)

    @field_validator("lookups")
    @classmethod
    def _lookup_names(cls, value: dict[str, LookupSpec]) -> dict[str, LookupSpec]:
        for name in value:
            if not _LOOKUP_NAME.match(name):
                raise ValueError(f"lookup name {name[:40]!r}: 1 to 64 letters, digits, '_' or '-', "
                                 "starting with a letter or '_'")
        return value

    def _parts(self) -> list[tuple[str, ValueSpec | WhenSpec]]:
        out: list[tuple[str, ValueSpec | WhenSpec]] = []

        def add(where: str, spec: ValueSpec | WhenSpec | None) -> None:
            if spec is not None:
                out.append((where, spec))

        add("email", self.email)
        add("occurred_at", self.occurred_at)
        for name, spec in self.traits.items():
            add(f"traits.{name}", spec)
        for i, event in enumerate(self.events):
            add(f"events[{i}].type", event.type)
            add(f"events[{i}].when", event.when)
            add(f"events[{i}].occurred_at", event.occurred_at)
            for name, spec in event.properties.items():
                add(f"events[{i}].properties.{name}", spec)
        add("stage", self.stage)
        add("stage_at", self.stage_at)
        if self.outcome is not None:
            for part in ("result", "at", "reason", "value"):
                add(f"outcome.{part}", getattr(self.outcome, part))
        add("owner", self.owner)
        for name, lookup in self.lookups.items():
            add(f"lookups.{name}.on", lookup.on)
        return out

    def specs(self) -> list[tuple[str, ValueSpec]]:
        """Every VALUE spec with where it is: `[("email", spec), ("traits.job", spec), ...]`."""
        return [(where, spec) for where, spec in self._parts() if isinstance(spec, ValueSpec)]

    def references(self) -> list[tuple[str, str]]:
        """Every column of the file itself the mapping reads, with where:
        `[("events[0].when", "TotalVisits"), ...]` (lookup files' columns: `lookup_references`)."""
        out: list[tuple[str, str]] = [(f"key[{i}]" if len(self.key) > 1 else "key", c) for i, c in enumerate(self.key)]
        for where, spec in self._parts():
            if isinstance(spec, WhenSpec):
                out.append((where, spec.column))
            elif spec.lookup is None:
                out.extend((where, column) for column in spec.columns())
        return out

    def lookup_references(self) -> list[tuple[str, str, str]]:
        """Every column of a lookup file the mapping reads: `[(where, lookup name, column), ...]`
        (each lookup's own `key` first)."""
        out = [(f"lookups.{name}.key", name, lookup.key) for name, lookup in self.lookups.items()]
        for where, spec in self.specs():
            if spec.lookup is not None:
                out.extend((where, spec.lookup, column) for column in spec.columns())
        return out

    def lookup_problems(self) -> list[str]:
        """A `lookup:` naming no lookup of the mapping, with where."""
        problems = []
        for where, spec in self.specs():
            if spec.lookup is not None and spec.lookup not in self.lookups:
                close = difflib.get_close_matches(spec.lookup, list(self.lookups), n=1, cutoff=0.6)
                known = (f"did you mean {close[0]!r}?" if close else
                         f"the mapping's lookups: {', '.join(self.lookups)}" if self.lookups else
                         "the mapping has no lookups: section")
                problems.append(f"{where}: unknown lookup {spec.lookup!r} ({known})")
        return problems

    def digest(self) -> str:
        """What the mapping means, not how it is written: comments and spacing aside. (The
        lookup files' content is in `RowMapper.digest`.)"""
        data = self.model_dump(mode="json", by_alias=True)
        if not data.get("lookups"):
            data.pop("lookups", None)  # as before lookups existed: the same digest
        canon = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canon.encode()).hexdigest()


class _Loader(yaml.SafeLoader):
    """YAML as a mapping author means it: only true/false are booleans (YAML 1.1 also
    reads yes/no/on/off, so `map: {Yes: won}` would key on True), and dates stay text
    for the mapping's own date parsing."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:timestamp")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                              list("tTfF"))


def _location(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + ("in" if part == "in_" else str(part))
    return out


def parse_mapping(data: Any, *, source: str | None = None) -> ImportMapping:
    """A parsed YAML document as a mapping; raises MappingError listing every problem."""
    if not isinstance(data, dict):
        raise MappingError(["the mapping must be a YAML mapping (mapping: 1, name: ..., key: ..., email: ...)"],
                           source=source)
    try:
        mapping = ImportMapping.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False, include_input=False):
            where = _location(err["loc"])
            reason = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                reason = "unknown field"
            elif err["type"] == "missing":
                reason = "required"
            problems.append(f"{where}: {reason}" if where else reason)
        raise MappingError(problems, source=source) from None
    problems = mapping.lookup_problems()
    if problems:
        raise MappingError(problems, source=source)
    return mapping


def load_mapping(path: str | Path) -> ImportMapping:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise MappingError([f"cannot read the mapping: {exc.strerror or exc}"], source=str(path)) from None
    except UnicodeDecodeError:
        raise MappingError(["the mapping is not UTF-8 text"], source=str(path)) from None
    try:
        data = yaml.load(text, Loader=_Loader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise MappingError([f"{where}not valid YAML: {getattr(exc, 'problem', None) or exc}"],
                           source=str(path)) from None
    return parse_mapping(data, source=str(path))


# ---------------------------------------------------------------- rows


def event_id(mapping_name: str, row_key: str, n: int) -> str:
    """Stable across re-runs: the same row under the same mapping makes the same ids."""
    return f"import:{mapping_name}:{hashlib.sha256(row_key.encode('utf-8')).hexdigest()[:24]}:{n}"


def _header_index(header: list[str]) -> tuple[dict[str, int], set[str]]:
    """Each column's first position, and the names the header holds more than once."""
    index: dict[str, int] = {}
    duplicates: set[str] = set()
    for i, name in enumerate(header):
        if name in index:
            duplicates.add(name)
        index.setdefault(name, i)
    return index, duplicates


def _column_problem(where: str, column: str, index: dict[str, int], duplicates: set[str], header: list[str],
                    in_file: str = "") -> tuple[str, bool] | None:
    """A problem with a column the mapping names (and whether it is unknown), or None."""
    if column in duplicates:
        return f"{where}: the file{in_file} has more than one column {column!r}", False
    if column not in index:
        close = difflib.get_close_matches(column, header, n=1, cutoff=0.75)
        return (f"{where}: unknown column {column!r}{in_file}" + (f" (did you mean {close[0]!r}?)" if close else ""),
                True)
    return None


class _Table:
    """A lookup file, read once: its rows by their trimmed key (the first of a duplicate key)."""

    def __init__(self, name: str, spec: LookupSpec, base_dir: Path):
        # The export's own reader (BOM, delimiter detection); imported here because the
        # importer imports this module.
        from leadflow_infra.importer import CsvError, CsvSource

        self.name = name
        self.label = spec.file
        path = Path(spec.file)
        self.path = path if path.is_absolute() else base_dir / path
        try:
            source = CsvSource(self.path)
            self.header = source.header
            self.index, self.duplicates = _header_index(self.header)
            self.rows: dict[str, list[str]] = {}
            key = self.index.get(spec.key)
            if key is not None and spec.key not in self.duplicates:
                for _, cells in source.rows():
                    text = cells[key].strip() if key < len(cells) else ""
                    if text:
                        self.rows.setdefault(text, cells)
            self.sha256 = source.sha256()
        except CsvError as exc:
            raise MappingError([f"lookups.{name}.file: {exc}"]) from None
        except OSError as exc:
            raise MappingError([f"lookups.{name}.file: cannot read {self.path}: {exc.strerror or exc}"]) from None


class _Record:
    """One CSV record being mapped, with the lookup rows it joins (found once each)."""

    __slots__ = ("cells", "joined")

    def __init__(self, cells: list[str]):
        self.cells = cells
        self.joined: dict[str, list[str] | None] = {}


def _named(spec: ValueSpec | None, column: str | None = None) -> str | None:
    """The column a value was read from, as a rejection names it (`accounts.employees` for
    a lookup's); every listed column when `column` (the one chosen) is not known."""
    if spec is None or spec.column is None:
        return None
    columns = [column] if column is not None else spec.column_list
    return ", ".join(f"{spec.lookup}.{c}" if spec.lookup else c for c in columns)


class RowMapper:
    """A mapping bound to a file's header (and its lookup files, read from `base_dir`, the
    directory of the file being imported; the current directory when not given). Raises
    MappingError when the mapping names a column the file or a lookup file does not have,
    or a lookup file cannot be read."""

    def __init__(self, mapping: ImportMapping, header: list[str], *, source: str | None = None,
                 base_dir: str | Path | None = None):
        self.mapping = mapping
        self.header = [h.strip() for h in header]
        self._index, duplicates = _header_index(self.header)
        problems = mapping.lookup_problems()  # parse_mapping has refused these already
        hints = []
        unknown = False
        for where, column in mapping.references():
            problem = _column_problem(where, column, self._index, duplicates, self.header)
            if problem is not None:
                problems.append(problem[0])
                unknown = unknown or problem[1]
        if unknown:
            hints.append("the file's columns: " + ", ".join(repr(h) for h in self.header))
        directory = Path(base_dir) if base_dir is not None else Path(".")
        self._tables: dict[str, _Table] = {}
        for name, spec in mapping.lookups.items():
            try:
                self._tables[name] = _Table(name, spec, directory)
            except MappingError as exc:
                problems.extend(exc.problems)
        unknown_in: dict[str, _Table] = {}
        for where, name, column in mapping.lookup_references():
            table = self._tables.get(name)
            if table is None:
                continue  # an unknown lookup, or one whose file cannot be read: reported above
            problem = _column_problem(where, column, table.index, table.duplicates, table.header,
                                      f" in {table.label}")
            if problem is not None:
                problems.append(problem[0])
                if problem[1]:
                    unknown_in.setdefault(table.label, table)
        for label, table in unknown_in.items():
            hints.append(f"{label}'s columns: " + ", ".join(repr(h) for h in table.header))
        if problems:
            raise MappingError(problems, source=source, hint="\n".join(hints) or None)
        self._nulls = frozenset(v.strip().casefold() for v in mapping.null_values)
        # Where a value comes from, for naming the column when the event check refuses it.
        self._columns: dict[str, str] = {}
        for target, spec in [("email", mapping.email)] + [(f"traits.{n}", s) for n, s in mapping.traits.items()]:
            named = _named(spec)
            if named is not None:
                self._columns[target] = named

    def digest(self) -> str:
        """The mapping's digest, with the content of its lookup files (the mapping's own
        digest when it has none)."""
        if not self._tables:
            return self.mapping.digest()
        files = {name: table.sha256 for name, table in self._tables.items()}
        canon = json.dumps({"mapping": self.mapping.digest(), "lookups": files}, sort_keys=True,
                           separators=(",", ":"))
        return hashlib.sha256(canon.encode()).hexdigest()

    # -- reading cells

    def _clean(self, text: str) -> str | None:
        text = text.strip()
        if not text or text.casefold() in self._nulls:
            return None
        return text

    def _cell(self, cells: list[str], column: str) -> str | None:
        i = self._index[column]
        return self._clean(cells[i]) if i < len(cells) else None  # a short record: its missing cells are empty

    def _joined(self, record: _Record, name: str) -> list[str] | None:
        """The lookup file's row that `name` joins to this record (None: no match)."""
        if name not in record.joined:
            on = self._value(self.mapping.lookups[name].on, record, f"lookups.{name}.on", "text")
            record.joined[name] = self._tables[name].rows.get(on.strip()) if on is not None else None
        return record.joined[name]

    def _source(self, spec: ValueSpec, record: _Record) -> tuple[str | None, str | None]:
        """The first non-empty cell of a column spec, and its column."""
        if spec.lookup is None:
            cells, index = record.cells, self._index
        else:
            joined = self._joined(record, spec.lookup)
            if joined is None:
                return None, None
            cells, index = joined, self._tables[spec.lookup].index
        for column in spec.column_list:
            i = index[column]
            cell = self._clean(cells[i]) if i < len(cells) else None
            if cell is not None:
                return cell, column
        return None, None

    def _value(self, spec: ValueSpec | None, record: _Record, where: str, kind: str | None = None) -> Any:
        """The spec's value for this row (None when empty). Raises RowRejected."""
        if spec is None:
            return None
        target = spec.type or (kind if kind in ("date", "number", "text") else None)
        column: str | None = None
        if spec.value is not None:
            value: Any = spec.value
        elif spec.template is not None:
            pieces = []
            for is_column, text in spec._parts:
                if is_column:
                    cell = self._cell(record.cells, text)
                    if cell is None:
                        return None
                    pieces.append(cell)
                else:
                    pieces.append(text)
            value = "".join(pieces)
        else:
            value, column = self._source(spec, record)
            if value is None:
                if spec.if_empty is None:
                    return None
                value = spec.if_empty  # as written: not mapped
            elif spec.map is not None:
                found, mapped = spec.mapped(value)
                if found:
                    value = mapped
                elif "default" in spec.model_fields_set:
                    value = spec.default
                elif spec.map_missing == "empty":
                    return None
                if value is None:
                    return None
        try:
            return _convert(value, target, spec.format)
        except ValueError as exc:
            raise RowRejected(_named(spec, column) if column else where, f"{where}: {exc}: {_shown(value)}") from None

    def _text(self, spec: ValueSpec | None, record: _Record, where: str) -> str | None:
        return self._value(spec, record, where, "text")

    def _date(self, spec: ValueSpec | None, record: _Record, where: str) -> datetime | None:
        return self._value(spec, record, where, "date")

    def _matches(self, when: WhenSpec, cells: list[str], where: str) -> bool:
        cell = self._cell(cells, when.column)
        name, wanted = when.condition
        if name == "present":
            return (cell is not None) == wanted
        if cell is None:
            return name == "not_in"
        if name in ("equals", "in", "not_in"):
            options = wanted if isinstance(wanted, list) else [wanted]
            hit = any(_same(cell, option) for option in options)
            return hit if name != "not_in" else not hit
        try:
            number = parse_number(cell)
        except ValueError:
            raise RowRejected(when.column, f"{where}: not a number: {_shown(cell)}") from None
        compare: dict[str, Callable[[float, float], bool]] = {
            "gt": lambda a, b: a > b, "gte": lambda a, b: a >= b, "lt": lambda a, b: a < b, "lte": lambda a, b: a <= b,
        }
        return compare[name](number, wanted)

    # -- one row

    def row_key(self, cells: list[str]) -> str:
        parts = []
        for column in self.mapping.key:
            cell = self._cell(cells, column)
            if cell is None:
                raise RowRejected(column, "key: empty; every row needs its key" +
                                  (" (all of the key's columns)" if len(self.mapping.key) > 1 else ""))
            parts.append(cell)
        # One column: its value. Several: a JSON list, so no two keys can run together.
        return parts[0] if len(parts) == 1 else json.dumps(parts, ensure_ascii=False, separators=(",", ":"))

    def map_row(self, row: int, cells: list[str], *, now: datetime) -> dict[str, Any]:
        """One import row (`{"row", "key", "events", "stage", "stage_at", "outcome", "owner"}`).
        `now` is the time of a row's events when the mapping gives none. Raises RowRejected."""
        m = self.mapping
        key = self.row_key(cells)
        record = _Record(cells)
        email = self._text(m.email, record, "email")
        if email is None:
            raise RowRejected(_named(m.email) or "email", "email: empty; a row without an email cannot be imported")
        email = normalise_email(email)
        occurred = self._date(m.occurred_at, record, "occurred_at") or now
        traits = {}
        for name, spec in m.traits.items():
            value = self._value(spec, record, f"traits.{name}")
            if value is not None:
                traits[name] = _json_value(value)
        identify = _event(event_id(m.name, key, 0), "identify", occurred, email, traits=traits)
        self._check(identify, None)
        events = [identify]
        for i, spec in enumerate(m.events):
            where = f"events[{i}]"
            if spec.when is not None and not self._matches(spec.when, cells, f"{where}.when"):
                continue
            kind = self._text(spec.type, record, f"{where}.type")
            if kind is None:
                continue
            at = self._date(spec.occurred_at, record, f"{where}.occurred_at") or occurred
            properties = {}
            for name, value_spec in spec.properties.items():
                value = self._value(value_spec, record, f"{where}.properties.{name}")
                if value is not None:
                    properties[name] = _json_value(value)
            event = _event(event_id(m.name, key, i + 1), kind, at, email, properties=properties)
            self._check(event, i)
            events.append(event)
        stage = self._text(m.stage, record, "stage")
        if stage is not None:
            stage = stage.casefold()
            if stage not in STAGES:
                raise RowRejected(_named(m.stage) or "stage",
                                  f"stage: not a stage: {_shown(stage)}; expected one of {', '.join(STAGES)}")
        stage_at = self._date(m.stage_at, record, "stage_at") if stage is not None else None
        return {
            "row": row,
            "key": f"import:{m.name}:{key}",
            "events": events,
            "stage": stage,
            "stage_at": _iso(stage_at) if stage_at else None,
            "outcome": self._outcome(record, occurred),
            "owner": self._text(m.owner, record, "owner"),
        }

    def _outcome(self, record: _Record, occurred: datetime) -> dict[str, Any] | None:
        spec = self.mapping.outcome
        if spec is None:
            return None
        result = self._text(spec.result, record, "outcome.result")
        if result is None:
            return None
        if result.casefold() not in ("won", "lost"):
            raise RowRejected(_named(spec.result) or "outcome.result",
                              f"outcome.result: expected won or lost: {_shown(result)}")
        at = self._date(spec.at, record, "outcome.at") or occurred
        return {"result": result.casefold(), "at": _iso(at),
                "reason": self._text(spec.reason, record, "outcome.reason"),
                "value": self._value(spec.value, record, "outcome.value", "number")}

    def _check(self, event: dict[str, Any], index: int | None) -> None:
        """The server's own event check, run here so that a bad email, a type that is no
        event type or an oversized value is refused with its column named, without a
        round trip. `index` is the mapping's events[index] (None: the identify event)."""
        try:
            CanonicalEvent.model_validate(event)
        except ValidationError as exc:
            field = validation_details(exc)[0]["field"]
            reason = validation_details(exc)[0]["reason"]
            if index is None or field == "email":
                where, column = field, self._columns.get(field)
            else:
                spec = self.mapping.events[index]
                where = f"events[{index}].{field}"
                source = spec.type if field == "type" else spec.properties.get(field.removeprefix("properties."))
                column = _named(source)
            raise RowRejected(column or where, f"{where}: {reason}") from None


def _same(cell: str, option: Any) -> bool:
    """A `when` comparison: numbers as numbers, true/false as booleans, text like a map key."""
    if isinstance(option, bool):
        try:
            return parse_boolean(cell) == option
        except ValueError:
            return False
    if isinstance(option, (int, float)):
        try:
            return parse_number(cell) == option
        except ValueError:
            return False
    option = str(option).strip()
    return cell == option or cell.casefold() == option.casefold()


def _json_value(value: Any) -> Any:
    return _iso(value) if isinstance(value, datetime) else value


def _event(event_id_: str, kind: str, at: datetime, email: str, *, traits: dict | None = None,
           properties: dict | None = None) -> dict[str, Any]:
    return {"event_id": event_id_, "type": kind, "occurred_at": _iso(at), "email": email,
            "properties": properties or {}, "traits": traits or {}}
