"""Assertions on template.yaml: what the code and the contract rely on is really deployed."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from leadflow.settings import VARIABLES

from leadflow_infra.template import find_template, load_template, table_properties

REPO_ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_PATH = REPO_ROOT / "template.yaml"
FUNCTIONS_DIR = REPO_ROOT / "functions"

FUNCTIONS = ["ApiFunction", "EventLogFunction", "HandoffFunction", "HandoffRetryFunction", "JobsFunction"]
HANDLERS = {
    "ApiFunction": "leadflow.handlers.api.handler",
    "EventLogFunction": "leadflow.handlers.event_log.handler",
    "HandoffFunction": "leadflow.handlers.handoff.handler",
    "HandoffRetryFunction": "leadflow.handlers.handoff_retry.handler",
    "JobsFunction": "leadflow.handlers.jobs.handler",
}
WEBHOOK_SOURCES = ["HUBSPOT", "MAUTIC", "TYPEFORM", "CALENDLY", "SENDGRID", "SLACK", "GENERIC"]
SECRET_VARIABLES = [
    "LEADFLOW_API_KEY",
    "LEADFLOW_SLACK_WEBHOOK_URL",
    "LEADFLOW_CRM_WEBHOOK_URL",
    "LEADFLOW_CRM_WEBHOOK_SECRET",
    *(f"LEADFLOW_WEBHOOK_SECRET_{source}" for source in WEBHOOK_SOURCES),
]
# Never off: the stack creates them when their parameter is empty (test_template_secrets.py).
GENERATED_SECRETS = ["LEADFLOW_API_KEY", "LEADFLOW_LEAD_ID_KEY"]
CONTRACT_VARIABLES = [
    "LEADFLOW_TABLE",
    "LEADFLOW_RULES",
    *SECRET_VARIABLES,
    "POWERTOOLS_SERVICE_NAME",
    "POWERTOOLS_METRICS_NAMESPACE",
    "POWERTOOLS_LOG_LEVEL",
    "LOG_LEVEL",
]
INTRINSIC_KEYS = {"Ref", "Condition"}
SETTINGS_VARIABLES = set(VARIABLES)  # derived from the settings model: what the functions read


# ---------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def template() -> dict:
    return load_template(TEMPLATE_PATH)


def resources_of_type(template: dict, resource_type: str) -> dict[str, dict]:
    return {name: res for name, res in template["Resources"].items() if res["Type"] == resource_type}


def function_properties(template: dict, logical_id: str) -> dict:
    """A function's properties with Globals.Function merged in, the way SAM merges them."""
    globals_ = template.get("Globals", {}).get("Function", {})
    own = template["Resources"][logical_id]["Properties"]
    merged = {**globals_, **own}
    variables = {
        **globals_.get("Environment", {}).get("Variables", {}),
        **own.get("Environment", {}).get("Variables", {}),
    }
    merged["Environment"] = {"Variables": variables}
    return merged


def only_event(properties: dict, event_type: str) -> dict:
    events = [e["Properties"] for e in properties.get("Events", {}).values() if e["Type"] == event_type]
    assert len(events) == 1, f"expected one {event_type} event, found {len(events)}"
    return events[0]


