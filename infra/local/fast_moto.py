"""Make moto's DynamoDB cost what DynamoDB's does: a page per Scan or Query page, not a table.

Four costs grow wrongly in moto and dominate the local stack's time, and a fifth is
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

**Query.** moto answers every Query page the same way: it sorts every item of the table,
keeps those whose key matches, sorts them again and walks to the start key (a page of
the lead list took 0.34 s at 5,000 leads, 0.83 s at 20,000, a stage count 17 s: see
bench/moto-query-results.md). A query of the table now
reads the key's own partition (``table.items[hash key]``), sorted. For a global secondary
index with one hash and at most one range attribute, each table keeps, per index, the
items of each index partition in moto's order (index keys, then the table's keys, which
break ties), built at the index's first query and then kept up to date: every change to
an item marks its key (a put, a delete, and the ``get_item`` through which moto reads the
item an update then changes in place), and the next query of the table re-files the
marked items. A page is then a binary search for the start key and the range
condition's bounds, and a walk over the page. The answer is moto's to the byte: the
same order, page ends and last evaluated keys (moto also ends a page at a later item
that does not match the range but would take the page past 1 MB: that is checked
where it can happen), index projection, filter expression after the limit, projection
expression. Anything else (legacy query filters, several-attribute keys, local indexes,
binary keys, consistent reads of an index, values of other types than the table
declares, an item grown in place past moto's item limit) is moto's own query.

**Item size.** moto checks the 400 KB item limit on every attribute it sets by sizing the
whole item again (``LimitedSizeDict.__setitem__``), so building an item costs the square
of its attribute count: most of a lead's PutItem, nothing of an UpdateItem of two
attributes. A new item is built here with one running total, checked before each
attribute as moto checks it (same limit, same error at the same attribute); setting an
attribute later (an update) still goes through moto's check. The total is kept on the
item for the queries (which ask every item they return its size) until an update changes it.

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

**Transactions.** moto backs up the whole table (a deep copy of every item) for each item
of a TransactWriteItems, to put it back if the transaction fails: a funnel count (a
dozen items) cost a copy of the table a dozen times. Here the conditions of every item
are checked first; a failed one cancels the transaction with moto's own errors and
nothing written. Then the items are written through moto's own put, update and delete,
with a copy of only the items touched, put back if a write still fails (an update
expression moto refuses). The backend lock makes check and writes one step.

Installed by the local stack next to :func:`make_dynamodb_atomic`, whose lock every
backend operation already holds, so the caches never see a table mid-change.
"""

from __future__ import annotations

import bisect
import copy
import decimal
import re
import functools
from hashlib import md5
from typing import Any

# moto's limit (DynamoDB's 400 KB, measured between 409 and 410 KB by moto's authors).
ITEM_SIZE_LIMIT = 405_000
_GENERATION = "_leadflow_keys_generation"
_CACHE = "_leadflow_scan_order"
_QUERY_CACHE = "_leadflow_query_indexes"
_SIZE = "_leadflow_size"


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
    """Install all six (idempotent). moto's versions stay reachable as ``__wrapped__``."""
    _make_scan_fast()
    _make_query_fast()
    _make_attribute_values_fast()
    _make_item_size_check_linear()
    _make_dispatch_cheap()
    _make_transactions_cheap()


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
        self.__dict__[_SIZE] = size  # Item.size(), which a query asks of every item it reads

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


# -- Query ---------------------------------------------------------------------------------

# Whether an item may exceed moto's item limit: only an update that grows a map, list or
# set in place (which moto does not re-check) can make one. Never unset once set.
_oversize = False
_RANGE_OPERATORS = {"=": 1, "<": 1, "<=": 1, ">": 1, ">=": 1, "BETWEEN": 2, "BEGINS_WITH": 1}
_COLLECTIONS = frozenset(("M", "L", "SS", "NS", "BS"))


def _size(item: Any) -> int:
    """``item.size()``, remembered on the item until it changes (an item is sized as it is
    built; an update in place forgets the figure)."""
    size = item.__dict__.get(_SIZE)
    if size is None:
        size = item.size()
        item.__dict__[_SIZE] = size
    return size


def _cast(value: Any) -> Any:
    # DynamoType.cast_value, without its chain of type tests for the common case.
    return value.value if value.type == "S" else value.cast_value


