"""Status callbacks (DB side, sync): move the outbox row forward and react to error codes.

Reactions happen only when the callback actually moved the row (``outbox.apply_provider_status``
is monotonic and idempotent), so a duplicated or late callback changes nothing and reacts once.
A callback that moved nothing because no row has its SID yet (the worker records SIDs after a
batch of sends) is told apart from a late/duplicate one: ``"unknown_sid"`` (the route keeps it
and applies it again a little later: early.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import String, bindparam
from sqlalchemy import select as sql_select
from sqlmodel import Session, select

from dispatcher import ledger, outbox, runs
from dispatcher.models import Campaign, OutboxMessage
from dispatcher.webhooks.campaigns import CampaignCache

if TYPE_CHECKING:
    from dispatcher.delivery.ports import HaltSignal

ACTOR = "twilio-webhook"
CARRIER_OPT_OUT = 21610
#: error code -> why every active run of the campaign is paused (compliance.md §7)
PAUSE_CAMPAIGN_CODES: dict[int, str] = {
    30034: "message from a number not registered for A2P 10DLC",
}
#: campaign_status values that pause every run (compliance.md §6)
PAUSE_CAMPAIGN_STATUSES = frozenset({"SUSPENDED"})


@dataclass
class StatusResult:
    #: "applied" | "unknown_sid" (no row has that SID yet; the status is a known one) |
    #: "unchanged" (nothing moved: late, duplicate, or an unknown status value)
    outcome: str
    row_id: int | None = None
    run_id: int | None = None
    state: str | None = None
    error_code: int | None = None
    campaign_sid: str | None = None
    sender: str | None = None
    carrier_opt_out: bool = False
    paused_runs: int = 0


@dataclass(frozen=True, slots=True)
class StatusUpdate:
    """One validated callback: what ``apply_status`` applies."""

    sid: str
    status: str
    error_code: int | None


def apply_status(
    session: Session,
    *,
    sid: str,
    status: str,
    error_code: int | None,
    now: datetime,
    campaigns: CampaignCache | None = None,
    halts: HaltSignal,
) -> StatusResult:
    """Move the row (monotonic CAS) and, if it moved, react to its error code / campaign (an
    opt-out or a campaign pause signals ``halts`` before the caller commits)."""
    row, why = _move(session, sid, status, error_code, now)
    if row is None:
        return StatusResult(why)
    csid, sender, cstatus = (campaigns or CampaignCache(0)).get(
        session.connection(), row.campaign_id
    )
    res = StatusResult(
        "applied",
        row_id=row.id,
        run_id=row.run_id,
        state=row.state,
        error_code=error_code,
        campaign_sid=csid,
        sender=sender,
    )
    if not error_code and (cstatus or "").upper() not in PAUSE_CAMPAIGN_STATUSES:
        return res  # the common case: one UPDATE ... RETURNING and a cached lookup
    campaign = session.get(Campaign, row.campaign_id)
    if error_code == CARRIER_OPT_OUT:
        res.carrier_opt_out = _carrier_opt_out(session, row, campaign, sid, now, halts)
    reason = None
    if error_code in PAUSE_CAMPAIGN_CODES:
        reason = (
            f"carrier error {error_code}: {PAUSE_CAMPAIGN_CODES[error_code]} "
            f"(message {sid}); every run of campaign {campaign.sid} paused"
        )
    elif (campaign.campaign_status or "").upper() in PAUSE_CAMPAIGN_STATUSES:
        reason = f"campaign {campaign.sid} is {campaign.campaign_status}"
    if reason:
        res.paused_runs = runs.pause_campaign_runs(session, campaign.id, reason, now, halts=halts)  # type: ignore[arg-type]
    return res


def apply_statuses(
    session: Session,
    updates: Sequence[StatusUpdate],
    *,
    now: datetime,
    campaigns: CampaignCache | None = None,
    halts: HaltSignal,
) -> list[StatusResult]:
    """Apply several callbacks in the caller's ONE transaction, each exactly as
    ``apply_status`` would on its own (a callback sees the ones before it: a duplicate or a
    late status in the same batch changes nothing and reacts nothing).  Rows are locked in
    SID order (callbacks of one SID keep their arrival order), so two concurrent batches
    never wait on each other crosswise.  Results in the order of ``updates``."""
    order = sorted(range(len(updates)), key=lambda i: updates[i].sid)
    out: list[StatusResult | None] = [None] * len(updates)
    for i in order:
        u = updates[i]
        out[i] = apply_status(
            session,
            sid=u.sid,
            status=u.status,
            error_code=u.error_code,
            now=now,
            campaigns=campaigns,
            halts=halts,
        )
    return out  # type: ignore[return-value]


_T: Any = OutboxMessage.__table__  # type: ignore[attr-defined]
#: the state of the row that has a SID (unique index on provider_sid: one index lookup)
_SID_STATE = sql_select(_T.c.state).where(_T.c.provider_sid == bindparam("b_sid", type_=String))


def _move(
    session: Session, sid: str, status: str, error_code: int | None, now: datetime
) -> tuple[Any, str]:
    """``outbox.apply_provider_status``; if nothing moved, also why: "unknown_sid" or
    "unchanged".  Costs one indexed SELECT only when nothing moved."""
    row = outbox.apply_provider_status(session, sid, status, error_code, now)
    target = outbox.PROVIDER_STATE.get(status)
    if row is not None or target is None:
        return row, "unchanged"
    state = session.connection().execute(_SID_STATE, {"b_sid": sid}).scalar()
    if state is None:
        return None, "unknown_sid"
    if state in outbox.RANK and outbox.RANK[state] < outbox.RANK[target]:
        # the SID was committed between the UPDATE and this SELECT (READ COMMITTED takes a new
        # snapshot per statement): the move applies now
        row = outbox.apply_provider_status(session, sid, status, error_code, now)
    return row, "unchanged"


def _carrier_opt_out(
    session: Session, row: Any, campaign: Campaign, sid: str, now: datetime, halts: HaltSignal
) -> bool:
    """21610: the recipient opted out at Twilio/the carrier -> brand-wide revoke + suppress."""
    key = ledger.dedupe_key("carrier-21610", sid, campaign.brand_id)
    seen = session.exec(
        select(ledger.ConsentEvent.id).where(ledger.ConsentEvent.dedupe_key == key)
    ).first()
    if seen is None:
        ledger.append(
            session,
            contact_id=row.contact_id,
            brand_id=campaign.brand_id,
            campaign_id=None,
            action="revoke",
            source="carrier",
            actor=ACTOR,
            evidence_text=f"Twilio error {CARRIER_OPT_OUT}: the recipient is on the "
            "opt-out list (replied STOP) for this sender",
            evidence_ref=sid,
            note=f"status callback for campaign {campaign.sid}",
            occurred_at=now,
            dedupe=key,
            halts=halts,
        )
    ids = list(
        session.exec(select(Campaign.id).where(Campaign.brand_id == campaign.brand_id)).all()
    )
    outbox.suppress_for_contact(
        session,
        row.contact_id,
        brand_campaign_ids=ids,  # type: ignore[arg-type]
        reason="opted_out",
        now=now,
    )
    return seen is None
