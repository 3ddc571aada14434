"""Lambda artifact sizes: each function's deployment package built exactly as `sam build`
builds it (functions/Makefile, `make build-<LogicalId>` in a copy of functions/ with
ARTIFACTS_DIR set), then zipped with deflate as SAM zips it; next to the package every
function shipped before the per-function builds (the old single requirements file,
resolved with its dependencies, plus the leadflow package), measured in the same run.

Needs the package index (pip downloads the Lambda platform's wheels: manylinux2014
aarch64, CPython 3.11). Writes bench/artifact-results.md.

    python -m bench.artifact [--functions ApiFunction,JobsFunction] [--keep DIR] [--output PATH]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FUNCTIONS = ROOT / "functions"
RESULTS = ROOT / "bench" / "artifact-results.md"
PLATFORM_FLAGS = ["--platform", "manylinux2014_aarch64", "--python-version", "3.11", "--implementation", "cp",
                  "--only-binary=:all:"]

# functions/requirements.txt before the per-function builds (git b8fa6cc): SAM's default
# Python builder installed it, with its dependencies, into every function.
BEFORE_REQUIREMENTS = """\
aws-lambda-powertools[tracer]>=3.20
pydantic>=2.7
pyyaml>=6.0
standardwebhooks>=1.0
slack-sdk>=3.27
tzdata>=2024.1
cryptography>=42
"""


@dataclass
class Measure:
    name: str
    unzipped: int = 0
    zipped: int = 0
    files: int = 0
    pyc_zipped: int = 0  # compressed bytes of the compiled bytecode
    by_top: dict[str, int] = field(default_factory=dict)  # top-level entry -> compressed bytes
    dists: list[str] = field(default_factory=list)  # name==version from the *.dist-info folders
    seconds: float = 0.0

    def largest(self, n: int = 4) -> str:
        top = sorted(self.by_top.items(), key=lambda kv: -kv[1])[:n]
        return ", ".join(f"{name} {size / 2**20:.1f}" for name, size in top)


def template_functions() -> list[str]:
    """The template's functions, in template order."""
    from leadflow_infra.template import function_specs, resolve_template

    return list(function_specs(resolve_template()))


def run(cmd: list[str], **kwargs) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        raise SystemExit(f"failed ({result.returncode}): {' '.join(cmd)}\n{result.stdout[-4000:]}{result.stderr[-4000:]}")


def scratch_copy(where: Path) -> Path:
    """What SAM does first: the CodeUri directory copied to a scratch directory."""
    scratch = where / "scratch"
    shutil.rmtree(scratch, ignore_errors=True)
    shutil.copytree(FUNCTIONS, scratch, ignore=shutil.ignore_patterns("__pycache__"))
    return scratch


def make(scratch: Path, target: str, artifacts: Path, **variables: str) -> None:
    """`make target` in the scratch copy; `variables` override the Makefile's (PLATFORM=...)."""
    env = {**os.environ, "ARTIFACTS_DIR": str(artifacts)}
    overrides = [f"{name}={value}" for name, value in variables.items()]
    run(["make", "-C", str(scratch), target, f"ARTIFACTS_DIR={artifacts}", f"PYTHON={sys.executable}", *overrides],
        env=env)


def build_after(function: str, where: Path, **variables: str) -> Path:
    """`function` as `sam build` builds it (its Makefile target in a scratch copy of functions/)."""
    artifacts = where / function
    make(scratch_copy(where), f"build-{function}", artifacts, **variables)
    return artifacts


def build_before(where: Path, *, compile_pyc: bool) -> Path:
    """The old artifact: one requirements set resolved by pip (dependencies included),
    and the code. Without .pyc, as SAM's Python builder unpacks wheels; with .pyc, as a
    plain `pip install -t` leaves them."""
    artifacts = where / ("before-pyc" if compile_pyc else "before")
    requirements = where / "before-requirements.txt"
    requirements.write_text(BEFORE_REQUIREMENTS)
    flags = [] if compile_pyc else ["--no-compile"]
    run([sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--quiet", "--upgrade", *PLATFORM_FLAGS, *flags,
         "--target", str(artifacts), "-r", str(requirements)])
    make(scratch_copy(where), "code", artifacts)
    return artifacts


def measure(name: str, directory: Path, zip_path: Path) -> Measure:
    """Zip `directory` with deflate (files only, sorted, like SAM's zip) and measure it."""
    result = Measure(name)
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for dirpath, dirnames, filenames in os.walk(directory):
            dirnames.sort()
            for filename in sorted(filenames):
                path = Path(dirpath) / filename
                archive.write(path, path.relative_to(directory).as_posix())
    with zipfile.ZipFile(zip_path) as archive:
        for info in archive.infolist():
            result.unzipped += info.file_size
            result.files += 1
            if info.filename.endswith(".pyc"):
                result.pyc_zipped += info.compress_size
            top = info.filename.split("/", 1)[0]
            if top.endswith(".dist-info"):
                top = "*.dist-info"
            result.by_top[top] = result.by_top.get(top, 0) + info.compress_size
    result.zipped = zip_path.stat().st_size
    result.dists = sorted(_dist(p) for p in directory.glob("*.dist-info"))
    return result


def _dist(dist_info: Path) -> str:
    name = version = ""
    for line in (dist_info / "METADATA").read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("Name: "):
            name = line[6:].strip()
        elif line.startswith("Version: "):
            version = line[9:].strip()
        elif not line:
            break
    return f"{name}=={version}"


def mb(n: int) -> str:
    return f"{n / 1e6:.1f}"


def mib(n: int) -> str:
    return f"{n / 2**20:.2f}"


def git_describe() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "functions"], cwd=ROOT, capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head} ({'functions/ modified in the working tree' if dirty else 'clean'})"