def _declared(table: Any, attribute: str | None) -> str | None:
    """The type AttributeDefinitions give a key attribute, if it is one this can order
    exactly (a string or a number)."""
    for definition in table.attr or ():
        if definition.get("AttributeName") == attribute:
            kind = definition.get("AttributeType")
            return kind if kind in ("S", "N") else None
    return None


def _lookup(table: Any, hash_key: Any, range_key: Any) -> Any:
    """The stored item with this key, or None (without adding a partition to moto's defaultdict)."""
    from moto.dynamodb.models.dynamo_type import Item

    partition = table.items.get(hash_key)
    if table.range_key_attr is None or partition is None:
        # A hash-only table's get_item with a range key leaves an empty dict behind.
        return partition if isinstance(partition, Item) else None
    return partition.get(range_key)


class _Partition:
    """One index partition's items in moto's query order: their sort tuples and table keys."""

    __slots__ = ("keys", "table_keys")

    def __init__(self) -> None:
        self.keys: list[tuple[Any, ...]] = []
        self.table_keys: list[tuple[Any, Any]] = []


class _Index:
    """One global secondary index of one table, kept in step with the table's items.

    ``sort_attrs`` are the attributes moto orders a query of this index by (index hash key,
    index range key, then the table's keys, which break ties on equal index keys);
    ``poisoned`` holds the items whose index keys are not of their declared types, which
    moto would compare across types: while there are any, queries go to moto."""

    def __init__(self, table: Any, index: Any, signature: tuple[Any, ...]) -> None:
        self.signature = signature
        schema = index.schema
        self.hash_attr = next(k["AttributeName"] for k in schema if k["KeyType"] == "HASH")
        ranges = [k["AttributeName"] for k in schema if k["KeyType"] == "RANGE"]
        self.range_attr = ranges[0] if ranges else None
        self.hash_type = _declared(table, self.hash_attr)
        self.range_type = _declared(table, self.range_attr) if self.range_attr else None
        # As Table.query builds them for a single-attribute index.
        if self.range_attr:
            range_attrs = [self.range_attr, table.range_key_attr]
        else:
            range_attrs = [table.range_key_attr or table.hash_key_attr, table.range_key_attr]
        self.sort_attrs = table._generate_attr_to_sort_by([self.hash_attr, table.hash_key_attr], range_attrs)
        self.partitions: dict[Any, _Partition] = {}
        self.entries: dict[tuple[Any, Any], tuple[Any, tuple[Any, ...]]] = {}
        self.poisoned: set[tuple[Any, Any]] = set()
        # Keys of other types than strings and numbers: nothing kept, every query is moto's.
        self.supported = self.hash_type is not None and (self.range_attr is None or self.range_type is not None)
        rows: dict[Any, list[tuple[tuple[Any, ...], tuple[Any, Any]]]] = {}
        for item in _all_items(table) if self.supported else ():
            key = (item.hash_key, item.range_key)
            entry = self._entry(key, item)
            if entry is not None:
                self.entries[key] = entry
                rows.setdefault(entry[0], []).append((entry[1], key))
        for value, members in rows.items():
            members.sort(key=lambda row: row[0])
            partition = self.partitions[value] = _Partition()
            partition.keys = [row[0] for row in members]
            partition.table_keys = [row[1] for row in members]

    def _entry(self, key: tuple[Any, Any], item: Any) -> tuple[Any, tuple[Any, ...]] | None:
        if not self.supported:
            return None
        attrs = item.attrs
        hash_value = attrs.get(self.hash_attr)
        if hash_value is None:
            return None
        range_value = None
        if self.range_attr is not None:
            range_value = attrs.get(self.range_attr)
            if range_value is None:
                return None  # moto indexes an item only with all of the index's keys
        if hash_value.type != self.hash_type or (range_value is not None and range_value.type != self.range_type):
            self.poisoned.add(key)
            return None
        return _cast(hash_value), tuple(_cast(attrs[name]) for name in self.sort_attrs)

    def resync(self, key: tuple[Any, Any], item: Any) -> None:
        """The item with table key ``key`` is now ``item`` (None: gone)."""
        self.poisoned.discard(key)
        old = self.entries.pop(key, None)
        if old is not None:
            partition = self.partitions[old[0]]
            position = bisect.bisect_left(partition.keys, old[1])
            del partition.keys[position], partition.table_keys[position]
            if not partition.keys:
                del self.partitions[old[0]]
        new = self._entry(key, item) if item is not None else None
        if new is not None:
            self.entries[key] = new
            partition = self.partitions.get(new[0])
            if partition is None:
                partition = self.partitions[new[0]] = _Partition()
            position = bisect.bisect_left(partition.keys, new[1])
            partition.keys.insert(position, new[1])
            partition.table_keys.insert(position, key)


