"""EventLogFunction: the table's stream (lead writes that applied events, and erasures,
by FilterCriteria) appended to each lead's event log."""

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord

from leadflow import container
from leadflow.adapters.dynamodb.store import lead_change
from leadflow.observability import logger, metrics, tracer
from leadflow.usecases import event_log

processor = BatchProcessor(event_type=EventType.DynamoDBStreams, raise_on_entire_batch_failure=False)


def record_handler(record: DynamoDBRecord) -> str:
    change = record.dynamodb
    name = record.event_name.name if record.event_name else ""
    return event_log.record(container.store(), lead_change(name, change.keys or {}, change.new_image))


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
def handler(event, context):
    return process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
