"""HTTP API: routes → one service call each. Errors map to status codes in one place."""

from __future__ import annotations

import functools
import hmac
import json
import uuid
from datetime import datetime
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response, content_types
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from leadflow import container
from leadflow.domain.forms import is_bot, to_event, trapped
from leadflow.routes.forms import THANK_YOU_PAGE, parse_form_body, wants_html
from leadflow.routes import console
from leadflow.routes.access import api_key_in_force
from leadflow.routes.webhooks import raw_body
from leadflow.domain.errors import (
    BadRequest, InvalidInput, LeadflowError, Misconfigured, NotFound, PayloadTooLarge, Unauthorized,
)
from leadflow.domain.events import Identity, Text, Timestamp, parse_event, validated, valid_email, validation_details
from leadflow.domain.inputs import parse_json, query_date, utc_in_range
from leadflow.observability import add, logger, mask_email
from leadflow.settings import MAX_BODY_BYTES, WEBHOOK_SOURCES, settings

app = APIGatewayHttpResolver()
app.include_router(console.router)  # /console: HTML pages with their own login (routes/console.py)
MAX_EVENTS_PER_DELIVERY = 100


def _json(status: int, body: Any) -> Response:
    return Response(status_code=status, content_type=content_types.APPLICATION_JSON, body=json.dumps(body, default=str))


@app.exception_handler(LeadflowError)
def _domain_error(exc: LeadflowError) -> Response:
    if exc.status >= 500:
        logger.warning("request.failed", extra={"error": exc.code})
    return _json(exc.status, exc.body())


@app.not_found
def _not_found(_exc: Exception) -> Response:
    path = app.current_event.path
    if path == "/console" or path.startswith("/console/"):
        return console.not_found_page()  # a page in the console's style, with a way back
    return _json(404, {"error": "not_found", "message": f"no route {app.current_event.http_method} {path}"})


def _body_text() -> str:
    event = app.current_event
    if not event.get("isBase64Encoded"):
        return event.get("body") or ""
    try:
        return raw_body(event.raw_event).decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("body is not valid UTF-8", field="body") from None


def _json_body(*, numbers: bool = True) -> Any:
    text = _body_text()
    if not text.strip():
        raise BadRequest("empty body; expected JSON", field="body")
    return parse_json(text, numbers=numbers)


@app.get("/healthz")
def healthz() -> Response[Any]:
    """Ready only with rules that load: broken rules are a 503 that says so, never an
    "ok" in front of a 500 on every request. A newer published version that does not
    load is a warning: the last good version serves."""
    from leadflow.domain.errors import RulesError

    try:
        state = container.rules_in_force().current()
    except RulesError as exc:
        logger.error("rules.invalid", extra={"error": exc.message})
        return _json(503, {"status": "invalid_rules", "message": exc.message})
    body = {"status": "ok", "rules_version": state.rules.version, "rules_seq": state.seq}
    if state.warning:
        body["rules_warning"] = state.warning
    return _json(200, body)


@app.get("/openapi.json", include_in_schema=False)
def openapi_document() -> Response[Any]:
    """The OpenAPI 3.1 document of every route, built from the routes and their models
    (once per execution environment: the routes do not change while it lives)."""
    return _json(200, _openapi())


@app.get("/docs", include_in_schema=False)
def docs_page() -> Response[Any]:
    """The interactive page of the OpenAPI document (Swagger UI, served from the function:
    nothing is fetched from elsewhere)."""
    from leadflow.routes.openapi import DOCS_PAGE

    return Response(status_code=200, content_type="text/html; charset=utf-8", body=DOCS_PAGE,
                    headers={"Cache-Control": "no-cache"})


@app.get("/docs/<asset>", include_in_schema=False)
def docs_asset(asset: str) -> Response[Any]:
    from leadflow.routes.openapi import docs_asset as read

    found = read(asset)
    if found is None:
        raise NotFound(f"no asset {asset!r}", field="asset")
    content_type, text = found
    return Response(status_code=200, content_type=content_type, body=text,
                    headers={"Cache-Control": "public, max-age=86400"})


@functools.cache
def _openapi() -> dict[str, Any]:
    from leadflow.routes.openapi import document

    return document(app)


