"""The lead page's decay curves are the scoring asked at later moments: a half-life rule
halves every half-life, a rule without one stays flat until its max age, caps and
engagement resets hold, and the first point is the score's own line."""

from __future__ import annotations

from datetime import timedelta

import pytest

from leadflow.domain.lead import Lead, Signal
from leadflow.domain.rules import parse_rules
from leadflow.domain.scoring import engagement
from leadflow.usecases.signal_decay import SAMPLES, decay_curves
from tests.conftest import NOW

RULES = {
    "language": 2,
    "version": "decay-test",
    "fit": {"grades": {"A": 60, "B": 40, "C": 10},
            "rules": [{"id": "has_title", "when": {"trait": "job_title", "exists": True}, "points": 15}]},
    "engagement": {
        "rules": [
            {"id": "pricing_visit", "description": "visited pricing", "when": {"event": "page_viewed"},
             "points": 10, "half_life_days": 10, "max_age_days": 365},
            {"id": "webinar", "when": {"event": "webinar_attended"}, "points": 5, "max_age_days": 20},
            {"id": "clicks", "when": {"event": "email_clicked"}, "points": 4, "half_life_days": 2, "cap": 6},
            {"id": "visits_30d", "aggregate": "visits", "points": 3, "per": 1, "cap": 30},
        ],
        "aggregates": [{"id": "visits", "of": {"event": "page_viewed"}, "fn": "count", "window_days": 30,
                        "half_life_days": 15}],
    },
    "lifecycle": {"mql": {"when": {"metric": "engagement", "gte": 1000}},
                  "sql": {"when": {"metric": "engagement", "gte": 2000}},
                  "bant": {name: {"trait": name, "exists": True} for name in ("budget", "authority", "need", "timeline")}},
}


def lead_with(*signals: tuple[str, float], reset_at: int | None = None) -> Lead:
    """A lead whose signals happened `days` before NOW."""
    return Lead(lead_id="ld_test", stage_entered_at=NOW, created_at=NOW, updated_at=NOW,
                engagement_reset_at=reset_at,
                signals=[Signal(rule=rule, at=int((NOW - timedelta(days=days)).timestamp()), event=f"e{n}")
                         for n, (rule, days) in enumerate(signals)])


@pytest.fixture(scope="module")
def rules():
    return parse_rules(RULES)


def by_rule(curves: dict) -> dict:
    return {line["rule"]: line for line in curves["lines"]}


def test_a_half_life_rule_halves_every_half_life_and_a_rule_without_is_flat_until_its_max_age(rules):
    curves = decay_curves(lead_with(("pricing_visit", 0), ("webinar", 0)), rules, NOW)
    lines = by_rule(curves)

    assert curves["horizon_days"] == 40  # four of the longest half-life (10 days), at least 30
    assert len(curves["days"]) == SAMPLES + 1 and curves["days"][0] == 0 and curves["days"][-1] == 40
    for day, points in zip(curves["days"], lines["pricing_visit"]["points"]):
        assert points == pytest.approx(10 * 0.5 ** (day / 10), abs=0.01), day
    assert lines["pricing_visit"]["half_life_days"] == 10 and lines["pricing_visit"]["description"] == "visited pricing"
    assert lines["webinar"]["half_life_days"] is None  # shown as "no decay"
    assert [p for d, p in zip(curves["days"], lines["webinar"]["points"]) if d <= 20] == \
        [5.0] * sum(1 for d in curves["days"] if d <= 20)
    assert [p for d, p in zip(curves["days"], lines["webinar"]["points"]) if d > 20] == \
        [0.0] * sum(1 for d in curves["days"] if d > 20)  # past its max age it no longer counts


def test_the_first_point_is_the_scores_own_line_and_caps_and_aggregates_hold(rules):
    lead = lead_with(("clicks", 0), ("clicks", 0), ("clicks", 1), ("visits", 1), ("visits", 3))
    _, lines_now, _ = engagement(lead.signals, NOW, rules, None)
    curves = decay_curves(lead, rules, NOW)
    lines = by_rule(curves)

    assert {line["rule"]: line["points"] for line in lines_now} == {r: line["now"] for r, line in lines.items()}
    assert lines["clicks"]["now"] == 6  # 4 + 4 + 2 capped at 6
    assert max(lines["clicks"]["points"]) == 6 and lines["clicks"]["end"] < 1
    assert lines["visits_30d"]["half_life_days"] == 15 and lines["visits_30d"]["kind"] == "aggregate"
    assert lines["visits_30d"]["end"] == 0  # both visits left the 30-day window


def test_nothing_scoring_gives_no_lines_and_a_reset_hides_what_came_before(rules):
    assert decay_curves(lead_with(), rules, NOW) == {"days": [], "horizon_days": 0, "lines": []}
    reset = int((NOW - timedelta(days=1)).timestamp())
    curves = decay_curves(lead_with(("pricing_visit", 2), ("webinar", 0), reset_at=reset), rules, NOW)
    assert list(by_rule(curves)) == ["webinar"]
    assert curves["horizon_days"] == 90  # nothing that decays: the default span
