"""What `pip install .` gives a user: the `leadflow` command with everything `leadflow
serve` needs (the template, the default rules, moto), built from a copy of the sources
so the checkout stays clean."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("functions", "infra", "setup.py", "pyproject.toml", "README.md", "template.yaml", "LICENSE")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    src = tmp_path_factory.mktemp("src")
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=ignore)
        elif path.exists():
            shutil.copy2(path, src / name)
    out = tmp_path_factory.mktemp("dist")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                            "--wheel-dir", str(out), str(src)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    (path,) = out.glob("leadflow-*.whl")
    return zipfile.ZipFile(path)


def _metadata(wheel: zipfile.ZipFile, name: str) -> str:
    (member,) = [n for n in wheel.namelist() if n.endswith(f".dist-info/{name}")]
    return wheel.read(member).decode()


def test_the_wheel_carries_the_template_and_the_default_rules(wheel):
    names = set(wheel.namelist())

    assert wheel.read("leadflow_infra/template.yaml") == (ROOT / "template.yaml").read_bytes()
    assert "leadflow/rules/default.yaml" in names
    assert {"leadflow/handlers/api.py", "leadflow_infra/cli.py", "leadflow_infra/local/stack.py"} <= names
    assert not [n for n in names if n.startswith(("tests/", "bench/"))]


def test_leadflow_command_and_moto_come_with_a_plain_install(wheel):
    entry_points = _metadata(wheel, "entry_points.txt")
    requires = Parser().parsestr(_metadata(wheel, "METADATA")).get_all("Requires-Dist")

    assert "leadflow = leadflow_infra.cli:main" in entry_points
    assert any(r.startswith("moto") and "extra ==" not in r for r in requires), requires


def test_version_is_the_distribution_version():
    from importlib.metadata import version

    shown = subprocess.run([sys.executable, "-m", "leadflow_infra.cli", "--version"], capture_output=True, text=True,
                           cwd=ROOT, timeout=60)

    assert shown.returncode == 0 and shown.stdout.strip() == f"leadflow {version('leadflow')}"
