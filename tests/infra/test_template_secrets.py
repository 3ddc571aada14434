"""Secure by default: a deployed API is never open, and lead ids are keyed with a secret
no one outside the stack holds. When the operator names no SSM parameter for them, the
template creates both keys in Secrets Manager, lets only the functions that use each read
it, and says in its Outputs where the API key is and how to print it."""

from __future__ import annotations

import re

import boto3
import pytest
from moto import mock_aws

from leadflow_infra.template import load_template
from tests.infra.test_template import FUNCTIONS, TEMPLATE_PATH, function_properties

# variable -> (its parameter, the secret the stack creates, the condition creating it,
#              the functions that read it)
GENERATED = {
    "LEADFLOW_API_KEY": ("ApiKeyParameter", "ApiKeySecret", "CreateApiKey", {"ApiFunction"}),
    "LEADFLOW_LEAD_ID_KEY": ("LeadIdKeyParameter", "LeadIdKeySecret", "CreateLeadIdKey", {"ApiFunction", "JobsFunction"}),
}


@pytest.fixture(scope="module")
def template() -> dict:
    return load_template(TEMPLATE_PATH)


def secret_policies(template: dict, function: str) -> list[tuple[str, dict]]:
    """(condition, policy) of each Secrets Manager grant of a function (None: unconditional)."""
    found = []
    for policy in function_properties(template, function)["Policies"]:
        condition = None
        if isinstance(policy, dict) and "Fn::If" in policy:
            condition, policy, otherwise = policy["Fn::If"]
            assert otherwise == {"Ref": "AWS::NoValue"}
        if isinstance(policy, str):
            assert "SecretsManager" not in policy, f"{function}: a managed policy reading every secret: {policy}"
            continue
        for name, body in policy.items():
            if "SecretsManager" in name or "secretsmanager" in str(body):
                found.append((condition, {name: body}))
    return found


@pytest.mark.parametrize("variable", GENERATED)
def test_an_empty_parameter_creates_the_secret_and_passes_it_as_a_secretsmanager_reference(template, variable):
    parameter, secret, creates, _ = GENERATED[variable]

    value = template["Globals"]["Function"]["Environment"]["Variables"][variable]

    condition, when_set, when_unset = value["Fn::If"]
    assert template["Conditions"][condition] == {"Fn::Not": [{"Fn::Equals": [{"Ref": parameter}, ""]}]}
    assert when_set == {"Fn::Sub": f"ssm:${{{parameter}}}"}
    assert when_unset == {"Fn::Sub": f"secretsmanager:${{{secret}}}"}  # Ref of a secret is its ARN
    assert template["Parameters"][parameter]["Default"] == ""
    assert template["Conditions"][creates] == {"Fn::Equals": [{"Ref": parameter}, ""]}
    assert template["Resources"][secret]["Type"] == "AWS::SecretsManager::Secret"
    assert template["Resources"][secret]["Condition"] == creates


@pytest.mark.parametrize("variable", GENERATED)
def test_a_generated_key_is_long_and_goes_into_a_bearer_header_as_it_is(template, variable):
    _, secret, _, _ = GENERATED[variable]

    generated = template["Resources"][secret]["Properties"]["GenerateSecretString"]

    assert generated["PasswordLength"] >= 32  # the lead-id key's minimum (domain.lead.MIN_LEAD_ID_KEY)
    assert generated["ExcludePunctuation"] is True  # letters and digits: nothing a header or a shell mangles
    assert generated["IncludeSpace"] is False
    assert "SecretStringTemplate" not in generated  # the value is the key itself, not JSON around it


def test_the_lead_id_key_outlives_the_stack(template):
    secret = template["Resources"]["LeadIdKeySecret"]

    # Every lead is stored under an id derived with it: losing it loses every lead.
    assert secret["DeletionPolicy"] == "Retain"
    assert secret["UpdateReplacePolicy"] == "Retain"


@pytest.mark.parametrize("function", FUNCTIONS)
def test_only_the_functions_that_use_a_generated_key_may_read_it_and_nothing_else(template, function):
    grants = secret_policies(template, function)

    readable = set()
    for condition, policy in grants:
        assert list(policy) == ["AWSSecretsManagerGetSecretValuePolicy"], policy  # GetSecretValue only
        secret = policy["AWSSecretsManagerGetSecretValuePolicy"]["SecretArn"]["Ref"]  # one secret, never "*"
        variable = next(v for v, (_, s, _, _) in GENERATED.items() if s == secret)
        assert condition == GENERATED[variable][2]  # granted only when the stack created it
        readable.add(variable)
    assert readable == {v for v, (*_, readers) in GENERATED.items() if function in readers}


def test_the_outputs_say_where_the_api_key_is_and_how_to_print_it(template):
    outputs = template["Outputs"]

    assert outputs["ApiKeySecretArn"]["Condition"] == "CreateApiKey"
    assert outputs["ApiKeySecretArn"]["Value"] == {"Ref": "ApiKeySecret"}
    created, given = outputs["ApiKeyCommand"]["Value"]["Fn::If"][1:]
    assert outputs["ApiKeyCommand"]["Value"]["Fn::If"][0] == "CreateApiKey"
    assert created["Fn::Sub"] == ("aws secretsmanager get-secret-value --secret-id ${ApiKeySecret} "
                                  "--region ${AWS::Region} --query SecretString --output text")
    assert given["Fn::Sub"] == ("aws ssm get-parameter --with-decryption --name ${ApiKeyParameter} "
                                "--region ${AWS::Region} --query Parameter.Value --output text")
    assert outputs["LeadIdKeySecretArn"] == {**outputs["LeadIdKeySecretArn"], "Condition": "CreateLeadIdKey",
                                             "Value": {"Ref": "LeadIdKeySecret"}}


def test_the_api_key_parameter_no_longer_says_empty_leaves_the_api_open(template):
    description = template["Parameters"]["ApiKeyParameter"]["Description"]

    assert "open" not in description.replace("never open", "")
    assert "Secrets Manager" in description


@mock_aws
def test_the_reference_the_template_passes_resolves_to_the_generated_value(monkeypatch):
    """What the functions do with `secretsmanager:<arn>`: read the secret's string (the
    settings' resolver), as the created secret holds it."""
    from leadflow import settings as settings_module

    client = boto3.client("secretsmanager", region_name="us-east-1")
    value = client.get_random_password(PasswordLength=48, ExcludePunctuation=True, IncludeSpace=False)["RandomPassword"]
    arn = client.create_secret(Name="leadflow-api-key", SecretString=value)["ARN"]
    settings_module.reset()
    try:
        resolved = settings_module.Settings.from_env({"LEADFLOW_API_KEY": f"secretsmanager:{arn}"}).api_key
    finally:
        settings_module.reset()

    assert resolved == value
    assert re.fullmatch(r"[A-Za-z0-9]{48}", resolved)
