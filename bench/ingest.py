"""Ingest benchmark: DynamoDB cost per event and throughput.

    python -m bench.ingest               # full run (about 70 s on 2 cores)
    python -m bench.ingest --quick       # smaller sizes, no profile: about a minute
    python -m bench.ingest --no-profile  # full sizes without section 4

Everything is measured in one process against one moto server (ThreadedMotoServer on
127.0.0.1, clients through its endpoint URL), the way the local stack runs: moto's
speed drifts from run to run, so only figures taken in the same run are compared.

1. DynamoDB calls, read and write units per event (new lead, existing lead, a lead
   with a long history, visitor cases), counted on the client with botocore's event
   system and cross-checked against the store's own counter. Units are computed from
   the item size as DynamoDB sizes items, because moto's ConsumedCapacity is a
   constant (checked at run time and reported).
2. Events/s through ``leadflow.handlers.api.handler`` (HTTP API v2 events, in-process,
   sequential) next to raw UpdateItem/s on the same server.
3. Events/s with N leads already in the table against an empty table.
4. Where the handler's time goes: cProfile with moto in-process (mock_aws), since
   the threaded server's work is invisible to a profile of the calling thread.

The handler gets the events and the Lambda context the local stack builds
(``leadflow_infra.local.gateway.build_event``, ``LambdaContext`` for the template's
ApiFunction). Cold start (import time of the entry modules) is measured by
``python -m bench.coldstart``, not here.

Writes the Markdown report to bench/results.md (bench/results-quick.md with --quick).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import cProfile
import gc
import io
import json
import math
import os
import platform
import pstats
import subprocess
import sys
import time
import warnings
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

ROOT = Path(__file__).resolve().parent.parent
FUNCTIONS = ROOT / "functions"
if str(FUNCTIONS) not in sys.path:
    sys.path.insert(0, str(FUNCTIONS))

REGION = "us-east-1"
ENV = {
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "POWERTOOLS_TRACE_DISABLED": "true",
    "POWERTOOLS_METRICS_DISABLED": "true",
    "POWERTOOLS_LOG_LEVEL": "WARNING",
    "POWERTOOLS_SERVICE_NAME": "leadflow",
}
UNSET = ("AWS_PROFILE", "LEADFLOW_API_KEY", "LEADFLOW_RULES")

KB = 1024
READ_UNIT = 4 * KB


# -- sizes and units ----------------------------------------------------------------

def _number_size(text: str) -> int:
    """DynamoDB: about one byte per two significant digits, plus one."""
    digits = text.lstrip("+-").lower().split("e")[0].replace(".", "").lstrip("0").rstrip("0")
    return min(21, math.ceil(max(len(digits), 1) / 2) + 1)


def value_size(value: dict) -> int:
    """Size of one AttributeValue (low-level wire shape) by DynamoDB's published rules."""
    ((kind, data),) = value.items()
    if kind == "S":
        return len(data.encode("utf-8"))
    if kind == "N":
        return _number_size(data)
    if kind == "B":
        return len(data)
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "L":  # 3 bytes for the list, 1 per element
        return 3 + sum(1 + value_size(v) for v in data)
    if kind == "M":  # 3 bytes for the map, 1 per element, plus the key names
        return 3 + sum(1 + len(k.encode("utf-8")) + value_size(v) for k, v in data.items())
    if kind == "SS":
        return sum(len(s.encode("utf-8")) for s in data)
    if kind == "NS":
        return sum(_number_size(n) for n in data)
    if kind == "BS":
        return sum(len(b) for b in data)
    raise ValueError(f"unknown attribute type {kind}")


def item_size(item: dict | None) -> int:
    """Item size = attribute name lengths + value sizes."""
    if not item:
        return 0
    return sum(len(name.encode("utf-8")) + value_size(v) for name, v in item.items())


def write_units(size: int) -> int:
    return max(1, math.ceil(size / KB))


def read_units(size: int) -> int:
    """A strongly consistent read; a miss still costs one unit."""
    return max(1, math.ceil(size / READ_UNIT))


def gsi_projection() -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    """GSI1's key attributes and projection, from template.yaml."""
    from leadflow_infra.local.tables import template_table_properties

    props = template_table_properties()
    index = next(i for i in props.get("GlobalSecondaryIndexes", []) if i["IndexName"] == "GSI1")
    keys = tuple(k["AttributeName"] for k in index["KeySchema"])
    projection = index.get("Projection", {})
    return projection.get("ProjectionType", "KEYS_ONLY"), keys, tuple(projection.get("NonKeyAttributes", ()))


def _gsi_entry(item: dict, index: tuple[str, tuple[str, ...], tuple[str, ...]]) -> int:
    """An index entry: its keys, the table keys and what it projects, plus 100 bytes."""
    kind, keys, included = index
    if kind == "ALL":
        return item_size(item) + 100
    names = set(keys) | {"PK", "SK"} | (set(included) if kind == "INCLUDE" else set())
    return item_size({k: v for k, v in item.items() if k in names}) + 100


def gsi_write_units(old: dict | None, new: dict, index: tuple[str, tuple[str, ...], tuple[str, ...]]) -> int:
    """Index writes for a put of ``new`` over ``old``: one to add or drop an entry, two
    (delete + put) to move it, one to rewrite it when a projected attribute changed."""
    kind, keys, included = index
    old = old or {}
    old_key = tuple(old.get(k) for k in keys)
    new_key = tuple(new.get(k) for k in keys)
    old_in, new_in = all(v is not None for v in old_key), all(v is not None for v in new_key)
    units = 0
    if old_key != new_key:
        units += write_units(_gsi_entry(old, index)) if old_in else 0
        units += write_units(_gsi_entry(new, index)) if new_in else 0
    elif new_in:
        watched = set(new) | set(old) if kind == "ALL" else set(included) if kind == "INCLUDE" else set()
        if any(old.get(k) != new.get(k) for k in watched):
            units += write_units(_gsi_entry(new, index))
    return units


