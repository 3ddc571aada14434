"""JobsFunction: scheduled jobs (`{"job": "rescore"}` hourly, `{"job": "sla"}` every
5 minutes, `{"job": "funnel"}` daily)."""

from leadflow import container
from leadflow.observability import logger, metrics, tracer

JOBS = {
    "rescore": lambda: container.service().rescore_all(),
    "sla": lambda: container.sla_watch().sweep(),
    "funnel": lambda: container.service().funnel(),
}


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
def handler(event, context):
    name = (event or {}).get("job")
    if name not in JOBS:
        raise ValueError(f"unknown job {name!r}; expected one of {', '.join(JOBS)}")
    result = JOBS[name]()
    logger.info("job.done", extra={"job": name, "result": result})
    return {"job": name, "result": result}
