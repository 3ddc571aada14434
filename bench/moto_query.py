"""Query cost in the local stack's moto: a lead list page and the funnel's stage count,
before and after ``fast_moto``'s Query, at several table sizes.

    python -m bench.moto_query                         # 5,000 and 20,000 leads, before and after
    python -m bench.moto_query --sizes 5000 20000 100000 --before-up-to 20000

One process, moto in-process (``mock_aws``) with the local stack's patches
(``make_moto_fast``), the template's table (``create_table``,
``template_table_properties``). Measured through the store the API uses
(``DynamoLeadStore``), with a boto3 client:

- **page**: ``index_page('GSI2', 'L', limit=25)``, the first page of the console's
  lead list (GSI2 is keys-only; its one partition ``L`` holds every lead, sort key
  ``<created_at, epoch milliseconds>``), newest first; **page 2** resumes from its key;
- **list page**: the whole of ``GET /v1/leads?limit=25`` without HTTP (``LeadLister.page``:
  the index page, a ``BatchGetItem`` of its leads, each lead's summary with its scores
  decayed to now), and the second page from its cursor;
- **search**: the same index narrowed by a sort-key prefix (``begins_with``) that no lead
  has, the worst case for a range condition (nothing to return, the whole partition
  after the bound);
- **count**: ``count_stage('lead')``, the funnel's ``Select=COUNT`` over the stage index
  GSI1 (a quarter of the leads), page after page of 1 MB;
- **write + page**: an UpdateItem that moves one lead within GSI2, then the first page
  (what the console pays under ingest: the kept index brought up to date, then read);
- **first page**: the first Query of an index after loading, which builds the kept index
  from the table (once per index and process).

*before* is moto's own ``Table.query`` (the local stack's other patches stay in place),
*after* the local stack's. Each figure is the median of the repeats (one run for the
slow ones). Leads are realistic items (``bench.ingest.lead_items``: built by the engine
from a sign-up and a page view); above 2,000 leads each further lead is a copy of one of
those under its own lead id (keys and index keys rewritten), since building each costs
about 5 ms. They are stored with moto's own ``Table.put_item`` (the item-size check off
while loading, ``moto_size_check_off``), not through HTTP: loading is not what is
measured.

Writes bench/moto-query-results.md.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path
from typing import Any, Callable

from bench.ingest import lead_items, moto_size_check_off  # also puts functions/ on sys.path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "moto-query-results.md"
TABLE = "t"
BASE = 2_000


def _leads(n: int) -> list[dict[str, Any]]:
    base = lead_items(min(n, BASE))
    items = list(base)
    for i in range(len(base), n):
        template = base[i % len(base)]
        old = template["lead_id"]["S"]
        new = f"ld_{i:024x}"
        items.append({name: ({"S": value["S"].replace(old, new)} if "S" in value and old in value["S"] else value)
                      for name, value in template.items()})
    return items


def _timed(call: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = call()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def measure(n: int, before: bool, repeats: int) -> dict[str, Any]:
    import boto3
    from moto import mock_aws
    from moto.dynamodb.models import dynamodb_backends
    from moto.dynamodb.models.table import Table

    from leadflow.adapters.dynamodb.store import DynamoLeadStore
    from leadflow_infra.local.fast_moto import make_moto_fast
    from leadflow_infra.local.tables import create_table, template_table_properties

    make_moto_fast()
    fast_query = Table.query
    items = _leads(n)
    row: dict[str, Any] = {"leads": n}
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        create_table(client, template_table_properties(), TABLE)
        table = dynamodb_backends["123456789012"]["us-east-1"].get_table(TABLE)
        started = time.perf_counter()
        with moto_size_check_off():
            for item in items:
                table.put_item(item)
        row["load_s"] = time.perf_counter() - started
        store = DynamoLeadStore(TABLE, client)
        newest = max(items, key=lambda item: item["LC"]["S"])
        moved = {"PK": newest["PK"], "SK": newest["SK"]}
        clock = iter(range(10**6))

        def page() -> Any:
            return store.index_page("GSI2", "L", limit=25)

        def page_two() -> Any:
            return store.index_page("GSI2", "L", limit=25, start=first[1])

        def search() -> Any:
            return store.index_page("GSI2", "L", prefix="x", limit=25)

        def count() -> int:
            return store.count_stage("lead")

        from bench import BENCH_LEAD_ID_KEY
        from leadflow.domain.lead import LeadIds  # noqa: I001
        from leadflow.domain.listing import parse_list_query
        from leadflow.settings import rules as file_rules
        from leadflow.usecases.lead_list import LeadLister
        from leadflow.usecases.leads import LeadService

        lister = LeadLister(LeadService(store, file_rules(), ids=LeadIds(BENCH_LEAD_ID_KEY.encode())))

        def list_page() -> Any:  # GET /v1/leads without HTTP: the index, the leads, their summaries
            return lister.page(parse_list_query({"limit": "25"}))

        def list_page_two() -> Any:
            return lister.page(parse_list_query({"limit": "25"}), listed["next_cursor"])

        def write_and_page() -> Any:
            client.update_item(TableName=TABLE, Key=moved, UpdateExpression="SET LC = :s",
                               ExpressionAttributeValues={":s": {"S": f"{946684800000 + next(clock):013d}"}})
            return page()

        first_s, first = _timed(page, 1)
        row["after"] = {"first page": first_s}
        listed = list_page()
        assert len(listed["items"]) == 25 and listed["next_cursor"], listed.keys()
        for name, call, times in (("page", page, repeats), ("page 2", page_two, repeats),
                                  ("search", search, repeats), ("count", count, max(1, repeats // 3)),
                                  ("list page", list_page, repeats), ("list page 2", list_page_two, repeats),
                                  ("write + page", write_and_page, repeats)):
            row["after"][name], result = _timed(call, times)
            if name == "count":
                row["count"] = result
        if before:
            expected = page()
            Table.query = Table.query.__wrapped__
            try:
                row["before"] = {}
                for name, call in (("page", page), ("page 2", page_two), ("search", search), ("count", count),
                                   ("write + page", write_and_page)):
                    row["before"][name], result = _timed(call, 1)
                    if name == "count":
                        assert result == row["count"], (result, row["count"])
                    elif name == "page":
                        assert result == expected, "moto's own first page differs"
            finally:
                Table.query = fast_query
    return row


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    return f"{seconds * 1000:,.1f} ms" if seconds < 1 else f"{seconds:,.2f} s"


def report(rows: list[dict[str, Any]]) -> str:
    lines = [
        "# Query in the local stack's moto: before and after",
        "",
        f"`python -m bench.moto_query` on {platform.python_implementation()} {platform.python_version()}, "
        f"{platform.machine()}; moto in-process, the template's table. *before*: moto's own `Table.query`; "
        "*after*: `fast_moto`'s. Median of the repeats (*before*: one run).",
        "",
        "| leads | query | before | after |",
        "|---:|---|---:|---:|",
    ]
    for row in rows:
        before = row.get("before", {})
        for name in ("page", "page 2", "list page", "list page 2", "search", "count", "write + page", "first page"):
            if name not in row["after"]:
                continue
            label = {"page": "lead list, first page (GSI2, 25)", "page 2": "lead list, second page",
                     "list page": "`GET /v1/leads` page of 25, whole (index, BatchGetItem, summaries)",
                     "list page 2": "`GET /v1/leads` second page, whole (from its cursor)",
                     "search": "lead list, prefix no lead has", "count": f"count_stage('lead') ({row['count']:,} leads)",
                     "write + page": "UpdateItem, then first page",
                     "first page": "first page after loading (builds the index)"}[name]
            lines.append(f"| {row['leads']:,} | {label} | {_ms(before.get(name))} | {_ms(row['after'][name])} |")
    lines += ["", "Loading (moto's `put_item`, not measured above): " +
              ", ".join(f"{row['leads']:,} leads in {row['load_s']:.1f} s" for row in rows) + "."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[5_000, 20_000])
    parser.add_argument("--before-up-to", type=int, default=20_000,
                        help="measure moto's own query only up to this many leads (it is slow)")
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    rows = []
    for n in args.sizes:
        row = measure(n, before=n <= args.before_up_to, repeats=args.repeats)
        print(row, flush=True)
        rows.append(row)
    text = report(rows)
    RESULTS.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
