from __future__ import annotations

import threading

from leadflow.domain.events import parse_event
from leadflow.usecases.leads import LeadService
from tests.conftest import TEST_LEAD_IDS, lead_id_for


def _hammer(service, n_threads, per_thread, make):
    errors = []

    def worker(t):
        try:
            for i in range(per_thread):
                service.ingest(parse_event(make(t, i)))
        except Exception as exc:  # pragma: no cover - surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []


def test_concurrent_events_on_one_lead_none_lost(store, rules):
    service = LeadService(store, rules, ids=TEST_LEAD_IDS)
    _hammer(service, 6, 10, lambda t, i: {"event_id": f"t{t}-{i}", "type": "email_opened", "email": "hot@acme.io"})
    lead = store.get(lead_id_for("hot@acme.io"))
    assert len(lead.seen) == 60 and lead.version == 60


def test_concurrent_first_events_make_one_lead(store, rules):
    service = LeadService(store, rules, ids=TEST_LEAD_IDS)
    _hammer(service, 6, 1, lambda t, i: {"event_id": f"first-{t}", "type": "identify", "email": "new@acme.io"})
    leads = [l for l in store.scan_leads() if l.email == "new@acme.io"]
    assert len(leads) == 1 and len(leads[0].seen) == 6
    assert [m.to_stage for m in leads[0].history] == ["subscriber"]


def test_concurrent_duplicates_apply_once(store, rules):
    service = LeadService(store, rules, ids=TEST_LEAD_IDS)
    _hammer(service, 6, 5, lambda t, i: {"event_id": f"same-{i}", "type": "content_downloaded", "email": "dup@acme.io"})
    lead = store.get(lead_id_for("dup@acme.io"))
    assert len(lead.seen) == 5 and len([s for s in lead.signals if s.rule == "content_download"]) == 5


def test_existing_lead_event_costs_one_read_and_one_write(store, rules):
    service = LeadService(store, rules, ids=TEST_LEAD_IDS)
    service.ingest(parse_event({"type": "identify", "email": "cost@acme.io"}))
    store.calls.clear()
    service.ingest(parse_event({"type": "email_clicked", "email": "cost@acme.io"}))
    assert store.calls == {"GetItem": 1, "PutItem": 1}
