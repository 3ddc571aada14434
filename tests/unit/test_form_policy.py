"""What a public website form may change on a lead (`forms.public` in the rules): it adds
behaviour and fills empty traits; it never overwrites what a verified source said, and
never disqualifies a lead handed to sales: that is listed under `review` instead. Pure:
the engine with the default rules, no table."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from leadflow.domain.engine import absorb, apply_event, new_lead, replay
from leadflow.domain.errors import RulesError
from leadflow.domain.events import AppliedEvent, finalise, parse_event
from leadflow.domain.forms import is_public, to_event, trapped

from tests.conftest import NOW, lead_id_for

EMAIL = "bob@tiny.io"
BANT = {"budget": "yes", "authority": "decision_maker", "need": "speed", "timeline": "this_quarter"}
SQL_EVENT = {"type": "form_submitted", "properties": {"form_kind": "demo_request"},
             "traits": {"company_size": 3, "job_title": "CEO", "phone": "+47 1", **BANT}}


@pytest.fixture(scope="module")
def raw_rules():
    from leadflow.settings import rules_text

    return yaml.safe_load(rules_text(None)[0])


def rules_with(raw_rules, **public):
    from tests.conftest import rules_with as shared

    return shared(raw_rules, **{f"forms__public__{k}": v for k, v in public.items()})


class Play:
    """One lead, events applied one after another, each arriving a minute after the last."""

    def __init__(self, rules, email: str = EMAIL):
        self.rules, self.email, self.n = rules, email, 0
        self.lead = new_lead(lead_id_for(email), email=email, now=NOW)
        self.log: list[dict] = []

    def send(self, raw: dict, *, source: str = "api", occurred_at=None):
        self.n += 1
        now = NOW + timedelta(minutes=self.n)
        body = {"event_id": f"e{self.n:03d}", "email": self.email, "type": "identify", **raw}
        if occurred_at is not None:
            body["occurred_at"] = occurred_at.isoformat()
        event = finalise(parse_event(body), now=now, source=source)
        out = apply_event(self.lead, event, self.rules, now)
        self.lead = out.lead
        self.log.extend(json.loads(json.dumps(r)) for r in out.lead.applied)
        return out

    def form(self, form_id: str = "contact", kind: str = "newsletter", **traits):
        return self.send({"type": "form_submitted", "properties": {"form_kind": kind, "form_id": form_id},
                          "traits": traits}, source=f"form:{form_id}")


def test_only_form_sources_are_public():
    assert is_public("form:contact")
    assert not any(is_public(s) for s in ("api", "import", "webhook:mautic", "webhook:generic", None))


def test_form_cannot_overwrite_or_disqualify_an_sql_and_says_so_for_review(rules):
    p = Play(rules)
    assert p.send(SQL_EVENT).lead.stage == "sql"
    p.form(job_title="Student intern", phone="999", city="Oslo")
    lead = p.lead
    assert (lead.stage, lead.disqualified) == ("sql", False)
    assert lead.traits["job_title"] == "CEO" and lead.traits["phone"] == "+47 1"
    assert lead.traits["city"] == "Oslo" and lead.trait_sources["city"] == "form:contact"  # empty: filled
    assert lead.trait_sources["job_title"] == "api"
    review = {r.field: r for r in lead.review}
    assert set(review) == {"traits.job_title", "traits.phone"}
    assert review["traits.job_title"].reason == "conflict" and review["traits.job_title"].value == "Student intern"
    assert review["traits.job_title"].source == "form:contact"
    assert review["traits.job_title"].detail == ('a public form (form:contact) gave job title "Student intern"; '
                                                 'this SQL holds "CEO" from api, which stays; for sales to review')


def test_form_filling_an_empty_trait_that_would_disqualify_an_sql_is_held_for_review(rules):
    p = Play(rules)
    p.send({**SQL_EVENT, "traits": {"company_size": 3, **BANT}})
    assert p.lead.stage == "sql" and "job_title" not in p.lead.traits
    out = p.form(job_title="Student intern", industry="software")
    lead = out.lead
    assert (lead.stage, lead.disqualified, out.moves) == ("sql", False, [])
    assert "job_title" not in lead.traits and "job_title" not in lead.trait_times
    assert "job_title" not in lead.trait_sources
    assert lead.traits["industry"] == "software"  # harmless: filled
    [held] = lead.review
    assert (held.reason, held.field, held.value) == ("would_disqualify", "traits.job_title", "Student intern")
    assert "would disqualify this SQL (student)" in held.detail
    p.form(job_title="Student intern")  # the same thing said again is one thing to review
    assert len(p.lead.review) == 1


def test_review_is_bounded(rules):
    from leadflow.domain.engine import MAX_REVIEW

    p = Play(rules)
    p.send(SQL_EVENT)
    for i in range(MAX_REVIEW + 5):
        p.form(phone=f"+1 {i}")
    assert len(p.lead.review) == MAX_REVIEW and p.lead.review[-1].value == f"+1 {MAX_REVIEW + 4}"


def test_verified_events_after_a_form_are_unaffected(rules):
    p = Play(rules)
    p.send({**SQL_EVENT, "traits": {"company_size": 3, **BANT}})
    p.form(job_title="Student intern", city="Oslo")
    p.send({"traits": {"city": "Bergen"}})  # a verified source overwrites what a form filled
    assert p.lead.traits["city"] == "Bergen" and p.lead.trait_sources["city"] == "api"
    p.send({"traits": {"job_title": "Student"}})  # and may disqualify: it is the system of record
    assert p.lead.disqualified and p.lead.disqualified_reason == "student"


def test_before_handoff_a_form_fills_empty_traits_and_counts_its_behaviour(rules):
    p = Play(rules)
    p.send({"traits": {"job_title": "VP Marketing", "company": "Acme"}})
    out = p.form(kind="content_download", job_title="Student", company="Evil", country="NO")
    assert out.lead.traits == {"job_title": "VP Marketing", "company": "Acme", "country": "NO"}
    assert out.lead.review == []  # not handed to sales: nothing to review
    assert out.lead.stage == "lead" and out.lead.converted_by == "content_download"  # its behaviour counts
    p.form(country="SE")
    assert p.lead.traits["country"] == "NO"  # `empty`: the first form's value stays


def test_before_handoff_a_form_may_disqualify_by_filling_an_empty_trait(rules):
    p = Play(rules)
    p.form(job_title="Student")
    assert p.lead.disqualified and p.lead.stage == "subscriber"


def test_policy_unverified_lets_a_later_form_replace_a_form_value_but_not_a_verified_one(rules, raw_rules):
    p = Play(rules_with(raw_rules, traits="unverified"))
    p.send({"traits": {"company": "Acme"}})
    p.form(country="NO", company="Evil")
    p.form(country="SE")
    assert p.lead.traits == {"company": "Acme", "country": "SE"}


def test_policy_any_treats_a_form_as_verified_except_on_a_protected_lead(rules, raw_rules):
    p = Play(rules_with(raw_rules, traits="any"))
    p.send({"traits": {"company": "Acme"}})
    p.form(company="Other")
    assert p.lead.traits["company"] == "Other"
    p = Play(rules_with(raw_rules, traits="any", protect_from=None))
    p.send(SQL_EVENT)
    p.form(job_title="Student intern")
    assert p.lead.disqualified and p.lead.stage == "sql"  # what the policy allows, the form does


def test_protect_from_sql_leaves_an_mql_to_the_trait_policy(rules, raw_rules):
    p = Play(rules_with(raw_rules, protect_from="sql"))
    p.send({"traits": {"job_title": "VP Marketing", "company_size": 120, "industry": "software", "country": "NO"}})
    p.send({"type": "form_submitted", "properties": {"form_kind": "demo_request"}})
    assert p.lead.stage == "mql"
    p.form(role="student")
    assert p.lead.disqualified and p.lead.review == []


def test_a_blank_form_field_clears_nothing(rules):
    p = Play(rules)
    p.form(phone="+47 2", city="Oslo")
    p.form(phone="", city=None)
    assert p.lead.traits["phone"] == "+47 2" and p.lead.traits["city"] == "Oslo"


def test_a_backdated_form_post_does_not_win_over_an_earlier_form(rules):
    """Form writes rank by arrival: a visitor's `occurred_at` cannot make theirs the first."""
    p = Play(rules)
    p.form(company="Acme")
    p.send({"type": "form_submitted", "properties": {"form_kind": "newsletter"}, "traits": {"company": "Evil"}},
           source="form:contact", occurred_at=NOW - timedelta(days=300))
    assert p.lead.traits["company"] == "Acme"


