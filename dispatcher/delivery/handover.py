"""Handing a gated batch to the carrier: claim -> per row (halt check, slot, send) -> record.

The batch's rows are claimed ``queued -> sending`` in ONE committed statement (only while each
row is queued and its run running), so a second delivery of the same ids finds them claimed and
does nothing.  Then, per row in order:

1. the halt check (``dispatcher.halts``): ONE Redis command says whether anything halted the
   row's contact, run or campaign since the batch was read (a STOP, a pause, a cancel set their
   key before they commit) and whether Redis could have lost such a key.  Only then does the row
   pay for a database check (``_verify``): its run's state and its contact's consent, and it is
   unclaimed, cancelled or suppressed accordingly.  So a STOP, pause or cancel committed before
   the check stops the row, as the per-row claim used to; the STOP webhook waits for the
   contact's claimed rows (up to its deadline), so its 200 comes after any send that passed its
   check first;
2. its throttle slot (``delivery.slots``), taken after the check so that a slow check cannot
   make the send late for its slot; a slot in the future unclaims the row and a delayed queue
   message carries it there;
3. the send.  Accepted sends are recorded together (``mark_sent_many``) at the end of the batch
   or once the oldest waits ``mark_within_s``; a status callback that comes first is kept by
   the webhook and applied again shortly (``webhooks.early``).

Rows a batch did not reach (an error, or ``batch_max_s`` passed since the batch was read: well
inside the reconciler's sending lease) are unclaimed.  A row whose send was started is never
unclaimed: if the worker dies, the reconciler turns it ``unknown`` and asks the carrier.
"""

from __future__ import annotations

import logging
import random
import time
from contextlib import nullcontext
from datetime import timedelta
from typing import Any

from sqlmodel import select

from dispatcher import ledger, outbox, runs
from dispatcher.errors import AmbiguousSendError, GatewayError, RetryableSendError
from dispatcher.logs import mask_phone
from dispatcher.models import OutboxMessage, Run

log = logging.getLogger(__name__)


