"""Slack Block Kit messages for a stage move, as pure data (no I/O).

Three messages share one layout so a rep sees the same card throughout: the alert
(with Accept / Reject for an SQL), the same card once decided (buttons replaced by who
decided and when) and the SLA escalation. Everything the lead typed is escaped for
mrkdwn (&, <, >) so a job title such as "<!channel>" cannot ping a channel, and every
text is clipped to Slack's limits so an unusually long value degrades into "…" rather
than an `invalid_blocks` rejection that would dead-letter the alert.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any, Iterable

from leadflow.domain.handoff import Notice

DECISION_BLOCK_ID = "leadflow_decision"
ACCEPT_ACTION_ID = "leadflow_accept"
REJECT_ACTION_ID = "leadflow_reject"
REJECT_REASON_ACTION_ID = "leadflow_reject_reason"

# Slack's documented limits.
HEADER_LIMIT = 150
SECTION_TEXT_LIMIT = 3000
FIELD_TEXT_LIMIT = 2000
MAX_FIELDS = 10
BUTTON_VALUE_LIMIT = 2000
OPTION_TEXT_LIMIT = 75
OPTION_VALUE_LIMIT = 150
MAX_OPTIONS = 100
FALLBACK_TEXT_LIMIT = 3000
VALUE_LIMIT = 200  # one lead-provided value on the card; longer is noise

_SEPARATOR = "|"
_SLACK_ID = re.compile(r"^[UW][A-Z0-9]{2,}$")
_MENTION = re.compile(r"^<(@[UW][A-Z0-9]{2,}|!(here|channel|everyone)|!subteam\^[A-Z0-9]+)(\|[^<>]*)?>$")
_STAGE_LABELS = {"mql": "MQL", "sql": "SQL"}
_DECISIONS = {
    "accept": ("✅", "Accepted"),
    "reject": ("↩️", "Rejected"),
    "recycle": ("♻️", "Recycled"),
    "disqualify": ("🚫", "Disqualified"),
    "opportunity": ("📈", "Opportunity opened"),
    "won": ("🏆", "Won"),
    "lost": ("📉", "Lost"),
}
NEXT_BLOCK_ID = "leadflow_next"
# Buttons for the sales actions after the first decision: action -> (label, style).
_NEXT_BUTTONS = {
    "opportunity": ("Opportunity", "primary"),
    "won": ("Won", "primary"),
    "lost": ("Lost", None),
    "reject": ("Reject", "danger"),
    "recycle": ("Recycle", None),
    "disqualify": ("Disqualify", "danger"),
}


# ---------------------------------------------------------------- public builders


def alert_message(notice: Notice, reject_reasons: Iterable[str] = ()) -> dict[str, Any]:
    """The alert for a move into an alert stage; for an SQL, with the decision controls."""
    blocks = _card(notice)
    if notice.to_stage == "sql":
        blocks.append(_decision_block(notice, list(reject_reasons)))
    return {"text": _clip(_fallback(notice), FALLBACK_TEXT_LIMIT), "blocks": blocks}


def decided_message(notice: Notice, reject_reasons: Iterable[str] = (), *, action: str, actor: str,
                    reason: str | None, at: datetime, next_actions: Iterable[str] = ()) -> dict[str, Any]:
    """The alert once a rep decided: the decision's controls gone (nothing to click twice),
    who did what when, and buttons for the sales actions the lead's new stage allows
    (`next_actions`, e.g. opportunity / won / lost after an accept). Sent to the
    interaction's response_url, hence `replace_original`."""
    line = decision_line(action=action, actor=actor, reason=reason, at=at)
    blocks = _card(notice) + [{"type": "context", "elements": [{"type": "mrkdwn", "text": line}]}]
    follow_up = [a for a in dict.fromkeys(next_actions) if a in _NEXT_BUTTONS]
    if follow_up:
        blocks.append(_next_block(notice, follow_up, list(reject_reasons)))
    text = f"{_fallback(notice)}. {_plain_decision(action, actor, reason, at)}"
    return {"replace_original": True, "text": _clip(text, FALLBACK_TEXT_LIMIT), "blocks": blocks}


def escalation_message(notice: Notice, *, level: int, mention: str | None, overdue_minutes: int) -> dict[str, Any]:
    """An SLA reminder for an SQL nobody accepted in time, naming who should act now."""
    who = _mention(mention)
    headline = f"SLA: {_stage_label(notice.to_stage)} {escape(_clip(notice.display_name, VALUE_LIMIT))}"
    company = notice.traits.get("company")
    if company:
        headline += f" ({escape(_clip(str(company), VALUE_LIMIT))})"
    headline += f" not accepted after {_minutes(overdue_minutes)}"
    text = f":rotating_light: *{headline}* (escalation level {int(level)})"
    if who:
        text += f"\n{who}, please pick this up or reassign it."
    facts = [
        _field("Email", notice.email),
        _field("Company", notice.traits.get("company")),
        _field("Job title", notice.traits.get("job_title")),
        _field("Score", _number(notice.score)),
        _field("Fit grade", notice.fit_grade),
        _field("Owner", _owner(notice), escaped=True),
    ]
    blocks = [
        {"type": "section", "text": {"type": "mrkdwn", "text": _clip(text, SECTION_TEXT_LIMIT)}},
        {"type": "section", "fields": facts[:MAX_FIELDS]},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": f"Lead `{escape(notice.lead_id)}`"}]},
    ]
    fallback = f"{headline}" + (f" ({who})" if who else "")
    return {"text": _clip(fallback, FALLBACK_TEXT_LIMIT), "blocks": blocks}


