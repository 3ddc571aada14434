"""Wiring: services built once per cold start, lazily, so tests can swap their parts."""

from __future__ import annotations

from functools import lru_cache

from leadflow.adapters.dynamodb import DynamoLeadStore
from leadflow.service import LeadService
from leadflow.settings import rules, settings, sink_settings


@lru_cache(maxsize=1)
def service() -> LeadService:
    return LeadService(DynamoLeadStore(settings().table_name), rules())


def build_sinks(cfg, reject_reasons: list[str]) -> list:
    """The sinks the configuration turns on, in delivery order: people first (Slack is
    the speed-to-lead path), then the CRMs and EventBridge."""
    sinks: list = []
    if cfg.slack_webhook_url:
        from leadflow.sinks.slack import SlackSink

        sinks.append(SlackSink(cfg.slack_webhook_url, timeout=cfg.timeout_s, reject_reasons=reject_reasons))
    if cfg.ses_from:
        from leadflow.sinks.email import EmailSink

        sinks.append(EmailSink(cfg.ses_from, fallback_recipient=cfg.sales_email))
    if cfg.crm_webhook_url:
        from leadflow.sinks.webhook import WebhookSink

        if not cfg.crm_webhook_secret:
            raise ValueError("LEADFLOW_CRM_WEBHOOK_URL is set but LEADFLOW_CRM_WEBHOOK_SECRET is not: the push must be signed")
        sinks.append(WebhookSink(cfg.crm_webhook_url, cfg.crm_webhook_secret, timeout=cfg.timeout_s))
    if cfg.hubspot_token:
        from leadflow.sinks.hubspot import HubSpotSink

        sinks.append(HubSpotSink(cfg.hubspot_token, base_url=cfg.hubspot_base_url, timeout=cfg.timeout_s))
    if cfg.salesforce_instance_url:
        from leadflow.sinks.salesforce import SalesforceSink

        if not (cfg.salesforce_client_id and cfg.salesforce_client_secret):
            raise ValueError("LEADFLOW_SALESFORCE_INSTANCE_URL needs LEADFLOW_SALESFORCE_CLIENT_ID and _CLIENT_SECRET")
        sinks.append(SalesforceSink(cfg.salesforce_instance_url, cfg.salesforce_client_id, cfg.salesforce_client_secret,
                                    external_id_field=cfg.salesforce_external_id_field,
                                    api_version=cfg.salesforce_api_version, timeout=cfg.timeout_s))
    if cfg.event_bus:
        from leadflow.sinks.eventbridge import EventBridgeSink

        sinks.append(EventBridgeSink(cfg.event_bus))
    return sinks


@lru_cache(maxsize=1)
def handoff():
    from leadflow.adapters.ledger import DynamoDeliveryLedger
    from leadflow.adapters.sqs import SqsOutbox
    from leadflow.handoff import Handoff, RetryPolicy

    cfg = sink_settings()
    the_rules = rules()
    escalate = _slack_escalation(cfg) if cfg.slack_webhook_url else None
    return Handoff(
        build_sinks(cfg, list(the_rules.handoff.reject_reasons)),
        DynamoDeliveryLedger(settings().table_name, client=service().store.client),
        SqsOutbox(cfg.retry_queue_url, cfg.dead_letter_queue_url),
        the_rules,
        store=service().store,
        policy=RetryPolicy(max_attempts=cfg.max_attempts, base_seconds=cfg.retry_base_s),
        escalate=escalate,
    )


def _slack_escalation(cfg):
    """SLA escalations: to the owner in the alerts channel, to the manager in the
    escalation channel (the alerts channel when there is none)."""
    from leadflow.sinks import slack
    from leadflow.sinks.slack_blocks import escalation_message

    def escalate(notify, notice, level, mention, waited_minutes):
        url = cfg.slack_escalation_webhook_url if notify == "manager" and cfg.slack_escalation_webhook_url else cfg.slack_webhook_url
        slack.post(url, escalation_message(notice, level=level, mention=mention, overdue_minutes=waited_minutes),
                   timeout=cfg.timeout_s)

    return escalate


def reset() -> None:
    """Forget everything cached: settings, rules, clients (tests and the local stack)."""
    service.cache_clear()
    handoff.cache_clear()
    settings.cache_clear()
    sink_settings.cache_clear()
    rules.cache_clear()
