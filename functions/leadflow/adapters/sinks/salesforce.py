"""Mirror each stage move onto a Salesforce Lead, keyed by the leadflow lead id.

Upsert by external id: `PATCH /services/data/vXX.X/sobjects/Lead/<ExternalIdField>/<lead_id>`
creates the Lead (201 `{"id", "success", "errors", "created": true}`) or updates it
(204 with no body; 200 with `"created": false` in newer API versions), so a retried
move converges on one Lead. 300 means several Leads share the external id: a data
problem no retry fixes. Errors are a JSON list of `{"message", "errorCode"}`.

Authentication is the OAuth 2.0 client-credentials flow of a connected app:
`POST {instance_url}/services/oauth2/token` returns an access token and the
`instance_url` API calls must use. The token is cached on the sink (a warm Lambda
reuses it); a 401 from the API fetches a new one once and repeats that call once.

An erased person's Lead is deleted by the same external id,
`DELETE /services/data/vXX.X/sobjects/Lead/<ExternalIdField>/<lead_id>` (204), so the
delete needs nothing of the person: every Lead this sink made carries the id. A 404
(NOT_FOUND: never pushed, or already deleted) means there is nothing left to delete.

Exceptions to "4xx is permanent": REQUEST_LIMIT_EXCEEDED (a 403 while the org's
rolling API limit is spent) and UNABLE_TO_LOCK_ROW (a concurrent write) pass later.
"""

from __future__ import annotations

import json
import threading
import urllib.parse
from typing import Any, Mapping

from leadflow.domain.handoff import Erasure, Notice, SinkKind
from leadflow.domain.errors import PermanentError, RetryableError
from leadflow.domain.ports import Receipt
from leadflow.adapters.sinks.http import Response, clip, deadline_after, raise_for, retry_after, send

NOT_PROVIDED = "[not provided]"  # LastName and Company are required on a Lead

DEFAULT_STATUS_MAP: dict[str, str] = {
    "subscriber": "Open - Not Contacted",
    "lead": "Open - Not Contacted",
    "mql": "Open - Not Contacted",
    "sql": "Working - Contacted",
    "opportunity": "Closed - Converted",
    "customer": "Closed - Converted",
    "evangelist": "Closed - Converted",
}
DISQUALIFIED_STATUS = "Closed - Not Converted"
RETRYABLE_ERROR_CODES = frozenset({"REQUEST_LIMIT_EXCEEDED", "UNABLE_TO_LOCK_ROW", "SERVER_UNAVAILABLE"})

# Lead field lengths: a longer value is truncated here rather than refused there (STRING_TOO_LONG).
_FIELD_LIMITS = {"FirstName": 40, "LastName": 80, "Company": 255, "Title": 128, "Email": 80, "Country": 80}