class PublishRules(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    source: Text = Field(min_length=1, description="the rules file's YAML")
    by: Text = Field(default="api", min_length=1, max_length=100, description="who publishes (shown in the history)")
    announce: bool = Field(default=False, description="alert sales one by one for the moves the publish causes")


class RollbackRules(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    by: Text = Field(default="api", min_length=1, max_length=100)
    to: int | None = Field(default=None, ge=1, description="the version number (seq) to return to; default the previous")
    announce: bool = False


@app.get("/v1/rules")
def get_rules() -> Response[Any]:
    """The rules version in force (with its YAML) and the published history, newest first:
    who published, when, what changed, and what its re-score did."""
    return _json(200, container.publisher().describe())


@app.post("/v1/rules")
def publish_rules() -> Response[Any]:
    """Publish a rules version: validated first (422 naming every problem), then in force
    for every function within a minute; the jobs function then re-scores every lead."""
    body = validated(PublishRules, _json_body())
    published = container.publisher().publish(body.source, by=body.by, announce=body.announce)
    logger.info("rules.published", extra={"seq": published.seq, "version": published.version})
    add("RulesPublished")
    return _json(200, published.answer())


@app.post("/v1/rules/rollback")
def rollback_rules() -> Response[Any]:
    """Return to an earlier published version (`to`, or the one before): it becomes the
    next entry of the history, and every lead is re-scored to it."""
    body = validated(RollbackRules, _json_body() if _body_text().strip() else {})
    published = container.publisher().rollback(by=body.by, to=body.to, announce=body.announce)
    logger.info("rules.rolled_back", extra={"seq": published.seq, "version": published.version})
    add("RulesPublished")
    return _json(200, published.answer())


@app.post("/v1/events")
def post_event() -> Response[Any]:
    """Apply one canonical event to its lead, synchronously: a 200 means it is durable and
    applied once (the same `event_id` again answers `duplicate: true` and changes nothing)."""
    event = parse_event(_json_body())
    result = container.service().ingest(event, source="api")
    _log_applied(result, "api")
    return _json(200, result.answer())


@app.post("/v1/forms/<form_id>")
def post_form(form_id: str) -> Response[Any]:
    """A website form post. The answer says only that it was accepted, whatever became of
    the lead (anyone can type an address): `{"accepted": true}` to a script, a 303 to the
    form's thank-you URL (or a plain thank-you page) to a browser. A post a spam trap
    catches gets the same answer and changes nothing, so bots learn nothing."""
    svc = container.service()
    forms = svc.rules.forms
    headers = dict(app.current_event.headers or {})
    fields = parse_form_body(_body_bytes(), {k.lower(): v for k, v in headers.items()}.get("content-type", ""))
    trap = "honeypot" if is_bot(fields, forms) else trapped(form_id, fields, forms, svc.clock())
    if trap:
        logger.info("form.honeypot" if trap == "honeypot" else "form.time_trap", extra={"form_id": form_id, "trap": trap})
        add("FormBotDropped")
    else:
        event = to_event(form_id, fields, forms, fallback_id=uuid.uuid4().hex)
        result = svc.ingest(event, source=f"form:{form_id}")
        _log_applied(result, "form")
    if not wants_html(headers):
        return _json(200, {"accepted": True})
    url = forms.settings_for(form_id).redirect_url
    if url:
        return Response(status_code=303, content_type=content_types.TEXT_HTML, body="",
                        headers={"Location": url, "Cache-Control": "no-store"})
    return Response(status_code=200, content_type="text/html; charset=utf-8", body=THANK_YOU_PAGE,
                    headers={"Cache-Control": "no-store"})


def _body_bytes() -> bytes:
    event = app.current_event
    if event.get("isBase64Encoded"):
        return raw_body(event.raw_event)
    try:
        return (event.get("body") or "").encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest("body is not valid UTF-8", field="body") from None


@app.post("/v1/webhooks/<source>")
def post_webhook(source: str) -> Response[Any]:
    """A vendor's delivery (HubSpot, Mautic, Typeform, Calendly, SendGrid, Slack), verified
    by that vendor's signature scheme over the raw bytes before anything is parsed; `generic`
    takes one canonical event or a list, signed by the Standard Webhooks scheme."""
    if source not in WEBHOOK_SOURCES:
        raise NotFound(f"unknown webhook source {source!r}; expected one of {', '.join(WEBHOOK_SOURCES)}", field="source")
    if source not in ("generic", "slack"):
        from leadflow.routes import webhooks

        status, answer = webhooks.handle(source, app.current_event.raw_event, service=container.service,
                                         secret=settings().webhook_secret(source), public_url=settings().public_url)
        return _json(status, answer)
    body = _body_text()
    headers = dict(app.current_event.headers or {})
    if source == "slack":
        from leadflow.adapters.vendor_webhooks import slack

        slack.verify(body, headers, settings().webhook_secret("slack"))
        pressed = slack.parse(body)
        if pressed is None:
            return _json(200, {"ok": True, "ignored": True})
        return _json(200, container.sales_actions().take(pressed))
    msg_id = _verify_standard_webhook(body, headers, settings().webhook_secret("generic"))
    payload = parse_json(body)
    items = payload if isinstance(payload, list) else [payload]
    if not items or len(items) > MAX_EVENTS_PER_DELIVERY:
        raise InvalidInput(f"a delivery carries 1 to {MAX_EVENTS_PER_DELIVERY} events", field="body")
    events = []
    for i, item in enumerate(items):
        if isinstance(item, dict) and not item.get("event_id"):
            item = {**item, "event_id": f"{msg_id}:{i}"}  # a replayed delivery is recognised
        try:
            events.append(parse_event(item))
        except InvalidInput as exc:
            prefix = f"[{i}]." if isinstance(payload, list) else ""
            raise InvalidInput(f"{prefix}{exc.message}", field=f"{prefix}{exc.field or 'body'}",
                               details=[{**d, "field": prefix + d["field"]} for d in exc.details]) from None
    results = container.service().ingest_many(events, source="webhook:generic")
    for result in results:
        _log_applied(result, "webhook:generic")
    answers = [r.answer() for r in results]
    return _json(200, answers if isinstance(payload, list) else answers[0])


def _verify_standard_webhook(body: str, headers: dict[str, str], secret: str | None) -> str:
    if not secret:
        raise Unauthorized("no secret is configured for this webhook source (LEADFLOW_WEBHOOK_SECRET_GENERIC)")
    from standardwebhooks.webhooks import Webhook

    try:
        Webhook(secret).verify(body, headers, json_parse=False)
    except Exception as exc:  # the library raises several types for malformed headers
        reason = str(exc) if exc.__class__.__name__ == "WebhookVerificationError" else "malformed signature headers"
        raise Unauthorized(f"signature verification failed: {reason}") from None
    return {k.lower(): v for k, v in headers.items()}["webhook-id"]


MAX_IMPORT_ROWS = 50


class ImportOutcome(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, allow_inf_nan=False)

    result: Identity = Field(min_length=1, max_length=20)
    at: Timestamp | None = None
    reason: Text | None = Field(default=None, max_length=200)
    value: float | None = None


class ImportRowBody(BaseModel):
    """One row of an export as `leadflow import` sends it (see the README's import section)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    row: int = Field(ge=0)
    key: Identity = Field(min_length=1, max_length=300)
    events: list[dict[str, Any]] = Field(min_length=1, max_length=20)
    stage: Identity | None = Field(default=None, max_length=40)
    stage_at: Timestamp | None = None
    outcome: ImportOutcome | None = None
    owner: Text | None = Field(default=None, max_length=200)


@app.post("/v1/import")
def post_import() -> Response[Any]:
    """Rows of an export, each applied on its own: a bad row is answered `rejected`
    (field and reason) and the others still apply. A 200 means every row not rejected
    is durable; re-sending the same rows changes nothing."""
    from leadflow.usecases.imports import ImportRow

    body = _json_body(numbers=False)  # a number that cannot be stored rejects its row, not the batch
    rows = body.get("rows") if isinstance(body, dict) else None
    if not isinstance(rows, list) or not 1 <= len(rows) <= MAX_IMPORT_ROWS:
        raise InvalidInput(f"rows: send 1 to {MAX_IMPORT_ROWS} rows as {{\"rows\": [...]}}", field="rows")
    importer = container.importer()
    emails = [e.get("email") for r in rows if isinstance(r, dict) and isinstance(r.get("events"), list)
              for e in r["events"][:1] if isinstance(e, dict) and isinstance(e.get("email"), str)]
    known = importer.prefetch(_valid_emails(emails))  # an invalid one rejects its row below
    results = []
    for i, raw in enumerate(rows):
        number = raw.get("row") if isinstance(raw, dict) and isinstance(raw.get("row"), int) else i
        try:
            try:
                parsed = ImportRowBody.model_validate(raw)
            except ValidationError as exc:
                first = validation_details(exc)[0]
                raise InvalidInput(f"{first['field']}: {first['reason']}", field=first["field"]) from None
            events = []
            for n, item in enumerate(parsed.events):
                try:
                    events.append(parse_event(item))
                except InvalidInput as exc:
                    raise InvalidInput(f"events[{n}].{exc.message}", field=f"events[{n}].{exc.field or 'body'}") from None
            outcome = parsed.outcome.model_dump() if parsed.outcome else None
            results.append({"row": number, **importer.apply(ImportRow(
                key=parsed.key, events=events, stage=parsed.stage, stage_at=_utc(parsed.stage_at),
                outcome={**outcome, "at": _utc(outcome["at"])} if outcome else None, owner=parsed.owner), known)})
        except InvalidInput as exc:
            results.append({"row": number, "status": "rejected", "field": exc.field, "reason": exc.message})
    counts = {k: sum(1 for r in results if r["status"] == k) for k in ("imported", "merged", "unchanged", "rejected")}
    logger.info("import.batch", extra=counts)
    add("ImportRows", len(results))
    return _json(200, {"results": results, "counts": counts})


def _valid_emails(raw: list[str]) -> list[str]:
    valid = []
    for email in raw:
        try:
            valid.append(valid_email(email))
        except ValueError:
            continue
    return valid


def _utc(value: datetime | None) -> datetime | None:
    return None if value is None else utc_in_range(value)


@app.get("/v1/leads")
def find_lead() -> Response[Any]:
    """With `email`: the lead of that address (its id is derived from the address with the
    deployment's key, so this is one read). Without: a page of leads, newest first, from an
    index (never a table scan), filtered by `stage`, `owner`, first-touch `source` and a
    search `q` (a prefix of the email, name either way round, company or email domain);
    `next_cursor` continues the list."""
    params = app.current_event.query_string_parameters or {}
    if "email" not in params:
        from leadflow.domain.listing import parse_list_query

        query = parse_list_query(params)
        cursor = params.get("cursor")
        return _json(200, container.lister().page(query, cursor.strip() if cursor else None))
    email = params["email"]
    if set(params) != {"email"}:
        other = sorted(set(params) - {"email"})[0]
        raise InvalidInput(f"{other}: email finds one lead; leave the list's parameters out", field=other)
    if not email.strip():
        raise InvalidInput("email: give the lead's address, or leave email out to list leads", field="email")
    try:
        email = valid_email(email)
    except ValueError as exc:
        raise InvalidInput(f"email: {exc}", field="email") from None
    svc = container.service()
    return _json(200, svc.view(svc.get_by_email(email)))


@app.get("/v1/leads/<lead_id>")
def get_lead(lead_id: str) -> Response[Any]:
    """The lead with its traits, scores decayed to now with every point explained, owner,
    sources and the history of its stage moves."""
    svc = container.service()
    return _json(200, svc.view(svc.get(lead_id)))


class Feedback(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    action: Identity = Field(min_length=1, max_length=40)
    reason: Text | None = Field(default=None, max_length=200)
    by: Text | None = Field(default=None, max_length=200)


@app.post("/v1/leads/<lead_id>/feedback")
def post_feedback(lead_id: str) -> Response[Any]:
    """A sales action on the lead; the answer is the lead after it, with the move made."""
    feedback = validated(Feedback, _json_body(), what="feedback")
    svc = container.service()
    result = svc.act(lead_id, feedback.action, reason=feedback.reason, by=feedback.by)
    logger.info("lead.feedback", extra={"lead_id": lead_id, "action": feedback.action})
    return _json(200, {**svc.view(result.lead), "move": result.moves[0].model_dump(mode="json", by_alias=True)})


@app.delete("/v1/leads/<lead_id>")
def delete_lead(lead_id: str) -> Response[Any]:
    """Erase the lead: its item, history, event log and deliveries go; a tombstone without
    the address keeps a replayed delivery from bringing the person back, and HubSpot and
    Salesforce are asked to delete the contact."""
    removed = container.service().erase(lead_id)
    logger.info("lead.erased", extra={"lead_id": lead_id, "items": removed})
    add("LeadErased")
    return _json(200, {"lead_id": lead_id, "erased": True, "items_deleted": removed})


@app.get("/v1/funnel")
def funnel() -> Response[Any]:
    """The funnel from history with `by` (a cut: first- or last-touch source, first form,
    fit grade, country, owner) or `cohort` (week or month): by cohort, the leads that
    reached each stage, the conversion between stages, days in each stage and to SQL and
    won (median, p90), loss and rejection reasons; kept from the stream, so a read costs
    a few items whatever the number of leads. `format=csv` answers it as a spreadsheet.
    Without either: leads by current stage (optionally those that entered it between
    `since` and `until`), the conversion from each stage to the next, and time to first
    touch."""
    from leadflow.domain.funnel import csv_rows, parse_funnel_query

    query = app.current_event.query_string_parameters or {}
    bounds = {name: query_date(query.get(name), name) for name in ("since", "until")}
    asked = parse_funnel_query(query, *(b.date() if b else None for b in (bounds["since"], bounds["until"])))
    if bounds["since"] and bounds["until"] and bounds["since"] >= bounds["until"]:
        raise InvalidInput("until: must be after since", field="until")
    if not asked.history:
        return _json(200, container.service().funnel(**bounds))
    answer = container.funnel().report(by=asked.by, grain=asked.cohort or "month", since=asked.since,
                                       until=asked.until)
    if asked.format == "csv":
        import csv
        import io

        out = io.StringIO()
        csv.writer(out, lineterminator="\r\n").writerows(csv_rows(answer))
        name = f"funnel-{asked.by or 'all'}-{asked.cohort or 'month'}.csv"
        return Response(status_code=200, content_type="text/csv; charset=utf-8", body=out.getvalue(),
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})
    return _json(200, answer)


def _log_applied(result, source: str) -> None:
    lead = result.lead
    logger.info("event.applied", extra={"lead_id": lead.lead_id, "email": mask_email(lead.email), "source": source,
                                        "stage": lead.stage, "duplicate": result.duplicate})
    add("EventDuplicate" if result.duplicate else "EventApplied")
    for move in result.moves:
        logger.info("lead.moves", extra={"lead_id": lead.lead_id, "from": move.from_stage, "to": move.to_stage,
                                         "rule": move.cause.rule})
        if move.to_stage in ("mql", "sql"):
            add("LeadQualified")


_OPEN_PREFIXES = ("/v1/forms/", "/v1/webhooks/")


def _guard(event: dict) -> Response | None:
    """Checks that come before routing: body size and the API key."""
    body = event.get("body") or ""
    size = len(body) * 3 // 4 if event.get("isBase64Encoded") else len(body.encode("utf-8"))
    if size > MAX_BODY_BYTES:
        err = PayloadTooLarge(f"body is {size} bytes; the limit is {MAX_BODY_BYTES}", field="body")
        return _json(err.status, err.body())
    path = event.get("rawPath") or ""
    if not path.startswith("/v1/") or path.startswith(_OPEN_PREFIXES):
        return None
    try:
        key = api_key_in_force("API")
    except Misconfigured as err:
        return _json(err.status, err.body())
    if key:
        headers = {k.lower(): v for k, v in (event.get("headers") or {}).items()}
        given = headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {key}".encode()):
            err = Unauthorized("missing or wrong bearer token", field="authorization")
            return _json(err.status, err.body())
    return None


def handle(event: dict, context: Any) -> dict:
    refused = _guard(event)
    if refused is not None:
        return _plain(refused)
    return app.resolve(event, context)


def _plain(response: Response) -> dict:
    return {"statusCode": response.status_code, "headers": {"Content-Type": "application/json"},
            "body": response.body, "isBase64Encoded": False}