def is_intrinsic(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and (
        next(iter(value)) in INTRINSIC_KEYS or next(iter(value)).startswith("Fn::")
    )


def contains_intrinsic(value: Any) -> bool:
    if is_intrinsic(value):
        return True
    if isinstance(value, dict):
        return any(contains_intrinsic(v) for v in value.values())
    if isinstance(value, list):
        return any(contains_intrinsic(v) for v in value)
    return False


def ref_name(value: Any) -> str | None:
    return value.get("Ref") if isinstance(value, dict) else None


def pattern_matches(pattern: dict, event: dict) -> bool:
    """Lambda event-filter semantics for the subset the template uses (literals and prefix)."""
    for key, rule in pattern.items():
        if key not in event:
            return False
        actual = event[key]
        if isinstance(rule, dict):
            if not isinstance(actual, dict) or not pattern_matches(rule, actual):
                return False
            continue
        if not any(_rule_matches(option, actual) for option in rule):
            return False
    return True


def _rule_matches(option: Any, actual: Any) -> bool:
    if isinstance(option, dict):
        if set(option) == {"prefix"}:
            return isinstance(actual, str) and actual.startswith(option["prefix"])
        raise AssertionError(f"filter rule {option} is not understood by this test")
    return option == actual


def stream_record(sk: str, event_name: str = "MODIFY", **attributes: str) -> dict:
    keys = {"PK": {"S": "LEAD#01JD3XK5"}, "SK": {"S": sk}}
    change = {
        "Keys": keys,
        "NewImage": {**keys, "stage": {"S": "mql"}, **{k: {"S": v} for k, v in attributes.items()}},
        "OldImage": {**keys, "stage": {"S": "lead"}},
        "SequenceNumber": "111",
        "StreamViewType": "NEW_AND_OLD_IMAGES",
    }
    if event_name == "REMOVE":
        del change["NewImage"]
    return {"eventID": "1", "eventName": event_name, "eventSource": "aws:dynamodb", "dynamodb": change}


def invokes(template: dict, function: str, record: dict) -> bool:
    """Whether Lambda's event filtering lets `record` through to `function` (the local
    stack's pollers compile the same patterns)."""
    from leadflow_infra.local.filters import compile_filters

    event = only_event(function_properties(template, function), "DynamoDB")
    return compile_filters(event["FilterCriteria"])(record)


def alarms_on(template: dict, namespace: str, metric: str, dimension_value: Any) -> list[dict]:
    found = []
    for alarm in resources_of_type(template, "AWS::CloudWatch::Alarm").values():
        props = alarm["Properties"]
        if props.get("Namespace") != namespace or props.get("MetricName") != metric:
            continue
        if any(d.get("Value") == dimension_value for d in props.get("Dimensions", [])):
            found.append(props)
    return found


# ---------------------------------------------------------------- lint


def test_cfn_lint_on_template_exits_zero():
    cfn_lint = Path(sys.executable).parent / "cfn-lint"

    result = subprocess.run(
        [str(cfn_lint), str(TEMPLATE_PATH)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
    )

    assert result.returncode == 0, result.stdout + result.stderr


# ---------------------------------------------------------------- loader module


def test_load_template_short_form_tags_become_long_form(tmp_path):
    path = tmp_path / "template.yaml"
    path.write_text(
        "Resources:\n"
        "  Q:\n"
        "    Type: AWS::SQS::Queue\n"
        "    Properties:\n"
        "      A: !Ref T\n"
        "      B: !GetAtt T.StreamArn\n"
        "      C: !Sub '${T}-x'\n"
        "      D: !If [Cond, !Ref X, !Ref AWS::NoValue]\n"
        "      E: !Not [!Equals [!Ref P, '']]\n"
        "      F: !Join ['', [a, b]]\n",
        encoding="utf-8",
    )

    props = load_template(path)["Resources"]["Q"]["Properties"]

    assert props == {
        "A": {"Ref": "T"},
        "B": {"Fn::GetAtt": ["T", "StreamArn"]},
        "C": {"Fn::Sub": "${T}-x"},
        "D": {"Fn::If": ["Cond", {"Ref": "X"}, {"Ref": "AWS::NoValue"}]},
        "E": {"Fn::Not": [{"Fn::Equals": [{"Ref": "P"}, ""]}]},
        "F": {"Fn::Join": ["", ["a", "b"]]},
    }


def test_find_template_without_env_returns_repo_template(monkeypatch):
    monkeypatch.delenv("LEADFLOW_TEMPLATE", raising=False)

    assert find_template().resolve() == TEMPLATE_PATH.resolve()


def test_find_template_with_env_returns_that_file(monkeypatch, tmp_path):
    other = tmp_path / "other.yaml"
    other.write_text("Resources: {}\n", encoding="utf-8")
    monkeypatch.setenv("LEADFLOW_TEMPLATE", str(other))

    assert find_template() == other


def test_table_properties_unknown_logical_id_raises_key_error(template):
    with pytest.raises(KeyError):
        table_properties(template, "NoSuchTable")


# ---------------------------------------------------------------- table


def test_leads_table_keys_are_string_pk_hash_and_sk_range(template):
    props = table_properties(template)

    assert props["KeySchema"] == [
        {"AttributeName": "PK", "KeyType": "HASH"},
        {"AttributeName": "SK", "KeyType": "RANGE"},
    ]
    types = {a["AttributeName"]: a["AttributeType"] for a in props["AttributeDefinitions"]}
    from leadflow.domain.listing import INDEXES

    assert types == {"PK": "S", "SK": "S", **{name: "S" for keys in INDEXES.values() for name in keys}}
    assert props["BillingMode"] == "PAY_PER_REQUEST"


def test_leads_table_indexes_are_the_domains_with_string_keys_and_keys_only_projection(template):
    """GSI1 (stage, the funnel's) and the lead lists' indexes, exactly as domain/listing.py keys
    them: keys only, so a lead write that changes no index key writes no index."""
    from leadflow.domain.listing import INDEXES

    indexes = table_properties(template)["GlobalSecondaryIndexes"]

    assert indexes == [
        {
            "IndexName": name,
            "KeySchema": [
                {"AttributeName": pk, "KeyType": "HASH"},
                {"AttributeName": sk, "KeyType": "RANGE"},
            ],
            "Projection": {"ProjectionType": "KEYS_ONLY"},
        }
        for name, (pk, sk) in INDEXES.items()
    ]


def test_leads_table_stream_carries_new_and_old_images(template):
    assert table_properties(template)["StreamSpecification"] == {"StreamViewType": "NEW_AND_OLD_IMAGES"}


def test_leads_table_recovery_ttl_and_encryption_are_enabled(template):
    props = table_properties(template)

    assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert props["TimeToLiveSpecification"] == {"AttributeName": "ttl", "Enabled": True}
    assert props["SSESpecification"]["SSEEnabled"] is True


def test_leads_table_without_table_name_is_named_by_cloudformation(template):
    assert "TableName" not in table_properties(template)


@pytest.mark.parametrize(
    "key",
    [
        "AttributeDefinitions",
        "KeySchema",
        "GlobalSecondaryIndexes",
        "StreamSpecification",
        "BillingMode",
        "TimeToLiveSpecification",
    ],
)
def test_leads_table_property_read_by_local_stack_is_plain_literal(template, key):
    assert not contains_intrinsic(table_properties(template)[key])


# ---------------------------------------------------------------- stream consumer


def test_stream_event_with_failures_reports_items_bisects_and_bounds_retries(template):
    event = only_event(function_properties(template, "EventLogFunction"), "DynamoDB")

    assert event["Stream"] == {"Fn::GetAtt": ["LeadsTable", "StreamArn"]}
    assert event["StartingPosition"] == "LATEST"
    assert event["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert event["BisectBatchOnFunctionError"] is True
    assert 0 < event["MaximumRetryAttempts"] <= 10
    assert 0 < event["MaximumRecordAgeInSeconds"] <= 86400
    assert event["BatchSize"] == 100
    assert event["MaximumBatchingWindowInSeconds"] == 1


def test_stream_event_after_last_retry_sends_to_sqs_dead_letter_queue(template):
    event = only_event(function_properties(template, "EventLogFunction"), "DynamoDB")

    on_failure = event["DestinationConfig"]["OnFailure"]

    assert on_failure["Type"] == "SQS"
    assert on_failure["Destination"] == {"Fn::GetAtt": ["StreamDeadLetterQueue", "Arn"]}
    assert template["Resources"]["StreamDeadLetterQueue"]["Type"] == "AWS::SQS::Queue"


@pytest.mark.parametrize(
    ("sk", "event_name", "attributes", "expected"),
    [
        ("LEAD", "MODIFY", {"applied": "[]"}, True),
        ("LEAD", "INSERT", {"applied": "[]"}, True),
        ("LEAD", "MODIFY", {}, True),  # a re-score or an owner: the funnel may change
        ("LEAD", "REMOVE", {}, True),
        ("EVENT#2026-11-20T10:00:00Z#evt-1", "INSERT", {"applied": "[]"}, False),
        ("EVENT#2026-11-20T10:00:00Z#evt-1", "REMOVE", {}, False),
        ("SEND#tr_1#slack", "MODIFY", {}, False),
        ("LEADX", "MODIFY", {"applied": "[]"}, False),
    ],
)
def test_stream_filter_invokes_event_log_for_every_lead_write_and_erasure_only(template, sk, event_name, attributes, expected):
    assert invokes(template, "EventLogFunction", stream_record(sk, event_name, **attributes)) is expected


@pytest.mark.parametrize(
    ("sk", "event_name", "attributes", "expected"),
    [
        ("LEAD", "MODIFY", {"moves": '["tr_1"]'}, True),
        ("LEAD", "INSERT", {"moves": '["tr_1"]', "applied": "[]"}, True),
        ("LEAD", "MODIFY", {"applied": "[]"}, False),
        ("LEAD", "REMOVE", {}, False),
        ("SEND#tr_1#slack", "MODIFY", {"moves": "x"}, False),
        ("COUNTER", "MODIFY", {}, False),
    ],
)
def test_handoff_filter_invokes_only_for_lead_writes_carrying_moves(template, sk, event_name, attributes, expected):
    assert invokes(template, "HandoffFunction", stream_record(sk, event_name, **attributes)) is expected


def test_handoff_stream_event_reports_items_bisects_and_dead_letters(template):
    event = only_event(function_properties(template, "HandoffFunction"), "DynamoDB")

    assert event["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert event["BisectBatchOnFunctionError"] is True
    assert 0 < event["MaximumRetryAttempts"] <= 10
    assert event["DestinationConfig"]["OnFailure"]["Destination"] == {"Fn::GetAtt": ["StreamDeadLetterQueue", "Arn"]}


def test_handoff_retry_queue_redrives_to_dead_letter_queue_and_outlives_function_timeout(template):
    queue = template["Resources"]["HandoffRetryQueue"]["Properties"]
    retry = function_properties(template, "HandoffRetryFunction")
    event = only_event(retry, "SQS")

    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {"Fn::GetAtt": ["HandoffDeadLetterQueue", "Arn"]}
    assert queue["VisibilityTimeout"] >= 6 * retry["Timeout"]
    assert event["Queue"] == {"Fn::GetAtt": ["HandoffRetryQueue", "Arn"]}
    assert event["FunctionResponseTypes"] == ["ReportBatchItemFailures"]


@pytest.mark.parametrize("function", ["HandoffFunction", "HandoffRetryFunction"])
@pytest.mark.parametrize("queue", ["HandoffRetryQueue", "HandoffDeadLetterQueue"])
def test_handoff_functions_may_send_to_retry_and_dead_letter_queues(template, function, queue):
    policies = function_properties(template, function)["Policies"]

    names = [p["SQSSendMessagePolicy"]["QueueName"] for p in policies if isinstance(p, dict) and "SQSSendMessagePolicy" in p]

    assert {"Fn::GetAtt": [queue, "QueueName"]} in names


def test_handoff_environment_names_the_queues(template):
    variables = function_properties(template, "HandoffFunction")["Environment"]["Variables"]

    assert variables["LEADFLOW_RETRY_QUEUE_URL"] == {"Ref": "HandoffRetryQueue"}
    assert variables["LEADFLOW_DLQ_URL"] == {"Ref": "HandoffDeadLetterQueue"}


def test_stream_dead_letter_queue_is_encrypted_and_keeps_messages_14_days(template):
    props = template["Resources"]["StreamDeadLetterQueue"]["Properties"]

    assert props["SqsManagedSseEnabled"] is True
    assert props["MessageRetentionPeriod"] == 14 * 24 * 3600


# ---------------------------------------------------------------- functions


@pytest.mark.parametrize("function", FUNCTIONS)
def test_function_environment_declares_every_contract_variable(template, function):
    variables = function_properties(template, function)["Environment"]["Variables"]

    missing = [name for name in CONTRACT_VARIABLES if name not in variables]

    assert missing == []
    assert variables["LEADFLOW_TABLE"] == {"Ref": "LeadsTable"}
    assert variables["POWERTOOLS_SERVICE_NAME"] == "leadflow"
    assert variables["POWERTOOLS_METRICS_NAMESPACE"] == "Leadflow"


@pytest.mark.parametrize("variable", [v for v in SECRET_VARIABLES if v not in GENERATED_SECRETS])
def test_secret_variable_with_parameter_name_becomes_ssm_reference_else_empty(template, variable):
    value = template["Globals"]["Function"]["Environment"]["Variables"][variable]

    condition, when_set, when_unset = value["Fn::If"]

    parameter = re.fullmatch(r"ssm:\$\{(\w+)\}", when_set["Fn::Sub"]).group(1)
    assert template["Parameters"][parameter]["Type"] == "String"
    assert template["Parameters"][parameter]["Default"] == ""
    assert template["Conditions"][condition] == {"Fn::Not": [{"Fn::Equals": [{"Ref": parameter}, ""]}]}
    assert when_unset == ""


@pytest.mark.parametrize("function", FUNCTIONS)
def test_function_ssm_read_access_is_limited_to_secrets_prefix(template, function):
    policies = function_properties(template, function)["Policies"]

    ssm = [p["SSMParameterReadPolicy"] for p in policies if isinstance(p, dict) and "SSMParameterReadPolicy" in p]

    assert ssm == [{"ParameterName": {"Fn::Sub": "${SecretsPrefix}/*"}}]
    assert not any(isinstance(p, str) and "SSM" in p for p in policies)


@pytest.mark.parametrize("function", FUNCTIONS)
def test_function_policies_grant_crud_on_leads_table_only(template, function):
    policies = function_properties(template, function)["Policies"]

    tables = [p["DynamoDBCrudPolicy"]["TableName"] for p in policies if "DynamoDBCrudPolicy" in p]

    assert tables == [{"Ref": "LeadsTable"}]


@pytest.mark.parametrize("function", FUNCTIONS)
def test_function_runtime_is_python311_arm64_with_tracing_from_the_parameter(template, function):
    props = function_properties(template, function)

    assert props["Runtime"] == "python3.11"
    assert props["Architectures"] == ["arm64"]
    assert props["Tracing"] == {"Ref": "Tracing"}
    assert props["Environment"]["Variables"]["POWERTOOLS_TRACE_DISABLED"] == {
        "Fn::If": ["IsTracingActive", "false", "true"]}
    assert props["CodeUri"] == "functions/"


def test_tracing_is_off_unless_asked_for(template):
    parameter = template["Parameters"]["Tracing"]

    assert parameter["Default"] == "PassThrough" and set(parameter["AllowedValues"]) == {"Active", "PassThrough"}
    assert template["Conditions"]["IsTracingActive"] == {"Fn::Equals": [{"Ref": "Tracing"}, "Active"]}


@pytest.mark.parametrize("variable", sorted(SETTINGS_VARIABLES))
def test_every_setting_the_functions_read_is_declared_for_every_function(template, variable):
    for function in FUNCTIONS:
        assert variable in function_properties(template, function)["Environment"]["Variables"], function


def test_no_variable_is_declared_that_nothing_reads(template):
    declared = set(template["Globals"]["Function"]["Environment"]["Variables"])
    libraries = {"POWERTOOLS_SERVICE_NAME", "POWERTOOLS_METRICS_NAMESPACE", "POWERTOOLS_LOG_LEVEL",
                 "POWERTOOLS_TRACE_DISABLED", "LOG_LEVEL", "PYDANTIC_DISABLE_PLUGINS"}

    assert declared - SETTINGS_VARIABLES - libraries == set()


def test_pydantic_plugins_are_off_and_none_would_be_missed():
    """The template turns off pydantic's plugin scan (an entry-point search at the first
    model of every cold start); that is only right while the artifacts ship no plugin."""
    from importlib.metadata import entry_points

    assert not list(entry_points(group="pydantic"))


@pytest.mark.parametrize("function", FUNCTIONS)
def test_function_handler_points_at_module_defining_handler(template, function):
    handler = function_properties(template, function)["Handler"]
    assert handler == HANDLERS[function]
    module, attribute = handler.rsplit(".", 1)
    source = FUNCTIONS_DIR / f"{module.replace('.', '/')}.py"

    assert source.is_file(), f"{source} does not exist"
    assert re.search(rf"^(async\s+)?def {attribute}\(", source.read_text(encoding="utf-8"), re.MULTILINE)


def test_api_function_with_any_path_routes_every_request_as_payload_v2(template):
    props = function_properties(template, "ApiFunction")
    routes = {
        (e["Properties"]["Method"], e["Properties"]["Path"]): e["Properties"]
        for e in props["Events"].values()
        if e["Type"] == "HttpApi"
    }

    assert set(routes) == {("ANY", "/{proxy+}"), ("ANY", "/")}
    for route in routes.values():
        assert route["ApiId"] == {"Ref": "HttpApi"}
        assert route.get("PayloadFormatVersion", "2.0") == "2.0"
    assert template["Resources"]["HttpApi"]["Type"] == "AWS::Serverless::HttpApi"
    assert props["MemorySize"] == 512
    assert props["Timeout"] == 29  # vendor batches are applied within the request; HTTP API stops at 30 s


def test_jobs_function_schedules_rescore_hourly_sla_every_five_minutes_and_funnel_daily(template):
    props = function_properties(template, "JobsFunction")
    schedules = {
        json.loads(e["Properties"]["Input"])["job"]: e["Properties"]["ScheduleExpression"]
        for e in props["Events"].values()
        if e["Type"] == "ScheduleV2"
    }

    assert schedules["rescore"] == "rate(1 hour)"
    assert schedules["funnel"] in {"rate(1 day)", "rate(24 hours)"} or re.fullmatch(
        r"cron\(\d+ \d+ \* \* \? \*\)", schedules["funnel"]
    )
    assert schedules["sla"] == "rate(5 minutes)"
    assert schedules["rules"] == "rate(1 minute)"  # a publish reaches every lead within about two minutes
    assert set(schedules) == {"rescore", "rules", "sla", "funnel"}
    assert props["Timeout"] == 300


# ---------------------------------------------------------------- logs and alarms


@pytest.mark.parametrize("function", FUNCTIONS)
def test_function_logs_go_to_own_log_group_with_retention_parameter(template, function):
    log_group_id = ref_name(function_properties(template, function)["LoggingConfig"]["LogGroup"])
    log_group = template["Resources"][log_group_id]

    assert log_group["Type"] == "AWS::Logs::LogGroup"
    assert log_group["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionInDays"}
    assert template["Parameters"]["LogRetentionInDays"]["Default"] == 30


def test_log_groups_each_belong_to_one_function(template):
    groups = [ref_name(function_properties(template, f)["LoggingConfig"]["LogGroup"]) for f in FUNCTIONS]

    assert len(set(groups)) == len(FUNCTIONS)


@pytest.mark.parametrize("function", FUNCTIONS)
@pytest.mark.parametrize("metric", ["Errors", "Throttles"])
def test_function_errors_and_throttles_raise_alarm_on_first_occurrence(template, function, metric):
    alarms = alarms_on(template, "AWS/Lambda", metric, {"Ref": function})

    assert len(alarms) == 1
    assert alarms[0]["Threshold"] == 0
    assert alarms[0]["ComparisonOperator"] == "GreaterThanThreshold"


@pytest.mark.parametrize("function", ["EventLogFunction", "HandoffFunction"])
def test_stream_function_iterator_age_has_alarm(template, function):
    assert len(alarms_on(template, "AWS/Lambda", "IteratorAge", {"Ref": function})) == 1


@pytest.mark.parametrize("queue", ["StreamDeadLetterQueue", "HandoffDeadLetterQueue"])
def test_dead_letter_queue_with_any_visible_message_raises_alarm(template, queue):
    alarms = alarms_on(
        template,
        "AWS/SQS",
        "ApproximateNumberOfMessagesVisible",
        {"Fn::GetAtt": [queue, "QueueName"]},
    )

    assert len(alarms) == 1
    assert alarms[0]["Threshold"] == 0
    assert alarms[0]["ComparisonOperator"] == "GreaterThanThreshold"


def test_alarms_with_alarm_email_notify_the_alarm_topic(template):
    topic = template["Resources"]["AlarmTopic"]
    assert topic["Condition"] == "HasAlarmEmail"

    for name, alarm in resources_of_type(template, "AWS::CloudWatch::Alarm").items():
        assert alarm["Properties"]["AlarmActions"] == {
            "Fn::If": ["HasAlarmEmail", [{"Ref": "AlarmTopic"}], {"Ref": "AWS::NoValue"}]
        }, name


# ---------------------------------------------------------------- outputs


def test_outputs_expose_api_url_table_name_and_dead_letter_queue_url(template):
    outputs = template["Outputs"]

    assert "HttpApi" in outputs["ApiUrl"]["Value"]["Fn::Sub"]
    assert outputs["TableName"]["Value"] == {"Ref": "LeadsTable"}
    assert outputs["StreamDeadLetterQueueUrl"]["Value"] == {"Ref": "StreamDeadLetterQueue"}
    assert outputs["HandoffDeadLetterQueueUrl"]["Value"] == {"Ref": "HandoffDeadLetterQueue"}
    assert outputs["HandoffRetryQueueUrl"]["Value"] == {"Ref": "HandoffRetryQueue"}
