"""Make moto's DynamoDB cost what DynamoDB's does: a page per Scan page, not a table.

Three costs grow wrongly in moto and dominate the local stack's time, and a fourth is
paid again on every request:

**Scan.** moto answers every Scan page by sorting every item of the table (comparing its own
key objects in Python) and then walking from the first item to the page's
``ExclusiveStartKey``, hashing each item's partition key on the way to test its
segment. A full scan is quadratic: at 100,000 leads a re-score run spent hours in
moto. Real DynamoDB reads a page in time proportional to the page.

This keeps, per table, the keys in scan order with each key's segment hash, and
rebuilds that list only when the table's set of keys changes (a new item or a
deletion; an update of an existing item changes no key). A page is then a binary
search for the start key and a walk over the page's own items. Items are read from
the table at scan time, so an update is always seen. Everything else (legacy scan
filters, filter expressions, projections, the 1 MB page limit, the last evaluated
key) follows moto's own code, and index scans are left to moto.

**Item size.** moto checks the 400 KB item limit on every attribute it sets by sizing the
whole item again (``LimitedSizeDict.__setitem__``), so building an item costs the square
of its attribute count: most of a lead's PutItem, nothing of an UpdateItem of two
attributes. A new item is built here with one running total, checked before each
attribute as moto checks it (same limit, same error at the same attribute); setting an
attribute later (an update) still goes through moto's check.

**Responses.** moto serialises every response by walking botocore's model, and for
each of the ten members of an ``AttributeValue`` (S, N, B, M, L…) asks a picker that
tries several spellings of the name: ten lookups, most of them misses, for every
attribute of every item returned. An item of 60 attributes cost about 14 ms to send.
Here an ``AttributeValue`` that is already in wire form (moto's ``dynamo_to_dict``
output: exactly one member name as key) serialises only the members it has, through
the serializer's own code for each member, so bytes, sets and nesting come out as
before. Anything else takes moto's path.

**Routing.** For every request moto lists its own package directory to find the
service, and inspects the handler class for its action methods. Both are worked out
once per process here.

Installed by the local stack next to :func:`make_dynamodb_atomic`, whose lock every
backend operation already holds, so the cache never sees a table mid-change.
"""

from __future__ import annotations

import bisect
import copy
import functools
from hashlib import md5
from typing import Any

# moto's limit (DynamoDB's 400 KB, measured between 409 and 410 KB by moto's authors).
ITEM_SIZE_LIMIT = 405_000
_GENERATION = "_leadflow_keys_generation"
_CACHE = "_leadflow_scan_order"


def _bump(table: Any) -> None:
    setattr(table, _GENERATION, getattr(table, _GENERATION, 0) + 1)


def _segment_byte(hash_key: Any) -> int:
    # moto's Item.is_within_segment: the first byte of the md5 of the partition key.
    return md5(hash_key.value.encode("utf8")).digest()[0]


def _scan_order(table: Any) -> tuple[list[tuple[Any, ...]], list[tuple[Any, Any, int]]]:
    """(sort keys, [(hash key, range key or None, segment byte)]) in moto's scan order."""
    generation = getattr(table, _GENERATION, 0)
    cached = getattr(table, _CACHE, None)
    if cached is not None and cached[0] == generation:
        return cached[1], cached[2]
    rows: list[tuple[tuple[Any, ...], Any, Any, int]] = []
    if table.range_key_attr:
        for hash_key, by_range in table.items.items():
            if not by_range:  # moto's defaultdict leaves an empty partition behind a miss
                continue
            segment = _segment_byte(hash_key)
            hash_value = hash_key.cast_value
            for range_key in by_range:
                rows.append(((hash_value, range_key.cast_value), hash_key, range_key, segment))
    else:
        for hash_key in table.items:
            rows.append(((hash_key.cast_value,), hash_key, None, _segment_byte(hash_key)))
    rows.sort(key=lambda row: row[0])
    keys = [row[0] for row in rows]
    entries = [(row[1], row[2], row[3]) for row in rows]
    setattr(table, _CACHE, (generation, keys, entries))
    return keys, entries


def _start_position(table: Any, keys: list[tuple[Any, ...]], exclusive_start_key: dict[str, Any] | None) -> int:
    if exclusive_start_key is None:
        return 0
    from moto.dynamodb.models.dynamo_type import DynamoType

    start = [DynamoType(exclusive_start_key[table.hash_key_attr]).cast_value]
    if table.range_key_attr:
        start.append(DynamoType(exclusive_start_key[table.range_key_attr]).cast_value)
    return bisect.bisect_right(keys, tuple(start))


def _passes(item: Any, filters: dict[str, Any]) -> bool:
    # moto's legacy ScanFilter check, as written in Table.scan.
    for attribute_name, (comparison_operator, comparison_objs) in filters.items():
        attribute = item.attrs.get(attribute_name)
        if attribute:
            if not attribute.compare(comparison_operator, comparison_objs):
                return False
        elif comparison_operator == "NULL":
            continue
        else:
            return False
    return True


def make_moto_fast() -> None:
    """Install all four (idempotent). moto's versions stay reachable as ``__wrapped__``."""
    _make_scan_fast()
    _make_attribute_values_fast()
    _make_item_size_check_linear()
    _make_dispatch_cheap()


