"""Read ``template.yaml`` so code and tests can use the infrastructure as data.

The local stack and the integration tests create their DynamoDB tables from the
``LeadsTable`` resource, and run each function with the handler, timeout, memory
and event sources (stream and queue mappings, schedules) its resource gives it
(:func:`function_specs`), so they cannot drift from what is deployed. PyYAML's
safe loader rejects CloudFormation's short-form tags (``!Ref``, ``!GetAtt`` ...);
the loader here turns them into their long form (``{"Ref": ...}``,
``{"Fn::GetAtt": [...]}``) and leaves everything else as plain data.

Only PyYAML is needed: nothing here touches AWS.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

TEMPLATE_ENV = "LEADFLOW_TEMPLATE"
TEMPLATE_FILE = "template.yaml"

# Short-form tags whose long form is not "Fn::<tag>".
_NOT_FN = {"Ref": "Ref", "Condition": "Condition"}


class CloudFormationLoader(yaml.SafeLoader):
    """A SafeLoader that understands CloudFormation short-form intrinsic functions."""


def _construct_intrinsic(loader: CloudFormationLoader, tag_suffix: str, node: yaml.Node) -> dict:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)

    if tag_suffix == "GetAtt" and isinstance(value, str):
        # "!GetAtt Resource.Attribute" is ["Resource", "Attribute"] in long form.
        value = value.split(".", 1)
    key = _NOT_FN.get(tag_suffix, f"Fn::{tag_suffix}")
    return {key: value}


CloudFormationLoader.add_multi_constructor("!", _construct_intrinsic)


def load_template(path: str | os.PathLike[str]) -> dict:
    """Parse a CloudFormation/SAM YAML template into plain Python data."""
    with open(path, encoding="utf-8") as handle:
        template = yaml.load(handle, Loader=CloudFormationLoader)  # noqa: S506 - SafeLoader subclass
    if not isinstance(template, dict):
        raise ValueError(f"{path} is not a CloudFormation template (top level is not a mapping)")
    return template


def find_template() -> Path:
    """Locate ``template.yaml``: ``$LEADFLOW_TEMPLATE`` first, else the nearest one above this file."""
    configured = os.environ.get(TEMPLATE_ENV)
    if configured:
        path = Path(configured)
        if not path.is_file():
            raise FileNotFoundError(f"{TEMPLATE_ENV}={configured} is not a file")
        return path
    here = Path(__file__).resolve().parent
    for directory in (here, *here.parents):
        candidate = directory / TEMPLATE_FILE
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"no {TEMPLATE_FILE} above {here}; set {TEMPLATE_ENV}")


def table_properties(template: dict, logical_id: str = "LeadsTable") -> dict:
    """The ``Properties`` of the DynamoDB table resource ``logical_id``."""
    resource = template.get("Resources", {}).get(logical_id)
    if resource is None:
        raise KeyError(f"template has no resource {logical_id!r}")
    if resource.get("Type") != "AWS::DynamoDB::Table":
        raise ValueError(f"{logical_id} is a {resource.get('Type')}, not an AWS::DynamoDB::Table")
    return resource.get("Properties", {})


# -- functions and their event sources --------------------------------------------------
#
# The local stack runs each AWS::Serverless::Function with the settings the template
# gives it: handler, timeout and memory (Globals merged), and its event sources with
# the event source mapping's properties. Defaults are AWS's own where the template
# says nothing. A value computed by an intrinsic the reader cannot resolve without a
# deployed stack is an error naming the property: write these settings literally.

FUNCTION_TYPE = "AWS::Serverless::Function"
DEFAULT_STACK_NAME = "leadflow"
# AWS::Serverless::Function's defaults when neither the function nor Globals set them.
DEFAULT_TIMEOUT = 3
DEFAULT_MEMORY_MB = 128
INFINITE = -1  # MaximumRetryAttempts / MaximumRecordAgeInSeconds: "until the record expires"


@dataclass(frozen=True)
class StreamSource:
    """A ``DynamoDB`` event: one event source mapping on a table's stream."""

    name: str
    table: str | None  # the logical id in ``!GetAtt <table>.StreamArn``; None for a literal ARN
    starting_position: str = "LATEST"
    batch_size: int = 100
    maximum_batching_window: int = 0
    bisect_batch_on_function_error: bool = False
    maximum_retry_attempts: int = INFINITE
    maximum_record_age: int = INFINITE
    parallelization_factor: int = 1
    report_batch_item_failures: bool = False
    filter_criteria: dict[str, Any] | None = None
    on_failure: str | None = None  # the logical id of the on-failure destination
    enabled: bool = True


