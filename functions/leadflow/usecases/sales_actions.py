"""Sales actions taken in Slack: who acted, whether the action can stand, what the rep
sees next. (The same actions through the API go straight to `LeadService.act`.)"""

from __future__ import annotations

from typing import Any

from leadflow.domain.errors import LeadflowError
from leadflow.domain.handoff import notice_for
from leadflow.domain.lifecycle import legal_follow_ups
from leadflow.domain.ports import Replies, SalesAction
from leadflow.domain.routing import owner_by_id, rep_for_actor
from leadflow.observability import add, logger
from leadflow.usecases.leads import LeadService


class SalesActions:
    def __init__(self, leads: LeadService, replies: Replies):
        self.leads = leads
        self.replies = replies

    def take(self, pressed: SalesAction) -> dict[str, Any]:
        """Act on the lead as the rep behind the chat user (else as that user), then
        replace the alert with who did what and the moves the lead's stage now allows."""
        rules = self.leads.rules
        rep = rep_for_actor(pressed.user_id, rules) if rules.routing is not None else None
        actor = rep.id if rep else f"slack:{pressed.user_name}"
        if pressed.action == "reject" and not pressed.reason:
            self.replies.refused(pressed, "Choose a reject reason in the menu first, then press Reject.")
            return {"ok": False, "error": "reason_required"}
        try:
            result = self.leads.act(pressed.lead_id, pressed.action, reason=pressed.reason, by=actor)
        except LeadflowError as exc:
            self.replies.refused(pressed, f"Could not {pressed.action} this lead: {exc.message}")
            logger.info("slack.action_refused", extra={"lead_id": pressed.lead_id, "action": pressed.action,
                                                       "error": exc.code})
            return {"ok": False, "error": exc.code}
        lead = result.lead
        move = next((m for m in lead.history if m.move_id == pressed.move_id), result.moves[0])
        owner = owner_by_id(lead.owner, rules) if lead.owner and rules.routing is not None else None
        self.replies.decided(pressed, notice_for(lead, move, owner), actor=actor, at=result.moves[0].at,
                             next_actions=legal_follow_ups(lead), reject_reasons=list(rules.handoff.reject_reasons))
        add("SlackDecision")
        logger.info("slack.action", extra={"lead_id": lead.lead_id, "action": pressed.action, "stage": lead.stage})
        return {"ok": True, "action": pressed.action, "lead_id": lead.lead_id, "stage": lead.stage}