def rules_summary_message(*, version: str, seq: int, action: str, by: str, moves: dict[str, int], leads: int,
                          changes: list[str]) -> dict[str, Any]:
    """One message for a rules publish (or rollback) whose moves were recorded without a
    per-lead alert: how many leads moved where, and what changed in the rules."""
    moved = sum(moves.values())
    verb = "rolled back to" if action == "rollback" else "published"
    headline = f"Rules {escape(_clip(version, VALUE_LIMIT))} (#{seq}) {verb} by {escape(_clip(by, VALUE_LIMIT))}"
    pairs = ", ".join(f"{n} {escape(pair.replace('->', ' → '))}" for pair, n in sorted(moves.items(), key=lambda kv: -kv[1]))
    body = (f"{moved} lead{'s' if moved != 1 else ''} moved under the new rules ({pairs}); "
            f"they were recorded without one alert each. {leads} leads re-scored.") if moved else \
        f"No lead moved. {leads} leads re-scored."
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*{headline}*"}},
        {"type": "section", "text": {"type": "mrkdwn", "text": _clip(body, SECTION_TEXT_LIMIT)}},
    ]
    if changes:
        listed = "\n".join(f"• {escape(_clip(line, 200))}" for line in changes[:10])
        more = f"\n… and {len(changes) - 10} more" if len(changes) > 10 else ""
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _clip(listed + more, SECTION_TEXT_LIMIT)}})
    return {"text": f"{headline}: {moved} leads moved", "blocks": blocks}


def action_value(lead_id: str, move_id: str) -> str:
    """What the Accept / Reject buttons carry back: enough to find the move, nothing personal."""
    for part in (lead_id, move_id):
        if not isinstance(part, str) or not part or _SEPARATOR in part:
            raise ValueError("lead and move ids must be non-empty and free of '|'")
    value = f"{lead_id}{_SEPARATOR}{move_id}"
    if len(value) > BUTTON_VALUE_LIMIT:
        raise ValueError(f"button value longer than Slack's {BUTTON_VALUE_LIMIT} characters")
    return value


def parse_action_value(value: Any) -> tuple[str, str]:
    """The (lead_id, move_id) of a button value; ValueError on anything else,
    since the value comes back from outside and must not be trusted."""
    if not isinstance(value, str) or len(value) > BUTTON_VALUE_LIMIT:
        raise ValueError("not a leadflow action value")
    parts = value.split(_SEPARATOR)
    if len(parts) != 2 or not all(p and p == p.strip() for p in parts):
        raise ValueError("not a leadflow action value")
    return parts[0], parts[1]


def decision_line(*, action: str, actor: str, reason: str | None, at: datetime) -> str:
    """ "✅ Accepted by <@U1> at 2026-11-20 10:02 UTC", "↩️ Rejected by Sam (no_budget) at …"."""
    icon, verb = _DECISIONS.get(action, ("☑️", action.replace("_", " ").capitalize()))
    line = f"{icon} {verb} by {_mention(actor) or 'someone'}"
    if reason:
        line += f" ({escape(_clip(reason, VALUE_LIMIT))})"
    return f"{line} at {_utc(at)}"


