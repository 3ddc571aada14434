"""The funnel from history: what a funnel read costs at 10,000, 100,000 and a million leads,
and what counting a lead costs.

    python -m bench.funnel                      # 10,000, 100,000 and 1,000,000 leads
    python -m bench.funnel --sizes 2000         # a smoke test
    python -m bench.funnel --markdown           # the tables for the README

One process, moto in-process (``mock_aws``) with the local stack's patches, the
template's table, and the funnel's own adapter and use case (``DynamoFunnelStore``,
``FunnelKeeper``): the code `GET /v1/funnel` runs, without HTTP.

1. **Leads.** N synthetic leads over the past 365 days: 20 first-touch and last-touch
   sources (a few large), 10 forms, fit grades A-D, 60 countries, 35 owners (SQLs and
   beyond), and a funnel shape (70 % reach lead, 30 % MQL, 12 % SQL, 8 % opportunity,
   4 % won, some lost or rejected with reasons), with each stage's move dated.
2. **The sums.** Each lead's fact is computed by the domain (``fact_of``) and its
   counters added up in memory per funnel item (in chunks, on every core), then the items
   are written: the same sums counting each lead from the stream leaves (counting is
   additive), without a transaction per lead, so that a million leads load in minutes.
   Only the funnel's items are in the table: a read touches nothing else.
3. **Reads.** Each query is run 30 times: the median and p90 wall time, the median time
   of the figures computed from the items once read (the function's own work; the rest
   is the local stand-in (de)serialising the items), the Query calls, the items read and
   their read units (eventually consistent: half a unit per 4 KB, per page).
4. **Counting.** 1,000 new leads counted through ``FunnelKeeper.record`` in stream
   batches of 100 (as the stream consumer does), then the same leads moving on one
   stage: transactions, items per transaction, and write units (a transactional write
   costs 2 units per KB of each item it writes, the item's size after the write).
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT, ROOT / "functions"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from bench.ingest import item_size, machine  # noqa: E402

KB = 1024
NOW = datetime(2026, 11, 28, tzinfo=timezone.utc)
SOURCES = ["google", "linkedin", "newsletter", "partner", "webinar", "facebook", "bing", "g2", "capterra", "youtube",
           "twitter", "reddit", "podcast", "events", "referral", "affiliate", "direct-mail", "review-site", "blog",
           "quora"]
FORMS = ["demo-request", "contact-us", "ebook", "whitepaper", "webinar", "newsletter", "pricing", "trial", "quote",
         "event"]
COUNTRIES = [f"{a}{b}" for a in "ABCDEFGHIJ" for b in "ABCDEF"]  # 60 codes
OWNERS = [f"rep-{n:02d}" for n in range(35)]
REJECTIONS = ["no budget", "wrong person", "timing", "competitor", "not a fit"]
LOSSES = ["price", "competitor", "no decision", "timing"]
QUERIES = [(None, "month", None), ("source", "month", None), ("owner", "week", None), ("country", "month", None),
           ("source", "week", 90)]


def _zipf(rng: random.Random, values: list[str]) -> str:
    return rng.choices(values, weights=[1 / (i + 1) for i in range(len(values))])[0]


def synthetic_lead(n: int, rng: random.Random):
    from leadflow.domain.lead import Cause, FormConversion, Lead, Move, SalesOutcome, Touch

    created = NOW - timedelta(days=rng.uniform(0, 365))
    path = ["subscriber"]
    for stage, chance in (("lead", 0.7), ("mql", 0.43), ("sql", 0.4), ("opportunity", 0.67), ("customer", 0.5)):
        if rng.random() >= chance:
            break
        path.append(stage)
    history, at = [], created
    for a, b in zip(path, path[1:]):
        at = at + timedelta(hours=rng.uniform(1, 24 * 30))
        history.append(Move(move_id=f"m{n}-{b}", from_stage=a, to_stage=b, at=min(at, NOW), cause=Cause(kind="rule"),
                            rules_version="1", score=0, fit_grade="B", engagement_score=0))
    stage = path[-1]
    outcome = None
    if stage == "opportunity" and rng.random() < 0.5:
        outcome = SalesOutcome(result="lost", at=min(at + timedelta(days=10), NOW), reason=rng.choice(LOSSES), by="rep")
        stage = "lead"
        history.append(Move(move_id=f"m{n}-lost", from_stage="opportunity", to_stage="lead", at=outcome.at,
                            cause=Cause(kind="actor", action="lost", actor="rep"), rules_version="1", score=0,
                            fit_grade="B", engagement_score=0))
    elif stage == "sql" and rng.random() < 0.3:
        stage = "lead"
        history.append(Move(move_id=f"m{n}-rej", from_stage="sql", to_stage="lead", at=min(at + timedelta(days=2), NOW),
                            cause=Cause(kind="actor", action="reject", reason=rng.choice(REJECTIONS), actor="rep"),
                            rules_version="1", score=0, fit_grade="B", engagement_score=0))
    source = _zipf(rng, SOURCES)
    return Lead(lead_id=f"ld_{n:024d}", email=f"p{n}@bench.example", stage=stage, stage_entered_at=at,
                created_at=created, updated_at=at, version=len(history) + 1, fit_grade=rng.choice("ABCD"),
                traits={"country": rng.choice(COUNTRIES)}, owner=rng.choice(OWNERS) if "sql" in path else None,
                first_touch=Touch(source=source, at=created),
                last_touch=Touch(source=_zipf(rng, SOURCES) if rng.random() < 0.4 else source, at=at),
                first_form=FormConversion(form=_zipf(rng, FORMS), at=created) if rng.random() < 0.8 else None,
                history=history, outcome=outcome)


def _chunk_sums(args: tuple[int, int, int]) -> dict[tuple, Counter]:
    """The summed counters of synthetic leads [start, stop), each chunk with its own seed."""
    from leadflow.domain.funnel import delta, fact_of

    start, stop, size = args
    rng = random.Random(f"{size}:{start}")
    sums: dict[tuple, Counter] = {}
    for n in range(start, stop):
        for key, counters in delta(None, fact_of(synthetic_lead(n, rng))).items():
            sums.setdefault(key, Counter()).update(counters)
    return sums


def seed(client: Any, table: str, size: int) -> dict[str, Any]:
    """The sums of every lead's counters, written as the funnel's items (generation 1).
    Leads are made and counted in chunks on every core and never kept: the sums are all
    the funnel stores."""
    from concurrent.futures import ProcessPoolExecutor

    from leadflow.adapters.dynamodb.funnel_store import cut_pk

    step = 25_000
    chunks = [(start, min(start + step, size), size) for start in range(0, size, step)]
    sums: dict[tuple, Counter] = {}
    with ProcessPoolExecutor() as pool:
        for part in pool.map(_chunk_sums, chunks):
            for key, counters in part.items():
                sums.setdefault(key, Counter()).update(counters)
    puts = []
    for (grain, cut, period, value), counters in sums.items():
        item = {"PK": {"S": cut_pk(1, grain, cut)}, "SK": {"S": f"{period}#{value}"},
                **{name: {"N": str(count)} for name, count in counters.items() if count}}
        puts.append({"PutRequest": {"Item": item}})
    for i in range(0, len(puts), 25):
        request = {table: puts[i:i + 25]}
        while request:
            request = client.batch_write_item(RequestItems=request).get("UnprocessedItems") or {}
    sizes = [item_size(p["PutRequest"]["Item"]) for p in puts]
    return {"items": len(puts), "bytes_max": max(sizes), "bytes_mean": round(statistics.mean(sizes))}


def measure_reads(keeper: Any, store: Any, repeats: int) -> list[dict[str, Any]]:
    from leadflow.domain.funnel import ALL, period_bounds, report

    out = []
    for by, grain, days in QUERIES:
        since = (NOW - timedelta(days=days)).date() if days else None
        times, computing = [], []
        for _ in range(repeats):
            started = time.perf_counter()
            answer = keeper.report(by=by, grain=grain, since=since, until=None)
            times.append(time.perf_counter() - started)
        # The figures from the items once read: the function's own work, without the
        # local stand-in's (de)serialising, which is most of the wall time above.
        lo, hi = period_bounds(grain, since, None)
        rows = list(store.rows(1, grain, by or ALL, lo, hi))
        for _ in range(repeats):
            started = time.perf_counter()
            report(rows, by=by, grain=grain, since=since, until=None)
            computing.append(time.perf_counter() - started)
        # One more read, counted: Query calls, items and their read units (per page).
        pages, items, units = 0, 0, 0.0
        kwargs: dict[str, Any] = {"TableName": store.table_name, "KeyConditionExpression": "PK = :pk"
                                  + (" AND SK >= :lo" if lo else ""),
                                  "ExpressionAttributeValues": {":pk": {"S": f"FUNNEL#1#{grain}#{by or ALL}"},
                                                                **({":lo": {"S": lo + "#"}} if lo else {})}}
        while True:
            resp = store.client.query(**kwargs)
            pages += 1
            items += len(resp["Items"])
            units += max(0.5, math.ceil(sum(item_size(i) for i in resp["Items"]) / (4 * KB)) / 2)
            if "LastEvaluatedKey" not in resp:
                break
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]
        ordered = sorted(times)
        out.append({"query": f"by={by or '-'} cohort={grain}" + (f" since=-{days}d" if days else ""),
                    "median_ms": round(statistics.median(times) * 1000, 1),
                    "p90_ms": round(ordered[max(0, math.ceil(len(ordered) * 0.9) - 1)] * 1000, 1),
                    "compute_ms": round(statistics.median(computing) * 1000, 1),
                    "queries": pages, "items": items, "read_units": units,
                    "groups": len(answer.get("groups", [])), "leads": answer["total"]["leads"]})
    return out


def measure_counting(keeper: Any, store: Any, client: Any, start: int, rng: random.Random) -> dict[str, Any]:
    """1,000 new leads through the stream path, then the same leads moving on one stage."""
    from leadflow.usecases.funnel import Change

    writes: list[list[dict]] = []

    def capture(params, **_kwargs):
        writes.append(params["TransactItems"])

    client.meta.events.register("before-parameter-build.dynamodb.TransactWriteItems", capture)
    try:
        fresh = [synthetic_lead(start + n, rng) for n in range(1000)]
        phases = {}
        for phase, changes in (("new lead", [Change(lead.lead_id, None, lead) for lead in fresh]),
                               ("a stage move", [Change(lead.lead_id, lead, moved(lead)) for lead in fresh])):
            writes.clear()
            for i in range(0, len(changes), 100):
                keeper.record(changes[i:i + 100])
            units = 0
            items = 0
            for transaction in writes:
                for op in transaction:
                    kind, body = next(iter(op.items()))
                    items += 1
                    if kind == "Delete":
                        units += 2
                        continue
                    key = {"PK": body["Item"]["PK"] if kind == "Put" else body["Key"]["PK"],
                           "SK": body["Item"]["SK"] if kind == "Put" else body["Key"]["SK"]}
                    after = client.get_item(TableName=store.table_name, Key=key).get("Item")
                    units += 2 * max(1, math.ceil(item_size(after) / KB))
            phases[phase] = {"transactions": len(writes), "items": items,
                             "items_per_transaction": round(items / max(1, len(writes)), 1),
                             "write_units": units, "write_units_per_lead": round(units / len(changes), 2)}
        return phases
    finally:
        client.meta.events.unregister("before-parameter-build.dynamodb.TransactWriteItems", capture)


def moved(lead):
    from leadflow.domain.lead import Cause, Move
    from leadflow.domain.stages import STAGES

    index = STAGES.index(lead.stage)
    if index + 1 >= len(STAGES) - 1:
        return lead.model_copy(update={"version": lead.version + 1, "owner": "rep-99"})
    to = STAGES[index + 1]
    at = min(lead.updated_at + timedelta(days=3), NOW)
    move = Move(move_id=f"{lead.lead_id}-{to}", from_stage=lead.stage, to_stage=to, at=at, cause=Cause(kind="rule"),
                rules_version="1", score=0, fit_grade="B", engagement_score=0)
    return lead.model_copy(update={"version": lead.version + 1, "stage": to, "history": [*lead.history, move],
                                   "updated_at": at})


def run(size: int, repeats: int) -> dict[str, Any]:
    import boto3
    from moto import mock_aws

    from leadflow.adapters.dynamodb.funnel_store import DynamoFunnelStore
    from leadflow.usecases.funnel import FunnelKeeper
    from leadflow_infra.local.atomic import make_dynamodb_atomic
    from leadflow_infra.local.fast_moto import make_moto_fast
    from leadflow_infra.local.tables import create_table, template_table_properties

    make_dynamodb_atomic()
    make_moto_fast()
    rng = random.Random(size)
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        table = "funnel-bench"
        create_table(client, template_table_properties(), table)
        started = time.perf_counter()
        seeded = seed(client, table, size)
        seeded["seconds"] = round(time.perf_counter() - started, 1)
        store = DynamoFunnelStore(table, client=client)
        keeper = FunnelKeeper(store)
        reads = measure_reads(keeper, store, repeats)
        counting = measure_counting(keeper, store, client, size, rng)
    return {"leads": size, "seeded": seeded, "reads": reads, "counting": counting}


def markdown(results: list[dict[str, Any]]) -> str:
    lines = ["## Funnel reads and counting (measured)", "", *machine(), "",
             ("| leads | query | median | p90 | figures from the items | Query calls | items read | read units "
              "| values |"),
             "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for result in results:
        for read in result["reads"]:
            lines.append(f"| {result['leads']:,} | `{read['query']}` | {read['median_ms']} ms | {read['p90_ms']} ms | "
                         f"{read['compute_ms']} ms | {read['queries']} | {read['items']:,} | {read['read_units']:g} | {read['groups']} |")
    lines += ["", "| leads counted | funnel items | item size (mean / max) | seeded in |",
              "| ---: | ---: | ---: | ---: |"]
    for result in results:
        s = result["seeded"]
        lines.append(f"| {result['leads']:,} | {s['items']:,} | {s['bytes_mean']:,} / {s['bytes_max']:,} bytes | "
                     f"{s['seconds']} s |")
    lines += ["", "| leads counted | counting 1,000 more | transactions | items each | write units | per lead |",
              "| ---: | --- | ---: | ---: | ---: | ---: |"]
    for result in results:
        for phase, c in result["counting"].items():
            lines.append(f"| {result['leads']:,} | {phase} | {c['transactions']} | {c['items_per_transaction']} | "
                         f"{c['write_units']:,} | {c['write_units_per_lead']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "bench" / "funnel-results.md"))
    args = parser.parse_args(argv)
    results = []
    for size in args.sizes:
        result = run(size, args.repeats)
        results.append(result)
        print(f"{size:,} leads: {result['seeded']['items']:,} funnel items; "
              + "; ".join(f"{r['query']}: {r['median_ms']} ms, {r['items']} items" for r in result["reads"]),
              file=sys.stderr)
    text = markdown(results)
    Path(args.out).write_text(text, encoding="utf-8")
    if args.markdown:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
