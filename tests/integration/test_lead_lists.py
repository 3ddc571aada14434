"""`GET /v1/leads` without `email`: pages of leads from the table's indexes (moto), filtered
by stage, owner, source and a search, walked with the cursor: every lead exactly once, in
order, and every bad parameter a 422 naming it."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import pytest

from tests.conftest import lead_id_for

FIRST = ["Ann", "Émile", "Bo", "Chloé", "Dag", "Eva", "Finn", "Greta", "Hugo", "Ida", "Jon", "Kari"]
LAST = ["Berg", "Zola", "Dahl", "Olsen", "Lind", "Strand", "Moe", "Haug", "Lie", "Vik"]
COMPANIES = ["Acme", "Globex", "Initech", "Umbrella", "Northwind Traders", "Fabrikam"]
SOURCES = ["google", "linkedin", None, "newsletter"]


def _people(n: int, seed: int = 3) -> list[dict]:
    rng = random.Random(seed)
    people = []
    for k in range(n):
        company = rng.choice(COMPANIES)
        first, last = rng.choice(FIRST), rng.choice(LAST)
        domain = company.split()[0].lower() + ".example"
        people.append({"email": f"{first.lower()}.{last.lower()}{k}@{domain}", "first_name": first, "last_name": last,
                       "company": company, "source": rng.choice(SOURCES), "demo": rng.random() < 0.3})
    return people


@pytest.fixture
def leads(call):
    """30 people posted through the API, one minute apart (creation order is known)."""
    start = datetime.now(timezone.utc) - timedelta(hours=2)
    people = _people(30)
    for k, p in enumerate(people):
        event = {"type": "form_submitted" if p["demo"] else "identify", "email": p["email"],
                 "occurred_at": (start + timedelta(minutes=k)).isoformat(),
                 "traits": {"first_name": p["first_name"], "last_name": p["last_name"], "company": p["company"],
                            "company_size": 40}}
        event["properties"] = {"utm_source": p["source"], "utm_medium": "cpc"} if p["source"] else {}
        if p["demo"]:
            event["properties"]["form_kind"] = "demo_request"
            event["traits"].update(budget="yes", authority="decision_maker", need="x", timeline="this_quarter")
        status, body = call("POST", "/v1/events", event)
        assert status == 200, body
        p["lead_id"], p["stage"] = body["lead_id"], body["stage"]
    return people


def _walk(call, query: str = "", limit: int = 7) -> list[dict]:
    items, cursor, pages = [], None, 0
    while True:
        q = "&".join(part for part in (query, f"limit={limit}", f"cursor={cursor}" if cursor else "") if part)
        status, page = call("GET", "/v1/leads", query=q)
        assert status == 200, page
        assert set(page) == {"items", "next_cursor"}
        items += page["items"]
        pages += 1
        assert pages < 100
        cursor = page["next_cursor"]
        if not cursor:
            return items


def test_every_lead_once_newest_first_then_oldest_first(call, leads):
    newest = _walk(call)
    assert [i["lead_id"] for i in newest] == [p["lead_id"] for p in reversed(leads)]
    oldest = _walk(call, "sort=oldest", limit=4)
    assert [i["lead_id"] for i in oldest] == [p["lead_id"] for p in leads]
    first = newest[-1]
    person = leads[0]
    assert first["email"] == person["email"] and first["company"] == person["company"]
    assert first["name"] == f"{person['first_name']} {person['last_name']}"
    assert set(first) == {"lead_id", "email", "name", "company", "stage", "stage_entered_at", "score", "fit_grade",
                          "engagement_score", "disqualified", "owner", "source", "created_at", "updated_at"}


def test_filters_by_stage_source_and_owner_match_a_plain_computation(call, leads):
    for stage in {p["stage"] for p in leads}:
        got = _walk(call, f"stage={stage}", limit=3)
        assert sorted(i["lead_id"] for i in got) == sorted(p["lead_id"] for p in leads if p["stage"] == stage)
        assert all(i["stage"] == stage for i in got)
    for source in ("google", "linkedin", "newsletter"):
        got = _walk(call, f"source={source}")
        assert [i["lead_id"] for i in got] == [p["lead_id"] for p in reversed(leads) if p["source"] == source]
    assert [i["lead_id"] for i in _walk(call, "source=direct")] == [
        p["lead_id"] for p in reversed(leads) if p["source"] is None]
    sqls = [p for p in leads if p["stage"] == "sql"]
    assert sqls
    status, _ = call("POST", f"/v1/leads/{sqls[0]['lead_id']}/feedback", {"action": "accept", "by": "ola"})
    assert status == 200
    _, lead = call("GET", f"/v1/leads/{sqls[0]['lead_id']}")
    if lead["owner"]:
        owned = _walk(call, f"owner={lead['owner']}")
        assert sqls[0]["lead_id"] in [i["lead_id"] for i in owned] and all(i["owner"] == lead["owner"] for i in owned)
    combined = _walk(call, "stage=sql&source=google", limit=2)
    assert sorted(i["lead_id"] for i in combined) == sorted(
        p["lead_id"] for p in leads if p["stage"] == "sql" and p["source"] == "google")


SEARCHES = [("ann.", "email"), ("emile", "name"), ("zola", "name, last first"), ("north", "company"),
            ("globex.ex", "domain"), ("CHLOÉ", "accents and case folded"), ("  fin ", "spaces trimmed")]


def test_search_finds_by_prefix_of_email_name_company_or_domain_each_lead_once(call, leads):
    from leadflow.domain.listing import fold

    def values(p):
        first, last = fold(p["first_name"]), fold(p["last_name"])
        return [fold(p["email"]), f"{first} {last}", f"{last} {first}", fold(p["company"]), p["email"].split("@")[1]]

    for q, what in SEARCHES:
        needle = fold(q)
        expected = {p["lead_id"] for p in leads if any(v.startswith(needle) for v in values(p))}
        assert expected, q
        got = [i["lead_id"] for i in _walk(call, f"q={q}", limit=2)]
        assert sorted(got) == sorted(expected), (q, what)


def test_an_erased_lead_leaves_every_list(call, leads):
    gone = leads[5]
    assert call("DELETE", f"/v1/leads/{gone['lead_id']}")[0] == 200
    assert gone["lead_id"] not in [i["lead_id"] for i in _walk(call)]
    assert gone["lead_id"] not in [i["lead_id"] for i in _walk(call, f"q={gone['email'][:6]}")]


@pytest.mark.parametrize("query, field", [
    ("stage=prospect", "stage"), ("sort=score", "sort"), ("limit=0", "limit"), ("limit=101", "limit"),
    ("limit=ten", "limit"), ("q=a", "q"), ("q=acme&sort=newest", "sort"), ("colour=red", "colour"),
    ("cursor=not-a-cursor", "cursor"), ("email=ann@acme.io&stage=sql", "stage"), ("q=" + "x" * 101, "q"),
    ("owner=o%E2%80%8Bla", "owner"), ("email=", "email"),
])
def test_bad_parameters_are_a_422_naming_them(call, query, field):
    status, body = call("GET", "/v1/leads", query=query)
    assert (status, body["field"]) == (422, field), body


def test_a_cursor_resumes_only_its_own_list(call, leads):
    status, page = call("GET", "/v1/leads", query="limit=3")
    assert status == 200 and page["next_cursor"]
    status, body = call("GET", "/v1/leads", query=f"limit=3&stage=sql&cursor={page['next_cursor']}")
    assert (status, body["field"]) == (422, "cursor")
    import base64
    import json

    forged = base64.urlsafe_b64encode(json.dumps({"f": "x", "i": "GSI2", "k": None}).encode()).decode()
    assert call("GET", "/v1/leads", query=f"cursor={forged}")[1]["field"] == "cursor"


def test_finding_one_lead_by_email_still_works(call, leads):
    status, lead = call("GET", "/v1/leads", query=f"email={leads[0]['email'].upper()}")
    assert status == 200 and lead["lead_id"] == leads[0]["lead_id"] == lead_id_for(leads[0]["email"])


def test_a_lead_written_before_the_lists_is_indexed_by_the_next_rescore_pass(call, aws, leads):
    """Items written before the list indexes lack their keys; the hourly pass writes each
    such lead once, even with nothing else changed."""
    from leadflow.handlers import jobs
    from tests.integration.conftest import TABLE, Context

    old = leads[3]
    from leadflow.domain.listing import INDEX_ATTRIBUTES

    names = ", ".join(sorted(INDEX_ATTRIBUTES))
    aws.update_item(TableName=TABLE, Key={"PK": {"S": f"LEAD#{old['lead_id']}"}, "SK": {"S": "LEAD"}},
                    UpdateExpression=f"REMOVE {names}")
    assert old["lead_id"] not in [i["lead_id"] for i in _walk(call)]
    before = {p["lead_id"]: aws.get_item(TableName=TABLE, Key={"PK": {"S": f"LEAD#{p['lead_id']}"},
                                                              "SK": {"S": "LEAD"}})["Item"]["version"]["N"]
              for p in leads}
    jobs.handler({"job": "rescore"}, Context("JobsFunction"))
    after = {p["lead_id"]: aws.get_item(TableName=TABLE, Key={"PK": {"S": f"LEAD#{p['lead_id']}"},
                                                             "SK": {"S": "LEAD"}})["Item"]["version"]["N"]
             for p in leads}
    assert after[old["lead_id"]] != before[old["lead_id"]]
    assert old["lead_id"] in [i["lead_id"] for i in _walk(call)]
    assert old["lead_id"] in [i["lead_id"] for i in _walk(call, f"q={old['email'][:8]}")]
    # The others carry their keys: the pass rewrites them only if their figures moved (decay).
    assert sum(after[lead] != before[lead] for lead in before) < len(leads)
