"""Email alerts to the lead's owner through Amazon SES (v2 API).

The owner's address comes from the routing rules; without one the alert goes to a
fallback recipient (a team inbox), and without either it is skipped, not failed: no
retry could invent an address. Every value the lead typed is HTML-escaped in the HTML
part and stripped of line breaks in the subject.

The default client makes exactly one attempt (botocore's own retries are off): the
dispatcher owns retries, and botocore retrying a throttled send inside one attempt
would hide the throttle from the backoff.
"""

from __future__ import annotations

import html
from typing import Any

from leadflow.domain.handoff import Notice, SinkKind
from leadflow.domain.ports import Receipt
from leadflow.adapters.sinks.aws import call_aws, single_attempt_client

RETRYABLE_CODES = frozenset({
    "TooManyRequestsException", "Throttling", "ThrottlingException", "LimitExceededException",
    "InternalFailure", "InternalServiceError", "ServiceUnavailable", "ServiceUnavailableException",
    "SendingPausedException", "RequestTimeout", "RequestTimeoutException",
})

_STAGE_LABELS = {"mql": "MQL", "sql": "SQL"}


class EmailSink:
    """Sends the alert for a move into MQL or SQL to the owner by email."""

    name = "email"
    kind: SinkKind = "alert"

    def __init__(self, sender: str, *, fallback_recipient: str | None = None, client: Any = None,
                 configuration_set: str | None = None):
        self.sender = sender
        self.fallback_recipient = fallback_recipient
        self.configuration_set = configuration_set
        self._client = client

    def deliver(self, notice: Notice, *, deadline: float | None = None) -> Receipt:
        recipient = (notice.owner.email if notice.owner else None) or self.fallback_recipient
        if not recipient:
            return {"skipped": "no owner email and no fallback recipient"}
        request: dict[str, Any] = {
            "FromEmailAddress": self.sender,
            "Destination": {"ToAddresses": [recipient]},
            "Content": {"Simple": {
                "Subject": {"Data": subject(notice), "Charset": "UTF-8"},
                "Body": {
                    "Text": {"Data": text_body(notice), "Charset": "UTF-8"},
                    "Html": {"Data": html_body(notice), "Charset": "UTF-8"},
                },
            }},
        }
        if self.configuration_set:
            request["ConfigurationSetName"] = self.configuration_set
        answer = call_aws("ses send_email", lambda: self._ses().send_email(**request), RETRYABLE_CODES)
        return {"message_id": answer.get("MessageId")}

    def _ses(self) -> Any:
        if self._client is None:
            self._client = single_attempt_client("sesv2")
        return self._client


# ---------------------------------------------------------------- content


def subject(notice: Notice) -> str:
    """ "SQL: Jane Doe, Acme (score 87)"; one line, whatever the lead typed."""
    who = notice.display_name
    company = notice.traits.get("company")
    if company:
        who += f", {company}"
    text = f"{_stage(notice.to_stage)}: {who} (score {_number(notice.score)})"
    return " ".join(text.split())[:200]  # no CR/LF can reach a header


def text_body(notice: Notice) -> str:
    lines = [f"New {_stage(notice.to_stage)}: {notice.display_name}", ""]
    lines += [f"{label}: {value}" for label, value in _facts(notice)]
    reasons = _reasons(notice)
    if reasons:
        lines += ["", "Why:"] + [f"  {line}" for line in reasons]
    lines += ["", f"Lead id: {notice.lead_id}"]
    return "\n".join(lines) + "\n"


def html_body(notice: Notice) -> str:
    e = html.escape
    rows = "".join(
        f"<tr><th align=\"left\" style=\"padding:2px 12px 2px 0\">{e(label)}</th><td>{e(str(value))}</td></tr>"
        for label, value in _facts(notice)
    )
    reasons = "".join(f"<li>{e(line)}</li>" for line in _reasons(notice))
    parts = [
        "<!DOCTYPE html><html><body style=\"font-family:sans-serif\">",
        f"<h2>New {e(_stage(notice.to_stage))}: {e(notice.display_name)}</h2>",
        f"<table>{rows}</table>",
        f"<h3>Why</h3><ul>{reasons}</ul>" if reasons else "",
        f"<p style=\"color:#666\">Lead id: {e(notice.lead_id)}</p>",
        "</body></html>",
    ]
    return "".join(parts)


def _facts(notice: Notice) -> list[tuple[str, Any]]:
    t = notice.traits
    owner = notice.owner
    facts: list[tuple[str, Any]] = [
        ("Name", notice.display_name),
        ("Email", notice.email),
        ("Company", t.get("company")),
        ("Job title", t.get("job_title")),
        ("Phone", t.get("phone")),
        ("Country", t.get("country")),
        ("Stage", f"{_stage(notice.from_stage)} → {_stage(notice.to_stage)}" if notice.from_stage
         else _stage(notice.to_stage)),
        ("Score", _number(notice.score)),
        ("Fit grade", notice.fit_grade),
        ("Engagement score", _number(notice.engagement_score)),
        ("Owner", (owner.name or owner.id) if owner else "unassigned"),
        ("Source", notice.source),
        ("Message", notice.message),
    ]
    return [(label, value) for label, value in facts if value not in (None, "")]


def _reasons(notice: Notice) -> list[str]:
    out = []
    for line in notice.reasons:
        points = line.get("points")
        head = (("-" if points < 0 else "+") + _number(abs(points)) + " ") if isinstance(points, (int, float)) else ""
        out.append(f"{head}{line.get('detail') or line.get('rule', '?')}")
    return out


def _stage(stage: str | None) -> str:
    return _STAGE_LABELS.get(stage or "", (stage or "").capitalize())


def _number(value: float | int) -> str:
    rounded = round(float(value), 1)
    return str(int(rounded)) if rounded == int(rounded) else f"{rounded:.1f}"


# ---------------------------------------------------------------- AWS calls, shared with EventBridge