@dataclass(frozen=True)
class QueueSource:
    """An ``SQS`` event: one event source mapping on a queue."""

    name: str
    queue: str | None  # the logical id in ``!GetAtt <queue>.Arn``; None for a literal ARN
    batch_size: int = 10
    maximum_batching_window: int = 0
    report_batch_item_failures: bool = False
    filter_criteria: dict[str, Any] | None = None
    maximum_concurrency: int | None = None
    enabled: bool = True


@dataclass(frozen=True)
class ScheduleSource:
    """A ``ScheduleV2`` (EventBridge Scheduler) or ``Schedule`` (EventBridge rule) event."""

    name: str
    expression: str
    timezone: str = "UTC"
    input: Any = None  # the parsed ``Input``; None when the template gives none
    retry_attempts: int | None = None  # RetryPolicy.MaximumRetryAttempts (None: the scheduler's default)
    maximum_event_age: int | None = None  # RetryPolicy.MaximumEventAgeInSeconds
    enabled: bool = True

    @property
    def job(self) -> str:
        """The job this schedule runs: the Input's ``job``, else the event's name."""
        if isinstance(self.input, Mapping) and isinstance(self.input.get("job"), str):
            return self.input["job"]
        return self.name


@dataclass(frozen=True)
class FunctionSpec:
    """One ``AWS::Serverless::Function`` as the local stack runs it."""

    logical_id: str
    name: str
    handler: str  # as in the template: ``package.module.attribute``
    timeout: int
    memory_mb: int
    log_group: str
    streams: tuple[StreamSource, ...] = ()
    queues: tuple[QueueSource, ...] = ()
    schedules: tuple[ScheduleSource, ...] = ()

    @property
    def handler_spec(self) -> str:
        """The handler as ``module:attribute``."""
        module, _, attribute = self.handler.rpartition(".")
        return f"{module}:{attribute}"


class _Resolver:
    """Literal values out of a template, resolving what needs no deployed stack:
    ``!Ref`` to a parameter (its Default) or to ``AWS::StackName``, and ``!Sub`` over those."""

    def __init__(self, template: Mapping[str, Any], stack_name: str) -> None:
        self._parameters = template.get("Parameters") or {}
        self._stack_name = stack_name

    def _ref(self, name: str, where: str) -> Any:
        if name == "AWS::StackName":
            return self._stack_name
        parameter = self._parameters.get(name)
        if isinstance(parameter, Mapping) and "Default" in parameter:
            return parameter["Default"]
        raise ValueError(f"{where}: !Ref {name} has no value outside a deployed stack; write it literally")

    def value(self, value: Any, where: str) -> Any:
        if isinstance(value, Mapping) and len(value) == 1:
            ((key, argument),) = value.items()
            if key == "Ref":
                return self._ref(argument, where)
            if key == "Fn::Sub" and isinstance(argument, str):
                return re.sub(r"\$\{([^}!]+)\}", lambda m: str(self._ref(m.group(1), where)), argument)
            if key == "Condition" or str(key).startswith("Fn::"):
                raise ValueError(f"{where}: {key} has no value outside a deployed stack; write it literally")
        return value

    def integer(self, value: Any, where: str, *, low: int | None = None, high: int | None = None) -> int:
        value = self.value(value, where)
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise ValueError(f"{where}: {value!r} is not a whole number") from None
        if isinstance(value, bool) or number != float(value):
            raise ValueError(f"{where}: {value!r} is not a whole number")
        if (low is not None and number < low) or (high is not None and number > high):
            raise ValueError(f"{where}: {number} is outside {low}..{high}")
        return number

    def boolean(self, value: Any, where: str) -> bool:
        value = self.value(value, where)
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ValueError(f"{where}: {value!r} is not true or false")


def _get_att(value: Any, attribute: str) -> str | None:
    """The logical id in ``{"Fn::GetAtt": [X, attribute]}``, else None."""
    if isinstance(value, Mapping) and set(value) == {"Fn::GetAtt"}:
        target = value["Fn::GetAtt"]
        if isinstance(target, str):
            target = target.split(".", 1)
        if isinstance(target, list | tuple) and len(target) == 2 and target[1] == attribute:
            return str(target[0])
    return None


def _kebab(logical_id: str) -> str:
    base = logical_id.removesuffix("Function") or logical_id
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "-", base).lower()


def _filter_criteria(value: Any, where: str) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping) or not isinstance(value.get("Filters", []), list):
        raise ValueError(f"{where}: FilterCriteria must be {{Filters: [...]}}")
    return dict(value)


