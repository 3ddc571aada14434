"""The follow-up SLA watchdog (the `sla` job): escalate SQLs nobody accepted in time.

Each escalation level is sent once per SQL move: it is claimed in the delivery ledger
like any delivery (ledger "sink" `sla-escalation-<level>`), first to the owner, then
to the team's manager. Who is told is decided here; how (Slack, which channel, how a
person is mentioned) is the `Escalator` adapter's business.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Callable

from leadflow.domain.errors import PermanentError, RetryableError
from leadflow.domain.lead import Lead, last_move_into
from leadflow.domain.ports import Claim, DeliveryLedger, Escalator, LeadStore
from leadflow.domain.routing import manager_of
from leadflow.domain.rules import Rules
from leadflow.domain.sla import Escalation, due_escalations
from leadflow.observability import add, logger
from leadflow.usecases.handoff import notices

ESCALATION = "sla-escalation-"  # ledger "sink" name of SLA escalation level n: sla-escalation-<n>
LEASE_SECONDS = 120.0


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class SlaWatch:
    def __init__(self, store: LeadStore, ledger: DeliveryLedger, escalator: Escalator | None, rules: Rules, *,
                 clock: Callable[[], datetime] = utcnow):
        self.store = store
        self.ledger = ledger
        self.escalator = escalator
        self.rules = rules
        self.clock = clock

    def sweep(self) -> dict[str, int]:
        """Every SQL old enough to be due, each level that is due and not yet sent."""
        steps = self.rules.sla.escalations
        if self.escalator is None or not steps:
            return {"checked": 0, "escalated": 0, "failed": 0}
        now = self.clock()
        checked = escalated = failed = 0
        # Business hours never pass faster than wall-clock hours: an SQL that entered less
        # than the first escalation's hours ago cannot be due, and is not even read.
        first = min(step.after_business_hours for step in steps)
        cutoff = (now - timedelta(hours=first)).isoformat()
        for lead in self.store.leads_in_stage("sql", entered_before=cutoff):
            if lead.disqualified:
                continue
            entered = last_move_into(lead, "sql")
            if entered is None or not entered.announced:
                continue  # an imported SQL was never put on anyone's desk
            checked += 1
            if lead.first_touch_at is not None and lead.first_touch_at >= entered.at:
                continue  # accepted
            if not due_escalations(entered.at, False, set(), now, self.rules.sla):
                continue  # cheap test first: nothing due, no ledger read
            sent = self._levels_sent(lead, entered.move_id)
            for esc in due_escalations(entered.at, False, sent, now, self.rules.sla):
                try:
                    outcome = self._escalate(lead, entered.move_id, esc, now)
                except Exception:  # one bad lead must not stop the sweep for the others
                    logger.exception("sla.escalation_crashed", extra={"lead_id": lead.lead_id, "level": esc.level})
                    outcome = "failed"
                escalated += outcome == "sent"
                failed += outcome == "failed"
        return {"checked": checked, "escalated": escalated, "failed": failed}

    def _levels_sent(self, lead: Lead, move_id: str) -> set[int]:
        levels = set()
        for d in self.ledger.deliveries(lead.lead_id):
            level = d["sink"].removeprefix(ESCALATION)
            if d["move_id"] == move_id and d["sink"].startswith(ESCALATION) and level.isdigit() \
                    and d["status"] in ("sent", "dead"):
                levels.add(int(level))
        return levels

    def _escalate(self, lead: Lead, move_id: str, esc: Escalation, now: datetime) -> str:
        sink = f"{ESCALATION}{esc.level}"
        claim = self.ledger.claim(lead.lead_id, move_id, sink, now=now, lease_seconds=LEASE_SECONDS)
        if claim.state != Claim.GRANTED:
            return "skipped"
        notice = notices(lead, [move_id], self.rules)[0]
        if esc.notify == "owner":
            person = notice.owner
        else:
            person = manager_of(notice.owner.team, self.rules) if notice.owner and notice.owner.team else None
        overdue = max(0, int((now - esc.due_at).total_seconds() // 60))
        waited = max(0, int((now - notice.occurred_at).total_seconds() // 60))
        try:
            self.escalator.escalate(notice, level=esc.level, audience=esc.notify, person=person, waited_minutes=waited)
        except (RetryableError, PermanentError) as exc:
            self.ledger.settle(lead.lead_id, move_id, sink, status="failed", now=self.clock(),
                               detail={"error": exc.reason})
            logger.warning("sla.escalation_failed", extra={"lead_id": lead.lead_id, "level": esc.level,
                                                           "error": exc.reason})
            return "failed"
        self.ledger.settle(lead.lead_id, move_id, sink, status="sent", now=self.clock(),
                           detail={"level": esc.level, "notify": esc.notify, "overdue_minutes": overdue})
        add("SlaEscalated")
        logger.info("sla.escalated", extra={"lead_id": lead.lead_id, "level": esc.level, "notify": esc.notify})
        return "sent"