class SalesforceSink:
    """Upserts the Lead whose external id is the leadflow lead id."""

    name = "salesforce"
    kind: SinkKind = "crm"

    def __init__(self, instance_url: str, client_id: str, client_secret: str, *,
                 external_id_field: str = "Leadflow_Id__c", api_version: str = "v60.0", timeout: float = 5.0,
                 status_map: Mapping[str, str] | None = None):
        self.instance_url = instance_url.rstrip("/")
        self.client_id = client_id
        self.client_secret = client_secret
        self.external_id_field = external_id_field
        self.api_version = api_version if api_version.startswith("v") else f"v{api_version}"
        self.timeout = timeout
        self.status_map = {**DEFAULT_STATUS_MAP, **(status_map or {})}
        self._session: tuple[str, str] | None = None  # (access token, instance URL to call)
        self._lock = threading.Lock()

    def _path(self, lead_id: str) -> str:
        return (f"/services/data/{self.api_version}/sobjects/Lead/"
                f"{urllib.parse.quote(self.external_id_field, safe='')}/{urllib.parse.quote(lead_id, safe='')}")

    def erase(self, erasure: Erasure, *, deadline: float | None = None) -> Receipt:
        until = deadline_after(self.timeout, deadline)
        answer = self._api("DELETE", self._path(erasure.lead_id), None, what="salesforce delete", deadline=until,
                           gone_ok=True)
        return {"deleted": answer.status != 404}

    def deliver(self, notice: Notice, *, deadline: float | None = None) -> Receipt:
        until = deadline_after(self.timeout, deadline)  # a token fetch and the upsert share one attempt's time
        path = self._path(notice.lead_id)
        body = json.dumps(self.fields(notice)).encode()
        answer = self._api("PATCH", path, body, what="salesforce upsert", deadline=until)
        document = answer.json() if answer.body else None
        receipt: Receipt = {"created": answer.status == 201}
        if isinstance(document, dict):
            if document.get("id"):
                receipt["salesforce_id"] = str(document["id"])
            if "created" in document:
                receipt["created"] = bool(document["created"])
        return receipt

    def fields(self, notice: Notice) -> dict[str, str]:
        """Lead fields for this move. Absent optional values are left out (never null),
        so the sink does not wipe what a rep entered in Salesforce."""
        t = notice.traits
        first, last = _names(t)
        values: dict[str, Any] = {
            "LastName": last or NOT_PROVIDED,
            "FirstName": first,
            "Email": notice.email,
            "Company": t.get("company") or NOT_PROVIDED,
            "Title": t.get("job_title"),
            "Country": t.get("country"),
            "Status": DISQUALIFIED_STATUS if notice.disqualified else self.status_map.get(notice.to_stage),
            "OwnerId": notice.owner.salesforce_owner_id if notice.owner else None,
        }
        out = {}
        for key, value in values.items():
            if value in (None, ""):
                continue
            text = str(value)
            limit = _FIELD_LIMITS.get(key)
            out[key] = text[:limit] if limit else text
        return out

    # ------------------------------------------------------------ HTTP with the token

    def _api(self, method: str, path: str, body: bytes | None, *, what: str, deadline: float | None = None,
             gone_ok: bool = False) -> Response:
        """`gone_ok`: a 404 is an answer (a delete of what is not there), not an error."""
        token, base = self._token(deadline)
        answer = self._send(method, base + path, body, token, what, deadline)
        if answer.status == 401:  # expired or revoked session: one new token, one more try
            self._forget(token)
            token, base = self._token(deadline)
            answer = self._send(method, base + path, body, token, what, deadline)
        if gone_ok and answer.status == 404:
            return answer
        if answer.status == 300:
            raise PermanentError(f"{what}: HTTP 300: several Leads have this {self.external_id_field}", status=300)
        if not answer.ok:
            code, message = _error(answer.json())
            if code in RETRYABLE_ERROR_CODES:
                raise RetryableError(f"{what}: HTTP {answer.status}: {code}: {message}", status=answer.status,
                                     retry_after=retry_after(answer.headers.get("retry-after")))
            raise_for(answer, what, detail=f"{code}: {message}" if code else (message or None))
        return answer

    def _send(self, method: str, url: str, body: bytes | None, token: str, what: str,
              deadline: float | None = None) -> Response:
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json",
                   "Accept": "application/json"}
        return send(method, url, body, headers, self.timeout, what=what, deadline=deadline)

    def _token(self, deadline: float | None = None) -> tuple[str, str]:
        with self._lock:
            if self._session is None:
                self._session = self._fetch_token(deadline)
            return self._session

    def _forget(self, token: str) -> None:
        with self._lock:
            if self._session and self._session[0] == token:
                self._session = None

    def _fetch_token(self, deadline: float | None = None) -> tuple[str, str]:
        what = "salesforce token"
        form = urllib.parse.urlencode({"grant_type": "client_credentials", "client_id": self.client_id,
                                       "client_secret": self.client_secret}).encode()
        headers = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}
        answer = send("POST", self.instance_url + "/services/oauth2/token", form, headers, self.timeout, what=what,
                      deadline=deadline)
        if not answer.ok:
            document = answer.json()
            detail = None
            if isinstance(document, dict) and document.get("error"):
                detail = clip(f"{document['error']}: {document.get('error_description', '')}".rstrip(": "))
            raise_for(answer, what, detail=detail)
        document = answer.json()
        if not isinstance(document, dict) or not document.get("access_token"):
            raise PermanentError(f"{what}: HTTP {answer.status}: no access_token in the answer", status=answer.status)
        return str(document["access_token"]), str(document.get("instance_url") or self.instance_url).rstrip("/")

    def __repr__(self) -> str:  # no secret in a log line
        return f"SalesforceSink(instance_url={self.instance_url!r}, api_version={self.api_version!r})"


def _names(traits: Mapping[str, Any]) -> tuple[str | None, str | None]:
    first, last = traits.get("first_name"), traits.get("last_name")
    if not first and not last and traits.get("name"):
        parts = str(traits["name"]).strip().split(None, 1)
        first, last = (parts[0], parts[1]) if len(parts) > 1 else (None, parts[0])
    return first, last


def _error(document: Any) -> tuple[str | None, str]:
    """(errorCode, message) of Salesforce's `[{"message", "errorCode", "fields"}]`."""
    if isinstance(document, list) and document and isinstance(document[0], dict):
        document = document[0]
    if not isinstance(document, dict):
        return None, ""
    code = document.get("errorCode")
    return (str(code) if code else None), clip(str(document.get("message") or ""), 160)
