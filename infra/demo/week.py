"""``make demo``: a scripted week of marketing traffic through the local stack, and where every lead ended.

Starts the same in-process stack ``leadflow serve`` runs (moto, the table, the
gateway in front of the real API handler, the stream poller), on a free port and
with a throwaway data directory, so a user's saved ``.leadflow`` data is never
read or written. Then it plays a week of traffic over real HTTP: events posted
now, each carrying its own ``occurred_at`` from the last seven days, so the
engine decays them by age exactly as it would a late webhook.

The script has named personas, each with the end the default rules call for,
and a seeded crowd of ordinary leads for a realistic funnel. Everything printed
at the end is read back from the API (``GET /v1/leads/{id}``, ``GET /v1/funnel``).
A persona or check that does not end as expected is marked ``UNEXPECTED`` and
the demo exits 1, so it doubles as a live check of the rules and the engine.

The expectations are those of the shipped default rules, so ``LEADFLOW_RULES``
is ignored here (the demo adds two sales reps and a seconds-long SLA to them, which
change no score). Every sink is on and pointed at local receivers (see
``demo_handoff``), so the demo shows the handoff and never pings a real channel.
"""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

SEED = 7
SITE = "https://www.leadflow.example"
STAGES = ("subscriber", "lead", "mql", "sql", "opportunity", "customer", "evangelist")
HANDOFF = ("mql", "sql", "opportunity", "customer", "evangelist")
# Settings a user may have exported for `leadflow serve` that must not leak into the demo.
DEMO_UNSET = (
    "LEADFLOW_RULES",
    "LEADFLOW_API_KEY",
    "LEADFLOW_SLACK_WEBHOOK_URL",
    "LEADFLOW_CRM_WEBHOOK_URL",
    "LEADFLOW_CRM_WEBHOOK_SECRET",
)
UNEXPECTED = "UNEXPECTED"
# Off a terminal (CI, a pipe, the e2e test) the report is plain text at this width: the
# lead table's eight columns need about 150 characters, and a fixed width prints the
# same week as the same lines wherever it runs.
REPORT_WIDTH = 160


def report_console(stream: Any) -> Console:
    """Tables on `stream`: coloured at a terminal's own width, plain text off a terminal.

    The stream is bound here, not looked up on each print, because sys.stdout is the
    handlers' (see HandlerOutput) while the demo runs. Markup and highlighting are off:
    the report prints API answers, whose brackets are text, not styles."""
    terminal = stream.isatty()
    return Console(file=stream if terminal else TrimmedLines(stream), width=None if terminal else REPORT_WIDTH,
                   markup=False, highlight=False, emoji=False)


class TrimmedLines:
    """Plain-text report lines without the trailing spaces rich pads table cells with,
    so a log or a diff of two runs shows only what was printed."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.encoding = getattr(stream, "encoding", None) or "utf-8"
        self._partial = ""

    def write(self, text: str) -> int:
        self._partial += text
        *complete, self._partial = self._partial.split("\n")
        for line in complete:
            self.stream.write(line.rstrip() + "\n")
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return False


_console = report_console(sys.stdout)


def say(*parts: Any) -> None:
    """The demo's own output: stdout, whatever the handlers do with sys.stdout."""
    # A long line stays one line (a terminal or log viewer wraps it); tables fit the width.
    _console.print(*parts, soft_wrap=not any(isinstance(part, Table) for part in parts))


class HandlerOutput:
    """Stands in for sys.stdout while the handlers run in this process.

    Powertools prints CloudWatch EMF metric documents to stdout (in Lambda they
    become metrics); here they would only interleave with the report, so they are
    dropped. Anything else the handlers print goes to stderr.
    """

    def __init__(self, sink: Any) -> None:
        self.sink = sink
        self._partial = ""

    def write(self, text: str) -> int:
        self._partial += text
        *complete, self._partial = self._partial.split("\n")
        for line in complete:
            if not line.lstrip().startswith('{"_aws"'):
                self.sink.write(line + "\n")
        return len(text)

    def flush(self) -> None:
        self.sink.flush()

    def isatty(self) -> bool:
        return False


# -- the HTTP client ----------------------------------------------------------------------


class ApiError(RuntimeError):
    pass


