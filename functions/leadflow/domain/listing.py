"""Lead lists: which index answers a list query, what each lead writes to those indexes,
and the opaque cursor that resumes a list where its page ended.

Every list is served by an index, never by scanning the table. A lead item carries the
keys of each index it belongs to (written with the lead's own write; the indexes project
keys only, so a write that changes none of these keys costs the indexes nothing):

- every known lead, by creation time;
- by stage, by the time it entered the stage (the funnel's index);
- by owner, and by first-touch source, by creation time;
- for search, by its email, its name ("first last" and "last first"), its company and its
  email's domain, each normalised (case and accents folded) and partitioned by its first
  two characters, so a search is a prefix range read in one partition per field.

A query uses one index (the most selective of what it asks: search, owner, source, stage,
else all) and checks the other filters on the leads that index returns. The index walk is
bounded per request; a page may hold fewer than ``limit`` leads while ``next_cursor``
says there is more to read.
"""

from __future__ import annotations

import base64
import binascii
import json
import unicodedata
from dataclasses import dataclass
from typing import Any

from leadflow.domain.errors import InvalidInput
from leadflow.domain.inputs import unsafe_character
from leadflow.domain.lead import Lead
from leadflow.domain.stages import STAGES

DEFAULT_LIMIT = 25
MAX_LIMIT = 100
MAX_QUERY = 100
MIN_QUERY = 2
SORTS = ("newest", "oldest")

# index name -> (partition attribute, sort attribute). The names are the template's.
# Every lead write carries these attributes, and an item's size (names included) is what
# each write bills, by the KB: they are kept short. The three list indexes share one sort
# attribute; the email index sorts on the lead's own `email`; a search index's partition is
# its value's first two characters, its sort key the value itself (DynamoDB orders equal
# sort keys by the table's key, which a page's last key carries).
INDEXES: dict[str, tuple[str, str]] = {
    "GSI1": ("GSI1PK", "GSI1SK"),  # stage, by stage entry (the funnel's)
    "GSI2": ("LL", "LC"),  # every known lead, by creation
    "GSI3": ("LO", "LC"),  # by owner, by creation
    "GSI4": ("LS", "LC"),  # by first-touch source, by creation
    "GSI5": ("XE", "email"),  # search: email
    "GSI6": ("XN", "YN"),  # search: name, first last
    "GSI7": ("XR", "YR"),  # search: name, last first
    "GSI8": ("XC", "YC"),  # search: company
    "GSI9": ("XD", "YD"),  # search: email domain
}
SEARCH_INDEXES = (("GSI5", "email"), ("GSI6", "name"), ("GSI7", "name_reversed"), ("GSI8", "company"),
                  ("GSI9", "domain"))
# Attributes a lead item carries only for the list indexes (the store strips them on read).
INDEX_ATTRIBUTES = frozenset(name for index, keys in INDEXES.items() if index != "GSI1" for name in keys) - {"email"}
ALL_LEADS = "L"  # GSI2's one partition
NO_SOURCE = "direct"  # a lead whose first touch carried no source, medium or referrer


def stage_partition(stage: str) -> str:
    """The stage index's partition (the funnel counts it too)."""
    return f"STAGE#{stage}"


def fold(text: str) -> str:
    """Text as search compares it: compatibility forms, case and accents folded, spaces
    collapsed ("  Émile  Zola " -> "emile zola")."""
    decomposed = unicodedata.normalize("NFKD", text)
    bare = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(bare.casefold().split())


def search_terms(lead: Lead) -> dict[str, str]:
    """The lead's searchable values, folded: field -> value (absent when empty)."""
    traits = lead.traits or {}
    first = fold(str(traits.get("first_name") or ""))
    last = fold(str(traits.get("last_name") or ""))
    email = fold(lead.email or "")
    terms = {
        # The email index sorts on the stored address: searchable when folding leaves it as is
        # (every ASCII address; an accented one is found by its name, company or domain).
        "email": email if email == lead.email else "",
        "name": " ".join(p for p in (first, last) if p),
        "name_reversed": " ".join(p for p in (last, first) if p) if last and first else "",
        "company": fold(str(traits.get("company") or "")),
        "domain": fold(lead.email.rsplit("@", 1)[1]) if lead.email and "@" in lead.email else "",
    }
    return {field: value[:200] for field, value in terms.items() if value}


def source_of(lead: Lead) -> str:
    touch = lead.first_touch
    if touch is None:
        return NO_SOURCE
    return fold(touch.source or touch.medium or touch.referrer or NO_SOURCE)[:100] or NO_SOURCE


def created_key(lead: Lead) -> str:
    """The list indexes' sort key: creation time in epoch milliseconds, fixed width (13
    digits sort as numbers until the year 2286); leads created in the same millisecond
    follow their ids."""
    return f"{int(lead.created_at.timestamp() * 1000):013d}"


def index_keys(lead: Lead) -> dict[str, str]:
    """The list indexes' keys a known lead's item carries (the stage index's are the
    store's own: they predate lists; the email index's sort key is the item's `email`)."""
    keys = {"LL": ALL_LEADS, "LC": created_key(lead), "LS": source_of(lead)}
    if lead.owner:
        keys["LO"] = lead.owner
    terms = search_terms(lead)
    for index, field in SEARCH_INDEXES:
        value = terms.get(field)
        if value:
            pk, sk = INDEXES[index]
            keys[pk] = value[:MIN_QUERY]
            if sk != "email":
                keys[sk] = value
    return keys


