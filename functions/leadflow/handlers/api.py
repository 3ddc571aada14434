"""ApiFunction: the HTTP API (API Gateway HTTP API, payload v2)."""

from aws_lambda_powertools.logging import correlation_paths

from leadflow.routes.app import handle
from leadflow.observability import logger, metrics, tracer


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
def handler(event, context):
    return handle(event, context)
