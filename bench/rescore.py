"""Re-scoring at scale: a rules publish that changes 5 % of the leads, then the hourly run.

    python -m bench.rescore                   # 100,000 leads: about 18 minutes on 2 cores
    python -m bench.rescore --leads 20000     # about 5 minutes
    python -m bench.rescore --leads 2000      # a smoke test: about 45 s
    python -m bench.rescore --leads 2000 --timeout 31   # every invocation stops after ~1 s: resume
    python -m bench.rescore --markdown        # the tables as Markdown, for the README

Everything runs in this one process: the local stack (``LocalStack``: moto, the gateway,
the jobs function with the template's 300 s timeout) with the API and jobs functions
only. The stream consumers are left out so that every DynamoDB call counted below is
the job's (a re-score write carries no applied event and no stage move, so in AWS the
stream's filters would not invoke them for it either).

1. N leads are seeded straight into the table (BatchWriteItem, 25 items a call), not
   through the API: a few dozen template leads are built with the pure engine
   (``new_lead`` + ``apply_event``) under the deployed rules, and each lead is a copy of
   one under its own email and lead id (move ids recomputed), written with
   ``lead_to_item`` exactly as the API's last write leaves it. Every 20th lead (5 %)
   has the trait ``sector: public``.
2. The new rules version is published with ``POST /v1/rules``. It changes only the
   points of the fit rule that trait matches (5 -> 30): the same ``Rules.signals_key``,
   so no lead needs its event log (a rebase) and none is read; the table holds no
   event log items unless ``--event-log`` writes them (then the scan reads them too).
   Engagement rules have no half-life and the events are days old (max age 365 days):
   nothing decays.
3. The ``rules`` job is invoked through the stack (``stack.run_job``) until its run is
   done; every invocation that stops before its deadline is resumed by the next.
   Afterwards every lead is read back by key: exactly the 5 % must have a new version,
   the rest their seeded one.
4. The hourly ``rescore`` job runs the same way on the same table: 0 writes expected.

DynamoDB calls are counted on the jobs function's client with botocore's event system
(under a lock: exact) and cross-checked against the stores' own ``calls`` counters.
Read units are computed from the items each Scan page returned (DynamoDB's item size
rules, rounded up to 4 KB per page, halved: the scan reads eventually consistently);
write units from the size of each item the PutItem calls sent (rounded up to 1 KB).
The jobs function's CPU time is the thread CPU time of its invocation thread plus that
of its worker threads inside ``scan_page``, ``refresh_lead`` and ``checkpoint`` (moto
runs in the same process on other threads and is not counted).

The second table, for 10 million leads on DynamoDB on-demand, is computed from these
measured figures and list prices; nothing in it is measured.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import shutil
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
FUNCTIONS = ROOT / "functions"
for path in (ROOT, FUNCTIONS):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from bench import BENCH_LEAD_ID_KEY  # noqa: E402
from bench.ingest import item_size, machine  # noqa: E402

KB = 1024
READ_UNIT = 4 * KB
PAGE_BYTES = 1024 * 1024  # a Scan page reads up to 1 MB
CHANGED_EVERY = 20  # every 20th lead: 5 %
BIG = 10 ** 9  # seconds: schedules the bench does not drive never fire

# List prices, us-east-1 (N. Virginia), as published on the AWS pricing pages (DynamoDB
# on-demand for the Standard table class since the price reduction of 1 November 2024;
# Lambda on arm64, the template's architecture). Not a quote: check before relying on them.
PRICE_PER_MILLION_WRU = 0.625
PRICE_PER_MILLION_RRU = 0.125
PRICE_LAMBDA_GB_S_ARM = 0.0000133334
PRICE_LAMBDA_PER_MILLION_REQUESTS = 0.20
FULL_VCPU_MB = 1769  # Lambda: CPU in proportion to memory, one vCPU at 1,769 MB
LAMBDA_MARGIN_S = 30  # Rescoring.margin_s: an invocation stops this long before its deadline
OVERLAP = 5  # every-minute invocations of 300 s working one run at once
PAPER_LEADS = 10_000_000

RULES_V1 = {
    "language": 2,
    "version": "bench.1",
    "fit": {
        "grades": {"A": 60, "B": 40, "C": 10},
        "rules": [
            {"id": "has_title", "when": {"trait": "job_title", "exists": True}, "points": 15},
            {"id": "executive", "when": {"trait": "job_title", "in": ["CTO", "VP Marketing", "CEO"]}, "points": 10},
            {"id": "big_company", "when": {"trait": "company_size", "gte": 1000}, "points": 20},
            {"id": "target_industry", "when": {"trait": "industry", "in": ["software", "finance"]}, "points": 10},
            {"id": "home_market", "when": {"trait": "country", "in": ["Norway", "Germany", "United States"]},
             "points": 5},
            {"id": "public_sector", "when": {"trait": "sector", "equals": "public"}, "points": 5},
        ],
    },
    "engagement": {
        "rules": [
            {"id": "page_view", "when": {"event": "page_viewed"}, "points": 2, "cap": 20},
            {"id": "pricing_page", "when": {"all": [{"event": "page_viewed"},
                                                    {"property": "url", "contains_any": ["/pricing"]}]},
             "points": 10},
            {"id": "content", "when": {"event": "content_downloaded"}, "points": 8},
            {"id": "form", "when": {"event": "form_submitted"}, "points": 15, "conversion": True},
        ],
    },
    "lifecycle": {
        # Out of reach: the bench measures re-scoring, not stage moves (a move would
        # also write the stage index and invoke the handoff).
        "mql": {"when": {"all": [{"fit_grade": "A"}, {"metric": "engagement", "gte": 100000}]}},
        "sql": {"when": {"all": [{"fit_grade": "A"}, {"metric": "engagement", "gte": 200000}]}},
        "bant": {"budget": {"trait": "budget", "exists": True}, "authority": {"trait": "authority", "exists": True},
                 "need": {"trait": "need", "exists": True}, "timeline": {"trait": "timeline", "exists": True}},
    },
}
CHANGED_RULE = "public_sector"
CHANGED_TRAIT = ("sector", "public")
NEW_POINTS = 30


def rules_text(version: str, public_points: float) -> str:
    import yaml

    data = json.loads(json.dumps(RULES_V1))
    data["version"] = version
    for rule in data["fit"]["rules"]:
        if rule["id"] == CHANGED_RULE:
            rule["points"] = public_points
    return yaml.safe_dump(data, sort_keys=False)


# -- seeding ------------------------------------------------------------------------------


TITLES = [None, "Analyst", "Engineer", "VP Marketing", "CTO", "CEO"]
SIZES = [None, 12, 180, 900, 2500, 40000]
INDUSTRIES = [None, "software", "finance", "retail", "education"]
COUNTRIES = [None, "Norway", "Germany", "United States", "Brazil"]
PAGES = ["/", "/blog/scoring", "/blog/decay", "/docs/start", "/customers", "/pricing", "/pricing/enterprise"]


def template_events(n: int, rng: random.Random, now: datetime) -> list[dict[str, Any]]:
    """One template lead's events (as dicts; the email is set per lead): an identify with
    traits, then page views, maybe a download and a form, all 2 to 30 days ago."""
    traits = {k: v for k, v in (("job_title", rng.choice(TITLES)), ("company_size", rng.choice(SIZES)),
                                ("industry", rng.choice(INDUSTRIES)), ("country", rng.choice(COUNTRIES)),
                                ("company", f"Company {n}")) if v is not None}
    start = now - timedelta(days=rng.uniform(10, 30))
    events = [{"type": "identify", "traits": traits, "at": start}]
    at = start
    for _ in range(rng.randint(1, 9)):
        at += timedelta(minutes=rng.uniform(1, 600))
        events.append({"type": "page_viewed", "properties": {"url": f"https://acme.example{rng.choice(PAGES)}",
                                                              "title": "Acme", "referrer": "https://www.google.com/"},
                       "at": at})
    if rng.random() < 0.3:
        at += timedelta(minutes=rng.uniform(1, 600))
        events.append({"type": "content_downloaded", "properties": {"asset": "lead-scoring-guide.pdf"}, "at": at})
    if rng.random() < 0.2:
        at += timedelta(minutes=rng.uniform(1, 600))
        events.append({"type": "form_submitted", "properties": {"form_kind": "contact_request",
                                                                 "message": "Please call me about pricing"},
                       "at": at})
    for event in events:
        event["at"] = min(event["at"], now - timedelta(days=2))
        event["event_id"] = "r_" + "%032x" % rng.getrandbits(128)
    return events


class Template:
    """A lead built by the engine from its events, to be copied under other ids."""

    def __init__(self, n: int, events: list[dict[str, Any]], changed: bool, rules: Any):
        from leadflow.domain.engine import apply_event, new_lead
        from leadflow.domain.events import AppliedEvent
        from bench import bench_lead_ids

        self.n, self.changed = n, changed
        email = f"template{n}@company{n}.example"
        self.applied: list[AppliedEvent] = []
        lead = None
        for raw in events:
            traits = dict(raw.get("traits", {}))
            if changed and raw["type"] == "identify":
                traits[CHANGED_TRAIT[0]] = CHANGED_TRAIT[1]
            event = AppliedEvent(event_id=raw["event_id"], type=raw["type"], occurred_at=raw["at"],
                                 received_at=raw["at"] + timedelta(seconds=1), email=email,
                                 properties=raw.get("properties", {}), traits=traits)
            if lead is None:
                lead = new_lead(bench_lead_ids().for_email(email), email=email, now=event.received_at)
            lead = apply_event(lead, event, rules, event.received_at).lead
            self.applied.append(event)
        assert lead is not None
        self.lead = lead
        self.version = len(events)  # one conditional put per event, as the API writes

    def copy(self, i: int) -> Any:
        """The template as lead number `i`: its own email and id, the moves' ids with it."""
        from leadflow.domain.engine import move_id
        from bench import bench_lead_ids

        email = f"lead{i:08d}@company{self.n}.example"
        lead_id = bench_lead_ids().for_email(email)
        history = [m.model_copy(update={"move_id": move_id(lead_id, m.cause.event_id or "", m.to_stage)})
                   for m in self.lead.history]
        renamed = {m.move_id: h.move_id for m, h in zip(self.lead.history, history)}
        applied = [{**a, "email": email} for a in self.lead.applied]
        return self.lead.model_copy(update={
            "lead_id": lead_id, "email": email, "history": history, "version": self.version,
            "moves": [renamed.get(m, m) for m in self.lead.moves], "applied": applied,
        })