def _stream_source(name: str, props: Mapping[str, Any], r: _Resolver, where: str) -> StreamSource:
    at = f"{where}.Properties"
    record_age = r.integer(props.get("MaximumRecordAgeInSeconds", INFINITE), f"{at}.MaximumRecordAgeInSeconds",
                           low=INFINITE, high=604_800)
    if 0 <= record_age < 60:
        raise ValueError(f"{at}.MaximumRecordAgeInSeconds: {record_age} is below the minimum of 60 (or -1)")
    on_failure = ((props.get("DestinationConfig") or {}).get("OnFailure") or {}).get("Destination")
    return StreamSource(
        name=name,
        table=_get_att(props.get("Stream"), "StreamArn"),
        starting_position=str(r.value(props.get("StartingPosition", "LATEST"), f"{at}.StartingPosition")),
        batch_size=r.integer(props.get("BatchSize", 100), f"{at}.BatchSize", low=1, high=10_000),
        maximum_batching_window=r.integer(props.get("MaximumBatchingWindowInSeconds", 0),
                                          f"{at}.MaximumBatchingWindowInSeconds", low=0, high=300),
        bisect_batch_on_function_error=r.boolean(props.get("BisectBatchOnFunctionError", False),
                                                 f"{at}.BisectBatchOnFunctionError"),
        maximum_retry_attempts=r.integer(props.get("MaximumRetryAttempts", INFINITE), f"{at}.MaximumRetryAttempts",
                                         low=INFINITE, high=10_000),
        maximum_record_age=record_age,
        parallelization_factor=r.integer(props.get("ParallelizationFactor", 1), f"{at}.ParallelizationFactor",
                                         low=1, high=10),
        report_batch_item_failures="ReportBatchItemFailures" in (props.get("FunctionResponseTypes") or []),
        filter_criteria=_filter_criteria(props.get("FilterCriteria"), f"{at}.FilterCriteria"),
        on_failure=_get_att(on_failure, "Arn") if on_failure is not None else None,
        enabled=r.boolean(props.get("Enabled", True), f"{at}.Enabled"),
    )


def _queue_source(name: str, props: Mapping[str, Any], r: _Resolver, where: str) -> QueueSource:
    at = f"{where}.Properties"
    batch_size = r.integer(props.get("BatchSize", 10), f"{at}.BatchSize", low=1, high=10_000)
    window = r.integer(props.get("MaximumBatchingWindowInSeconds", 0), f"{at}.MaximumBatchingWindowInSeconds",
                       low=0, high=300)
    if batch_size > 10 and window < 1:
        raise ValueError(f"{at}: a BatchSize above 10 needs MaximumBatchingWindowInSeconds of at least 1")
    scaling = props.get("ScalingConfig") or {}
    concurrency = scaling.get("MaximumConcurrency")
    return QueueSource(
        name=name,
        queue=_get_att(props.get("Queue"), "Arn"),
        batch_size=batch_size,
        maximum_batching_window=window,
        report_batch_item_failures="ReportBatchItemFailures" in (props.get("FunctionResponseTypes") or []),
        filter_criteria=_filter_criteria(props.get("FilterCriteria"), f"{at}.FilterCriteria"),
        maximum_concurrency=None if concurrency is None else r.integer(
            concurrency, f"{at}.ScalingConfig.MaximumConcurrency", low=2, high=1000),
        enabled=r.boolean(props.get("Enabled", True), f"{at}.Enabled"),
    )


def _schedule_source(name: str, kind: str, props: Mapping[str, Any], r: _Resolver, where: str) -> ScheduleSource:
    at = f"{where}.Properties"
    expression = r.value(props.get("ScheduleExpression" if kind == "ScheduleV2" else "Schedule"), at)
    if not isinstance(expression, str) or not expression:
        raise ValueError(f"{at}: a {kind} event needs a literal schedule expression")
    raw_input = r.value(props.get("Input"), f"{at}.Input")
    try:
        payload = json.loads(raw_input) if isinstance(raw_input, str) else raw_input
    except json.JSONDecodeError as exc:
        raise ValueError(f"{at}.Input is not JSON: {exc}") from None
    retry = props.get("RetryPolicy") or {}
    if kind == "ScheduleV2":
        enabled = str(r.value(props.get("State", "ENABLED"), f"{at}.State")).upper() == "ENABLED"
    else:
        enabled = r.boolean(props.get("Enabled", True), f"{at}.Enabled")
    return ScheduleSource(
        name=name,
        expression=expression,
        timezone=str(r.value(props.get("ScheduleExpressionTimezone", "UTC"), f"{at}.ScheduleExpressionTimezone")),
        input=payload,
        retry_attempts=None if "MaximumRetryAttempts" not in retry else r.integer(
            retry["MaximumRetryAttempts"], f"{at}.RetryPolicy.MaximumRetryAttempts", low=0, high=185),
        maximum_event_age=None if "MaximumEventAgeInSeconds" not in retry else r.integer(
            retry["MaximumEventAgeInSeconds"], f"{at}.RetryPolicy.MaximumEventAgeInSeconds", low=60, high=86_400),
        enabled=enabled,
    )


