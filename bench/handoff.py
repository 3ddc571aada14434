"""Handoff benchmark: stage moves fanned out to every sink, what each costs, how fast.

    python -m bench.handoff            # full run: 200 moves, 100 + 10 latency samples (about 5 min on 2 cores)
    python -m bench.handoff --quick    # 50 moves, 20 + 3 samples (about a minute and a half)

Every sink is on: Slack, email (SES on moto), the signed generic webhook, HubSpot,
Salesforce and EventBridge (on moto). Slack, HubSpot, Salesforce and the webhook are
the real HTTP receivers of ``leadflow_infra.receivers`` on 127.0.0.1, answering at
once. Everything runs in this one process on one machine: moto, the receivers and the
handlers share its cores (and the GIL), so the figures bound nothing in AWS; they
compare runs and show where the time goes.

1. Stream handler throughput: N qualified SQL leads are written through the service
   with no stream consumer running, their stream records read back from moto's
   stream, filtered with the HandoffFunction's FilterCriteria from template.yaml and
   handed to ``leadflow.handlers.handoff.handler`` in Lambda batches of 10 (the template's
   BatchSize), one batch after another. Moves/s and sink deliveries/s, next to raw
   UpdateItem/s on the same moto server and raw POST/s to the Slack receiver.
2. Calls per move, counted on every boto3 client (botocore ``before-call``): the
   delivery ledger's DynamoDB calls (one claim and one settle per move, covering every
   sink) and write units (computed from the ledger items' sizes, DynamoDB's sizing
   rules), the SES,
   EventBridge and SQS calls, and the HTTP requests each receiver got. The same for
   one failed-then-retried Slack delivery, and for the SLA sweep per SQL checked.
3. Latency on the local stack (``LocalStack`` in-process, the real api, stream,
   handoff and handoff_retry handlers, no scheduled jobs): one demo-request form
   event at a time over HTTP, from just before ``POST /v1/events`` to the Slack
   receiver's ``received_at`` of the alert naming the lead's email. Each event waits
   for the previous one's pipeline to go idle.
4. The same latency when the Slack receiver answers the first attempt 500: the
   retry goes through the retry queue (SQS delays are whole seconds).

Writes the Markdown report to bench/handoff-results.md (bench/handoff-results-quick.md
with --quick).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import math
import os
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
import warnings
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

from bench.ingest import (
    ENV, FUNCTIONS, REGION, ROOT, UNSET, _stepper, item_size, machine, read_units, write_units,
)

if str(FUNCTIONS) not in sys.path:
    sys.path.insert(0, str(FUNCTIONS))

from leadflow_infra.demo.handoff import team_rules  # noqa: E402
from leadflow_infra.receivers import SinkReceivers  # noqa: E402
from leadflow_infra.local.invoke import LambdaContext  # noqa: E402
from leadflow_infra.template import find_template, function_spec, load_template  # noqa: E402

KB = 1024
TEMPLATE = load_template(find_template())
BATCH_SIZE = function_spec(TEMPLATE, "HandoffFunction").streams[0].batch_size  # MoveStream's BatchSize
TABLE = "bench-handoff"
EVENT_BUS = "leadflow-bench"
SES_FROM = "alerts@leadflow.example"
SINKS = ("slack", "email", "webhook", "hubspot", "salesforce", "eventbridge")

BUYER = {"first_name": "Jane", "job_title": "VP Marketing", "company_size": 200, "industry": "software",
         "country": "US", "budget": "yes", "authority": "decision_maker", "need": "replace spreadsheets",
         "timeline": "this_quarter"}


# -- set-up ------------------------------------------------------------------------------

def demo_request(tag: str, i: int) -> dict:
    """A demo-request form from a qualified buyer (BANT): a new lead that lands in SQL."""
    return {"event_id": f"{tag}-{i}-{uuid.uuid4().hex[:6]}", "type": "form_submitted",
            "email": f"{tag}.{i}.{uuid.uuid4().hex[:6]}@buyer{i % 53}.example.com",
            "properties": {"form_kind": "demo_request", "form_id": "request-demo"},
            "traits": {**BUYER, "last_name": f"Doe{i}", "company": f"Buyer {i % 53}"}}


def rules_file(directory: Path) -> Path:
    """The shipped rules plus two reps, so SQLs get an owner with an email (the email
    sink's recipient), a Slack user and CRM owner ids."""
    return team_rules(directory, version="bench-handoff-1")


class Receivers(SinkReceivers):
    """The four receivers (started), with per-receiver counts for the report."""

    def __init__(self) -> None:
        super().__init__()
        self.start()
        self.named = {"slack": self.slack, "hubspot": self.hubspot, "salesforce": self.salesforce,
                      "webhook": self.webhook}

    def reset(self) -> None:
        for receiver in self.all:
            receiver.reset()

    def counts(self) -> dict[str, Counter]:
        return {name: Counter(requests=len(r.requests), accepted=len(r.accepted), failed=len(r.failed),
                              violations=len(r.violations)) for name, r in self.named.items()}

    def violations(self) -> list[str]:
        return [f"{name}: {v.reason}" for name, r in self.named.items() for v in r.violations]



def sink_environment(rx: Receivers, rules: Path, retry_base: float) -> dict[str, str]:
    return rx.environment(LEADFLOW_RULES=str(rules), LEADFLOW_SES_FROM=SES_FROM, LEADFLOW_EVENT_BUS=EVENT_BUS,
                          LEADFLOW_SINK_TIMEOUT="5", LEADFLOW_RETRY_BASE_SECONDS=f"{retry_base:g}")


class Environment:
    """The process environment as it was at start, put back between phases."""

    def __init__(self) -> None:
        self.saved = dict(os.environ)

    def apply(self, values: dict[str, str]) -> None:
        from leadflow import container

        os.environ.clear()
        os.environ.update(self.saved)
        for name in UNSET:
            os.environ.pop(name, None)
        os.environ.update(ENV)
        os.environ.update(values)
        container.reset()

    def restore(self) -> None:
        from leadflow import container

        os.environ.clear()
        os.environ.update(self.saved)
        container.reset()


def harness_client(service: str, endpoint: str) -> Any:
    """A client of the benchmark's own (its own session: its calls are not counted)."""
    import boto3

    return boto3.session.Session().client(service, region_name=REGION, endpoint_url=endpoint,
                                          aws_access_key_id="testing", aws_secret_access_key="testing")


class CallMeter:
    """Counts the calls of every boto3 client made from the default session from now on
    (handlers registered on the session are copied into each new client), and the
    wall time between before-call and after-call per service."""

    def __init__(self) -> None:
        import boto3

        boto3.setup_default_session()
        self.calls: Counter[tuple[str, str]] = Counter()
        self.seconds: Counter[str] = Counter()
        self.get_item_sizes: list[int] = []
        self.query_pages: list[list[int]] = []
        self._started: dict[int, float] = {}
        self._lock = threading.Lock()
        self._events = boto3.DEFAULT_SESSION.events
        self._events.register("before-call", self._before)
        self._events.register("after-call", self._after)

    def close(self) -> None:
        """Stop counting in clients created from now on (later phases run uncounted)."""
        self._events.unregister("before-call", self._before)
        self._events.unregister("after-call", self._after)

    def reset(self) -> None:
        with self._lock:
            self.calls.clear()
            self.seconds.clear()
            self.get_item_sizes.clear()
            self.query_pages.clear()

    def _before(self, model: Any, context: dict, **_: Any) -> None:
        service = model.service_model.endpoint_prefix
        with self._lock:
            self.calls[(service, model.name)] += 1
        context["bench_started"] = time.perf_counter()

    def _after(self, model: Any, parsed: dict, context: dict, **_: Any) -> None:
        started = context.get("bench_started")
        with self._lock:
            if started is not None:
                self.seconds[model.service_model.endpoint_prefix] += time.perf_counter() - started
            if model.name == "GetItem":
                self.get_item_sizes.append(item_size(parsed.get("Item")))
            elif model.name == "Query":
                self.query_pages.append([item_size(it) for it in parsed.get("Items", [])])

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"calls": Counter(self.calls), "seconds": Counter(self.seconds),
                    "get_item_sizes": list(self.get_item_sizes), "query_pages": [list(p) for p in self.query_pages]}


