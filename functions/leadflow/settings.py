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


@dataclass(frozen=True)
class Settings:
    table_name: str
    rules_path: str | None
    api_key: str | None
    webhook_secrets: dict[str, str]

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
        )


@lru_cache(maxsize=1)
def settings() -> Settings:
    return Settings.from_env()


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
