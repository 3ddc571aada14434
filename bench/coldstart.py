"""Cold start: the CPU each Lambda entry module costs to import, next to the floor every
Python function on Lambda pays (`import boto3, aws_lambda_powertools`), measured side
by side in one run; then what the first invocation adds.

Each figure is the median of N fresh interpreters (`time.process_time()` around the
import, interpreter start-up excluded), baseline and entry modules interleaved so load
on the machine hits them alike. The environment is a Lambda's as the template sets it
(tracing off by default: `POWERTOOLS_TRACE_DISABLED=true`), plus a run with tracing on.
The entry modules come from template.yaml's `Handler`s.

Import CPU alone can be made small by moving work into the first invocation, which a
user waits for just the same. So the second table runs each function's first
invocation in its fresh interpreter, on real work against a moto server (the table
and queues from template.yaml) and real HTTP receivers for Slack and the signed CRM
webhook: a form post that makes an SQL (api); that write's stream records, filtered
by each function's FilterCriteria (event_log, handoff: one webhook push refused, so a
retry is queued); that retry (handoff_retry); the hourly rescore's input (jobs). Its
floor is `import boto3, aws_lambda_powertools` plus one DynamoDB `GetItem` (client
creation included), what any function that touches the table pays. Only the child's
CPU is counted; moto and the receivers run in this process.

A third table (`--as-shipped`, needs the package index) imports from the artifacts
themselves: each function built by functions/Makefile (for x86_64, to run here; the
same pins and steps as the arm64 build), imported in `python -I -S -B` that sees only
the artifact, the runtime's packages (boto3, botocore, ...: with their bytecode, as the
runtime has it) and the standard library; once as built (bytecode compiled ahead) and
once with the artifact's .pyc removed, as every artifact was before the build compiled
them: Lambda's code directory is read-only, so Python compiles each module it imports
at every cold start then. Its floor imports Powertools from the same artifact.

    python -m bench.coldstart [--runs 15] [--markdown] [--no-first-call] [--as-shipped]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASELINE = "boto3,aws_lambda_powertools"
PROBE = ("import sys, time\n"
         "names = sys.argv[1].split(',')\n"
         "t = time.process_time()\n"
         "for name in names: __import__(name)\n"
         "print(time.process_time() - t)\n")


def entry_modules() -> dict[str, str]:
    """Each template function's entry module (its Handler without the attribute)."""
    from leadflow_infra.template import function_specs, resolve_template

    return {logical_id: spec.handler.rsplit(".", 1)[0]
            for logical_id, spec in function_specs(resolve_template()).items()}


def template_environment() -> dict[str, str]:
    """The literal values of the template's Globals environment (what needs no deployed
    stack: PYDANTIC_DISABLE_PLUGINS, POWERTOOLS_SERVICE_NAME, ...)."""
    from leadflow_infra.template import find_template, load_template

    variables = load_template(find_template())["Globals"]["Function"]["Environment"]["Variables"]
    return {name: str(value) for name, value in variables.items() if isinstance(value, (str, int, float))}


