"""The whole local stack in one process: moto, the tables and queues, the gateway,
the stream and queue pollers, the timer.

Everything it runs comes from template.yaml (``$LEADFLOW_TEMPLATE``, or the
``template`` argument), so the local stack cannot drift from what is deployed:
the table (``LeadsTable``), the queues, and for each function (roles ``api``,
``stream``, ``handoff``, ``handoff_retry``, ``jobs``: see :data:`ROLES`) its
handler, name, timeout, memory and log group, its ``DynamoDB`` event source
mappings (batch size, batching window, bisect, retries, record age,
parallelization, partial batch responses, FilterCriteria), its ``SQS`` mappings
(batch size, batching window, partial batch responses) and its ``ScheduleV2``
schedules (expression, time zone, Input). Keyword arguments left at None take the
template's value; a value given overrides it, for every mapping it applies to.

Start order: moto → environment → tables and queues → the durable store (the
journal's items, queued messages and unhandled stream records put back; from then on
every change is on disk before its answer: :mod:`~leadflow_infra.local.persist`) →
handlers → pollers (each stream consumer resumes after its kept position, whatever
``StartingPosition`` says; a consumer the store does not know starts at the stream's
end) → scheduler → gateway → `<data-dir>/stack.json` (where `leadflow dlq` finds the
queues). Stop runs it backwards: the gateway stops accepting, the pollers drain, the
scheduler stops, the store folds its journal and closes, moto stops and the
environment is restored.

A stream mapping's on-failure destination is the JSON-lines file
``<data-dir>/stream-dlq.jsonl`` (each record's keys and sequence number, never its
images), not the template's ``StreamDeadLetterQueue`` (which Lambda fills with the
batch's coordinates only).
"""

from __future__ import annotations

import importlib
import logging
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from leadflow_infra.local.atomic import make_dynamodb_atomic
from leadflow_infra.local.fast_moto import make_moto_fast
from leadflow_infra.local.filters import compile_filters
from leadflow_infra.local.cors import template_cors
from leadflow_infra.local.gateway import MAX_CONCURRENCY, Gateway
from leadflow_infra.local.invoke import ACCOUNT_ID, LambdaContext, LocalFunction
from leadflow_infra.local.lead_id_key import local_lead_id_key
from leadflow_infra.local.moto_server import LocalStreams, MotoServer, forget_shard_iterator
from leadflow_infra.local.persist import Durability, Snapshot, write_json
from leadflow_infra.local.persist import install as persist_install
from leadflow_infra.local.stream_poller import DeadLetterFile, OnFailure, StreamPoller
from leadflow_infra.local.queues import Queue, QueueSnapshot, create_queues, template_queues
from leadflow_infra.local.queue_poller import SqsPoller
from leadflow_infra.local.scheduler import Job, Rate, Scheduler, parse_schedule
from leadflow_infra.local.tables import create_table
from leadflow_infra.template import (
    DEFAULT_STACK_NAME,
    FunctionSpec,
    StreamSource,
    function_spec,
    resolve_template,
    table_properties as template_table_properties,
)

__all__ = ["FROM_TEMPLATE", "ROLES", "LambdaContext", "LocalFunction", "LocalStack"]

logger = logging.getLogger(__name__)

DEFAULT_TABLE = "leadflow"
TABLE_RESOURCE = "LeadsTable"
DLQ_NAME = "stream-dlq.jsonl"
FROM_TEMPLATE = "template"  # a handler or record_filter taken from template.yaml
# The stack's roles and the template functions that play them.
ROLES = {
    "api": "ApiFunction",
    "stream": "EventLogFunction",
    "handoff": "HandoffFunction",
    "handoff_retry": "HandoffRetryFunction",
    "jobs": "JobsFunction",
}

Handler = Callable[[dict[str, Any], Any], Any]
HandlerSpec = Handler | str


def resolve_handler(spec: HandlerSpec) -> Handler:
    """A callable as is, or ``"module:attribute"`` imported now."""
    if callable(spec):
        return spec
    module_name, _, attribute = spec.partition(":")
    return getattr(importlib.import_module(module_name), attribute or "handler")