class Meter:
    """Counts a client's DynamoDB calls and remembers what each read and write moved."""

    def __init__(self, client: Any, index: tuple[str, tuple[str, ...], tuple[str, ...]]):
        self.index = index
        self.calls: Counter[str] = Counter()
        self.reads: list[tuple[str, dict | None]] = []   # (PK, item read)
        self.puts: list[tuple[str, dict]] = []           # (PK, item written)
        self.batch_items: list[dict] = []
        self.capacity: list[dict] = []
        events = client.meta.events
        events.register("before-parameter-build.dynamodb.*", self._params)
        events.register("before-call.dynamodb.*", self._count)
        events.register("after-call.dynamodb.*", self._result)
        self._pending: list[dict] = []

    def reset(self) -> None:
        self.calls.clear()
        self.reads.clear()
        self.puts.clear()
        self.batch_items.clear()
        self.capacity.clear()

    def _params(self, params: dict, model: Any, **_: Any) -> None:
        if model.name == "PutItem":
            self.puts.append((params["Item"]["PK"]["S"], params["Item"]))
        elif model.name == "BatchWriteItem":
            for requests in params["RequestItems"].values():
                self.batch_items.extend(r["PutRequest"]["Item"] for r in requests if "PutRequest" in r)
        elif model.name == "GetItem":
            self._pending.append(params["Key"])

    def _count(self, model: Any, **_: Any) -> None:
        self.calls[model.name] += 1

    def _result(self, parsed: dict, model: Any, **_: Any) -> None:
        if model.name == "GetItem" and self._pending:
            key = self._pending.pop(0)
            self.reads.append((key["PK"]["S"], parsed.get("Item")))
        if parsed.get("ConsumedCapacity"):
            self.capacity.append(parsed["ConsumedCapacity"])

    def summary(self) -> dict[str, Any]:
        """Units of the writes made since the last reset; a put replacing an item
        costs the larger of the old and the new item, as DynamoDB bills it."""
        read_before = {}
        for pk, item in self.reads:
            read_before.setdefault(pk, item)
        rcu = sum(read_units(item_size(item)) for _, item in self.reads)
        wcu = gsi = 0
        sizes = []
        for pk, item in self.puts:
            old = read_before.get(pk)
            size = item_size(item)
            sizes.append(size)
            wcu += write_units(max(size, item_size(old)))
            gsi += gsi_write_units(old, item, self.index)
            read_before[pk] = item
        return {"calls": Counter(self.calls), "rcu": rcu, "wcu": wcu, "gsi_wcu": gsi, "put_sizes": sizes}


def layouts(lead: Any, stored: dict) -> dict[str, int]:
    """The size of the same lead stored three ways: as written now; with every field a
    native DynamoDB attribute (nested maps and lists); and as written now but with a
    state left as an uncompressed JSON string."""
    import zlib
    from decimal import Decimal

    from boto3.dynamodb.types import TypeSerializer

    from leadflow.adapters.dynamodb.keys import LEAD_SK, lead_pk, stage_gsi_pk, stage_gsi_sk

    ser = TypeSerializer()
    data = lead.model_dump(mode="json")
    data.update(PK=lead_pk(lead.lead_id), SK=LEAD_SK,
                kind="alias" if lead.merged_into else ("lead" if lead.known else "visitor"))
    if lead.known and not lead.merged_into:
        data["GSI1PK"] = stage_gsi_pk(lead.stage)
        data["GSI1SK"] = stage_gsi_sk(data["stage_entered_at"], lead.lead_id)
    native = {k: ser.serialize(v) for k, v in json.loads(json.dumps(data), parse_float=Decimal).items()}
    out = {"stored": item_size(stored), "native": item_size(native)}
    state = stored.get("state", {}).get("B")
    if state is not None:
        out["uncompressed"] = item_size({**stored, "state": {"S": zlib.decompress(state).decode("utf-8")}})
    return out


# -- workload ----------------------------------------------------------------------

TITLES = ["VP Marketing", "Head of Growth", "Marketing Manager", "Software Engineer", "CEO", "Director of Sales",
          "Student", "Operations Lead"]
INDUSTRIES = ["software", "fintech", "retail", "media", "consulting", "manufacturing"]
COUNTRIES = ["US", "DE", "GB", "NO", "BR", "FR"]
FOLLOW_UPS: list[tuple[str, dict]] = [
    ("page_viewed", {"url": "https://example.com/pricing"}),
    ("email_opened", {"campaign": "nurture-3"}),
    ("page_viewed", {"url": "https://example.com/product/integrations"}),
    ("email_clicked", {"campaign": "nurture-3", "url": "https://example.com/blog/roi"}),
    ("content_downloaded", {"asset": "buyers-guide-2026"}),
    ("page_viewed", {"url": "https://example.com/blog/lead-scoring"}),
    ("webinar_attended", {"webinar": "w-12", "minutes": 41}),
    ("email_opened", {"campaign": "nurture-4"}),
]


def email_for(tag: str, i: int) -> str:
    return f"{tag}.{i}@acme{i % 37}.example.com"


def first_event(tag: str, i: int) -> dict:
    return {
        "event_id": f"{tag}-{i}-0",
        "type": "form_submitted",
        "email": email_for(tag, i),
        "properties": {"form_kind": "newsletter", "form_id": "newsletter-footer", "url": "https://example.com/blog"},
        "traits": {
            "first_name": "Alex", "last_name": f"Doe{i}", "job_title": TITLES[i % len(TITLES)],
            "company": f"Acme {i % 37}", "company_size": [8, 45, 120, 900, 2400, 12000][i % 6],
            "industry": INDUSTRIES[i % len(INDUSTRIES)], "country": COUNTRIES[i % len(COUNTRIES)],
        },
    }


