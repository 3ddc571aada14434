"""The funnel from history, kept from the stream, against a plain computation.

Real exports come in through `leadflow import` on a running local stack (its stream
consumer counts the funnel); the answers of `GET /v1/funnel` must equal what grouping
the same rows, or the same leads read back, gives. Then the counting is shown to be
idempotent (a batch delivered again changes nothing), to follow a lead's later changes
and an erasure, and a rebuild gives the same figures.
"""

from __future__ import annotations

import contextlib
import csv
import os
import json
import math
import urllib.parse
import urllib.request
from collections import Counter, defaultdict
from datetime import date, timezone
from pathlib import Path

import pytest

from leadflow.domain.funnel import bucket
from leadflow.domain.stages import STAGES
from leadflow_infra.importer import run_import

# One worker runs the whole module: its stack and import are made once (make test: --dist loadgroup).
pytestmark = pytest.mark.xdist_group("funnel-maven")
REPO = Path(__file__).resolve().parents[2]
MAVEN = REPO.parent / "shared" / "data" / "maven-crm" / "sales_pipeline.csv"
# Rows of each export: enough for every cut to have several values and cohorts. The whole
# exports (8,800 and 9,240 rows) take minutes: LEADFLOW_FUNNEL_ROWS=all runs them.
_ROWS = os.environ.get("LEADFLOW_FUNNEL_ROWS", "400")
ROWS = None if _ROWS == "all" else int(_ROWS)


def _get(stack, path: str, **query) -> tuple[int, object]:
    url = stack.url + path + ("?" + urllib.parse.urlencode(query) if query else "")
    try:
        with urllib.request.urlopen(url, timeout=60) as answer:
            body = answer.read().decode()
            kind = answer.headers.get("content-type", "")
            return answer.status, (json.loads(body) if kind.startswith("application/json") else body)
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read().decode())


def _month(day: str) -> str:
    return day[:7]


def _maven_rows() -> list[dict[str, str]]:
    with MAVEN.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))[:ROWS]


def _count(path: Path) -> int:
    """How many rows the test imports from an export."""
    with path.open(newline="", encoding="utf-8") as handle:
        return len(list(csv.DictReader(handle))[:ROWS])


def _nearest_rank(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, math.ceil(len(ordered) * q)) - 1]


@contextlib.contextmanager
def _imported(tmp_path_factory, example: str, export: Path):
    """A local stack with an example's rules and the first rows of its export imported
    through `leadflow import`; the stream drained."""
    import os

    from leadflow import container
    from leadflow_infra.local.stack import LocalStack

    if not export.exists():
        pytest.skip(f"{export} is not here")
    saved = {k: os.environ.get(k) for k in ("LEADFLOW_RULES", "LEADFLOW_API_KEY")}
    os.environ["LEADFLOW_RULES"] = str(REPO / "examples" / example / "rules.yaml")
    os.environ.pop("LEADFLOW_API_KEY", None)
    work = tmp_path_factory.mktemp(example)
    stack = LocalStack(handoff=None, handoff_retry=None, jobs=None, persist=False, data_dir=work / "stack",
                       snapshot_every=0, access_log=False).start()
    try:
        summary = run_import(export, REPO / "examples" / example / "mapping.yaml", url=stack.url,
                             data_dir=work / "import", batch=50, limit=ROWS)
        assert summary.counts["rejected"] == 0 and summary.counts["imported"] == _count(export), summary.counts
        assert stack.drain(timeout=120 if ROWS else 1800)
        yield stack
    finally:
        stack.stop()
        container.reset()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture(scope="module")
def maven_stack(tmp_path_factory):
    with _imported(tmp_path_factory, "b2b-saas", MAVEN) as stack:
        yield stack


def test_maven_funnel_by_owner_equals_grouping_the_rows(maven_stack):
    rows = _maven_rows()
    status, answer = _get(maven_stack, "/v1/funnel", by="owner", cohort="month")
    assert status == 200, answer
    groups = {g["value"]: g for g in answer["groups"]}

    # Rule-independent figures straight from the rows: leads per owner and cohort
    # (engage month; Prospecting rows carry no date and are dated 2017-12-31), won and
    # lost per owner, days from engagement to won (close date).
    per_owner = Counter(r["sales_agent"] for r in rows)
    assert {v: g["leads"] for v, g in groups.items()} == dict(per_owner)
    for owner, group in groups.items():
        mine = [r for r in rows if r["sales_agent"] == owner]
        cohorts = Counter(_month(r["engage_date"] or "2017-12-31") for r in mine)
        assert {c["period"]: c["leads"] for c in group["cohorts"]} == dict(cohorts), owner
        assert group["won"] == sum(r["deal_stage"] == "Won" for r in mine)
        assert group["lost"] == sum(r["deal_stage"] == "Lost" for r in mine)
        assert group["reached"]["customer"] == group["won"]
        # Whole days between the dates, in the funnel's duration buckets (a bucket's start).
        days = [round(bucket((date.fromisoformat(r["close_date"]) - date.fromisoformat(r["engage_date"])).days * 86400)
                      / 1440, 3) for r in mine if r["deal_stage"] == "Won"]
        won = group["velocity"]["days_to_won"]
        assert won["leads"] == len(days)
        assert won["median_days"] == _nearest_rank(days, 0.5) and won["p90_days"] == _nearest_rank(days, 0.9)
    assert answer["total"]["leads"] == len(rows)
    assert answer["total"]["won"] == sum(r["deal_stage"] == "Won" for r in rows)