class Api:
    """A tiny urllib client: every call is a real HTTP request to the stack."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.calls = 0

    def request(self, method: str, path: str, body: Any = None, *, urlencoded: bool = False) -> tuple[int, Any]:
        data = None
        headers = {"Accept": "application/json"}
        if body is not None:
            if urlencoded:
                data = urllib.parse.urlencode(body).encode()
                headers["Content-Type"] = "application/x-www-form-urlencoded"
            else:
                data = json.dumps(body).encode()
                headers["Content-Type"] = "application/json"
        return self.request_raw(method, path, data, headers)

    def request_raw(self, method: str, path: str, data: bytes | None, headers: dict[str, str]) -> tuple[int, Any]:
        headers = {"Accept": "application/json", **headers}
        req = urllib.request.Request(self.base_url + path, data=data, method=method, headers=headers)
        self.calls += 1
        try:
            with urllib.request.urlopen(req, timeout=15) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, raw.decode(errors="replace")

    def ok(self, method: str, path: str, body: Any = None, *, urlencoded: bool = False) -> Any:
        status, answer = self.request(method, path, body, urlencoded=urlencoded)
        if status != 200:
            raise ApiError(f"{method} {path} answered {status}: {answer}")
        return answer


# -- the script -----------------------------------------------------------------------------


@dataclass
class Step:
    """One delivery: a canonical event to /v1/events, or a website form post."""

    at: datetime
    who: str  # the email the step belongs to (for anonymous steps: the email it will identify as)
    body: dict[str, Any]
    form_id: str | None = None
    urlencoded: bool = False


@dataclass
class Persona:
    key: str
    name: str
    email: str
    expect: tuple[str, ...]  # acceptable final stages
    expect_dq: str | None = None  # disqualified reason the rules must give (None: must not be disqualified)
    why: str = ""
    via: str | None = None  # the rule that must have moved it into its final stage


@dataclass
class Script:
    now: datetime
    steps: list[Step] = field(default_factory=list)
    personas: list[Persona] = field(default_factory=list)
    crowd: list[str] = field(default_factory=list)
    _n: int = 0

    def when(self, days_ago: float) -> datetime:
        return self.now - timedelta(days=days_ago)

    def event(self, who: str, type_: str, days_ago: float, *, props: dict | None = None,
              traits: dict | None = None, anonymous: str | None = None, email: bool = True) -> Step:
        self._n += 1
        at = self.when(days_ago)
        body: dict[str, Any] = {"event_id": f"demo-{self._n:04d}", "type": type_, "occurred_at": iso(at)}
        if email:
            body["email"] = who
        if anonymous:
            body["anonymous_id"] = anonymous
        if props:
            body["properties"] = props
        if traits:
            body["traits"] = traits
        step = Step(at, who, body)
        self.steps.append(step)
        return step

    def form(self, who: str, form_id: str, days_ago: float, fields: dict[str, Any], *, urlencoded: bool = False) -> Step:
        self._n += 1
        at = self.when(days_ago)
        body = {"email": who, "submission_id": f"sub-{self._n:04d}", "occurred_at": iso(at), **fields}
        step = Step(at, who, body, form_id=form_id, urlencoded=urlencoded)
        self.steps.append(step)
        return step

    def view(self, who: str, path: str, days_ago: float, **kw: Any) -> Step:
        return self.event(who, "page_viewed", days_ago, props={"url": SITE + path}, **kw)


def iso(at: datetime) -> str:
    return at.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def buyer(title: str, company: str, size: int, country: str, industry: str = "software") -> dict[str, Any]:
    return {"job_title": title, "company": company, "company_size": size, "industry": industry, "country": country}


def write_personas(s: Script) -> dict[str, Step]:
    """The named cases. Returns the steps the checks after the week refer to."""
    keep: dict[str, Step] = {}

    who = "nora@brightpath.example"
    s.personas.append(Persona("newsletter", "Newsletter-only subscriber", who, ("subscriber",), via="new_contact",
                              why="a newsletter alone is never an MQL, even at fit A"))
    s.form(who, "newsletter", 6.2, {"first_name": "Nora", **buyer("Marketing Manager", "Brightpath", 220, "US")})
    s.event(who, "email_opened", 4.1, props={"campaign": "weekly-digest"})
    s.event(who, "email_opened", 0.9, props={"campaign": "weekly-digest"})

    who = "vera.lind@northwind.example"
    s.personas.append(Persona("buyer_mql", "Fitting buyer, content only", who, ("mql",), via="mql_threshold",
                              why="2 ebooks, webinar, 3x pricing: no hand raised, so not SQL"))
    s.view(who, "/blog/lead-scoring-101", 6.5, traits=buyer("VP Marketing", "Northwind Software", 800, "NO"))
    s.event(who, "content_downloaded", 5.0, props={"content_id": "ebook-scoring", "url": SITE + "/ebooks/scoring"})
    s.event(who, "email_clicked", 4.2, props={"campaign": "nurture-1"})
    s.view(who, "/pricing", 3.1)
    s.event(who, "content_downloaded", 3.0, props={"content_id": "ebook-handoff", "url": SITE + "/ebooks/handoff"})
    keep["webinar"] = s.event(who, "webinar_attended", 2.0, props={"webinar_id": "web-nov-mql-sla"})
    s.view(who, "/pricing", 1.1)
    s.view(who, "/pricing", 0.3)

    who = "omar.haddad@globex.example"
    s.personas.append(Persona("buyer_demo", "Fitting buyer who asks for a demo", who, ("sql",), via="sql_threshold",
                              why="then a demo request without BANT: SQL by score; sales accepts"))
    s.view(who, "/product", 6.8, traits=buyer("Head of Revenue Operations", "Globex", 1400, "GB"))
    s.event(who, "content_downloaded", 5.7, props={"content_id": "ebook-scoring"})
    s.event(who, "content_downloaded", 4.4, props={"content_id": "ebook-handoff"})
    s.event(who, "webinar_attended", 2.0, props={"webinar_id": "web-nov-mql-sla"})
    s.view(who, "/pricing", 2.9)
    s.view(who, "/pricing", 1.6)
    s.view(who, "/pricing", 0.8)
    s.form(who, "request-demo", 0.6, {"message": "Can we see the Salesforce sync?"})

    who = "ines@tinylabs.example"
    s.personas.append(Persona("founder", "Founder of a 4-person company", who, ("sql",), via="bant_hand_raise",
                              why="urlencoded demo form with BANT: SQL at once"))
    s.view(who, "/pricing", 1.3)
    keep["founder_form"] = s.form(who, "request-demo", 1.2, {
        "firstname": "Ines", "lastname": "Moreau", "title": "Founder", "company": "Tiny Labs", "employees": "4",
        "industry": "consulting", "country": "SE", "budget": "yes", "authority": "decision_maker",
        "need": "route inbound leads to our two sales reps", "timeline": "this_quarter",
        "page_url": SITE + "/demo"}, urlencoded=True)

    who = "sam.okafor.student@gmail.com"
    s.personas.append(Persona("student", "Student on gmail downloading ebooks", who, ("subscriber", "lead"), "student",
                              why="never reaches sales"))
    s.form(who, "ebook", 5.4, {"first_name": "Sam", "job_title": "MBA Student", "company": "University",
                               "content_title": "Lead scoring 101"})
    s.form(who, "whitepaper", 3.3, {"content_title": "The MQL to SQL handoff"})
    s.event(who, "webinar_attended", 2.0, props={"webinar_id": "web-nov-mql-sla"})
    s.view(who, "/pricing", 1.9)

    who = "carl@competitor.example"
    s.personas.append(Persona("competitor", "Competitor researching us", who, ("subscriber", "lead"), "competitor",
                              why="even after a demo request"))
    s.view(who, "/pricing", 4.0, traits=buyer("Product Marketing Manager", "Competitor Inc", 600, "US"))
    s.view(who, "/features", 3.9)
    s.event(who, "content_downloaded", 3.8, props={"content_id": "ebook-scoring"})
    s.view(who, "/pricing", 2.2)
    s.view(who, "/pricing", 1.0)
    s.form(who, "request-demo", 0.9, {"message": "Interested in pricing for a large team"})

    who = "x7k2q9@mailinator.com"
    s.personas.append(Persona("bot", "Disposable-inbox bot", who, ("subscriber", "lead"), "bot",
                              why="mailinator inbox"))
    for i, minutes in enumerate((0, 1, 2)):
        s.event(who, "content_downloaded", 2.5 - minutes / 1440, props={"content_id": f"ebook-{i}"},
                traits={"user_agent": "python-requests/2.31"} if i == 0 else None)

    who = "dana.wu@initech.example"
    s.personas.append(Persona("year_ago", "Hot a year ago, silent since", who, ("lead",),
                              why="converted a year ago (a lead for good), demo request with BANT 365 days ago: not qualified today"))
    s.event(who, "content_downloaded", 368, props={"content_id": "ebook-2025"},
            traits=buyer("Director of Sales Operations", "Initech", 900, "US"))
    s.event(who, "webinar_attended", 366, props={"webinar_id": "web-2025"})
    s.form(who, "request-demo", 365, {"budget": "yes", "authority": "decision_maker", "need": "lead routing",
                                      "timeline": "this_quarter"})

    who = "priya.nair@fabrikam.example"
    anon = "anon-5e1c0b7d"
    s.personas.append(Persona("anonymous", "Anonymous visitor who identifies later", who, ("mql",), via="mql_threshold",
                              why="anonymous pricing/product visits joined on the ebook form"))
    for path, days in (("/product", 3.6), ("/pricing", 3.5), ("/features/integrations", 2.4), ("/pricing", 2.3),
                       ("/customers", 1.5), ("/pricing", 1.4)):
        s.view(who, path, days, anonymous=anon, email=False)
    keep["identify"] = s.form(who, "ebook", 0.7, {"anonymous_id": anon, "first_name": "Priya",
                                                  **buyer("Head of Growth", "Fabrikam", 300, "GB", "fintech")})

    who = "lars.berg@contoso.example"
    s.personas.append(Persona("rejected", "SQL that sales rejects", who, ("lead",),
                              why="contact request made an SQL; rejected with a reason"))
    s.event(who, "webinar_attended", 4.5, props={"webinar_id": "web-nov-mql-sla"},
            traits=buyer("Director of IT", "Contoso Bank", 1200, "DE", "financial services"))
    s.event(who, "content_downloaded", 3.6, props={"content_id": "ebook-handoff"})
    s.view(who, "/pricing", 2.6)
    s.view(who, "/pricing", 2.1)
    s.view(who, "/pricing", 1.8)
    s.form(who, "contact-us", 1.7, {"message": "Please call me about pricing"})
    return keep


FIRST = ["Alex", "Maria", "Jonas", "Aiko", "Liam", "Sofia", "Noah", "Emma", "Lucas", "Mia", "Ola", "Kari", "Ravi",
         "Chen", "Fatima", "Diego", "Hanna", "Tom", "Julia", "Erik", "Zoe", "Ben", "Lea", "Omar", "Ida", "Max"]
COMPANIES = ["acme", "umbrella", "stark", "wayne", "hooli", "vandelay", "soylent", "cyberdyne", "tyrell", "wonka",
             "gringotts", "pied-piper", "dunder", "oscorp", "aperture", "massive", "blue-sun", "monarch", "virtucon",
             "zorg", "nakatomi", "weyland", "duff", "krusty", "lacroix", "prestige", "sirius", "axiom", "kinetic",
             "lumen", "quanta", "nimbus", "helix", "orbit"]
TITLES = [("Marketing Coordinator", 4), ("Software Engineer", 3), ("Content Specialist", 2), ("Analyst", 2),
          ("Marketing Manager", 4), ("Sales Manager", 2), ("Head of Marketing", 2), ("Director of Operations", 1),
          ("VP Sales", 1), ("CTO", 1), ("Consultant", 2), ("", 3)]
SIZES = [(3, 2), (12, 2), (30, 3), (80, 3), (150, 3), (400, 3), (1200, 2), (3000, 1), (9000, 1), (25000, 1)]
INDUSTRIES = [("software", 4), ("saas", 2), ("fintech", 1), ("marketing", 2), ("consulting", 1), ("healthcare", 2),
              ("manufacturing", 2), ("retail", 2), ("education", 1), ("government", 1), ("nonprofit", 1)]
COUNTRIES = [("US", 5), ("GB", 2), ("DE", 2), ("NO", 2), ("SE", 1), ("FR", 1), ("NL", 1), ("IN", 2), ("BR", 2),
             ("MX", 1), ("ZA", 1), ("AU", 1)]
# What the crowd does during the week, as (archetype, how many people): a realistic funnel shape.
ARCHETYPES = [("newsletter", 9), ("reader", 8), ("content", 8), ("engaged", 6), ("hand_raiser", 3)]
PAGES = ["/blog/attribution", "/blog/lead-scoring-101", "/about", "/", "/docs/getting-started", "/blog/mql-vs-sql"]
INTENT_PAGES = ["/pricing", "/product", "/features", "/integrations", "/customers"]


def pick(rng: random.Random, weighted: list[tuple[Any, int]]) -> Any:
    return rng.choices([v for v, _ in weighted], weights=[w for _, w in weighted])[0]


# Where the crowd came from (utm_source, utm_medium on its first delivery); None: no UTM.
SOURCES = [(("google", "cpc"), 4), (("linkedin", "social"), 3), (("newsletter", "email"), 2),
           (("partner", "referral"), 2), (None, 2)]


def write_crowd(s: Script, rng: random.Random) -> None:
    """Ordinary leads: seeded, so every run plays the same week. Each first delivery
    carries the campaign that brought the lead (a random stream of its own, so adding
    sources left the crowd itself as it was)."""
    origins = random.Random(SEED + 1)
    first_steps = len(s.steps)
    kinds = [kind for kind, n in ARCHETYPES for _ in range(n)]
    rng.shuffle(kinds)
    companies = rng.sample(COMPANIES, len(kinds))
    for company, kind in zip(companies, kinds):
        first = rng.choice(FIRST)
        who = f"{first.lower()}@{company}.example"
        s.crowd.append(who)
        traits = {"first_name": first, "company": company.replace("-", " ").title()}
        title = pick(rng, TITLES)
        if title:
            traits["job_title"] = title
        traits |= {"company_size": pick(rng, SIZES), "industry": pick(rng, INDUSTRIES), "country": pick(rng, COUNTRIES)}
        days = sorted((rng.uniform(0.1, 6.9) for _ in range(8)), reverse=True)
        if kind == "newsletter":
            s.form(who, "newsletter", days[0], traits)
            for d in days[1:1 + rng.randint(0, 3)]:
                s.event(who, rng.choice(["email_opened", "email_opened", "email_clicked"]), d)
        elif kind == "reader":
            s.event(who, "email_opened", days[0], traits=traits)
            for d in days[1:2 + rng.randint(0, 4)]:
                if rng.random() < 0.5:
                    s.view(who, rng.choice(PAGES + INTENT_PAGES[:1]), d)
                else:
                    s.event(who, rng.choice(["email_opened", "email_clicked"]), d)
        elif kind == "content":
            s.form(who, rng.choice(["ebook", "whitepaper", "webinar"]), days[0], traits)
            for d in days[1:1 + rng.randint(1, 4)]:
                s.view(who, rng.choice(PAGES + INTENT_PAGES), d)
            if rng.random() < 0.4:
                s.event(who, "email_clicked", days[-1])
        elif kind == "engaged":
            s.form(who, "ebook", days[0], traits)
            s.event(who, "webinar_attended", days[2], props={"webinar_id": "web-nov-mql-sla"})
            for d in days[3:3 + rng.randint(2, 4)]:
                s.view(who, rng.choice(INTENT_PAGES + ["/pricing"]), d)
            if rng.random() < 0.5:
                s.event(who, "content_downloaded", days[-1], props={"content_id": "ebook-handoff"})
        else:  # hand_raiser
            s.view(who, "/pricing", days[0], traits=traits)
            s.event(who, "content_downloaded", days[1], props={"content_id": "ebook-scoring"})
            if rng.random() < 0.5:
                s.event(who, "webinar_attended", days[2], props={"webinar_id": "web-nov-mql-sla"})
            s.view(who, "/pricing", days[4])
            s.view(who, "/pricing", days[6])
            s.form(who, rng.choice(["request-demo", "contact-us"]), days[-1], {"message": "Talk to sales"})
    firsts: dict[str, Step] = {}
    for step in s.steps[first_steps:]:
        if step.who not in firsts or step.at < firsts[step.who].at:
            firsts[step.who] = step
    for who in s.crowd:
        origin = pick(origins, SOURCES)
        if origin is None:
            continue
        step = firsts[who]
        utm = {"utm_source": origin[0], "utm_medium": origin[1], "utm_campaign": "nov-demo"}
        if step.form_id is not None:
            step.body.update(utm)
        else:
            step.body["properties"] = {**step.body.get("properties", {}), **utm}


# -- playing the week -------------------------------------------------------------------------


@dataclass
class Tally:
    events: int = 0
    people: set[str] = field(default_factory=set)
    new: int = 0
    mql: int = 0
    sql: int = 0


def deliver(api: Api, step: Step) -> dict[str, Any]:
    """The lead as the step left it. A public form tells the visitor only that it was
    received, so the demo, like sales, reads the lead through the API."""
    if step.form_id is None:
        return api.ok("POST", "/v1/events", step.body)
    answer = api.ok("POST", f"/v1/forms/{step.form_id}", step.body, urlencoded=step.urlencoded)
    if answer != {"accepted": True}:
        raise ApiError(f"the public form answered more than it should: {answer}")
    if not step.body.get("email"):
        return answer
    return api.ok("GET", "/v1/leads?" + urllib.parse.urlencode({"email": step.body["email"]}))


def play_week(api: Api, script: Script) -> dict[str, str]:
    """Post every step in event-time order; returns email -> lead_id as the API answered."""
    lead_ids: dict[str, str] = {}
    stage_now: dict[str, str] = {}
    days: dict[str, Tally] = {}
    older = Tally()
    today = script.now.date()
    for step in sorted(script.steps, key=lambda st: (st.at, st.body.get("event_id") or st.body.get("submission_id"))):
        answer = deliver(api, step)
        age = (script.now - step.at).days
        label = "today" if step.at.date() == today else step.at.strftime("%a %d %b")
        tally = older if age > 7 else days.setdefault(label, Tally())
        tally.events += 1
        tally.people.add(step.who)
        if step.body.get("email"):
            lead_ids[step.who] = answer["lead_id"]
            before, stage_now[step.who] = stage_now.get(step.who), answer["stage"]
            tally.new += before is None
            tally.mql += answer["stage"] == "mql" and before != "mql"
            tally.sql += answer["stage"] == "sql" and before != "sql"
    say(week_table(({"a year ago": older} if older.events else {}) | days))
    return lead_ids


def week_table(days: dict[str, Tally]) -> Table:
    """The week a day a column, as a calendar reads ("a year ago": old activity delivered late)."""
    table = report_table()
    table.add_column("")
    for day in days:
        table.add_column(day, justify="right")
    for label, figure in (("events", lambda t: t.events), ("people", lambda t: len(t.people)),
                          ("new contacts", lambda t: t.new), ("new MQL", lambda t: t.mql),
                          ("new SQL", lambda t: t.sql)):
        table.add_row(label, *(str(figure(t)) for t in days.values()))
    return table


# -- checks and the report ------------------------------------------------------------------


class Report:
    def __init__(self) -> None:
        self.checks: list[tuple[bool, str, str]] = []
        self.failures = 0

    def check(self, ok: bool, what: str, result: str) -> None:
        self.failures += not ok
        self.checks.append((ok, what, result))


def entering_move(lead: dict[str, Any]) -> dict[str, Any] | None:
    """The history entry that moved the lead into its current stage."""
    history = lead.get("history") or []
    return next((m for m in reversed(history) if m["to_stage"] == lead["stage"] and m.get("from_stage") != m["to_stage"]),
                history[-1] if history else None)


def entered_by(lead: dict[str, Any]) -> str:
    """The cause of the move into the lead's current stage, as its history records it."""
    history = lead.get("history") or []
    entry = entering_move(lead)
    if entry is None:
        return "-"
    cause = entry["cause"]
    how = cause.get("rule") or cause.get("action") or cause["kind"]
    if cause.get("reason"):
        how += f"({cause['reason']})"
    if any(m["cause"].get("action") == "accept" for m in history):
        how += "+accept"
    return how