def follow_up(tag: str, i: int, n: int, occurred_at: str | None = None) -> dict:
    kind, props = FOLLOW_UPS[(i + n) % len(FOLLOW_UPS)]
    event = {"event_id": f"{tag}-{i}-{n}", "type": kind, "email": email_for(tag, i), "properties": dict(props)}
    if occurred_at:
        event["occurred_at"] = occurred_at
    return event


def event_stream(tag: str, n_events: int, n_leads: int) -> Iterator[dict]:
    """Round robin over the leads: each lead's sign-up comes before its follow-ups."""
    for k in range(n_events):
        lead, seq = k % n_leads, k // n_leads
        yield first_event(tag, lead) if seq == 0 else follow_up(tag, lead, seq)


class MemoryClient:
    """Just enough of a DynamoDB client for the lead store's get and put, in memory:
    the adapter and the service run unchanged, without botocore, HTTP or moto."""

    def __init__(self) -> None:
        self.items: dict[tuple[str, str], dict] = {}

    def get_item(self, TableName: str, Key: dict, **_: Any) -> dict:
        item = self.items.get((Key["PK"]["S"], Key["SK"]["S"]))
        return {"Item": item} if item is not None else {}

    def put_item(self, TableName: str, Item: dict, ConditionExpression: str | None = None,
                 ExpressionAttributeValues: dict | None = None, **_: Any) -> dict:
        from botocore.exceptions import ClientError

        key = (Item["PK"]["S"], Item["SK"]["S"])
        old = self.items.get(key)
        if ConditionExpression == "attribute_not_exists(PK)":
            ok = old is None
        elif ConditionExpression == "version = :v":
            ok = old is not None and old.get("version") == (ExpressionAttributeValues or {}).get(":v")
        else:
            ok = True
        if not ok:
            raise ClientError({"Error": {"Code": "ConditionalCheckFailedException", "Message": "condition"},
                               **({"Item": old} if old else {})}, "PutItem")
        self.items[key] = Item
        return {}


def api_context() -> Any:
    """The local stack's Lambda context for the template's ApiFunction."""
    from leadflow_infra.local.invoke import LambdaContext
    from leadflow_infra.template import find_template, function_spec, load_template

    return LambdaContext.for_function(function_spec(load_template(find_template()), "ApiFunction"), region=REGION)


def http_event(body: dict) -> dict:
    """``POST /v1/events`` as the local gateway (API Gateway's stand-in) hands it to the handler."""
    from leadflow_infra.local.gateway import build_event

    return build_event(method="POST", target="/v1/events",
                       headers=[("content-type", "application/json"), ("host", "localhost"), ("user-agent", "bench")],
                       body=json.dumps(body).encode("utf-8"), source_ip="127.0.0.1", server_port=443)


# -- the stack ---------------------------------------------------------------------

def set_environment(endpoint: str) -> None:
    for name in UNSET:
        os.environ.pop(name, None)
    os.environ.update(ENV)
    os.environ["AWS_ENDPOINT_URL_DYNAMODB"] = endpoint
    os.environ["AWS_ENDPOINT_URL_DYNAMODB_STREAMS"] = endpoint


def start_moto() -> tuple[Any, str]:
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    return server, f"http://{host}:{port}"


def new_client(endpoint: str) -> Any:
    import boto3

    return boto3.session.Session().client(
        "dynamodb", region_name=REGION, endpoint_url=endpoint,
        aws_access_key_id="testing", aws_secret_access_key="testing",
    )


def make_table(client: Any, name: str) -> None:
    from leadflow_infra.local.tables import create_table, template_table_properties

    create_table(client, template_table_properties(), name)


def use_table(name: str) -> Any:
    """Point the Lambda code at ``name`` and return the service it now builds."""
    from leadflow import container

    os.environ["LEADFLOW_TABLE"] = name
    container.reset()
    return container.service()


# -- 1. calls and units per event ----------------------------------------------------