def lambda_env(tracing: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("LEADFLOW_", "POWERTOOLS_", "AWS_", "PYDANTIC_"))}
    env.update(template_environment())
    env.update(AWS_DEFAULT_REGION="us-east-1", AWS_REGION="us-east-1", AWS_LAMBDA_FUNCTION_NAME="leadflow-probe",
               AWS_LAMBDA_FUNCTION_MEMORY_SIZE="512", LEADFLOW_TABLE="leadflow",
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


FIRST_CALL_PROBE = """
import json, sys, time
from leadflow_infra.local.invoke import LambdaContext

preloaded = sorted(m for m in ("boto3", "botocore", "pydantic", "yaml", "leadflow", "aws_lambda_powertools")
                   if m in sys.modules)
assert not preloaded, f"the probe itself loaded {preloaded}: the figures would be too low"
module, function_name, event_file = sys.argv[1:4]
with open(event_file) as fh:
    event = json.load(fh)
t0 = time.process_time()
if module == "floor":
    import boto3, aws_lambda_powertools
    t1 = time.process_time()
    boto3.client("dynamodb").get_item(TableName="leadflow", Key={"PK": {"S": "LEAD#none"}, "SK": {"S": "LEAD"}})
    result = None
else:
    handler = __import__(module, fromlist=["handler"]).handler
    t1 = time.process_time()
    result = handler(event, LambdaContext(function_name, memory_mb=512, timeout_s=60))
t2 = time.process_time()
print(json.dumps({"import": t1 - t0, "first": t2 - t1, "result": result}, default=str))
"""

BUYER = {"job_title": "VP Marketing", "company": "Acme", "company_size": 200, "industry": "software",
         "country": "US", "budget": "yes", "authority": "decision_maker", "need": "replace spreadsheets",
         "timeline": "this_quarter"}


class FirstCalls:
    """A moto server with the template's table and queues, Slack and webhook receivers, and
    the events that make each function do its real work once."""

    def __init__(self) -> None:
        from leadflow_infra.local.moto_server import MotoServer
        from leadflow_infra.receivers import SinkReceivers

        self.moto = MotoServer()
        self.receivers = SinkReceivers()
        self.region = "us-east-1"
        self.iterators: dict[str, str] = {}

    def __enter__(self) -> "FirstCalls":
        import boto3

        from leadflow_infra.local.queues import create_queues, template_queues
        from leadflow_infra.local.tables import create_table, template_table_properties
        from leadflow_infra.template import function_specs, resolve_template

        self.moto.start()
        self.receivers.start()
        self.session = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing",
                                             region_name=self.region)
        table = create_table(self.client("dynamodb"), template_table_properties("LeadsTable"), "leadflow")
        self.stream_arn = table["LatestStreamArn"]
        self.queues = create_queues(self.client("sqs"), template_queues())
        self.specs = function_specs(resolve_template())
        streams = self.client("dynamodbstreams")
        for shard in streams.describe_stream(StreamArn=self.stream_arn)["StreamDescription"]["Shards"]:
            self.iterators[shard["ShardId"]] = streams.get_shard_iterator(
                StreamArn=self.stream_arn, ShardId=shard["ShardId"], ShardIteratorType="LATEST")["ShardIterator"]
        return self

    def __exit__(self, *exc: object) -> None:
        self.receivers.stop()
        self.moto.stop()

    def client(self, service: str):
        return self.session.client(service, endpoint_url=self.moto.url)

    def env(self) -> dict[str, str]:
        sinks = self.receivers.environment()
        env = lambda_env(tracing=False)
        env.update({name: sinks[name] for name in ("LEADFLOW_SLACK_WEBHOOK_URL", "LEADFLOW_WEBHOOK_SECRET_SLACK",
                                                    "LEADFLOW_CRM_WEBHOOK_URL", "LEADFLOW_CRM_WEBHOOK_SECRET")})
        env.update(AWS_ENDPOINT_URL=self.moto.url, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                   LEADFLOW_RETRY_QUEUE_URL=self.queues["HandoffRetryQueue"].url,
                   LEADFLOW_DLQ_URL=self.queues["HandoffDeadLetterQueue"].url, LEADFLOW_RETRY_BASE_SECONDS="0",
                   POWERTOOLS_METRICS_DISABLED="true", POWERTOOLS_LOG_LEVEL="WARNING",
                   PYTHONPATH=os.pathsep.join([str(ROOT / "functions"), str(ROOT)]))
        return env

    def stream_records(self) -> list[dict]:
        from leadflow_infra.local.stream_poller import to_lambda_record

        streams = self.client("dynamodbstreams")
        records = []
        for shard_id, iterator in self.iterators.items():
            page = streams.get_records(ShardIterator=iterator)
            self.iterators[shard_id] = page["NextShardIterator"]
            records += [to_lambda_record(raw, self.stream_arn, self.region) for raw in page["Records"]]
        return records

    def for_function(self, logical_id: str, records: list[dict]) -> dict:
        from leadflow_infra.local.filters import compile_filters

        (source,) = self.specs[logical_id].streams
        keep = compile_filters(source.filter_criteria) or (lambda record: True)
        return {"Records": [r for r in records if keep(r)]}

    def retry_record(self) -> dict:
        from leadflow_infra.local.queue_poller import to_lambda_record

        queue = self.queues["HandoffRetryQueue"]
        got = self.client("sqs").receive_message(QueueUrl=queue.url, MaxNumberOfMessages=1, WaitTimeSeconds=5,
                                                 AttributeNames=["All"], MessageAttributeNames=["All"])
        (message,) = got["Messages"]
        self.client("sqs").delete_message(QueueUrl=queue.url, ReceiptHandle=message["ReceiptHandle"])
        return {"Records": [to_lambda_record(message, queue.arn, self.region)]}

    def run(self, module: str, function_name: str, event: dict, env: dict[str, str], workdir: Path) -> dict:
        path = workdir / "event.json"
        path.write_text(json.dumps(event), encoding="utf-8")
        out = subprocess.run([sys.executable, "-c", FIRST_CALL_PROBE, module, function_name, str(path)],
                             capture_output=True, text=True, env=env, cwd=workdir, check=False, timeout=120)
        if out.returncode != 0:
            raise RuntimeError(f"{module}: {out.stderr[-2000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])

    def one_round(self, workdir: Path, n: int) -> dict[str, tuple[float, float]]:
        """Every function's first invocation once, in the order a lead's path runs them."""
        from leadflow_infra.local.gateway import build_event

        env, figures = self.env(), {}

        def call(logical_id: str, event: dict) -> dict:
            spec = self.specs[logical_id]
            got = self.run(spec.handler.rsplit(".", 1)[0], spec.name, event, env, workdir)
            figures[logical_id] = (got["import"], got["first"])
            return got["result"]

        got = self.run("floor", "floor", {}, env, workdir)
        figures["floor"] = (got["import"], got["first"])
        email = f"buyer-{n}-{uuid.uuid4().hex[:6]}@acme.example"
        body = json.dumps({"type": "form_submitted", "email": email, "properties": {"form_kind": "demo_request"},
                           "traits": BUYER}).encode()
        answer = call("ApiFunction", build_event(method="POST", target="/v1/events", body=body, source_ip="127.0.0.1",
                                                 server_port=443, headers=[("content-type", "application/json")]))
        assert answer["statusCode"] == 200 and '"sql"' in answer["body"], answer
        records = self.stream_records()
        assert not call("EventLogFunction", self.for_function("EventLogFunction", records))["batchItemFailures"]
        self.receivers.webhook.fail_next(1, when=lambda request: email in request.text)
        assert not call("HandoffFunction", self.for_function("HandoffFunction", records))["batchItemFailures"]
        assert not call("HandoffRetryFunction", self.retry_record())["batchItemFailures"]
        jobs = self.specs["JobsFunction"]
        rescore = next(s for s in jobs.schedules if "rescore" in json.dumps(s.input))
        call("JobsFunction", rescore.input)
        return figures


def first_calls(runs: int) -> dict[str, tuple[float, float]]:
    """Median (import, first invocation) CPU seconds per function, and the floor's."""
    samples: dict[str, list[tuple[float, float]]] = {}
    with FirstCalls() as lab, tempfile.TemporaryDirectory() as tmp:
        for n in range(runs):
            for name, pair in lab.one_round(Path(tmp), n).items():
                samples.setdefault(name, []).append(pair)
    return {name: (statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs))
            for name, pairs in samples.items()}


