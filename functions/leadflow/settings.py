"""Configuration, typed and read once per cold start."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

from leadflow.domain.rules import Rules, parse_rules

MAX_BODY_BYTES = 256 * 1024
WEBHOOK_SOURCES = ("hubspot", "mautic", "typeform", "calendly", "sendgrid", "slack", "generic")


def resolve_secret(value: str | None) -> str | None:
    """A literal, or `ssm:<name>` / `secretsmanager:<id>` resolved (and cached) at cold start."""
    if not value:
        return None
    if value.startswith("ssm:"):
        from aws_lambda_powertools.utilities import parameters

        return parameters.get_parameter(value[4:], decrypt=True, max_age=300)
    if value.startswith("secretsmanager:"):
        from aws_lambda_powertools.utilities import parameters

        return parameters.get_secret(value[len("secretsmanager:"):], max_age=300)
    return value


def _float(env: dict, name: str, default: float) -> float:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {raw!r}") from None


@dataclass(frozen=True)
class Sinks:
    """Where stage moves go. A sink is on when its URL, token or address is set."""

    slack_webhook_url: str | None = None
    slack_escalation_webhook_url: str | None = None
    ses_from: str | None = None
    sales_email: str | None = None  # the alert email's recipient when a lead has no owner
    crm_webhook_url: str | None = None
    crm_webhook_secret: str | None = None
    hubspot_token: str | None = None
    hubspot_base_url: str = "https://api.hubapi.com"
    salesforce_instance_url: str | None = None
    salesforce_client_id: str | None = None
    salesforce_client_secret: str | None = None
    salesforce_external_id_field: str = "Leadflow_Id__c"
    salesforce_api_version: str = "v60.0"
    event_bus: str | None = None
    timeout_s: float = 5.0
    retry_queue_url: str | None = None
    dead_letter_queue_url: str | None = None
    retry_base_s: float = 1.0
    max_attempts: int = 10


@dataclass(frozen=True)
class Settings:
    table_name: str
    rules_path: str | None
    api_key: str | None
    webhook_secrets: dict[str, str]
    public_url: str | None = None  # the API's public base URL, when a proxy or custom domain fronts it

    @classmethod
    def from_env(cls) -> "Settings":
        env = os.environ
        secrets = {}
        for source in WEBHOOK_SOURCES:
            value = resolve_secret(env.get(f"LEADFLOW_WEBHOOK_SECRET_{source.upper()}"))
            if value:
                secrets[source] = value
        return cls(
            table_name=env.get("LEADFLOW_TABLE", "leadflow"),
            rules_path=env.get("LEADFLOW_RULES") or None,
            api_key=resolve_secret(env.get("LEADFLOW_API_KEY")),
            webhook_secrets=secrets,
            public_url=env.get("LEADFLOW_PUBLIC_URL") or None,
        )


def sinks_from_env(env) -> Sinks:
    def opt(name: str) -> str | None:
        return env.get(name) or None

    return Sinks(
        slack_webhook_url=resolve_secret(opt("LEADFLOW_SLACK_WEBHOOK_URL")),
        slack_escalation_webhook_url=resolve_secret(opt("LEADFLOW_SLACK_ESCALATION_WEBHOOK_URL")),
        ses_from=opt("LEADFLOW_SES_FROM"),
        sales_email=opt("LEADFLOW_SALES_EMAIL"),
        crm_webhook_url=resolve_secret(opt("LEADFLOW_CRM_WEBHOOK_URL")),
        crm_webhook_secret=resolve_secret(opt("LEADFLOW_CRM_WEBHOOK_SECRET")),
        hubspot_token=resolve_secret(opt("LEADFLOW_HUBSPOT_TOKEN")),
        hubspot_base_url=opt("LEADFLOW_HUBSPOT_BASE_URL") or "https://api.hubapi.com",
        salesforce_instance_url=opt("LEADFLOW_SALESFORCE_INSTANCE_URL"),
        salesforce_client_id=resolve_secret(opt("LEADFLOW_SALESFORCE_CLIENT_ID")),
        salesforce_client_secret=resolve_secret(opt("LEADFLOW_SALESFORCE_CLIENT_SECRET")),
        salesforce_external_id_field=opt("LEADFLOW_SALESFORCE_EXTERNAL_ID_FIELD") or "Leadflow_Id__c",
        salesforce_api_version=opt("LEADFLOW_SALESFORCE_API_VERSION") or "v60.0",
        event_bus=opt("LEADFLOW_EVENT_BUS"),
        timeout_s=_float(env, "LEADFLOW_SINK_TIMEOUT", 5.0),
        retry_queue_url=opt("LEADFLOW_RETRY_QUEUE_URL"),
        dead_letter_queue_url=opt("LEADFLOW_DLQ_URL"),
        retry_base_s=_float(env, "LEADFLOW_RETRY_BASE_SECONDS", 1.0),
        max_attempts=int(_float(env, "LEADFLOW_RETRY_MAX_ATTEMPTS", 10)),
    )


@lru_cache(maxsize=1)
def settings() -> Settings:
    return Settings.from_env()


@lru_cache(maxsize=1)
def sink_settings() -> Sinks:
    """Read (and secrets resolved) only by the functions that deliver: the API
    function's cold start does not pay for the sinks' secrets."""
    return sinks_from_env(os.environ)


def load_rules(path: str | None) -> Rules:
    import yaml

    if path:
        source = Path(path)
        try:
            text = source.read_text(encoding="utf-8")
        except OSError as exc:
            from leadflow.domain.errors import RulesError

            raise RulesError(f"cannot read rules file {path}: {exc.strerror}") from None
        name = str(source)
    else:
        text = resources.files("leadflow").joinpath("rules/default.yaml").read_text(encoding="utf-8")
        name = "default rules"
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        from leadflow.domain.errors import RulesError

        raise RulesError(f"{name} is not valid YAML: {exc}") from None
    return parse_rules(data, source=name)


@lru_cache(maxsize=1)
def rules() -> Rules:
    return load_rules(settings().rules_path)
