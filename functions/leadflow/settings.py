"""Configuration: one typed model, read from the environment once per cold start.

Every field names the environment variable it is read from (its alias); a test derives
the list from this model and checks that `template.yaml` declares each one. A bad
value (a timeout that is not a number, 0 attempts) fails the cold start with the
variable's name, not a request later.

Secrets arrive as a literal or as `ssm:<name>` / `secretsmanager:<id>`, and are
resolved only when first used: the API function never pays for the sinks' secrets.
"""

from __future__ import annotations

import os
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

if TYPE_CHECKING:  # the rules' models are built when the rules are first read, not on import
    from leadflow.domain.rules import Rules

MAX_BODY_BYTES = 256 * 1024
WEBHOOK_SOURCES = ("hubspot", "mautic", "typeform", "calendly", "sendgrid", "slack", "generic")


def resolve_secret(value: str | None) -> str | None:
    """A literal as is, or `ssm:<name>` / `secretsmanager:<id>` fetched (and cached 5 minutes)."""
    if not value:
        return None
    if value.startswith("ssm:"):
        from aws_lambda_powertools.utilities import parameters

        return parameters.get_parameter(value[4:], decrypt=True, max_age=300)
    if value.startswith("secretsmanager:"):
        from aws_lambda_powertools.utilities import parameters

        return parameters.get_secret(value[len("secretsmanager:"):], max_age=300)
    return value


def running_in_aws(env: dict | None = None) -> bool:
    """In a Lambda execution environment in AWS: Lambda names the function; `sam local`
    says so, and the local stack (`leadflow serve`) names no function."""
    env = os.environ if env is None else env
    if env.get("AWS_SAM_LOCAL", "").strip().lower() in ("1", "true", "yes", "on"):
        return False
    return bool(env.get("AWS_LAMBDA_FUNCTION_NAME"))


class _Secret:
    """`settings.api_key` is `api_key_ref` resolved, on first use (cached per reference)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.ref = f"{name}_ref"

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        return self if obj is None else _resolved(getattr(obj, self.ref))


def _env(name: str, default: Any = None, **constraints: Any) -> Any:
    return Field(default, alias=name, **constraints)


class Settings(BaseModel):
    """Everything the functions read from their environment. Fields ending in `_ref`
    hold secrets as configured; the property of the same name without `_ref` resolves them."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True, ignored_types=(_Secret,))

    # -- the application
    table_name: str = _env("LEADFLOW_TABLE", "leadflow", min_length=3)
    rules_path: str | None = _env("LEADFLOW_RULES")
    # How long a function keeps the rules version in force before looking again.
    rules_ttl_s: float = _env("LEADFLOW_RULES_TTL_SECONDS", 60.0, ge=0, le=3600)
    public_url: str | None = _env("LEADFLOW_PUBLIC_URL")  # the API's public base URL behind a proxy/custom domain
    api_key_ref: str | None = _env("LEADFLOW_API_KEY", repr=False)
    # The per-deployment secret lead ids are derived with (HMAC-SHA256): an id cannot be
    # computed from an address without it. Never logged, never changed on a table in use.
    lead_id_key_ref: str | None = _env("LEADFLOW_LEAD_ID_KEY", repr=False)

    # -- inbound webhooks: the secret that verifies each source
    hubspot_webhook_secret_ref: str | None = _env("LEADFLOW_WEBHOOK_SECRET_HUBSPOT")
    mautic_webhook_secret_ref: str | None = _env("LEADFLOW_WEBHOOK_SECRET_MAUTIC")
    typeform_webhook_secret_ref: str | None = _env("LEADFLOW_WEBHOOK_SECRET_TYPEFORM")
    calendly_webhook_secret_ref: str | None = _env("LEADFLOW_WEBHOOK_SECRET_CALENDLY")
    sendgrid_webhook_secret_ref: str | None = _env("LEADFLOW_WEBHOOK_SECRET_SENDGRID")
    slack_webhook_secret_ref: str | None = _env("LEADFLOW_WEBHOOK_SECRET_SLACK")
    generic_webhook_secret_ref: str | None = _env("LEADFLOW_WEBHOOK_SECRET_GENERIC")

    # -- where stage moves go (a sink is on when its URL, token or address is set)
    slack_webhook_url_ref: str | None = _env("LEADFLOW_SLACK_WEBHOOK_URL")
    slack_escalation_webhook_url_ref: str | None = _env("LEADFLOW_SLACK_ESCALATION_WEBHOOK_URL")
    ses_from: str | None = _env("LEADFLOW_SES_FROM")
    sales_email: str | None = _env("LEADFLOW_SALES_EMAIL")  # the alert email's recipient when a lead has no owner
    crm_webhook_url_ref: str | None = _env("LEADFLOW_CRM_WEBHOOK_URL")
    crm_webhook_secret_ref: str | None = _env("LEADFLOW_CRM_WEBHOOK_SECRET")
    hubspot_token_ref: str | None = _env("LEADFLOW_HUBSPOT_TOKEN")
    hubspot_base_url: str = _env("LEADFLOW_HUBSPOT_BASE_URL", "https://api.hubapi.com")
    salesforce_instance_url: str | None = _env("LEADFLOW_SALESFORCE_INSTANCE_URL")
    salesforce_client_id_ref: str | None = _env("LEADFLOW_SALESFORCE_CLIENT_ID")
    salesforce_client_secret_ref: str | None = _env("LEADFLOW_SALESFORCE_CLIENT_SECRET")
    salesforce_external_id_field: str = _env("LEADFLOW_SALESFORCE_EXTERNAL_ID_FIELD", "Leadflow_Id__c")
    salesforce_api_version: str = _env("LEADFLOW_SALESFORCE_API_VERSION", "v60.0", pattern=r"^v\d+\.\d+$")
    event_bus: str | None = _env("LEADFLOW_EVENT_BUS")

    # -- delivery
    sink_timeout_s: float = _env("LEADFLOW_SINK_TIMEOUT", 5.0, gt=0, le=60)
    retry_queue_url: str | None = _env("LEADFLOW_RETRY_QUEUE_URL")
    dead_letter_queue_url: str | None = _env("LEADFLOW_DLQ_URL")
    retry_base_s: float = _env("LEADFLOW_RETRY_BASE_SECONDS", 1.0, ge=0, le=900)
    retry_max_attempts: int = _env("LEADFLOW_RETRY_MAX_ATTEMPTS", 10, ge=1, le=50)

    @field_validator("*", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any, info) -> Any:
        """The template passes "" for a feature that is off."""
        if isinstance(value, str) and not value.strip():
            return cls.model_fields[info.field_name].default
        return value

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "Settings":
        env = dict(os.environ if env is None else env)
        try:
            return cls.model_validate({k: v for k, v in env.items() if k in VARIABLES})
        except ValidationError as exc:
            problems = "; ".join(f"{e['loc'][0]}: {e['msg']}" for e in exc.errors())  # loc is the variable
            raise ValueError(f"invalid configuration: {problems}") from None

    # -- secrets, resolved on first use
    api_key = _Secret()
    lead_id_key = _Secret()
    slack_webhook_url = _Secret()
    slack_escalation_webhook_url = _Secret()
    crm_webhook_url = _Secret()
    crm_webhook_secret = _Secret()
    hubspot_token = _Secret()
    salesforce_client_id = _Secret()
    salesforce_client_secret = _Secret()

    def webhook_secret(self, source: str) -> str | None:
        """The secret that verifies inbound webhooks from `source` (one of WEBHOOK_SOURCES)."""
        if source not in WEBHOOK_SOURCES:
            raise KeyError(source)
        return _resolved(getattr(self, f"{source}_webhook_secret_ref"))