def test_a_verified_clear_is_not_undone_by_a_form(rules):
    p = Play(rules)
    p.send({"traits": {"phone": "+47 1"}})
    p.send({"traits": {"phone": ""}})
    p.form(phone="+47 9")
    assert "phone" not in p.lead.traits


def test_traits_set_before_sources_were_kept_count_as_verified(rules):
    p = Play(rules)
    p.send({"traits": {"company": "Acme"}})
    p.lead.trait_sources.clear()  # a lead stored before trait provenance
    p.form(company="Evil")
    assert p.lead.traits["company"] == "Acme"


def test_a_visitors_traits_keep_their_source_when_it_identifies(rules):
    visitor = new_lead("an_v1", email=None, now=NOW)
    visitor.traits, visitor.trait_times, visitor.trait_sources = {"city": "Oslo"}, {"city": 100}, {"city": "form:x"}
    lead = new_lead(lead_id_for(EMAIL), email=EMAIL, now=NOW)
    joined = absorb(lead, visitor, "v1")
    assert joined.trait_sources == {"city": "form:x"}


def test_rebuilding_from_the_event_log_gives_the_same_traits_sources_and_review(rules):
    p = Play(rules)
    p.send({**SQL_EVENT, "traits": {"company_size": 3, **BANT}})
    p.form(job_title="Student intern", city="Oslo", phone="+47 5")
    p.form(phone="+47 6", company="Acme")
    p.send({"traits": {"city": "Bergen"}})
    rebuilt = replay(p.lead.lead_id, EMAIL, [AppliedEvent.model_validate(r) for r in p.log], rules)
    for name in ("traits", "trait_sources", "trait_times", "stage", "disqualified"):
        assert getattr(rebuilt, name) == getattr(p.lead, name), name
    assert [r.model_dump() for r in rebuilt.review] == [r.model_dump() for r in p.lead.review]
    assert p.lead.review  # the case above does hold something back