class ExpectedWarnings(logging.Filter):
    """Drops (and counts) the warnings the benchmark provokes on purpose: a retry
    scheduled after a scripted Slack 500. Anything else still reaches stderr."""

    EXPECTED = frozenset({"handoff.retry_scheduled"})

    def __init__(self) -> None:
        super().__init__()
        self.dropped: Counter[str] = Counter()

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        if message in self.EXPECTED:
            self.dropped[message] += 1
            return False
        return True


EXPECTED_WARNINGS = ExpectedWarnings()


@contextlib.contextmanager
def quiet_handlers():
    """Powertools prints EMF lines to stdout even with metrics disabled, and warnings
    (retries scheduled) as JSON logs: keep them out of the report."""
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield sink


# -- 1. and 2. throughput and calls per move ----------------------------------------------

def stream_records(endpoint: str, table: str, after: str | None = None) -> tuple[list[dict], str | None]:
    """Every record in the table's stream (after sequence number ``after``), in Lambda's
    shape, filtered with the HandoffFunction's FilterCriteria; and the last sequence number."""
    from leadflow_infra.local.filters import stream_filter
    from leadflow_infra.local.stream_poller import to_lambda_record

    ddb = harness_client("dynamodb", endpoint)
    streams = harness_client("dynamodbstreams", endpoint)
    arn = ddb.describe_table(TableName=table)["Table"]["LatestStreamArn"]
    keep = stream_filter("HandoffFunction", "MoveStream")
    out: list[dict] = []
    last = after
    for shard in streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]:
        kwargs: dict[str, Any] = {"StreamArn": arn, "ShardId": shard["ShardId"]}
        if after:
            kwargs.update(ShardIteratorType="AFTER_SEQUENCE_NUMBER", SequenceNumber=after)
        else:
            kwargs["ShardIteratorType"] = "TRIM_HORIZON"
        iterator = streams.get_shard_iterator(**kwargs)["ShardIterator"]
        while iterator:
            page = streams.get_records(ShardIterator=iterator, Limit=1000)
            records = page.get("Records", [])
            if not records:
                break
            last = str(records[-1]["dynamodb"]["SequenceNumber"])
            out.extend(r for r in (to_lambda_record(raw, arn, REGION) for raw in records) if keep is None or keep(r))
            iterator = page.get("NextShardIterator")
    return out, last


def batches(records: list[dict], size: int = BATCH_SIZE) -> list[dict]:
    return [{"Records": records[i:i + size]} for i in range(0, len(records), size)]


def moves_in(records: list[dict]) -> int:
    return sum(len(json.loads(r["dynamodb"]["NewImage"]["moves"]["S"])) for r in records)


def run_batches(handler: Callable, events: list[dict], function: str = "HandoffFunction",
                ) -> tuple[float, list[float], int]:
    """Invoke ``handler`` on each batch in turn, with the template ``function``'s Lambda
    context (as the local stack gives it); (total s, per-batch s, failed items)."""
    ctx = LambdaContext.for_function(function_spec(TEMPLATE, function), region=REGION)
    per_batch = []
    failed = 0
    start = time.perf_counter()
    for event in events:
        t = time.perf_counter()
        answer = handler(event, ctx)
        per_batch.append(time.perf_counter() - t)
        failed += len((answer or {}).get("batchItemFailures") or [])
    return time.perf_counter() - start, per_batch, failed


