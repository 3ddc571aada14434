"""`leadflow rules check`, and a stack that will not start on broken rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from leadflow_infra.cli import main

ROOT = Path(__file__).resolve().parents[2]

BROKEN = """\
language: 2
version: "t"
fit:
  grades: {A: 60, B: 40, C: 20}
  rules:
    - id: a
      when: {trait: company_size, gte: .nan}
      points: 5
engagement:
  rules:
    - id: demo
      when: {event: demo_requested}
      points: 10
      half_life_days: -3
lifecycle:
  mql: {min_fit_grade: C, min_engagement: 40}
  sql: {min_fit_grade: B, min_engagement: 80}
  bant:
    budget: {trait: budget, exists: true}
    authority: {trait: authority, exists: true}
    need: {trait: need, exists: true}
    timeline: {trait: timeline, exists: true}
"""


def test_every_error_is_printed_with_its_line(tmp_path, capsys):
    path = tmp_path / "rules.yaml"
    path.write_text(BROKEN)
    assert main(["rules", "check", str(path)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"{path}:7: fit.rules[0] (a).when.gte: Input should be a finite number"
    assert err[1].startswith(f"{path}:12: engagement.rules[0] (demo).when.event: unknown event type 'demo_requested'")
    assert err[2] == f"{path}:14: engagement.rules[0] (demo).half_life_days: Input should be greater than 0"
    assert err[3] == f"{path}: 3 errors; nothing loads these rules until they are fixed"


def test_broken_yaml_names_its_line(tmp_path, capsys):
    path = tmp_path / "rules.yaml"
    path.write_text('version: "x"\nfit: [\n')
    assert main(["rules", "check", str(path)]) == 1
    assert capsys.readouterr().err.startswith(f"{path}:3: not valid YAML")


@pytest.mark.parametrize("name", ["functions/leadflow/rules/default.yaml", "examples/x-education/rules.yaml",
                                  "examples/b2b-saas/rules.yaml"])
def test_the_shipped_rules_files_check_ok(name, capsys):
    assert main(["rules", "check", str(ROOT / name)]) == 0
    assert ": ok, rules " in capsys.readouterr().out


def test_serve_refuses_to_start_on_broken_rules(tmp_path, monkeypatch, capsys):
    path = tmp_path / "rules.yaml"
    path.write_text(BROKEN)
    monkeypatch.setenv("LEADFLOW_RULES", str(path))
    assert main(["serve", "--port", "0", "--data-dir", str(tmp_path / "data"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"{path}:14: engagement.rules[0] (demo).half_life_days" in err and "not starting" in err
    assert not (tmp_path / "data").exists()
