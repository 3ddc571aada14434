"""Ingest over HTTP on the local stack, next to raw UpdateItem on the same moto server.

    python -m bench.ingest_http            # full run: +2,000 then +10,000 leads, 10,000 events
                                           # in all (about 11 minutes on 2 cores)
    python -m bench.ingest_http --quick    # +500 then +2,000 leads, 1,500 events (about 3 minutes)

``leadflow serve`` runs as it ships (a subprocess: the CLI on a temporary data
directory, the journal on, fsync'd before each answer, the access log on, written to a
file), and this process is its clients. Per stage (the empty table, then after 2,000
more leads, then after 10,000 more), and per client concurrency (1 and 4 threads):

- raw ``UpdateItem``/s: boto3 clients (one per thread) against the stack's own moto
  endpoint, on items of the stack's own table (so through the same lock, journal and
  fsync as every write), each update rewriting a lead-sized attribute (the size of a
  lead the engine builds) on one of 50 keys per thread: half before the ingest run and
  half after it, so that drift between the two cancels out;
- ``POST /v1/events``/s over HTTP (one keep-alive connection per thread, the bodies
  the engine's benchmark uses: one new lead for four events to existing ones, each
  thread on leads of its own); every answer must be a 200;
- the ratio of the two. An event costs two DynamoDB calls (a consistent GetItem and a
  conditional PutItem): 0.5 would be the most it could reach if the stack's functions
  paid for a call what the bench's client pays. They pay less: they reach the endpoint
  in process, without a socket or a signature (``leadflow_infra.local.in_process``), while
  the raw UpdateItem comes from this process over HTTP, signed, as any client's does.

The leads are loaded through the fast path (BatchWriteItem of items the engine built,
to the stack's endpoint, journaled like any write); after each load the bench first
times 150 single-client events straight away (while the stream consumers still work
through the load: the moment where a whole-table snapshot used to stall ingest), then
waits until the server is idle before the measured runs. At the end, sustained ingest
(4 clients) brings the events sent in the run to 10,000 (1,500 with ``--quick``),
reported per block of 1,000, with the server's resident memory (``VmRSS``) along the way.

Only figures of one run are compared: moto's speed, and what else the machine is
doing, drift from run to run; the ratio is what carries over.

Writes bench/ingest-http-results.md (-quick.md with --quick) and the figures as JSON
beside it; ``--before FILE.json`` puts an earlier run's figures next to this one's.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable

from bench.ingest import (
    FUNCTIONS,
    REGION,
    ROOT,
    first_event,
    follow_up,
    item_size,
    lead_items,
    machine,
)

TICKS = os.sysconf("SC_CLK_TCK")


def revision() -> str:
    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return out.stdout.rstrip() if out.returncode == 0 else ""

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = [line[3:] for line in git("status", "--porcelain", "--", "functions", "infra", "template.yaml").splitlines()]
    return f"git {head}" + (f" + uncommitted changes in {len(dirty)} files" if dirty else " (clean)")


# -- the server ------------------------------------------------------------------------

class Server:
    """``leadflow serve`` on a temporary data directory, in its own process."""

    def __init__(self, workdir: Path) -> None:
        self.data_dir = workdir / "data"
        self.log_path = workdir / "serve.log"
        self.proc: subprocess.Popen | None = None
        self.info: dict[str, Any] = {}
        self.idle = 0.05

    def start(self, timeout: float = 120.0) -> None:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("AWS_", "LEADFLOW_", "POWERTOOLS_"))}
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(FUNCTIONS)])
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "leadflow_infra.cli", "serve", "--port", "0", "--data-dir", str(self.data_dir)],
            cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        info_path = self.data_dir / "stack.json"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"leadflow serve exited ({self.proc.returncode}):\n{self.log_path.read_text()}")
            if info_path.exists():
                try:
                    self.info = json.loads(info_path.read_text())
                    with urllib.request.urlopen(self.info["api_url"] + "/healthz", timeout=5) as response:
                        if response.status == 200:
                            return
                except (OSError, ValueError, KeyError):
                    pass
            time.sleep(0.2)
        raise RuntimeError("leadflow serve did not become ready")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    @property
    def api_url(self) -> str:
        return self.info["api_url"]

    @property
    def endpoint(self) -> str:
        return self.info["endpoint_url"]

    @property
    def table(self) -> str:
        return self.info["table"]

    def rss_mb(self) -> float:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def cpu_seconds(self) -> float:
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS

    def wait_idle(self, *, window: float = 1.0, timeout: float = 600.0) -> float:
        """Wait until the server uses no more than it does idle (plus a tenth of a core) for
        two windows in a row (the stream consumers are through their backlog); returns the
        seconds waited."""
        below = self.idle + 0.1
        start = time.monotonic()
        quiet = 0
        while time.monotonic() - start < timeout:
            before = self.cpu_seconds()
            time.sleep(window)
            quiet = quiet + 1 if (self.cpu_seconds() - before) / window < below else 0
            if quiet >= 2:
                break
        return time.monotonic() - start

    def idle_cpu(self, seconds: float = 3.0) -> float:
        """The share of a core the idle server uses (its pollers and timers)."""
        before = self.cpu_seconds()
        time.sleep(seconds)
        self.idle = (self.cpu_seconds() - before) / seconds
        return self.idle


def dynamodb_client(endpoint: str) -> Any:
    import boto3

    return boto3.session.Session().client(
        "dynamodb", region_name=REGION, endpoint_url=endpoint,
        aws_access_key_id="testing", aws_secret_access_key="testing",
    )


# -- the two measured loads ------------------------------------------------------------

def in_threads(threads: int, work: Callable[[int], int]) -> tuple[float, int]:
    """Run ``work(thread)`` in ``threads`` threads started together; (seconds, total count)."""
    barrier = threading.Barrier(threads + 1)
    counts = [0] * threads
    errors: list[BaseException] = []

    def run(t: int) -> None:
        barrier.wait()
        try:
            counts[t] = work(t)
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            errors.append(exc)

    pool = [threading.Thread(target=run, args=(t,), daemon=True) for t in range(threads)]
    for thread in pool:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in pool:
        thread.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise errors[0]
    return elapsed, sum(counts)


class Raw:
    """UpdateItem of a lead-sized attribute, on 50 keys per thread of the stack's table."""

    def __init__(self, endpoint: str, table: str, threads: int) -> None:
        self.table = table
        self.clients = [dynamodb_client(endpoint) for _ in range(threads)]
        lead = lead_items(1)[0]
        # The attribute is sized so that the item is as large as a lead the engine builds.
        self.size = item_size(lead)
        self.blob = os.urandom(max(1, self.size - 60))
        for t in range(threads):  # connect and create the items: not measured
            self._update(t, 0)
            for k in range(50):
                self._update(t, k)

    def _update(self, t: int, k: int) -> None:
        self.clients[t].update_item(
            TableName=self.table, Key={"PK": {"S": f"BENCH#raw-{t}-{k}"}, "SK": {"S": "BENCH"}},
            UpdateExpression="SET #d = :d ADD #n :one",
            ExpressionAttributeNames={"#d": "data", "#n": "n"},
            ExpressionAttributeValues={":d": {"B": self.blob}, ":one": {"N": "1"}},
        )

    def run(self, threads: int, per_thread: int) -> tuple[float, int]:
        def work(t: int) -> int:
            for k in range(per_thread):
                self._update(t, k % 50)
            return per_thread

        return in_threads(threads, work)


