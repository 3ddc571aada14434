"""What every route accepts, checked once at the edge: JSON that is not nested without
end, numbers DynamoDB can store, text without control characters or broken Unicode,
times inside a sane range, emails that are one visible address.

Anything else is a 4xx naming the field before anything is written: a value that passed
here cannot fail later in a stream batch, in DynamoDB or in a rebuild.
"""

from __future__ import annotations

import json
import math
import unicodedata
from datetime import datetime, timezone
from typing import Any

from leadflow.domain.errors import BadRequest, InvalidInput

# DynamoDB nests documents at most 32 levels; nothing we accept needs more than a few.
MAX_DEPTH = 32
# DynamoDB numbers: 38 significant digits, magnitude 1E-130 to 9.99…E+125.
MAX_DIGITS = 38
MAX_MAGNITUDE = 1e126
MIN_MAGNITUDE = 1e-130
# Before the Unix epoch nothing we score happened; after year 9999 nothing can be stored.
EARLIEST = datetime(1970, 1, 1, tzinfo=timezone.utc)

# Control characters a person can type or paste into text: tab and line breaks.
_TEXT_CONTROLS = frozenset("\t\n\r")
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cs", "Co", "Cn"})  # control, lone surrogate, private use, unassigned
_INVISIBLE_CATEGORIES = _UNSAFE_CATEGORIES | {"Cf", "Zl", "Zp"}  # + format (zero-width, bidi, BOM), separators


_NOT_NUMBERS = "NaN and infinities are not numbers"
_OUT_OF_RANGE = f"is outside the numbers that can be stored (at most {MAX_DIGITS} digits, magnitude 1e-130 to 1e126)"


class Unstorable:
    """A JSON number DynamoDB cannot store (or NaN, Infinity), kept as its literal until
    its field is known: it is refused there, naming the field."""

    __slots__ = ("literal",)

    def __init__(self, literal: str) -> None:
        self.literal = literal

    @property
    def reason(self) -> str:
        if self.literal.lstrip("-") in ("NaN", "Infinity"):
            return f"{self.literal}: {_NOT_NUMBERS}"
        return f"{self.literal[:40]} {_OUT_OF_RANGE}"


def _integer(literal: str) -> int | Unstorable:
    digits = literal.lstrip("-").lstrip("0")
    return Unstorable(literal) if len(digits) > MAX_DIGITS else int(literal)


def _float(literal: str) -> float | Unstorable:
    value = float(literal)
    if value == 0 and any(digit in "123456789" for digit in literal.lower().partition("e")[0]):
        return Unstorable(literal)  # 1e-400 is not zero, though a float rounds it to zero
    return value if storable_number(value) else Unstorable(literal)


