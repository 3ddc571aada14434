"""Lambda entries of the handoff.

`handler`: the table's stream, filtered (FilterCriteria) to lead writes that carry
stage moves (`moves`); fans each move out to the sinks.
`retry_handler`: the retry queue (SQS); one delivery per message.
Both answer with partial batch responses: only what failed is retried.
"""

import json
from contextlib import contextmanager

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from leadflow import container
from leadflow.adapters.dynamodb import item_to_lead
from leadflow.observability import logger, metrics, tracer

stream_processor = BatchProcessor(event_type=EventType.DynamoDBStreams, raise_on_entire_batch_failure=False)
queue_processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


def stream_record_handler(record: DynamoDBRecord) -> dict:
    image = record.dynamodb.new_image
    with reported(record.dynamodb.sequence_number):
        return container.handoff().fan_out(item_to_lead(image), json.loads(image["moves"]))


def queue_record_handler(record: SQSRecord) -> str:
    with reported(record.message_id):
        return container.handoff().on_retry(json.loads(record.body))


@contextmanager
def reported(item: str | None):
    """A failed record is retried by Lambda; say why in the log (the batch processor does not)."""
    try:
        yield
    except Exception:
        logger.exception("handoff.record_failed", extra={"item": item})
        raise


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
def handler(event, context):
    return process_partial_response(event=event, record_handler=stream_record_handler,
                                    processor=stream_processor, context=context)


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
def retry_handler(event, context):
    return process_partial_response(event=event, record_handler=queue_record_handler,
                                    processor=queue_processor, context=context)
