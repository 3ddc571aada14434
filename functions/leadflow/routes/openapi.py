"""The OpenAPI 3.1 document of the HTTP API (`GET /openapi.json`), built from the routes.

Powertools walks the resolver's routes (paths, path parameters, operation ids); each
operation then gets its request body, query parameters, answers and security from
:data:`OPERATIONS`, whose models are the ones the routes validate with (`CanonicalEvent`,
`PublishRules`, `Feedback`…) and the answers' own models below. The answer models forbid
fields they do not name, and the suite checks every route's real answers against them and
every route against this table, so the document cannot drift from the API. Imported only
when the document is asked for: nothing here is on the cold-start path of an event.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from leadflow.domain.events import CanonicalEvent
from leadflow.domain.lead import Move, Review, SalesOutcome, Touch
from leadflow.domain.lead import Message as FormMessage


class _Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorAnswer(_Answer):
    """Every error: a code, a sentence, and the field at fault when there is one."""

    error: Literal["bad_request", "unauthorized", "not_found", "illegal_transition", "conflict", "erased",
                   "payload_too_large", "unsupported_media_type", "validation_error", "contention", "invalid_rules",
                   "misconfigured"]
    message: str
    field: str | None = Field(default=None, description="the field at fault: `email`, `traits.company_size`, `body`…")
    details: list[dict[str, Any]] | None = Field(default=None, description="one entry per problem, when several")


class Health(_Answer):
    status: Literal["ok"]
    rules_version: str
    rules_seq: int | None
    rules_warning: str | None = None


class Unhealthy(_Answer):
    status: Literal["invalid_rules"]
    message: str


class EventAnswer(_Answer):
    """What an applied event did to its lead."""

    lead_id: str
    stage: str
    score: float
    fit_score: float
    fit_grade: str
    engagement_score: float
    disqualified: bool
    duplicate: bool = Field(description="true when this event id was applied before: nothing changed")
    moves: list[str] = Field(description='stage moves this event caused, e.g. "lead->mql"')


class FormAccepted(_Answer):
    """A public form's whole answer: never the lead's stage, score or grade."""

    accepted: Literal[True]


class FirstTouchFigures(_Answer):
    leads: int
    median_seconds: float | None
    p90_seconds: float | None


class Funnel(_Answer):
    since: str | None
    until: str | None
    stages: dict[str, int] = Field(description="leads by current stage")
    conversion: dict[str, float | None] = Field(description='share of the leads that reached a stage and reached '
                                                             'the next, e.g. "mql_to_sql"')
    total: int
    time_to_first_touch: FirstTouchFigures


class FirstForm(_Answer):
    form: str = Field(description="the form's id, or its kind when the event named no form")
    at: str


class Velocity(_Answer):
    leads: int = Field(description="leads the figure is measured on")
    median_days: float | None = Field(default=None, description=(
        "nearest-rank median, as the start of its duration bucket (a fixed grid: single minutes up to five, "
        "then steps of at most half their start, a quarter from two days on)"))
    p90_days: float | None = Field(default=None, description="nearest-rank 90th percentile, as its bucket's start")
    median_seconds: float | None = Field(default=None, description="time to first touch: as median_days, in seconds")
    p90_seconds: float | None = Field(default=None, description="time to first touch: as p90_days, in seconds")


class CohortRow(_Answer):
    period: str = Field(description='"2017-03" (month) or "2017-W09" (ISO week)')
    starts: str = Field(description="the period's first day")
    leads: int
    reached: dict[str, int]
    conversion: dict[str, float | None]
    won: int
    lost: int


class FunnelFigures(_Answer):
    leads: int = Field(description="leads whose first stage falls in the cohorts read")
    reached: dict[str, int] = Field(description="leads that reached each stage (a stage skipped counts as reached)")
    current: dict[str, int] = Field(description="leads in each stage now")
    conversion: dict[str, float | None] = Field(description='reached the second stage among those that reached '
                                                             'the first, e.g. "mql_to_sql", "mql_to_customer"')
    velocity: dict[str, Velocity] = Field(description='"days_in_<stage>", "days_to_sql", "days_to_won": median '
                                                      'and p90 in days; "first_touch" in seconds')
    won: int
    lost: int
    loss_reasons: dict[str, int]
    rejection_reasons: dict[str, int]
    cohorts: list[CohortRow] = Field(default_factory=list)


class FunnelGroup(FunnelFigures):
    value: str = Field(description='the cut\'s value, "(none)" for leads without one')


class FunnelHistory(_Answer):
    """The funnel from history (with `by` or `cohort`): figures kept from the stream."""

    by: str | None
    cohort: str
    since: str | None
    until: str | None
    stages: list[str]
    total: FunnelFigures
    groups: list[FunnelGroup] = Field(default_factory=list, description="one per value of `by`, most leads first")
    generation: int = Field(description="the funnel's generation (a rebuild starts the next one)")


class LeadView(_Answer):
    """A lead as sales sees it: traits, stage, scores decayed to now and explained, history."""

    lead_id: str
    email: str | None
    anonymous_ids: list[str]
    traits: dict[str, Any]
    trait_sources: dict[str, str] = Field(description="which source set each trait (api, form:<id>, import, sales…)")
    review: list[Review] = Field(description="what a public form wanted to change and was not allowed to")
    stage: str
    stage_entered_at: str
    score: float
    fit_score: float
    fit_grade: str
    engagement_score: float
    explanation: list[dict[str, Any]] = Field(description="one line per rule that gave points, with its sentence")
    aggregates: dict[str, Any]
    scored_at: str
    rules_version: str
    disqualified: bool
    disqualified_reason: str | None
    marketing_email: str | None
    owner: str | None
    first_touch_at: str | None
    first_touch_by: str | None
    first_touch_seconds: float | None
    first_touch: Touch | None
    last_touch: Touch | None
    message: FormMessage | None
    first_form: FirstForm | None = Field(description="the form it first converted on, by event time")
    outcome: SalesOutcome | None
    history: list[Move] = Field(description="every stage move with its time, cause and rules version")
    events_applied: int
    created_at: str
    updated_at: str


class LeadSummary(_Answer):
    """A lead as a list shows it (scores decayed to now)."""

    lead_id: str
    email: str | None
    name: str | None
    company: str | None
    stage: str
    stage_entered_at: str
    score: float
    fit_grade: str
    engagement_score: float
    disqualified: bool
    owner: str | None
    source: str = Field(description='first-touch source ("direct" when the first touch named none)')
    created_at: str
    updated_at: str


class LeadPage(_Answer):
    items: list[LeadSummary]
    next_cursor: str | None = Field(description="pass as `cursor` with the same filters for the next page; "
                                                "null at the end (a page may be short while this is set)")


class FeedbackAnswer(LeadView):
    move: Move = Field(description="the move the action made")


class ErasedAnswer(_Answer):
    lead_id: str
    erased: Literal[True]
    items_deleted: int


class RulesState(_Answer):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    version: str
    seq: int | None = Field(description="the published version number in force; null for the shipped file")
    from_: str = Field(alias="from", description="where the rules in force came from")
    language: int
    signals_key: str
    warning: str | None
    source: str | None = Field(description="the YAML in force")
    history: list[dict[str, Any]] = Field(description="published versions, newest first: who, when, what changed")
    run: dict[str, Any] | None = Field(description="the latest publish's re-score, while it runs and after")


class Published(_Answer):
    seq: int
    version: str
    action: Literal["publish", "rollback"]
    changes: Any = Field(description="what changed against the version before")


class ImportRowAnswer(_Answer):
    row: int
    status: Literal["imported", "merged", "unchanged", "rejected"]
    lead_id: str | None = None
    stage: str | None = None
    moves: int | None = None
    field: str | None = Field(default=None, description="for a rejected row: the field at fault")
    reason: str | None = Field(default=None, description="for a rejected row: why")


class ImportAnswer(_Answer):
    results: list[ImportRowAnswer]
    counts: dict[Literal["imported", "merged", "unchanged", "rejected"], int]


class ImportBody(BaseModel):
    """`POST /v1/import`: rows of an export, each applied on its own (see the README)."""

    rows: list[dict[str, Any]] = Field(min_length=1, max_length=50, description=(
        "each row: `row` (its number), `key` (the export's own id), `events` (1 to 20 canonical events, the first "
        "naming the person), and optionally `stage`, `stage_at`, `outcome` {result, at, reason, value}, `owner`"))


class VendorDelivery(BaseModel):
    """A vendor delivery's answer: one outcome per item, in the vendor's order."""

    model_config = ConfigDict(extra="allow")  # a count per outcome status

    source: str
    received: int
    items: list[dict[str, Any]]


class SlackAction(BaseModel):
    model_config = ConfigDict(extra="allow")

    ok: bool


class FormFields(BaseModel):
    """A website form's fields: `email` and any others the form's mapping reads."""

    model_config = ConfigDict(extra="allow")

    email: str


# -- the interactive page ------------------------------------------------------------------

# Swagger UI as Powertools ships it (the function's artifact keeps these two files for
# this page); the page asks for the document and the assets relative to its own URL, so
# it works behind any base path.
_SWAGGER_UI = {"swagger-ui.css": ("text/css; charset=utf-8", "swagger-ui.min.css"),
               "swagger-ui-bundle.js": ("text/javascript; charset=utf-8", "swagger-ui-bundle.min.js")}

DOCS_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>leadflow API</title>
<link rel="stylesheet" href="docs/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="docs/swagger-ui-bundle.js"></script>
<script>
window.ui = SwaggerUIBundle({url: "openapi.json", dom_id: "#swagger-ui", deepLinking: true,
                             validatorUrl: null, tryItOutEnabled: false, persistAuthorization: false});
</script>
</body>
</html>
"""


