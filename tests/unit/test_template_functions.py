"""The template reader for functions: what the local stack runs is what template.yaml deploys.

Each expectation is read from template.yaml's raw data here (Globals merged by hand),
not from the reader, so a reader that drops or misreads a setting fails.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from leadflow_infra.template import (
    INFINITE,
    function_spec,
    function_specs,
    find_template,
    load_template,
)

FUNCTIONS = ["ApiFunction", "EventLogFunction", "HandoffFunction", "HandoffRetryFunction", "JobsFunction"]


@pytest.fixture(scope="module")
def template() -> dict:
    return load_template(find_template())


def _raw(template: dict, logical_id: str) -> dict:
    return {**template["Globals"]["Function"], **template["Resources"][logical_id]["Properties"]}


def _events(template: dict, logical_id: str, kind: str) -> dict[str, dict]:
    events = template["Resources"][logical_id]["Properties"].get("Events") or {}
    return {name: event["Properties"] for name, event in events.items() if event["Type"] == kind}


def test_function_specs_read_every_function_of_the_template(template):
    assert list(function_specs(template)) == FUNCTIONS


@pytest.mark.parametrize("logical_id", FUNCTIONS)
def test_function_spec_has_handler_timeout_and_memory_with_globals_merged(template, logical_id):
    raw = _raw(template, logical_id)

    spec = function_spec(template, logical_id)

    assert spec.handler == raw["Handler"]
    assert spec.handler_spec == raw["Handler"].rsplit(".", 1)[0] + ":" + raw["Handler"].rsplit(".", 1)[1]
    assert spec.timeout == raw["Timeout"]
    assert spec.memory_mb == raw["MemorySize"]


@pytest.mark.parametrize("logical_id", FUNCTIONS)
def test_function_name_is_the_one_its_log_group_is_named_after(template, logical_id):
    # The template names each function's log group /aws/lambda/${AWS::StackName}-<name>.
    group_ref = template["Resources"][logical_id]["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]
    group_name = template["Resources"][group_ref]["Properties"]["LogGroupName"]["Fn::Sub"]

    spec = function_spec(template, logical_id, stack_name="demo")

    assert f"/aws/lambda/{spec.name}" == group_name.replace("${AWS::StackName}", "demo")
    assert spec.log_group == f"/aws/lambda/{spec.name}"
    assert spec.name.startswith("demo-")


def test_function_spec_stream_sources_carry_every_mapping_setting(template):
    for logical_id in ("EventLogFunction", "HandoffFunction"):
        raw_events = _events(template, logical_id, "DynamoDB")
        spec = function_spec(template, logical_id)

        assert [s.name for s in spec.streams] == list(raw_events)
        for source in spec.streams:
            raw = raw_events[source.name]
            assert source.table == raw["Stream"]["Fn::GetAtt"][0]
            assert source.starting_position == raw["StartingPosition"]
            assert source.batch_size == raw["BatchSize"]
            assert source.maximum_batching_window == raw["MaximumBatchingWindowInSeconds"]
            assert source.bisect_batch_on_function_error is raw["BisectBatchOnFunctionError"]
            assert source.maximum_retry_attempts == raw["MaximumRetryAttempts"]
            assert source.maximum_record_age == raw["MaximumRecordAgeInSeconds"]
            assert source.parallelization_factor == raw.get("ParallelizationFactor", 1)
            assert source.report_batch_item_failures is ("ReportBatchItemFailures" in raw["FunctionResponseTypes"])
            assert source.filter_criteria == raw["FilterCriteria"]
            assert source.on_failure == raw["DestinationConfig"]["OnFailure"]["Destination"]["Fn::GetAtt"][0]


def test_function_spec_queue_sources_carry_batch_size_window_and_partial_failures(template):
    raw_events = _events(template, "HandoffRetryFunction", "SQS")

    (source,) = function_spec(template, "HandoffRetryFunction").queues

    raw = raw_events[source.name]
    assert source.queue == raw["Queue"]["Fn::GetAtt"][0]
    assert source.batch_size == raw["BatchSize"]
    assert source.maximum_batching_window == raw.get("MaximumBatchingWindowInSeconds", 0)
    assert source.report_batch_item_failures is ("ReportBatchItemFailures" in raw["FunctionResponseTypes"])


def test_function_spec_schedules_carry_expression_timezone_input_and_retry_policy(template):
    raw_events = _events(template, "JobsFunction", "ScheduleV2")

    schedules = function_spec(template, "JobsFunction").schedules

    assert [s.name for s in schedules] == list(raw_events)
    for source in schedules:
        raw = raw_events[source.name]
        assert source.expression == raw["ScheduleExpression"]
        assert source.timezone == raw.get("ScheduleExpressionTimezone", "UTC")
        assert source.input == json.loads(raw["Input"])
        assert source.job == json.loads(raw["Input"])["job"]
        assert source.retry_attempts == raw["RetryPolicy"]["MaximumRetryAttempts"]
    assert {s.job for s in schedules} == {"sla", "rescore", "rules", "funnel"}


# -- a template of its own ---------------------------------------------------------------


def _template(function: dict[str, Any], globals_: dict[str, Any] | None = None) -> dict:
    template: dict[str, Any] = {
        "Parameters": {"Env": {"Type": "String", "Default": "dev"}},
        "Resources": {"WorkerFunction": {"Type": "AWS::Serverless::Function", "Properties": function}},
    }
    if globals_ is not None:
        template["Globals"] = {"Function": globals_}
    return template


def test_function_spec_without_settings_takes_aws_defaults():
    template = _template({
        "Handler": "app.main.handler",
        "Events": {
            "Changes": {"Type": "DynamoDB", "Properties": {"Stream": {"Fn::GetAtt": ["Table", "StreamArn"]},
                                                            "StartingPosition": "TRIM_HORIZON"}},
            "Jobs": {"Type": "SQS", "Properties": {"Queue": {"Fn::GetAtt": ["Jobs", "Arn"]}}},
            "Tick": {"Type": "ScheduleV2", "Properties": {"ScheduleExpression": "rate(1 day)"}},
        },
    })

    spec = function_spec(template, "WorkerFunction", stack_name="app")

    assert (spec.name, spec.timeout, spec.memory_mb, spec.log_group) == ("app-worker", 3, 128, "/aws/lambda/app-worker")
    (stream,) = spec.streams
    assert (stream.table, stream.starting_position, stream.batch_size, stream.maximum_batching_window) == (
        "Table", "TRIM_HORIZON", 100, 0)
    assert stream.bisect_batch_on_function_error is False
    assert stream.maximum_retry_attempts == stream.maximum_record_age == INFINITE
    assert stream.parallelization_factor == 1
    assert stream.report_batch_item_failures is False
    assert stream.filter_criteria is None and stream.on_failure is None
    (queue,) = spec.queues
    assert (queue.queue, queue.batch_size, queue.maximum_batching_window) == ("Jobs", 10, 0)
    (tick,) = spec.schedules
    assert (tick.expression, tick.timezone, tick.input, tick.job, tick.retry_attempts) == (
        "rate(1 day)", "UTC", None, "Tick", None)


def test_function_spec_resolves_function_name_sub_and_parameter_defaults():
    template = _template({"Handler": "app.main.handler", "FunctionName": {"Fn::Sub": "${AWS::StackName}-${Env}-w"},
                          "Timeout": {"Ref": "Seconds"}}, globals_={"MemorySize": 1024})
    template["Parameters"]["Seconds"] = {"Type": "Number", "Default": 45}

    spec = function_spec(template, "WorkerFunction", stack_name="app")

    assert (spec.name, spec.timeout, spec.memory_mb) == ("app-dev-w", 45, 1024)


@pytest.mark.parametrize(
    ("properties", "message"),
    [
        ({"BatchSize": {"Fn::If": ["Big", 100, 10]}}, "BatchSize"),
        ({"ParallelizationFactor": 11}, "ParallelizationFactor"),
        ({"MaximumRecordAgeInSeconds": 30}, "MaximumRecordAgeInSeconds"),
        ({"MaximumRetryAttempts": -2}, "MaximumRetryAttempts"),
        ({"BisectBatchOnFunctionError": "sometimes"}, "BisectBatchOnFunctionError"),
    ],
)
def test_function_spec_with_a_setting_it_cannot_run_raises_naming_it(properties, message):
    template = _template({"Handler": "app.main.handler", "Events": {"Changes": {"Type": "DynamoDB", "Properties": {
        "Stream": {"Fn::GetAtt": ["Table", "StreamArn"]}, "StartingPosition": "LATEST", **properties}}}})

    with pytest.raises(ValueError, match=f"WorkerFunction.Properties.Events.Changes.Properties.{message}"):
        function_spec(template, "WorkerFunction")


def test_function_spec_of_a_resource_that_is_no_function_raises():
    template = {"Resources": {"Table": {"Type": "AWS::DynamoDB::Table", "Properties": {}}}}

    with pytest.raises(ValueError, match="not an AWS::Serverless::Function"):
        function_spec(template, "Table")
    with pytest.raises(KeyError, match="Missing"):
        function_spec(template, "Missing")