def pip_version() -> str:
    out = subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True, text=True).stdout
    return out.split(" from ")[0].strip()


def report(before: Measure, before_pyc: Measure, after: list[Measure], seconds: float) -> str:
    lines = [
        "# Lambda artifact sizes",
        "",
        f"- date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; `python -m bench.artifact`, one run: {seconds:.0f} s",
        f"- machine: {platform.machine()}, python {platform.python_version()}, {pip_version()}; code: git {git_describe()}",
        "- wheels for the Lambda platform: `pip install --platform manylinux2014_aarch64 --python-version 3.11 "
        "--implementation cp --only-binary=:all:` (the template's `Architectures: [arm64]`, `Runtime: python3.11`)",
        "- zipped: every file, deflate (Python's zipfile, default level), as `sam build`/`sam deploy` zip a function; "
        "unzipped: the sum of the file sizes (Lambda's limits: 50 MB zipped for a direct upload, 250 MB unzipped)",
        "",
        "**Before**: every function shipped the same package: SAM's default Python builder installed "
        "`functions/requirements.txt` (git b8fa6cc: Powertools[tracer], pydantic, PyYAML, standardwebhooks, slack-sdk, "
        "tzdata, cryptography, resolved with their dependencies: aws-xray-sdk brought botocore, and botocore "
        "jmespath, python-dateutil, six and urllib3, all of which the runtime provides) plus the leadflow package, "
        "no `.pyc` (SAM unpacks wheels). Rebuilt here the same way, from the index, in this run.",
        "",
        "**After**: `make build-<Function>` from `functions/Makefile` in a copy of `functions/` (what `sam build` "
        "runs with `BuildMethod: makefile`): the function's own pinned closure (`functions/requirements/<function>.txt`, "
        "`--no-deps`), pruned of files nothing reads at run time, plus the leadflow package, plus bytecode compiled "
        "ahead by CPython 3.11 for every module (the code directory is read-only in Lambda: without it every cold "
        "start compiles what it imports; `python -m bench.coldstart --as-shipped` measures the difference).",
        "",
        "## Before and after",
        "",
        "| function | before: unzipped MB | before: zipped MiB | after: unzipped MB | after: zipped MiB | of which .pyc | zipped: after / before | files: before → after |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for m in after:
        lines.append(f"| {m.name} | {mb(before.unzipped)} | {mib(before.zipped)} | {mb(m.unzipped)} | {mib(m.zipped)} "
                     f"| {mib(m.pyc_zipped)} | {m.zipped / before.zipped:.0%} | {before.files:,} → {m.files:,} |")
    total_before = before.zipped * len(after)
    total_after = sum(m.zipped for m in after)
    lines += [
        f"| **all {len(after)}** | {mb(before.unzipped * len(after))} | {mib(total_before)} "
        f"| {mb(sum(m.unzipped for m in after))} | {mib(total_after)} | {mib(sum(m.pyc_zipped for m in after))} "
        f"| {total_after / total_before:.0%} "
        f"| {before.files * len(after):,} → {sum(m.files for m in after):,} |",
        "",
        f"For reference, the old package as a plain `pip install -t` leaves it (with `.pyc` compiled by the build "
        f"machine's Python): {mb(before_pyc.unzipped)} MB unzipped, {mib(before_pyc.zipped)} MiB zipped, "
        f"{before_pyc.files:,} files.",
        "",
        "## Largest parts (zipped MiB)",
        "",
        "| artifact | unzipped MB | zipped MiB | files | largest top-level entries (zipped MiB) |",
        "| --- | ---: | ---: | ---: | --- |",
        f"| before (each function) | {mb(before.unzipped)} | {mib(before.zipped)} | {before.files:,} | {before.largest(6)} |",
    ]
    for m in after:
        lines.append(f"| {m.name} | {mb(m.unzipped)} | {mib(m.zipped)} | {m.files:,} | {m.largest(5)} |")
    lines += ["", "## Distributions in each artifact", "",
              f"- before (each function): {', '.join(before.dists)}"]
    for m in after:
        lines.append(f"- {m.name}: {', '.join(m.dists)}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--functions", help="comma-separated logical ids (default: every function in template.yaml)")
    parser.add_argument("--keep", type=Path, help="build in this directory and keep the artifacts and zips")
    parser.add_argument("--output", type=Path, default=RESULTS, help=f"results file (default {RESULTS.relative_to(ROOT)})")
    args = parser.parse_args(argv)
    functions = args.functions.split(",") if args.functions else template_functions()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="leadflow-artifact-") as tmp:
        where = args.keep or Path(tmp)
        where.mkdir(parents=True, exist_ok=True)
        zips = where / "zips"
        zips.mkdir(exist_ok=True)
        print("building the old package (one requirements set, dependencies resolved) ...", flush=True)
        before = measure("before", build_before(where, compile_pyc=False), zips / "before.zip")
        before_pyc = measure("before (.pyc)", build_before(where, compile_pyc=True), zips / "before-pyc.zip")
        after = []
        for function in functions:
            print(f"building {function} (make build-{function}) ...", flush=True)
            after.append(measure(function, build_after(function, where), zips / f"{function}.zip"))
        text = report(before, before_pyc, after, time.monotonic() - started)
    print()
    print(f"{'artifact':24s} {'unzipped MB':>12s} {'zipped MiB':>11s} {'files':>7s}  largest (zipped MiB)")
    for m in [before, before_pyc, *after]:
        print(f"{m.name:24s} {mb(m.unzipped):>12s} {mib(m.zipped):>11s} {m.files:>7,}  {m.largest()}")
    args.output.write_text(text, encoding="utf-8")
    print(f"\nwritten to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