def _log_group(template: Mapping[str, Any], props: Mapping[str, Any], name: str, r: _Resolver, where: str) -> str:
    """LoggingConfig's log group (a !Ref to an AWS::Logs::LogGroup, or a literal name); else Lambda's default."""
    group = (props.get("LoggingConfig") or {}).get("LogGroup")
    if group is None:
        return f"/aws/lambda/{name}"
    if isinstance(group, Mapping) and set(group) == {"Ref"}:
        resource = (template.get("Resources") or {}).get(group["Ref"]) or {}
        if resource.get("Type") == "AWS::Logs::LogGroup":
            group_name = (resource.get("Properties") or {}).get("LogGroupName")
            return str(r.value(group_name, f"{group['Ref']}.LogGroupName")) if group_name else f"/aws/lambda/{name}"
    return str(r.value(group, f"{where}.LoggingConfig.LogGroup"))


def function_spec(template: Mapping[str, Any], logical_id: str, *, stack_name: str = DEFAULT_STACK_NAME) -> FunctionSpec:
    """The ``AWS::Serverless::Function`` ``logical_id``, Globals merged, as typed data.

    Its name is the template's ``FunctionName`` (``!Sub ${AWS::StackName}-…`` resolved
    with ``stack_name``), else ``<stack_name>-<logical id without "Function", kebab-cased>``.
    """
    resource = (template.get("Resources") or {}).get(logical_id)
    if resource is None:
        raise KeyError(f"template has no resource {logical_id!r}")
    if resource.get("Type") != FUNCTION_TYPE:
        raise ValueError(f"{logical_id} is a {resource.get('Type')}, not an {FUNCTION_TYPE}")
    r = _Resolver(template, stack_name)
    globals_ = ((template.get("Globals") or {}).get("Function")) or {}
    props = {**globals_, **(resource.get("Properties") or {})}
    where = f"{logical_id}.Properties"
    handler = r.value(props.get("Handler"), f"{where}.Handler")
    if not isinstance(handler, str) or "." not in handler:
        raise ValueError(f"{where}.Handler must be a literal module.attribute, got {handler!r}")
    name = props.get("FunctionName")
    name = str(r.value(name, f"{where}.FunctionName")) if name is not None else f"{stack_name}-{_kebab(logical_id)}"
    streams: list[StreamSource] = []
    queues: list[QueueSource] = []
    schedules: list[ScheduleSource] = []
    for event_name, event in (props.get("Events") or {}).items():
        kind = event.get("Type")
        event_where = f"{where}.Events.{event_name}"
        event_props = event.get("Properties") or {}
        if kind == "DynamoDB":
            streams.append(_stream_source(event_name, event_props, r, event_where))
        elif kind == "SQS":
            queues.append(_queue_source(event_name, event_props, r, event_where))
        elif kind in ("ScheduleV2", "Schedule"):
            schedules.append(_schedule_source(event_name, kind, event_props, r, event_where))
    return FunctionSpec(
        logical_id=logical_id,
        name=name,
        handler=handler,
        timeout=r.integer(props.get("Timeout", DEFAULT_TIMEOUT), f"{where}.Timeout", low=1, high=900),
        memory_mb=r.integer(props.get("MemorySize", DEFAULT_MEMORY_MB), f"{where}.MemorySize", low=128, high=10_240),
        log_group=_log_group(template, props, name, r, where),
        streams=tuple(streams),
        queues=tuple(queues),
        schedules=tuple(schedules),
    )


def function_specs(template: Mapping[str, Any], *, stack_name: str = DEFAULT_STACK_NAME) -> dict[str, FunctionSpec]:
    """Every ``AWS::Serverless::Function`` of the template, by logical id, in template order."""
    return {
        logical_id: function_spec(template, logical_id, stack_name=stack_name)
        for logical_id, resource in (template.get("Resources") or {}).items()
        if isinstance(resource, Mapping) and resource.get("Type") == FUNCTION_TYPE
    }


def resolve_template(template: Mapping[str, Any] | str | os.PathLike[str] | None = None) -> Mapping[str, Any]:
    """A parsed template as is; a path loaded; None: the project's (``find_template``)."""
    if template is None:
        template = find_template()
    if isinstance(template, Mapping):
        return template
    return load_template(template)
