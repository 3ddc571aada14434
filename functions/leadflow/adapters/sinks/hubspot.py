"""Mirror each stage move onto the HubSpot contact with the lead's email.

One request per move: `POST /crm/v3/objects/contacts/batch/upsert` with a single input
`{"idProperty": "email", "id": <email>, "properties": {...}}` creates the contact or
updates it, so the sink never has to look a contact up first and a retried move
converges on the same contact. The answer is HubSpot's batch response
(`{"status": "COMPLETE", "results": [{"id", "properties", "new", ...}]}`; 207 with
`errors` when an input failed).

Lifecycle stages only move forward in HubSpot: setting `lifecyclestage` to an earlier
value is silently ignored. A move to a lower stage (a rejected SQL recycled to lead, a
lost opportunity) therefore sends two upserts, in order: first `lifecyclestage: ""`
(which clears it), then the real value. They are two requests, not two inputs of one
batch, because HubSpot does not promise to apply a batch's inputs in order. Both are
idempotent, so a retry after a failure between them converges too.

An erased person's contact is deleted with HubSpot's GDPR delete,
`POST /crm/v3/objects/contacts/gdpr-delete` (204, no body), which also removes its
associated content: by the contact ids leadflow's own upserts got back (the tombstone
keeps them), `{"objectId": "<id>"}`, a 404 meaning it is already gone; when no id is
known, on the first attempt only (the one that still has the address), by email:
`{"objectId": "<email>", "idProperty": "email"}`. HubSpot then also blocks the address
if no contact has it. A retry that has neither cannot succeed: it is dead-lettered with
the reason, for a person to delete the contact in HubSpot.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

from leadflow.domain.handoff import Erasure, Notice, SinkKind
from leadflow.domain.lead import stage_rank
from leadflow.domain.errors import PermanentError
from leadflow.domain.ports import Receipt
from leadflow.adapters.sinks.http import clip, deadline_after, raise_for, send

UPSERT_PATH = "/crm/v3/objects/contacts/batch/upsert"
GDPR_DELETE_PATH = "/crm/v3/objects/contacts/gdpr-delete"

# leadflow stage -> HubSpot's internal lifecyclestage value.
DEFAULT_LIFECYCLE_MAP: dict[str, str] = {
    "subscriber": "subscriber",
    "lead": "lead",
    "mql": "marketingqualifiedlead",
    "sql": "salesqualifiedlead",
    "opportunity": "opportunity",
    "customer": "customer",
    "evangelist": "evangelist",
}


class HubSpotSink:
    """Upserts the contact (by email) with the lead's identity, stage and owner."""

    name = "hubspot"
    kind: SinkKind = "crm"

    def __init__(self, token: str, *, base_url: str = "https://api.hubapi.com", timeout: float = 5.0,
                 lifecycle_map: Mapping[str, str | None] | None = None):
        self.token = token
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        # A custom map overrides stage by stage; None for a stage leaves lifecyclestage alone.
        self.lifecycle_map: dict[str, str | None] = {**DEFAULT_LIFECYCLE_MAP, **(lifecycle_map or {})}

    def deliver(self, notice: Notice, *, deadline: float | None = None) -> Receipt:
        if not notice.email:
            return {"skipped": "no email"}
        until = deadline_after(self.timeout, deadline)  # both requests of a move share one attempt's time
        properties = self.properties(notice)
        if properties.get("lifecyclestage") and self.moves_back(notice):
            self._upsert(notice.email, {"lifecyclestage": ""}, what="hubspot clear lifecyclestage", deadline=until)
        result = self._upsert(notice.email, properties, what="hubspot upsert", deadline=until)
        return {"contact_id": str(result.get("id")), "created": bool(result.get("new", False))}

    def erase(self, erasure: Erasure, *, deadline: float | None = None) -> Receipt:
        until = deadline_after(self.timeout, deadline)  # every delete of one attempt shares its time
        ids = erasure.ids_for(self.name)
        if ids:
            gone = [i for i in ids if self._gdpr_delete({"objectId": i}, deadline=until)]
            return {"deleted": len(gone), "by": "id"}
        if erasure.email:
            self._gdpr_delete({"objectId": erasure.email, "idProperty": "email"}, deadline=until)
            return {"deleted": 1, "by": "email"}
        raise PermanentError("hubspot gdpr delete: no contact id known and the address is no longer held: "
                             "delete the contact in HubSpot by hand")

    def _gdpr_delete(self, body: dict[str, str], *, deadline: float) -> bool:
        """True when a contact was deleted, False when it was already gone (404)."""
        what = "hubspot gdpr delete"
        answer = send("POST", self.base_url + GDPR_DELETE_PATH, json.dumps(body).encode(), self._headers(),
                      self.timeout, what=what, deadline=deadline)
        if answer.status == 404:
            return False
        raise_for(answer, what, detail=_error_detail(answer.json()) if not answer.ok else None)
        return True

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json",
                "Accept": "application/json"}

    def properties(self, notice: Notice) -> dict[str, str]:
        """Contact properties for this move. Absent traits are left out, never sent as
        "", so a value a rep typed in HubSpot is not wiped by a lead that lacks it."""
        t = notice.traits
        first, last = _names(t)
        values: dict[str, Any] = {
            "email": notice.email,
            "firstname": first,
            "lastname": last,
            "company": t.get("company"),
            "jobtitle": t.get("job_title"),
            "country": t.get("country"),
            "lifecyclestage": self.lifecycle_map.get(notice.to_stage),
            "hubspot_owner_id": notice.owner.hubspot_owner_id if notice.owner else None,
        }
        return {k: str(v) for k, v in values.items() if v not in (None, "")}

    @staticmethod
    def moves_back(notice: Notice) -> bool:
        return notice.from_stage is not None and stage_rank(notice.to_stage) < stage_rank(notice.from_stage)

    def _upsert(self, email: str, properties: dict[str, str], *, what: str, deadline: float | None = None,
                ) -> dict[str, Any]:
        body = {"inputs": [{"idProperty": "email", "id": email, "properties": {**properties, "email": email}}]}
        answer = send("POST", self.base_url + UPSERT_PATH, json.dumps(body).encode(), self._headers(), self.timeout,
                      what=what, deadline=deadline)
        raise_for(answer, what, detail=_error_detail(answer.json()) if not answer.ok else None)
        document = answer.json() or {}
        results = document.get("results") or []
        if document.get("errors") or not results:
            raise PermanentError(f"{what}: HTTP {answer.status}: {_error_detail(document) or 'no result'}",
                                 status=answer.status)
        return results[0]


def _names(traits: Mapping[str, Any]) -> tuple[str | None, str | None]:
    first, last = traits.get("first_name"), traits.get("last_name")
    if not first and not last and traits.get("name"):
        parts = str(traits["name"]).strip().split(None, 1)
        first, last = parts[0], (parts[1] if len(parts) > 1 else None)
    return first, last


def _error_detail(document: Any) -> str | None:
    """HubSpot's error shape: {"status": "error", "message", "category", "errors": [...]},
    or a batch's {"errors": [{"status", "category", "message"}]}."""
    if not isinstance(document, dict):
        return None
    errors = document.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict) and "message" not in document:
        document = errors[0]
    category = document.get("category")
    message = document.get("message")
    text = ": ".join(str(p) for p in (category, message) if p)
    return clip(text) if text else None