def docs_asset(name: str) -> tuple[str, str] | None:
    """(content type, text) of one of the page's assets, or None for any other name."""
    if name not in _SWAGGER_UI:
        return None
    from pathlib import Path

    import aws_lambda_powertools.event_handler.openapi.swagger_ui as bundle

    content_type, file_name = _SWAGGER_UI[name]
    return content_type, (Path(bundle.__file__).parent / file_name).read_text(encoding="utf-8")


# -- the operations ---------------------------------------------------------------------

KEY = [{"bearer": []}]
OPEN: list[dict[str, list[str]]] = []


@dataclass(frozen=True)
class Operation:
    summary: str
    tag: str
    ok: Any  # the 200 answer's model, or a dict schema
    errors: tuple[int, ...] = ()
    body: Any = None  # the request body's model, or {media type: model}
    query: tuple[tuple[str, bool, str], ...] = ()  # (name, required, description)
    security: list[dict[str, list[str]]] = field(default_factory=lambda: KEY)
    also: dict[int, tuple[str, Any]] = field(default_factory=dict)  # other answers: status -> (description, model)
    csv: bool = False  # the 200 can also be text/csv (format=csv)


_AUTH = (401, 503)
OPERATIONS: dict[tuple[str, str], Operation] = {
    ("get", "/healthz"): Operation(
        "Readiness: ready only with rules that load", "operations", Health, security=OPEN,
        also={503: ("the rules in force do not load", Unhealthy)}),
    ("post", "/v1/events"): Operation(
        "Apply one canonical event", "events", EventAnswer, (400, 409, 410, 413, 422, *_AUTH), body=CanonicalEvent),
    ("post", "/v1/forms/{form_id}"): Operation(
        "A website form post (public: no key)", "events", FormAccepted, (400, 413, 415, 422), security=OPEN,
        body={"application/json": FormFields, "application/x-www-form-urlencoded": FormFields,
              "multipart/form-data": FormFields},
        also={303: ("a browser's post: to the form's thank-you URL", None)}),
    ("post", "/v1/webhooks/{source}"): Operation(
        "A vendor webhook, verified by the vendor's signature scheme (no key)", "events",
        {"oneOf": [VendorDelivery, EventAnswer, {"type": "array", "items": EventAnswer}, SlackAction]},
        (400, 401, 404, 410, 413, 422), security=OPEN,
        body={"application/json": {"oneOf": [CanonicalEvent, {"type": "array", "items": CanonicalEvent},
                                             {"type": "object", "description": "the vendor's own payload"}]},
              "application/x-www-form-urlencoded": {"type": "object", "description": "Slack interactions"}}),
    ("post", "/v1/import"): Operation(
        "Import rows of an export; each row is applied or rejected on its own", "leads", ImportAnswer,
        (400, 413, 422, *_AUTH), body=ImportBody),
    ("get", "/v1/leads"): Operation(
        "List leads (filtered, searched, paged), or find one by email", "leads",
        {"oneOf": [LeadPage, LeadView]}, (404, 422, *_AUTH),
        query=(("email", False, "find one lead by its address: the answer is that lead (no other parameter)"),
               ("stage", False, "only leads now in this stage"),
               ("owner", False, "only leads this rep owns"),
               ("source", False, 'only leads whose first touch came from this source ("direct": none named)'),
               ("q", False, "search: a prefix (2 characters or more) of the email, the name either way round, "
                            "the company or the email domain; case and accents do not matter"),
               ("sort", False, "newest (default) or oldest: by creation, or by stage entry with `stage`; "
                               "not with `q` (ordered by the matched value)"),
               ("limit", False, "leads per page, 1 to 100 (25)"),
               ("cursor", False, "the previous page's next_cursor"))),
    ("get", "/v1/leads/{lead_id}"): Operation(
        "A lead: traits, stage, scores decayed to now and explained, history", "leads", LeadView, (404, *_AUTH)),
    ("post", "/v1/leads/{lead_id}/feedback"): Operation(
        "A sales action: accept, reject, recycle, disqualify, opportunity, won, lost", "leads", FeedbackAnswer,
        (400, 404, 409, 422, *_AUTH), body="Feedback"),
    ("delete", "/v1/leads/{lead_id}"): Operation(
        "Erase a lead (right to be forgotten), in the CRMs too", "leads", ErasedAnswer, (404, *_AUTH)),
    ("get", "/v1/funnel"): Operation(
        "The funnel from history by cut and cohort, or leads by current stage", "funnel",
        {"oneOf": [FunnelHistory, Funnel]}, (422, *_AUTH), csv=True,
        query=(("by", False, "a cut: source (first touch), last_source, form, fit_grade, country or owner"),
               ("cohort", False, "week or month: the period a lead entered its first stage (default month "
                                 "when `by` is given)"),
               ("since", False, "ISO date: cohorts starting from then (with `by` or `cohort`); else leads "
                                "that entered their current stage from then"),
               ("until", False, "ISO date, after `since`: cohorts starting before then"),
               ("format", False, "json (default) or csv: one row per value and cohort"))),
    ("get", "/v1/rules"): Operation(
        "The rules in force (with their YAML) and the published history", "rules", RulesState, _AUTH),
    ("post", "/v1/rules"): Operation(
        "Publish a rules version (validated first; every lead is then re-scored)", "rules", Published,
        (400, 409, 413, 422, *_AUTH), body="PublishRules"),
    ("post", "/v1/rules/rollback"): Operation(
        "Return to an earlier rules version", "rules", Published, (400, 404, 409, 422, *_AUTH),
        body="RollbackRules"),
}

