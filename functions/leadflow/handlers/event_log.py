"""EventLogFunction: the table's stream (every lead write and erasure, by FilterCriteria).
It appends the events each write applied to the lead's event log (a batch's appends
written together), counts the funnel from the lead's images, and sweeps erased leads.

One function for both because a DynamoDB stream shard serves two readers at a time
without throttling them, and the handoff is the other."""

from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord, DynamoDBStreamEvent

from leadflow import container
from leadflow.adapters.dynamodb.store import item_to_lead, lead_change
from leadflow.domain.ports import LeadChange
from leadflow.observability import logger, metrics, tracer
from leadflow.usecases import event_log
from leadflow.usecases.funnel import Change


def change_of(record: DynamoDBRecord) -> LeadChange | None:
    change = record.dynamodb
    name = record.event_name.name if record.event_name else ""
    return lead_change(name, change.keys or {}, change.new_image)


def funnel_change(record: DynamoDBRecord, lead: LeadChange | None) -> Change | None:
    """The lead's images before and after the write, for the funnel (None: not a lead)."""
    if lead is None:
        return None
    old, new = record.dynamodb.old_image, record.dynamodb.new_image
    return Change(lead_id=lead.lead_id, old=item_to_lead(old) if old else None,
                  new=item_to_lead(new) if new and not lead.removed else None)


def record_handler(record: DynamoDBRecord) -> str:
    """One record on its own: what the batch does for each of its records."""
    change = change_of(record)
    outcome = event_log.record(container.store(), change)
    counted = funnel_change(record, change)
    if counted is not None:
        container.funnel().record([counted])
    return outcome


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
def handler(event, context):
    """Partial batch response: the first record not recorded, from which the stream
    redelivers (the template turns on ReportBatchItemFailures). Both halves are
    idempotent: a redelivered record appends nothing twice and counts nothing twice."""
    changes: list[tuple[str, LeadChange | None]] = []
    counts: list[Change] = []
    failed: str | None = None
    for record in DynamoDBStreamEvent(event).records:
        sequence_number = record.dynamodb.sequence_number
        try:
            change = change_of(record)
            counted = funnel_change(record, change)
        except Exception:
            logger.exception("event_log.unreadable_record", extra={"sequence_number": sequence_number})
            failed = sequence_number  # recorded up to here; the stream brings it back
            break
        changes.append((sequence_number, change))
        if counted is not None:
            counts.append(counted)
    failed = event_log.record_batch(container.store(), changes) or failed
    funnel = container.funnel().record(counts)
    if funnel.written:
        metrics.add_metric(name="FunnelLeadsCounted", unit="Count", value=funnel.written)
    if funnel.failed:
        logger.warning("funnel.unsettled", extra={"leads": len(funnel.failed)})
    return {"batchItemFailures": [{"itemIdentifier": failed}] if failed else []}