def _plain(leads) -> dict[str, dict]:
    """The funnel computed the plain way, lead by lead, from the leads' own histories:
    per first-touch source, per cohort month, the leads that reached each stage."""
    out: dict[str, dict] = defaultdict(lambda: {"leads": 0, "reached": Counter(), "cohorts": Counter()})
    for lead in leads:
        history = sorted(lead.history, key=lambda m: m.at)
        start = min([lead.created_at] + [m.at for m in history[:1]])
        top = max([STAGES.index(lead.stage)] + [STAGES.index(m.to_stage) for m in history])
        source = (lead.first_touch.source or lead.first_touch.medium or lead.first_touch.referrer or "direct").lower() \
            if lead.first_touch else "(none)"
        group = out[source]
        group["leads"] += 1
        group["cohorts"][start.astimezone(timezone.utc).strftime("%Y-%m")] += 1
        for stage in STAGES[:top + 1]:
            group["reached"][stage] += 1
    return out


def test_maven_funnel_reached_equals_the_leads_read_back(maven_stack):
    from leadflow.adapters.dynamodb.store import DynamoLeadStore

    leads = list(DynamoLeadStore(maven_stack.table_name, client=maven_stack.client()).scan_leads())
    assert len(leads) == _count(MAVEN)
    status, answer = _get(maven_stack, "/v1/funnel", by="source")
    assert status == 200
    plain = _plain(leads)
    assert {g["value"]: g["leads"] for g in answer["groups"]} == {k: v["leads"] for k, v in plain.items()}
    for group in answer["groups"]:
        expected = plain[group["value"]]
        assert group["reached"] == {s: expected["reached"][s] for s in STAGES}
        assert {c["period"]: c["leads"] for c in group["cohorts"]} == dict(expected["cohorts"])
        for a, b in (("lead", "mql"), ("mql", "sql"), ("sql", "opportunity"), ("opportunity", "customer"),
                     ("mql", "customer")):
            share = expected["reached"][b] / expected["reached"][a] if expected["reached"][a] else None
            assert group["conversion"][f"{a}_to_{b}"] == (None if share is None else round(share, 4))


def test_maven_funnel_csv_and_unknown_cut(maven_stack):
    status, text = _get(maven_stack, "/v1/funnel", by="country", cohort="week", format="csv")
    assert status == 200 and isinstance(text, str)
    table = list(csv.reader(text.splitlines()))
    assert table[0][:4] == ["by", "value", "period", "leads"]
    whole = [row for row in table[1:] if row[1] == "(all)" and row[2] == "(all)"]
    assert len(whole) == 1 and int(whole[0][3]) == _count(MAVEN)
    status, error = _get(maven_stack, "/v1/funnel", by="channel")
    assert status == 422 and error["field"] == "by"
    status, error = _get(maven_stack, "/v1/funnel", group_by="source")
    assert status == 422 and error["field"] == "group_by"
    status, error = _get(maven_stack, "/v1/funnel", cohort="quarter")
    assert status == 422 and error["field"] == "cohort"


def test_funnel_since_until_select_cohorts(maven_stack):
    status, whole = _get(maven_stack, "/v1/funnel", cohort="month")
    status, part = _get(maven_stack, "/v1/funnel", cohort="month", since="2017-01-01", until="2017-04-01")
    assert status == 200
    expected = [c for c in whole["total"]["cohorts"] if "2017-01" <= c["period"] <= "2017-03"]
    assert part["total"]["cohorts"] == expected
    assert part["total"]["leads"] == sum(c["leads"] for c in expected)


def test_a_redelivered_batch_changes_no_figure_and_a_rebuild_agrees(maven_stack):
    from leadflow.adapters.dynamodb.funnel_store import DynamoFunnelStore
    from leadflow.adapters.dynamodb.store import DynamoLeadStore
    from leadflow.usecases.funnel import Change, FunnelKeeper

    client = maven_stack.client()
    keeper = FunnelKeeper(DynamoFunnelStore(maven_stack.table_name, client=client))
    before = _get(maven_stack, "/v1/funnel", by="owner")[1]
    leads = list(DynamoLeadStore(maven_stack.table_name, client=client).scan_leads())
    # Every lead delivered again, as if first seen: markers say they are counted.
    counted = keeper.record([Change(lead.lead_id, None, lead) for lead in leads])
    assert counted.written == 0 and counted.stale == len(leads)
    assert _get(maven_stack, "/v1/funnel", by="owner")[1] == before

    result = keeper.rebuild(DynamoLeadStore(maven_stack.table_name, client=client).scan_leads(consistent=True))
    assert result["leads"] == _count(MAVEN) and result["failed"] == 0 and result["generation"] == before["generation"] + 1
    after = _get(maven_stack, "/v1/funnel", by="owner")[1]
    assert after["generation"] == before["generation"] + 1
    assert {k: v for k, v in after.items() if k != "generation"} == \
        {k: v for k, v in before.items() if k != "generation"}



def test_the_answer_is_the_documented_one(maven_stack):
    """A populated answer (groups, cohorts, velocity, reasons) matches what /openapi.json
    documents for it (the in-process drift check sees only an empty funnel)."""
    from jsonschema import Draft202012Validator
    from referencing import Registry
    from referencing.jsonschema import DRAFT202012

    status, document = _get(maven_stack, "/openapi.json")
    assert status == 200
    registry = Registry().with_resource("urn:doc", DRAFT202012.create_resource(document))
    validator = Draft202012Validator({"$ref": "urn:doc#/components/schemas/FunnelHistory"}, registry=registry)
    for query in ({"by": "owner", "cohort": "week"}, {"cohort": "month"}, {"by": "country"}):
        answer = _get(maven_stack, "/v1/funnel", **query)[1]
        assert answer["total"]["leads"] == _count(MAVEN)
        problems = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(answer)]
        assert not problems, problems