_ERRORS = {
    400: "the body is not what the route reads (not JSON, too deep, bad encoding)",
    401: "no or wrong key (`Authorization: Bearer <key>`), or a signature that does not verify",
    404: "no such lead, route or source",
    409: "the move is not allowed from the lead's stage, or the rules changed underneath",
    410: "the person was erased: an event from before the erasure is not applied",
    413: "the body is over 256 KiB",
    415: "a content type the route does not read",
    422: "a field is invalid: `field` names it",
    503: "the deployment is misconfigured (no API key, or it cannot be read), or one lead changed under too "
         "many writers at once (`contention`: retry)",
}


def document(app: Any) -> dict[str, Any]:
    """The OpenAPI document of every route of ``app`` (the API's resolver)."""
    from aws_lambda_powertools.event_handler.openapi.models import HTTPBearer
    from pydantic.json_schema import models_json_schema

    from leadflow import __version__
    from leadflow.routes import app as routes

    named = {"Feedback": routes.Feedback, "PublishRules": routes.PublishRules, "RollbackRules": routes.RollbackRules}
    schema = app.get_openapi_schema(
        title="leadflow",
        version=__version__,
        description="Lead qualification and handoff: events in, scored and explained leads out. Every route "
                    "under /v1 but forms and webhooks takes `Authorization: Bearer <key>`.",
        security_schemes={"bearer": HTTPBearer(description="the API key (LEADFLOW_API_KEY; in AWS the "
                                                           "stack's ApiKeySecret)")},
    )
    doc = schema.model_dump(mode="json", by_alias=True, exclude_none=True)
    # Powertools' own validation-error schemas are dropped below: the routes answer ErrorAnswer.

    wanted: dict[tuple[type[BaseModel], str], list[dict[str, str]]] = {}  # (model, mode) -> refs to fill in

    def ref(model: Any, mode: str) -> Any:
        if isinstance(model, str):
            model = named[model]
        if isinstance(model, type) and issubclass(model, BaseModel):
            pointer: dict[str, str] = {}
            wanted.setdefault((model, mode), []).append(pointer)
            return pointer
        if isinstance(model, dict):
            return {k: ref(v, mode) if k == "items" else [ref(m, mode) for m in v] if k == "oneOf" else v
                    for k, v in model.items()}
        raise TypeError(f"not a model or schema: {model!r}")

    import inspect

    # Each route's docstring is its description (Powertools keeps routes in these two lists).
    described = {(r.method.lower(), r.openapi_path): inspect.getdoc(r.func)
                 for r in [*app._static_routes, *app._dynamic_routes] if inspect.getdoc(r.func)}

    def answer(model: Any) -> dict[str, Any]:
        return {"application/json": {"schema": ref(model, "serialization")}}

    for (method, path), op in OPERATIONS.items():
        operation = doc["paths"].get(path, {}).get(method)
        if operation is None:
            continue  # a route the table names and the app does not have: the suite says so
        operation["summary"] = op.summary
        if (method, path) in described:
            operation["description"] = " ".join(described[method, path].split())
        operation["tags"] = [op.tag]
        operation["security"] = op.security
        if op.query:
            operation["parameters"] = [p for p in operation.get("parameters", []) if p.get("in") != "query"] + [
                {"name": name, "in": "query", "required": required, "description": text, "schema": {"type": "string"}}
                for name, required, text in op.query]
        if op.body is not None:
            media = op.body if isinstance(op.body, dict) and "oneOf" not in op.body else {"application/json": op.body}
            operation["requestBody"] = {"required": True, "content": {
                kind: {"schema": ref(m, "validation")} for kind, m in media.items()}}
        answers: dict[str, Any] = {"200": {"description": "OK", "content": answer(op.ok)}}
        if op.csv:
            answers["200"]["content"]["text/csv"] = {"schema": {"type": "string"}}
        for status, (text, model) in op.also.items():
            answers[str(status)] = {"description": text, **({"content": answer(model)} if model else {})}
        for status in op.errors:
            answers[str(status)] = {"description": _ERRORS[status], "content": answer(ErrorAnswer)}
        operation["responses"] = answers

    keys, definitions = models_json_schema(list(wanted), ref_template="#/components/schemas/{model}")
    for key, pointers in wanted.items():
        for pointer in pointers:
            pointer.update(keys[key])
    security = doc.get("components", {}).get("securitySchemes")
    doc["components"] = {"schemas": dict(sorted(definitions.get("$defs", {}).items()))}
    if security:
        doc["components"]["securitySchemes"] = security
    doc["tags"] = [{"name": "events", "description": "what happens to leads: events, forms, vendor webhooks"},
                   {"name": "leads", "description": "leads, sales actions, import, erasure"},
                   {"name": "funnel", "description": "funnel figures"},
                   {"name": "rules", "description": "rules versions: publish, roll back"},
                   {"name": "operations", "description": "health"}]
    return doc
