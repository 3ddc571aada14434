"""`make demo` end to end: the scripted week through the local stack ends where the default rules say."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# persona name as printed -> what its line must say about where it ended
PERSONAS = {
    "Newsletter-only subscriber": ["-> subscriber"],
    "Fitting buyer, content only": ["-> mql via mql_threshold"],
    "Fitting buyer who asks for a demo": ["-> sql via sql_threshold"],
    "Founder of a 4-person company": ["-> sql via bant_hand_raise"],
    "Student on gmail downloading ebooks": ["disqualified: student"],
    "Competitor researching us": ["disqualified: competitor"],
    "Disposable-inbox bot": ["disqualified: bot"],
    "Hot a year ago, silent since": ["-> lead"],
    "Anonymous visitor who identifies later": ["-> mql"],
    "SQL that sales rejects": ["-> lead"],
}


# Variables that make rich colour a pipe: the report must read as plain text off a terminal.
COLOUR_VARIABLES = ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE")


@dataclass
class DemoRun:
    returncode: int
    stdout: str
    stderr: str
    console: str  # the console's lead list, fetched while the demo kept serving


@pytest.fixture(scope="module")
def demo() -> DemoRun:
    """The demo as a terminal user runs it (LEADFLOW_DEMO_SERVE=1: it ends by serving its
    stack): the report, then the console URL it prints, opened, then Ctrl-C."""
    # Importable from the checkout even where the package is not installed.
    path = os.pathsep.join(p for p in (str(REPO / "functions"), str(REPO), os.environ.get("PYTHONPATH")) if p)
    env = {k: v for k, v in os.environ.items() if k not in COLOUR_VARIABLES}
    proc = subprocess.Popen([sys.executable, "-m", "leadflow_infra.demo"], cwd=REPO,
                            env={**env, "PYTHONPATH": path, "LEADFLOW_DEMO_SERVE": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    serving = threading.Event()

    def read() -> None:
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("The stack serves until Ctrl-C"):
                serving.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    console = ""
    try:
        # A safety net, not a speed test: a loaded 2-core machine is slow.
        deadline = time.monotonic() + 900
        while not serving.wait(1) and proc.poll() is None and time.monotonic() < deadline:
            pass
        found = [re.search(r"Console: (http://127\.0\.0\.1:\d+/console)", line) for line in lines]
        url = next((m.group(1) for m in found if m), None)
        if serving.is_set() and url:
            with urllib.request.urlopen(url, timeout=60) as resp:
                console = resp.read().decode("utf-8")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        reader.join(10)
    return DemoRun(proc.returncode, "".join(lines), proc.stderr.read(), console)


@pytest.mark.e2e
def test_demo_exits_cleanly_with_nothing_unexpected(demo):
    assert demo.returncode == 0, f"stdout:\n{demo.stdout}\nstderr:\n{demo.stderr}"
    assert "UNEXPECTED" not in demo.stdout
    assert "local stack on http://127.0.0.1:" in demo.stdout
    assert "Funnel by first-touch source" in demo.stdout
    assert "Summary:" in demo.stdout


@pytest.mark.e2e
def test_demo_ends_with_a_console_that_shows_its_leads(demo):
    assert "The stack serves until Ctrl-C." in demo.stdout and "Stopping the demo's stack." in demo.stdout
    pattern = r"[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.example"
    reported = set(re.findall(pattern, demo.stdout))
    listed = set(re.findall(pattern, demo.console))
    assert len(listed) >= 20 and listed <= reported, (sorted(listed - reported), demo.console[:2000])


def indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def table(stdout: str, title: str) -> list[list[str]]:
    """The rows of the report table under `title`, each as its cells ("" for an empty
    first cell). A line indented past the header's first label continues the row above:
    a cell wrapped (in these tables only the last column wraps)."""
    section = stdout.split(f"\n{title}\n", 1)[1].split("\n\n", 1)[0].splitlines()
    header, rule, *lines = section
    assert header.split() and set(rule) == {"─"}, section[:2]
    rows: list[list[str]] = []
    for line in lines:
        if indent(line) > indent(header) and rows:
            rows[-1][-1] += " " + line.strip()
        else:
            rows.append([""] * (indent(line) > 0) + re.split(r"\s{2,}", line.strip()))
    return rows


@pytest.mark.e2e
@pytest.mark.parametrize("persona", sorted(PERSONAS))
def test_each_persona_ends_where_the_rules_say(demo, persona):
    rows = [row for row in table(demo.stdout, "Personas") if persona in row]
    assert len(rows) == 1, f"no single persona row for {persona!r} in:\n{demo.stdout}"
    verdict, name, ended, *_ = rows[0]
    assert (verdict, name) == ("ok", persona), rows[0]
    assert any(expected in ended for expected in PERSONAS[persona]), rows[0]


@pytest.mark.e2e
def test_every_lead_is_a_row_and_the_personas_are_marked(demo):
    leads = int(re.search(r"Summary: (\d+) leads", demo.stdout).group(1))
    title = next(line for line in demo.stdout.splitlines() if line.startswith("Leads  ("))
    rows = table(demo.stdout, title)
    assert len(rows) == leads and sum(row[0] == "*" for row in rows) == len(PERSONAS), rows
    funnel = table(demo.stdout, "Funnel by first-touch source")
    assert funnel[-1][:2] == ["all", str(leads)], funnel
    assert sum(int(row[1]) for row in funnel[:-1]) == leads, funnel


@pytest.mark.e2e
def test_checks_passed_and_output_stays_readable(demo):
    checks = table(demo.stdout, "Checks")
    assert len(checks) >= 6 and all(row[0] == "ok" for row in checks), checks
    flat = " ".join(demo.stdout.split())  # a phrase may wrap inside its cell
    for text in ("duplicate=True", "honeypot form post", "anonymous history joined", "sales reject",
                 "Accept pressed in Slack", "one each", "signed pushes", "SLA watchdog"):
        assert text in flat
    # Tables with a header and a rule each: about a screenful, never a scroll of log lines.
    assert len(demo.stdout.splitlines()) <= 110
    assert '{"_aws"' not in demo.stdout  # metric documents stay out of the report
    assert "\x1b[" not in demo.stdout  # off a terminal: plain text, no colour codes
    assert not [line for line in demo.stdout.splitlines() if line != line.rstrip()]  # no padding left behind
