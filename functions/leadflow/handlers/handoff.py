"""HandoffFunction: the table's stream, filtered (FilterCriteria) to lead writes that
made stage moves (the item's `moves`), and to the removal of a known lead (an
erasure). Fans each move out to the sinks once; asks the CRMs to delete an erased
person's contact once. Each attempt's deadline is bounded by what is left of the
invocation."""

import json

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord

from leadflow import container
from leadflow.adapters.dynamodb.store import item_to_lead
from leadflow.domain.handoff import erasure_id
from leadflow.observability import logged_failure, logger, metrics, tracer

processor = BatchProcessor(event_type=EventType.DynamoDBStreams, raise_on_entire_batch_failure=False)


def time_left(context):
    """Seconds the invocation has left, as a callable; None outside Lambda."""
    if context is None or not hasattr(context, "get_remaining_time_in_millis"):
        return None
    return lambda: context.get_remaining_time_in_millis() / 1000


def record_handler(record: DynamoDBRecord, lambda_context=None) -> dict:
    with logged_failure("handoff.record_failed", record.dynamodb.sequence_number):
        if record.event_name is not None and record.event_name.name == "REMOVE":
            old = record.dynamodb.old_image or {}
            # The removed image's address is handed to the first attempt, and kept nowhere.
            return container.handoff().erase(str(old["lead_id"]), erasure_id(int(old["version"]), str(old["updated_at"])),
                                             email=old.get("email"), time_left=time_left(lambda_context))
        image = record.dynamodb.new_image
        return container.handoff().fan_out(item_to_lead(image), json.loads(image["moves"]),
                                           time_left=time_left(lambda_context))


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
def handler(event, context):
    return process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
