"""Status callbacks (DB side, sync): move the outbox row forward and react to error codes.

Reactions happen only when the callback actually moved the row (``outbox.apply_provider_status``
is monotonic and idempotent), so a duplicated or late callback changes nothing and reacts once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func
from sqlmodel import Session, select

from dispatcher import ledger, outbox, runs
from dispatcher.models import Campaign, OutboxMessage

ACTOR = "twilio-webhook"
CARRIER_OPT_OUT = 21610
FILTERED = 30007
#: error code -> why every active run of the campaign is paused (compliance.md §7)
PAUSE_CAMPAIGN_CODES: dict[int, str] = {
    30034: "message from a number not registered for A2P 10DLC",
}
#: campaign_status values that pause every run (compliance.md §6)
PAUSE_CAMPAIGN_STATUSES = frozenset({"SUSPENDED"})


@dataclass
class StatusResult:
    outcome: str  # "applied" | "unchanged" | "unknown_sid" | "unknown_status"
    row_id: int | None = None
    run_id: int | None = None
    state: str | None = None
    error_code: int | None = None
    campaign_sid: str | None = None
    sender: str | None = None
    carrier_opt_out: bool = False
    paused_runs: int = 0


def apply_status(session: Session, *, sid: str, status: str, error_code: int | None,
                 now: datetime) -> StatusResult:
    row = outbox.apply_provider_status(session, sid, status, error_code, now)
    if row is None:
        known = session.exec(
            select(OutboxMessage.id).where(OutboxMessage.provider_sid == sid)).first()
        return StatusResult("unchanged" if known is not None else "unknown_sid")
    c = Campaign.__table__  # type: ignore[attr-defined]
    csid, sender, cstatus = session.connection().execute(
        select(c.c.sid, func.coalesce(c.c.messaging_service_sid, c.c.sender),
               c.c.campaign_status)
        .where(c.c.id == row.campaign_id)).one()
    res = StatusResult("applied", row_id=row.id, run_id=row.run_id, state=row.state,
                       error_code=error_code, campaign_sid=csid, sender=sender)
    if not error_code and (cstatus or "").upper() not in PAUSE_CAMPAIGN_STATUSES:
        return res  # the common case: one UPDATE ... RETURNING and one lookup by key
    campaign = session.get(Campaign, row.campaign_id)
    if error_code == CARRIER_OPT_OUT:
        res.carrier_opt_out = _carrier_opt_out(session, row, campaign, sid, now)
    reason = None
    if error_code in PAUSE_CAMPAIGN_CODES:
        reason = (f"carrier error {error_code}: {PAUSE_CAMPAIGN_CODES[error_code]} "
                  f"(message {sid}); every run of campaign {campaign.sid} paused")
    elif (campaign.campaign_status or "").upper() in PAUSE_CAMPAIGN_STATUSES:
        reason = f"campaign {campaign.sid} is {campaign.campaign_status}"
    if reason:
        res.paused_runs = runs.pause_campaign_runs(session, campaign.id, reason, now)  # type: ignore[arg-type]
    return res


def _carrier_opt_out(session: Session, row: Any, campaign: Campaign, sid: str,
                     now: datetime) -> bool:
    """21610: the recipient opted out at Twilio/the carrier -> brand-wide revoke + suppress."""
    key = ledger.dedupe_key("carrier-21610", sid, campaign.brand_id)
    seen = session.exec(select(ledger.ConsentEvent.id).where(
        ledger.ConsentEvent.dedupe_key == key)).first()
    if seen is None:
        ledger.append(
            session, contact_id=row.contact_id, brand_id=campaign.brand_id, campaign_id=None,
            action="revoke", source="carrier", actor=ACTOR,
            evidence_text=f"Twilio error {CARRIER_OPT_OUT}: the recipient is on the "
                          "opt-out list (replied STOP) for this sender",
            evidence_ref=sid, note=f"status callback for campaign {campaign.sid}",
            occurred_at=now, dedupe=key,
        )
    ids = list(session.exec(select(Campaign.id).where(
        Campaign.brand_id == campaign.brand_id)).all())
    outbox.suppress_for_contact(session, row.contact_id, brand_campaign_ids=ids,  # type: ignore[arg-type]
                                reason="opted_out", now=now)
    return seen is None