def escape(text: str) -> str:
    """Slack's three mrkdwn control characters; everything else is shown as typed."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# ---------------------------------------------------------------- the shared card


def _card(notice: Notice) -> list[dict[str, Any]]:
    header = f"New {_stage_label(notice.to_stage)}: {_clip(notice.display_name, VALUE_LIMIT)}"
    t = notice.traits
    fields = [
        _field("Name", notice.display_name),
        _field("Email", notice.email),
        _field("Company", t.get("company")),
        _field("Job title", t.get("job_title")),
        _field("Stage", _stage_move(notice), escaped=True),
        _field("Fit grade", notice.fit_grade),
        _field("Engagement score", _number(notice.engagement_score)),
        _field("Score", _number(notice.score)),
        _field("Owner", _owner(notice), escaped=True),
        *([_field("Source", notice.source)] if notice.source else []),
    ]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _clip(header, HEADER_LIMIT), "emoji": True}},
        {"type": "section", "fields": fields[:MAX_FIELDS]},
    ]
    if notice.message:
        quoted = "\n".join("> " + line for line in escape(_clip(notice.message, SECTION_TEXT_LIMIT - 40)).splitlines())
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _clip("*Message*\n" + quoted,
                                                                                   SECTION_TEXT_LIMIT)}})
    reasons = _reason_lines(notice.reasons)
    if reasons:
        text = "*Why*\n" + "\n".join(reasons)
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _clip(text, SECTION_TEXT_LIMIT)}})
    return blocks


def _reason_menu(reject_reasons: list[str]) -> list[dict[str, Any]]:
    options = [
        {"text": {"type": "plain_text", "text": _clip(code.replace("_", " "), OPTION_TEXT_LIMIT)}, "value": code}
        for code in dict.fromkeys(reject_reasons)  # unique, in order
        if code and len(code) <= OPTION_VALUE_LIMIT
    ][:MAX_OPTIONS]
    if not options:  # Slack refuses a static_select without options
        return []
    return [{"type": "static_select", "action_id": REJECT_REASON_ACTION_ID,
             "placeholder": {"type": "plain_text", "text": "Reason…"}, "options": options}]


def _next_block(notice: Notice, actions: list[str], reject_reasons: list[str]) -> dict[str, Any]:
    value = action_value(notice.lead_id, notice.move_id)
    elements = _reason_menu(reject_reasons) if {"reject", "disqualify"} & set(actions) else []
    for name in actions:
        label, style = _NEXT_BUTTONS[name]
        button = {"type": "button", "action_id": f"leadflow_{name}", "text": {"type": "plain_text", "text": label},
                  "value": value}
        if style:
            button["style"] = style
        elements.append(button)
    return {"type": "actions", "block_id": NEXT_BLOCK_ID, "elements": elements}


def _decision_block(notice: Notice, reject_reasons: list[str]) -> dict[str, Any]:
    value = action_value(notice.lead_id, notice.move_id)
    elements: list[dict[str, Any]] = _reason_menu(reject_reasons)
    for element in elements:
        element["placeholder"]["text"] = "Reject reason…"
    elements.append({"type": "button", "action_id": ACCEPT_ACTION_ID, "style": "primary",
                     "text": {"type": "plain_text", "text": "Accept"}, "value": value})
    elements.append({"type": "button", "action_id": REJECT_ACTION_ID, "style": "danger",
                     "text": {"type": "plain_text", "text": "Reject"}, "value": value})
    return {"type": "actions", "block_id": DECISION_BLOCK_ID, "elements": elements}


def _reason_lines(reasons: list[dict[str, Any]]) -> list[str]:
    lines = []
    for line in reasons:
        points = line.get("points")
        # The sentence, not the rule id: "+30 C-level, VP, founder or owner: job title VP Marketing".
        said = escape(_clip(str(line.get("detail") or line.get("rule") or "?"), VALUE_LIMIT))
        lines.append(f"{_signed(points)} {said}" if isinstance(points, (int, float)) else said)
    return lines


def _fallback(notice: Notice) -> str:
    """The notification text (and what screen readers say): plain words, escaped."""
    text = f"New {_stage_label(notice.to_stage)}: {escape(_clip(notice.display_name, VALUE_LIMIT))}"
    company = notice.traits.get("company")
    if company:
        text += f" ({escape(_clip(str(company), VALUE_LIMIT))})"
    return f"{text}, score {_number(notice.score)}"


def _plain_decision(action: str, actor: str, reason: str | None, at: datetime) -> str:
    return decision_line(action=action, actor=actor, reason=reason, at=at).split(" ", 1)[1]


def _field(label: str, value: Any, *, escaped: bool = False) -> dict[str, str]:
    if value is None or value == "":
        shown = "—"
    else:
        shown = str(value) if escaped else escape(_clip(str(value), VALUE_LIMIT))
    return {"type": "mrkdwn", "text": _clip(f"*{label}*\n{shown}", FIELD_TEXT_LIMIT)}


def _owner(notice: Notice) -> str:
    """A mention when the owner has a Slack id (so they get notified), else a name."""
    owner = notice.owner
    if owner is None:
        return "unassigned"
    if owner.slack_user and _SLACK_ID.match(owner.slack_user):
        return f"<@{owner.slack_user}>"
    return escape(_clip(owner.name or owner.id, VALUE_LIMIT))


def _mention(who: str | None) -> str | None:
    """A Slack member id becomes a mention; an existing mention is kept; anything else
    is shown as an escaped name (so it can never turn into <!channel>)."""
    if not who:
        return None
    who = who.strip()
    if _SLACK_ID.match(who):
        return f"<@{who}>"
    if _MENTION.match(who):
        return who
    return escape(_clip(who, VALUE_LIMIT))


def _stage_label(stage: str) -> str:
    return _STAGE_LABELS.get(stage, stage.replace("_", " ").capitalize())


def _stage_move(notice: Notice) -> str:
    target = _stage_label(notice.to_stage)
    return f"{_stage_label(notice.from_stage)} → {target}" if notice.from_stage else target


def _number(value: float | int | None) -> str:
    if value is None:
        return "—"
    rounded = round(float(value), 1)
    return str(int(rounded)) if rounded == int(rounded) else f"{rounded:.1f}"


def _signed(points: float | int) -> str:
    return ("-" if points < 0 else "+") + _number(abs(points))


def _minutes(n: int) -> str:
    return f"{n} minute" if n == 1 else f"{n} minutes"


def _utc(at: datetime) -> str:
    moment = at if at.tzinfo else at.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
