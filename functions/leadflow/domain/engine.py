"""Applying events and actions to a lead: pure functions of (lead, input, rules, now).

Nothing here reads a clock or a table. The service passes `now`, so the same inputs
always give the same lead, which is what makes replay equal incremental application.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Iterable

from leadflow.domain.events import AppliedEvent
from leadflow.domain.forms import is_public
from leadflow.domain.lead import (
    Cause, FormConversion, Lead, Message, Move, Review, SalesOutcome, Signal, Touch, event_key, last_move_into, stage_rank,
)
from leadflow.domain.lifecycle import HANDOFF_STAGES, automatic_target, check_action
from leadflow.domain.rules import Rules
from leadflow.domain.scoring import DAY, ScoreCard, fmt, intent_flags, score, signals_for

TOP_REASONS = 5


@dataclass
class Outcome:
    lead: Lead
    moves: list[Move] = field(default_factory=list)
    duplicate: bool = False


def new_lead(lead_id: str, *, email: str | None, now: datetime) -> Lead:
    return Lead(lead_id=lead_id, email=email, stage_entered_at=now, created_at=now, updated_at=now)


def _epoch(at: datetime) -> int:
    return int(at.timestamp())


def _precedence(source: str | None, at: int, value, policy: str) -> tuple:
    """The order in which writes to one trait win, highest last. Between verified sources
    (absent: a trait set before sources were kept), the last write wins by the event's own
    time, a tie broken by value (then source), so the order two simultaneous events arrive
    in cannot change the result. A public form's write ranks below every verified one; among form
    writes, the first wins (`empty`) or the last (`unverified`). With `any`, a form
    ranks as a verified source. One total order, so the result is the same whatever order
    the writes arrive in, and a replay of the event log gives the same traits."""
    shown = repr("" if value is None else value)  # a cleared trait holds no value: None and "" are one clear
    if is_public(source) and policy != "any":
        return (0, -at if policy == "empty" else at, shown, source or "")
    return (1, at, shown, source or "")


def _wins(lead: Lead, name: str, value, at: int, source: str, policy: str) -> bool:
    held_at = lead.trait_times.get(name)
    if held_at is None:
        return True
    held = _precedence(lead.trait_sources.get(name), held_at, lead.traits.get(name), policy)
    return _precedence(source, at, value, policy) > held


def _merge_trait(lead: Lead, name: str, value, at: int, source: str = "api", policy: str = "empty") -> bool:
    """Set one trait if this write wins (`_precedence`); an empty value from a verified
    source clears it. Returns whether it was set."""
    if not _wins(lead, name, value, at, source, policy):
        return False
    lead.trait_times[name] = at
    lead.trait_sources[name] = source
    if value is None or value == "":
        lead.traits.pop(name, None)
    else:
        lead.traits[name] = value
    return True


MAX_REVIEW = 20


def _protected(lead: Lead, rules: Rules) -> bool:
    """Whether the lead has been handed far enough to sales that a public form may only
    fill its empty traits, and none that would disqualify it."""
    floor = rules.forms.public.protect_from
    return floor is not None and lead.known and bool(lead.history) and stage_rank(lead.stage) >= stage_rank(floor)


def _offer_traits(lead: Lead, event: AppliedEvent, rules: Rules) -> None:
    """A public form's traits, as far as the rules' `forms.public` policy lets them in. A
    blank field is not an answer: it clears nothing. Form writes rank by arrival, not by
    the `occurred_at` a visitor may claim (unless the policy is `any`). On a protected
    lead (handed to sales), a value other than the one held, or a trait that would
    disqualify the lead, is not applied but listed in `review` with a sentence."""
    policy = rules.forms.public
    at = _epoch(event.occurred_at if policy.traits == "any" else event.received_at)
    given = sorted((n, v) for n, v in event.traits.items() if v is not None and v != "")
    if not _protected(lead, rules):
        for name, value in given:
            _merge_trait(lead, name, value, at, event.source, policy.traits)
        return
    flags = set(intent_flags(lead.traits, lead.email, rules))
    for name, value in given:
        held = lead.traits.get(name)
        if held == value:
            continue
        if held is not None or not _wins(lead, name, value, at, event.source, policy.traits):
            _review(lead, "conflict", name, value, event, held=held)
            continue
        before = lead.trait_times.get(name), lead.trait_sources.get(name)
        _merge_trait(lead, name, value, at, event.source, policy.traits)
        new = intent_flags(lead.traits, lead.email, rules)
        gained = sorted(reason for rule_id, reason in new.items() if rule_id not in flags)
        if gained:
            lead.traits.pop(name)
            for attr, old in zip(("trait_times", "trait_sources"), before):
                if old is None:
                    getattr(lead, attr).pop(name)
                else:
                    getattr(lead, attr)[name] = old
            _review(lead, "would_disqualify", name, value, event, because=", ".join(gained))


def _review(lead: Lead, reason: str, name: str, value, event: AppliedEvent, *, held=None, because: str = "") -> None:
    label, stage = name.replace("_", " "), lead.stage.upper() if lead.stage in ("mql", "sql") else lead.stage
    if reason == "would_disqualify":
        detail = (f'a public form ({event.source}) gave {label} "{fmt(value)}", which would disqualify this {stage} '
                  f"({because}); not applied, for sales to review")
    else:
        origin = lead.trait_sources.get(name) or "a verified source"
        kept = f'holds "{fmt(held)}" from {origin}' if held is not None else f"had it removed by {origin}"
        detail = (f'a public form ({event.source}) gave {label} "{fmt(value)}"; this {stage} {kept}, '
                  "which stays; for sales to review")
    if any(r.reason == reason and r.field == f"traits.{name}" and r.value == value and r.source == event.source
           for r in lead.review):
        return  # said already: a form posted twice is one thing to review
    lead.review.append(Review(reason=reason, field=f"traits.{name}", value=value, at=event.received_at,
                              source=event.source, event_id=event.event_id, detail=detail))
    lead.review = lead.review[-MAX_REVIEW:]


def _prune(lead: Lead, rules: Rules, now: datetime) -> None:
    """Drop signals that can never count again (past their rule's max age) and keep
    at most `signals_per_rule` per rule, the newest. Evaluation ignores old signals
    anyway; this only keeps the item small."""
    now_s = now.timestamp()
    keep: dict[str, list[Signal]] = {}
    for s in lead.signals:
        rule = rules.engagement_by_id.get(s.rule)
        agg = rules.aggregate_by_id.get(s.rule)
        horizon = (rule.max_age_days if rule else agg.window_days if agg else 365) * DAY
        if now_s - s.at <= horizon:
            keep.setdefault(s.rule, []).append(s)
    pruned = []
    for rule_id, items in keep.items():
        limit = rules.limits.events_per_aggregate if rule_id in rules.aggregate_by_id else rules.limits.signals_per_rule
        items.sort(key=lambda s: (s.at, s.event))
        pruned.extend(items[-limit:])
    pruned.sort(key=lambda s: (s.at, s.rule, s.event))
    lead.signals = pruned


def score_lead(lead: Lead, rules: Rules, now: datetime) -> ScoreCard:
    """The lead's fit, engagement and explanation as of `now`."""
    return score(traits=lead.traits, email=lead.email, signals=lead.signals, now=now, rules=rules,
                 reset_at=lead.engagement_reset_at)


def _set_score(lead: Lead, card: ScoreCard, rules: Rules, now: datetime) -> None:
    lead.fit_score = card.fit_score
    lead.fit_grade = card.fit_grade
    lead.engagement_score = card.engagement_score
    lead.score = card.score
    lead.explanation = card.explanation
    lead.rules_version = rules.version
    lead.scored_at = now
    lead.intent_flags = card.intent_flags
    if lead.disqualified_by != "sales":
        if card.intent_flags:
            lead.disqualified = True
            lead.disqualified_by = "rules"
            lead.disqualified_reason = sorted(card.intent_flags.values())[0]
        else:
            lead.disqualified, lead.disqualified_by, lead.disqualified_reason = False, None, None


def move_id(lead_id: str, key: str, to_stage: str) -> str:
    return "tr_" + hashlib.sha256(f"{lead_id}|{key}|{to_stage}".encode()).hexdigest()[:24]


def _record(lead: Lead, *, to_stage: str, cause: Cause, key: str, rules: Rules, now: datetime) -> Move:
    from_stage = lead.stage if lead.history else None
    move = Move(
        move_id=move_id(lead.lead_id, key, to_stage),
        from_stage=from_stage,
        to_stage=to_stage,
        at=now,
        cause=cause,
        rules_version=rules.version,
        score=lead.score,
        fit_grade=lead.fit_grade,
        engagement_score=lead.engagement_score,
        reasons=[{"rule": l["rule"], "points": l["points"], "detail": l["detail"]} for l in lead.explanation[:TOP_REASONS]],
    )
    lead.history.append(move)
    lead.moves.append(move.move_id)
    if to_stage != lead.stage or from_stage is None:
        lead.stage = to_stage  # type: ignore[assignment]
        lead.stage_entered_at = now
    return move


def _advance(lead: Lead, event: AppliedEvent | None, rules: Rules, now: datetime) -> list[Move]:
    card = score_lead(lead, rules, now)
    _set_score(lead, card, rules, now)
    decision = automatic_target(lead, card, event, now, rules)
    if decision is None:
        return []
    cause = Cause(kind="rule", rule=decision.rule, event_id=event.event_id if event else None,
                  event_type=event.type if event else None)
    key = event.event_id if event else f"rescore|{rules.version}|{now.isoformat()}"
    return [_record(lead, to_stage=decision.stage, cause=cause, key=key, rules=rules, now=now)]


def apply_event(lead: Lead, event: AppliedEvent, rules: Rules, now: datetime) -> Outcome:
    """Apply one event. A lead remembers the events it applied, so a redelivery is a no-op."""
    key = event_key(event.event_id)
    if lead.has_seen(key):
        return Outcome(lead=lead, duplicate=True)
    lead = lead.model_copy(deep=True, update={"moves": []})
    moves = _apply_event(lead, event, key, rules, now)
    return Outcome(lead=lead, moves=moves)


def _apply_event(lead: Lead, event: AppliedEvent, key: str, rules: Rules, now: datetime) -> list[Move]:
    """apply_event on a lead this call owns (changed in place)."""
    at = _epoch(event.occurred_at)
    if not lead.seen:
        lead.signals_key = rules.signals_key  # its first event: its signals are these rules'
    if is_public(event.source):
        _offer_traits(lead, event, rules)
    else:
        for name, value in sorted(event.traits.items()):
            _merge_trait(lead, name, value, at, event.source, rules.forms.public.traits)
    _remember_source(lead, event)
    if event.anonymous_id and lead.known and event.anonymous_id not in lead.anonymous_ids:
        lead.anonymous_ids.append(event.anonymous_id)
    if event.type == "email_unsubscribed":
        lead.marketing_email = "unsubscribed"
    elif event.type == "email_bounced" and lead.marketing_email == "subscribed":
        lead.marketing_email = "bounced"
    for rule_id, value in signals_for(event, lead.traits, lead.email, rules):
        lead.signals.append(Signal(rule=rule_id, at=at, event=key, value=value))
        if lead.converted_by is None and _converts(rule_id, rules):
            lead.converted_by = rule_id
    _prune(lead, rules, now)
    lead.seen.append(key)
    if len(lead.seen) > rules.limits.seen_event_ids:
        lead.seen = lead.seen[-rules.limits.seen_event_ids:]
    moves = _advance(lead, event, rules, now)
    lead.updated_at = now
    lead.applied = [event.to_record()]
    return moves


def _converts(rule_id: str, rules: Rules) -> bool:
    rule = rules.engagement_by_id.get(rule_id)
    return rule is not None and rule.conversion


def _host(url: str) -> str | None:
    rest = url.split("://", 1)[-1]
    host = rest.split("/", 1)[0].split("?", 1)[0].split("@")[-1].split(":")[0].lower()
    return host.removeprefix("www.") or None


def touch_of(event: AppliedEvent) -> Touch | None:
    """The source an event names: its UTM parameters, else the referrer's site."""
    props = event.properties

    def text(name: str) -> str | None:
        value = props.get(name)
        return str(value).strip()[:200] or None if value not in (None, "") else None

    source, medium, campaign, referrer = text("utm_source"), text("utm_medium"), text("utm_campaign"), text("referrer")
    if not (source or medium or campaign or referrer):
        return None
    if source is None and referrer:
        source = _host(referrer)
        medium = medium or "referral"
    return Touch(source=source, medium=medium, campaign=campaign, referrer=referrer, at=event.occurred_at)


def _remember_source(lead: Lead, event: AppliedEvent) -> None:
    """First touch is the earliest source by event time, last touch the latest; a message
    typed in a form is kept, the latest by event time."""
    if (touch := touch_of(event)) is not None:
        if lead.first_touch is None or touch.at < lead.first_touch.at:
            lead.first_touch = touch
        if lead.last_touch is None or touch.at >= lead.last_touch.at:
            lead.last_touch = touch
    if event.type == "form_submitted":
        form = event.properties.get("form_id") or event.properties.get("form_kind")
        if form not in (None, "") and (lead.first_form is None or event.occurred_at < lead.first_form.at):
            lead.first_form = FormConversion(form=str(form)[:100], at=event.occurred_at)
    text = event.properties.get("message")
    if isinstance(text, str) and text.strip() and (lead.message is None or event.occurred_at >= lead.message.at):
        form = event.properties.get("form_id")
        lead.message = Message(text=text.strip()[:2000], at=event.occurred_at, form_id=str(form) if form else None)


def absorb(lead: Lead, visitor: Lead, anonymous_id: str) -> Lead:
    """Join an anonymous visitor's history to the lead it turned out to be."""
    lead = lead.model_copy(deep=True)
    for name, value in visitor.traits.items():
        _merge_trait(lead, name, value, visitor.trait_times.get(name, 0), visitor.trait_sources.get(name, "api"))
    have = {(s.rule, s.at, s.event) for s in lead.signals}
    lead.signals.extend(s for s in visitor.signals if (s.rule, s.at, s.event) not in have)
    lead.signals.sort(key=lambda s: (s.at, s.rule, s.event))
    seen = set(lead.seen)
    lead.seen.extend(k for k in visitor.seen if k not in seen)
    lead.converted_by = lead.converted_by or visitor.converted_by
    for touch in (visitor.first_touch, visitor.last_touch):
        if touch is not None and (lead.first_touch is None or touch.at < lead.first_touch.at):
            lead.first_touch = touch
        if touch is not None and (lead.last_touch is None or touch.at >= lead.last_touch.at):
            lead.last_touch = touch
    if visitor.message is not None and (lead.message is None or visitor.message.at >= lead.message.at):
        lead.message = visitor.message
    if visitor.first_form is not None and (lead.first_form is None or visitor.first_form.at < lead.first_form.at):
        lead.first_form = visitor.first_form
    for anon in [*visitor.anonymous_ids, anonymous_id]:
        if anon not in lead.anonymous_ids:
            lead.anonymous_ids.append(anon)
    return lead


def apply_action(lead: Lead, name: str, *, reason: str | None, by: str | None, rules: Rules, now: datetime) -> Outcome:
    """An explicit sales move; illegal ones raise IllegalTransition with the reason."""
    action = check_action(lead, name, reason)
    lead = lead.model_copy(deep=True, update={"moves": []})
    reason = (reason or "").strip() or None
    if action.resets_engagement:
        lead.engagement_reset_at = _epoch(now)
    if action.clears_disqualification and lead.disqualified_by == "sales":
        lead.disqualified, lead.disqualified_by, lead.disqualified_reason = False, None, None
    if action.disqualifies:
        lead.disqualified, lead.disqualified_by = True, "sales"
        lead.disqualified_reason = reason or "disqualified_by_sales"
    card = score_lead(lead, rules, now)
    _set_score(lead, card, rules, now)
    _first_touch(lead, by or "api", now)
    if name in ("won", "lost"):
        lead.outcome = SalesOutcome(result=name, at=now, reason=reason, by=by or "api")
    to_stage = action.to_stage or lead.stage
    cause = Cause(kind="actor", action=name, actor=by or "api", reason=reason)
    key = f"{name}|{now.isoformat()}|{len(lead.history)}"
    move = _record(lead, to_stage=to_stage, cause=cause, key=key, rules=rules, now=now)
    lead.updated_at = now
    lead.applied = []
    return Outcome(lead=lead, moves=[move])


def apply_stage(lead: Lead, stage: str, *, actor: str, reason: str, key: str, rules: Rules, now: datetime) -> Outcome:
    """A stage someone set in another system of record (a human changing HubSpot's
    lifecycle stage): honoured as an explicit move, forward or back, recorded with who
    and why. Setting the stage the lead already has is no move. `key` (the source
    event's id) makes the move's id stable, so a redelivered change is the same move."""
    if not lead.known:
        from leadflow.domain.errors import IllegalTransition

        raise IllegalTransition(f"set stage: lead {lead.lead_id} is an anonymous visitor, not a contact")
    if stage == lead.stage and lead.history:
        return Outcome(lead=lead, moves=[])
    lead = lead.model_copy(deep=True, update={"moves": []})
    if stage_rank(stage) < stage_rank(lead.stage):
        lead.engagement_reset_at = _epoch(now)  # like a reject: a lead sent back starts afresh
    card = score_lead(lead, rules, now)
    _set_score(lead, card, rules, now)
    cause = Cause(kind="actor", action="set_stage", actor=actor, reason=reason, event_id=key)
    move = _record(lead, to_stage=stage, cause=cause, key=f"set_stage|{key}", rules=rules, now=now)
    lead.updated_at = now
    lead.applied = []
    return Outcome(lead=lead, moves=[move])


IMPORT_ACTOR = "import"


def apply_import(lead: Lead, events: list[AppliedEvent], *, key: str, stage: str | None, stage_at: datetime | None,
                 outcome: SalesOutcome | None, owner: str | None, rules: Rules, now: datetime) -> Outcome:
    """One imported row: its events applied each at its own time (what leadflow would
    have done had it been there), then the stage and outcome the source system holds,
    recorded as explicit moves by the import, then scores brought to `now`. A stage the
    row states is the truth as of the import: the rules do not move the lead past it
    then, and a stage set back restarts engagement from its date (as a person setting it
    back in the CRM does), so old behaviour cannot re-qualify it later. Every move it
    makes is history, not news: kept, never announced (not in the outbox). Nothing new,
    nothing written: `duplicate` is True when a re-run finds it all applied."""
    lead = lead.model_copy(deep=True, update={"moves": []})  # one copy; changed in place below
    changed = False
    records: list[dict] = []
    made: list[str] = []
    for event in sorted(events, key=lambda e: (e.occurred_at, e.event_id)):
        seen_key = event_key(event.event_id)
        if lead.has_seen(seen_key):
            continue
        at = max(event.occurred_at, lead.updated_at) if lead.history else event.occurred_at
        made.extend(m.move_id for m in _apply_event(lead, event, seen_key, rules, min(at, now)))
        records.extend(lead.applied)
        changed = True
    if outcome is not None and (lead.outcome is None or lead.outcome.model_dump() != outcome.model_dump()):
        lead.outcome = outcome
        changed = True
        if outcome.result == "won" and stage is None and stage_rank(lead.stage) < stage_rank("customer"):
            stage, stage_at = "customer", outcome.at
    if stage is not None and lead.known and stage != lead.stage:
        when = min(max(stage_at or now, lead.updated_at), now)
        out = apply_stage(lead, stage, actor=IMPORT_ACTOR, reason="imported", key=f"import|{key}|{stage}", rules=rules,
                          now=when)
        lead = out.lead
        made.extend(m.move_id for m in out.moves)
        changed = True
    if owner is not None and owner != lead.owner:
        lead.owner = owner
        changed = True
    if not changed:
        return Outcome(lead=lead, duplicate=True)
    _prune(lead, rules, now)
    if stage is None:
        made.extend(m.move_id for m in _advance(lead, None, rules, now))  # scores as of now, and any move they call for
    else:
        _set_score(lead, score_lead(lead, rules, now), rules, now)
    quiet = set(made)
    for move in lead.history:
        if move.move_id in quiet:
            move.announced = False
    lead.updated_at = now
    lead.applied = records
    lead.moves = []  # history brought in is not news: nothing for the handoff
    return Outcome(lead=lead, moves=[m for m in lead.history if m.move_id in quiet])


def _first_touch(lead: Lead, actor: str, now: datetime) -> None:
    """The first sales action on an SQL since it became one is its first touch (the
    speed-to-lead figure the funnel reports and the SLA watchdog waits for)."""
    if lead.stage != "sql":
        return
    entered = last_move_into(lead, "sql")
    if entered is None or (lead.first_touch_at is not None and lead.first_touch_at >= entered.at):
        return
    lead.first_touch_at = now
    lead.first_touch_by = actor
    lead.first_touch_seconds = round(max(0.0, (now - entered.at).total_seconds()), 3)


def rescore(lead: Lead, rules: Rules, now: datetime) -> Outcome:
    """Refresh decayed scores (and apply any forward move a new rules version calls for)."""
    lead = lead.model_copy(deep=True, update={"moves": []})
    _prune(lead, rules, now)
    moves = _advance(lead, None, rules, now)
    lead.applied = []
    return Outcome(lead=lead, moves=moves)


def rebase(lead: Lead, events: Iterable[AppliedEvent], rules: Rules, now: datetime) -> Outcome:
    """Re-derive a lead's signals from its event log under new rules (a new rules version
    may score events the old one ignored). Traits, history and stage are kept: moves
    already made stand, and any forward move the new rules call for is recorded. A signal
    of an event the log does not hold yet (the log is appended from the table's stream,
    a moment after the write) is kept while its rule still exists."""
    lead = lead.model_copy(deep=True, update={"moves": []})
    signals: list[Signal] = []
    logged: set[str] = set()
    converted = lead.converted_by
    for event in sorted(events, key=lambda e: (e.occurred_at, e.event_id)):
        key = event_key(event.event_id)
        logged.add(key)
        for rule_id, value in signals_for(event, lead.traits, lead.email, rules):
            signals.append(Signal(rule=rule_id, at=_epoch(event.occurred_at), event=key, value=value))
            if converted is None and _converts(rule_id, rules):
                converted = rule_id
    known = set(rules.engagement_by_id) | set(rules.aggregate_by_id)
    signals.extend(s for s in lead.signals if s.event not in logged and s.rule in known)
    signals.sort(key=lambda s: (s.at, s.rule, s.event))
    lead.signals, lead.converted_by, lead.signals_key = signals, converted, rules.signals_key
    _prune(lead, rules, now)
    moves = _advance(lead, None, rules, now)
    lead.applied = []
    return Outcome(lead=lead, moves=moves)


def needs_events(lead: Lead, rules: Rules) -> bool:
    """Whether bringing a lead to `rules` needs its event log: its signals were derived
    under rules that turn events into signals differently."""
    return lead.signals_key != rules.signals_key


def refresh(lead: Lead, rules: Rules, now: datetime, events: Iterable[AppliedEvent] | None = None) -> Outcome:
    """The lead brought to `rules` as of `now`: scores decayed, any forward move the rules
    call for recorded. Its signals are re-derived from `events` (its log) only when the
    rules derive them differently (`needs_events`); otherwise the log is not needed."""
    if needs_events(lead, rules):
        if events is None:
            raise ValueError(f"lead {lead.lead_id}: its signals were derived under other rules; pass its event log")
        return rebase(lead, events, rules, now)
    return rescore(lead, rules, now)


def replay_as_of(lead_id: str, email: str | None, events: Iterable[AppliedEvent], rules: Rules,
                 as_of: datetime) -> tuple[Lead, list[Move]]:
    """What the rules alone would have made of a lead: its events up to `as_of` applied
    in the order they happened, each at its own time (as an import does), then scored as
    of `as_of`. No stage anyone set, no sales action: only the rules' own moves, which
    are returned with the times they would have happened."""
    ordered = sorted((e for e in events if e.occurred_at <= as_of), key=lambda e: (e.occurred_at, e.event_id))
    lead = new_lead(lead_id, email=email, now=ordered[0].occurred_at if ordered else as_of)
    moves: list[Move] = []
    for event in ordered:
        key = event_key(event.event_id)
        if not lead.has_seen(key):
            moves.extend(_apply_event(lead, event, key, rules, event.occurred_at))
    _prune(lead, rules, as_of)
    moves.extend(_advance(lead, None, rules, as_of))
    lead.moves, lead.applied = [], []
    return lead, moves


def replay(lead_id: str, email: str | None, events: Iterable[AppliedEvent], rules: Rules) -> Lead:
    """Rebuild a lead from its event log, each event applied at the time it was received."""
    ordered = sorted(events, key=lambda e: (e.received_at, e.event_id))
    if not ordered:
        raise ValueError("replay needs at least one event")
    lead = new_lead(lead_id, email=email, now=ordered[0].received_at)
    for event in ordered:
        lead = apply_event(lead, event, rules, event.received_at).lead
    return lead


def is_handoff(move: Move) -> bool:
    return move.to_stage in HANDOFF_STAGES and stage_rank(move.to_stage) > stage_rank(move.from_stage)