def build_templates(rules_v1: Any, rules_v2: Any, now: datetime, count: int = 48) -> list[tuple[Template, Template]]:
    """`count` pairs (unchanged, changed): the same events, the changed one with the
    trait the new rules score differently. Checked before anything is written: under
    the deployed rules nothing changes at `now` (no decay); under the new rules exactly
    the changed ones change, with no stage move and no event log needed."""
    from leadflow.domain.engine import needs_events, refresh
    from leadflow.usecases.leads import _same_figures

    rng = random.Random(20261101)
    pairs = []
    for n in range(count):
        events = template_events(n, rng, now)
        pair = (Template(n, events, False, rules_v1), Template(n + count, events, True, rules_v1))
        for template in pair:
            lead = template.lead
            assert not needs_events(lead, rules_v1) and not needs_events(lead, rules_v2)
            same = refresh(lead, rules_v1, now)
            assert not same.moves and _same_figures(same.lead, lead), f"template {template.n} decays"
            new = refresh(lead, rules_v2, now)
            assert not new.moves, f"template {template.n} would move under the new rules"
            assert _same_figures(new.lead, lead) != template.changed, f"template {template.n}"
        pairs.append(pair)
    return pairs


def seed(client: Any, table: str, pairs: list[tuple[Template, Template]], n: int, event_log: bool,
         progress: Callable[[str], None]) -> dict[str, Any]:
    """Write n leads (and with `event_log` their events) with BatchWriteItem."""
    from boto3.dynamodb.types import TypeSerializer

    from leadflow.adapters.dynamodb.keys import event_sk, lead_pk
    from leadflow.adapters.dynamodb.store import _to_dynamo, lead_to_item

    ser = TypeSerializer().serialize
    ids: list[str] = []
    versions: list[int] = []
    changed: set[str] = set()
    sizes: list[int] = []
    written_events = log_items = log_total = calls = 0
    batch: list[dict] = []

    def flush() -> None:
        nonlocal calls, batch
        requests = {table: batch}
        while requests:
            calls += 1
            requests = client.batch_write_item(RequestItems=requests).get("UnprocessedItems") or {}
        batch = []

    def add(item: dict) -> None:
        batch.append({"PutRequest": {"Item": item}})
        if len(batch) == 25:
            flush()

    def event_items(template: Template, lead_id: str, email: str) -> list[dict]:
        """The event log items the stream would write for the lead (see append_events)."""
        out = []
        for event in template.applied:
            rec = {**event.to_record(), "email": email}
            data = _to_dynamo({**rec, "PK": lead_pk(lead_id), "SK": event_sk(rec["received_at"], rec["event_id"]),
                               "kind": "event"})
            out.append({k: ser(v) for k, v in data.items()})
        return out

    log_bytes: dict[int, tuple[int, int]] = {}  # per template: its event log's items and bytes (same-length ids)
    started = time.perf_counter()
    for i in range(n):
        template = pairs[i % len(pairs)][1 if i % CHANGED_EVERY == 0 else 0]
        lead = template.copy(i)
        if template.n not in log_bytes:
            items = event_items(template, lead.lead_id, lead.email)
            log_bytes[template.n] = (len(items), sum(item_size(it) for it in items))
        would_items, would_bytes = log_bytes[template.n]
        log_items += would_items
        log_total += would_bytes
        item = {k: ser(v) for k, v in lead_to_item(lead).items()}
        ids.append(lead.lead_id)
        versions.append(lead.version)
        sizes.append(item_size(item))
        if template.changed:
            changed.add(lead.lead_id)
        add(item)
        if event_log:
            for ev_item in event_items(template, lead.lead_id, lead.email):
                written_events += 1
                add(ev_item)
        if (i + 1) % 10_000 == 0:
            progress(f"    seeded {i + 1:,} leads ({time.perf_counter() - started:.0f} s)")
    if batch:
        flush()
    return {"ids": ids, "versions": versions, "changed": changed, "sizes": sizes, "event_items": written_events,
            "log_items": log_items, "log_bytes": log_total, "batch_calls": calls,
            "seconds": time.perf_counter() - started}