def parse_json(raw: str | bytes, *, field: str = "body", numbers: bool = True) -> Any:
    """`raw` parsed as JSON, or BadRequest (400) for text that is not JSON, not UTF-8 or
    nested deeper than MAX_DEPTH; InvalidInput (422) naming the field for NaN, Infinity or
    a number DynamoDB cannot store. With `numbers=False` such a number stays in the
    document as an `Unstorable` for the caller's own validation to refuse (an import
    refuses the row, not the batch)."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest(f"{field} is not valid UTF-8", field=field) from None
    try:
        document = json.loads(raw, parse_int=_integer, parse_float=_float, parse_constant=Unstorable)
    except RecursionError:
        raise BadRequest(f"{field}: JSON nested deeper than {MAX_DEPTH} levels", field=field) from None
    except ValueError as exc:
        raise BadRequest(f"malformed JSON: {exc}", field=field) from None
    _check_tree(document, field, numbers)
    return document


def _check_tree(document: Any, field: str, numbers: bool) -> None:
    stack: list[tuple[Any, str, int]] = [(document, "", 0)]
    while stack:
        node, path, depth = stack.pop()
        if isinstance(node, (dict, list)):
            if depth >= MAX_DEPTH:
                raise BadRequest(f"{field}: JSON nested deeper than {MAX_DEPTH} levels", field=field)
            items = node.items() if isinstance(node, dict) else enumerate(node)
            for key, child in items:
                child_path = f"{path}.{key}" if isinstance(key, str) else f"{path}[{key}]"
                stack.append((child, child_path.lstrip("."), depth + 1))
        elif numbers and isinstance(node, Unstorable):
            where = path or field
            raise InvalidInput(f"{where}: {node.reason}", field=where)


def storable_number(value: int | float) -> bool:
    """Whether DynamoDB can store `value` exactly as given (finite, in range, ≤ 38 digits)."""
    if isinstance(value, bool):
        return True
    if isinstance(value, int):
        return abs(value) < 10 ** MAX_DIGITS
    if not math.isfinite(value):
        return False
    magnitude = abs(value)
    return magnitude == 0 or MIN_MAGNITUDE <= magnitude < MAX_MAGNITUDE


def number_problem(value: int | float) -> str | None:
    """Why DynamoDB cannot store `value` ("NaN and infinities are not numbers", "1e+200 is
    outside…"), or None when it can."""
    if isinstance(value, float) and not math.isfinite(value):
        return _NOT_NUMBERS
    return None if storable_number(value) else f"{value:.3g} {_OUT_OF_RANGE}"


_REPLACEMENT = "\ufffd"


def _describe(char: str) -> str:
    name = unicodedata.name(char, "")
    return f"U+{ord(char):04X}" + (f" {name}" if name else "")


def unsafe_character(text: str, *, invisible: bool = False) -> str | None:
    """The first character `text` must not hold, described ("U+200B ZERO WIDTH SPACE"), or
    None. Text may hold tabs and line breaks; with `invisible`, nothing a reader cannot
    see either (zero-width, bidirectional overrides, byte order marks) nor U+FFFD, which
    stands for bytes that were not text (a query string's broken escapes): for identities."""
    if invisible and _REPLACEMENT in text:
        return _describe(_REPLACEMENT)
    if text.isprintable():  # no "Other" or separator character at all: the common case
        return None
    banned = _INVISIBLE_CATEGORIES if invisible else _UNSAFE_CATEGORIES
    for char in text:
        if char in _TEXT_CONTROLS and not invisible:
            continue
        if unicodedata.category(char) in banned:
            return _describe(char)
    return None


def check_text(value: str) -> str:
    """`value` when it is safe text, else ValueError (for validators: pydantic names the field)."""
    bad = unsafe_character(value)
    if bad:
        raise ValueError(f"contains a control character or broken Unicode ({bad})")
    return value


def check_identity(value: str) -> str:
    """`value` when it holds nothing invisible (ids, keys, emails), else ValueError."""
    bad = unsafe_character(value, invisible=True)
    if bad:
        raise ValueError(f"contains an invisible or control character ({bad})")
    return value


def utc_in_range(value: datetime) -> datetime:
    """`value` in UTC (naive means UTC), or ValueError when it is before 1970 or cannot be
    expressed in UTC at all (year 1 east of Greenwich, year 9999 west of it)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    try:
        value = value.astimezone(timezone.utc)
    except OverflowError:
        raise ValueError("is outside the dates that can be stored") from None
    if value < EARLIEST:
        raise ValueError("is before 1970-01-01")
    return value


def query_date(value: str | None, name: str) -> datetime | None:
    """A query parameter's ISO date or date-time in UTC (None when absent), or InvalidInput
    naming the parameter."""
    if not value:
        return None
    try:
        return utc_in_range(datetime.fromisoformat(value.replace("Z", "+00:00")))
    except ValueError as exc:
        reason = str(exc) if str(exc).startswith("is ") else "is not an ISO date or date-time"
        raise InvalidInput(f"{name}: {reason}", field=name) from None


MAX_FORM_FIELDS = 200


def parse_urlencoded(body: str, *, max_fields: int = MAX_FORM_FIELDS) -> dict[str, list[str]]:
    """An `application/x-www-form-urlencoded` body as {name: [values]}. Unlike the standard
    library's parser, percent-escapes that are not UTF-8 are a 400 naming the field, not
    silently replaced by U+FFFD (which would store text nobody typed)."""
    from urllib.parse import unquote_to_bytes

    pairs = [pair for pair in body.split("&") if pair] if body else []
    if len(pairs) > max_fields:
        raise InvalidInput(f"body: {len(pairs)} fields; a form post holds at most {max_fields}", field="body")
    fields: dict[str, list[str]] = {}
    for pair in pairs:
        raw_name, _, raw_value = pair.partition("=")
        try:
            name = unquote_to_bytes(raw_name.replace("+", " ")).decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest("body: a field name is not valid UTF-8", field="body") from None
        try:
            value = unquote_to_bytes(raw_value.replace("+", " ")).decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest(f"{name[:100]}: not valid UTF-8", field=name[:100]) from None
        fields.setdefault(name, []).append(value)
    return fields