def _hash_key(properties: Mapping[str, Any]) -> str | None:
    for key in properties.get("KeySchema") or []:
        if key.get("KeyType") == "HASH":
            return key.get("AttributeName")
    return None


class LocalStack:
    """Everything ``leadflow serve`` runs, usable as a context manager.

    ``api``, ``stream``, ``handoff``, ``handoff_retry`` and ``jobs`` are Lambda
    handlers ``(event, context)``, ``"module:attribute"`` strings imported only
    after the environment points boto3 at the local endpoint, :data:`FROM_TEMPLATE`
    (the default: the function's ``Handler`` in the template), or None to leave
    that function (and its event sources) out.

    ``template`` is a parsed template or a path (default: ``find_template()``).
    ``table_properties`` replaces its ``LeadsTable`` Properties. The stream
    settings ``batch_size``, ``max_retries`` (-1: until the record expires),
    ``bisect_on_error``, ``batching_window`` and ``max_record_age``, and the
    schedules ``rescore_every``, ``sla_every``, ``funnel_every`` and ``rules_every`` (seconds,
    replacing the job's schedule with a rate) default to None: the template's.
    ``record_filter`` :data:`FROM_TEMPLATE` is each stream mapping's FilterCriteria;
    a callable (or None, no filter) replaces it for every stream mapping.
    ``retry_base_delay`` and ``poll_interval`` are the pollers' own (Lambda's
    backoff and polling rate are not configurable).

    ``persist`` keeps the tables, the queues' messages and the stream consumers'
    positions in ``data_dir`` (every change on disk before its answer: see
    :mod:`~leadflow_infra.local.persist`); ``snapshot_every`` is how often, at most, the
    journal is folded into its database (0: at stop only).
    """

    def __init__(
        self,
        api: HandlerSpec | None = FROM_TEMPLATE,
        stream: HandlerSpec | None = FROM_TEMPLATE,
        jobs: HandlerSpec | None = FROM_TEMPLATE,
        handoff: HandlerSpec | None = FROM_TEMPLATE,
        handoff_retry: HandlerSpec | None = FROM_TEMPLATE,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        data_dir: str | os.PathLike[str] = ".leadflow",
        persist: bool = True,
        template: Mapping[str, Any] | str | os.PathLike[str] | None = None,
        stack_name: str = DEFAULT_STACK_NAME,
        table_name: str = DEFAULT_TABLE,
        table_properties: Mapping[str, Any] | None = None,
        region: str | None = None,
        rescore_every: float | None = None,
        funnel_every: float | None = None,
        rules_every: float | None = None,
        sla_every: float | None = None,
        snapshot_every: float = 30.0,
        batch_size: int | None = None,
        max_retries: int | None = None,
        bisect_on_error: bool | None = None,
        batching_window: float | None = None,
        max_record_age: float | None = None,
        retry_base_delay: float = 0.1,
        poll_interval: float = 0.05,
        record_filter: Callable[[Mapping[str, Any]], bool] | None | str = FROM_TEMPLATE,
        on_stream_failure: OnFailure | None = None,
        drain_timeout: float = 10.0,
        verbose: bool = False,
        access_log: bool = True,
        cors_origins: str | list[str] | None = None,
    ) -> None:
        self._specs = {"api": api, "stream": stream, "jobs": jobs, "handoff": handoff, "handoff_retry": handoff_retry}
        self.host = host
        self.port = port
        self.data_dir = Path(data_dir)
        self.persist = persist
        self._template_source = template
        self._template: Mapping[str, Any] | None = None
        self.stack_name = stack_name
        self.table_name = table_name
        self._table_properties = dict(table_properties) if table_properties is not None else None
        self._region = region
        self._job_overrides = {"rescore": rescore_every, "sla": sla_every, "funnel": funnel_every,
                               "rules": rules_every}
        for job, every in self._job_overrides.items():
            if every is not None and every <= 0:
                raise ValueError(f"{job}_every must be positive, got {every}")
        self._snapshot_every = snapshot_every
        self._stream_overrides = {
            "batch_size": batch_size,
            "max_retries": max_retries,
            "bisect_on_error": bisect_on_error,
            "batching_window": batching_window,
            "max_record_age": max_record_age,
        }
        self._retry_base_delay = retry_base_delay
        self._poll_interval = poll_interval
        self._record_filter = record_filter
        self._on_stream_failure = on_stream_failure
        self._drain_timeout = drain_timeout
        self.verbose = verbose
        self._access_log = access_log
        self._cors_origins = cors_origins  # the template's CorsOrigins when None

        self.moto = MotoServer(host="127.0.0.1")
        self.functions: dict[str, LocalFunction] = {}
        self.poller: StreamPoller | None = None
        self.pollers: dict[str, StreamPoller] = {}
        self.retry_poller: SqsPoller | None = None
        self.queue_pollers: dict[str, SqsPoller] = {}
        self.queues: dict[str, Queue] = {}
        self.scheduler: Scheduler | None = None
        self.gateway: Gateway | None = None
        self.store: Durability | None = None
        self.stream_arn: str | None = None
        self.loaded_items = 0
        self.saved_items: int | None = None
        self._tables_ready = False
        self._saved_env: dict[str, str | None] = {}
        self._started = False
        self._published = False

    # -- what the template says ------------------------------------------------------

    @property
    def template(self) -> Mapping[str, Any]:
        """The parsed template the stack runs (loaded on first use)."""
        if self._template is None:
            self._template = resolve_template(self._template_source)
        return self._template

    def function_spec(self, role: str) -> FunctionSpec:
        """The template function playing ``role`` (see :data:`ROLES`)."""
        return function_spec(self.template, ROLES[role], stack_name=self.stack_name)

    def table_definition(self) -> dict[str, Any]:
        """The table's Properties: ``table_properties``, else the template's ``LeadsTable``."""
        if self._table_properties is not None:
            return dict(self._table_properties)
        return dict(template_table_properties(dict(self.template), TABLE_RESOURCE))

    def stream_options(self, source: StreamSource) -> dict[str, Any]:
        """The :class:`StreamPoller` settings for a stream mapping: the template's, then the overrides."""
        options: dict[str, Any] = {
            "batch_size": source.batch_size,
            "batching_window": float(source.maximum_batching_window),
            "bisect_on_error": source.bisect_batch_on_function_error,
            "max_retries": source.maximum_retry_attempts,
            "max_record_age": source.maximum_record_age,
            "parallelization": source.parallelization_factor,
            "report_item_failures": source.report_batch_item_failures,
        }
        options.update({name: value for name, value in self._stream_overrides.items() if value is not None})
        return options

    def scheduled_jobs(self, spec: FunctionSpec) -> dict[str, Job]:
        """The jobs function's schedules by job name, with the ``*_every`` overrides as rates."""
        jobs: dict[str, Job] = {}
        for source in spec.schedules:
            if source.enabled:
                jobs[source.job] = Job(source.job, parse_schedule(source.expression, source.timezone), source.input)
        for name, every in self._job_overrides.items():
            if every is not None:
                payload = jobs[name].payload if name in jobs else {"job": name}
                jobs[name] = Job(name, Rate(float(every)), payload)
        return jobs

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
        """Where the tables, queues and stream positions are kept (the journal's database)."""
        from leadflow_infra.local.journal import DB_NAME

        return self.data_dir / DB_NAME

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
            "poller": self.poller is not None and self.poller.running if "stream" in self.functions else self._started,
            "scheduler": self.scheduler is not None and self.scheduler.ready,
        }
        if self.persist:
            health["store"] = self.store is not None and self.store.healthy
        # Ready means reachable the way the CLI reaches it: through stack.json.
        health["published"] = self._published
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
        (and, with ``retries``, until the queues feeding functions are empty, delayed messages included)."""
        if not self._started:
            raise RuntimeError("local stack is not running")
        deadline = time.monotonic() + timeout
        for poller in self.pollers.values():
            if not poller.drain(max(0.0, deadline - time.monotonic())):
                return False
        if retries:
            for queue_poller in self.queue_pollers.values():
                if not queue_poller.drain(max(0.0, deadline - time.monotonic()), include_delayed=True):
                    return False
        return True

    def run_job(self, job: str) -> Any:
        if self.scheduler is None:
            raise RuntimeError("local stack is not running")
        return self.scheduler.run_now(job)

    def dump(self) -> int:
        """Export every item to ``<data-dir>/dynamodb.json`` now (an explicit request: the
        store keeps every change as it happens; a later start imports such a file once, when
        the data directory has no store yet). Returns the number of items written."""
        return Snapshot(self._dynamodb_client(), self.data_dir, [self.table_name]).dump()

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
        # A Scan page costs the page, not the table (moto sorts the table for every page).
        make_moto_fast()
        # Journal what the lock serialises; stream reads wait for it; no empty partitions.
        persist_install()
        self.moto.start()
        self.moto.reset()
        self._set_environment()

        dynamodb = self._dynamodb_client()
        properties = self.table_definition()
        table = create_table(dynamodb, properties, self.table_name)
        self.stream_arn = table.get("LatestStreamArn")
        if not self.stream_arn:
            raise RuntimeError(f"table {self.table_name} has no stream: check StreamSpecification")
        self._tables_ready = True
        self._create_queues()
        self._prepare_sinks()

        self.store = Durability(
            data_dir=self.data_dir if self.persist else None,
            table=self.table_name,
            queues=[queue.name for queue in self.queues.values()],
            region=self.region,
            account_id=ACCOUNT_ID,
            compact_every=self._snapshot_every,
        )
        self.store.start(import_queues=self._import_queue_snapshot if self.queues else None)
        self.loaded_items = self.store.loaded_items
        if self.persist:
            # The directory is ours now (the store locks it). A stack killed without a stop left
            # its stack.json behind: nobody is to talk to that endpoint any more.
            self.info_path.unlink(missing_ok=True)

        specs = self._attach_handlers()

        on_failure = self._on_stream_failure
        if on_failure is None:
            on_failure = DeadLetterFile(self.dead_letter_path)
            on_failure.scrub()  # a file an earlier version wrote with the records' images
        partition_key = _hash_key(properties)
        for role, spec in specs.items():
            streams = [source for source in spec.streams if source.enabled]
            for source in streams:
                if source.table != TABLE_RESOURCE:
                    raise ValueError(f"{spec.logical_id}.{source.name}: the local stack only has the stream of "
                                     f"{TABLE_RESOURCE}, not {source.table or 'a literal ARN'}")
                consumer = f"{spec.logical_id}.{source.name}"
                record_filter = self._record_filter
                if record_filter == FROM_TEMPLATE:
                    record_filter = compile_filters(source.filter_criteria)
                poller = StreamPoller(
                    LocalStreams(region=self.region, account_id=ACCOUNT_ID),
                    self.stream_arn,
                    self.functions[role],
                    region=self.region,
                    on_failure=on_failure,
                    function_arn=self.functions[role].arn,
                    forget_iterator=forget_shard_iterator,
                    record_filter=record_filter,
                    partition_key=partition_key,
                    retry_base_delay=self._retry_base_delay,
                    poll_interval=self._poll_interval,
                    on_checkpoint=self._position_keeper(consumer),
                    resumable=self.persist,
                    **self.stream_options(source),
                )
                # After its kept position (a restart delivers what it had not handled), or, for
                # a consumer new to this data directory, the stream's end.
                poller.start("AFTER_SEQUENCE_NUMBER", self.store.consumer_start(consumer))
                self.pollers[role if len(streams) == 1 else f"{role}:{source.name}"] = poller
            for source in (source for source in spec.queues if source.enabled):
                queue = self.queues.get(source.queue or "")
                if queue is None:
                    raise ValueError(f"{spec.logical_id}.{source.name}: no local queue {source.queue!r}")
                sqs_poller = SqsPoller(
                    self.client("sqs"),
                    queue.url,
                    queue.arn,
                    self.functions[role],
                    region=self.region,
                    batch_size=source.batch_size,
                    max_batching_window=source.maximum_batching_window,
                    report_item_failures=source.report_batch_item_failures,
                    wait_seconds=1,
                    poll_interval=self._poll_interval,
                )
                sqs_poller.start()
                self.queue_pollers[f"{role}:{source.name}"] = sqs_poller
                if role == "handoff_retry" and self.retry_poller is None:
                    self.retry_poller = sqs_poller
        self.poller = self.pollers.get("stream")

        jobs = self.scheduled_jobs(specs["jobs"]) if "jobs" in specs else {}
        self.scheduler = Scheduler(self.functions.get("jobs"), jobs)
        self.scheduler.start()

        self.gateway = Gateway(
            self.functions["api"],
            host=self.host,
            port=self.port,
            health=self.health,
            account_id=ACCOUNT_ID,
            access_log=self._access_log,
            cors=template_cors(self.template, origins=self._cors_origins),
        )
        self.gateway.start()
        self._write_info()
        logger.info("local stack ready at %s (DynamoDB endpoint %s)", self.gateway.url, self.moto.url)

    def _position_keeper(self, consumer: str) -> Callable[[str, str], None]:
        """The stream poller's ``on_checkpoint`` for ``consumer``: the store keeps its position."""
        store = self.store
        assert store is not None
        return lambda _shard_id, sequence_number: store.checkpoint(consumer, sequence_number)

    def _import_queue_snapshot(self) -> int:
        """A data directory's ``sqs.json`` from before the journal, sent back to its queues."""
        return QueueSnapshot(self.client("sqs"), self.data_dir, self.queues, region=self.region).load()

    def _create_queues(self) -> None:
        """The template's SQS queues (the handoff's retry and dead-letter queues), and
        the handlers' environment naming them, as the template's Globals do in AWS."""
        resources = template_queues(self.template)
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
        write_json(self.info_path, info, indent=2)
        self._published = True

    def _attach_handlers(self) -> dict[str, FunctionSpec]:
        """A :class:`LocalFunction` per role with a handler, from its template function; returns their specs."""
        if any(isinstance(spec, str) for spec in self._specs.values()):
            # The real handlers cache settings and boto3 clients per process; a
            # previous stack in this process left them pointing at its endpoint.
            from leadflow import container

            container.reset()
        attached: dict[str, FunctionSpec] = {}
        for role, handler_spec in self._specs.items():
            if handler_spec is None:
                continue
            spec = self.function_spec(role)
            if handler_spec == FROM_TEMPLATE:
                handler_spec = spec.handler_spec
            try:
                handler = resolve_handler(handler_spec)
            except ModuleNotFoundError as exc:
                if role != "jobs" or not isinstance(handler_spec, str) or exc.name != handler_spec.partition(":")[0]:
                    raise
                logger.warning("no %s module: scheduled jobs are off", exc.name)
                continue
            # One execution environment per batch its event sources can deliver at once:
            # a stream mapping's lanes (ParallelizationFactor, one shard locally), one per queue.
            concurrency = sum(s.parallelization_factor for s in spec.streams if s.enabled)
            concurrency += sum(1 for s in spec.queues if s.enabled)
            if role == "api":
                concurrency = MAX_CONCURRENCY  # API Gateway invokes one environment per request in flight
            self.functions[role] = LocalFunction.from_spec(
                spec, handler, region=self.region, account_id=ACCOUNT_ID, concurrency=max(1, concurrency)
            )
            attached[role] = spec
        return attached

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
            # The template's lead-id secret, kept in the data directory (or the environment's).
            "LEADFLOW_LEAD_ID_KEY": local_lead_id_key(self.data_dir if self.persist else None),
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

    # -- stop ----------------------------------------------------------------------

    def stop(self) -> None:
        """Stop everything started, in reverse order; safe to call twice."""
        if not self._started:
            return
        self._started = False
        if self.gateway is not None:
            self._quietly(self.gateway.stop, "gateway")
        self._published = False
        self._quietly(lambda: self.info_path.unlink(missing_ok=True), "stack.json")
        for role, poller in self.pollers.items():
            drained = poller.stop(self._drain_timeout)
            if not drained:
                logger.warning("%s stream not fully drained within %.0fs", role, self._drain_timeout)
        for name, queue_poller in self.queue_pollers.items():
            # Delayed retries stay queued (the store keeps them).
            self._quietly(lambda queue_poller=queue_poller: queue_poller.stop(0), f"{name} poller")
        if self.scheduler is not None:
            self._quietly(self.scheduler.stop, "scheduler")
        if self.store is not None:
            try:
                self.saved_items = self.store.stop()
            except Exception:
                logger.exception("could not close the store in %s", self.snapshot_path)
            self.store = None
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
