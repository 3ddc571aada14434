"""`make demo` end to end: the scripted week through the local stack ends where the default rules say."""

from __future__ import annotations

import os
import subprocess
import sys
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


@pytest.fixture(scope="module")
def demo() -> subprocess.CompletedProcess[str]:
    # Importable from the checkout even where the package is not installed.
    path = os.pathsep.join(p for p in (str(REPO / "functions"), str(REPO), os.environ.get("PYTHONPATH")) if p)
    return subprocess.run(
        [sys.executable, "-m", "leadflow_infra.demo"],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": path},
        capture_output=True,
        text=True,
        timeout=900,  # a safety net, not a speed test: a loaded 2-core machine is slow
    )


@pytest.mark.e2e
def test_demo_exits_cleanly_with_nothing_unexpected(demo):
    assert demo.returncode == 0, f"stdout:\n{demo.stdout}\nstderr:\n{demo.stderr}"
    assert "UNEXPECTED" not in demo.stdout
    assert "local stack on http://127.0.0.1:" in demo.stdout
    assert "Funnel (GET /v1/funnel)" in demo.stdout
    assert "Summary:" in demo.stdout


@pytest.mark.e2e
@pytest.mark.parametrize("persona", sorted(PERSONAS))
def test_each_persona_ends_where_the_rules_say(demo, persona):
    lines = [line for line in demo.stdout.splitlines() if f" {persona} -> " in line]
    assert len(lines) == 1, f"no single persona line for {persona!r} in:\n{demo.stdout}"
    line = lines[0]
    assert line.lstrip().startswith("ok"), line
    assert any(expected in line for expected in PERSONAS[persona]), line


@pytest.mark.e2e
def test_checks_passed_and_output_stays_readable(demo):
    checks = demo.stdout.split("\nChecks\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert len(checks) >= 6 and all(line.lstrip().startswith("ok") for line in checks), checks
    for text in ("duplicate=True", "honeypot form post", "anonymous history joined", "sales reject",
                 "Accept pressed in Slack", "one each", "signed pushes", "SLA watchdog"):
        assert text in demo.stdout
    assert len(demo.stdout.splitlines()) <= 100
    assert '{"_aws"' not in demo.stdout  # metric documents stay out of the report