SHIPPED_PROBE = """
import sys, time
sys.path[:0] = sys.argv[2].split(":")
names = sys.argv[1].split(",")
t = time.process_time()
for name in names: __import__(name)
print(time.process_time() - t)
"""


def build_artifacts(directory: Path) -> dict[str, Path]:
    """Each function built as `sam build` builds it, for this machine's platform."""
    import platform

    from bench.artifact import build_after

    return {function: build_after(function, directory, PLATFORM=f"manylinux2014_{platform.machine()}")
            for function in entry_modules()}


def as_shipped(runs: int) -> dict[str, dict[str, tuple[float, float]]]:
    """Per function: (floor, entry module) import CPU, with and without the shipped bytecode."""
    from leadflow_infra.lambda_runtime import link_runtime_packages

    entries = entry_modules()
    env = {k: v for k, v in lambda_env(tracing=False).items() if k != "PYTHONPATH"}
    results: dict[str, dict[str, tuple[float, float]]] = {"with .pyc": {}, "without .pyc": {}}
    with tempfile.TemporaryDirectory() as tmp:
        runtime = link_runtime_packages(Path(tmp) / "runtime")
        built = build_artifacts(Path(tmp) / "artifacts")
        bare = {}
        for function, path in built.items():
            bare[function] = Path(tmp) / "bare" / function
            shutil.copytree(path, bare[function], symlinks=True)
            for pyc in bare[function].rglob("*.pyc"):
                pyc.unlink()
        for label, artifacts in (("with .pyc", built), ("without .pyc", bare)):
            for function, path in artifacts.items():
                samples: dict[str, list[float]] = {BASELINE: [], entries[function]: []}
                for _ in range(runs):
                    for names in samples:
                        out = subprocess.run([sys.executable, "-I", "-S", "-B", "-c", SHIPPED_PROBE, names,
                                              f"{path}:{runtime}"], capture_output=True, text=True, env=env,
                                             cwd=tmp, check=True)
                        samples[names].append(float(out.stdout))
                results[label][function] = (statistics.median(samples[BASELINE]),
                                            statistics.median(samples[entries[function]]))
    return results


