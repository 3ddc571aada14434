"""Import throughput on the local stack, and what a re-run writes.

`leadflow serve` runs in a child process on a fresh data directory with the X Education
example rules; `leadflow import` (another child, as a user runs it) sends 10,000 rows:
the X Education export (9,240 rows) plus 760 of its rows again under new keys, written
to a temporary CSV (the data itself stays in ../shared). Then the same import runs a
second time (a new state directory, so nothing is skipped client-side: every row goes
to the server again) and the table is compared before and after: the number of items
and each lead's version, which every write bumps.

    python -m bench.import_rows [--rows 10000] [--batch 25] [--markdown]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench import BENCH_LEAD_ID_KEY

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "leads-x-education.csv"
EXAMPLE = ROOT / "examples" / "x-education"


def write_rows(target: Path, n: int) -> tuple[int, list[str]]:
    """The rows, and the ids of the leads they make (the example mapping's emails)."""
    sys.path.insert(0, str(ROOT / "functions"))
    from bench import bench_lead_ids

    ids = bench_lead_ids()

    with DATA.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        rows = list(reader)
    key, number = header.index("Prospect ID"), header.index("Lead Number")
    out = list(rows[:n])
    i = 0
    while len(out) < n:  # the same people again, as new leads
        copy = list(rows[i % len(rows)])
        copy[key] = f"{copy[key]}-again-{i}"
        copy[number] = f"9{copy[number]}{i}"
        out.append(copy)
        i += 1
    with target.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(out)
    return len(out), [ids.for_email(f"lead-{row[number]}@x-education.example") for row in out]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(base: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("leadflow serve exited before it was ready")
        try:
            with urllib.request.urlopen(base + "/healthz", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.2)  # polling a starting server; nothing is measured here
    raise SystemExit("leadflow serve did not become ready")


def table_state(data: Path, lead_ids: list[str], timeout: float = 900) -> tuple[int, dict[str, int]]:
    """How many items the table holds, and each lead's version, once the event log has
    caught up with the stream (one EVENT# item per event the leads applied). Leads are
    read by key (BatchGetItem) and items counted by DescribeTable: a scan of the whole
    table pages through moto in quadratic time."""
    import boto3
    from boto3.dynamodb.types import TypeDeserializer

    sys.path.insert(0, str(ROOT / "functions"))
    from leadflow.adapters.dynamodb.store import item_to_lead

    info = json.loads((data / "stack.json").read_text())
    client = boto3.client("dynamodb", endpoint_url=info["endpoint_url"], region_name=info["region"],
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    plain = TypeDeserializer().deserialize
    deadline = time.monotonic() + timeout
    while True:
        versions, applied = {}, 0
        for start in range(0, len(lead_ids), 100):
            request = {info["table"]: {"Keys": [{"PK": {"S": f"LEAD#{i}"}, "SK": {"S": "LEAD"}}
                                                for i in lead_ids[start:start + 100]], "ConsistentRead": True}}
            while request:
                resp = client.batch_get_item(RequestItems=request)
                for item in resp["Responses"].get(info["table"], []):
                    lead = item_to_lead({k: plain(v) for k, v in item.items()})
                    versions[lead.lead_id] = lead.version
                    applied += len(lead.seen)
                request = resp.get("UnprocessedKeys") or {}
        items = client.describe_table(TableName=info["table"])["Table"]["ItemCount"]
        if items == len(versions) + applied or time.monotonic() > deadline:
            return items, versions
        time.sleep(1)  # the stream poller is still appending the event log


def run_import(csv_path: Path, base: str, state: Path, batch: int, env: dict) -> dict:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "leadflow_infra.cli", "import", str(csv_path), "--mapping",
                           str(EXAMPLE / "mapping.yaml"), "--url", base, "--data-dir", str(state), "--batch", str(batch),
                           "--json"], cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"leadflow import failed ({done.returncode}):\n{done.stderr[-2000:]}")
    summary = json.loads(done.stdout)
    summary["wall_seconds"] = wall
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=25)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args(argv)
    if not DATA.exists():
        print(f"no data at {DATA}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="leadflow-import-bench-") as tmp:
        tmp_path = Path(tmp)
        csv_path = tmp_path / "leads.csv"
        rows, lead_ids = write_rows(csv_path, args.rows)
        data = tmp_path / "stack"
        data.mkdir()
        port = free_port()
        env = {**os.environ, "PYTHONPATH": str(ROOT / "functions"), "LEADFLOW_RULES": str(EXAMPLE / "rules.yaml"),
               "LEADFLOW_LEAD_ID_KEY": BENCH_LEAD_ID_KEY}
        env.pop("LEADFLOW_API_KEY", None)
        base = f"http://127.0.0.1:{port}"
        with open(tmp_path / "serve.log", "w") as log:
            proc = subprocess.Popen([sys.executable, "-m", "leadflow_infra.cli", "serve", "--port", str(port),
                                     "--data-dir", str(data), "--quiet", "--no-persist"], cwd=ROOT, env=env, stdout=log,
                                    stderr=subprocess.STDOUT)
            try:
                wait_ready(base, proc)
                first = run_import(csv_path, base, tmp_path / "state-1", args.batch, env)
                items_before, versions_before = table_state(data, lead_ids)
                second = run_import(csv_path, base, tmp_path / "state-2", args.batch, env)
                items_after, versions_after = table_state(data, lead_ids)
            finally:
                proc.terminate()
                proc.wait(timeout=60)
    changed = sum(1 for k, v in versions_after.items() if versions_before.get(k) != v)
    lines = [
        f"| run ({rows:,} rows, batches of {args.batch}) | rows/s | imported | merged | unchanged | rejected |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label, s in (("first import", first), ("same import again", second)):
        c = s["rows"]
        lines.append(f"| {label} | {rows / s['wall_seconds']:,.0f} | {c['imported']:,} | {c['merged']:,} | "
                     f"{c['unchanged']:,} | {c['rejected']:,} |")
    lines.append("")
    lines.append(f"Table after the first import: {items_before:,} items ({len(versions_before):,} leads, the rest "
                 f"their event log). After the re-run: {items_after:,} items; leads whose version changed: {changed}.")
    print("\n".join(lines) if args.markdown else "\n".join(lines).replace("|", " "))
    return 0 if changed == 0 and items_after == items_before else 1


if __name__ == "__main__":
    sys.exit(main())