def _all_items(table: Any) -> Any:
    from moto.dynamodb.models.dynamo_type import Item

    for partition in table.items.values():
        if table.range_key_attr is None:
            if isinstance(partition, Item):  # as Table.query skips what is not an item
                yield partition
        else:
            yield from partition.values()


class _QueryCache:
    """A table's kept indexes and the keys of the items changed since they were last
    brought up to date. Not copied with the table (moto copies a whole table before a
    transaction, to put it back on failure): a copy starts empty and builds its own."""

    def __init__(self) -> None:
        self.indexes: dict[str, _Index] = {}
        self.dirty: set[tuple[Any, Any]] = set()

    def __deepcopy__(self, memo: dict[int, Any]) -> "_QueryCache":
        return _QueryCache()

    def index(self, table: Any, index: Any) -> _Index:
        for key in self.dirty:
            item = _lookup(table, *key)
            for kept in self.indexes.values():
                kept.resync(key, item)
        self.dirty.clear()
        signature = (tuple((k["AttributeName"], k["KeyType"]) for k in index.schema),
                     tuple((d.get("AttributeName"), d.get("AttributeType")) for d in table.attr or ()),
                     table.hash_key_attr, table.range_key_attr)
        kept = self.indexes.get(index.name)
        if kept is None or kept.signature != signature:
            kept = self.indexes[index.name] = _Index(table, index, signature)
        return kept


def _changed(table: Any, hash_key: Any, range_key: Any) -> None:
    cache = table.__dict__.get(_QUERY_CACHE)
    if cache is not None and cache.indexes:
        cache.dirty.add((hash_key, range_key if table.range_key_attr is not None else None))


def _project_keys(index: Any, item: Any) -> Any:
    """``index.project(copy.deepcopy(item))`` for an index that projects some attributes,
    when each of them is a string (what moto's round trip through Python values gives back
    unchanged); otherwise moto's own."""
    from moto.dynamodb.models.dynamo_type import Item

    projection = index.projection or {}
    kind = projection.get("ProjectionType")
    if kind not in ("KEYS_ONLY", "INCLUDE"):
        return index.project(copy.deepcopy(item))
    names = index.table_key_attrs + [key["AttributeName"] for key in index.schema]
    if kind == "INCLUDE":
        names = names + list(projection.get("NonKeyAttributes", []))
    attrs: dict[str, Any] = {}
    for name in names:
        value = item.attrs.get(name)
        if value is None or name in attrs:
            continue
        if value.type != "S" or not isinstance(value.value, str):
            return index.project(copy.deepcopy(item))
        attrs[name] = {"S": value.value}
    return Item(copy.deepcopy(item.hash_key), copy.deepcopy(item.range_key), attrs)


def _bounds(keys: list[tuple[Any, ...]], comparison: str | None, values: list[Any]) -> tuple[int, int]:
    """The positions [lo, hi) of the items whose range key (the second element of their
    sort tuple; the first is the partition's, the same for all) meets the condition."""
    n = len(keys)
    if comparison is None:
        return 0, n

    def second(row: tuple[Any, ...]) -> Any:
        return row[1]

    value = values[0]
    if comparison == "=":
        return bisect.bisect_left(keys, value, key=second), bisect.bisect_right(keys, value, key=second)
    if comparison == "<":
        return 0, bisect.bisect_left(keys, value, key=second)
    if comparison == "<=":
        return 0, bisect.bisect_right(keys, value, key=second)
    if comparison == ">":
        return bisect.bisect_right(keys, value, key=second), n
    if comparison == ">=":
        return bisect.bisect_left(keys, value, key=second), n
    if comparison == "BETWEEN":
        lo = bisect.bisect_left(keys, value, key=second)
        return lo, max(lo, bisect.bisect_right(keys, values[1], key=second))
    # BEGINS_WITH: the strings with a prefix are contiguous, as are their truncations.
    width = len(value)

    def truncated(row: tuple[Any, ...]) -> Any:
        return row[1][:width]

    lo = bisect.bisect_left(keys, value, key=truncated)
    return lo, bisect.bisect_right(keys, value, lo=lo, key=truncated)


