"""Slot: a throttle slot for each claimed row, the step between the halt check and the send.

A row sends only in a slot booked in every bucket that applies to it (``throttle.policy``).  For
a batch, the slots of the next rows come from one pipelined call (``reserve_many``): as many rows
as the batch's recent pace sends within half the smallest grace.  A held slot still ahead is
carried (checked at its time); one that has come is used only within the grace of its booking
call and before its ``send_by``, else given back and reserved again, so no row is sent on a stale
slot (``_Held.wait_s``); slots still held when a batch stops early are given back.  A row that
cannot book within the horizon goes back to the outbox with a later ``due_at``.

**Carried rows.**  A row booked for a later slot is unclaimed (``outbox.unclaim``: back to
queued, its attempt given back, ``enqueued_at`` set) and, when its batch ends, rides a delayed
queue message with its booking (no worker thread waits).  The booked rows of the process's
batches ride *together* (``carry.py``: held until a moment before their slots, then grouped
whichever batch booked them): one message per group of rows whose slots lie within
``max_hold_s - wake_lead_s`` of the group's first and that one thread, sending them in turn at
the recent *send* pace (from a row's halt check to its send, ``Slots.send_pace``), sends within
half their grace of their slots, due ``wake_lead_s`` before the group's first slot, its rows in
slot order.  At delivery the group is loaded, gated and claimed at once, as a released batch
is; each row then waits in the thread for its own slot (``BatchSlots.wait``, before its halt
check) and is sent at it.  So a window's rows go at the window's start, not one queue wake-up
(~2 polls of 100 ms) late each, and the grace only has to cover what follows the slot
(docs/throttle.md "Grace").

Measured (bench/utilisation.py, MPS-bound: 120 rows a window at 2 MPS, embedded mode): grouped
by each row's ``due`` (a late estimate whose error exceeded the slots' spacing) and at the
batch's pace (0.05-0.11 s a row, booking later windows' rows included, where a send took
0.003-0.06 s), a window's 120 rows rode 34-38 messages, some in reverse slot order; they queued
for the 8 worker threads (each message holds one from its wake-up) and some rows missed their
grace: one extra window, 0.653-0.656 in 5 runs of 6.  In slot order and at the send pace: 12-27
messages a window, 0.974-0.980 in 3 runs of 5 (main: 1 of 6); the others still lost a window to
the thread shortage, which grouping the process's batches together addresses (``carry.py``,
docs/scaling.md, issue 22 item 1).
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection

from dispatcher import compliance, outbox
from dispatcher.clock import Clock
from dispatcher.delivery.carry import Carried, CarryBuffer
from dispatcher.delivery.config import DeliverConfig
from dispatcher.delivery.gate import Ready
from dispatcher.delivery.ports import Enqueue, Metrics, Throttle
from dispatcher.delivery.results import Outcome, Result
from dispatcher.models import Brand, Campaign
from dispatcher.throttle.policy import RECIPIENT_KINDS, Bucket, buckets_for
from dispatcher.throttle.reservation import Reservation

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Held:
    """A slot reserved ahead for a row, and when (caller's clock) the call that booked it was
    sent and answered: the script ran in between."""

    reservation: Reservation
    asked: float
    answered: float

    def wait_s(self, t: float, now_epsilon_s: float) -> float | None:
        """Seconds from ``t`` to the slot (0 once it has come); None when the slot can no longer
        be used as it is.  Both estimates err on the safe side whatever the skew between this
        host and Redis: the wait counts from ``answered`` (late), the deadlines from ``asked``
        (early).

        A slot still ahead (more than ``now_epsilon_s``) is kept however long ago it was booked:
        the row is carried to it and ``send_status`` checks it there (a loss of Redis meanwhile
        answers "lost").  A slot that has come is used unchecked, so only before ``send_by``
        and within the grace of the booking call (a loss of Redis re-seeds the throttle counting
        every row in flight as sent within the grace of the loss, docs/throttle.md).  Dropping a
        slot still ahead because its thread was slow (it was, at 50 ms a row with 8 threads on
        one GIL) gave it back after the batch's later rows had booked past it: the run's last
        row then went a window after the rest (bench/utilisation.py, embedded: 29 in the fourth
        window, 1 in a sixth)."""
        res = self.reservation
        if not res.allowed or res.slot_at is None or res.send_by is None:
            return res.wait_s
        ahead = res.wait_s - (t - self.answered)
        if ahead > now_epsilon_s:
            return ahead
        if t - self.asked >= min(res.send_by - res.now, res.grace_s):
            return None
        return max(0.0, ahead)


class Slots:
    """Slots for ready rows.  The throttle keeps its own time (Redis TIME, or the clock injected
    into both it and the pipeline); ``clock`` here times the batch's pace, a held slot's lateness
    and delays."""

    def __init__(
        self,
        throttle: Throttle,
        clock: Clock,
        enqueue: Enqueue,
        config: DeliverConfig,
        metrics: Metrics,
    ) -> None:
        self.throttle, self.clock, self.enqueue = throttle, clock, enqueue
        self.config, self.metrics = config, metrics
        self.pace = 0.05  # seconds per row of a batch, lately (a shared, rough average)
        #: seconds a thread takes per row from its halt check to its send, lately: how fast a
        #: carried group's rows go once their slots come (``carry``), a shared, rough average
        self.send_pace = 0.05
        self._shared: dict[tuple[int, int, int], tuple[Campaign, Brand, tuple[Bucket, ...]]] = {}
        #: the carried rows of every batch of this process, held until their stretch comes
        self.carried = CarryBuffer(clock, enqueue, config, self.release, lambda: self.send_pace)

    def for_batch(self, ready: list[Ready], token: str) -> BatchSlots:
        return BatchSlots(self, ready, token)

    def reserve_ahead(self, rows: list[Ready]) -> dict[int, _Held]:
        """Slots for the next fresh rows in one round trip: as many as the recent pace sends
        within half the smallest grace of their slots (none for one row: ``take`` reserves it
        alone).  The grace is the buckets' own (a short window caps it at half its period),
        not the configured minimum."""
        pace = max(self.pace, 1e-3)
        fresh: list[tuple[Ready, tuple[Bucket, ...]]] = []
        grace = float("inf")
        for x in rows:
            if x.booking is not None:
                continue
            buckets = self._buckets(x)
            grace = min(grace, *(b.grace for b in buckets))
            if len(fresh) >= 1 and (len(fresh) + 1) * pace > 0.5 * grace:
                break
            fresh.append((x, buckets))
        if len(fresh) < 2:
            return {}
        asked = self.clock.time()
        now = self.clock.now()
        horizon = min(self.max_wait_s(x, now) for x, _ in fresh)
        got = self.throttle.reserve_many(
            [b for _, b in fresh],
            max_wait_s=horizon,
            rows=[x.row_id for x, _ in fresh],
            unsent={x.row_id for x in rows},
        )
        answered = self.clock.time()
        return {
            x.row_id: _Held(res, asked, answered) for (x, _), res in zip(fresh, got, strict=True)
        }

    def take(
        self,
        conn: Connection,
        x: Ready,
        token: str,
        now: datetime,
        held: _Held | None,
        carried: list[Carried],
        unsent: Collection[int] = (),
    ) -> Reservation | Result:
        """A slot usable now, or what happened instead: booked for later (unclaimed and added to
        ``carried``), throttled (due later), or early.  ``x`` is claimed with ``token``.
        ``held``: a slot reserved ahead for this row, used if its ``send_by`` has not passed
        (else given back).  ``unsent``: the batch's rows not handed over yet (``x`` among
        them)."""
        if x.booking is not None:
            st = self.throttle.send_status(x.booking)
            if st == "send":
                return x.booking
            if st == "early":
                delay = max(0.0, (x.booking.slot_at or 0) - self.clock.time())
                self._later(conn, x.row_id, token, now, delay, x.booking, carried)
                return Result(Outcome.EARLY)
            if st == "late":
                self.release(x.booking)
        wait = None
        horizon = self.max_wait_s(x, now)
        if held is not None:
            res, wait = held.reservation, held.wait_s(self.clock.time(), self.config.now_epsilon_s)
            # its send_by passed while the rows before it were sent, or it lies beyond this
            # row's quiet hours (booked for a batch whose rows have other windows)
            if wait is None or (res.allowed and wait > horizon):
                self.release(res)
                wait = None
        if wait is None:
            res = self.throttle.reserve(
                self._buckets(x), max_wait_s=horizon, row=x.row_id, unsent=unsent or (x.row_id,)
            )
            wait = res.wait_s
        # "allowed" in the metric = could go at once; a booked future slot is a wait, counted
        # by the kind of the bucket that set it (which limit binds)
        self.metrics.throttle_wait_seconds(
            res.bound or "none", wait, res.allowed and wait <= self.config.now_epsilon_s
        )
        if not res.allowed:
            until = now + timedelta(seconds=max(wait, 0.05))
            outbox.unclaim(conn, [x.row_id], token, now, due_at=until, reason="throttle")
            self.metrics.deferred(x.campaign.sid, "throttle")
            return Result(Outcome.THROTTLED)
        if wait > self.config.now_epsilon_s:
            self._later(conn, x.row_id, token, now, wait, res, carried)
            # the row is deferred to its slot (defer_reason "throttle", as a refusal's)
            self.metrics.deferred(x.campaign.sid, "throttle")
            return Result(Outcome.BOOKED)
        return res

    def max_wait_s(self, x: Ready, now: datetime) -> float:
        """How far ahead ``x`` may book: the horizon, and never into its recipient's quiet hours
        (the gate's ``valid_until``): a row that cannot go before they begin waits in the
        outbox, where the gate defers it to their end, instead of holding a slot it cannot
        use."""
        horizon = self.config.book_horizon_s
        if x.valid_until is not None:
            horizon = min(horizon, (x.valid_until - now).total_seconds())
        return max(0.0, horizon)

    def release(self, booking: Reservation | None) -> None:
        """Give a slot back (its row was not sent); a failure only costs throughput."""
        if booking is not None:
            try:
                self.throttle.release(booking)
            except Exception:  # noqa: BLE001 - a lost slot is only lost throughput
                log.warning("could not release a throttle booking", exc_info=True)

    def _buckets(self, x: Ready) -> tuple[Bucket, ...]:
        """The row's buckets.  Without per-recipient caps they are the same for every row of a
        campaign with the same segment count: kept while the pipeline holds the same campaign
        and brand objects (its campaign cache renews them every few seconds)."""
        c, b = x.campaign, x.brand
        segments = x.segments or compliance.segments(x.text).count
        key = (id(c), id(b), segments)
        hit = self._shared.get(key)
        if hit is not None and hit[0] is c and hit[1] is b:
            return hit[2]
        buckets = tuple(
            buckets_for(
                c,
                brand_id=x.brand_id,
                brand_tier=b.tmobile_brand_tier,
                sender=c.messaging_service_sid or c.sender,
                recipient=x.to,
                segments=segments,
                now=self.clock.time(),
                min_grace_s=self.config.min_grace_s,
            )
        )
        if not any(k.kind in RECIPIENT_KINDS for k in buckets):
            if len(self._shared) > 256:
                self._shared.clear()
            self._shared[key] = (c, b, buckets)  # holding c and b keeps their ids unique
        return buckets

    def _later(
        self,
        conn: Connection,
        row_id: int,
        token: str,
        now: datetime,
        delay: float,
        booking: Reservation,
        carried: list[Carried],
    ) -> None:
        """The row will ride a delayed queue message to its booked slot (unclaimed first: a
        lost enqueue is found by the reconciler)."""
        outbox.unclaim(
            conn,
            [row_id],
            token,
            now,
            due_at=now + timedelta(seconds=delay),
            reason="throttle",
            enqueued=True,
        )
        carried.append(Carried(row_id, booking, self.clock.time() + delay))

    def carry(self, carried: list[Carried]) -> None:
        """Put a batch's carried rows on the queue: held with the process's other carried rows
        until a moment before their slots, then grouped (``carry.py``)."""
        self.carried.add(carried)


class BatchSlots:
    """The slots of one batch's rows (claimed with ``token``), taken in order:
    ``wait(i)`` then ``take(conn, i, now)`` for ``ready[i]``; ``close()`` gives back those
    reserved ahead for rows never reached and enqueues the rows booked for later."""

    def __init__(self, slots: Slots, ready: list[Ready], token: str) -> None:
        self.slots, self.ready, self.token = slots, ready, token
        self.held: dict[int, _Held] = {}
        self.carried: list[Carried] = []
        self.started = slots.clock.time()  # the clock that judges a slot's lateness
        self.waited = 0.0  # seconds this batch waited for slots (not part of its pace)

    def wait(self, i: int) -> None:
        """A carried row whose slot is at most ``max_hold_s`` away: wait for it here (its
        message came ``wake_lead_s`` early), before its halt check, so a STOP meanwhile is seen.
        Further away (a clock skew, a redelivered message): ``take`` carries it again."""
        s, booking = self.slots, self.ready[i].booking
        if booking is None or booking.slot_at is None:
            return
        ahead = booking.slot_at - s.clock.time()
        if 0 < ahead <= s.config.max_hold_s:
            s.clock.sleep(ahead)
            self.waited += ahead

    def sent(self, began: float) -> None:
        """A row whose halt check began at ``began`` (this clock) was just sent: the send pace
        moves towards its time (``Slots.send_pace``)."""
        s = self.slots
        s.send_pace += 0.2 * (s.clock.time() - began - s.send_pace)

    def take(self, conn: Connection, i: int, now: datetime) -> Reservation | Result:
        s, x = self.slots, self.ready[i]
        if i:
            s.pace = (s.clock.time() - self.started - self.waited) / i
        if x.booking is None and x.row_id not in self.held:
            self.held.update(s.reserve_ahead(self.ready[i:]))
        unsent = {r.row_id for r in self.ready[i:]}
        held = self.held.pop(x.row_id, None)
        return s.take(conn, x, self.token, now, held, self.carried, unsent)

    def close(self) -> None:
        for held in self.held.values():
            self.slots.release(held.reservation)
        self.held.clear()
        carried, self.carried = self.carried, []
        if carried:
            self.slots.carry(carried)
