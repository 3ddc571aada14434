"""Website form posts: the body as fields (urlencoded, multipart or JSON), and how to
answer the browser or script that posted it. What the fields mean is
`leadflow.domain.forms`."""

from __future__ import annotations

from typing import Any

from leadflow.domain.errors import BadRequest, InvalidInput, UnsupportedMediaType
from leadflow.domain.inputs import MAX_FORM_FIELDS, parse_json, parse_urlencoded

FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data", "application/json")


def parse_form_body(body: bytes, content_type: str) -> dict[str, Any]:
    kind = media_type(content_type)
    if kind == "multipart/form-data":
        return {k: v[-1] for k, v in parse_multipart(body, content_type).items()}
    text = _utf8(body)
    if kind in ("application/x-www-form-urlencoded", ""):
        if kind == "" and text.lstrip().startswith("{"):
            kind = "application/json"
        else:
            return {k: v[-1] for k, v in parse_urlencoded(text).items()}
    if kind == "application/json":
        data = parse_json(text or "null")
        if not isinstance(data, dict):
            raise InvalidInput("a form post must be a JSON object of fields", field="body")
        return data
    raise UnsupportedMediaType(f"form posts must be {', '.join(FORM_TYPES)}, not {kind}", field="content-type")


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";")[0].strip().lower()


def _utf8(body: bytes) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("body is not valid UTF-8", field="body") from None


def parse_multipart(body: bytes, content_type: str, *, max_fields: int = MAX_FORM_FIELDS) -> dict[str, list[str]]:
    """A `multipart/form-data` body (RFC 7578) as {name: [values]}, read by the standard
    library's MIME parser (the replacement Python's documentation names for the removed
    `cgi` module; nothing to add to the Lambda artifact). Strict where that parser is
    lenient: a missing boundary, a truncated body or a malformed part is a 400, and names
    and values must be UTF-8 (400 naming the field), never repaired into U+FFFD.

    File parts (those with a `filename`, an empty file input included) are ignored: a
    lead keeps no files, and a website form that also takes an upload (a CV, an
    attachment) must still deliver its lead. They count towards `max_fields`."""
    from email import policy
    from email.parser import BytesParser

    if "\r" in content_type or "\n" in content_type:
        raise BadRequest("content-type: malformed", field="content-type")
    head = b"Content-Type: " + content_type.encode("utf-8", "replace") + b"\r\n\r\n"
    message = BytesParser(policy=policy.HTTP).parsebytes(head + body)
    if not message.get_boundary():
        raise BadRequest("content-type: multipart/form-data needs a boundary parameter", field="content-type")
    if message.defects or not message.is_multipart():
        raise BadRequest(f"body: malformed multipart/form-data ({_defect(message.defects)})", field="body")
    parts = list(message.iter_parts())
    if len(parts) > max_fields:
        raise InvalidInput(f"body: {len(parts)} fields; a form post holds at most {max_fields}", field="body")
    fields: dict[str, list[str]] = {}
    for n, part in enumerate(parts):
        for _, raw in part.raw_items():
            try:
                raw.encode("ascii", "surrogateescape").decode("utf-8")
            except UnicodeError:
                raise BadRequest(f"body: the headers of part {n + 1} are not valid UTF-8", field="body") from None
        name = part.get_param("name", header="content-disposition")
        if part.get_content_disposition() != "form-data" or not isinstance(name, str) or not name:
            raise BadRequest(f"body: part {n + 1} is not a named form-data field", field="body")
        field = name[:100]
        if part.defects:
            raise BadRequest(f"{field}: malformed part ({_defect(part.defects)})", field=field)
        if part.get_filename() is not None or part.is_multipart():
            continue  # a file: see above
        payload = part.get_payload(decode=True)
        try:
            value = (payload or b"").decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest(f"{field}: not valid UTF-8", field=field) from None
        fields.setdefault(name, []).append(value)
    return fields


def _defect(defects: list) -> str:
    return ", ".join(type(d).__name__.removesuffix("Defect") for d in defects) or "not multipart"


# -- the answer ---------------------------------------------------------------------------


def _quality(accept: str, media: str) -> float:
    """The `q` an Accept header gives `media` (RFC 9110 §12.5.1): the most specific range
    that matches decides; no match is 0."""
    best, quality = -1, 0.0
    kind = media.split("/")[0]
    for item in accept.split(","):
        params = [p.strip() for p in item.split(";")]
        rng = params[0].lower()
        if rng == media:
            rank = 2
        elif rng == f"{kind}/*":
            rank = 1
        elif rng == "*/*":
            rank = 0
        else:
            continue
        q = 1.0
        for p in params[1:]:
            key, _, val = p.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = min(max(float(val), 0.0), 1.0)
                except ValueError:
                    q = 0.0
        if rank > best:
            best, quality = rank, q
    return quality


def wants_html(headers: dict[str, str]) -> bool:
    """Whether the post came from a browser navigating (a plain HTML `<form>`), which
    should land on a page, rather than from a script, which reads JSON. A browser says so
    itself (`Sec-Fetch-Mode: navigate`); otherwise the Accept header decides, and a form
    body (urlencoded or multipart) with no preference for JSON is taken as a page post."""
    h = {k.lower(): v for k, v in headers.items()}
    mode = h.get("sec-fetch-mode", "").strip().lower()
    if mode:
        return mode == "navigate"
    accept = h.get("accept", "")
    html_q, json_q = _quality(accept, "text/html"), _quality(accept, "application/json")
    if accept.strip() and html_q != json_q:
        return html_q > json_q
    return media_type(h.get("content-type")) in ("application/x-www-form-urlencoded", "multipart/form-data")


# What a browser shows when the form has no thank-you URL: static, nothing from the post.
THANK_YOU_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Thank you</title></head>
<body style="font-family: system-ui, sans-serif; max-width: 32rem; margin: 4rem auto; padding: 0 1rem">
<h1>Thank you</h1><p>We received your details.</p></body></html>
"""