def print_as_shipped(results: dict[str, dict[str, tuple[float, float]]], *, markdown: bool) -> None:
    with_pyc, without = results["with .pyc"], results["without .pyc"]
    if markdown:
        print("\n| function (imported from its artifact) | floor | entry module | × floor "
              "| without .pyc: floor | entry module | × floor |\n| --- | --- | --- | --- | --- | --- | --- |")
    else:
        print()
    for function in with_pyc:
        (f1, e1), (f0, e0) = with_pyc[function], without[function]
        if markdown:
            print(f"| {function} | {f1 * 1000:.0f} ms | {e1 * 1000:.0f} ms | {e1 / f1:.2f} "
                  f"| {f0 * 1000:.0f} ms | {e0 * 1000:.0f} ms | {e0 / f0:.2f} |")
        else:
            print(f"{function:24s} with .pyc: floor {f1 * 1000:6.0f} ms, import {e1 * 1000:6.0f} ms ({e1 / f1:4.2f}x)"
                  f"   without: floor {f0 * 1000:6.0f} ms, import {e0 * 1000:6.0f} ms ({e0 / f0:4.2f}x)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--markdown", action="store_true", help="print a README table")
    parser.add_argument("--no-first-call", action="store_true", help="only the import figures")
    parser.add_argument("--as-shipped", action="store_true",
                        help="also import from the built artifacts, with and without bytecode (needs the index)")
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
    if not args.no_first_call:
        print_first_calls(first_calls(args.runs), markdown=args.markdown)
    if args.as_shipped:
        print_as_shipped(as_shipped(args.runs), markdown=args.markdown)
    return 0


def print_first_calls(figures: dict[str, tuple[float, float]], *, markdown: bool) -> None:
    floor = sum(figures.pop("floor"))
    rows = [("floor: `import boto3, aws_lambda_powertools` + one `GetItem`", None, None, floor)]
    rows += [(name, imp, first, imp + first) for name, (imp, first) in figures.items()]
    if markdown:
        print("\n| function | import | first invocation | cold start CPU | × floor |\n| --- | --- | --- | --- | --- |")
    else:
        print()
    for name, imp, first, total in rows:
        cells = ["" if v is None else f"{v * 1000:.0f} ms" for v in (imp, first)]
        if markdown:
            print(f"| {name} | {cells[0]} | {cells[1]} | {total * 1000:.0f} ms | {total / floor:.2f} |")
        else:
            print(f"{name:62s} {cells[0]:>8s} {cells[1]:>8s} {total * 1000:7.1f} ms  {total / floor:5.2f}x")


if __name__ == "__main__":
    sys.exit(main())