class Ingest:
    """``POST /v1/events`` over keep-alive HTTP connections, one per thread."""

    def __init__(self, api_url: str, threads: int) -> None:
        host_port = api_url.split("//", 1)[1]
        host, _, port = host_port.rpartition(":")
        self.connections = [http.client.HTTPConnection(host, int(port), timeout=60) for _ in range(threads)]
        self.statuses: dict[int, int] = {}
        self.latencies: list[float] = []
        self._lock = threading.Lock()

    def post(self, t: int, body: dict) -> int:
        conn = self.connections[t]
        data = json.dumps(body).encode("utf-8")
        started = time.perf_counter()
        conn.request("POST", "/v1/events", body=data,
                     headers={"content-type": "application/json", "user-agent": "bench"})
        response = conn.getresponse()
        response.read()
        with self._lock:
            self.latencies.append(time.perf_counter() - started)
            self.statuses[response.status] = self.statuses.get(response.status, 0) + 1
        return response.status

    def run(self, tag: str, threads: int, per_thread: int, timeline: list[float] | None = None) -> tuple[float, int]:
        """Each thread: ``per_thread`` events over leads of its own, one new lead for four
        events to existing ones, sign-up first."""
        def work(t: int) -> int:
            n_leads = max(1, per_thread // 5)
            for k in range(per_thread):
                lead, seq = k % n_leads, k // n_leads
                body = first_event(f"{tag}t{t}", lead) if seq == 0 else follow_up(f"{tag}t{t}", lead, seq)
                status = self.post(t, body)
                if status != 200:
                    raise RuntimeError(f"POST /v1/events answered {status}")
                if timeline is not None:
                    timeline.append(time.perf_counter())
            return per_thread

        return in_threads(threads, work)

    def close(self) -> None:
        for conn in self.connections:
            conn.close()


def slowest_block(timeline: list[float], start: float, block: int = 50) -> float:
    """The lowest events/s over consecutive blocks of ``block`` answers: a stall shows here."""
    times = sorted(timeline)
    rates = []
    previous = start
    for i in range(block - 1, len(times), block):
        rates.append(block / max(times[i] - previous, 1e-9))
        previous = times[i]
    return min(rates) if rates else float("nan")


# -- loading leads -------------------------------------------------------------------

def load_leads(endpoint: str, table: str, n: int, offset: int) -> dict:
    """``n`` lead items built by the engine, sent with BatchWriteItem (a thread builds
    batches of 25 while the main thread sends them)."""
    batches: queue.Queue = queue.Queue(maxsize=8)

    def build() -> None:
        for start in range(0, n, 25):
            batches.put(lead_items(min(25, n - start), offset=offset + start))
        batches.put(None)

    client = dynamodb_client(endpoint)
    threading.Thread(target=build, daemon=True).start()
    started = time.perf_counter()
    while (items := batches.get()) is not None:
        requests = {table: [{"PutRequest": {"Item": item}} for item in items]}
        while requests:
            requests = client.batch_write_item(RequestItems=requests).get("UnprocessedItems") or {}
    return {"leads": n, "seconds": time.perf_counter() - started}


# -- the run ---------------------------------------------------------------------------

def measure(server: Server, stage: str, threads: int, n_raw: int, n_events: int, tag: str) -> dict:
    raw = Raw(server.endpoint, server.table, threads)
    ingest = Ingest(server.api_url, threads)
    try:
        ingest.run(f"warm{tag}", threads, 5)  # connections open, every thread's first call made
        per_raw = max(1, n_raw // (2 * threads))
        per_event = max(1, n_events // threads)
        raw_s1, raw_n1 = raw.run(threads, per_raw)
        timeline: list[float] = []
        started = time.perf_counter()
        ingest_s, ingest_n = ingest.run(tag, threads, per_event, timeline)
        raw_s2, raw_n2 = raw.run(threads, per_raw)
    finally:
        ingest.close()
    raw_rate = (raw_n1 + raw_n2) / (raw_s1 + raw_s2)
    ingest_rate = ingest_n / ingest_s
    latencies = sorted(ingest.latencies)
    row = {
        "stage": stage, "threads": threads, "raw_n": raw_n1 + raw_n2, "raw_rate": raw_rate,
        "events": ingest_n, "ingest_rate": ingest_rate, "ratio": ingest_rate / raw_rate,
        "slowest_block": slowest_block(timeline, started),
        "p50_ms": 1000 * latencies[len(latencies) // 2], "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)],
        "statuses": {str(k): v for k, v in ingest.statuses.items()}, "item_bytes": raw.size,
    }
    print(f"    {stage}, {threads} client(s): raw {raw_rate:.1f}/s, ingest {ingest_rate:.1f} ev/s, "
          f"ratio {row['ratio']:.2f}, slowest block {row['slowest_block']:.1f} ev/s", file=sys.stderr, flush=True)
    return row


def run(args: argparse.Namespace) -> dict:
    if args.quick:
        loads, n_raw, n_events, after_load, total_events = [500, 2_000], {1: 100, 4: 200}, {1: 100, 4: 200}, 100, 1_500
    else:
        loads, n_raw, n_events, after_load, total_events = [2_000, 10_000], {1: 300, 4: 600}, {1: 300, 4: 600}, 150, 10_000
    threads = args.threads
    workdir = Path(tempfile.mkdtemp(prefix="leadflow-bench-"))
    server = Server(workdir)
    result: dict[str, Any] = {"quick": args.quick, "threads": threads, "rows": [], "memory": [], "loads": [],
                              "revision": revision(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    sent = 0
    started = time.perf_counter()
    try:
        t = time.perf_counter()
        server.start()
        result["start_s"] = time.perf_counter() - t
        result["idle_cpu"] = server.idle_cpu()
        print(f"... leadflow serve ready in {result['start_s']:.1f} s; idle it uses {result['idle_cpu']:.0%} "
              f"of a core", file=sys.stderr, flush=True)
        result["memory"].append(("started", 0, server.rss_mb()))
        stages = [("empty table", 0)] + [(f"+{sum(loads[:i + 1]):,} leads", n) for i, n in enumerate(loads)]
        offset = 0
        for index, (stage, load) in enumerate(stages):
            if load:
                print(f"... loading {load:,} leads", file=sys.stderr, flush=True)
                loaded = load_leads(server.endpoint, server.table, load, offset)
                offset += load
                ingest = Ingest(server.api_url, 1)
                timeline: list[float] = []
                t0 = time.perf_counter()
                seconds, count = ingest.run(f"after{index}", 1, after_load, timeline)
                ingest.close()
                sent += count
                loaded.update(stage=stage, after_events=count, after_rate=count / seconds,
                              after_slowest=slowest_block(timeline, t0, 25))
                loaded["idle_wait_s"] = server.wait_idle()
                result["loads"].append(loaded)
                print(f"    loaded in {loaded['seconds']:.1f} s; right after: {loaded['after_rate']:.1f} ev/s "
                      f"(slowest 25: {loaded['after_slowest']:.1f}); idle {loaded['idle_wait_s']:.0f} s later",
                      file=sys.stderr, flush=True)
            else:
                server.wait_idle()
            for n_threads in threads:
                row = measure(server, stage, n_threads, n_raw.get(n_threads, n_raw[4]),
                              n_events.get(n_threads, n_events[4]), f"s{index}c{n_threads}")
                sent += row["events"] + 5 * n_threads
                result["rows"].append(row)
                server.wait_idle()
            result["memory"].append((f"after the {stage} runs", sent, server.rss_mb()))

        # Sustained ingest up to total_events, per block of 1,000.
        print(f"... sustained ingest to {total_events:,} events", file=sys.stderr, flush=True)
        blocks = []
        ingest = Ingest(server.api_url, 4)
        block = 0
        try:
            while sent < total_events:
                n = min(1_000, total_events - sent)
                seconds, count = ingest.run(f"sus{block}", 4, max(1, n // 4))
                sent += count
                blocks.append({"events": count, "rate": count / seconds, "sent": sent, "rss_mb": server.rss_mb()})
                print(f"    {sent:,} events: {count / seconds:.1f} ev/s, RSS {blocks[-1]['rss_mb']:.0f} MB",
                      file=sys.stderr, flush=True)
                block += 1
        finally:
            ingest.close()
        result["sustained"] = blocks
        result["memory"].append((f"after {sent:,} events", sent, server.rss_mb()))
        server.wait_idle()
        result["memory"].append(("idle after that", sent, server.rss_mb()))
        result["db_mb"] = sum(p.stat().st_size for p in server.data_dir.glob("leadflow.db*")) / 1e6
        result["events_sent"] = sent
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    result["total_s"] = time.perf_counter() - started
    return result


# -- the report ------------------------------------------------------------------------

def table(result: dict, title: str) -> list[str]:
    lines = [f"**{title}** ({result['revision']}, {result['date']})", "",
             "| stage | clients | raw UpdateItem/s | events/s over HTTP | **ratio** | slowest 50 events (ev/s) "
             "| p50 / p99 ms |", "|---|---:|---:|---:|---:|---:|---:|"]
    for row in result["rows"]:
        lines.append(f"| {row['stage']} | {row['threads']} | {row['raw_rate']:.1f} | {row['ingest_rate']:.1f} | "
                     f"**{row['ratio']:.2f}** | {row['slowest_block']:.1f} | {row['p50_ms']:.0f} / {row['p99_ms']:.0f} |")
    return lines + [""]


def report(result: dict, before: dict | None) -> str:
    lines = [f"# Ingest over HTTP on the local stack{' (--quick)' if result['quick'] else ''}", ""]
    lines += machine()
    lines += [f"- code: {result['revision']}",
              f"- `leadflow serve` in its own process (journal on, fsync before each answer, access log to a file); "
              f"clients in the bench process; one run: {result['total_s']:.0f} s",
              f"- leads are about {result['rows'][0]['item_bytes']:,} bytes; the raw UpdateItem rewrites an "
              f"attribute of that size on the stack's own table (same lock, journal and fsync)",
              f"- idle, the server uses {result['idle_cpu']:.0%} of a core (its pollers and timers)", ""]
    lines += ["## Events/s over HTTP vs raw UpdateItem/s, same server, same run", ""]
    if before is not None:
        lines += table(before, "before")
        lines += table(result, "after")
    else:
        lines += table(result, "this run")
    lines += ["An event costs a GetItem and a conditional PutItem: 0.5 would be the ceiling if the stack's functions "
              "paid per call what an outside client pays; they call the endpoint in process (no socket, no "
              "signature), the raw UpdateItem comes over HTTP, signed. A ratio is computed within one stage of "
              "one run (raw half before and half after the events).", ""]
    lines += ["## Right after each load (one client, the stream consumers still working through the load)", "",
              "| load | loaded in s | events | events/s | slowest 25 events (ev/s) | idle again after s |",
              "|---|---:|---:|---:|---:|---:|"]
    for load in result["loads"]:
        lines.append(f"| {load['stage']} | {load['seconds']:.1f} | {load['after_events']} | {load['after_rate']:.1f} | "
                     f"{load['after_slowest']:.1f} | {load['idle_wait_s']:.0f} |")
    if before is not None:
        lines += ["", "Before:", "", "| load | loaded in s | events/s | slowest 25 events (ev/s) |", "|---|---:|---:|---:|"]
        for load in before["loads"]:
            lines.append(f"| {load['stage']} | {load['seconds']:.1f} | {load['after_rate']:.1f} | "
                         f"{load['after_slowest']:.1f} |")
    lines += ["", "## Sustained ingest (4 clients) and the server's memory", "",
              "| events sent | events/s in the last block | server RSS MB |", "|---:|---:|---:|"]
    for block in result["sustained"]:
        lines.append(f"| {block['sent']:,} | {block['rate']:.1f} | {block['rss_mb']:.0f} |")
    lines += ["", "| moment | events sent | server RSS MB |", "|---|---:|---:|"]
    for moment, sent, rss in result["memory"]:
        lines.append(f"| {moment} | {sent:,} | {rss:.0f} |")
    lines += ["", f"The data directory holds {result['db_mb']:.0f} MB at the end (every item and event-log item is "
              f"also in moto's memory: the table lives there)."]
    if before is not None:
        lines += ["", "Before:", "", "| moment | events sent | server RSS MB |", "|---|---:|---:|"]
        for moment, sent, rss in before["memory"]:
            lines.append(f"| {moment} | {sent:,} | {rss:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ingest_http", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller loads (+500, +2,000 leads; 1,500 events)")
    parser.add_argument("--threads", type=lambda s: [int(x) for x in s.split(",")], default=[1, 4],
                        help="client concurrencies, comma-separated (default 1,4)")
    parser.add_argument("--before", type=Path, default=None,
                        help="an earlier run's JSON to show beside this one (default: bench/ingest-http-before.json "
                             "for a full run, when it exists)")
    parser.add_argument("--out", type=Path, default=None, help="where to write the Markdown report")
    args = parser.parse_args(argv)
    stem = "ingest-http-results" + ("-quick" if args.quick else "")
    out = args.out or ROOT / "bench" / f"{stem}.md"
    before_path = args.before or (None if args.quick else ROOT / "bench" / "ingest-http-before.json")
    before = json.loads(before_path.read_text()) if before_path and before_path.exists() else None

    result = run(args)
    text = report(result, before)
    print(text)
    out.write_text(text, encoding="utf-8")
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(f"(written to {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out} and its .json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
