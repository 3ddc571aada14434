"""Lambda entry: the table's stream (lead items only, by FilterCriteria)."""

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord

from leadflow import container
from leadflow.observability import logger, metrics, tracer
from leadflow.stream import handle_change

processor = BatchProcessor(event_type=EventType.DynamoDBStreams, raise_on_entire_batch_failure=False)


def record_handler(record: DynamoDBRecord) -> str:
    change = record.dynamodb
    return handle_change(container.service().store, record.event_name.name if record.event_name else "",
                         change.keys or {}, change.new_image)


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
def handler(event, context):
    return process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
