"""Wiring: services built once per cold start, lazily, so tests can swap their parts.

Each function imports only what its own path needs: the event log writer never builds
the rules or the lead engine, and nothing here imports a use case before it is asked for.
The services that hold rules are rebuilt when the version in force changes (a publish
or a rollback, seen within `LEADFLOW_RULES_TTL_SECONDS`).
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any, Callable

from leadflow.settings import Settings, settings
from leadflow.settings import reset as reset_settings
from leadflow.settings import rules as file_rules

if TYPE_CHECKING:
    from leadflow.adapters.dynamodb.store import DynamoLeadStore
    from leadflow.domain.lead import LeadIds
    from leadflow.domain.rules import Rules
    from leadflow.usecases.leads import LeadService
    from leadflow.usecases.rules_versions import RulesInForce

_built: dict[str, tuple[Any, Any]] = {}


def _for_rules(name: str, build: Callable[[Rules], Any]) -> Any:
    """One instance per rules version in force: rebuilt when the version changes."""
    current = rules()
    held = _built.get(name)
    if held is None or held[0] is not current:
        held = (current, build(current))
        _built[name] = held
    return held[1]


@lru_cache(maxsize=1)
def store() -> DynamoLeadStore:
    from leadflow.adapters.dynamodb.store import DynamoLeadStore

    return DynamoLeadStore(settings().table_name)


@lru_cache(maxsize=1)
def rules_store():
    from leadflow.adapters.dynamodb.rules_store import DynamoRulesStore

    return DynamoRulesStore(settings().table_name, client=store().client)


@lru_cache(maxsize=1)
def rules_in_force() -> RulesInForce:
    from leadflow.observability import logger
    from leadflow.settings import parse_rules_text
    from leadflow.usecases.rules_versions import RulesInForce

    return RulesInForce(rules_store(), file_rules, parse_rules_text, ttl=settings().rules_ttl_s,
                        log=lambda event, extra: logger.error(event, extra=extra))


def rules() -> Rules:
    """The rules version in force (published, else the deployed file)."""
    return rules_in_force().rules()


@lru_cache(maxsize=1)
def publisher():
    from leadflow.settings import rules_text
    from leadflow.usecases.leads import utcnow
    from leadflow.usecases.rules_versions import Publisher

    return Publisher(rules_store(), rules_in_force(), lambda: rules_text(settings().rules_path)[0], utcnow)


@lru_cache(maxsize=1)
def lead_ids() -> LeadIds:
    """The deployment's lead-id derivation, decided once per container: the key
    (LEADFLOW_LEAD_ID_KEY, resolved once) against what the table records (usecases.lead_ids:
    one consistent read per cold start). A refusal is not cached: the next call decides again."""
    from leadflow.adapters.dynamodb.lead_ids import DynamoLeadIdScheme
    from leadflow.observability import logger
    from leadflow.usecases.lead_ids import lead_ids_in_force

    cfg = settings()
    return lead_ids_in_force(cfg.lead_id_key, DynamoLeadIdScheme(cfg.table_name, store().client),
                             lambda message: logger.warning("lead_ids.legacy", extra={"detail": message}))


@lru_cache(maxsize=1)
def funnel():
    """The funnel's keeper: it needs no rules (a lead's figures are read off the lead)."""
    from leadflow.adapters.dynamodb.funnel_store import DynamoFunnelStore
    from leadflow.usecases.funnel import FunnelKeeper

    return FunnelKeeper(DynamoFunnelStore(settings().table_name, client=store().client))


def service() -> LeadService:
    from leadflow.usecases.leads import LeadService

    ids = lead_ids()  # before the rules: a table this key cannot read is refused first
    return _for_rules("service", lambda r: LeadService(store(), r, ids=ids))


def lister():
    from leadflow.usecases.lead_list import LeadLister

    return _for_rules("lister", lambda r: LeadLister(service()))


def importer():
    from leadflow.usecases.imports import Importer

    return _for_rules("importer", lambda r: Importer(service()))


def rescoring():
    from leadflow.usecases.rescoring import Rescoring

    return Rescoring(service(), rules_store())


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


def handoff():
    return _for_rules("handoff", _handoff)


def _handoff(the_rules: Rules):
    from leadflow.adapters.dynamodb.ledger import DynamoDeliveryLedger
    from leadflow.adapters.sqs import SqsOutbox
    from leadflow.usecases.handoff import Handoff, RetryPolicy

    cfg = settings()
    return Handoff(
        build_sinks(cfg, list(the_rules.handoff.reject_reasons)),
        DynamoDeliveryLedger(settings().table_name, client=store().client),
        SqsOutbox(cfg.retry_queue_url, cfg.dead_letter_queue_url),
        the_rules,
        leads=store(),
        policy=RetryPolicy(max_attempts=cfg.retry_max_attempts, base_seconds=cfg.retry_base_s,
                           attempt_seconds=cfg.sink_timeout_s),
    )


@lru_cache(maxsize=1)
def dead_letters():
    """The handoff's dead letters, listed and replayed (the console's dead-letters page)."""
    from leadflow.adapters.dynamodb.ledger import DynamoDeliveryLedger
    from leadflow.adapters.sqs import SqsDeadLetterQueue
    from leadflow.usecases.dead_letters import DeadLetters

    cfg = settings()
    leads = store()
    return DeadLetters(SqsDeadLetterQueue(cfg.dead_letter_queue_url, cfg.retry_queue_url),
                       DynamoDeliveryLedger(cfg.table_name, client=leads.client), leads)


def sla_watch():
    return _for_rules("sla_watch", _sla_watch)


def _sla_watch(the_rules: Rules):
    from leadflow.adapters.dynamodb.ledger import DynamoDeliveryLedger
    from leadflow.usecases.sla_watch import SlaWatch

    cfg = settings()
    escalator = None
    if cfg.slack_webhook_url:
        from leadflow.adapters.sinks.slack import SlackEscalator

        escalator = SlackEscalator(cfg.slack_webhook_url, cfg.slack_escalation_webhook_url, timeout=cfg.sink_timeout_s)
    leads = store()
    return SlaWatch(leads, DynamoDeliveryLedger(settings().table_name, client=leads.client), escalator, the_rules)


def sales_actions():
    from leadflow.adapters.sinks.slack import SlackReplies
    from leadflow.usecases.sales_actions import SalesActions

    return _for_rules("sales_actions", lambda r: SalesActions(service(), SlackReplies()))


def announcer():
    """Where a publish's one summary goes (Slack's alerts channel), or None."""
    cfg = settings()
    if not cfg.slack_webhook_url:
        return None
    from leadflow.adapters.sinks.slack import SlackAnnouncer

    return SlackAnnouncer(cfg.slack_webhook_url, timeout=cfg.sink_timeout_s)


def reset() -> None:
    """Forget everything cached: settings, rules, clients (tests and the local stack)."""
    store.cache_clear()
    rules_store.cache_clear()
    rules_in_force.cache_clear()
    publisher.cache_clear()
    dead_letters.cache_clear()
    _built.clear()
    lead_ids.cache_clear()
    funnel.cache_clear()
    reset_settings()