def top_reasons(lead: dict[str, Any], n: int = 2) -> str:
    lines = [line for line in lead.get("explanation") or [] if line.get("points")]
    lines.sort(key=lambda line: -abs(line["points"]))  # stable: the API's order breaks ties
    return ", ".join(f"{line['rule']} {line['points']:+.0f}" for line in lines[:n]) or "-"


def persona_verdict(p: Persona, lead: dict[str, Any]) -> tuple[bool, str]:
    """Whether the persona ended as the rules say, and where it ended (and, if not, what was expected)."""
    stage, dq = lead["stage"], lead.get("disqualified_reason") if lead.get("disqualified") else None
    got = f"-> {stage}" + (f", disqualified: {dq}" if dq else "")
    ok = stage in p.expect and dq == p.expect_dq
    if p.via:
        rule = ((entering_move(lead) or {}).get("cause") or {}).get("rule")
        got += f" via {rule}"
        ok = ok and rule == p.via
    want = " or ".join(p.expect) + (f", disqualified: {p.expect_dq}" if p.expect_dq else ", not disqualified")
    want += f" via {p.via}" if p.via else ""
    return ok, got if ok else f"{got}, expected {want}"


def run_checks(api: Api, script: Script, keep: dict[str, Step], ids: dict[str, str], report: Report) -> None:
    by_key = {p.key: p for p in script.personas}

    # Redeliveries: the same event id again answers as the first time and changes nothing.
    for label, step in (("webhook redelivery of a webinar event", keep["webinar"]),
                        ("double-submitted demo form (same submission)", keep["founder_form"])):
        lead_id = ids[step.who]
        before = api.ok("GET", f"/v1/leads/{lead_id}")
        answer = deliver(api, step)
        after = api.ok("GET", f"/v1/leads/{lead_id}")
        same = all(before[k] == after[k] for k in ("stage", "events_applied", "history", "traits"))
        if step.form_id is None:
            report.check(answer.get("duplicate") is True and same, label,
                         f"duplicate={answer.get('duplicate')}, lead unchanged={same}")
        else:  # a public form answers the same either way: the lead shows it was applied once
            report.check(same, label, f"answered as the first time, lead unchanged={same}")

    # A honeypot-filled form post is accepted silently and creates nothing.
    spam = "seo-offers@bulkmail.example"
    status, answer = api.request("POST", "/v1/forms/ebook", {"email": spam, "first_name": "Buy", "_hp": "http://x.example"},
                                 urlencoded=True)
    found, _ = api.request("GET", "/v1/leads?" + urllib.parse.urlencode({"email": spam}))
    report.check(status == 200 and "lead_id" not in (answer or {}) and found == 404, "honeypot form post",
                 f"answered {status} {json.dumps(answer)}, lead lookup {found}")

    # The anonymous visitor's week joined the lead when she identified.
    p = by_key["anonymous"]
    lead = api.ok("GET", f"/v1/leads/{ids[p.email]}")
    anon = keep["identify"].body["anonymous_id"]
    rules_seen = {line["rule"] for line in lead.get("explanation") or []}
    joined = anon in (lead.get("anonymous_ids") or []) and {"pricing_page", "product_page"} <= rules_seen
    report.check(joined, f"anonymous history joined {p.email}",
                 f"anonymous_ids={lead.get('anonymous_ids')}, pricing/product signals {'counted' if joined else 'missing'}")

    # Sales feedback over the API: reject an SQL with a reason (the accept is a Slack button, below).
    for key, action, reason in (("rejected", "reject", "no_budget_this_year"),):
        p = by_key[key]
        body = {"action": action, "by": "sam.seller@leadflow.example", **({"reason": reason} if reason else {})}
        status, answer = api.request("POST", f"/v1/leads/{ids[p.email]}/feedback", body)
        move = (answer or {}).get("move") or {}
        report.check(status == 200 and move.get("from_stage") == "sql", f"sales {action} of {p.email}",
                     f"{status}, {move.get('from_stage')} -> {move.get('to_stage') or (answer or {}).get('message')}")