VARIABLES = frozenset(field.alias for field in Settings.model_fields.values())


@lru_cache(maxsize=32)
def _resolved(ref: str | None) -> str | None:
    return resolve_secret(ref)


@lru_cache(maxsize=1)
def settings() -> Settings:
    return Settings.from_env()


def rules_text(path: str | None) -> tuple[str, str]:
    """(YAML text, name) of a rules file, or of the shipped default when `path` is empty."""
    from leadflow.domain.errors import RulesError

    if not path:
        return resources.files("leadflow").joinpath("rules/default.yaml").read_text(encoding="utf-8"), "default rules"
    try:
        return Path(path).read_text(encoding="utf-8"), str(path)
    except OSError as exc:
        raise RulesError(f"cannot read rules file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise RulesError(f"rules file {path} is not UTF-8 text") from None


def parse_rules_text(text: str, name: str) -> Rules:
    """Rules from YAML text, validated completely; RulesError names every problem (with
    the line of a YAML syntax error)."""
    import yaml

    from leadflow.domain.errors import RulesError
    from leadflow.domain.rules import parse_rules

    # libyaml's parser (in PyYAML's wheels) reads the default rules ten times faster
    # than the pure-Python one: about 100 ms of every cold start that reads rules.
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        data = yaml.load(text, Loader=loader)  # noqa: S506 - a safe loader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        said = " ".join(str(p) for p in (getattr(exc, "context", None), getattr(exc, "problem", None)) if p) or str(exc)
        raise RulesError(f"{name} is not valid YAML: {exc}",
                         details=[{"reason": f"not valid YAML: {said}", "line": mark.line + 1 if mark else None}]) from None
    return parse_rules(data, source=name)


def load_rules(path: str | None) -> Rules:
    return parse_rules_text(*rules_text(path))


@lru_cache(maxsize=1)
def rules() -> Rules:
    """The deployed rules file (the first version; see usecases.rules_versions for the
    version in force)."""
    return load_rules(settings().rules_path)


def reset() -> None:
    """Forget the settings, rules and resolved secrets (tests, and the local stack's restarts)."""
    settings.cache_clear()
    rules.cache_clear()
    _resolved.cache_clear()