def _walk(keys: list[tuple[Any, ...]], fetch: Any, start: tuple[Any, ...] | None, forward: bool,
          bounds: tuple[int, int], limit: int | None, result_size_limit: int) -> tuple[list[Any], Any]:
    """moto's walk over a partition in query order, reading only what can change the answer.

    moto visits every item after the start key; before each it stops (the last result
    becoming the last evaluated key) if the page holds ``limit`` results or this item
    would take it past the result size limit, and takes it if it meets the range
    condition. Before the first match the page is empty, so nothing can stop it there
    (no item exceeds moto's item limit, ``_oversize``); after the last match it stops at
    the next item if the page is full, and otherwise only at an item too big for what is
    left of the 1 MB, which only a page fuller than 1 MB less an item can meet."""
    n = len(keys)
    lo, hi = bounds
    if forward:
        position = 0 if start is None else bisect.bisect_right(keys, start)
        matches = range(max(position, lo), hi)
        rest = range(max(position, hi), n)
    else:
        position = n - 1 if start is None else bisect.bisect_left(keys, start) - 1
        matches = range(min(position, hi - 1), lo - 1, -1)
        rest = range(min(position, lo - 1), -1, -1)
    results: list[Any] = []
    result_size = 0
    for index in matches:
        item = fetch(index)
        size = _size(item)
        if len(results) == limit or result_size + size > result_size_limit:
            return results, results[-1]
        results.append(item)
        result_size += size
    if results and rest:
        if len(results) == limit:
            return results, results[-1]
        if result_size > result_size_limit - ITEM_SIZE_LIMIT:
            for index in rest:
                if result_size + _size(fetch(index)) > result_size_limit:
                    return results, results[-1]
    return results, None


def _typed(value: Any, kind: str | None) -> bool:
    return kind is not None and getattr(value, "type", None) == kind


def _start_tuple(start: Any, attrs: list[str], kinds: list[str | None]) -> tuple[Any, ...] | None:
    """The exclusive start key as a sort tuple, or None if it is not one moto compares
    the way tuples compare (missing attributes, other types)."""
    from moto.dynamodb.models.dynamo_type import DynamoType

    if not isinstance(start, dict):
        return None
    values = []
    for name, kind in zip(attrs, kinds):
        raw = start.get(name)
        if not isinstance(raw, dict) or len(raw) != 1 or kind not in raw:
            return None
        values.append(_cast(DynamoType(raw)))
    return tuple(values)