def _make_dispatch_cheap() -> None:
    """To route every request, moto lists its own package directory (a stat of each of
    about 150 entries) and inspects the handler class for its actions; neither changes
    while a process runs, so each is worked out once (about a tenth of the server's time
    per request under ingest)."""
    import moto.backends as backends
    import moto.core.responses as responses

    if getattr(backends, "_leadflow_cached", False):
        return
    original_modules = backends.list_of_moto_modules
    modules = tuple(original_modules())

    @functools.wraps(original_modules)
    def list_of_moto_modules() -> tuple[str, ...]:
        return modules

    original_names = responses.method_names_from_class
    names_of: dict[type, tuple[str, ...]] = {}

    @functools.wraps(original_names)
    def method_names_from_class(clazz: Any) -> list[str]:
        names = names_of.get(clazz)
        if names is None:
            names = names_of[clazz] = tuple(original_names(clazz))
        return list(names)

    backends.list_of_moto_modules = list_of_moto_modules
    responses.method_names_from_class = method_names_from_class
    backends._leadflow_cached = True


def _make_item_size_check_linear() -> None:
    from moto.dynamodb.exceptions import ItemSizeTooLarge
    from moto.dynamodb.models.dynamo_type import DynamoType, Item, LimitedSizeDict
    from moto.dynamodb.models.utilities import bytesize

    if getattr(Item, "_leadflow_linear_size", False):
        return
    original = Item.__init__

    @functools.wraps(original)
    def __init__(self: Any, hash_key: Any, range_key: Any, attrs: dict[str, Any]) -> None:
        self.hash_key = hash_key
        self.range_key = range_key
        built = LimitedSizeDict.__new__(LimitedSizeDict)
        dict.__init__(built)
        size = 0
        for key, value in attrs.items():
            typed = DynamoType(value)
            # moto's check before each attribute: the item so far plus this one.
            size += bytesize(key) + typed.size()
            if size > ITEM_SIZE_LIMIT:
                raise ItemSizeTooLarge
            dict.__setitem__(built, key, typed)
        self.attrs = built

    Item.__init__ = __init__
    Item._leadflow_linear_size = True


def _make_attribute_values_fast() -> None:
    from moto.core.serialize import BaseJSONSerializer

    if getattr(BaseJSONSerializer, "_leadflow_fast_values", False):
        return
    original = BaseJSONSerializer._serialize_type_structure

    @functools.wraps(original)
    def serialize_structure(self: Any, serialized: Any, value: Any, shape: Any, key: str) -> None:
        members = shape.members
        if (shape.name != "AttributeValue" or not key or not isinstance(value, dict)
                or len(value) != 1 or not value.keys() <= members.keys()):
            original(self, serialized, value, shape, key)
            return
        wrapper = self.MAP_TYPE()
        for member_key, member_value in value.items():
            if member_value is not None:
                member_shape = members[member_key]
                member_shape.parent = shape
                self._serialize(wrapper, member_value, member_shape, member_key)
        self._default_serialize(serialized, wrapper, shape, key)

    BaseJSONSerializer._serialize_type_structure = serialize_structure
    BaseJSONSerializer._leadflow_fast_values = True


def _make_scan_fast() -> None:
    from moto.dynamodb.models.table import RESULT_SIZE_LIMIT, Table

    if getattr(Table, "_leadflow_fast_scan", False):
        return
    original_scan = Table.scan
    original_put = Table.put_item
    original_delete = Table.delete_item

    @functools.wraps(original_put)
    def put_item(self: Any, item_attrs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        from moto.dynamodb.models.dynamo_type import DynamoType

        existed = False
        hash_attrs = item_attrs.get(self.hash_key_attr)
        if hash_attrs is not None:
            partition = self.items.get(DynamoType(hash_attrs))
            if partition is not None and self.range_key_attr:
                range_attrs = item_attrs.get(self.range_key_attr)
                existed = range_attrs is not None and DynamoType(range_attrs) in partition
            else:
                existed = partition is not None
        item = original_put(self, item_attrs, *args, **kwargs)
        if not existed:
            _bump(self)
        return item

    @functools.wraps(original_delete)
    def delete_item(self: Any, *args: Any, **kwargs: Any) -> Any:
        item = original_delete(self, *args, **kwargs)
        if item is not None:
            _bump(self)
        return item

    @functools.wraps(original_scan)
    def scan(
        self: Any,
        filters: dict[str, Any],
        limit: int,
        exclusive_start_key: dict[str, Any],
        filter_expression: Any = None,
        index_name: str | None = None,
        consistent_read: bool = False,
        projection_expression: list[list[str]] | None = None,
        segments: tuple[None, None] | tuple[int, int] = (None, None),
    ) -> tuple[list[Any], int, dict[str, Any] | None]:
        if index_name:
            return original_scan(self, filters, limit, exclusive_start_key, filter_expression, index_name,
                                 consistent_read, projection_expression, segments=segments)
        keys, entries = _scan_order(self)
        segment, total_segments = segments
        results: list[Any] = []
        result_size = 0
        scanned_count = 0
        last_evaluated_key = None
        for position in range(_start_position(self, keys, exclusive_start_key), len(entries)):
            hash_key, range_key, segment_byte = entries[position]
            if total_segments is not None and segment_byte % total_segments != segment:
                continue
            partition = self.items.get(hash_key)
            item = partition.get(range_key) if range_key is not None and partition is not None else partition
            if item is None:  # pragma: no cover - the key set changed without put/delete
                continue
            if len(results) == limit or result_size + item.size() > RESULT_SIZE_LIMIT:
                last_evaluated_key = self._get_last_evaluated_key(results[-1], index_name)
                break
            if _passes(item, filters):
                results.append(copy.deepcopy(item))
                result_size += item.size()
            scanned_count += 1
        if filter_expression is not None:
            results = [item for item in results if filter_expression.expr(item)]
        if projection_expression:
            results = [item.project(projection_expression) for item in results]
        return results, scanned_count, last_evaluated_key

    Table.put_item = put_item
    Table.delete_item = delete_item
    Table.scan = scan
    Table._leadflow_fast_scan = True