def wait_healthy(api: Api, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if api.request("GET", "/healthz")[0] == 200:
                return True
        except OSError:
            pass
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)


def main() -> int:
    global _console
    report_stream = sys.stdout
    _console = report_console(report_stream)
    sys.stdout = HandlerOutput(sys.stderr)
    try:
        return run()
    finally:
        sys.stdout = report_stream


def run() -> int:
    warnings.filterwarnings("ignore", message="No application metrics to publish")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    from leadflow_infra.demo import handoff as demo_handoff

    for name in DEMO_UNSET + demo_handoff.SINK_VARIABLES:
        os.environ.pop(name, None)
    from leadflow_infra.local.stack import LocalStack

    started = time.monotonic()
    rng = random.Random(SEED)
    now = datetime.now(timezone.utc).replace(microsecond=0)
    script = Script(now)
    keep = write_personas(script)
    write_crowd(script, rng)

    report = Report()
    with tempfile.TemporaryDirectory(prefix="leadflow-demo-") as data_dir, demo_handoff.Receivers() as receivers:
        os.environ.update(receivers.environment(LEADFLOW_RULES=str(demo_handoff.demo_rules(Path(data_dir))),
                                                LEADFLOW_SINK_TIMEOUT="2", LEADFLOW_RETRY_BASE_SECONDS="0.25"))
        stack = LocalStack(port=0, data_dir=data_dir, persist=False, access_log=False, sla_every=1.0)
        try:
            stack.start()
        except Exception as exc:  # noqa: BLE001 - tell the user why, in one line
            print(f"demo: cannot start the local stack: {exc}", file=sys.stderr)
            return 2
        try:
            say(f"leadflow demo: local stack on {stack.url} (throwaway data, default rules)")
            api = Api(stack.url)
            if not wait_healthy(api, 15.0):
                print("demo: the local stack did not become healthy", file=sys.stderr)
                return 2
            people = len(script.personas) + len(script.crowd)
            say(f"Playing a week of traffic: {len(script.steps)} deliveries from {people} people "
                f"(events sent now, each with its own occurred_at)")
            ids = play_week(api, script)
            run_checks(api, script, keep, ids, report)
            say("Checking the handoff (Slack, CRM webhook, HubSpot, Salesforce, SLA watchdog)…")
            by_key = {p.key: p for p in script.personas}
            owners = demo_handoff.check_handoff(api, stack, receivers, ids, report.check, by_key["buyer_demo"].email)
            rows = [(p.email, p) for p in script.personas] + [(email, None) for email in script.crowd]
            leads = {email: api.ok("GET", f"/v1/leads/{ids[email]}") for email, _ in rows}
            by_source = check_funnel_by_source(api, stack, leads, report.check)
            print_report(rows, leads, by_source, report, started, owners)
            if keeps_serving():
                say(f"\nConsole: {stack.url}/console  (this week's leads; the funnel by source: "
                    f"{stack.url}/console/funnel; the API's page: {stack.url}/docs)")
                say("The stack serves until Ctrl-C.")
                serve_until_interrupted()
            else:
                say(f"\nConsole: {stack.url}/console served this week's leads while the demo ran; "
                    "run `make demo` in a terminal to keep it open.")
        except (ApiError, OSError) as exc:
            print(f"demo: {exc}", file=sys.stderr)
            return 2
        finally:
            stack.stop()
    return 1 if report.failures else 0


