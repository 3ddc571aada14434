"""The whole local stack in one process: moto, the tables and queues, the gateway,
the stream and queue pollers, the timer.

Start order: moto → environment → tables and queues → snapshot load → handlers →
pollers (stream pollers positioned at the stream's end, so loaded items are not
re-delivered; each with its function's FilterCriteria from template.yaml) →
scheduler → periodic snapshot → gateway → `<data-dir>/stack.json` (where
`leadflow dlq` finds the queues). Stop runs it backwards: the gateway stops
accepting, the pollers drain, the scheduler stops, the snapshot is written, moto
stops and the environment is restored.
"""

from __future__ import annotations

import datetime as dt
import importlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import json

from leadflow_infra.local.atomic import make_dynamodb_atomic
from leadflow_infra.local.filters import stream_filter
from leadflow_infra.local.gateway import Gateway
from leadflow_infra.local.moto_server import MotoServer, forget_shard_iterator
from leadflow_infra.local.persist import PeriodicDump, Snapshot
from leadflow_infra.local.stream_poller import DeadLetterFile, OnFailure, StreamPoller
from leadflow_infra.local.queues import Queue, QueueSnapshot, create_queues, template_queues
from leadflow_infra.local.queue_poller import SqsPoller
from leadflow_infra.local.scheduler import Scheduler
from leadflow_infra.local.tables import create_table, template_table_properties

logger = logging.getLogger(__name__)

ACCOUNT_ID = "123456789012"
DEFAULT_TABLE = "leadflow"
DLQ_NAME = "stream-dlq.jsonl"
FROM_TEMPLATE = "template"  # record_filter: each stream consumer's FilterCriteria in template.yaml
# Stream consumers: role -> (template function, template event).
STREAM_CONSUMERS = {"stream": ("EventLogFunction", "EventLogStream"), "handoff": ("HandoffFunction", "MoveStream")}

Handler = Callable[[dict[str, Any], Any], Any]
HandlerSpec = Handler | str


class LambdaContext:
    """The parts of Lambda's context object that Powertools and handlers read."""

    def __init__(self, function_name: str, *, region: str, account_id: str, memory_mb: int, timeout_s: float) -> None:
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"arn:aws:lambda:{region}:{account_id}:function:{function_name}"
        self.memory_limit_in_mb = memory_mb
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = f"{dt.datetime.now(dt.UTC):%Y/%m/%d}/[$LATEST]{uuid.uuid4().hex}"
        self._deadline = time.monotonic() + timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


class LocalFunction:
    """A handler run like one Lambda execution environment: one invocation at a time."""

    def __init__(
        self,
        function_name: str,
        handler: Handler,
        *,
        region: str,
        account_id: str = ACCOUNT_ID,
        memory_mb: int = 512,
        timeout_s: float = 30.0,
    ) -> None:
        self.function_name = function_name
        self.handler = handler
        self.region = region
        self.account_id = account_id
        self.memory_mb = memory_mb
        self.timeout_s = timeout_s
        self.invocations = 0
        self._lock = threading.Lock()

    @property
    def arn(self) -> str:
        return f"arn:aws:lambda:{self.region}:{self.account_id}:function:{self.function_name}"

    def __call__(self, event: dict[str, Any]) -> Any:
        with self._lock:
            self.invocations += 1
            context = LambdaContext(
                self.function_name,
                region=self.region,
                account_id=self.account_id,
                memory_mb=self.memory_mb,
                timeout_s=self.timeout_s,
            )
            return self.handler(event, context)


def resolve_handler(spec: HandlerSpec) -> Handler:
    """A callable as is, or ``"module:attribute"`` imported now."""
    if callable(spec):
        return spec
    module_name, _, attribute = spec.partition(":")
    return getattr(importlib.import_module(module_name), attribute or "handler")