# -- properties ------------------------------------------------------------------------------

SOURCES = st.sampled_from(["api", "form:contact", "form:demo", "webhook:hubspot", "import"])
TRAITS = st.fixed_dictionaries({}, optional={
    "job_title": st.sampled_from(["VP Sales", "Student intern", "CEO", ""]),
    "company_size": st.sampled_from([3, 120, 12000]),
    "phone": st.sampled_from(["+47 1", "+47 2", ""]),
    "role": st.sampled_from(["student", "buyer"]),
})
RAW = st.fixed_dictionaries({
    "type": st.sampled_from(["identify", "form_submitted", "page_viewed"]),
    "traits": TRAITS,
    "source": SOURCES,
    "kind": st.sampled_from(["demo_request", "contact_request", "newsletter"]),
    "age_days": st.integers(0, 30),
})


def _applied(i: int, raw: dict, received):
    props = {"form_kind": raw["kind"]} if raw["type"] == "form_submitted" else {"url": "https://acme.example/pricing"}
    body = {"event_id": f"e{i:02d}", "type": raw["type"], "email": EMAIL, "traits": raw["traits"],
            "properties": props if raw["type"] != "identify" else {},
            "occurred_at": (received - timedelta(days=raw["age_days"])).isoformat()}
    return finalise(parse_event(body), now=received, source=raw["source"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(RAW, min_size=1, max_size=15), st.lists(st.integers(0, 48), min_size=15, max_size=15))
def test_replay_with_public_and_verified_sources_equals_incremental_application(rules, raws, gaps):
    lead = new_lead(lead_id_for(EMAIL), email=EMAIL, now=NOW)
    received, log = NOW, []
    for i, raw in enumerate(raws):
        received += timedelta(hours=gaps[i])
        lead = apply_event(lead, _applied(i, raw, received), rules, received).lead
        log.extend(json.loads(json.dumps(r)) for r in lead.applied)
    rebuilt = replay(lead.lead_id, EMAIL, [AppliedEvent.model_validate(r) for r in log], rules)
    assert (rebuilt.traits, rebuilt.trait_sources, rebuilt.stage, rebuilt.disqualified) == \
        (lead.traits, lead.trait_sources, lead.stage, lead.disqualified)
    assert [r.model_dump() for r in rebuilt.review] == [r.model_dump() for r in lead.review]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(RAW, min_size=2, max_size=8), st.randoms(use_true_random=False), st.sampled_from(["empty", "unverified"]))
