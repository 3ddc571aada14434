"""EventLogFunction: the table's stream (lead writes that applied events, and erasures,
by FilterCriteria) appended to each lead's event log, a batch's appends written together."""

from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord, DynamoDBStreamEvent

from leadflow import container
from leadflow.adapters.dynamodb.store import lead_change
from leadflow.domain.ports import LeadChange
from leadflow.observability import logger, metrics, tracer
from leadflow.usecases import event_log


def change_of(record: DynamoDBRecord) -> LeadChange | None:
    change = record.dynamodb
    name = record.event_name.name if record.event_name else ""
    return lead_change(name, change.keys or {}, change.new_image)


def record_handler(record: DynamoDBRecord) -> str:
    """One record on its own: what the batch does for each of its records."""
    return event_log.record(container.store(), change_of(record))


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
def handler(event, context):
    """Partial batch response: the first record not recorded, from which the stream
    redelivers (the template turns on ReportBatchItemFailures)."""
    changes: list[tuple[str, LeadChange | None]] = []
    failed: str | None = None
    for record in DynamoDBStreamEvent(event).records:
        sequence_number = record.dynamodb.sequence_number
        try:
            changes.append((sequence_number, change_of(record)))
        except Exception:
            logger.exception("event_log.unreadable_record", extra={"sequence_number": sequence_number})
            failed = sequence_number  # recorded up to here; the stream brings it back
            break
    failed = event_log.record_batch(container.store(), changes) or failed
    return {"batchItemFailures": [{"itemIdentifier": failed}] if failed else []}