@dataclass(frozen=True)
class ListQuery:
    stage: str | None = None
    owner: str | None = None
    source: str | None = None
    q: str | None = None  # folded
    sort: str = "newest"
    limit: int = DEFAULT_LIMIT

    def filters(self) -> dict[str, str]:
        return {k: v for k, v in (("stage", self.stage), ("owner", self.owner), ("source", self.source),
                                  ("q", self.q)) if v}


def parse_list_query(params: dict[str, str]) -> ListQuery:
    """The query string of `GET /v1/leads` (without `email`), or InvalidInput naming the
    parameter: unknown parameters, stages and sorts are refused, never ignored."""
    allowed = {"stage", "owner", "source", "q", "sort", "limit", "cursor"}
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise InvalidInput(f"{unknown[0]}: unknown parameter; expected one of {', '.join(sorted(allowed))} "
                           "(or email= to find one lead)", field=unknown[0])
    values: dict[str, Any] = {}
    for name in ("stage", "owner", "source", "q", "sort", "limit"):
        raw = params.get(name)
        if raw is None:
            continue
        raw = raw.strip()
        bad = unsafe_character(raw, invisible=True)
        if bad:
            raise InvalidInput(f"{name}: contains an invisible or control character ({bad})", field=name)
        if not raw or len(raw) > (MAX_QUERY if name == "q" else 200):
            raise InvalidInput(f"{name}: give 1 to {MAX_QUERY if name == 'q' else 200} characters", field=name)
        values[name] = raw
    if "stage" in values and values["stage"] not in STAGES:
        raise InvalidInput(f"stage: unknown stage {values['stage']!r}; expected one of {', '.join(STAGES)}",
                           field="stage")
    if "sort" in values:
        if values["sort"] not in SORTS:
            raise InvalidInput(f"sort: expected one of {', '.join(SORTS)}", field="sort")
        if "q" in values:
            raise InvalidInput("sort: a search is ordered by the matched value; leave sort out", field="sort")
    if "limit" in values:
        if not values["limit"].isdigit() or not 1 <= int(values["limit"]) <= MAX_LIMIT:
            raise InvalidInput(f"limit: a whole number from 1 to {MAX_LIMIT}", field="limit")
        values["limit"] = int(values["limit"])
    if "q" in values:
        values["q"] = fold(values["q"])
        if len(values["q"]) < MIN_QUERY:
            raise InvalidInput(f"q: search for at least {MIN_QUERY} characters", field="q")
    if "source" in values:
        values["source"] = fold(values["source"])
    return ListQuery(**values)


def matches(lead: Lead, query: ListQuery) -> bool:
    """Whether the lead satisfies every filter of the query (the index used answers one)."""
    if not lead.known or lead.merged_into:
        return False
    if query.stage and lead.stage != query.stage:
        return False
    if query.owner and lead.owner != query.owner:
        return False
    if query.source and source_of(lead) != query.source:
        return False
    return not query.q or matched_field(lead, query.q) is not None


def matched_field(lead: Lead, q: str) -> str | None:
    """The first search field (in index order) whose value starts with `q`, or None."""
    terms = search_terms(lead)
    return next((field for _, field in SEARCH_INDEXES if terms.get(field, "").startswith(q)), None)


@dataclass(frozen=True)
class Step:
    """One index read of a query's plan."""

    index: str
    partition: str
    prefix: str | None = None
    field: str | None = None  # the search field this index holds


def plan(query: ListQuery) -> list[Step]:
    """The index reads that answer the query, in order: the most selective filter's index
    (search, owner, source, stage), else every lead by creation."""
    if query.q:
        q = query.q
        return [Step(index, q[:MIN_QUERY], q, field) for index, field in SEARCH_INDEXES]
    if query.owner:
        return [Step("GSI3", query.owner)]
    if query.source:
        return [Step("GSI4", query.source)]
    if query.stage:
        return [Step("GSI1", stage_partition(query.stage))]
    return [Step("GSI2", ALL_LEADS)]


# -- the cursor ------------------------------------------------------------------------------


def encode_cursor(position: dict[str, Any]) -> str:
    """Opaque to clients: where the next page starts (the index being read and its last key)."""
    text = json.dumps(position, separators=(",", ":"), sort_keys=True)
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, query: ListQuery) -> dict[str, Any]:
    """The position a cursor of this same query holds, or InvalidInput (field `cursor`)."""
    def refuse() -> InvalidInput:
        return InvalidInput("cursor: not a cursor of this list; send next_cursor as it came, with the same "
                            "filters", field="cursor")

    if len(cursor) > 2000:
        raise refuse()
    try:
        position = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise refuse() from None
    if not isinstance(position, dict) or position.get("f") != fingerprint(query):
        raise refuse()
    index, start = position.get("i"), position.get("k")
    if index not in INDEXES or not (start is None or _is_key(start, index)):
        raise refuse()
    return position


def fingerprint(query: ListQuery) -> str:
    """Which query a cursor belongs to: a cursor resumes only the list it came from."""
    import hashlib

    text = json.dumps([query.filters(), query.sort], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _is_key(start: Any, index: str) -> bool:
    names = {"PK", "SK", *INDEXES[index]}
    return (isinstance(start, dict) and set(start) == names
            and all(isinstance(v, str) and 0 < len(v) <= 1100 for v in start.values()))
