"""JobsFunction: scheduled jobs (`{"job": "rescore"}` hourly, `{"job": "rules"}` every
minute, `{"job": "sla"}` every 5 minutes, `{"job": "funnel"}` daily).

`rescore` and `rules` re-score leads in runs that stop before the invocation's deadline
and resume at the next one (see usecases/rescoring.py)."""

from leadflow import container
from leadflow.observability import logger, metrics, tracer


def _remaining(context):
    if context is None or not hasattr(context, "get_remaining_time_in_millis"):
        return lambda: float("inf")
    return lambda: context.get_remaining_time_in_millis() / 1000


def _rescore(context):
    from leadflow.usecases.rescoring import scheduled

    return scheduled(container.rescoring(), container.rules, _remaining(context))


def _rules(context):
    from leadflow.usecases.rescoring import follow_published

    return follow_published(container.rescoring(), container.rules_in_force(), container.rules_store(),
                            container.announcer(), _remaining(context), delay_s=container.settings().rules_ttl_s,
                            log=lambda event, extra: logger.error(event, extra=extra))


JOBS = {
    "rescore": _rescore,
    "rules": _rules,
    "sla": lambda _context: container.sla_watch().sweep(),
    "funnel": lambda _context: container.service().funnel(),
}


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
def handler(event, context):
    name = (event or {}).get("job")
    if name not in JOBS:
        raise ValueError(f"unknown job {name!r}; expected one of {', '.join(JOBS)}")
    result = JOBS[name](context)
    logger.info("job.done", extra={"job": name, "result": result})
    return {"job": name, "result": result}