def _make_query_fast() -> None:
    from moto.dynamodb.models.dynamo_type import DynamoType, Item
    from moto.dynamodb.models.table import RESULT_SIZE_LIMIT, GlobalSecondaryIndex, Table
    from moto.dynamodb.parsing.executors import UpdateExpressionExecutor

    if getattr(Table, "_leadflow_fast_query", False):
        return
    original_query = Table.query
    original_put = Table.put_item
    original_delete = Table.delete_item
    original_get = Table.get_item
    original_execute = UpdateExpressionExecutor.execute
    original_attribute_updates = Item.update_with_attribute_updates

    # Every change to a stored item passes here: a put replaces it, a delete removes it,
    # and an update changes in place the item it first reads with get_item (so a read
    # marks its item too, which costs a look at it at the next index query).
    @functools.wraps(original_put)
    def put_item(self: Any, item_attrs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return original_put(self, item_attrs, *args, **kwargs)
        finally:
            cache = self.__dict__.get(_QUERY_CACHE)
            if cache is not None and cache.indexes:
                hash_attrs = item_attrs.get(self.hash_key_attr)
                range_attrs = item_attrs.get(self.range_key_attr) if self.range_key_attr else None
                if isinstance(hash_attrs, dict) and (self.range_key_attr is None or isinstance(range_attrs, dict)):
                    _changed(self, DynamoType(hash_attrs), DynamoType(range_attrs) if range_attrs else None)

    @functools.wraps(original_delete)
    def delete_item(self: Any, hash_key: Any, range_key: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return original_delete(self, hash_key, range_key, *args, **kwargs)
        finally:
            _changed(self, hash_key, range_key)

    @functools.wraps(original_get)
    def get_item(self: Any, hash_key: Any, range_key: Any = None, *args: Any, **kwargs: Any) -> Any:
        _changed(self, hash_key, range_key)
        return original_get(self, hash_key, range_key, *args, **kwargs)

    @functools.wraps(original_execute)
    def execute(self: Any, node: Any = None) -> None:
        if node is not None:  # the recursion within one update
            return original_execute(self, node)
        try:
            return original_execute(self)
        finally:
            _resized(self.item)

    @functools.wraps(original_attribute_updates)
    def update_with_attribute_updates(self: Any, attribute_updates: dict[str, Any]) -> None:
        try:
            return original_attribute_updates(self, attribute_updates)
        finally:
            _resized(self)

    @functools.wraps(original_query)
    def query(
        self: Any,
        hash_key: Any,
        range_comparison: str | None,
        range_objs: list[Any],
        limit: int,
        exclusive_start_key: dict[str, Any],
        scan_index_forward: bool,
        projection_expressions: list[list[str]] | None,
        index_name: str | None = None,
        consistent_read: bool = False,
        filter_expression: Any = None,
        hash_key_conditions: list[tuple[str, Any]] | None = None,
        range_key_conditions: list[tuple[str, str, list[Any]]] | None = None,
        **filter_kwargs: Any,
    ) -> tuple[list[Any], int, dict[str, Any] | None]:
        plan = _plan(self, hash_key, range_comparison, range_objs, limit, exclusive_start_key, scan_index_forward,
                     index_name, consistent_read, hash_key_conditions, range_key_conditions, filter_kwargs)
        if plan is None:
            return original_query(self, hash_key, range_comparison, range_objs, limit, exclusive_start_key,
                                  scan_index_forward, projection_expressions, index_name, consistent_read,
                                  filter_expression, hash_key_conditions=hash_key_conditions,
                                  range_key_conditions=range_key_conditions, **filter_kwargs)
        keys, fetch, start = plan
        bounds = _bounds(keys, range_comparison, [_cast(value) for value in range_objs])
        results, last = _walk(keys, fetch, start, scan_index_forward, bounds, limit, RESULT_SIZE_LIMIT)
        last_evaluated_key = self._get_last_evaluated_key(last, index_name) if last is not None else None
        scanned_count = len(results)
        if index_name:
            index = self.get_index(index_name)
            results = [_project_keys(index, item) for item in results]
        else:
            results = copy.deepcopy(results)
        if filter_expression is not None:
            results = [item for item in results if filter_expression.expr(item)]
        if projection_expressions:
            results = [item.project(projection_expressions) for item in results]
        return results, scanned_count, last_evaluated_key

    def _plan(table: Any, hash_key: Any, range_comparison: str | None, range_objs: list[Any], limit: Any,
              exclusive_start_key: Any, scan_index_forward: Any, index_name: str | None, consistent_read: bool,
              hash_key_conditions: Any, range_key_conditions: Any, filter_kwargs: dict[str, Any]) -> Any:
        """(sort tuples of the partition in order, position -> item, start tuple or None), or
        None for anything moto's own query should answer (its errors included)."""
        if _oversize or filter_kwargs or not isinstance(scan_index_forward, bool):
            return None
        if limit is not None and (type(limit) is not int or limit < 1):
            return None
        if range_comparison is not None and _RANGE_OPERATORS.get(range_comparison) != len(range_objs or ()):
            return None
        range_conditions = range_key_conditions or []
        if len(range_conditions) > 1:
            return None
        if not index_name:
            hash_type, range_type = table.hash_key_type, table.range_key_type
            if hash_type not in ("S", "N") or (table.range_key_attr and range_type not in ("S", "N")):
                return None
            if not _typed(hash_key, hash_type):
                return None
            if range_comparison is not None:
                if not table.range_key_attr or not _range_ok(range_comparison, range_objs, range_type):
                    return None
                if range_conditions and range_conditions[0][0] != table.range_key_attr:
                    return None
            attrs = table._generate_attr_to_sort_by([table.hash_key_attr], [table.range_key_attr])
            kinds = [hash_type, range_type][: len(attrs)]
            start = None
            if exclusive_start_key is not None:
                start = _start_tuple(exclusive_start_key, attrs, kinds)
                if start is None:
                    return None
            partition = table.items.get(hash_key)
            if partition is None:
                rows: list[tuple[tuple[Any, ...], Any]] = []
            elif table.range_key_attr is None:
                rows = [((_cast(partition.hash_key),), partition)] if isinstance(partition, Item) else []
            else:
                value = _cast(hash_key)
                rows = sorted((((value, _cast(range_key)), item) for range_key, item in partition.items()),
                              key=lambda row: row[0])
            items = [row[1] for row in rows]
            return [row[0] for row in rows], items.__getitem__, start
        indexes = {index.name: index for index in table.all_indexes()}
        index = indexes.get(index_name)
        if not isinstance(index, GlobalSecondaryIndex) or consistent_read:
            return None
        schema = index.schema
        if [k["KeyType"] for k in schema] not in (["HASH"], ["HASH", "RANGE"]):
            return None
        if table.hash_key_type not in ("S", "N") or (table.range_key_attr and table.range_key_type not in ("S", "N")):
            return None
        cache = table.__dict__.get(_QUERY_CACHE)
        if cache is None:
            cache = table.__dict__[_QUERY_CACHE] = _QueryCache()
        kept = cache.index(table, index)
        if not kept.supported or kept.poisoned:
            return None
        conditions = hash_key_conditions or []
        if len(conditions) != 1 or conditions[0][0] != kept.hash_attr or not _typed(conditions[0][1], kept.hash_type):
            return None
        if range_comparison is not None:
            if kept.range_attr is None or not _range_ok(range_comparison, range_objs, kept.range_type):
                return None
            if range_conditions and range_conditions[0][0] != kept.range_attr:
                return None
        kinds = [_declared(table, name) if name not in (table.hash_key_attr, table.range_key_attr) else
                 (table.hash_key_type if name == table.hash_key_attr else table.range_key_type)
                 for name in kept.sort_attrs]
        start = None
        if exclusive_start_key is not None:
            start = _start_tuple(exclusive_start_key, kept.sort_attrs, kinds)
            if start is None:
                return None
        partition = kept.partitions.get(_cast(conditions[0][1]))
        if partition is None:
            return [], None, start
        table_keys = partition.table_keys

        def fetch(position: int) -> Any:
            return _lookup(table, *table_keys[position])

        return partition.keys, fetch, start

    def _range_ok(comparison: str, values: list[Any], kind: str | None) -> bool:
        if not all(_typed(value, kind) for value in values):
            return False
        return comparison != "BEGINS_WITH" or kind == "S"

    Table.put_item = put_item
    Table.delete_item = delete_item
    Table.get_item = get_item
    Table.query = query
    UpdateExpressionExecutor.execute = execute
    Item.update_with_attribute_updates = update_with_attribute_updates
    Table._leadflow_fast_query = True


def _resized(item: Any) -> None:
    """After an update in place: forget the item's size; if it has a map, list or set,
    which an update can grow without moto's size check, size it and note an item over
    the limit (from then on every query is moto's own)."""
    global _oversize
    if item is None:
        return
    item.__dict__.pop(_SIZE, None)
    if any(value.type in _COLLECTIONS for value in item.attrs.values()):
        if _size(item) > ITEM_SIZE_LIMIT:
            _oversize = True


_ADDS = re.compile(r"ADD (#\w+ :\w+)(, #\w+ :\w+)*")


def _sums(expression: str, names: dict[str, str] | None, values: dict[str, Any] | None, current: Any
          ) -> dict[str, Any] | None:
    """The whole item after ``ADD #a :a, #b :b…`` of numbers to ``current`` (None: any
    other update, for moto's own code). moto parses and validates an update expression
    again for each of its clauses: an ADD of a dozen counters took 40 ms."""
    if not _ADDS.fullmatch(expression) or not names or not values:
        return None
    attrs = dict(current.to_json()["Attributes"]) if current is not None else {}
    for clause in expression[4:].split(", "):
        name_ref, value_ref = clause.split(" ")
        name, value = names.get(name_ref), values.get(value_ref)
        if name is None or not isinstance(value, dict) or set(value) != {"N"}:
            return None
        held = attrs.get(name)
        if held is not None and set(held) != {"N"}:
            return None
        total = decimal.Decimal(value["N"]) + (decimal.Decimal(held["N"]) if held else 0)
        attrs[name] = {"N": str(total)}
    return attrs


def _make_transactions_cheap() -> None:
    from moto.dynamodb.exceptions import (
        MultipleTransactionsException,
        TooManyTransactionsException,
        TransactionCanceledException,
        TransactWriteSingleOpException,
    )
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.models.dynamo_type import Item
    from moto.dynamodb.comparisons import get_filter_expression

    from leadflow_infra.local import atomic

    original = DynamoDBBackend.transact_write_items
    if getattr(DynamoDBBackend, "_leadflow_cheap_transactions", False):
        return

    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
        if len(transact_items) > 100:
            raise TooManyTransactionsException()
        steps = []
        targets: set[tuple[str, str]] = set()
        errors: list[tuple[Any, Any, Any]] = []
        for entry in transact_items:
            if len(entry) > 1:
                raise TransactWriteSingleOpException
            op_type, op = next(iter(entry.items()))
            if op_type not in {"ConditionCheck", "Put", "Delete", "Update"}:
                raise ValueError("Unsupported transaction operation")
            table = self.get_table(op["TableName"])
            if op_type == "Put":
                attrs = op["Item"]
                key = {table.hash_key_attr: attrs[table.hash_key_attr]}
                if table.range_key_attr is not None:
                    key[table.range_key_attr] = attrs[table.range_key_attr]
            else:
                key = op["Key"]
            target = (str(op["TableName"]), str(dict(sorted(key.items()))))
            if target in targets:
                raise MultipleTransactionsException()
            targets.add(target)
            current = self.get_item(op["TableName"], key)
            condition = op.get("ConditionExpression")
            error: tuple[Any, Any, Any] = (None, None, None)
            if condition is not None:
                check = get_filter_expression(condition, op.get("ExpressionAttributeNames"),
                                              op.get("ExpressionAttributeValues"))
                if not check.expr(current):
                    old = None
                    if op.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD" and current:
                        old = current.to_json()["Attributes"]
                    error = ("ConditionalCheckFailed", "The conditional request failed", old)
            errors.append(error)
            steps.append((op_type, op, table, key, current))
        if any(code is not None for code, _, _ in errors):
            raise TransactionCanceledException(errors)
        backups = [(table, key, copy.deepcopy(current)) for _, _, table, key, current in steps]
        try:
            for op_type, op, _table, key, _current in steps:
                names, values = op.get("ExpressionAttributeNames"), op.get("ExpressionAttributeValues")
                if op_type == "Put":
                    self.put_item(op["TableName"], op["Item"], expression_attribute_names=names,
                                  expression_attribute_values=values)
                elif op_type == "Delete":
                    self.delete_item(op["TableName"], key, expression_attribute_names=names,
                                     expression_attribute_values=values)
                elif op_type == "Update":
                    added = _sums(op["UpdateExpression"], names, values, _current)
                    if added is not None:  # ADD of numbers only: the item as put, with its sums
                        self.put_item(op["TableName"], {**key, **added})
                    else:
                        self.update_item(op["TableName"], key, update_expression=op["UpdateExpression"],
                                         expression_attribute_names=names, expression_attribute_values=values)
        except Exception:
            for table, key, item in backups:
                if isinstance(item, Item):
                    table.put_item(item.to_json()["Attributes"])
                else:
                    try:
                        self.delete_item(table.name, key)
                    except Exception:  # noqa: BLE001 - already absent
                        pass
            raise

    def locked(self: Any, transact_items: list[dict[str, Any]]) -> None:
        # One atomic, observed operation, as the backend lock makes every other write.
        return atomic.run(self, True, transact_write_items, self, transact_items)

    locked.__wrapped__ = original  # type: ignore[attr-defined]
    DynamoDBBackend.transact_write_items = locked
    DynamoDBBackend._leadflow_cheap_transactions = True