def ledger_items(endpoint: str, table: str) -> list[dict]:
    ddb = harness_client("dynamodb", endpoint)
    kwargs: dict[str, Any] = {"TableName": table, "FilterExpression": "begins_with(SK, :p)",
                              "ExpressionAttributeValues": {":p": {"S": "SEND#"}}}
    items: list[dict] = []
    while True:
        page = ddb.scan(**kwargs)
        items.extend(page.get("Items", []))
        if "LastEvaluatedKey" not in page:
            return items
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def ledger_units(item: dict, lease_seconds: int = 120) -> tuple[int, int, int, int]:
    """(claim WCU, settle WCU, claim item bytes, settled item bytes) for one move whose
    sinks were claimed together once and settled together once. The claimed item is the
    settled one as it stood before the settle: every sink "sending" with a lease and no
    detail. An UpdateItem costs the larger of the item before and after it."""
    from leadflow.adapters.dynamodb.ledger import SINK_PREFIX

    settled = dict(item)
    claimed = dict(item)
    for name, value in item.items():
        if name.startswith(SINK_PREFIX) and "M" in value:
            state = {k: v for k, v in value["M"].items() if k != "detail"}
            state.update(st={"S": "sending"}, lease={"N": str(int(time.time()) + lease_seconds)})
            claimed[name] = {"M": state}
    c, s = item_size(claimed), item_size(settled)
    return write_units(c), write_units(max(c, s)), c, s


def ledger_statuses(items: list[dict]) -> Counter:
    """(sink, status) -> deliveries, over ledger items."""
    from leadflow.adapters.dynamodb.ledger import delivery_entries

    return Counter((e["sink"], e["status"]) for it in items for e in delivery_entries(it))


def raw_updates(endpoint: str, n: int) -> float:
    """UpdateItem/s of a small counter on the same moto server, no leadflow code."""
    ddb = harness_client("dynamodb", endpoint)
    key = {"PK": {"S": "COUNTER#bench"}, "SK": {"S": "COUNTER"}}
    start = time.perf_counter()
    for _ in range(n):
        ddb.update_item(TableName=TABLE, Key=key, UpdateExpression="ADD n :one",
                        ExpressionAttributeValues={":one": {"N": "1"}})
    return n / (time.perf_counter() - start)


def raw_posts(url: str, n: int) -> float:
    """POST/s of a small Slack message to the Slack receiver with urllib, no leadflow code."""
    body = json.dumps({"text": "raw post"}).encode()
    start = time.perf_counter()
    for _ in range(n):
        request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            answer.read()
    return n / (time.perf_counter() - start)


def throughput(env: Environment, rx: Receivers, rules: Path, n: int, retry_case: bool = True) -> dict:
    from leadflow import container
    from leadflow.domain.events import parse_event
    from leadflow_infra.local.moto_server import MotoServer
    from leadflow_infra.local.queues import create_queues, template_queues
    from leadflow_infra.local.tables import create_table, template_table_properties

    moto = MotoServer()
    endpoint = moto.start()
    meter: CallMeter | None = None
    try:
        moto.reset()
        ddb, sqs = harness_client("dynamodb", endpoint), harness_client("sqs", endpoint)
        create_table(ddb, template_table_properties("LeadsTable"), TABLE)
        queues = create_queues(sqs, template_queues())
        harness_client("sesv2", endpoint).create_email_identity(EmailIdentity=SES_FROM)
        harness_client("events", endpoint).create_event_bus(Name=EVENT_BUS)
        env.apply({**sink_environment(rx, rules, retry_base=1.0), "AWS_ENDPOINT_URL": endpoint,
                   "LEADFLOW_TABLE": TABLE,
                   "LEADFLOW_RETRY_QUEUE_URL": queues["HandoffRetryQueue"].url,
                   "LEADFLOW_DLQ_URL": queues["HandoffDeadLetterQueue"].url})
        meter = CallMeter()
        rx.reset()

        from leadflow.handlers import handoff as handoff_handler

        service = container.service()
        warm_n = BATCH_SIZE
        t = time.perf_counter()
        for i in range(warm_n + n):
            applied = service.ingest(parse_event(demo_request("warm" if i < warm_n else "move", i)))
            if applied.lead.stage != "sql":
                raise RuntimeError(f"a demo-request buyer ended in {applied.lead.stage}, not sql")
        create_s = time.perf_counter() - t
        records, last_seq = stream_records(endpoint, TABLE)
        if len(records) != warm_n + n:
            raise RuntimeError(f"expected {warm_n + n} lead records with moves, read {len(records)}")
        warm, timed = records[:warm_n], records[warm_n:]

        with quiet_handlers():
            # One batch first, not timed with the rest: the first invocation imports the
            # sinks (slack_sdk, standardwebhooks), builds the clients and fetches
            # Salesforce's token, as a cold Lambda would.
            warm_s, _, warm_failed = run_batches(handoff_handler.handler, batches(warm))
            meter.reset()
            rx.reset()
            seconds, per_batch, failed = run_batches(handoff_handler.handler, batches(timed))
            happy = meter.snapshot()
            happy_rx = rx.counts()
            violations = rx.violations()

        moves = moves_in(timed)
        items = ledger_items(endpoint, TABLE)
        timed_leads = {r["dynamodb"]["Keys"]["PK"]["S"] for r in timed}
        mine = [it for it in items if it["PK"]["S"] in timed_leads]
        statuses = ledger_statuses(mine)
        units = [ledger_units(it) for it in mine]
        sent = sum(v for (_, status), v in statuses.items() if status == "sent")

        retry = retried_delivery(rx, meter, endpoint, queues, service, last_seq) if retry_case else None
        raw_update_rate = raw_updates(endpoint, 300)
        raw_post_rate = raw_posts(f"{rx.slack.url}/services/T000/B000/raw", 200)

        # 2b. SLA sweeps over the table's SQLs: now (all just created: none can be due, so
        # none is read) and as if a week had passed (every one past both escalation levels).
        sweeps = {}
        with quiet_handlers():
            container.reset()
            for label, days in (("now", 0), ("a week later", 7)):
                watch = container.sla_watch()
                watch.clock = lambda days=days: datetime.now(timezone.utc) + timedelta(days=days)
                meter.reset()
                t = time.perf_counter()
                result = watch.sweep()
                sweeps[label] = {"result": result, "seconds": time.perf_counter() - t, "calls": meter.snapshot()}
        return {
            "n": n, "moves": moves, "records": len(timed), "batches": len(per_batch), "seconds": seconds,
            "per_batch": per_batch, "failed": failed, "warm_s": warm_s, "warm_failed": warm_failed,
            "warm_records": len(warm), "create_s": create_s, "created": warm_n + n,
            "calls": happy["calls"], "call_seconds": happy["seconds"], "receivers": happy_rx,
            "violations": violations, "statuses": statuses, "sent": sent, "units": units,
            "retry": retry, "raw_update_rate": raw_update_rate, "raw_post_rate": raw_post_rate,
            "sweeps": sweeps,
        }
    finally:
        if meter is not None:
            meter.close()
        env.restore()
        moto.stop()


