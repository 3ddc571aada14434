"""The lifecycle: which stage the rules call for, and which explicit moves are legal.

Automatic moves only go forward. Moves back happen only by an explicit sales action
(reject, recycle, lost) and are recorded like any other move. A disqualified lead is
held below the handoff stages whatever its score.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from leadflow.domain.errors import IllegalTransition, InvalidInput, LeadflowError
from leadflow.domain.events import AppliedEvent
from leadflow.domain.lead import Lead, stage_rank
from leadflow.domain.rules import Criterion, Rules, in_band
from leadflow.domain.scoring import DAY, ScoreCard, grade_at_least, matches, subject_for

HANDOFF_STAGES = frozenset({"mql", "sql"})
AUTOMATIC_CEILING = "sql"  # beyond this, only sales moves a lead


@dataclass(frozen=True)
class Decision:
    stage: str
    rule: str


def bant_complete(traits: dict, rules: Rules) -> bool:
    bant = rules.lifecycle.bant
    subject = subject_for(traits, None, rules)
    return all(matches(spec, subject) for spec in (bant.budget, bant.authority, bant.need, bant.timeline))


def meets(criterion: Criterion, card: ScoreCard, hand_raises: list[int], now_s: float) -> bool:
    """Whether a stage criterion holds for a lead scored `card`, whose hand raises (epoch
    seconds, after any reset) are `hand_raises`. An aggregate with no value (an average
    of nothing) meets no bound."""
    if criterion.all is not None:
        return all(meets(c, card, hand_raises, now_s) for c in criterion.all)
    if criterion.any is not None:
        return any(meets(c, card, hand_raises, now_s) for c in criterion.any)
    if criterion.fit_grade is not None:
        return grade_at_least(card.fit_grade, criterion.fit_grade)
    if criterion.hand_raise_within_days is not None:
        return any(now_s - at <= criterion.hand_raise_within_days * DAY for at in hand_raises)
    metric = criterion.metric
    value = {"score": card.score, "fit": card.fit_score, "engagement": card.engagement_score}.get(
        metric, card.aggregates.get(metric))  # type: ignore[arg-type]
    return value is not None and in_band(criterion, value)


def automatic_target(lead: Lead, card: ScoreCard, event: AppliedEvent | None, now: datetime, rules: Rules) -> Decision | None:
    """The furthest stage the rules call for now, or None if that is not beyond the current one.

    Anonymous visitors are not contacts yet: they get no stage moves until they identify.
    """
    if not lead.known:
        return None
    life = rules.lifecycle
    now_s = now.timestamp()
    reset = lead.engagement_reset_at
    decisions: list[Decision] = [Decision("subscriber", "new_contact")]

    if lead.converted_by:
        decisions.append(Decision("lead", "conversion:" + lead.converted_by))

    disqualified = lead.disqualified
    if not disqualified:
        hand_raises = [s.at for s in lead.signals
                       if s.rule in rules.hand_raise_rules and (reset is None or s.at > reset)]
        if meets(life.mql.criterion, card, hand_raises, now_s):
            decisions.append(Decision("mql", "mql_threshold"))
        if meets(life.sql.criterion, card, hand_raises, now_s):
            decisions.append(Decision("sql", "sql_threshold"))
        if event is not None:
            decisions.extend(_instant(lead, card, event, now, rules))

    best = max(decisions, key=lambda d: stage_rank(d.stage))
    current = lead.stage if lead.history else None
    if current is not None and stage_rank(best.stage) <= stage_rank(current):
        if current == "customer" and life.evangelist_when and matches(life.evangelist_when,
                                                                      subject_for(lead.traits, lead.email, rules)):
            return Decision("evangelist", "evangelist")
        return None
    if current is not None and stage_rank(current) >= stage_rank(AUTOMATIC_CEILING):
        return None
    return best


def _instant(lead: Lead, card: ScoreCard, event: AppliedEvent, now: datetime, rules: Rules) -> list[Decision]:
    out = []
    age_days = (now - event.occurred_at).total_seconds() / DAY
    reset = lead.engagement_reset_at
    if reset is not None and event.occurred_at.timestamp() <= reset:
        return out
    subject = subject_for(lead.traits, lead.email, rules, event)
    for trigger in rules.lifecycle.instant:
        if age_days > trigger.max_age_days or not matches(trigger.when, subject):
            continue
        if trigger.require_bant and not bant_complete(lead.traits, rules):
            continue
        if trigger.min_fit_grade and not grade_at_least(card.fit_grade, trigger.min_fit_grade):
            continue
        out.append(Decision(trigger.to, trigger.id))
    return out


@dataclass(frozen=True)
class Action:
    """One row of the explicit transition table."""

    name: str
    from_stages: frozenset[str]
    to_stage: str | None  # None: the stage stays
    requires_reason: bool = False
    resets_engagement: bool = False
    disqualifies: bool = False
    clears_disqualification: bool = False
    blocked_when_disqualified: bool = True


ACTIONS: dict[str, Action] = {
    a.name: a
    for a in (
        Action("accept", frozenset({"sql"}), None),
        Action("reject", frozenset({"mql", "sql"}), "lead", requires_reason=True, resets_engagement=True, blocked_when_disqualified=False),
        Action("recycle", frozenset({"mql", "sql", "opportunity"}), "lead", resets_engagement=True,
               clears_disqualification=True, blocked_when_disqualified=False),
        Action("disqualify", frozenset({"subscriber", "lead", "mql", "sql", "opportunity"}), None, disqualifies=True,
               blocked_when_disqualified=False),
        Action("opportunity", frozenset({"sql"}), "opportunity"),
        Action("won", frozenset({"sql", "opportunity"}), "customer"),
        Action("lost", frozenset({"opportunity"}), "lead", resets_engagement=True, blocked_when_disqualified=False),
    )
}


def check_action(lead: Lead, name: str, reason: str | None) -> Action:
    action = ACTIONS.get(name)
    if action is None:
        raise InvalidInput(f"action: unknown action {name!r}; expected one of {', '.join(ACTIONS)}", field="action")
    if action.requires_reason and not (reason and reason.strip()):
        raise InvalidInput(f"reason: {name} needs a reason code", field="reason")
    if not lead.known:
        raise IllegalTransition(f"{name}: lead {lead.lead_id} is an anonymous visitor, not a contact")
    if lead.stage not in action.from_stages:
        allowed = ", ".join(sorted(action.from_stages, key=stage_rank))
        raise IllegalTransition(f"{name}: the lead is in stage {lead.stage}; {name} is allowed from {allowed}")
    if name == "accept" and lead.history and lead.history[-1].cause.action == "accept":
        last = lead.history[-1]
        raise IllegalTransition(f"accept: already accepted by {last.cause.actor} at {last.at.isoformat()}")
    if action.blocked_when_disqualified and lead.disqualified:
        raise IllegalTransition(f"{name}: the lead is disqualified ({lead.disqualified_reason}); recycle it first")
    if action.disqualifies and lead.disqualified and lead.disqualified_by == "sales":
        raise IllegalTransition(f"{name}: the lead is already disqualified ({lead.disqualified_reason})")
    return action


FOLLOW_UPS = ("opportunity", "won", "lost", "reject", "recycle", "disqualify")


def legal_follow_ups(lead: Lead) -> list[str]:
    """The sales actions the lifecycle allows for the lead now, in button order (a reason
    stands in for the ones that need one: the rep supplies it when pressing)."""
    legal = []
    for name in FOLLOW_UPS:
        try:
            check_action(lead, name, "reason")
        except LeadflowError:
            continue
        legal.append(name)
    return legal
