"""Cold start: the CPU each Lambda entry module costs to import, next to the floor every
Python function on Lambda pays (`import boto3, aws_lambda_powertools`), measured side
by side in one run.

Each figure is the median of N fresh interpreters (`time.process_time()` around the
import, interpreter start-up excluded), baseline and entry modules interleaved so load
on the machine hits them alike. The environment is a Lambda's as the template sets it
(tracing off by default: `POWERTOOLS_TRACE_DISABLED=true`), plus a run with tracing on.
The entry modules come from template.yaml's `Handler`s.

    python -m bench.coldstart [--runs 15] [--markdown]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASELINE = "boto3,aws_lambda_powertools"
PROBE = ("import sys, time\n"
         "names = sys.argv[1].split(',')\n"
         "t = time.process_time()\n"
         "for name in names: __import__(name)\n"
         "print(time.process_time() - t)\n")


def entry_modules() -> dict[str, str]:
    from leadflow_infra.template import find_template, load_template

    template = load_template(find_template())
    out = {}
    for logical_id, resource in template["Resources"].items():
        if resource.get("Type") == "AWS::Serverless::Function":
            out[logical_id] = resource["Properties"]["Handler"].rsplit(".", 1)[0]
    return out


def lambda_env(tracing: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LEADFLOW_", "POWERTOOLS_", "AWS_"))}
    env.update(AWS_DEFAULT_REGION="us-east-1", AWS_REGION="us-east-1", AWS_LAMBDA_FUNCTION_NAME="leadflow-probe",
               AWS_LAMBDA_FUNCTION_MEMORY_SIZE="512", LEADFLOW_TABLE="leadflow", POWERTOOLS_SERVICE_NAME="leadflow",
               POWERTOOLS_TRACE_DISABLED="false" if tracing else "true", PYTHONPATH=str(ROOT / "functions"))
    return env


def measure(modules: list[str], runs: int, env: dict[str, str]) -> dict[str, float]:
    samples: dict[str, list[float]] = {m: [] for m in [BASELINE, *modules]}
    for _ in range(runs):
        for module in samples:
            out = subprocess.run([sys.executable, "-c", PROBE, module], capture_output=True, text=True, env=env,
                                 cwd=ROOT / "functions", check=True)
            samples[module].append(float(out.stdout))
    return {m: statistics.median(v) for m, v in samples.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--markdown", action="store_true", help="print a README table")
    args = parser.parse_args(argv)
    entries = entry_modules()
    off = measure(list(entries.values()), args.runs, lambda_env(tracing=False))
    on = measure([entries["ApiFunction"]], args.runs, lambda_env(tracing=True))
    base = off[BASELINE]
    rows = [("`import boto3, aws_lambda_powertools` (the floor)", base, 1.0)]
    for function, module in entries.items():
        rows.append((f"{function}: `import {module}`", off[module], off[module] / base))
    rows.append(("ApiFunction with tracing on (X-Ray SDK loaded)", on[entries["ApiFunction"]],
                 on[entries["ApiFunction"]] / on[BASELINE]))
    if args.markdown:
        print("| import | CPU | × floor |\n| --- | --- | --- |")
        for name, seconds, ratio in rows:
            print(f"| {name} | {seconds * 1000:.0f} ms | {ratio:.2f} |")
    else:
        for name, seconds, ratio in rows:
            print(f"{name:70s} {seconds * 1000:7.1f} ms  {ratio:5.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