def retried_delivery(rx: Receivers, meter: CallMeter, endpoint: str, queues: dict, service: Any,
                     after: str | None) -> dict:
    """One more move whose first Slack post is answered 500: the calls of the stream
    handler's invocation, then of each retry-handler invocation its retry messages
    cause, until Slack has the alert (however many the handoff code needs)."""
    from leadflow.handlers import handoff as handoff_handler
    from leadflow.handlers import handoff_retry as handoff_retry_handler

    from leadflow.domain.events import parse_event
    from leadflow_infra.local.queue_poller import to_lambda_record

    service.ingest(parse_event(demo_request("retry", 0)))
    records, _ = stream_records(endpoint, TABLE, after)
    if len(records) != 1:
        raise RuntimeError(f"expected 1 retry-case record, read {len(records)}")
    sqs = harness_client("sqs", endpoint)
    url, arn = queues["HandoffRetryQueue"].url, queues["HandoffRetryQueue"].arn
    invocations: list[dict] = []
    with quiet_handlers():
        rx.reset()
        rx.slack.fail_next(1, status=500)
        meter.reset()
        failed_at = time.perf_counter()
        run_batches(handoff_handler.handler, batches(records))
        invocations.append({"role": "stream handler (6 sinks; Slack answers 500)", "at": 0.0, "messages": 1,
                            "calls": meter.snapshot()["calls"], "failed": 0})
        deadline = failed_at + 40
        while not rx.slack.accepted and time.perf_counter() < deadline:
            messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                           MessageSystemAttributeNames=["All"],
                                           MessageAttributeNames=["All"]).get("Messages", [])
            if not messages:
                continue
            at = time.perf_counter() - failed_at
            meter.reset()
            _, _, failed = run_batches(handoff_retry_handler.handler,
                                       batches([to_lambda_record(m, arn, REGION) for m in messages]),
                                       "HandoffRetryFunction")
            attempts = sorted({json.loads(m["Body"]).get("attempt") for m in messages})
            invocations.append({"role": f"retry handler (message attempt {', '.join(map(str, attempts))})",
                                "at": at, "messages": len(messages), "calls": meter.snapshot()["calls"],
                                "failed": failed})
            for m in messages:
                sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    if not rx.slack.accepted:
        raise RuntimeError("the retried Slack alert was not delivered within 40 s")
    return {"invocations": invocations, "alert_after": rx.slack.accepted[0].received_at,
            "slack_accepted": len(rx.slack.accepted), "slack_failed": len(rx.slack.failed)}


# -- 3. and 4. latency on the local stack --------------------------------------------------

class Marks:
    """When the handoff function was invoked for, and returned from, each lead's move."""

    def __init__(self) -> None:
        self.invoked: dict[str, float] = {}
        self.returned: dict[str, float] = {}
        self._cond = threading.Condition()

    def wrap(self, handler: Callable) -> Callable:
        def timed(event: dict, context: Any) -> Any:
            now = time.time()
            emails = [r["dynamodb"].get("NewImage", {}).get("email", {}).get("S") for r in event.get("Records", [])]
            with self._cond:
                for email in emails:
                    self.invoked.setdefault(email, now)
            try:
                return handler(event, context)
            finally:
                done = time.time()
                with self._cond:
                    for email in emails:
                        self.returned.setdefault(email, done)
                    self._cond.notify_all()

        return timed

    def wait_returned(self, email: str, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        with self._cond:
            while email not in self.returned:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"the handoff function was not invoked for {email} within {timeout}s")
                self._cond.wait(remaining)
            return self.returned[email]


def post_event(base: str, body: dict) -> dict:
    request = urllib.request.Request(base + "/v1/events", data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())


def one_sql(stack: Any, rx: Receivers, marks: Marks, tag: str, i: int, *, retries: bool = False) -> dict:
    """One demo request, sent when the pipeline is idle; its timings (epoch seconds)."""
    body = demo_request(tag, i)
    email = body["email"]
    retry_invocations = stack.retry_poller.stats["invocations"]
    sent = time.time()
    answer = post_event(stack.url, body)
    answered = time.time()
    if answer.get("stage") != "sql":
        raise RuntimeError(f"expected an SQL, the API answered {answer}")
    alert = rx.slack.wait_for(lambda r: email in r.text, timeout=30)[0]
    returned = marks.wait_returned(email, timeout=30)
    # Idle again before the next: both stream consumers done (and, after a scripted
    # failure, the retry queue empty: that drain waits out a 1 s long poll or two).
    if not stack.drain(timeout=30, retries=retries):
        raise RuntimeError("the local stack did not drain within 30 s")
    return {"sent": sent, "answered": answered, "invoked": marks.invoked[email], "alert": alert.received_at,
            "returned": returned, "retry_invocations": stack.retry_poller.stats["invocations"] - retry_invocations}


