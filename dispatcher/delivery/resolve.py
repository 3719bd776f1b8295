"""Resolve: ask the carrier about a row whose fate we do not know, instead of sending again.

``unknown(row_id)``: a send that may have reached the carrier (timeout, or a worker that died
mid-send) is ``unknown``; ``find_sent`` looks for it by recipient, sender, time and body hash:
found -> sent, not found -> queued again (safe to resend).  ``refresh(row_id)``: a ``sent`` row
that heard no final status asks for it (its callbacks came before the row knew its SID, or were
lost).  Used by the send step (an ambiguous send) and by the reconciler (release_loop.py).

A status found either way is applied by ``provider_status.apply_status`` with its error code, as
a callback's would be, and meets the same reactions: 21610 opts the recipient out, 30034 pauses
the campaign's runs, the reputation guard judges the run (``guard_check.check_runs``).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from dispatcher import outbox, provider_status
from dispatcher.clock import Clock, as_utc
from dispatcher.delivery.ports import Gateway, HaltSignal, Metrics
from dispatcher.delivery.results import Outcome, Result
from dispatcher.errors import GatewayError
from dispatcher.guard_check import GuardLimiter, check_runs
from dispatcher.models import Campaign, OutboxMessage
from dispatcher.registry import CampaignCache
from dispatcher.store import Database

if TYPE_CHECKING:
    from sqlmodel import Session

    from dispatcher.gateway.outcomes import SendResult
    from dispatcher.provider_status import StatusResult

log = logging.getLogger(__name__)


class Resolve:
    def __init__(
        self,
        db: Database,
        gateway: Gateway,
        clock: Clock,
        metrics: Metrics,
        halts: HaltSignal,
        campaigns: CampaignCache,
    ) -> None:
        self.db, self.gateway, self.clock, self.metrics = db, gateway, clock, metrics
        self.halts = halts
        self.guard = GuardLimiter(clock)
        #: the pipeline's one campaign cache (shared with the gate's loader)
        self.campaigns = campaigns

    def _apply(self, s: Session, sid: str, found: SendResult, now: datetime) -> StatusResult:
        return provider_status.apply_status(
            s,
            sid=sid,
            status=found.status,
            error_code=found.error_code,
            now=now,
            campaigns=self.campaigns,
            halts=self.halts,
        )

    def _react(self, res: StatusResult | None) -> None:
        """After the commit: the status's metrics and the reputation guard of its run."""
        if res is not None and (run_ids := provider_status.react(self.metrics, res)):
            check_runs(
                self.db, run_ids, self.clock, self.guard, halts=self.halts, metrics=self.metrics
            )

    def unknown(self, row_id: int) -> Result:
        """An ``unknown`` row: ask the carrier whether the message exists; sent or re-queued."""
        with self.db.session() as s:
            row = s.get(OutboxMessage, row_id)
            if row is None or row.state != outbox.UNKNOWN:
                return Result(Outcome.SKIPPED)
            campaign = s.get(Campaign, row.campaign_id)
            if campaign is None:
                return Result(Outcome.SKIPPED)
            sender = campaign.messaging_service_sid or campaign.sender or ""
            since = as_utc(row.claimed_at or row.updated_at) - timedelta(minutes=2)
            to, digest, csid = row.to_phone, row.body_hash or "", campaign.sid
            brand, segments = str(campaign.brand_id), row.segments
        try:
            found = self.gateway.find_sent(to, sender, since, digest)
        except GatewayError as e:
            log.info("row %s: lookup failed (%s); stays unknown", row_id, e)
            return Result(Outcome.UNKNOWN)
        now = self.clock.now()
        res = None
        with self.db.session() as s:
            moved = outbox.resolve_unknown(
                s,
                row_id,
                found_sid=found.sid if found else None,
                status=found.status if found else None,
                now=now,
            )
            if moved and found and _past_sent(found.status):
                res = self._apply(s, found.sid, found, now)
        if found:
            if moved:  # counted once, by whoever moved the row, as a send (brand, body: daily)
                self.metrics.sent(
                    csid,
                    sender,
                    found.num_segments or segments or 1,
                    brand=brand,
                    body_hash=digest or None,
                )
            self._react(res)
            return Result(Outcome.RESOLVED, "sent")
        if moved:  # back in the outbox, due now (defer_reason "resend_after_lookup")
            self.metrics.deferred(csid, "resend_after_lookup")
        return Result(Outcome.RESOLVED, "requeued")

    def refresh(self, row_id: int) -> Result:
        """A ``sent`` row that heard no final status: ask the carrier for it."""
        with self.db.session() as s:
            row = s.get(OutboxMessage, row_id)
            if row is None or row.state != outbox.SENT or not row.provider_sid:
                return Result(Outcome.SKIPPED)
            sid = row.provider_sid
        try:
            found = self.gateway.fetch(sid)
        except GatewayError as e:
            log.info("row %s: status fetch failed (%s)", row_id, e)
            return Result(Outcome.UNKNOWN)
        now = self.clock.now()
        with self.db.session() as s:
            res = self._apply(s, sid, found, now)
            if res.outcome != "applied":  # still "sent" at the carrier: ask again after a while
                outbox.touch(s, row_id, outbox.SENT, now)
        if res.outcome != "applied":
            return Result(Outcome.UNCHANGED)
        self._react(res)
        return Result(Outcome.REFRESHED, found.status)


def _past_sent(status: str) -> bool:
    state = outbox.PROVIDER_STATE.get(status)
    return state is not None and outbox.RANK[state] > outbox.RANK[outbox.SENT]