def cost_per_event(endpoint: str, history: int) -> tuple[list[dict], dict]:
    from boto3.dynamodb.types import TypeDeserializer

    from leadflow.adapters.dynamodb.store import DynamoLeadStore
    from leadflow.domain.events import parse_event
    from bench import bench_lead_ids
    from leadflow.usecases.leads import LeadService
    from leadflow.settings import load_rules
    from leadflow.adapters.dynamodb.store import lead_change
    from leadflow.usecases.event_log import record

    client = new_client(endpoint)
    table = "bench-cost"
    make_table(client, table)
    store = DynamoLeadStore(table, client=client)
    index = gsi_projection()
    meter = Meter(client, index)
    service = LeadService(store, load_rules(None), ids=bench_lead_ids())
    de = TypeDeserializer()
    rows: list[dict] = []

    def run(label: str, payload: dict, note: str = "") -> dict:
        meter.reset()
        store.calls.clear()
        result = service.ingest(parse_event(payload))
        sync = meter.summary()
        if dict(store.calls) != dict(sync["calls"]):
            raise AssertionError(f"botocore counted {dict(sync['calls'])}, the store {store.calls}")
        capacity = list(meter.capacity)
        puts = list(meter.puts)
        meter.reset()
        for pk, item in puts:
            image = {k: de.deserialize(v) for k, v in item.items()}
            if image.get("applied"):
                record(store, lead_change("MODIFY", {"PK": pk, "SK": "LEAD"}, image))
        log = {"wcu": sum(write_units(item_size(it)) for it in meter.batch_items), "calls": sum(meter.calls.values())}
        row = {"case": label, "note": note, "lead": result.lead, "moves": len(result.moves),
               "log_wcu": log["wcu"], "log_calls": log["calls"], "capacity": capacity,
               "layouts": layouts(result.lead, puts[-1][1]) if puts else None, **sync}
        rows.append(row)
        return row

    def quiet(payload: dict) -> None:
        service.ingest(parse_event(payload))

    run("new lead (email)", first_event("cost", 1))
    quiet(follow_up("cost", 1, 1))
    run("existing lead (email), 3rd event", follow_up("cost", 1, 2))

    # Long histories are built by the same service on an in-memory client (through moto
    # they would take minutes), then the lead's item is stored in moto as it stands.
    now = datetime.now(timezone.utc)
    cap = service.rules.limits.seen_event_ids
    for n_prior in sorted({history, cap}):
        memory = MemoryClient()
        builder = LeadService(DynamoLeadStore(table, client=memory), service.rules, ids=service.ids)
        tag = f"long{n_prior}"
        builder.ingest(parse_event(first_event(tag, 7)))
        span = timedelta(days=120)
        for n in range(1, n_prior):
            at = now - span + span * n / n_prior
            builder.ingest(parse_event(follow_up(tag, 7, n, at.isoformat())))
        for item in memory.items.values():
            client.put_item(TableName=table, Item=item)
        note = f"{cap} = the rules' seen_event_ids cap: the item stops growing" if n_prior == cap else ""
        run(f"existing lead, {n_prior:,} prior events over 120 days", follow_up(tag, 7, n_prior), note)

    run("anonymous visitor, first event", {"event_id": "anon-1", "type": "page_viewed", "anonymous_id": "visitor-42",
                                           "properties": {"url": "https://example.com/pricing"}})
    quiet({"event_id": "anon-2", "type": "page_viewed", "anonymous_id": "visitor-42",
           "properties": {"url": "https://example.com/product"}})
    run("visitor identifies (email + anonymous_id)",
        {**first_event("cost", 2), "event_id": "anon-3", "anonymous_id": "visitor-42"},
        "joins the visitor's history: alias pointer written first")
    run("same visitor, anonymous again", {"event_id": "anon-4", "type": "page_viewed", "anonymous_id": "visitor-42",
                                          "properties": {"url": "https://example.com/pricing"}},
        "follows the alias to the lead")

    # Does moto report consumed capacity? Ask once with ReturnConsumedCapacity.
    probe = client.put_item(TableName=table, Item={"PK": {"S": "PROBE"}, "SK": {"S": "P"}, "x": {"S": "x" * 5000}},
                            ReturnConsumedCapacity="TOTAL")
    probe_small = client.put_item(TableName=table, Item={"PK": {"S": "PROBE"}, "SK": {"S": "Q"}},
                                  ReturnConsumedCapacity="TOTAL")
    moto_capacity = {
        "5 KB put": (probe.get("ConsumedCapacity") or {}).get("CapacityUnits"),
        "tiny put": (probe_small.get("ConsumedCapacity") or {}).get("CapacityUnits"),
    }
    return rows, moto_capacity


# -- 2. and 3. throughput ------------------------------------------------------------

EMF_LINES = [0]


def drive_handler(payloads: list[dict]) -> tuple[float, Counter]:
    """Send prebuilt v2 events through the real Lambda handler, one after another."""
    from leadflow.handlers import api as api_handler

    events = [http_event(p) for p in payloads]
    ctx = api_context()
    statuses: Counter[int] = Counter()
    # Powertools prints EMF lines even with POWERTOOLS_METRICS_DISABLED=true (its
    # 100-values auto-flush and the cold-start metric ignore the flag): keep them out
    # of the report, but count them.
    sink = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(sink), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "No application metrics to publish"
        for event in events:
            statuses[api_handler.handler(event, ctx)["statusCode"]] += 1
    elapsed = time.perf_counter() - start
    EMF_LINES[0] += sum(1 for line in sink.getvalue().splitlines() if line.startswith('{"_aws"'))
    if set(statuses) != {200}:
        raise RuntimeError(f"handler answered {dict(statuses)}")
    return elapsed, statuses


def warm_handler(tag: str) -> None:
    drive_handler([first_event(tag, 0)])


def raw_updates(client: Any, table: str, n: int) -> float:
    key = {"PK": {"S": "COUNTER#bench"}, "SK": {"S": "COUNTER"}}
    start = time.perf_counter()
    for _ in range(n):
        client.update_item(TableName=table, Key=key, UpdateExpression="ADD n :one",
                           ExpressionAttributeValues={":one": {"N": "1"}})
    return time.perf_counter() - start


def raw_lead_pairs(client: Any, table: str, n: int) -> tuple[float, int]:
    """What one event to an existing lead asks of moto, without leadflow: a consistent
    GetItem and a conditional PutItem of a lead-sized item."""
    item = lead_items(1)[0]
    key = {"PK": item["PK"], "SK": item["SK"]}
    client.put_item(TableName=table, Item={**item, "version": {"N": "1"}})
    start = time.perf_counter()
    for v in range(1, n + 1):
        client.get_item(TableName=table, Key=key, ConsistentRead=True)
        client.put_item(TableName=table, Item={**item, "version": {"N": str(v + 1)}},
                        ConditionExpression="version = :v", ExpressionAttributeValues={":v": {"N": str(v)}},
                        ReturnValuesOnConditionCheckFailure="ALL_OLD")
    return time.perf_counter() - start, item_size(item)


def handler_in_memory(service: Any, payloads: list[dict]) -> float:
    """The same events through the same handler with the store on an in-memory client:
    what leadflow, Powertools and pydantic cost per event on their own."""
    from leadflow.adapters.dynamodb.store import DynamoLeadStore

    real = service.store
    service.store = DynamoLeadStore(real.table_name, client=MemoryClient())
    try:
        seconds, _ = drive_handler([{**p, "event_id": "mem-" + p["event_id"]} for p in payloads])
    finally:
        service.store = real
    return seconds