def latency(env: Environment, rx: Receivers, rules: Path, n: int, n_retry: int, retry_base: float) -> dict:
    from leadflow_infra.local.stack import LocalStack

    from leadflow.handlers import handoff as handoff_handler

    marks = Marks()
    samples: list[dict] = []
    retried: list[dict] = []
    warmup: list[dict] = []
    env.apply(sink_environment(rx, rules, retry_base=retry_base))
    rx.reset()
    with tempfile.TemporaryDirectory(prefix="leadflow-bench-") as data, quiet_handlers():
        stack = LocalStack(api="leadflow.handlers.api:handler", stream="leadflow.handlers.event_log:handler", jobs=None,
                           handoff=marks.wrap(handoff_handler.handler),
                           handoff_retry="leadflow.handlers.handoff_retry:handler",
                           data_dir=data, persist=False, access_log=False)
        try:
            stack.start()
            poller = stack.pollers["handoff"]
            polling = {"poll_interval": poller._poll_interval, "idle_poll_interval": poller._idle_poll_interval,
                       "batch_size": poller.settings.batch_size,
                       "parallelization": poller.settings.parallelization_factor,
                       "batching_window": poller.settings.maximum_batching_window,
                       "sqs_wait_seconds": stack.retry_poller._wait_seconds,
                       "sqs_poll_interval": stack.retry_poller._poll_interval}
            for i in range(2):  # imports, clients, Salesforce's token: not counted
                warmup.append(one_sql(stack, rx, marks, "lat-warm", i))
            for i in range(n):
                samples.append(one_sql(stack, rx, marks, "lat", i))
            for i in range(n_retry):
                rx.slack.fail_next(1, status=500)
                retried.append(one_sql(stack, rx, marks, "lat-retry", i, retries=True))
            if not stack.drain(timeout=30, retries=True):
                raise RuntimeError("the retry queue did not drain within 30 s")
            failed_alerts = len(rx.slack.failed)
            violations = rx.violations()
            deliveries = delivery_statuses(stack)
        finally:
            stack.stop()
    env.restore()
    return {"samples": samples, "retried": retried, "warmup": warmup, "polling": polling,
            "failed_alerts": failed_alerts, "violations": violations, "deliveries": deliveries}


def delivery_statuses(stack: Any) -> Counter:
    ddb = stack.client("dynamodb")
    kwargs: dict[str, Any] = {"TableName": stack.table_name, "FilterExpression": "begins_with(SK, :p)",
                              "ExpressionAttributeValues": {":p": {"S": "SEND#"}}}
    out: Counter = Counter()
    while True:
        page = ddb.scan(**kwargs)
        out.update(ledger_statuses(page.get("Items", [])))
        if "LastEvaluatedKey" not in page:
            return out
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


# -- report -----------------------------------------------------------------------------

def nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def spread(values: list[float]) -> tuple[float, float, float, float]:
    """(median, p95, max, min) in milliseconds."""
    ms = [v * 1000 for v in values]
    return statistics.median(ms), nearest_rank(ms, 0.95), max(ms), min(ms)


def _calls(calls: Counter, per: float, services: tuple[str, ...] | None = None) -> str:
    rows = sorted((k, v) for k, v in calls.items() if services is None or k[0] in services)
    return ", ".join(f"{_num(v / per)} {svc} {op}" for (svc, op), v in rows) or "none"


def _num(x: float) -> str:
    return f"{x:g}" if x == round(x, 2) else f"{x:.3f}"


