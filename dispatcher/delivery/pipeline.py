"""The path of one message through a worker, for a batch of rows.  Each step is one module:

1. **load + gate** (``gate.py``): load the batch (rows with their run and contact, consent,
   history: one statement each; rows no longer queued or whose run stopped are set aside), then
   gate each row without I/O: render, compose, decide -> send, defer, suppress, or pause the
   run (the outbox transitions of the last three are made here, in the same transaction);
2. **claim** the batch ``queued -> sending`` in ONE committed statement (``outbox.claim_many``),
   only while each row is queued and its run running; then, per row in order:
3. **halt check** (``halt_check.py``): one Redis command says whether a STOP, pause or cancel
   may have touched the row since the batch was read; only then a database check;
4. **slot** (``slots.py``): a throttle slot usable now, or the row is carried to a later one
   (a batch's carried rows ride a few delayed messages together, each due a moment before its
   first slot; there each row waits for its own slot before its halt check);
5. **send** (``send.py``) to the carrier, reacting to a refusal by its class;
6. **record** the accepted sends together (``outbox.mark_sent_many``, ONE statement), at the
   batch's end or once the oldest waits ``mark_within_s``.

``deliver(id, booking)`` is a batch of one.  The collaborators are ports (``ports.py``), built by
the one composition root (``dispatcher/runtime.py``).

Exactly once: the claim is committed *before* the carrier is called, so a second delivery of the
same id finds the row claimed and does nothing.  A row whose send was started is never unclaimed:
a send that may have reached the carrier but has no answer becomes ``unknown`` and is resolved by
asking the carrier (``resolve.py``), never by sending again blindly; if the worker dies, the
reconciler turns the row ``unknown``.  Rows a batch did not reach (an error, or ``batch_max_s``
since the batch was read) go back to the outbox unchanged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Connection
from sqlmodel import Session

from dispatcher import compliance, ledger, outbox, runs
from dispatcher.clock import Clock
from dispatcher.delivery.carry import Carried
from dispatcher.delivery.config import DeliverConfig
from dispatcher.delivery.gate import History, Loader, Ready, Row, Verdict, evaluate
from dispatcher.delivery.halt_check import HaltCheck
from dispatcher.delivery.ports import (
    Booking,
    Enqueue,
    Epoch,
    Gateway,
    HaltKeys,
    HaltSignal,
    Metrics,
    Throttle,
)
from dispatcher.delivery.resolve import Resolve
from dispatcher.delivery.results import Outcome, Result
from dispatcher.delivery.send import Send
from dispatcher.delivery.slots import Slots
from dispatcher.logs import mask_phone
from dispatcher.registry import CampaignCache
from dispatcher.store import Database
from dispatcher.templates import body_hash, parse_template
from dispatcher.throttle.reservation import Reservation

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pipeline:
    """The edges are fixed at construction (``dataclasses.replace`` makes a pipeline with other
    edges): each step is built once from them."""

    db: Database
    throttle: Throttle
    gateway: Gateway
    clock: Clock
    enqueue: Enqueue
    metrics: Metrics
    #: the worker's halt check (``halts.NoHaltKeys``: every claimed row is checked in the DB)
    halt_keys: HaltKeys
    #: what a campaign-level gate's pause and a carrier-held STOP signal
    halts: HaltSignal
    status_callback: str | None = None
    validity_cap_s: int = 36000
    config: DeliverConfig = field(default_factory=DeliverConfig)

    load: Loader = field(init=False)
    halt_check: HaltCheck = field(init=False)
    slots: Slots = field(init=False)
    resolver: Resolve = field(init=False)
    send: Send = field(init=False)

    def __post_init__(self) -> None:
        cfg = self.config
        campaigns = CampaignCache(cfg.campaign_cache_s)  # one per process: gate and resolver
        resolver = Resolve(self.db, self.gateway, self.clock, self.metrics, self.halts, campaigns)
        steps = {
            "load": Loader(cfg, campaigns),
            "halt_check": HaltCheck(self.halt_keys, self.db, self.clock, self.metrics, cfg),
            "slots": Slots(self.throttle, self.clock, self.enqueue, cfg, self.metrics),
            "resolver": resolver,
            "send": Send(
                self.gateway,
                self.db,
                self.clock,
                self.metrics,
                self.halts,
                resolver,
                cfg,
                self.status_callback,
            ),
        }
        for name, step in steps.items():
            object.__setattr__(self, name, step)  # frozen: set once, here

    # ------------------------------------------------------------------------------ deliver
    def deliver(self, row_id: int, booking: Booking | None = None) -> Result:
        """Handle one queue message for one row (a booked slot rides with it)."""
        return self.deliver_many([row_id], {row_id: booking} if booking else None)[row_id]

    def deliver_many(
        self, ids: list[int], bookings: dict[int, Booking] | None = None
    ) -> dict[int, Result]:
        """Handle one queue message carrying several rows (released ones, or carried ones with
        their ``bookings``, in the order of their slots).  Returns what happened to each."""
        read_at = self.clock.time()
        epoch = self.halt_check.epoch()  # before the load: a halt after it is seen by the check
        ids = list(dict.fromkeys(ids))  # a repeated id is one row
        held = {i: Reservation.from_dict(b) for i, b in (bookings or {}).items() if b}
        out = self._hold_again(ids, held)
        ready = self._gate([i for i in ids if i not in out], held, out)
        if ready:
            out.update(self._hand_over(ready, epoch, read_at))
        return out

    def _hold_again(self, ids: list[int], held: dict[int, Reservation]) -> dict[int, Result]:
        """Parked rows (``carry.py``): booked rows whose slots are still too far to be sent from
        this message go back to the process's carried rows, untouched (still queued and
        carried): they ride the queue again, grouped with their stretch."""
        far = [
            Carried(i, r, r.slot_at)
            for i in ids
            if (r := held.get(i)) is not None
            and r.slot_at is not None
            and self.slots.carried.far(r.slot_at)
        ]
        self.slots.carry(far)
        return {c.row_id: Result(Outcome.EARLY) for c in far}

    def close(self) -> None:
        """The worker stops: the carried rows this process holds go on the queue now."""
        self.slots.carried.flush()

    def resolve(self, row_id: int) -> Result:
        """An ``unknown`` row: ask the carrier (the reconciler calls this)."""
        return self.resolver.unknown(row_id)

    def refresh(self, row_id: int) -> Result:
        """A ``sent`` row with no final status: ask the carrier (the reconciler calls this)."""
        return self.resolver.refresh(row_id)

    # ----------------------------------------------------------------- 1. load + gate
    def _gate(
        self, ids: list[int], held: dict[int, Reservation], out: dict[int, Result]
    ) -> list[Ready]:
        """Load and gate the batch in one transaction; the rows that may be sent, in order.
        What became of the others goes into ``out`` (their carried slots are given back)."""
        now = self.clock.now()
        ready: list[Ready] = []
        with self.db.session() as s:
            loaded = self.load.rows(s, ids)
            live: list[Row] = []
            for rid in ids:
                row = loaded.get(rid)
                verdict = Result(Outcome.MISSING) if row is None else self._row_state(s, row, now)
                if verdict is not None:
                    self.slots.release(held.get(rid))
                    out[rid] = verdict
                elif row is not None:
                    live.append(row)
            consent = self.load.consents(s, live)
            history = self.load.histories(s, {row.contact_id for row in live}, now)
            for row in live:
                passed = self._verdict(
                    s,
                    row,
                    now,
                    consent.get(row.id, ledger.NO_CONSENT),
                    history.get(row.contact_id, []),
                    held.get(row.id),
                )
                if isinstance(passed, Ready):
                    ready.append(passed)
                else:
                    self.slots.release(held.get(row.id))
                    out[row.id] = passed
        return ready

    def _row_state(self, s: Session, row: Row, now: datetime) -> Result | None:
        """The row's and its run's state; None if the row may go on to the gate."""
        if row.state != outbox.QUEUED:
            return Result(Outcome.SKIPPED, row.state)
        if row.run_state == runs.CANCELLED:
            outbox.cancel(s, row.id, "run_cancelled", now)
            return Result(Outcome.CANCELLED)
        if row.run_state != runs.RUNNING:
            outbox.unqueue(s, row.id, now)
            return Result(Outcome.HALTED, row.run_state)
        return None

    def _verdict(
        self,
        s: Session,
        row: Row,
        now: datetime,
        consent: ledger.ConsentStatus,
        history: list[History],
        booking: Reservation | None,
    ) -> Ready | Result:
        """The gate for one row; a refusal is applied to the outbox (or the run) here."""
        campaign, brand = self.load.campaign(s, row.campaign_id)
        g = evaluate(
            parse_template(row.template),
            row.variables,
            row,
            brand,
            campaign,
            consent,
            history,
            now,
            first_message_days=self.config.first_message_days,
        )
        d = g.decision
        if g.kind is Verdict.SEND and isinstance(d, compliance.Send) and g.text is not None:
            assert brand.id is not None
            cap = self.validity_cap_s
            if d.valid_until is not None:
                cap = min(cap, int((d.valid_until - now).total_seconds()))
            return Ready(
                row.id,
                row.run_id,
                row.campaign_id,
                brand.id,
                row.contact_id,
                row.to_phone,
                campaign.messaging_service_sid or campaign.sender or "",
                g.text,
                d.segments,
                campaign,
                brand,
                booking,
                max(1, cap),
                body_hash(g.text),
                d.valid_until,
            )
        reason = g.reason or ""
        if g.kind is Verdict.PAUSE:
            runs.pause_run(s, row.run_id, f"campaign: {reason}", now, halts=self.halts)
            outbox.unqueue(s, row.id, now)
            return Result(Outcome.PAUSED, reason)
        if g.kind is Verdict.DEFER and isinstance(d, compliance.Defer):
            outbox.defer(s, row.id, d.until, reason, now)
            self.metrics.deferred(campaign.sid, reason)
            return Result(Outcome.DEFERRED, reason)
        outbox.suppress(s, row.id, reason, now)
        self.metrics.suppressed(campaign.sid, reason)
        if reason == "template_variable_missing":
            log.info("row %s: template field missing for %s", row.id, mask_phone(row.phone))
        return Result(Outcome.SUPPRESSED, reason)

    # ------------------------------------------------------------- 2-6. claim ... record
    def _hand_over(
        self, ready: list[Ready], epoch: Epoch | None, read_at: float
    ) -> dict[int, Result]:
        """Claim the gated rows in one statement, then each in turn passes the halt check, takes
        its slot and is sent; the accepted sends are recorded together."""
        now = self.clock.now()
        with self.db.connect(autocommit=True) as conn, self.metrics.daily_batch():
            token, claimed = outbox.claim_many(
                conn, [outbox.ToClaim(x.row_id, x.text, x.digest, x.segments) for x in ready], now
            )
            out = self._each(
                conn,
                [x for x in ready if x.row_id in claimed],
                token,
                epoch,
                self.halt_check.deadline(read_at),
            )
            for x in ready:
                if x.row_id not in claimed:  # STOP, pause or cancel came first (or a worker)
                    self.slots.release(x.booking)
                    outbox.unqueue(conn, x.row_id, now)
                    out[x.row_id] = Result(Outcome.LOST_CLAIM)
        return out

    def _each(
        self,
        conn: Connection,
        todo: list[Ready],
        token: str,
        epoch: Epoch | None,
        deadline: float,
    ) -> dict[int, Result]:
        clock, cfg = self.clock, self.config
        out: dict[int, Result] = {}
        touched: set[int] = set()  # rows whose carried booking was used or given back
        started: set[int] = set()  # rows whose send began: maybe at the carrier
        sent: list[outbox.Sent] = []
        oldest = 0.0
        slots = self.slots.for_batch(todo, token)
        try:
            for i, x in enumerate(todo):
                if clock.time() > deadline:
                    break
                if sent and clock.time() - oldest >= cfg.mark_within_s:
                    self._record(conn, sent)
                    sent = []
                touched.add(x.row_id)
                slots.wait(i)  # a carried row's slot, a moment away: before its halt check
                began = clock.time()
                halted = self.halt_check.check(x, token, epoch)
                if halted is not None:
                    self.slots.release(x.booking)
                    out[x.row_id] = halted
                    continue
                slot = slots.take(conn, i, clock.now())
                if isinstance(slot, Result):
                    out[x.row_id] = slot
                    continue
                if clock.time() > deadline:  # the check or the slot took that long
                    self.slots.release(slot)
                    break
                started.add(x.row_id)
                out[x.row_id], done = self.send(x, token)
                slots.sent(began)
                if done is not None:
                    oldest = oldest if sent else clock.time()
                    sent.append(done)
        finally:
            try:
                self._record(conn, sent)
            finally:  # rows never handed over go back to the outbox
                left = [x for x in todo if x.row_id not in out and x.row_id not in started]
                try:
                    outbox.unclaim(conn, [x.row_id for x in left], token, clock.now())
                    for x in left:
                        out[x.row_id] = Result(Outcome.UNCLAIMED)
                        if x.row_id not in touched:
                            self.slots.release(x.booking)
                finally:
                    slots.close()  # slots reserved ahead for rows never reached
        return out

    def _record(self, conn: Connection, sent: list[outbox.Sent]) -> None:
        moved = outbox.mark_sent_many(conn, sent)
        if moved < len(sent):  # the reconciler took a claim that reached the carrier
            log.error(
                "%d accepted sends had lost their claim (rows %s): the reconciler asks "
                "the carrier for them",
                len(sent) - moved,
                [x.row_id for x in sent],
            )