def test_the_traits_do_not_depend_on_the_order_writes_arrive_in(raw_rules, raws, rnd, policy):
    """Without stage protection (which depends on the stage reached so far), the traits
    are one total order over (verified or not, time, value): any arrival order, one result."""
    rules = rules_with(raw_rules, traits=policy, protect_from=None)
    events = [_applied(i, raw, NOW) for i, raw in enumerate(raws)]

    def run(order):
        lead = new_lead(lead_id_for(EMAIL), email=EMAIL, now=NOW)
        for i in order:
            lead = apply_event(lead, events[i], rules, NOW).lead
        return lead.traits, lead.trait_sources, lead.disqualified

    order = list(range(len(events)))
    shuffled = order[:]
    rnd.shuffle(shuffled)
    assert run(order) == run(shuffled)


@given(st.lists(RAW, min_size=1, max_size=12))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_no_public_form_ever_disqualifies_or_changes_a_lead_handed_to_sales(rules, raws):
    p = Play(rules)
    p.send(SQL_EVENT)
    before = dict(p.lead.traits)
    for raw in raws:
        p.send({"type": "form_submitted", "properties": {"form_kind": raw["kind"]}, "traits": raw["traits"]},
               source="form:contact")
    assert p.lead.stage == "sql" and not p.lead.disqualified
    assert {k: p.lead.traits[k] for k in before} == before


# -- the rules' forms section ------------------------------------------------------------------


@pytest.mark.parametrize("url", ["javascript:alert(1)", "/thanks", "//evil.example/", "https://", "ftp://x.io/",
                                 "https://user:pw@x.io/", "https://x.io:99999/", "https://x.io/a b",
                                 "https://x.io/\r\nSet-Cookie: a=b"])
def test_a_redirect_url_that_is_not_absolute_http_is_refused_at_load(raw_rules, url):
    from tests.conftest import rules_with as shared

    for where in ({"forms__redirect_url": url}, {"forms__per_form": {"demo": {"redirect_url": url}}}):
        with pytest.raises(RulesError, match="redirect"):
            shared(raw_rules, **where)


def test_form_settings_fall_back_to_the_forms_defaults(raw_rules):
    from tests.conftest import rules_with as shared

    forms = shared(raw_rules, forms__redirect_url="https://acme.example/thanks",
                   forms__time_trap={"min_seconds": 2},
                   forms__per_form={"demo": {"redirect_url": "https://acme.example/demo-thanks"}}).forms
    assert forms.settings_for("demo").redirect_url == "https://acme.example/demo-thanks"
    assert forms.settings_for("demo").time_trap.min_seconds == 2
    assert forms.settings_for("newsletter").redirect_url == "https://acme.example/thanks"


def test_an_unknown_stage_or_policy_is_refused_at_load(raw_rules):
    with pytest.raises(RulesError, match="protect_from"):
        rules_with(raw_rules, protect_from="hot")
    with pytest.raises(RulesError, match="traits"):
        rules_with(raw_rules, traits="sometimes")


@pytest.mark.parametrize("stamp, caught", [
    (None, "missing"), ("soon", "missing"), ("nan", "missing"), ("inf", "missing"),
    (NOW.timestamp() - 1, "too_fast"), (NOW.timestamp() - 10, None), ((NOW.timestamp() - 10) * 1000, None),
    (NOW.timestamp() + 3600, "future"), (NOW.timestamp() - 25 * 3600, "stale"), (NOW.timestamp() + 60, "too_fast"),
])
def test_time_trap(raw_rules, stamp, caught):
    from tests.conftest import rules_with as shared

    forms = shared(raw_rules, forms__per_form={"demo": {"time_trap": {"min_seconds": 3, "max_age_hours": 24}}}).forms
    fields = {"email": "a@b.co"} if stamp is None else {"email": "a@b.co", "_ts": str(stamp)}
    assert trapped("demo", fields, forms, NOW) == caught
    assert trapped("newsletter", fields, forms, NOW) is None  # no trap on that form


def test_the_time_trap_field_is_not_kept_on_the_event(raw_rules):
    from tests.conftest import rules_with as shared

    forms = shared(raw_rules, forms__time_trap={"field": "rendered_at"}).forms
    event = to_event("demo", {"email": "a@b.co", "rendered_at": "1", "_hp": ""}, forms, fallback_id="x")
    assert set(event.properties) == {"form_id", "form_kind"}
