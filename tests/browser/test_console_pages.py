"""The console in a real browser, as a rep uses it: log in with the API key, find a lead
by a name prefix, open it, read why it scored, accept it and move it on, and see the lead
page follow; see its signals' decay drawn by the vendored Chart.js under the pages'
strict Content-Security-Policy; open the rules, the dead letters and an unknown page.
Every page and asset comes from the stack itself."""

from __future__ import annotations

import re
from datetime import datetime, timezone

from tests.browser.conftest import SCREENSHOTS
from tests.e2e.conftest import API_KEY

BUYER = {"first_name": "Quinlan", "last_name": "Browserby", "company": "Consolecraft", "company_size": 40,
         "budget": "yes", "authority": "decision_maker", "need": "x", "timeline": "this_quarter"}


def test_a_rep_logs_in_finds_a_lead_reads_why_and_accepts_it(page, page_log, stack, expect):
    status, posted = stack.post("/v1/events", {
        "type": "form_submitted", "email": "quinlan@consolecraft.example",
        "occurred_at": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"),
        "properties": {"form_kind": "demo_request"}, "traits": BUYER})
    assert status == 200 and posted["stage"] == "sql", posted
    status, lead = stack.get(f"/v1/leads/{posted['lead_id']}")
    assert status == 200

    # Not logged in: the console sends the browser to its login page; a wrong key is refused.
    page.goto("/console")
    expect(page).to_have_url(re.compile(r"/console/login\?next="))
    page.fill("input[name=key]", "not-the-key")
    page.click("button[type=submit]")
    expect(page.locator(".alert")).to_contain_text("not this deployment's API key")
    page.fill("input[name=key]", API_KEY)
    page.click("button[type=submit]")
    expect(page).to_have_url(re.compile(r"/console$"))
    expect(page.locator("h1")).to_have_text("Leads")

    # Search by the start of the name; open the lead from its row.
    page.fill("input[name=q]", "quinl")
    page.click("form.filters button[type=submit]")
    expect(page).to_have_url(re.compile(r"[?&]q=quinl"))
    row = page.locator("table.leads tbody tr", has_text="quinlan@consolecraft.example")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("Consolecraft")
    expect(row).to_contain_text("sql")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)  # the list too; the layer keeps the last page
    page.screenshot(path=str(SCREENSHOTS / "test_console__lead_list.png"), full_page=True)
    row.get_by_role("link", name="Quinlan Browserby").click()

    # The lead page: the stage, and the score explained in sentences.
    expect(page.locator("h1")).to_have_text("Quinlan Browserby")
    expect(page.locator("#stage")).to_have_text("sql")
    explanation = page.locator("table.explanation")
    for line in lead["explanation"]:
        expect(explanation).to_contain_text(line["detail"])
    expect(page.locator("#first-touch")).to_contain_text("not yet")
    expect(page.locator(".timeline")).to_contain_text("rule bant_hand_raise on form_submitted")

    # Accept it: the move is on the timeline and the first touch is recorded.
    page.fill("input[name=by]", "ola@acme.example")
    page.click("button[value=accept]")
    expect(page.locator(".notice")).to_have_text("Done: accept.")
    expect(page.locator(".timeline")).to_contain_text("accept by ola@acme.example")
    expect(page.locator("#first-touch")).to_contain_text("by ola@acme.example")
    expect(page.locator("button[value=accept]")).to_have_count(0)

    # A rejection needs a reason: the page says so and nothing moves.
    page.click("button[value=reject]")
    expect(page.locator(".alert")).to_contain_text("reject needs a reason")
    expect(page.locator("#stage")).to_have_text("sql")

    # Move it on: the stage changes and the timeline shows the move.
    page.click("button[value=opportunity]")
    expect(page.locator(".notice")).to_have_text("Done: opportunity.")
    expect(page.locator("#stage")).to_have_text("opportunity")
    expect(page.locator(".timeline tr.move").first).to_contain_text("sql → opportunity")
    status, after = stack.get(f"/v1/leads/{posted['lead_id']}")
    assert status == 200 and after["stage"] == "opportunity"
    assert [m["cause"]["action"] for m in after["history"][-2:]] == ["accept", "opportunity"]

    # Everything came from the stack: the pages and the one stylesheet, nothing else.
    asked = {req.split("?")[0].removeprefix(stack.base) for req in page_log.requests}
    assert "/console/assets/console.css" in asked, asked
    assert all(path.startswith("/console") for path in asked), asked
    # Chromium logs a 4xx page as a failed load: exactly the two refusals above, nothing else.
    refused = [re.search(r"status of (\d+)", e).group(1) if "status of" in e else e for e in page_log.console_errors]
    assert refused == ["401", "422"], page_log.console_errors
    page_log.console_errors.clear()
    page_log.assert_clean()