class Handover:
    """The second half of ``Pipeline.deliver_many``; ``p`` is the pipeline (db, gateway, clock,
    slots, halts, config, status_callback, _metric, resolve)."""

    def __init__(self, p: Any) -> None:
        self.p = p
        self._warned_at = float("-inf")  # a Redis outage is logged once a minute, not per row

    def run(self, ready: list[Any], epoch: Any, read_at: float) -> dict[int, str]:
        """``ready``: the batch's gated rows (``dispatch._Ready``); ``epoch``: the halts epoch
        (None: no Redis check, every row is verified in the database), read at ``read_at``
        (``clock.time()``) before the batch was loaded."""
        p = self.p
        now = p.clock.now()
        daily = getattr(p.metrics, "daily_batch", None)
        with p.db.connect(autocommit=True) as conn, daily() if daily else nullcontext():
            token, claimed = outbox.claim_many(
                conn,
                [outbox.ToClaim(x.row_id, x.text, x.digest, x.decision.segments) for x in ready],
                now,
            )
            out = self._each(
                conn,
                [x for x in ready if x.row_id in claimed],
                token,
                epoch,
                read_at + self._trusted_s(),
            )
            for x in ready:
                if x.row_id not in claimed:  # STOP, pause or cancel came first (or a worker)
                    p.slots.release(x.booking)
                    outbox.unqueue(conn, x.row_id, now)
                    out[x.row_id] = "lost_claim"
        return out

    def _trusted_s(self) -> float:
        """How long after its load a batch may still send: well inside the reconciler's sending
        lease, and inside the time halt keys are kept (``Halts.max_age_s``)."""
        p = self.p
        return min(
            p.config.batch_max_s, p.halts.max_age_s if p.halts is not None else p.config.batch_max_s
        )

    def _each(
        self, conn: Any, todo: list[Any], token: str, epoch: Any, deadline: float
    ) -> dict[int, str]:
        p, cfg = self.p, self.p.config
        out: dict[int, str] = {}
        touched: set[int] = set()  # rows whose carried booking was used or given back
        started: set[int] = set()  # rows whose send began: maybe at the carrier
        sent: list[outbox.Sent] = []
        oldest = 0.0
        slots = p.slots.for_batch(todo, token)
        try:
            for i, x in enumerate(todo):
                if p.clock.time() > deadline:
                    break
                if sent and p.clock.time() - oldest >= cfg.mark_within_s:
                    self._record(conn, sent)
                    sent = []
                touched.add(x.row_id)
                halted = self._halted(x, token, epoch)
                if halted is not None:
                    p.slots.release(x.booking)
                    out[x.row_id] = halted
                    continue
                booking = slots.take(conn, i, p.clock.now())
                if isinstance(booking, str):
                    out[x.row_id] = booking
                    continue
                if p.clock.time() > deadline:  # the check or the slot took that long
                    p.slots.release(booking)
                    break
                started.add(x.row_id)
                out[x.row_id], done = self._send(x, token)
                if done is not None:
                    oldest = oldest if sent else p.clock.time()
                    sent.append(done)
        finally:
            try:
                self._record(conn, sent)
            finally:  # rows never handed over go back to the outbox
                left = [x for x in todo if x.row_id not in out and x.row_id not in started]
                try:
                    outbox.unclaim(conn, [x.row_id for x in left], token, p.clock.now())
                    for x in left:
                        out[x.row_id] = "unclaimed"
                        if x.row_id not in touched:
                            p.slots.release(x.booking)
                finally:
                    slots.close()  # slots reserved ahead for rows never reached
        return out

    def _record(self, conn: Any, sent: list[outbox.Sent]) -> None:
        moved = outbox.mark_sent_many(conn, sent)
        if moved < len(sent):  # the reconciler took a claim that reached the carrier
            log.error(
                "%d accepted sends had lost their claim (rows %s): the reconciler asks "
                "the carrier for them",
                len(sent) - moved,
                [x.row_id for x in sent],
            )

    # ------------------------------------------------------------------------------ halts
    def _halted(self, x: Any, token: str, epoch: Any) -> str | None:
        """None if the row may be sent; else what became of it (unclaimed, dropped)."""
        halts = self.p.halts
        if halts is not None and epoch is not None:
            try:
                if halts.clear(
                    epoch, contact_id=x.contact_id, run_id=x.run_id, campaign_id=x.campaign.id
                ):
                    return None
            except Exception as e:  # noqa: BLE001 - Redis unreachable: the database decides
                mono = time.monotonic()
                if mono - self._warned_at >= 60.0:
                    self._warned_at = mono
                    log.warning(
                        "halt check failed (%s: %s); checking rows in the database",
                        type(e).__name__,
                        e,
                    )
        return self._verify(x, token)

    def _verify(self, x: Any, token: str) -> str | None:
        """The database check behind a halt key (or a Redis that may have lost one)."""
        p = self.p
        now = p.clock.now()
        t, r = outbox.T, Run.__table__  # type: ignore[attr-defined]
        with p.db.session() as s:
            row = (
                s.connection()
                .execute(
                    select(t.c.state, t.c.claim_token, r.c.state.label("run_state"))
                    .join(r, r.c.id == t.c.run_id)
                    .where(t.c.id == x.row_id)
                )
                .first()
            )
            if row is None or row.state != outbox.SENDING or row.claim_token != token:
                return "lost_claim"
            if row.run_state == runs.CANCELLED:
                outbox.drop_claimed(s, x.row_id, token, outbox.CANCELLED, "run_cancelled", now)
                return "cancelled"
            if row.run_state != runs.RUNNING:
                outbox.unclaim(s, [x.row_id], token, now)
                return f"run:{row.run_state}"
            consent = ledger.status(s, x.contact_id, brand_id=x.brand.id, campaign_id=x.campaign.id)
            if consent.opted_out:
                outbox.drop_claimed(s, x.row_id, token, outbox.SUPPRESSED, "opted_out", now)
                p._metric("suppressed", x.campaign.sid, "opted_out")
                return "suppressed:opted_out"
        return None

    # ------------------------------------------------------------------------------ send
    def _send(self, x: Any, token: str) -> tuple[str, outbox.Sent | None]:
        """Hand the claimed row to the carrier.  Accepted: ("sent", what to record)."""
        p = self.p
        c, b = x.campaign, x.brand
        sender = c.messaging_service_sid or c.sender
        kwargs: dict[str, Any] = {
            "status_callback": p.status_callback,
            "validity_period": x.validity,
        }
        if sender and sender.startswith("MG"):
            kwargs["messaging_service_sid"] = sender
        else:
            kwargs["from_"] = sender
        started = p.clock.time()
        try:
            result = p.gateway.send(x.to, x.text, **kwargs)
        except GatewayError as e:
            return self._failed(x, token, e, sender or ""), None
        # a Messaging Service answers num_segments=0 ("accepted"): count our own segments
        p._metric(
            "sent",
            c.sid,
            sender or "",
            result.num_segments or x.decision.segments or 1,
            brand=b.name,
            body_hash=x.digest,
        )
        p._metric("send_duration_seconds", p.clock.time() - started)
        return "sent", outbox.Sent(x.row_id, token, result.sid, result.status, p.clock.now())

    def _failed(self, x: Any, token: str, e: GatewayError, sender: str) -> str:
        p, cfg = self.p, self.p.config
        c = x.campaign
        now = p.clock.now()
        with p.db.session() as s:
            if isinstance(e, RetryableSendError):
                row = s.get(OutboxMessage, x.row_id)
                if row.attempts >= cfg.max_attempts:
                    outbox.mark_failed(s, x.row_id, token, e.code, f"gave up: {e}", now)
                    p._metric("failed", c.sid, sender, e.code)
                    return "failed:retries_exhausted"
                delay = min(cfg.backoff_max_s, cfg.backoff_base_s * 2 ** (row.attempts - 1))
                delay *= 0.5 + random.random() / 2  # noqa: S311 - jitter, not crypto
                outbox.release(s, x.row_id, token, now + timedelta(seconds=delay), "retry", now)
                return "retry"
            if isinstance(e, AmbiguousSendError):
                outbox.mark_unknown(s, x.row_id, token, str(e), now)
                s.commit()
                return p.resolve(x.row_id)
            outbox.mark_failed(s, x.row_id, token, e.code, str(e), now)
            if e.code == 21610:  # the carrier holds a STOP we did not see: record it
                ledger.append(
                    s,
                    contact_id=x.contact_id,
                    brand_id=x.brand.id,
                    action="revoke",
                    source="carrier",
                    actor="carrier",
                    evidence_text="Twilio error 21610: recipient replied STOP",
                    evidence_ref=str(e.code),
                )
                outbox.suppress_for_contact(
                    s, x.contact_id, brand_campaign_ids=None, reason="opted_out", now=now
                )
                p._metric("opt_out", c.sid, "carrier")
        p._metric("failed", c.sid, sender, e.code)
        log.info("row %s to %s failed: %s", x.row_id, mask_phone(x.to), e)
        return f"failed:{e.code}"
