"""The local stack runs what template.yaml says: its pollers, functions and scheduler are
configured from the template, a changed template changes them, and overrides win.

Expected values are read from the template's raw data here, not through the reader
the stack uses, so a stack that hard-codes or misreads a setting fails.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from leadflow_infra.local.scheduler import Cron, Rate
from leadflow_infra.local.stack import ROLES, LocalStack
from leadflow_infra.template import TEMPLATE_ENV, find_template, load_template

TEMPLATE = find_template()
STREAM_EVENTS = {"stream": ("EventLogFunction", "EventLogStream"), "handoff": ("HandoffFunction", "MoveStream")}


def fake(event: dict, context: Any) -> dict:
    return {"batchItemFailures": []}


@pytest.fixture
def make_stack(tmp_path, start_stack):
    serial = itertools.count()

    def make(**options: Any) -> LocalStack:
        for role in ROLES:
            options.setdefault(role, fake)
        options.setdefault("data_dir", tmp_path / f"data{next(serial)}")
        options.setdefault("persist", False)
        return start_stack(**options)

    return make


def raw_function(template: dict, logical_id: str) -> dict:
    return {**template["Globals"]["Function"], **template["Resources"][logical_id]["Properties"]}


def raw_event(template: dict, logical_id: str, event: str) -> dict:
    return template["Resources"][logical_id]["Properties"]["Events"][event]["Properties"]


def assert_runs_template(stack: LocalStack, template: dict) -> None:
    for role, (logical_id, event) in STREAM_EVENTS.items():
        raw = raw_event(template, logical_id, event)
        settings = stack.pollers[role].settings
        assert settings.batch_size == raw["BatchSize"], role
        assert settings.maximum_batching_window == raw["MaximumBatchingWindowInSeconds"], role
        assert settings.bisect_batch_on_function_error is raw["BisectBatchOnFunctionError"], role
        assert settings.maximum_retry_attempts == raw["MaximumRetryAttempts"], role
        assert settings.maximum_record_age == raw["MaximumRecordAgeInSeconds"], role
        assert settings.parallelization_factor == raw.get("ParallelizationFactor", 1), role
        assert settings.report_batch_item_failures is ("ReportBatchItemFailures" in raw["FunctionResponseTypes"])
    # The handoff function has one execution environment per lane.
    assert stack.functions["handoff"].concurrency == raw_event(template, "HandoffFunction", "MoveStream").get(
        "ParallelizationFactor", 1)

    retry = raw_event(template, "HandoffRetryFunction", "RetryQueue")
    assert stack.retry_poller.settings == {
        "batch_size": retry["BatchSize"],
        "maximum_batching_window": retry.get("MaximumBatchingWindowInSeconds", 0),
        "report_batch_item_failures": "ReportBatchItemFailures" in retry["FunctionResponseTypes"],
    }

    for role, logical_id in ROLES.items():
        raw = raw_function(template, logical_id)
        function = stack.functions[role]
        group = template["Resources"][raw["LoggingConfig"]["LogGroup"]["Ref"]]["Properties"]["LogGroupName"]
        assert function.timeout_s == raw["Timeout"], role
        assert function.memory_mb == raw["MemorySize"], role
        assert function.log_group_name == group["Fn::Sub"].replace("${AWS::StackName}", stack.stack_name), role
        assert function.log_group_name == f"/aws/lambda/{function.function_name}", role

    schedules = {name: e["Properties"] for name, e in template["Resources"]["JobsFunction"]["Properties"]["Events"].items()
                 if e["Type"] == "ScheduleV2"}
    jobs = stack.scheduler.jobs
    assert set(jobs) == {json.loads(p["Input"])["job"] for p in schedules.values()}
    for properties in schedules.values():
        job = jobs[json.loads(properties["Input"])["job"]]
        assert job.schedule.expression == properties["ScheduleExpression"]
        assert job.payload == json.loads(properties["Input"])


def test_stack_pollers_functions_and_schedules_come_from_template_yaml(make_stack):
    stack = make_stack()

    assert_runs_template(stack, load_template(TEMPLATE))
    assert stack.functions["api"].function_name == "leadflow-api"
    assert stack.functions["stream"].function_name == "leadflow-event-log"
    funnel = stack.scheduler.jobs["funnel"].schedule
    assert isinstance(funnel, Cron) and funnel.hours == {0} and funnel.minutes == {5}


def modified_template(directory: Path) -> Path:
    """template.yaml with other values for the settings the stack reads."""
    text = TEMPLATE.read_text(encoding="utf-8")
    changes = [
        # HandoffFunction: timeout; its MoveStream: batch, window, lanes, bisect, retries, record age.
        ("Handler: leadflow.handlers.handoff.handler\n      Timeout: 60",
         "Handler: leadflow.handlers.handoff.handler\n      Timeout: 42"),
        ("BatchSize: 10\n            MaximumBatchingWindowInSeconds: 0\n            ParallelizationFactor: 4\n"
         "            BisectBatchOnFunctionError: true\n            MaximumRetryAttempts: 10\n"
         "            MaximumRecordAgeInSeconds: 21600",
         "BatchSize: 7\n            MaximumBatchingWindowInSeconds: 2\n            ParallelizationFactor: 3\n"
         "            BisectBatchOnFunctionError: false\n            MaximumRetryAttempts: 4\n"
         "            MaximumRecordAgeInSeconds: 600"),
        # EventLogStream's batch size.
        ("BatchSize: 100\n            MaximumBatchingWindowInSeconds: 1",
         "BatchSize: 25\n            MaximumBatchingWindowInSeconds: 1"),
        # The retry queue's batch size, the SLA and funnel schedules, the memory of every function.
        ("Queue: !GetAtt HandoffRetryQueue.Arn\n            BatchSize: 10",
         "Queue: !GetAtt HandoffRetryQueue.Arn\n            BatchSize: 3"),
        ("ScheduleExpression: rate(5 minutes)", "ScheduleExpression: rate(2 minutes)"),
        ("ScheduleExpression: cron(5 0 * * ? *)\n            ScheduleExpressionTimezone: UTC",
         "ScheduleExpression: cron(30 6,18 * * ? *)\n            ScheduleExpressionTimezone: Europe/Oslo"),
        ("    MemorySize: 512\n", "    MemorySize: 1024\n"),
    ]
    for old, new in changes:
        assert text.count(old) == 1, f"template.yaml changed shape; update this test: {old!r}"
        text = text.replace(old, new)
    path = directory / "template.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_stack_with_a_changed_template_runs_the_changed_values(make_stack, tmp_path):
    path = modified_template(tmp_path)
    template = load_template(path)

    stack = make_stack(template=path)

    assert_runs_template(stack, template)
    assert stack.pollers["handoff"].settings.batch_size == 7
    assert stack.pollers["handoff"].settings.parallelization_factor == 3
    assert stack.pollers["handoff"].settings.bisect_batch_on_function_error is False
    assert stack.functions["handoff"].timeout_s == 42
    assert stack.functions["handoff"].concurrency == 3
    assert stack.functions["api"].memory_mb == 1024
    assert stack.retry_poller.settings["batch_size"] == 3
    assert stack.scheduler.jobs["sla"].schedule == Rate(120, "rate(2 minutes)")
    funnel = stack.scheduler.jobs["funnel"].schedule
    assert (funnel.minutes, funnel.hours, str(funnel.timezone)) == ({30}, {6, 18}, "Europe/Oslo")


def test_stack_finds_the_template_named_by_the_environment(make_stack, tmp_path, monkeypatch):
    path = modified_template(tmp_path)
    monkeypatch.setenv(TEMPLATE_ENV, str(path))

    stack = make_stack()

    assert stack.pollers["stream"].settings.batch_size == 25
    assert stack.functions["handoff"].timeout_s == 42


def test_stack_overrides_win_over_the_template_for_every_mapping(make_stack):
    stack = make_stack(batch_size=3, max_retries=1, bisect_on_error=False, batching_window=0, max_record_age=120,
                       sla_every=1.5, funnel_every=60)

    for role in ("stream", "handoff"):
        settings = stack.pollers[role].settings
        assert (settings.batch_size, settings.maximum_retry_attempts, settings.maximum_record_age) == (3, 1, 120)
        assert settings.bisect_batch_on_function_error is False
        assert settings.maximum_batching_window == 0
    # Not overridden: still the template's.
    raw = raw_event(load_template(TEMPLATE), "HandoffFunction", "MoveStream")
    assert stack.pollers["handoff"].settings.parallelization_factor == raw["ParallelizationFactor"]
    jobs = stack.scheduler.jobs
    assert jobs["sla"].schedule == Rate(1.5)
    assert jobs["sla"].payload == {"job": "sla"}  # the template's Input
    assert jobs["funnel"].schedule == Rate(60.0)
    assert jobs["rescore"].schedule.expression == "rate(1 hour)"


def test_scheduler_with_sla_override_invokes_jobs_with_the_templates_input(make_stack):
    import threading

    seen: list[tuple[dict, str]] = []
    ran = threading.Event()

    def jobs(event: dict, context: Any) -> None:
        seen.append((event, context.function_name))
        ran.set()

    make_stack(jobs=jobs, sla_every=0.2)

    assert ran.wait(5)
    assert seen[0] == ({"job": "sla"}, "leadflow-jobs")
