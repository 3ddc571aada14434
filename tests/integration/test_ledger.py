"""The delivery ledger on DynamoDB (moto): a move's sinks claimed in one write and settled
in one more, each sink keeping its own state, and exactly once per sink through
redelivery, concurrent claims, crashes between claim and settle, retries and replays."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import timedelta

import pytest

from leadflow.adapters.dynamodb.ledger import DynamoDeliveryLedger
from leadflow.domain.ports import Claim
from tests.conftest import NOW
from tests.integration.conftest import TABLE

SINKS = ["slack", "email", "webhook", "hubspot", "salesforce", "eventbridge"]
LEAD, MOVE = "ld_0123456789abcdef01234567", "tr_0123456789abcdef01234567"


class Writes:
    """Write calls the ledger's client makes, counted as DynamoDB bills them (botocore's
    before-call event on that client alone; a failed conditional write is billed too)."""

    OPERATIONS = ("UpdateItem", "PutItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems")

    def __init__(self, client):
        self.calls: Counter[str] = Counter()
        client.meta.events.register("before-call.dynamodb", self._count)

    def _count(self, model, **_):
        if model.name in self.OPERATIONS:
            self.calls[model.name] += 1

    @property
    def total(self) -> int:
        return sum(self.calls.values())


@pytest.fixture
def ledger(aws):
    return DynamoDeliveryLedger(TABLE, client=aws)


@pytest.fixture
def writes(aws):
    return Writes(aws)


def states(claims: dict[str, Claim]) -> dict[str, str]:
    return {sink: claim.state for sink, claim in claims.items()}


def statuses(ledger, lead_id=LEAD) -> dict[str, tuple[str, int]]:
    return {d["sink"]: (d["status"], d["attempts"]) for d in ledger.deliveries(lead_id)}


def test_claim_all_and_settle_all_of_a_new_move_are_two_writes_of_one_item(ledger, writes, aws):
    claims = ledger.claim_all(LEAD, MOVE, SINKS, now=NOW, lease_seconds=120)
    ledger.settle_all(LEAD, MOVE, {s: ("sent", {"id": s}) for s in SINKS}, now=NOW)

    assert states(claims) == {s: Claim.GRANTED for s in SINKS} and {c.attempts for c in claims.values()} == {1}
    assert writes.calls == {"UpdateItem": 2}
    items = aws.query(TableName=TABLE, KeyConditionExpression="PK = :pk",
                      ExpressionAttributeValues={":pk": {"S": f"LEAD#{LEAD}"}})["Items"]
    assert [it["SK"]["S"] for it in items] == [f"SEND#{MOVE}"]
    assert statuses(ledger) == {s: ("sent", 1) for s in SINKS}
    assert {d["sink"]: d["detail"] for d in ledger.deliveries(LEAD)}["hubspot"] == {"id": "hubspot"}


def test_claim_all_of_a_redelivered_move_finds_every_sink_done_and_writes_nothing_more(ledger, writes):
    ledger.claim_all(LEAD, MOVE, SINKS, now=NOW, lease_seconds=120)
    ledger.settle_all(LEAD, MOVE, {s: ("sent", None) for s in SINKS[:5]} | {"eventbridge": ("dead", None)}, now=NOW)

    again = ledger.claim_all(LEAD, MOVE, SINKS, now=NOW + timedelta(hours=1), lease_seconds=120)

    assert states(again) == {s: Claim.DONE for s in SINKS}
    assert again["eventbridge"].status == "dead" and again["slack"].status == "sent"
    assert writes.total == 3  # the claim, the settle, and the redelivery's one refused conditional write


def test_claim_all_after_one_sink_failed_claims_that_sink_alone(ledger, writes):
    ledger.claim_all(LEAD, MOVE, SINKS, now=NOW, lease_seconds=120)
    ledger.settle_all(LEAD, MOVE, {s: ("failed" if s == "hubspot" else "sent", None) for s in SINKS}, now=NOW)

    redelivered = ledger.claim_all(LEAD, MOVE, SINKS, now=NOW, lease_seconds=120)

    assert states(redelivered) == {s: Claim.GRANTED if s == "hubspot" else Claim.DONE for s in SINKS}
    assert redelivered["hubspot"].attempts == 2
    assert statuses(ledger)["hubspot"] == ("sending", 2) and statuses(ledger)["slack"] == ("sent", 1)


def test_claim_of_a_retried_sink_is_one_write_and_leaves_the_other_sinks_alone(ledger, writes):
    ledger.claim_all(LEAD, MOVE, SINKS, now=NOW, lease_seconds=120)
    ledger.settle_all(LEAD, MOVE, {s: ("failed" if s == "webhook" else "sent", {"s": s}) for s in SINKS}, now=NOW)
    before = writes.total

    # As the retry path claims: one sink, known to the ledger already.
    claim = ledger.claim_all(LEAD, MOVE, ["webhook"], now=NOW + timedelta(seconds=5), lease_seconds=120,
                             first=False)["webhook"]
    ledger.settle(LEAD, MOVE, "webhook", status="sent", now=NOW + timedelta(seconds=6), detail={"status": 200})

    assert claim.state == Claim.GRANTED and claim.attempts == 2
    assert writes.total - before == 2
    assert statuses(ledger) == {s: ("sent", 2 if s == "webhook" else 1) for s in SINKS}
    assert {d["sink"]: d["detail"] for d in ledger.deliveries(LEAD)}["webhook"] == {"status": 200}


def test_claim_while_another_sender_holds_the_lease_is_busy_until_it_runs_out(ledger):
    ledger.claim_all(LEAD, MOVE, SINKS, now=NOW, lease_seconds=60)  # a sender that then crashed

    during = ledger.claim_all(LEAD, MOVE, SINKS, now=NOW + timedelta(seconds=30), lease_seconds=60)
    after = ledger.claim_all(LEAD, MOVE, SINKS, now=NOW + timedelta(seconds=61), lease_seconds=60)
    taken = ledger.claim_all(LEAD, MOVE, SINKS, now=NOW + timedelta(seconds=62), lease_seconds=60)

    assert states(during) == {s: Claim.BUSY for s in SINKS}
    assert states(after) == {s: Claim.GRANTED for s in SINKS} and {c.attempts for c in after.values()} == {2}
    assert states(taken) == {s: Claim.BUSY for s in SINKS}


def test_claim_all_when_some_sinks_are_new_and_some_were_claimed_before(ledger):
    ledger.claim(LEAD, MOVE, "webhook", now=NOW, lease_seconds=60)
    ledger.settle(LEAD, MOVE, "webhook", status="failed", now=NOW, detail={"error": "HTTP 503"})
    ledger.claim(LEAD, MOVE, "slack", now=NOW, lease_seconds=60)  # still sending

    claims = ledger.claim_all(LEAD, MOVE, ["slack", "webhook", "hubspot"], now=NOW, lease_seconds=60)

    assert states(claims) == {"slack": Claim.BUSY, "webhook": Claim.GRANTED, "hubspot": Claim.GRANTED}
    assert claims["webhook"].attempts == 2 and claims["hubspot"].attempts == 1


def test_concurrent_claims_of_one_move_grant_each_sink_to_one_claimant(ledger):
    barrier = threading.Barrier(4)
    results: list[dict[str, Claim]] = []
    lock = threading.Lock()

    def claim():
        barrier.wait(10)
        got = ledger.claim_all(LEAD, MOVE, SINKS, now=NOW, lease_seconds=120)
        with lock:
            results.append(got)

    workers = [threading.Thread(target=claim) for _ in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(30)

    assert len(results) == 4
    for sink in SINKS:
        assert sorted(r[sink].state for r in results) == [Claim.BUSY] * 3 + [Claim.GRANTED]


def test_settle_all_leaves_a_sink_claimed_by_a_retry_in_between_untouched(ledger):
    ledger.claim_all(LEAD, MOVE, ["slack", "webhook"], now=NOW, lease_seconds=120)
    ledger.settle(LEAD, MOVE, "webhook", status="failed", now=NOW)
    ledger.claim(LEAD, MOVE, "webhook", now=NOW + timedelta(seconds=2), lease_seconds=120)  # a retry, in flight

    ledger.settle_all(LEAD, MOVE, {"slack": ("sent", None)}, now=NOW + timedelta(seconds=3))

    assert statuses(ledger) == {"slack": ("sent", 1), "webhook": ("sending", 2)}


def test_settle_after_the_lead_was_erased_writes_nothing_back(ledger, aws):
    ledger.claim_all(LEAD, MOVE, SINKS, now=NOW, lease_seconds=120)
    aws.delete_item(TableName=TABLE, Key={"PK": {"S": f"LEAD#{LEAD}"}, "SK": {"S": f"SEND#{MOVE}"}})

    ledger.settle_all(LEAD, MOVE, {s: ("sent", {"id": 1}) for s in SINKS}, now=NOW)

    assert ledger.deliveries(LEAD) == []


def test_revive_makes_a_dead_sink_claimable_and_refuses_a_sent_one(ledger):
    ledger.claim_all(LEAD, MOVE, ["slack", "hubspot"], now=NOW, lease_seconds=120)
    ledger.settle_all(LEAD, MOVE, {"slack": ("sent", None), "hubspot": ("dead", {"why": "permanent_error"})}, now=NOW)

    assert ledger.revive(LEAD, MOVE, "hubspot", now=NOW) is True
    assert ledger.revive(LEAD, MOVE, "slack", now=NOW) is False
    claim = ledger.claim(LEAD, MOVE, "hubspot", now=NOW, lease_seconds=120)

    assert claim.state == Claim.GRANTED and claim.attempts == 1
    assert statuses(ledger)["slack"] == ("sent", 1)


def test_deliveries_lists_items_of_the_earlier_one_item_per_sink_layout(ledger, aws):
    aws.put_item(TableName=TABLE, Item={"PK": {"S": f"LEAD#{LEAD}"}, "SK": {"S": "SEND#tr_old#sla-escalation-1"},
                                        "status": {"S": "sent"}, "attempts": {"N": "1"}, "kind": {"S": "delivery"},
                                        "updated_at": {"S": NOW.isoformat()}, "detail": {"S": '{"level":1}'}})
    ledger.claim_all(LEAD, MOVE, ["slack"], now=NOW, lease_seconds=120)

    got = sorted(ledger.deliveries(LEAD), key=lambda d: d["move_id"])

    assert [(d["move_id"], d["sink"], d["status"]) for d in got] == [(MOVE, "slack", "sending"),
                                                                      ("tr_old", "sla-escalation-1", "sent")]
    assert got[1]["detail"] == {"level": 1}


def test_claim_of_a_new_sink_on_a_settled_move_is_one_write(ledger, writes):
    ledger.claim_all(LEAD, MOVE, SINKS, now=NOW, lease_seconds=120)
    ledger.settle_all(LEAD, MOVE, {s: ("sent", None) for s in SINKS}, now=NOW)
    before = writes.total

    level = ledger.claim(LEAD, MOVE, "sla-escalation-1", now=NOW + timedelta(hours=4), lease_seconds=120)
    ledger.settle(LEAD, MOVE, "sla-escalation-1", status="sent", now=NOW + timedelta(hours=4), detail={"level": 1})

    assert level.state == Claim.GRANTED and writes.total - before == 2
    assert statuses(ledger)["sla-escalation-1"] == ("sent", 1) and statuses(ledger)["slack"] == ("sent", 1)