# -- measuring ------------------------------------------------------------------------------


class Meter:
    """Every DynamoDB call the jobs function's client makes, counted under a lock, with
    what the unit arithmetic needs: each PutItem's item, each Scan page's items."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.calls: Counter[str] = Counter()
            self.errors: Counter[str] = Counter()
            self.puts: list[dict] = []
            self.run_updates = 0  # segment items created and checkpointed (each under 1 KB: 1 write unit)
            self.pages: list[tuple[list[dict], int]] = []

    def attach(self, client: Any) -> None:
        client.meta.events.register("before-parameter-build.dynamodb", self._before)
        client.meta.events.register("after-call.dynamodb", self._after)

    def _before(self, params: dict, model: Any, context: dict | None = None, **_: Any) -> None:
        with self.lock:
            self.calls[model.name] += 1
            if model.name == "PutItem":
                self.puts.append(params["Item"])
                if context is not None:
                    context["bench_kind"] = params["Item"]["PK"]["S"].split("#", 1)[0]
            elif model.name == "UpdateItem" and params["Key"]["PK"]["S"].startswith("RUN#"):
                self.run_updates += 1
            elif model.name == "BatchWriteItem":
                for requests in params["RequestItems"].values():
                    self.run_updates += sum(1 for r in requests
                                            if r.get("PutRequest", {}).get("Item", {}).get("PK", {}).get("S", "")
                                            .startswith("RUN#"))

    def _after(self, parsed: dict, model: Any, context: dict | None = None, **_: Any) -> None:
        code = (parsed.get("Error") or {}).get("Code")
        with self.lock:
            if code:
                kind = (context or {}).get("bench_kind")
                self.errors[f"{model.name}{'(' + kind + ')' if kind else ''}:{code}"] += 1
            elif model.name == "Scan":
                self.pages.append((parsed.get("Items", []), int(parsed.get("ScannedCount", 0))))

    def figures(self) -> dict[str, Any]:
        with self.lock:
            lead_puts = [it for it in self.puts if it["PK"]["S"].startswith("LEAD#")]
            run_puts = [it for it in self.puts if it["PK"]["S"].startswith("RUN#")]
            page_bytes = [sum(item_size(it) for it in items) for items, _ in self.pages]
            return {
                "calls": dict(self.calls), "errors": dict(self.errors),
                "lead_puts": len(lead_puts),
                "lead_put_wcu": sum(max(1, math.ceil(item_size(it) / KB)) for it in lead_puts),
                "lead_put_bytes": sum(item_size(it) for it in lead_puts),
                "run_puts": len(run_puts) + self.run_updates,
                "run_put_wcu": sum(max(1, math.ceil(item_size(it) / KB)) for it in run_puts) + self.run_updates,
                "run_item_bytes": max((item_size(it) for it in run_puts), default=0),
                "pages": len(self.pages),
                "scan_items": sum(len(items) for items, _ in self.pages),
                "scanned": sum(n for _, n in self.pages),
                "scan_bytes": sum(page_bytes),
                "scan_rru": sum(math.ceil(b / READ_UNIT) for b in page_bytes) / 2,
            }


class CpuClock:
    """The jobs function's CPU time: its worker threads' time inside the calls that do
    the work (the invocation's own thread is timed around each invocation)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seconds = 0.0
        self._patched: list[tuple[type, str, Any]] = []

    def wrap(self, cls: type, name: str) -> None:
        original = getattr(cls, name)
        clock = self

        def timed(*args: Any, **kwargs: Any) -> Any:
            if threading.current_thread() is threading.main_thread():
                return original(*args, **kwargs)
            started = time.thread_time()
            try:
                return original(*args, **kwargs)
            finally:
                spent = time.thread_time() - started
                with clock.lock:
                    clock.seconds += spent

        setattr(cls, name, timed)
        self._patched.append((cls, name, original))

    def restore(self) -> None:
        for cls, name, original in reversed(self._patched):
            setattr(cls, name, original)
        self._patched = []


def drive(stack: Any, job: str, cpu: CpuClock, progress: Callable[[str], None]) -> dict[str, Any]:
    """Invoke the job until its run is done; the invocations, wall and CPU seconds."""
    invocations: list[dict[str, Any]] = []
    cpu_before = cpu.seconds
    main_cpu = 0.0
    started = time.perf_counter()
    while True:
        t, c = time.perf_counter(), time.thread_time()
        result = stack.run_job(job)["result"]
        main_cpu += time.thread_time() - c
        paused = result.get("paused")
        state = paused or result
        invocations.append({"seconds": time.perf_counter() - t, "leads": state.get("leads"),
                            "status": state.get("status")})
        progress(f"    {job} invocation {len(invocations)}: {invocations[-1]['seconds']:.1f} s, "
                 f"{state.get('leads')} leads so far, {state.get('status') or list(result)}")
        if state.get("status") == "done":
            break
        if state.get("status") != "running":
            raise SystemExit(f"{job}: unexpected result {result}")
        if len(invocations) > 10_000:
            raise SystemExit(f"{job}: no end after {len(invocations)} invocations")
    return {"result": state, "invocations": invocations, "seconds": time.perf_counter() - started,
            "cpu": cpu.seconds - cpu_before + main_cpu}


def read_versions(client: Any, table: str, ids: list[str]) -> dict[str, int]:
    """Each lead's stored version, by key (BatchGetItem; a full scan pages through moto
    in quadratic time)."""
    out: dict[str, int] = {}
    for start in range(0, len(ids), 100):
        request: dict[str, Any] = {table: {
            "Keys": [{"PK": {"S": f"LEAD#{i}"}, "SK": {"S": "LEAD"}} for i in ids[start:start + 100]],
            "ProjectionExpression": "lead_id, #v", "ExpressionAttributeNames": {"#v": "version"},
            "ConsistentRead": True}}
        while request:
            resp = client.batch_get_item(RequestItems=request)
            for item in resp["Responses"].get(table, []):
                out[item["lead_id"]["S"]] = int(item["version"]["N"])
            request = resp.get("UnprocessedKeys") or {}
    return out


def post(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def run_item_size(segments: int, cursor: dict) -> int:
    """The size of one segment's item after a checkpoint (mid-way, at `cursor`), in the
    format `DynamoRulesStore.checkpoint` writes: what each page's checkpoint costs."""
    counts = {"leads": 156_250, "written": 7_812, "logs_read": 0, "moves": {}}
    item = {"PK": {"S": "RUN#rules"}, "SK": {"S": "SEG#rules-20261101T120000-abcdef#063"}, "kind": {"S": "run_segment"},
            "seg": {"N": str(segments - 1)}, "done": {"BOOL": False}, "lease_until": {"N": "1790000000.123"},
            "owner": {"S": "0" * 32}, "counts": {"S": json.dumps(counts)}, "cursor": {"S": json.dumps(cursor)}}
    return item_size(item)


# -- the run --------------------------------------------------------------------------------


def run(args: argparse.Namespace, progress: Callable[[str], None]) -> dict[str, Any]:
    from leadflow_infra.local.stack import LocalStack

    tmp = Path(tempfile.mkdtemp(prefix="leadflow-rescore-bench-"))
    rules_path = tmp / "rules.yaml"
    rules_path.write_text(rules_text("bench.1", 5), encoding="utf-8")
    env = {"LEADFLOW_RULES": str(rules_path),
           "LEADFLOW_RULES_TTL_SECONDS": "0",  # the publish is in force at once (60 s in AWS)
           "POWERTOOLS_SERVICE_NAME": "leadflow", "POWERTOOLS_METRICS_DISABLED": "true",
           "POWERTOOLS_LOG_LEVEL": "WARNING", "LEADFLOW_LEAD_ID_KEY": BENCH_LEAD_ID_KEY}
    saved = {k: os.environ.get(k) for k in (*env, "LEADFLOW_API_KEY")}
    os.environ.update(env)
    os.environ.pop("LEADFLOW_API_KEY", None)

    from leadflow.settings import parse_rules_text

    rules_v1 = parse_rules_text(rules_text("bench.1", 5), "bench.1")
    rules_v2 = parse_rules_text(rules_text("bench.2", NEW_POINTS), "bench.2")
    assert rules_v1.signals_key == rules_v2.signals_key
    now = datetime.now(timezone.utc)
    progress("... building template leads")
    pairs = build_templates(rules_v1, rules_v2, now)

    stack = LocalStack(api="leadflow.handlers.api:handler", jobs="leadflow.handlers.jobs:handler", stream=None,
                       handoff=None, handoff_retry=None, persist=False, port=0, data_dir=tmp / "stack",
                       template=ROOT / "template.yaml", rescore_every=BIG, rules_every=BIG, sla_every=BIG,
                       funnel_every=BIG, access_log=False)
    cpu = CpuClock()
    out: dict[str, Any] = {"leads": args.leads, "event_log": args.event_log}
    try:
        stack.start()
        out["template_timeout_s"] = stack.functions["jobs"].timeout_s
        if args.timeout:
            stack.functions["jobs"].timeout_s = float(args.timeout)
        out["timeout_s"] = stack.functions["jobs"].timeout_s
        out["memory_mb"] = stack.functions["jobs"].memory_mb
        seed_client = stack.client("dynamodb")
        progress(f"... seeding {args.leads:,} leads{' and their event logs' if args.event_log else ''}")
        seeded = seed(seed_client, stack.table_name, pairs, args.leads, args.event_log, progress)
        out["seed"] = {k: v for k, v in seeded.items() if k not in ("ids", "versions", "changed", "sizes")}
        out["changed"] = len(seeded["changed"])
        out["lead_bytes"] = sum(seeded["sizes"])
        out["lead_wcu_each"] = sum(max(1, math.ceil(s / KB)) for s in seeded["sizes"]) / args.leads
        out["item_count"] = int(seed_client.describe_table(TableName=stack.table_name)["Table"]["ItemCount"])

        from leadflow import container
        from leadflow.adapters.dynamodb.rules_store import DynamoRulesStore
        from leadflow.adapters.dynamodb.store import DynamoLeadStore
        from leadflow.usecases.leads import LeadService
        from leadflow.usecases.rescoring import segments_for

        meter = Meter()
        meter.attach(container.store().client)
        assert container.rules_store().client is container.store().client
        cpu.wrap(LeadService, "refresh_lead")
        cpu.wrap(DynamoLeadStore, "scan_page")
        cpu.wrap(DynamoRulesStore, "checkpoint")

        progress("... publishing the new rules (POST /v1/rules)")
        status, answer = post(stack.url + "/v1/rules", {"source": rules_text("bench.2", NEW_POINTS), "by": "bench",
                                                         "announce": False})
        if status != 200:
            raise SystemExit(f"publish failed: {status} {answer}")
        out["published"] = answer

        for job in ("rules", "rescore"):
            progress(f"... the {job} job")
            meter.reset()
            before = {"store": Counter(container.store().calls), "rules": Counter(container.rules_store().calls)}
            driven = drive(stack, job, cpu, progress)
            store_calls = Counter(container.store().calls) - before["store"]
            store_calls.update(Counter(container.rules_store().calls) - before["rules"])
            figures = meter.figures()
            if args.event_log:  # read by the scan, dropped by its filter: not among the items returned
                figures["scan_bytes"] += seeded["log_bytes"]
                figures["scan_rru"] += seeded["log_bytes"] / READ_UNIT / 2
            progress(f"    reading {len(seeded['ids']):,} versions back")
            versions = read_versions(seed_client, stack.table_name, seeded["ids"])
            written = {i for i, v0 in zip(seeded["ids"], seeded["versions"]) if versions.get(i) != v0}
            expected = seeded["changed"] if job == "rules" else set()
            bumped_once = all(versions.get(i) == v0 + 1 for i, v0 in zip(seeded["ids"], seeded["versions"])
                              if i in seeded["changed"])
            out[job] = {
                **driven, **figures, "store_calls": dict(store_calls),
                "written_ids": len(written), "exact": written == expected and (job != "rules" or bumped_once),
                "missing": len(expected - written), "unexpected": len(written - expected),
            }
            if job == "rules":  # the rescore run must find the leads as the rules run left them
                seeded["versions"] = [versions.get(i, v) for i, v in zip(seeded["ids"], seeded["versions"])]
            if args.json:  # a long run keeps what it measured so far
                args.json.write_text(json.dumps(out, indent=2, default=str), encoding="utf-8")
            progress(f"    {job}: {out[job]['seconds']:.0f} s, {len(out[job]['invocations'])} invocations, "
                     f"{out[job]['lead_puts']} leads written, calls {out[job]['calls']}, exact: {out[job]['exact']}")
        out["segments_local"] = out["rules"]["result"].get("segments")
        out["segments_paper"] = segments_for(PAPER_LEADS)
        cursor = {"PK": {"S": f"LEAD#{seeded['ids'][-1]}"}, "SK": {"S": "LEAD"}}  # a scan's LastEvaluatedKey
        out["run_item_bytes_64"] = run_item_size(out["segments_paper"], cursor)
    finally:
        cpu.restore()
        stack.stop()
        shutil.rmtree(tmp, ignore_errors=True)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return out


# -- the report -----------------------------------------------------------------------------


def fmt(n: float, digits: int = 0) -> str:
    return f"{n:,.{digits}f}"


def measured_table(out: dict[str, Any]) -> list[str]:
    n = out["leads"]
    lines = [
        f"| job ({fmt(n)} leads, {fmt(out['changed'])} changed) | invocations | seconds | leads/s | segments | "
        "Scan calls | PutItem leads (per lead) | Query (event logs read) | GetItem | conflicts | "
        "scan RRU | write WRU | job CPU s (per 1,000 leads) | exact |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for job, label in (("rules", "`rules` (after the publish)"), ("rescore", "`rescore` (hourly)")):
        r = out[job]
        res = r["result"]
        calls = r["calls"]
        conflicts = sum(v for k, v in r["errors"].items() if k.startswith("PutItem(LEAD):ConditionalCheckFailed"))
        wru = r["lead_put_wcu"] + r["run_put_wcu"]
        lines.append(
            f"| {label} | {len(r['invocations'])} | {r['seconds']:.1f} | {fmt(res['leads'] / r['seconds'])} | "
            f"{res['segments']} | {fmt(calls.get('Scan', 0))} | {fmt(r['lead_puts'])} ({r['lead_puts'] / n:.3f}) | "
            f"{fmt(calls.get('Query', 0))} ({res['logs_read']}) | {fmt(calls.get('GetItem', 0))} | {conflicts} | "
            f"{fmt(r['scan_rru'], 1)} | {fmt(wru)} ({fmt(r['lead_put_wcu'])} leads + {fmt(r['run_put_wcu'])} "
            f"checkpoints) | {r['cpu']:.1f} ({r['cpu'] / n * 1000:.2f}) | "
            f"{'yes' if r['exact'] else 'NO'} |")
    return lines


def notes(out: dict[str, Any]) -> list[str]:
    n = out["leads"]
    r, s = out["rules"], out["rescore"]
    other = {k: v for k, v in r["calls"].items() if k not in ("Scan", "PutItem", "Query", "GetItem")}
    mismatch = [job for job in ("rules", "rescore") if out[job]["store_calls"] != out[job]["calls"]]
    lines = [
        f"- Table: {fmt(n)} lead items, {fmt(out['lead_bytes'] / n)} bytes each on average (DynamoDB's item size: "
        f"{out['lead_wcu_each']:.2f} write units per put), {fmt(out['item_count'])} items in all "
        f"({'with' if out['event_log'] else 'no'} event log items: "
        + (f"{fmt(out['seed']['event_items'])}, {fmt(out['seed']['log_bytes'] / n)} bytes per lead"
           if out["event_log"] else "the new rules change points only, the same `signals_key`, so no lead needs its "
           "event log and none is read") + f"). Seeded in {out['seed']['seconds']:.0f} s "
        f"({fmt(out['seed']['batch_calls'])} BatchWriteItem calls).",
        f"- The publish: `{CHANGED_RULE}` 5 -> {NEW_POINTS} points (fit), every {CHANGED_EVERY}th lead has the "
        f"trait. "
        f"Leads written by the `rules` run: {fmt(r['written_ids'])} "
        f"(expected {fmt(out['changed'])}; missing {r['missing']}, unexpected {r['unexpected']}); "
        f"by the `rescore` run: {fmt(s['written_ids'])} (expected 0). "
        f"Every other lead kept its version. Scan pages: {fmt(r['pages'])} and {fmt(s['pages'])}, "
        f"{fmt(r['scanned'])} and {fmt(s['scanned'])} items scanned.",
        f"- Jobs function: {out['memory_mb']} MB, timeout {out['timeout_s']:.0f} s, stops {LAMBDA_MARGIN_S} s before "
        f"it; each invocation that stopped was resumed by the next (`rules`: {len(r['invocations'])}, `rescore`: "
        f"{len(s['invocations'])} invocations; the longest took "
        f"{max(i['seconds'] for i in r['invocations'] + s['invocations']):.0f} s). Run items written (the header, "
        f"each segment's item, and one UpdateItem of the segment a page): "
        f"{fmt(r['run_puts'])} and {fmt(s['run_puts'])}; the header up to {fmt(r['run_item_bytes'])} bytes.",
        f"- Other calls: {other or 'none'}; GetItem: the rules head and version, and the run's header (read "
        f"once a page, so a replaced run stops) "
        f"(LEADFLOW_RULES_TTL_SECONDS=0 here: every look reads the head). Counted on the client under a lock; "
        + ("the stores' own counters agree." if not mismatch else
           f"the stores' own counters differ for {', '.join(mismatch)} (their `calls` dict is updated from four "
           f"threads without a lock): "
           + "; ".join(f"{job}: {out[job]['store_calls']} vs {out[job]['calls']}" for job in mismatch) + "."),
        "- Local rate: moto answers every call in this process (one GIL, 2 cores shared with the job); "
        "the job's own CPU time is the last column but one.",
    ]
    return lines


def paper(out: dict[str, Any]) -> tuple[list[str], list[str]]:
    n, big = out["leads"], PAPER_LEADS
    r, s = out["rules"], out["rescore"]
    share = out["memory_mb"] / FULL_VCPU_MB
    work_s = out["template_timeout_s"] - LAMBDA_MARGIN_S
    scan_bytes_per_lead = r["scan_bytes"] / n
    pages = math.ceil(big * scan_bytes_per_lead / PAGE_BYTES)
    scan_rru = big * scan_bytes_per_lead / READ_UNIT / 2
    run_wcu = max(1, math.ceil(out["run_item_bytes_64"] / KB))
    log_per_lead = out["seed"]["log_bytes"] / n
    log_rru = big * log_per_lead / READ_UNIT / 2
    rows = []
    costs = {}
    for job, write_share in (("rules", r["lead_puts"] / n), ("rescore", s["lead_puts"] / n)):
        m = out[job]
        writes = big * write_share
        wru_each = (m["lead_put_wcu"] / m["lead_puts"]) if m["lead_puts"] else 0
        wru = writes * wru_each + pages * run_wcu
        cpu_per_lead = m["cpu"] / n
        lambda_s = big * cpu_per_lead / share
        invocations = math.ceil(lambda_s / work_s)
        gb_s = lambda_s * out["memory_mb"] / 1024
        dollars = (scan_rru * PRICE_PER_MILLION_RRU + wru * PRICE_PER_MILLION_WRU) / 1e6 \
            + gb_s * PRICE_LAMBDA_GB_S_ARM + invocations * PRICE_LAMBDA_PER_MILLION_REQUESTS / 1e6
        costs[job] = {"dollars": dollars, "invocations": invocations, "lambda_s": lambda_s, "scan_rru": scan_rru,
                      "wru": wru}
        rows.append(
            f"| `{job}` | {fmt(writes)} | {fmt(scan_rru)} | {fmt(wru)} ({fmt(writes * wru_each)} leads + "
            f"{fmt(pages * run_wcu)} checkpoints) | {fmt(gb_s)} | {fmt(invocations)} | "
            f"{lambda_s / 3600:.1f} h | ${dollars:,.2f} |")
    hourly = costs["rescore"]
    pass_hours = hourly["invocations"] * 5 / OVERLAP / 60
    runs_per_month = 720 if pass_hours <= 1 else 720 / math.ceil(pass_hours)
    table = [
        f"Estimate (computed, not measured): {fmt(big)} leads on DynamoDB on-demand, from the measured per-lead "
        f"figures at {fmt(n)} leads.",
        "",
        "| run | leads written | scan RRU | WRU | Lambda GB-s | invocations | Lambda time | cost (list price) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        *rows,
    ]
    assumptions = [
        f"- Scan: {fmt(scan_bytes_per_lead)} bytes read per lead (measured: the items the pages returned), "
        f"{fmt(big * scan_bytes_per_lead / 1e9, 1)} GB in {fmt(pages)} pages of 1 MB, eventually consistent "
        f"(half a read unit per 4 KB)"
        + (", the event log items included." if out["event_log"] else
           f". Only lead items were in the table; in production each lead's event log (SK=EVENT#...) sits in the "
           f"same table and a Scan reads it too before its filter drops it. These leads' events make "
           f"{out['seed']['log_items'] / n:.1f} event log items, {fmt(log_per_lead)} bytes per lead (computed from "
           f"the items the stream would write, not written: run with --event-log to write them): "
           f"+{fmt(log_rru)} RRU per pass at {fmt(big)} leads (+${log_rru * PRICE_PER_MILLION_RRU / 1e6:,.2f}), "
           f"and Lambda time for the extra pages' transfer (not estimated)."),
        f"- Segments: `segments_for({fmt(big)})` = {out['segments_paper']} (the local run: {out['segments_local']}); "
        f"each invocation claims up to 4 of them (Rescoring.workers); the every-minute `rules` job starts a new "
        f"invocation while earlier ones still work (300 s each), so up to {OVERLAP} invocations, "
        f"{OVERLAP * 4} segments, work one run side by side.",
        f"- Writes: {r['lead_puts'] / n:.1%} of the leads (measured) at the measured write units per lead put; "
        f"checkpoints: one UpdateItem of the segment's item per page, {fmt(out['run_item_bytes_64'])} bytes "
        f"({run_wcu} WRU; computed from what `checkpoint` writes).",
        f"- Lambda: the measured job CPU per lead ({r['cpu'] / n * 1000:.2f} and {s['cpu'] / n * 1000:.2f} ms for "
        f"`rules` and `rescore`) on one core of this machine, taken as equal to a Graviton vCPU (not measured), "
        f"divided by the CPU share of {out['memory_mb']} MB ({out['memory_mb']}/{FULL_VCPU_MB} of a vCPU: Lambda "
        f"allocates CPU in proportion to memory). Assumed CPU-bound: DynamoDB's latency overlaps with the work of "
        f"the other three threads. {work_s:.0f} s of work per invocation (the template's "
        f"{out['template_timeout_s']:.0f} s timeout; it stops "
        f"{LAMBDA_MARGIN_S} s before); billed duration = the work time.",
        f"- Calendar time: a new `rules` invocation starts every minute and each works 270 s, so {OVERLAP} "
        f"overlap: a publish takes about {fmt(costs['rules']['invocations'])} invocations / {OVERLAP} at a time x "
        f"5 min = {costs['rules']['invocations'] * 5 / OVERLAP / 60:.1f} h. The hourly `rescore` pass is helped by "
        f"the same every-minute invocations (their time left after any publish run): about "
        f"{pass_hours:.1f} h a pass. A new pass starts at the first hourly run after the last one finished, so "
        f"{runs_per_month:,.0f} passes a month (720 when a pass takes under an hour): "
        f"${hourly['dollars'] * runs_per_month:,.0f} a month at ${hourly['dollars']:,.2f} a pass.",
        f"- Prices (us-east-1 list prices, not a quote): ${PRICE_PER_MILLION_RRU} per million read request units, "
        f"${PRICE_PER_MILLION_WRU} per million write request units (on-demand, Standard table class), "
        f"${PRICE_LAMBDA_GB_S_ARM} per GB-s (arm64) and ${PRICE_LAMBDA_PER_MILLION_REQUESTS} per million requests. "
        f"Not included: storage, PITR, streams, the idle every-minute invocations that find the run held "
        f"(a few reads each), and the stage index (no stage changes here; a moved lead writes it too).",
    ]
    return table, assumptions


def report(out: dict[str, Any], markdown: bool) -> str:
    lines = [f"## Re-scoring {fmt(out['leads'])} leads on the local stack (measured)", ""]
    lines += machine()
    lines.append("")
    lines += measured_table(out)
    lines.append("")
    lines += notes(out)
    lines.append("")
    table, assumptions = paper(out)
    lines += ["## 10 million leads on DynamoDB on-demand: estimate (computed, not measured)", ""]
    lines += table
    lines.append("")
    lines += assumptions
    if not markdown:
        lines = [line.strip("| ").replace(" | ", "  ") for line in lines if not line.startswith("| ---")]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leads", type=int, default=100_000)
    parser.add_argument("--timeout", type=float, default=None,
                        help="the jobs function's timeout in seconds (default: the template's); every invocation "
                             "stops 30 s before it, so 31 makes each one work about a second")
    parser.add_argument("--event-log", action="store_true",
                        help="also write each lead's event log items (the scan then reads them too)")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--json", type=Path, default=None, help="also write the raw figures to this file")
    args = parser.parse_args(argv)
    if args.leads < CHANGED_EVERY:
        parser.error(f"--leads must be at least {CHANGED_EVERY}")
    if args.timeout is not None and args.timeout <= LAMBDA_MARGIN_S:
        parser.error(f"--timeout must be over {LAMBDA_MARGIN_S} s (the run's margin)")

    def progress(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    with contextlib.redirect_stdout(sys.stderr):  # Powertools prints its ColdStart metric whatever the settings
        out = run(args, progress)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, default=str), encoding="utf-8")
    print(report(out, args.markdown))
    ok = all(out[job]["exact"] for job in ("rules", "rescore"))
    if not ok:
        print("\nthe leads written are not exactly the changed ones: see the table", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