class LocalStack:
    """Everything ``leadflow serve`` runs, usable as a context manager.

    ``api``, ``stream`` and ``jobs`` are Lambda handlers ``(event, context)``, or
    ``"module:attribute"`` strings imported only after the environment points
    boto3 at the local endpoint. ``jobs=None`` runs no scheduled jobs.
    ``table_properties`` replaces template.yaml's ``LeadsTable`` Properties.
    """

    def __init__(
        self,
        api: HandlerSpec = "leadflow.handlers.api:handler",
        stream: HandlerSpec = "leadflow.handlers.event_log:handler",
        jobs: HandlerSpec | None = "leadflow.handlers.jobs:handler",
        handoff: HandlerSpec | None = "leadflow.handlers.handoff:handler",
        handoff_retry: HandlerSpec | None = "leadflow.handlers.handoff_retry:handler",
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        data_dir: str | os.PathLike[str] = ".leadflow",
        persist: bool = True,
        table_name: str = DEFAULT_TABLE,
        table_properties: Mapping[str, Any] | None = None,
        region: str | None = None,
        rescore_every: float = 3600.0,
        funnel_every: float = 86400.0,
        sla_every: float = 300.0,
        snapshot_every: float = 30.0,
        batch_size: int = 100,
        max_retries: int = 5,
        retry_base_delay: float = 0.1,
        poll_interval: float = 0.05,
        record_filter: Callable[[Mapping[str, Any]], bool] | None | str = FROM_TEMPLATE,
        on_stream_failure: OnFailure | None = None,
        drain_timeout: float = 10.0,
        verbose: bool = False,
        access_log: bool = True,
    ) -> None:
        self._specs = {"api": api, "stream": stream, "jobs": jobs, "handoff": handoff, "handoff_retry": handoff_retry}
        self.host = host
        self.port = port
        self.data_dir = Path(data_dir)
        self.persist = persist
        self.table_name = table_name
        self._table_properties = dict(table_properties) if table_properties is not None else None
        self._region = region
        self._job_intervals = {"rescore": float(rescore_every), "sla": float(sla_every), "funnel": float(funnel_every)}
        self._snapshot_every = snapshot_every
        self._poller_options = {
            "batch_size": batch_size,
            "max_retries": max_retries,
            "retry_base_delay": retry_base_delay,
            "poll_interval": poll_interval,
        }
        self._record_filter = record_filter
        self._on_stream_failure = on_stream_failure
        self._drain_timeout = drain_timeout
        self.verbose = verbose
        self._access_log = access_log

        self.moto = MotoServer(host="127.0.0.1")
        self.functions: dict[str, LocalFunction] = {}
        self.poller: StreamPoller | None = None
        self.pollers: dict[str, StreamPoller] = {}
        self.retry_poller: SqsPoller | None = None
        self.queues: dict[str, Queue] = {}
        self.queue_snapshot: QueueSnapshot | None = None
        self.scheduler: Scheduler | None = None
        self.gateway: Gateway | None = None
        self.snapshot: Snapshot | None = None
        self.stream_arn: str | None = None
        self.loaded_items = 0
        self.saved_items: int | None = None
        self._periodic: PeriodicDump | None = None
        self._tables_ready = False
        self._saved_env: dict[str, str | None] = {}
        self._started = False

    # -- public surface ------------------------------------------------------------

    @property
    def url(self) -> str:
        if self.gateway is None:
            raise RuntimeError("local stack is not running")
        return self.gateway.url

    @property
    def endpoint_url(self) -> str:
        return self.moto.url

    @property
    def region(self) -> str:
        return self._region or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"

    @property
    def snapshot_path(self) -> Path:
        return self.data_dir / "dynamodb.json"

    @property
    def dead_letter_path(self) -> Path:
        return self.data_dir / DLQ_NAME

    @property
    def info_path(self) -> Path:
        return self.data_dir / "stack.json"

    def health(self) -> dict[str, bool]:
        health = {
            "moto": self.moto.running,
            "tables": self._tables_ready,
            "poller": self.poller is not None and self.poller.running,
            "scheduler": self.scheduler is not None and self.scheduler.ready,
        }
        if "handoff" in self.functions:
            health["handoff_poller"] = "handoff" in self.pollers and self.pollers["handoff"].running
        if "handoff_retry" in self.functions:
            health["retry_poller"] = self.retry_poller is not None and self.retry_poller.running
        return health

    @property
    def ready(self) -> bool:
        return all(self.health().values()) and self.gateway is not None and self.gateway.running

    def drain(self, timeout: float = 10.0, *, retries: bool = False) -> bool:
        """Wait until everything now in the stream has reached the stream consumers
        (and, with ``retries``, until the retry queue is empty, delayed messages included)."""
        if self.poller is None:
            raise RuntimeError("local stack is not running")
        deadline = time.monotonic() + timeout
        for poller in self.pollers.values():
            if not poller.drain(max(0.0, deadline - time.monotonic())):
                return False
        if retries and self.retry_poller is not None:
            return self.retry_poller.drain(max(0.0, deadline - time.monotonic()), include_delayed=True)
        return True

    def run_job(self, job: str) -> Any:
        if self.scheduler is None:
            raise RuntimeError("local stack is not running")
        return self.scheduler.run_now(job)

    def dump(self) -> int:
        """Write the snapshot now (also when persistence is off: an explicit request)."""
        snapshot = self.snapshot or Snapshot(self._dynamodb_client(), self.data_dir, [self.table_name])
        return snapshot.dump()

    def client(self, service: str = "dynamodb") -> Any:
        """A boto3 client pointed at the embedded endpoint."""
        import boto3

        return boto3.session.Session().client(
            service,
            region_name=self.region,
            endpoint_url=self.moto.url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def __enter__(self) -> LocalStack:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- start ---------------------------------------------------------------------

    def start(self) -> LocalStack:
        if self._started:
            return self
        self._started = True
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        # The API, stream and jobs handlers write from different threads: give moto
        # DynamoDB's per-item atomicity, or two conditional writes could both pass.
        make_dynamodb_atomic()
        self.moto.start()
        self.moto.reset()
        self._set_environment()

        dynamodb = self._dynamodb_client()
        properties = self._table_properties
        if properties is None:
            properties = template_table_properties("LeadsTable")
        table = create_table(dynamodb, properties, self.table_name)
        self.stream_arn = table.get("LatestStreamArn")
        if not self.stream_arn:
            raise RuntimeError(f"table {self.table_name} has no stream: check StreamSpecification")
        self._tables_ready = True
        self._create_queues()
        self._prepare_sinks()

        if self.persist:
            self.snapshot = Snapshot(dynamodb, self.data_dir, [self.table_name])
            self.loaded_items = self.snapshot.load()
            if self.queues:
                self.queue_snapshot = QueueSnapshot(self.client("sqs"), self.data_dir, self.queues, region=self.region)
                self.queue_snapshot.load()

        self._attach_handlers()

        # Positioned now, after the load: the INSERTs it produced are behind the iterator.
        on_failure = self._on_stream_failure or DeadLetterFile(self.dead_letter_path)
        for role, (function, event) in STREAM_CONSUMERS.items():
            if role not in self.functions:
                continue
            record_filter = self._record_filter
            if record_filter == FROM_TEMPLATE:
                record_filter = stream_filter(function, event)
            poller = StreamPoller(
                self.client("dynamodbstreams"),
                self.stream_arn,
                self.functions[role],
                region=self.region,
                on_failure=on_failure,
                function_arn=self.functions[role].arn,
                forget_iterator=forget_shard_iterator,
                record_filter=record_filter,
                **self._poller_options,
            )
            poller.start("LATEST")
            self.pollers[role] = poller
        self.poller = self.pollers["stream"]
        retry_queue = self.queues.get("HandoffRetryQueue")
        if "handoff_retry" in self.functions and retry_queue is not None:
            self.retry_poller = SqsPoller(self.client("sqs"), retry_queue.url, retry_queue.arn,
                                          self.functions["handoff_retry"], region=self.region, wait_seconds=1)
            self.retry_poller.start()

        self.scheduler = Scheduler(self.functions.get("jobs"), self._job_intervals)
        self.scheduler.start()

        if self.persist and self.snapshot is not None and self._snapshot_every > 0:
            self._periodic = PeriodicDump(self.snapshot, self._change_token, self._snapshot_every)
            self._periodic.start()

        self.gateway = Gateway(
            self.functions["api"],
            host=self.host,
            port=self.port,
            health=self.health,
            account_id=ACCOUNT_ID,
            access_log=self._access_log,
        )
        self.gateway.start()
        self._write_info()
        logger.info("local stack ready at %s (DynamoDB endpoint %s)", self.gateway.url, self.moto.url)

    def _create_queues(self) -> None:
        """The template's SQS queues (the handoff's retry and dead-letter queues), and
        the handlers' environment naming them, as the template's Globals do in AWS."""
        resources = template_queues()
        if not resources:
            return
        self.queues = create_queues(self.client("sqs"), resources)
        names = {"LEADFLOW_RETRY_QUEUE_URL": "HandoffRetryQueue", "LEADFLOW_DLQ_URL": "HandoffDeadLetterQueue"}
        for variable, logical_id in names.items():
            if logical_id in self.queues:
                self._set_variable(variable, self.queues[logical_id].url)

    def _prepare_sinks(self) -> None:
        """What AWS has before the first send: the SES sender verified, the event bus there."""
        sender = os.environ.get("LEADFLOW_SES_FROM")
        if sender:
            self.client("sesv2").create_email_identity(EmailIdentity=sender)
        bus = os.environ.get("LEADFLOW_EVENT_BUS")
        if bus and bus != "default" and not bus.startswith("arn:"):
            events = self.client("events")
            if bus not in {b["Name"] for b in events.list_event_buses().get("EventBuses", [])}:
                events.create_event_bus(Name=bus)

    def _write_info(self) -> None:
        """Where a running stack can be reached (for `leadflow dlq`); removed on stop."""
        info = {
            "pid": os.getpid(),
            "api_url": self.gateway.url if self.gateway else None,
            "endpoint_url": self.moto.url,
            "region": self.region,
            "table": self.table_name,
            "queues": {
                "retry": self.queues["HandoffRetryQueue"].url if "HandoffRetryQueue" in self.queues else None,
                "dead_letter": self.queues["HandoffDeadLetterQueue"].url if "HandoffDeadLetterQueue" in self.queues else None,
            },
        }
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.info_path.write_text(json.dumps(info, indent=2), encoding="utf-8")

    def _attach_handlers(self) -> None:
        options = {
            "api": {"function_name": "leadflow-api", "timeout_s": 30.0},
            "stream": {"function_name": "leadflow-stream", "timeout_s": 60.0},
            "handoff": {"function_name": "leadflow-handoff", "timeout_s": 60.0},
            "handoff_retry": {"function_name": "leadflow-handoff-retry", "timeout_s": 60.0},
            "jobs": {"function_name": "leadflow-jobs", "timeout_s": 900.0},
        }
        if any(isinstance(spec, str) for spec in self._specs.values()):
            # The real handlers cache settings and boto3 clients per process; a
            # previous stack in this process left them pointing at its endpoint.
            from leadflow import container

            container.reset()
        for role, spec in self._specs.items():
            if spec is None:
                continue
            try:
                handler = resolve_handler(spec)
            except ModuleNotFoundError as exc:
                if role != "jobs" or not isinstance(spec, str) or exc.name != spec.partition(":")[0]:
                    raise
                logger.warning("no %s module: scheduled jobs are off", exc.name)
                continue
            self.functions[role] = LocalFunction(handler=handler, region=self.region, **options[role])

    def _environment(self) -> dict[str, str | None]:
        env: dict[str, str | None] = {
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
            "AWS_PROFILE": None,
            "AWS_ENDPOINT_URL": self.moto.url,
            "AWS_ENDPOINT_URL_DYNAMODB": self.moto.url,
            "AWS_ENDPOINT_URL_DYNAMODB_STREAMS": self.moto.url,
            "LEADFLOW_TABLE": self.table_name,
            "POWERTOOLS_TRACE_DISABLED": "true",
        }
        if not self.verbose:
            env["POWERTOOLS_METRICS_DISABLED"] = "true"
            env["POWERTOOLS_LOG_LEVEL"] = "WARNING"
        return env

    def _set_environment(self) -> None:
        for name, value in self._environment().items():
            self._set_variable(name, value)

    def _set_variable(self, name: str, value: str | None) -> None:
        self._saved_env.setdefault(name, os.environ.get(name))
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value

    def _restore_environment(self) -> None:
        for name, value in self._saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved_env = {}

    def _dynamodb_client(self) -> Any:
        return self.client("dynamodb")

    def _change_token(self) -> tuple[int, int, int]:
        return (
            self.gateway.mutating_requests if self.gateway else 0,
            self.poller.stats["records_seen"] if self.poller else 0,
            sum(self.scheduler.runs.values()) if self.scheduler else 0,
        )

    # -- stop ----------------------------------------------------------------------

    def stop(self) -> None:
        """Stop everything started, in reverse order; safe to call twice."""
        if not self._started:
            return
        self._started = False
        if self.gateway is not None:
            self._quietly(self.gateway.stop, "gateway")
        self._quietly(lambda: self.info_path.unlink(missing_ok=True), "stack.json")
        for role, poller in self.pollers.items():
            drained = poller.stop(self._drain_timeout)
            if not drained:
                logger.warning("%s stream not fully drained within %.0fs", role, self._drain_timeout)
        if self.retry_poller is not None:
            # Delayed retries stay queued (and are saved with the snapshot).
            self._quietly(lambda: self.retry_poller.stop(0), "retry poller")
        if self.scheduler is not None:
            self._quietly(self.scheduler.stop, "scheduler")
        if self._periodic is not None:
            self._quietly(self._periodic.stop, "periodic snapshot")
            self._periodic = None
        if self.persist and self.snapshot is not None and self._tables_ready:
            try:
                self.saved_items = self.snapshot.dump()
            except Exception:
                logger.exception("could not save the tables to %s", self.snapshot_path)
            if self.queue_snapshot is not None:
                self._quietly(self.queue_snapshot.dump, "queue snapshot")
        self._tables_ready = False
        if self.moto.running:
            self._quietly(self.moto.reset, "moto reset")
            self._quietly(self.moto.stop, "moto")
        self._restore_environment()

    @staticmethod
    def _quietly(step: Callable[[], Any], name: str) -> None:
        try:
            step()
        except Exception:
            logger.exception("stopping %s failed", name)
