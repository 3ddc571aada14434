"""HandoffRetryFunction: the retry queue (SQS); one delivery (one move, one sink) per
message. Partial batch response: only what failed comes back. Each attempt's deadline
is bounded by what is left of the invocation."""

import json

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from leadflow import container
from leadflow.observability import logged_failure, logger, metrics, tracer

processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


def time_left(context):
    """Seconds the invocation has left, as a callable; None outside Lambda."""
    if context is None or not hasattr(context, "get_remaining_time_in_millis"):
        return None
    return lambda: context.get_remaining_time_in_millis() / 1000


def record_handler(record: SQSRecord, lambda_context=None) -> str:
    with logged_failure("handoff.record_failed", record.message_id):
        return container.handoff().on_retry(json.loads(record.body), time_left=time_left(lambda_context))


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
def handler(event, context):
    return process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
