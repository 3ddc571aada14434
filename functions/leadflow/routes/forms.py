"""Website form posts: the body as fields (urlencoded or JSON). What the fields mean is
`leadflow.domain.forms`."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from leadflow.domain.errors import BadRequest, InvalidInput, UnsupportedMediaType


def parse_form_body(body: str, content_type: str) -> dict[str, Any]:
    kind = (content_type or "").split(";")[0].strip().lower()
    if kind in ("application/x-www-form-urlencoded", ""):
        if kind == "" and body.lstrip().startswith("{"):
            kind = "application/json"
        else:
            pairs = parse_qs(body, keep_blank_values=True, strict_parsing=False)
            return {k: v[-1] for k, v in pairs.items()}
    if kind == "application/json":
        import json

        try:
            data = json.loads(body or "null")
        except ValueError as exc:
            raise BadRequest(f"malformed JSON: {exc}", field="body") from None
        if not isinstance(data, dict):
            raise InvalidInput("a form post must be a JSON object of fields", field="body")
        return data
    raise UnsupportedMediaType(f"form posts must be application/x-www-form-urlencoded or application/json, not {kind}",
                               field="content-type")
