"""Website form posts: the body as fields (urlencoded or JSON). What the fields mean is
`leadflow.domain.forms`."""

from __future__ import annotations

from typing import Any

from leadflow.domain.errors import InvalidInput, UnsupportedMediaType
from leadflow.domain.inputs import parse_json, parse_urlencoded


def parse_form_body(body: str, content_type: str) -> dict[str, Any]:
    kind = (content_type or "").split(";")[0].strip().lower()
    if kind in ("application/x-www-form-urlencoded", ""):
        if kind == "" and body.lstrip().startswith("{"):
            kind = "application/json"
        else:
            return {k: v[-1] for k, v in parse_urlencoded(body).items()}
    if kind == "application/json":
        data = parse_json(body or "null")
        if not isinstance(data, dict):
            raise InvalidInput("a form post must be a JSON object of fields", field="body")
        return data
    raise UnsupportedMediaType(f"form posts must be application/x-www-form-urlencoded or application/json, not {kind}",
                               field="content-type")
