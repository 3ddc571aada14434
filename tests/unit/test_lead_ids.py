"""Lead ids that do not leak: HMAC-SHA256 of the address with the deployment's key, so
an address cannot be turned into its id (nor an id linked to an address) without the
key; and the table's record of its derivation, so that neither an upgrade nor a changed
key silently makes every returning lead a new one."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from leadflow.domain.errors import Misconfigured
from leadflow.domain.lead import LeadIds, lead_id_for_anonymous, lead_id_for_email
from leadflow.usecases.lead_ids import KEYED, LEGACY, lead_ids_in_force

KEY = "k" * 40
OTHER = "o" * 40


def test_a_lead_id_is_the_hmac_of_the_address_with_the_key_truncated_as_before():
    expected = "ld_" + hmac.new(KEY.encode(), b"email:jane@acme.io", hashlib.sha256).hexdigest()[:24]

    assert lead_id_for_email("jane@acme.io", KEY.encode()) == expected
    assert LeadIds(KEY.encode()).for_email("jane@acme.io") == expected
    assert LeadIds(KEY.encode()).for_anonymous("v-1") == (
        "an_" + hmac.new(KEY.encode(), b"anon:v-1", hashlib.sha256).hexdigest()[:24])


def test_without_the_key_the_address_gives_another_id_than_the_plain_hash():
    keyed = LeadIds(KEY.encode()).for_email("jane@acme.io")
    plain = "ld_" + hashlib.sha256(b"email:jane@acme.io").hexdigest()[:24]

    assert keyed != plain
    assert keyed != LeadIds(OTHER.encode()).for_email("jane@acme.io")
    assert LeadIds(None).for_email("jane@acme.io") == plain  # the legacy derivation, unchanged
    assert lead_id_for_anonymous("v-1", None) == "an_" + hashlib.sha256(b"anon:v-1").hexdigest()[:24]


def test_the_key_is_required_and_never_shown():
    with pytest.raises(TypeError):
        lead_id_for_email("jane@acme.io")  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="at least 32"):
        LeadIds(b"short")
    ids = LeadIds(KEY.encode())
    assert KEY not in repr(ids) and KEY not in str(ids) and repr(ids) == "LeadIds(keyed)"
    assert ids.check() is not None and KEY not in ids.check()
    assert LeadIds(None).check() is None


class Record:
    """The table's record of its derivation, in memory (adapters.dynamodb.lead_ids)."""

    def __init__(self, record=None, has_leads=False):
        self.record = record
        self.leads = has_leads
        self.claims = 0

    def read(self):
        return None if self.record is None else dict(self.record)

    def claim(self, record):
        self.claims += 1
        if self.record is None:
            self.record = dict(record)
        return dict(self.record)

    def has_leads(self):
        return self.leads


def decide(key, table):
    warnings: list[str] = []
    return lead_ids_in_force(key, table, warnings.append), warnings


def test_a_new_table_records_the_key_and_ids_are_keyed():
    table = Record()

    ids, warnings = decide(KEY, table)

    assert ids == LeadIds(KEY.encode()) and warnings == []
    assert table.record == {"scheme": KEYED, "check": LeadIds(KEY.encode()).check()}
    assert decide(KEY, table)[0] == ids and table.claims == 1  # read, not claimed again


def test_a_new_table_without_a_key_is_refused():
    with pytest.raises(Misconfigured, match="LEADFLOW_LEAD_ID_KEY is not set"):
        decide(None, Record())


def test_a_table_written_before_keyed_ids_keeps_its_ids_and_says_they_can_be_computed():
    table = Record(has_leads=True)

    ids, warnings = decide(KEY, table)

    assert ids.legacy and ids.for_email("jane@acme.io") == "ld_" + hashlib.sha256(b"email:jane@acme.io").hexdigest()[:24]
    assert table.record == {"scheme": LEGACY}
    assert len(warnings) == 1 and "unkeyed" in warnings[0] and "README" in warnings[0] and KEY not in warnings[0]
    assert decide(None, table)[0].legacy  # with or without a key configured


def test_another_key_than_the_tables_is_refused_rather_than_splitting_every_lead():
    table = Record({"scheme": KEYED, "check": LeadIds(KEY.encode()).check()})

    with pytest.raises(Misconfigured, match="not the key this table"):
        decide(OTHER, table)
    with pytest.raises(Misconfigured, match="derived with a key"):
        decide(None, table)


def test_a_misconfiguration_is_a_503_that_says_what_to_do():
    with pytest.raises(Misconfigured) as refused:
        decide(OTHER, Record({"scheme": KEYED, "check": LeadIds(KEY.encode()).check()}))

    assert refused.value.status == 503 and refused.value.body()["error"] == "misconfigured"
    assert "restore the key" in refused.value.message and OTHER not in refused.value.message