def _login(page, expect, path: str) -> None:
    page.goto(path)
    expect(page).to_have_url(re.compile(r"/console/login\?next="))
    page.fill("input[name=key]", API_KEY)
    page.click("button[type=submit]")
    expect(page).to_have_url(re.compile(re.escape(path) + "$"))


def _failed_responses(page) -> list[str]:
    failed: list[str] = []
    page.on("response", lambda resp: resp.status >= 400 and failed.append(f"{resp.status} {resp.url}"))
    page.on("requestfailed", lambda req: failed.append(f"failed {req.url}"))
    return failed


CHART_DRAWN = """canvas => {
    const chart = window.Chart && window.Chart.getChart(canvas);
    if (!chart || !chart.chartArea || canvas.width === 0) return null;
    const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
    let painted = 0;
    for (let i = 3; i < pixels.length; i += 4) if (pixels[i] !== 0) painted++;
    return {type: chart.config.type, labels: chart.data.labels.length, painted: painted,
            datasets: chart.data.datasets.map(d => ({label: d.label, first: d.data[0], n: d.data.length}))};
}"""


def test_the_lead_page_draws_each_signals_decay_with_the_vendored_chart_library(page, page_log, stack, expect):
    failed = _failed_responses(page)
    status, posted = stack.post("/v1/events", {
        "type": "form_submitted", "email": "decay.chart@consolecraft.example",
        "occurred_at": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"),
        "properties": {"form_kind": "demo_request"}, "traits": {**BUYER, "first_name": "Dacey"}})
    assert status == 200, posted
    status, lead = stack.get(f"/v1/leads/{posted['lead_id']}")
    engaged = {line["rule"]: line["points"] for line in lead["explanation"] if line["axis"] == "engagement"}
    assert status == 200 and engaged, lead

    _login(page, expect, f"/console/leads/{posted['lead_id']}")
    expect(page.locator("h1")).to_have_text("Dacey Browserby")
    canvas = page.locator('canvas[data-chart="decay-chart"]')
    expect(canvas).to_be_visible()  # shown once charts.js ran
    drawn = page.wait_for_function(f"() => ({CHART_DRAWN})(document.querySelector('canvas[data-chart]'))").json_value()

    assert drawn["type"] == "line" and drawn["painted"] > 0
    assert {d["label"]: d["first"] for d in drawn["datasets"]} == engaged
    assert all(d["n"] == drawn["labels"] for d in drawn["datasets"])
    rows = page.locator("table.decay-table tbody tr")
    expect(rows).to_have_count(len(engaged))  # the same figures, readable without the chart
    expect(page.locator("#decay")).to_contain_text("days")
    asked = {req.split("?")[0].removeprefix(stack.base) for req in page_log.requests}
    assert {"/console/assets/chart.umd.min.js", "/console/assets/charts.js"} <= asked, asked
    assert failed == []
    page_log.assert_clean()  # no CSP refusal, no script error


