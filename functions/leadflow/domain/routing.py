"""Owner routing: which sales rep a lead is handed to, and why.

The first routing rule whose `when` matches the lead names a rep or a team; no match
means the default team. A team's available reps take turns by smooth weighted
round-robin (nginx's algorithm), driven by a per-team turn counter the caller keeps
(an atomic counter in the store), so the choice is deterministic given the turn.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Callable, Iterable, Mapping

from pydantic import BaseModel, ConfigDict

from leadflow.domain.events import email_domain
from leadflow.domain.handoff import Owner
from leadflow.domain.rules import Condition, Manager, Rep, Rules, Team
from leadflow.domain.scoring import Subject, matches, subject_for


class Assignment(BaseModel):
    """Who owns a lead and why.

    `rule` is the routing rule that decided, "default_team" when none matched, or
    "unassigned" when the rules have no routing section. `owner` is None when nobody
    could be picked (no routing, or no available rep in the team); `reason` says why.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    owner: Owner | None
    team: str | None
    rule: str
    turn: int | None
    reason: str


def smooth_weighted_sequence(reps: Iterable[Rep]) -> list[str]:
    """One full cycle of smooth weighted round-robin over the available reps with weight > 0.

    Each step every rep gains its weight, the one with most credit (first in file order
    on a tie) is picked and pays back the total. The cycle is as long as the sum of the
    weights and gives each rep exactly its weight in picks, spread out: weights a=5,
    b=1, c=1 give a a b a c a a.
    """
    return list(_sequence(tuple((r.id, r.weight) for r in reps if r.available and r.weight > 0)))


@lru_cache(maxsize=256)
def _sequence(weighted: tuple[tuple[str, int], ...]) -> tuple[str, ...]:
    total = sum(w for _, w in weighted)
    credit = [0] * len(weighted)
    out: list[str] = []
    for _ in range(total):
        best = 0
        for i, (_, w) in enumerate(weighted):
            credit[i] += w
            if credit[i] > credit[best]:
                best = i
        credit[best] -= total
        out.append(weighted[best][0])
    return tuple(out)


def owner_for(rep: Rep, team: Team) -> Owner:
    return Owner(id=rep.id, name=rep.name, email=rep.email, slack_user=rep.slack_user,
                 hubspot_owner_id=rep.hubspot_owner_id, salesforce_owner_id=rep.salesforce_owner_id, team=team.id)


def assign(traits: Mapping[str, Any], email: str | None, rules: Rules, turn: Callable[[str], int]) -> Assignment:
    """Route a lead. `turn(team_id)` is called at most once, and only when a team's
    round-robin picks a rep; it returns 0, 1, 2, … per team."""
    routing = rules.routing
    if routing is None:
        return Assignment(owner=None, team=None, rule="unassigned", turn=None,
                          reason="no routing rules: leads are not assigned an owner")
    subject = subject_for(traits, email, rules)
    for rule in routing.rules:
        if not matches(rule.when, subject):
            continue
        why = f"{rule.id}: {_describe(rule.when, subject) or rule.description or 'matched'}"
        if rule.rep is not None:
            rep, team = routing.rep_by_id[rule.rep]
            if rep.available:
                return Assignment(owner=owner_for(rep, team), team=team.id, rule=rule.id, turn=None,
                                  reason=f"{why} → {_rep_label(rep)}")
            return _round_robin(team, turn, rule.id,
                                f"{why} → {rep.id}, who is unavailable; round-robin in team {team.id}")
        team = routing.team_by_id[rule.team]  # type: ignore[index]
        return _round_robin(team, turn, rule.id, f"{why} → team {team.id}")
    team = routing.team_by_id[routing.default_team]
    return _round_robin(team, turn, "default_team", f"no routing rule matched → default team {team.id}")


def _round_robin(team: Team, turn: Callable[[str], int], rule: str, why: str) -> Assignment:
    sequence = smooth_weighted_sequence(team.reps)
    if not sequence:
        return Assignment(owner=None, team=team.id, rule=rule, turn=None,
                          reason=f"{why}; no available rep in team {team.id}")
    n = int(turn(team.id))
    rep = next(r for r in team.reps if r.id == sequence[n % len(sequence)])
    return Assignment(owner=owner_for(rep, team), team=team.id, rule=rule, turn=n,
                      reason=f"{why}; weighted round-robin turn {n} → {rep.id} (weight {rep.weight})")


def _rep_label(rep: Rep) -> str:
    return f"{rep.id} ({rep.name})" if rep.name else rep.id


def _describe(cond: Condition, subject: Subject) -> str:
    """What made a matching condition match, in words: "country NO", "email domain acme.com"."""
    if cond.trait:
        return f"{cond.trait} {subject.traits.get(cond.trait)}"
    if cond.email_domain:
        return f"email domain {email_domain(subject.email)}"
    parts: list[str] = []
    for c in cond.all or []:
        if text := _describe(c, subject):
            parts.append(text)
    for c in cond.any or []:
        if matches(c, subject):
            if text := _describe(c, subject):
                parts.append(text)
            break
    return ", ".join(parts)


def owner_by_id(rep_id: str, rules: Rules) -> Owner | None:
    """The rep with this id as an Owner, available or not (an owner stays the owner)."""
    if rules.routing is None:
        return None
    found = rules.routing.rep_by_id.get(rep_id)
    return owner_for(*found) if found else None


def manager_of(team_id: str | None, rules: Rules) -> Manager | None:
    if rules.routing is None or team_id is None:
        return None
    team = rules.routing.team_by_id.get(team_id)
    return team.manager if team else None


def rep_for_actor(actor: str | None, rules: Rules) -> Owner | None:
    """The rep behind whoever acted (a Slack member id, an email address or a rep id),
    e.g. the salesperson who pressed "Accept" in Slack. Email compares case-insensitively."""
    if rules.routing is None or not actor or not actor.strip():
        return None
    key = actor.strip()
    folded = key.casefold()
    reps = list(rules.routing.rep_by_id.values())
    for test in (lambda r: r.slack_user == key,
                 lambda r: r.email is not None and r.email.casefold() == folded,
                 lambda r: r.id == key):
        for rep, team in reps:
            if test(rep):
                return owner_for(rep, team)
    return None
