"""Wiring: services built once per cold start, lazily, so tests can swap their parts.

Each function imports only what its own path needs: the event log writer never builds
the rules or the lead engine, and nothing here imports a use case before it is asked for.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

from leadflow.settings import Settings, rules, settings
from leadflow.settings import reset as reset_settings

if TYPE_CHECKING:
    from leadflow.adapters.dynamodb.store import DynamoLeadStore
    from leadflow.usecases.leads import LeadService


@lru_cache(maxsize=1)
def store() -> DynamoLeadStore:
    from leadflow.adapters.dynamodb.store import DynamoLeadStore

    return DynamoLeadStore(settings().table_name)


@lru_cache(maxsize=1)
def service() -> LeadService:
    from leadflow.usecases.leads import LeadService

    return LeadService(store(), rules())


@lru_cache(maxsize=1)
def importer():
    from leadflow.usecases.imports import Importer

    return Importer(service())


def build_sinks(cfg: Settings, reject_reasons: list[str]) -> list:
    """The sinks the configuration turns on, in delivery order: people first (Slack is
    the speed-to-lead path), then the CRMs and EventBridge."""
    sinks: list = []
    if cfg.slack_webhook_url:
        from leadflow.adapters.sinks.slack import SlackSink

        sinks.append(SlackSink(cfg.slack_webhook_url, timeout=cfg.sink_timeout_s, reject_reasons=reject_reasons))
    if cfg.ses_from:
        from leadflow.adapters.sinks.ses import EmailSink

        sinks.append(EmailSink(cfg.ses_from, fallback_recipient=cfg.sales_email))
    if cfg.crm_webhook_url:
        from leadflow.adapters.sinks.crm_webhook import WebhookSink

        if not cfg.crm_webhook_secret:
            raise ValueError("LEADFLOW_CRM_WEBHOOK_URL is set but LEADFLOW_CRM_WEBHOOK_SECRET is not: the push must be signed")
        sinks.append(WebhookSink(cfg.crm_webhook_url, cfg.crm_webhook_secret, timeout=cfg.sink_timeout_s))
    if cfg.hubspot_token:
        from leadflow.adapters.sinks.hubspot import HubSpotSink

        sinks.append(HubSpotSink(cfg.hubspot_token, base_url=cfg.hubspot_base_url, timeout=cfg.sink_timeout_s))
    if cfg.salesforce_instance_url:
        from leadflow.adapters.sinks.salesforce import SalesforceSink

        if not (cfg.salesforce_client_id and cfg.salesforce_client_secret):
            raise ValueError("LEADFLOW_SALESFORCE_INSTANCE_URL needs LEADFLOW_SALESFORCE_CLIENT_ID and _CLIENT_SECRET")
        sinks.append(SalesforceSink(cfg.salesforce_instance_url, cfg.salesforce_client_id, cfg.salesforce_client_secret,
                                    external_id_field=cfg.salesforce_external_id_field,
                                    api_version=cfg.salesforce_api_version, timeout=cfg.sink_timeout_s))
    if cfg.event_bus:
        from leadflow.adapters.sinks.eventbridge import EventBridgeSink

        sinks.append(EventBridgeSink(cfg.event_bus))
    return sinks


@lru_cache(maxsize=1)
def handoff():
    from leadflow.adapters.dynamodb.ledger import DynamoDeliveryLedger
    from leadflow.adapters.sqs import SqsOutbox
    from leadflow.usecases.handoff import Handoff, RetryPolicy

    cfg = settings()
    the_rules = rules()
    return Handoff(
        build_sinks(cfg, list(the_rules.handoff.reject_reasons)),
        DynamoDeliveryLedger(settings().table_name, client=store().client),
        SqsOutbox(cfg.retry_queue_url, cfg.dead_letter_queue_url),
        the_rules,
        policy=RetryPolicy(max_attempts=cfg.retry_max_attempts, base_seconds=cfg.retry_base_s),
    )


@lru_cache(maxsize=1)
def sla_watch():
    from leadflow.adapters.dynamodb.ledger import DynamoDeliveryLedger
    from leadflow.usecases.sla_watch import SlaWatch

    cfg = settings()
    escalator = None
    if cfg.slack_webhook_url:
        from leadflow.adapters.sinks.slack import SlackEscalator

        escalator = SlackEscalator(cfg.slack_webhook_url, cfg.slack_escalation_webhook_url, timeout=cfg.sink_timeout_s)
    leads = store()
    return SlaWatch(leads, DynamoDeliveryLedger(settings().table_name, client=leads.client), escalator, rules())


@lru_cache(maxsize=1)
def sales_actions():
    from leadflow.adapters.sinks.slack import SlackReplies
    from leadflow.usecases.sales_actions import SalesActions

    return SalesActions(service(), SlackReplies())


def reset() -> None:
    """Forget everything cached: settings, rules, clients (tests and the local stack)."""
    store.cache_clear()
    service.cache_clear()
    handoff.cache_clear()
    sla_watch.cache_clear()
    sales_actions.cache_clear()
    importer.cache_clear()
    reset_settings()