def test_the_rules_dead_letters_and_an_unknown_page_open_from_the_console(page, page_log, stack, expect):
    failed = _failed_responses(page)
    _login(page, expect, "/console/rules")

    expect(page.locator("h1")).to_have_text("Rules")
    status, rules = stack.get("/v1/rules")
    assert status == 200
    expect(page.locator("#rules-version")).to_have_text(rules["version"])
    expect(page.locator("#rules-source")).to_contain_text(f'version: "{rules["version"]}"')
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "test_console__rules.png"), full_page=True)

    page.click("header nav a:has-text('Dead letters')")
    expect(page).to_have_url(re.compile(r"/console/dead-letters$"))
    expect(page.locator("h1")).to_have_text("Dead letters")
    expect(page.locator("#no-letters").or_(page.locator("table.letters"))).to_be_visible()
    page.screenshot(path=str(SCREENSHOTS / "test_console__dead_letters.png"), full_page=True)

    page.goto("/console/no/such/page")
    expect(page.locator("h1")).to_have_text("Not found")
    page.click("text=Back to the leads")
    expect(page).to_have_url(re.compile(r"/console$"))

    # The one 404 asked for is the only refusal; the pages ran no script and fetched nothing else.
    assert [f.split()[0] for f in failed] == ["404"] and "/console/no/such/page" in failed[0], failed
    assert len(page_log.console_errors) == 1 and "404" in page_log.console_errors[0], page_log.console_errors
    page_log.console_errors.clear()
    page_log.assert_clean()


def test_the_funnel_page_charts_conversion_by_source_with_the_apis_numbers(page, page_log, stack, expect):
    import time

    failed = _failed_responses(page)
    now = datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
    for n, (source, kind) in enumerate([("newsletter", "demo_request"), ("newsletter", None), ("webinar", None)]):
        event = {"type": "form_submitted" if kind else "identify", "email": f"funnel.{n}@consolecraft.example",
                 "occurred_at": now, "properties": {"utm_source": source, **({"form_kind": kind} if kind else {})},
                 "traits": {**BUYER, "first_name": f"Funnel{n}"} if kind else {"first_name": f"Funnel{n}"}}
        status, posted = stack.post("/v1/events", event)
        assert status == 200, posted
    # The funnel is kept from the stream: wait until it has counted these leads.
    deadline = time.monotonic() + 60
    while True:
        status, answer = stack.get("/v1/funnel?by=source")
        groups = {g["value"]: g for g in answer.get("groups", [])} if status == 200 else {}
        if groups.get("newsletter", {}).get("leads") == 2 and groups.get("webinar", {}).get("leads") == 1:
            break
        assert time.monotonic() < deadline, answer
        time.sleep(0.1)

    _login(page, expect, "/console/funnel?by=source")
    expect(page.locator("h1")).to_have_text("Funnel")
    canvas = page.locator('canvas[data-chart="conversion-chart"]')
    expect(canvas).to_be_visible()
    drawn = page.wait_for_function(
        f"() => ({CHART_DRAWN})(document.querySelector('canvas[data-chart=\"conversion-chart\"]'))").json_value()
    assert drawn["type"] == "bar" and drawn["painted"] > 0
    assert drawn["labels"] == min(len(answer["groups"]), 12)
    row = page.locator("#funnel-groups tbody tr", has_text="newsletter")
    expect(row).to_have_count(1)
    newsletter = groups["newsletter"]
    cells = row.locator("td")
    expect(cells.nth(1)).to_have_text(str(newsletter["leads"]))
    expect(cells.nth(4)).to_have_text(str(newsletter["reached"]["sql"]))
    for chart in ("cohort-chart", "velocity-chart"):
        assert page.wait_for_function(
            f"() => ({CHART_DRAWN})(document.querySelector('canvas[data-chart=\"{chart}\"]'))").json_value()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "test_console__funnel.png"), full_page=True)
    assert failed == []
    page_log.assert_clean()