def report(args: argparse.Namespace, tp: dict, lat: dict, total_s: float) -> str:
    quick = " (--quick)" if args.quick else ""
    lines = [f"# Handoff benchmark{quick}", ""]
    lines += machine()
    lines.append(args.revision)
    lines += [f"- one process, one run: {total_s:.0f} s. moto (ThreadedMotoServer on 127.0.0.1), the Slack, "
              f"HubSpot, Salesforce and Standard Webhooks receivers (`leadflow_infra.receivers`, "
              f"ThreadingHTTPServer on 127.0.0.1, answering at once) and the handlers all share this "
              f"machine's cores and one GIL: the figures compare runs and show where time goes; they are "
              f"not AWS figures.",
              f"- every sink on: {', '.join(SINKS)} (SES and EventBridge on moto); rules: the shipped defaults "
              f"plus a routing section (two reps with email, Slack user and CRM owner ids), so every SQL "
              f"has an owner.",
              ""]

    # 1. throughput
    moves, secs = tp["moves"], tp["seconds"]
    deliveries = tp["sent"]
    batch_ms = spread(tp["per_batch"])
    rate = moves / secs
    lines += ["## 1. Stream handler throughput", "",
              f"{tp['created']} demo-request buyers written through `LeadService.ingest` (each a new lead that lands "
              f"in SQL: one move, `None -> sql`), {tp['create_s']:.1f} s; no stream consumer running. Their "
              f"records read back from moto's stream, kept by the HandoffFunction's FilterCriteria (template.yaml), "
              f"and handed to `leadflow.handlers.handoff.handler` in batches of {BATCH_SIZE}, one after another. The first "
              f"batch ({tp['warm_records']} records) warms the function (sink imports, clients, Salesforce's "
              f"token: {tp['warm_s']:.2f} s) and is not counted; then {tp['records']} records "
              f"({tp['batches']} batches):", "",
              "| measure | result |", "|---|---:|",
              f"| moves | {moves} |",
              f"| sink deliveries sent (ledger entries `sent`) | {deliveries} ({deliveries / moves:g} per move) |",
              f"| seconds | {secs:.2f} |",
              f"| **moves/s** | **{rate:.1f}** |",
              f"| **sink deliveries/s** | **{deliveries / secs:.1f}** |",
              f"| ms per move | {1000 * secs / moves:.1f} |",
              f"| ms per batch of {BATCH_SIZE}: median / p95 / max | {batch_ms[0]:.0f} / {batch_ms[1]:.0f} / "
              f"{batch_ms[2]:.0f} |",
              f"| partial-batch failures reported | {tp['failed']} |",
              f"| raw UpdateItem/s on the same moto server (counter, no leadflow code) | "
              f"{tp['raw_update_rate']:.0f} |",
              f"| raw POST/s to the Slack receiver (urllib, small body, no leadflow code) | "
              f"{tp['raw_post_rate']:.0f} |", ""]
    dynamo = sum(v for (svc, _), v in tp["calls"].items() if svc == "dynamodb")
    cs = tp["call_seconds"]
    aws_s = sum(cs.values())
    lines += [f"Where the {secs:.2f} s went (wall time from botocore `before-call` to `after-call`, per service; "
              f"the rest is the four HTTP sinks' round trips to the receivers, Powertools' batch processor, "
              f"rebuilding each lead from its stream image and leadflow's code). A move's sinks are sent at the "
              f"same time, so the SES and EventBridge calls overlap each other and the HTTP sinks: the parts can "
              f"add up to more than the whole:", "",
              "| part | calls | s | share | ms per move | ms per call |", "|---|---:|---:|---:|---:|---:|"]
    per_service: Counter[str] = Counter()
    for (service, _), v in tp["calls"].items():
        per_service[service] += v
    for service, s in sorted(cs.items(), key=lambda kv: -kv[1]):
        lines.append(f"| {service} calls (moto) | {per_service[service]} | {s:.2f} | {100 * s / secs:.0f}% "
                     f"| {1000 * s / moves:.1f} | {1000 * s / max(1, per_service[service]):.1f} |")
    if aws_s <= secs:
        lines.append(f"| everything else | | {secs - aws_s:.2f} | {100 * (secs - aws_s) / secs:.0f}% "
                     f"| {1000 * (secs - aws_s) / moves:.1f} | |")
    else:
        lines.append("| everything else | | (overlapped) | | | |")
    ceiling = tp["raw_update_rate"] / (dynamo / moves)
    lines += ["", f"What bounds it: moto. The ledger makes {dynamo / moves:g} DynamoDB calls per move; at the "
                  f"raw UpdateItem rate above that alone caps this process at about {ceiling:.0f} moves/s before "
                  f"any sink is called. The receivers answer at once on the same machine, so the four HTTP sinks "
                  f"cost little here; a move's sinks are sent at the same time (a thread each), so real Slack, "
                  f"HubSpot and Salesforce round trips (not measured) cost the slowest of them, not their sum, "
                  f"bounded by the attempt's deadline (LEADFLOW_SINK_TIMEOUT). One invocation at "
                  f"a time is measured; the template's ParallelizationFactor 4 lets Lambda run up to four "
                  f"batches per shard at once (not modelled).", ""]

    # 2. calls per move
    rx_counts = tp["receivers"]
    lines += ["## 2. Calls per move", "",
              "Counted on every boto3 client the handler built (botocore `before-call` registered on the default "
              "session, so it is copied into each client), over the timed run of section 1; HTTP requests as "
              "the receivers recorded them.", "",
              "| call | per move | total |", "|---|---:|---:|"]
    for (svc, op), v in sorted(tp["calls"].items()):
        lines.append(f"| {svc} `{op}` | {v / moves:g} | {v} |")
    for name in ("slack", "webhook", "hubspot", "salesforce"):
        c = rx_counts[name]
        lines.append(f"| HTTP to the {name} receiver | {c['requests'] / moves:g} | {c['requests']} |")
    if tp["violations"]:
        lines += ["", f"Receiver shape violations: {tp['violations'][:5]}"]
    statuses = ", ".join(f"{sink} {status} {v}" for (sink, status), v in sorted(tp["statuses"].items()))
    claim = [u[0] for u in tp["units"]]
    settle = [u[1] for u in tp["units"]]
    sizes = [u[3] for u in tp["units"]]
    per_move_wcu = (sum(claim) + sum(settle)) / moves
    ledger_writes = sum(v for (svc, op), v in tp["calls"].items()
                        if svc == "dynamodb" and op in ("UpdateItem", "PutItem", "DeleteItem", "BatchWriteItem",
                                                        "TransactWriteItems"))
    lines += ["", f"Ledger entries of the timed moves: {statuses}.", "",
              f"**Ledger writes per move: {ledger_writes / moves:g}** (counted above). Write units: each move is "
              f"one item holding every sink's state, written twice: one claim of every sink (a conditional "
              f"UpdateItem that creates the item) and one settle of every sink (UpdateItem); an UpdateItem costs "
              f"ceil(max(item before, item after) / 1 KB). Ledger items are {min(sizes)}-{max(sizes)} bytes "
              f"settled (claim {min(u[2] for u in tp['units'])}-{max(u[2] for u in tp['units'])} bytes), so each "
              f"write is {'1 WCU' if max(claim + settle) == 1 else f'up to {max(claim + settle)} WCU'}: "
              f"**{per_move_wcu:g} WCU per move** ({len(tp['units']) / moves:g} items x 2 writes), no GSI "
              f"writes (ledger items carry no GSI1 keys), no reads. Every ledger write is also a stream record "
              f"that both stream functions' FilterCriteria drop (`SK` is `SEND#...`, not `LEAD`): "
              f"{2 * len(tp['units']) / moves:g} extra stream records per move for the pollers to read past.", ""]
    r = tp["retry"]
    if r:
        total: Counter = Counter()
        for inv in r["invocations"]:
            total.update(inv["calls"])
        happy = {k: v / moves for k, v in tp["calls"].items()}
        extra = {k: v - happy.get(k, 0) for k, v in total.items() if v - happy.get(k, 0)}
        lines += ["One more move whose first Slack post the receiver answers 500, followed through the retry "
                  "queue by hand (receive, `leadflow.handlers.handoff_retry.handler`, delete) until Slack has the alert:", "",
                  "| invocation | s after the first attempt | messages | calls | failed items |",
                  "|---|---:|---:|---|---:|"]
        for inv in r["invocations"]:
            lines.append(f"| {inv['role']} | {inv['at']:.1f} | {inv['messages']} | {_calls(inv['calls'], 1)} "
                         f"| {inv['failed']} |")
        lines += ["", f"Against the happy path, that move cost {_calls(Counter(extra), 1)} more "
                      f"({len(r['invocations']) - 1} retry invocation(s); Slack: {r['slack_failed']} scripted "
                      f"failure, {r['slack_accepted']} accepted). The first retry message is sent with "
                      f"DelaySeconds 1 (the retry policy's floor; SQS delays are whole seconds). The event "
                      f"source mapping's own ReceiveMessage/DeleteMessage calls are not the function's and are "
                      f"not counted.", ""]
    sql_count = tp["sweeps"]["a week later"]["result"]["checked"]
    lines += [f"SLA sweeps (`SlaWatch.sweep`, the `{{\"job\": \"sla\"}}` job) over the table's {sql_count} SQLs, "
              "run now (all just created) and with the clock a week ahead (every one past both escalation "
              "levels of the default rules, so each gets two):", "",
              "| sweep | s | SQLs read | escalated | calls | calls per SQL read | read units | write units |",
              "|---|---:|---:|---:|---|---|---:|---:|"]
    for label, sweep in tp["sweeps"].items():
        result, sc = sweep["result"], sweep["calls"]
        read = result["checked"]
        pages = sc["query_pages"]
        rcu = sum(max(1, math.ceil(sum(p) / (4 * KB))) * 0.5 for p in pages) + sum(read_units(x) for x in sc["get_item_sizes"])
        writes = sum(v for (svc, op), v in sc["calls"].items() if svc == "dynamodb" and op in ("UpdateItem", "PutItem"))
        per_read = _calls(sc["calls"], read) if read else "-"
        lines.append(f"| {label} | {sweep['seconds']:.2f} | {read} | {result['escalated']} | {_calls(sc['calls'], 1)} "
                     f"| {per_read} | {rcu:g} | {writes} (writes of the move's ledger item, under 1 KB: 1 WCU each) |")
    lines += ["", "An SQL younger than the first level's business hours cannot be due and is not read (the GSI1 "
              "query asks only for SQLs that entered before that): a sweep costs its query pages until SQLs "
              "age; each one old enough costs a consistent GetItem, and each due level a claim and a settle "
              "in the ledger and one Slack post.", ""]

    # 3. and 4. latency
    s = lat["samples"]
    pol = lat["polling"]
    gap = statistics.median(b["sent"] - a["sent"] for a, b in zip(s, s[1:])) if len(s) > 1 else 0.0

    def row(label: str, values: list[float]) -> str:
        med, p95, mx, mn = spread(values)
        return f"| {label} | {med:.0f} | {p95:.0f} | {mx:.0f} | {mn:.0f} |"

    lines += ["## 3. Latency: event HTTP request to the Slack alert (local stack)", "",
              f"`LocalStack` in this process (moto, the gateway in front of the API function, the stream "
              f"pollers feeding the event-log and handoff functions, the SQS poller feeding the handoff "
              f"retry function, each with its template settings; no scheduled jobs), every sink on. {len(s)} demo-request "
              f"events from qualified buyers (unique emails), one at a time over HTTP; each waits for its Slack "
              f"alert, for the handoff invocation to return (all six sinks) and for both stream pollers to go "
              f"idle before the next, so each measures an idle pipeline. Two warm-up events before them are "
              f"not counted (the first alert after the stack started took "
              f"{1000 * (lat['warmup'][0]['alert'] - lat['warmup'][0]['sent']):.0f} ms: new clients and "
              f"settings; the modules were already imported by section 1). Times are `time.time()` in this "
              f"process: just before the POST, the API's answer, the handoff function's invocation (a wrapper "
              f"around the real handler), the Slack receiver's `received_at`, the invocation's return.", "",
              "| interval (ms) | median | p95 | max | min |", "|---|---:|---:|---:|---:|",
              row("**POST /v1/events -> Slack receiver has the alert**", [x["alert"] - x["sent"] for x in s]),
              row("POST -> API answered 200 (lead written)", [x["answered"] - x["sent"] for x in s]),
              row("API answered -> handoff function invoked (stream poll)", [x["invoked"] - x["answered"] for x in s]),
              row("handoff invoked -> Slack has the alert (claim, POST)", [x["alert"] - x["invoked"] for x in s]),
              row("POST -> all six sinks done (invocation returned)", [x["returned"] - x["sent"] for x in s]), "",
              f"The floor: the handoff's stream poller (`leadflow_infra.local.stream_poller.StreamPoller`, as `LocalStack` "
              f"configures it) reads the stream every {pol['poll_interval'] * 1000:.0f} ms while records flow "
              f"and every {pol['idle_poll_interval'] * 1000:.0f} ms after a second without any, so a record "
              f"waits up to one interval before it is read, plus moto's GetRecords. A move's sinks are sent at "
              f"the same time, so its alert does not wait for the CRMs. The poller batches as the "
              f"template's MoveStream says (MaximumBatchingWindowInSeconds {pol['batching_window']:g}, "
              f"ParallelizationFactor {pol['parallelization']}); Lambda's own polling rate (about four reads a "
              f"second per shard) is not modelled. Here one sample followed another every "
              f"{gap * 1000:.0f} ms (median), and the ledger writes of each move are stream records too, so the "
              f"handoff poller was mostly on its {pol['poll_interval'] * 1000:.0f} ms interval.", ""]
    rt = lat["retried"]
    if rt:
        lines += ["## 4. Latency when the first Slack post fails (500)", "",
                  f"{len(rt)} more events on the same stack; before each, the Slack receiver is told to answer "
                  f"the next post 500. The first attempt settles the delivery `failed` and sends a retry "
                  f"message with DelaySeconds = max(1, ceil(uniform(base/2, base))) where base = "
                  f"LEADFLOW_RETRY_BASE_SECONDS = {args.retry_base:g}: SQS delays are whole seconds, so any "
                  f"base up to 1 gives 1 s. The SQS poller long-polls {pol['sqs_wait_seconds']} s per receive "
                  f"and moto releases a delayed message within about a second of its delay.", "",
                  "| interval (ms) | median | p95 | max | min |", "|---|---:|---:|---:|---:|",
                  row("**POST /v1/events -> Slack receiver has the alert (2nd attempt)**",
                      [x["alert"] - x["sent"] for x in rt]),
                  row("handoff invoked -> Slack has the alert", [x["alert"] - x["invoked"] for x in rt]), "",
                  "Alerts by whole seconds after the POST: " + ", ".join(
                      f"{v} at {k}-{k + 1} s" for k, v in sorted(Counter(int(x["alert"] - x["sent"])
                                                                      for x in rt).items())) + ".", "",
                  f"Retry-function invocations per alert: {', '.join(str(x['retry_invocations']) for x in rt)}"
                  + (". More than one means the retry was put back on the queue before Slack was tried again; "
                     "in the local stack the handoff and retry functions share one process, so one cached "
                     "`Handoff` (and any state it keeps about a failing sink), where Lambda would run them in "
                     "separate execution environments." if any(x["retry_invocations"] > 1 for x in rt) else
                     " (the first retry delivered it)."), "",
                  f"Scripted Slack failures answered: {lat['failed_alerts']} (expected {len(rt)}). With "
                  f"{len(rt)} samples the p95 (nearest rank) is {'the maximum' if len(rt) <= 20 else 'the 95th'}"
                  + ("; above the 1 s delay, the spread is the time until a long poll returns the released "
                     "message (moto notices an expired delay within about a second, as "
                     "`leadflow_infra.local.queue_poller` documents)." if all(x["retry_invocations"] == 1 for x in rt)
                     else "."), ""]
    ld = lat["deliveries"]
    done = ", ".join(f"{sink} {status} {v}" for (sink, status), v in sorted(ld.items()))
    dropped = sum(EXPECTED_WARNINGS.dropped.values())
    refused = (f" Receiver violations: {lat['violations'][:5]}" if lat["violations"]
               else " No receiver refused a request's shape.")
    lines += [f"Ledger after sections 3-4: {done}.{refused} {dropped} expected `handoff.retry_scheduled` "
              f"warnings (sections 2 and 4) were kept out of the output; no other handler warning was "
              f"suppressed.", ""]
    return "\n".join(lines)