def keeps_serving() -> bool:
    """In a terminal the demo ends by serving its stack, so its console can be opened;
    piped (CI, a log) it exits. LEADFLOW_DEMO_SERVE=1 or 0 decides instead."""
    choice = os.environ.get("LEADFLOW_DEMO_SERVE")
    if choice in ("0", "1"):
        return choice == "1"
    return _console.is_terminal and sys.stdin.isatty()


def serve_until_interrupted() -> None:
    """Wait for Ctrl-C (or SIGTERM), then return: the caller stops the stack."""
    def stop(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        say("Stopping the demo's stack.")
    finally:
        signal.signal(signal.SIGTERM, previous)


def report_table(title: str | None = None) -> Table:
    """The report's table style: a rule under the header, no frame, so plain text stays light.
    Columns that may wrap fold long words (a terminal narrower than the table) rather than cut them."""
    return Table(title=title, title_justify="left", title_style="bold", header_style="bold", box=box.SIMPLE_HEAD,
                 show_edge=False, pad_edge=False, collapse_padding=True)


def outcome(ok: bool) -> Text:
    return Text("ok", style="green") if ok else Text(UNEXPECTED, style="bold red")


def plain_by_source(leads: dict[str, dict]) -> dict[str, dict[str, int]]:
    """The funnel by first-touch source computed the plain way from the leads as the API
    shows them: leads, and how many reached each stage (a skipped stage counts)."""
    out: dict[str, dict[str, int]] = {}
    for lead in leads.values():
        touch = lead.get("first_touch")
        source = (touch.get("source") or touch.get("medium") or "direct").lower() if touch else "(none)"
        top = max([STAGES.index(lead["stage"])] + [STAGES.index(m["to_stage"]) for m in lead.get("history") or []])
        row = out.setdefault(source, {"leads": 0, **{stage: 0 for stage in STAGES}})
        row["leads"] += 1
        for stage in STAGES[:top + 1]:
            row[stage] += 1
    return out


def check_funnel_by_source(api: Api, stack: Any, leads: dict[str, dict], check: Any) -> dict[str, Any]:
    """`GET /v1/funnel?by=source` once the stream has counted every lead, against the
    plain computation over the same leads."""
    expected = plain_by_source(leads)
    deadline = time.monotonic() + 30
    while True:
        stack.drain(timeout=5)
        answer = api.ok("GET", "/v1/funnel?by=source&cohort=week")
        got = {g["value"]: {"leads": g["leads"], **g["reached"]} for g in answer.get("groups", [])}
        if got == expected or time.monotonic() > deadline:
            break
    ok = got == expected
    check(ok, "funnel by source equals counting the leads",
          f"GET /v1/funnel?by=source: {len(expected)} sources, {sum(r['leads'] for r in expected.values())} "
          "leads, every figure as counted" if ok
          else f"differs for {sorted(k for k in set(got) | set(expected) if got.get(k) != expected.get(k))[:5]}")
    return answer


def source_table(answer: dict[str, Any]) -> Table:
    """The funnel from history by first-touch source, and the whole (`all`)."""
    table = report_table("Funnel by first-touch source")
    table.add_column("source", no_wrap=True)
    for name in ("leads", "MQL", "SQL", "lead→MQL", "MQL→SQL"):
        table.add_column(name, justify="right")
    for group in [*answer.get("groups", []), {"value": "all", **answer["total"]}]:
        rate = group["conversion"]
        table.add_row(group["value"], str(group["leads"]), str(group["reached"]["mql"]), str(group["reached"]["sql"]),
                      "–" if rate["lead_to_mql"] is None else f"{rate['lead_to_mql']:.0%}",
                      "–" if rate["mql_to_sql"] is None else f"{rate['mql_to_sql']:.0%}")
    return table


def print_report(rows: list[tuple[str, Persona | None]], leads: dict[str, dict], funnel: dict, report: Report,
                 started: float, owners: list[tuple[str, list[str]]]) -> None:
    crowd_rows = [(e, p) for e, p in rows if p is None]
    crowd_rows.sort(key=lambda r: (-STAGES.index(leads[r[0]]["stage"]), -leads[r[0]]["score"]))
    ordered = [r for r in rows if r[1] is not None] + crowd_rows

    table = report_table("Leads  (* = persona; eng = engagement score decayed to now; "
                         "top reasons = the two largest lines of the explanation)")
    table.add_column("", no_wrap=True)
    table.add_column("lead", no_wrap=True)
    table.add_column("stage", no_wrap=True)
    table.add_column("fit", justify="center", no_wrap=True)
    table.add_column("eng", justify="right", no_wrap=True)
    table.add_column("disqualified", no_wrap=True)
    table.add_column("entered by", overflow="fold")
    table.add_column("top reasons", overflow="fold")
    personas = report_table("Personas")
    personas.add_column("", no_wrap=True)
    personas.add_column("persona", no_wrap=True)
    personas.add_column("ended", no_wrap=True)
    personas.add_column("why", overflow="fold")
    for email, persona in ordered:
        lead = leads[email]
        mark = Text()
        dq = lead.get("disqualified_reason") if lead.get("disqualified") else None
        if persona is not None:
            ok, verdict = persona_verdict(persona, lead)
            report.failures += not ok
            personas.add_row(outcome(ok), persona.name, verdict, persona.why)
            if not ok:
                mark.append(f"  {UNEXPECTED}", style="bold red")
        if dq and any(m["to_stage"] in HANDOFF and m["cause"]["kind"] != "actor" for m in lead.get("history") or []):
            report.failures += 1
            mark.append(f"  {UNEXPECTED}: disqualified lead was handed to sales", style="bold red")
        table.add_row("*" if persona is not None else "", email, lead["stage"], lead["fit_grade"],
                      f"{lead['engagement_score']:.1f}", dq or "-", entered_by(lead), Text(top_reasons(lead)) + mark,
                      style="cyan" if persona is not None else None)

    checks = report_table("Checks")
    checks.add_column("", no_wrap=True)
    checks.add_column("check", overflow="fold")
    checks.add_column("result", overflow="fold")
    for ok, what, result in report.checks:
        checks.add_row(outcome(ok), what, result)

    handoff = report_table("Handoff: SQLs by owner (weighted round-robin ola:2, siri:1)")
    handoff.add_column("owner", no_wrap=True)
    handoff.add_column("SQLs", justify="right")
    handoff.add_column("leads", overflow="fold")
    for owner, emails in owners:
        handoff.add_row(owner, str(len(emails)), ", ".join(emails))

    for part in (table, personas, checks, handoff, source_table(funnel)):
        say()
        say(part)

    stage_counts = Counter(leads[e]["stage"] for e, _ in rows)
    dq_count = sum(1 for e, _ in rows if leads[e].get("disqualified"))
    verdict = "all as expected" if not report.failures else f"{report.failures} {UNEXPECTED}"
    say()
    say(Text(f"Summary: {len(rows)} leads, {stage_counts['mql']} MQL, {stage_counts['sql']} SQL, "
             f"{dq_count} disqualified; {verdict}; {time.monotonic() - started:.1f}s.",
             style="bold green" if not report.failures else "bold red"))


if __name__ == "__main__":
    sys.exit(main())
