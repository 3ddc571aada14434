"""The funnel from history on the X Education export, imported through `leadflow import`,
against grouping the same rows (one stack per module: a process holds one)."""

from __future__ import annotations

import csv
from collections import Counter

import pytest

from leadflow.domain.stages import STAGES
from tests.integration.test_funnel_history import REPO, ROWS, _get, _imported, _plain

# One worker runs the whole module: its stack and import are made once (make test: --dist loadgroup).
pytestmark = pytest.mark.xdist_group("funnel-xedu")
XEDU = REPO.parent / "shared" / "data" / "leads-x-education.csv"


@pytest.fixture(scope="module")
def xedu_stack(tmp_path_factory):
    with _imported(tmp_path_factory, "x-education", XEDU) as stack:
        yield stack


def test_x_education_funnel_by_source_equals_grouping_the_rows(xedu_stack):
    from leadflow.adapters.dynamodb.store import DynamoLeadStore
    from leadflow.domain.listing import fold

    with XEDU.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))[:ROWS]
    status, answer = _get(xedu_stack, "/v1/funnel", by="source", cohort="week")
    assert status == 200
    groups = {g["value"]: g for g in answer["groups"]}

    def source(row):  # the mapping's utm_source: Lead Source, google/bing capitalised, empty cells none
        cell = row["Lead Source"]
        return "(none)" if cell in ("", "Select", "NaN") else fold(cell)

    assert {v: g["leads"] for v, g in groups.items()} == dict(Counter(source(r) for r in rows))
    for value, group in groups.items():
        mine = [r for r in rows if source(r) == value]
        assert group["won"] == sum(r["Converted"] == "1" for r in mine), value
        assert group["lost"] == sum(r["Converted"] == "0" for r in mine), value
    leads = list(DynamoLeadStore(xedu_stack.table_name, client=xedu_stack.client()).scan_leads())
    plain = _plain(leads)
    for group in answer["groups"]:
        assert group["reached"] == {s: plain[group["value"]]["reached"][s] for s in STAGES}