def handler_vs_raw(endpoint: str, n_events: int, n_leads: int) -> dict:
    client = new_client(endpoint)
    for name in ("bench-api", "bench-raw"):
        make_table(client, name)
    raw_updates(client, "bench-raw", 20)  # warm the connection
    service = use_table("bench-api")
    warm_handler("warm-api")
    payloads = list(event_stream("api", n_events, n_leads))
    half = n_events // 2

    raw_time = raw_updates(client, "bench-raw", half)
    service.store.calls.clear()
    handler_time, _ = drive_handler(payloads)
    calls = dict(service.store.calls)
    raw_time += raw_updates(client, "bench-raw", n_events - half)
    pair_n = max(20, n_events // 5)
    pair_time, pair_bytes = raw_lead_pairs(client, "bench-raw", pair_n)
    memory_time = handler_in_memory(service, payloads)
    out = {
        "pair_n": pair_n, "pair_s": pair_time, "pair_rate": pair_n / pair_time, "pair_bytes": pair_bytes,
        "memory_s": memory_time, "memory_rate": n_events / memory_time,
        "events": n_events, "leads": n_leads,
        "handler_s": handler_time, "handler_rate": n_events / handler_time,
        "raw_s": raw_time, "raw_rate": n_events / raw_time,
        "calls": calls, "calls_per_event": sum(calls.values()) / n_events,
    }
    out["ratio"] = out["handler_rate"] / out["raw_rate"]
    return out


# -- optional: where the handler's time goes ------------------------------------------

def _package(filename: str) -> str:
    if filename.startswith("~") or filename.startswith("<"):
        return "builtins (C)"
    path = filename.replace("\\", "/")
    if "/site-packages/" in path:
        return path.split("/site-packages/", 1)[1].split("/", 1)[0].removesuffix(".py")
    if str(FUNCTIONS) in filename:
        return "leadflow"
    if str(ROOT / "bench") in filename:
        return "bench"
    return "stdlib " + Path(path).stem


def profile_in_process(n_events: int, n_leads: int) -> dict:
    """cProfile the handler with moto in-process (mock_aws): the server's work then runs
    in the profiled thread too, which it does not with the threaded server."""
    from moto import mock_aws

    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("AWS_ENDPOINT_URL")}
    try:
        with mock_aws():
            import boto3

            make_table(boto3.client("dynamodb", region_name=REGION), "bench-profile")
            use_table("bench-profile")
            warm_handler("warm-profile")
            payloads = list(event_stream("prof", n_events, n_leads))
            profiler = cProfile.Profile()
            profiler.enable()
            seconds, _ = drive_handler(payloads)
            profiler.disable()
    finally:
        os.environ.update(saved)
    stats = pstats.Stats(profiler)
    total = sum(row[2] for row in stats.stats.values())  # type: ignore[attr-defined]
    packages: Counter[str] = Counter()
    functions = []
    for (filename, line, name), (_cc, _nc, tottime, cumtime, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        packages[_package(filename)] += tottime
        short = filename.split("/site-packages/", 1)[-1].replace(str(ROOT) + "/", "")
        functions.append((tottime, cumtime, f"{short}:{line}({name})"))
    functions.sort(reverse=True)
    phases = []
    for label, path, name in PHASES:
        rows = [row for (filename, _line, func), row in stats.stats.items()  # type: ignore[attr-defined]
                if func == name and filename.replace("\\", "/").endswith(path)]
        if not rows:  # a moved or renamed function would otherwise read as 0 s
            raise RuntimeError(f"profile phase {label!r}: {path}:{name} was never called; update PHASES")
        phases.append((label, sum(row[3] for row in rows)))
    return {"events": n_events, "seconds": seconds, "total": total, "packages": packages.most_common(8),
            "functions": functions[:8], "phases": phases}


# Phases of one event, by cumulative time (they nest: indented rows are part of the row above).
PHASES = [
    ("the route handler, `post_event`", "leadflow/routes/app.py", "post_event"),
    ("DynamoDB calls (botocore client + moto)", "botocore/client.py", "_make_api_call"),
    ("&nbsp;&nbsp;moto serving them", "moto/core/botocore_stubber.py", "__call__"),
    ("&nbsp;&nbsp;botocore building + validating requests", "botocore/client.py", "_convert_to_request_dict"),
    ("&nbsp;&nbsp;botocore parsing responses", "botocore/parsers.py", "parse"),
    ("engine `apply_event` (scoring, lifecycle)", "leadflow/domain/engine.py", "apply_event"),
    ("adapter `item_to_lead` (JSON + pydantic)", "leadflow/adapters/dynamodb/store.py", "item_to_lead"),
    ("adapter `lead_to_item`", "leadflow/adapters/dynamodb/store.py", "lead_to_item"),
    ("request `parse_event` (pydantic)", "leadflow/domain/events.py", "parse_event"),
]


@functools.lru_cache(maxsize=1)
def _default_rules() -> Any:
    from leadflow.settings import load_rules

    return load_rules(None)


def lead_items(n: int, offset: int = 0) -> list[dict]:
    """Realistic lead items: built by the engine from a sign-up and a page view."""
    from boto3.dynamodb.types import TypeSerializer

    from leadflow.adapters.dynamodb.store import lead_to_item
    from leadflow.domain.engine import apply_event, new_lead
    from leadflow.domain.events import finalise, parse_event
    from bench import bench_lead_ids

    ids = bench_lead_ids()
    rules = _default_rules()
    ser = TypeSerializer()
    now = datetime.now(timezone.utc)
    items = []
    for i in range(offset, offset + n):
        email = email_for("filler", i)
        lead = new_lead(ids.for_email(email), email=email, now=now)
        for payload in (first_event("filler", i), follow_up("filler", i, 1)):
            lead = apply_event(lead, finalise(parse_event(payload), now=now), rules, now).lead
        lead = lead.model_copy(update={"version": 2})
        items.append({k: ser.serialize(v) for k, v in lead_to_item(lead).items()})
    return items


@contextlib.contextmanager
def moto_size_check_off() -> Iterator[bool]:
    """moto re-sizes the whole item each time it sets one attribute
    (``LimitedSizeDict.__setitem__``: quadratic, about 85% of a lead put). Seeding turns
    that check off (the items are all far below 400 KB) and restores it before anything
    is measured. Yields whether it could."""
    try:
        from moto.dynamodb.models.dynamo_type import LimitedSizeDict

        checked = LimitedSizeDict.__dict__["__setitem__"]
    except (ImportError, KeyError):
        yield False
        return
    LimitedSizeDict.__setitem__ = dict.__setitem__  # type: ignore[method-assign]
    try:
        yield True
    finally:
        LimitedSizeDict.__setitem__ = checked  # type: ignore[method-assign]


def seed(endpoint: str, table: str, n: int) -> None:
    """Seeder, run in its own process so that building and sending items uses the second
    core while the server thread stores them: a thread builds batches of 25, the main
    thread sends them with BatchWriteItem. Prints a JSON summary."""
    import queue
    import threading

    from botocore.config import Config

    set_environment(endpoint)
    batches: queue.Queue = queue.Queue(maxsize=8)
    built = {"seconds": 0.0, "bytes": 0}

    def build() -> None:
        for start in range(0, n, 25):
            t = time.perf_counter()
            items = lead_items(min(25, n - start), offset=start)
            built["seconds"] += time.perf_counter() - t
            built["bytes"] += sum(item_size(it) for it in items)
            batches.put(items)
        batches.put(None)

    import boto3

    client = boto3.session.Session().client(
        "dynamodb", region_name=REGION, endpoint_url=endpoint, aws_access_key_id="testing",
        aws_secret_access_key="testing", config=Config(parameter_validation=False),
    )
    threading.Thread(target=build, daemon=True).start()
    start = time.perf_counter()
    while (items := batches.get()) is not None:
        requests = {table: [{"PutRequest": {"Item": it}} for it in items]}
        while requests:
            requests = client.batch_write_item(RequestItems=requests).get("UnprocessedItems") or {}
    print(json.dumps({"seconds": time.perf_counter() - start, "build_s": built["seconds"],
                      "avg_bytes": built["bytes"] / max(1, n)}))


def seed_table(endpoint: str, table: str, n: int) -> dict:
    with moto_size_check_off() as unchecked:
        code = f"from bench.ingest import seed; seed({endpoint!r}, {table!r}, {n})"
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                             env={**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{FUNCTIONS}"})
    if out.returncode:
        raise RuntimeError(f"seeding failed:\n{out.stderr}")
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "unchecked": unchecked}


def table_size_effect(endpoint: str, n_filler: int, n_events: int, n_leads: int) -> dict:
    client = new_client(endpoint)
    make_table(client, "bench-empty")
    make_table(client, "bench-loaded")
    seeded = seed_table(endpoint, "bench-loaded", n_filler)
    count = client.describe_table(TableName="bench-loaded")["Table"].get("ItemCount")

    # Alternating blocks (ABBA ABBA ...) of 50, each on fresh leads, so drift cancels out.
    per_block = min(50, n_events)
    order = (["bench-empty", "bench-loaded", "bench-loaded", "bench-empty"] * n_events)[:2 * (n_events // per_block)]
    leads_per_block = max(1, per_block // 5)
    elapsed = {"bench-empty": 0.0, "bench-loaded": 0.0}
    rates: dict[str, list[float]] = {"bench-empty": [], "bench-loaded": []}
    calls: dict[str, Counter] = {"bench-empty": Counter(), "bench-loaded": Counter()}
    for block, table in enumerate(order):
        service = use_table(table)
        warm_handler(f"warm{block}")
        service.store.calls.clear()
        gc.collect()
        seconds, _ = drive_handler(list(event_stream(f"size{block}", per_block, leads_per_block)))
        elapsed[table] += seconds
        rates[table].append(per_block / seconds)
        calls[table].update(service.store.calls)
    events = per_block * len(order) // 2
    out = {
        "filler": n_filler, "item_count": count, "unchecked": seeded["unchecked"], "load_s": seeded["seconds"],
        "gen_s": seeded["build_s"], "avg_item_bytes": seeded["avg_bytes"], "events": events,
        "block_rates": rates, "blocks": len(order), "per_block": per_block,
        "empty_rate": events / elapsed["bench-empty"], "loaded_rate": events / elapsed["bench-loaded"],
        "calls_empty": dict(calls["bench-empty"]), "calls_loaded": dict(calls["bench-loaded"]),
    }
    out["ratio"] = out["loaded_rate"] / out["empty_rate"]
    return out


# -- report ----------------------------------------------------------------------------

def _calls_text(calls: Counter | dict) -> str:
    return " + ".join(f"{n} {op}" for op, n in sorted(calls.items())) or "none"


def revision() -> str:
    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return out.stdout.rstrip() if out.returncode == 0 else ""  # keep porcelain's leading status column

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = [line[3:] for line in git("status", "--porcelain", "--", "functions", "template.yaml").splitlines()]
    return f"- code: git {head}" + (f" + uncommitted changes in {', '.join(dirty)}" if dirty else " (clean)")


def machine() -> list[str]:
    import boto3
    import moto
    import aws_lambda_powertools  # noqa: F401
    from importlib.metadata import version

    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count()
    return [
        f"- date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: nproc {affinity} ({platform.machine()}, {platform.system()} {platform.release()})",
        f"- python {platform.python_version()} ({platform.python_implementation()}); boto3 {boto3.__version__}, "
        f"moto {moto.__version__}, aws-lambda-powertools {version('aws-lambda-powertools')}, "
        f"pydantic {version('pydantic')}",
    ]


def report(args: argparse.Namespace, cost: tuple[list[dict], dict], speed: dict, size: dict,
           total_s: float, profile: dict | None = None) -> str:
    rows, moto_capacity = cost
    lines = [f"# Ingest benchmark{' (--quick)' if args.quick else ''}", ""]
    lines += machine()
    lines.append(revision())
    lines += [f"- one moto server (ThreadedMotoServer, 127.0.0.1, clients by endpoint URL), one run: {total_s:.0f} s",
              "- cold start (import time of the Lambda entry modules) is measured by `python -m bench.coldstart`",
              ""]

    lines += ["## 1. DynamoDB calls and units per event", "",
              "Counted on the client (botocore `before-call`), equal to the store's own counter. "
              "Units are computed from the item size (attribute names + values, DynamoDB's sizing rules): "
              "a put costs ceil(max(old, new item) / 1 KB) write units, a strongly consistent read "
              "ceil(size / 4 KB) read units (1 for a miss). GSI1's projection is read from template.yaml "
              "(KEYS_ONLY: an entry is written only when its keys change; new lead: 1, stage move: "
              "delete + put = 2). The event-log item is "
              "written later by the stream consumer (one BatchWriteItem per stream batch, so per event "
              "it costs write units, not a call of its own).", "",
              "| case | calls per event | reads | writes | item written (bytes) | RCU | WCU table | WCU GSI "
              "| WCU event log (stream) | WCU total | moves |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        reads = r["calls"].get("GetItem", 0) + r["calls"].get("Query", 0)
        writes = sum(v for k, v in r["calls"].items() if k in ("PutItem", "UpdateItem", "TransactWriteItems",
                                                                  "BatchWriteItem", "DeleteItem"))
        sizes = "+".join(f"{s:,}" for s in r["put_sizes"]) or "-"
        case = r["case"] + (f" ({r['note']})" if r["note"] else "")
        lines.append(f"| {case} | {_calls_text(r['calls'])} | {reads} | {writes} | {sizes} | {r['rcu']} | "
                     f"{r['wcu']} | {r['gsi_wcu']} | {r['log_wcu']} | {r['wcu'] + r['gsi_wcu'] + r['log_wcu']} "
                     f"| {r['moves']} |")
    existing = [r for r in rows if r["case"].startswith("existing")]
    index_kind = gsi_projection()[0]
    ok = all(r["calls"].get("GetItem", 0) <= 1 and sum(r["calls"].values()) <= 2 for r in existing)
    lines += ["", f"Target (existing lead: at most one read and one write): **{'met' if ok else 'NOT met'}**.", "",
              f"moto's own `ReturnConsumedCapacity=TOTAL` answers {moto_capacity['5 KB put']} unit(s) for a 5 KB "
              f"put and {moto_capacity['tiny put']} for a tiny one: a constant, so it is not used.", ""]
    sized = [r for r in rows if r["layouts"] and (r["case"].startswith(("new", "existing")))]
    if sized:
        lines += ["Item layout: the same lead's item as stored now, with every field a native DynamoDB attribute "
                  "(nested maps and lists, per-element overhead 1 byte + key name), and with the state as an "
                  "uncompressed JSON string. Bytes / write units per put:", "",
                  "| case | as stored (zlib JSON, Binary) | native maps and lists | JSON string, uncompressed |",
                  "|---|---:|---:|---:|"]
        for r in sized:
            lay = r["layouts"]
            cells = [f"{lay[k]:,} / {write_units(lay[k])}" if k in lay else "n/a"
                     for k in ("stored", "native", "uncompressed")]
            lines.append(f"| {r['case']} | {' | '.join(cells)} |")
        lines.append("")
    for r in rows:
        if "prior events" in r["case"]:
            lead = r["lead"]
            lines.append(f"- {r['case']}: the lead holds {len(lead.seen)} seen event keys, {len(lead.signals)} "
                         f"signals, {len(lead.history)} stage moves (stage {lead.stage}); GSI1 is {index_kind}.")
    lines.append("")

    lines += ["## 2. Events/s through `leadflow.handlers.api.handler` vs raw UpdateItem/s", "",
              f"{speed['events']} `POST /v1/events` (HTTP API v2 events, in-process, sequential) over "
              f"{speed['leads']} leads ({speed['leads']} new, {speed['events'] - speed['leads']} to existing leads); "
              f"raw = `UpdateItem ADD n :one` on one key of a table made from the same template (stream on), "
              f"half before and half after the handler run.", "",
              "| measure | count | seconds | per second | ms each |", "|---|---:|---:|---:|---:|",
              f"| events through the API handler | {speed['events']} | {speed['handler_s']:.2f} "
              f"| {speed['handler_rate']:.1f} | {1000 / speed['handler_rate']:.1f} |",
              f"| raw UpdateItem (counter on one small item) | {speed['events']} | {speed['raw_s']:.2f} "
              f"| {speed['raw_rate']:.1f} | {1000 / speed['raw_rate']:.1f} |",
              f"| **ratio handler / raw UpdateItem** | | | **{speed['ratio']:.2f}** | |",
              f"| raw GetItem + conditional PutItem of one lead-sized item ({speed['pair_bytes']:,} bytes), "
              f"no leadflow code | {speed['pair_n']} pairs | {speed['pair_s']:.2f} | {speed['pair_rate']:.1f} "
              f"| {1000 / speed['pair_rate']:.1f} |",
              f"| same events through the handler, store on an in-memory client (no botocore, no moto) "
              f"| {speed['events']} | {speed['memory_s']:.2f} | {speed['memory_rate']:.0f} "
              f"| {1000 / speed['memory_rate']:.1f} |", "",
              f"DynamoDB calls in the handler run: {_calls_text(speed['calls'])} = "
              f"{speed['calls_per_event']:.2f} per event, so 0.5 is the best ratio a two-call event can reach "
              f"while calls cost what a counter UpdateItem costs. The two calls on a lead-sized item alone take "
              f"{1000 / speed['pair_rate']:.1f} ms, {speed['raw_rate'] / speed['pair_rate'] / 2:.1f}x two counter "
              f"UpdateItems; the handler's {1000 / speed['handler_rate']:.1f} ms per event is "
              f"{1000 / speed['handler_rate'] - 1000 / speed['pair_rate']:+.1f} ms beside them (timed apart, so "
              f"within noise). leadflow + Powertools + pydantic alone take {1000 / speed['memory_rate']:.1f} ms "
              f"per event.", ""]

    spread = {k: f"{min(v):.1f}-{max(v):.1f}" for k, v in size["block_rates"].items()}
    lines += [f"## 3. Table size: {size['filler']:,} leads already in the table vs an empty table", "",
              f"{size['filler']:,} lead items built by the engine (`new_lead` + `apply_event` x2, `lead_to_item`, "
              f"about {size['avg_item_bytes']:,.0f} bytes each) and loaded with BatchWriteItem from a second "
              f"process in {size['load_s']:.1f} s (building took {size['gen_s']:.1f} s of that; ItemCount "
              f"{size['item_count']}"
              f"{'; moto' + chr(39) + 's per-attribute item-size check off while loading only' if size['unchecked'] else ''}"
              f"). Then {size['events']} events per table through the handler, in {size['blocks']} alternating "
              f"blocks of {size['per_block']} (empty, loaded, loaded, empty, ...) on fresh leads.", "",
              "| table | events | events/s | range over blocks | calls |", "|---|---:|---:|---:|---|",
              f"| empty | {size['events']} | {size['empty_rate']:.1f} | {spread['bench-empty']} "
              f"| {_calls_text(size['calls_empty'])} |",
              f"| {size['filler']:,} leads | {size['events']} | {size['loaded_rate']:.1f} | {spread['bench-loaded']} "
              f"| {_calls_text(size['calls_loaded'])} |",
              f"| **ratio loaded / empty** | | **{size['ratio']:.2f}** | | |", ""]

    if profile:
        lines += ["## 4. Where the handler's time goes (cProfile, moto in-process)", "",
                  f"{profile['events']} events through the handler with `mock_aws` (moto runs in the profiled "
                  f"thread; with the threaded server its work shows only as socket waits): "
                  f"{profile['seconds']:.2f} s under the profiler.", "",
                  "| phase (cumulative) | s | share of the handler |", "|---|---:|---:|"]
        for label, seconds in profile["phases"]:
            lines.append(f"| {label} | {seconds:.2f} | {100 * seconds / profile['seconds']:.0f}% |")
        lines += ["", f"Everything outside `post_event` (Powertools' logger, tracer and metrics decorators, "
                      f"the resolver): {profile['seconds'] - profile['phases'][0][1]:.2f} s.", "",
                  "| package | self time s | share |", "|---|---:|---:|"]
        for name, seconds in profile["packages"]:
            lines.append(f"| {name} | {seconds:.2f} | {100 * seconds / profile['total']:.0f}% |")
        lines += ["", "| function | self s | cumulative s |", "|---|---:|---:|"]
        for tottime, cumtime, name in profile["functions"]:
            lines.append(f"| `{name}` | {tottime:.2f} | {cumtime:.2f} |")
        lines.append("")
    if EMF_LINES[0]:
        lines += [f"Note: Powertools printed {EMF_LINES[0]} EMF metric lines during the handler runs although "
                  f"POWERTOOLS_METRICS_DISABLED=true (the 100-values auto-flush and the cold-start metric do "
                  f"not check the flag; the disabled flush never clears, so values pile up to 100).", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ingest", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (2,000 leads, 200 events)")
    parser.add_argument("--profile", action=argparse.BooleanOptionalAction, default=None,
                        help="add a cProfile of the handler (moto in-process) to the report; on by default "
                             "except with --quick")
    parser.add_argument("--out", type=Path, default=None, help="where to write the Markdown report")
    args = parser.parse_args(argv)

    if args.profile is None:
        args.profile = not args.quick
    if args.quick:
        history, n_events, n_leads, n_filler, n_size_events = 200, 200, 40, 2000, 200
    else:
        history, n_events, n_leads, n_filler, n_size_events = 200, 500, 100, 10_000, 400
    out_path = args.out or ROOT / "bench" / ("results-quick.md" if args.quick else "results.md")

    started = time.perf_counter()
    server, endpoint = start_moto()
    step = _stepper()
    try:
        set_environment(endpoint)
        cost = step("calls and units per event", lambda: cost_per_event(endpoint, history))
        speed = step("handler vs raw UpdateItem", lambda: handler_vs_raw(endpoint, n_events, n_leads))
        size = step(f"{n_filler:,} leads vs empty",
                    lambda: table_size_effect(endpoint, n_filler, n_size_events, n_leads))
    finally:
        server.stop()
    profile = step("cProfile, moto in-process", lambda: profile_in_process(300, 60)) if args.profile else None
    text = report(args, cost, speed, size, time.perf_counter() - started, profile)
    print(text)
    out_path.write_text(text + "\n", encoding="utf-8")
    print(f"(written to {out_path.relative_to(ROOT) if out_path.is_relative_to(ROOT) else out_path})")
    return 0


def _stepper() -> Callable[[str, Callable[[], Any]], Any]:
    def step(name: str, fn: Callable[[], Any]) -> Any:
        t = time.perf_counter()
        print(f"... {name}", file=sys.stderr, flush=True)
        result = fn()
        print(f"    {time.perf_counter() - t:.1f} s", file=sys.stderr, flush=True)
        return result

    return step


if __name__ == "__main__":
    sys.exit(main())