def code_revision() -> str:
    """HEAD and the files under functions/ (and template.yaml) that differ from it, taken
    when the run starts: the code that was imported."""
    import subprocess

    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return out.stdout if out.returncode == 0 else ""

    head = git("rev-parse", "--short", "HEAD").strip() or "unknown"
    dirty = [line[3:] for line in git("status", "--porcelain", "--", "functions", "template.yaml").splitlines()
             if len(line) > 3]
    return f"- code: git {head}" + (f" + uncommitted changes in {', '.join(dirty)}" if dirty else " (clean)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.handoff", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (50 moves, 20 + 3 latency samples)")
    parser.add_argument("--retry-base", type=float, default=1.0,
                        help="LEADFLOW_RETRY_BASE_SECONDS for section 4 (default 1, the product default)")
    parser.add_argument("--out", type=Path, default=None, help="where to write the Markdown report")
    args = parser.parse_args(argv)
    if args.quick:
        n_moves, n_latency, n_latency_retry = 50, 20, 3
    else:
        n_moves, n_latency, n_latency_retry = 200, 100, 10
    out_path = args.out or ROOT / "bench" / ("handoff-results-quick.md" if args.quick else "handoff-results.md")

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    logging.getLogger("leadflow_infra.local").setLevel(logging.ERROR)  # the pollers' retry warnings (section 4)
    logging.getLogger("leadflow").addFilter(EXPECTED_WARNINGS)  # Powertools' Logger: service "leadflow"

    started = time.perf_counter()
    args.revision = code_revision()
    env = Environment()
    step = _stepper()
    rx = Receivers()
    try:
        with tempfile.TemporaryDirectory(prefix="leadflow-bench-rules-") as tmp:
            rules = rules_file(Path(tmp))
            tp = step(f"throughput and calls: {n_moves} moves", lambda: throughput(env, rx, rules, n_moves))
            lat = step(f"latency: {n_latency} + {n_latency_retry} SQLs on the local stack",
                       lambda: latency(env, rx, rules, n_latency, n_latency_retry, args.retry_base))
    finally:
        rx.stop()
        env.restore()
    text = report(args, tp, lat, time.perf_counter() - started)
    print(text)
    out_path.write_text(text + "\n", encoding="utf-8")
    print(f"(written to {out_path.relative_to(ROOT) if out_path.is_relative_to(ROOT) else out_path})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
