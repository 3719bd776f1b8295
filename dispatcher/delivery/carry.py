"""Carry: the rows a process's batches booked for later slots, put on the queue together a
moment before their slots.

A row booked for a later slot rides a delayed queue message to it (``slots.py``); at delivery
the message holds a worker thread from its wake-up (``wake_lead_s`` before its first slot) to
its last send.  The rows of one window are booked by many batches at once (each thread books
its batch's rows in turn, so their slots interleave), and grouped batch by batch they rode
messages of 1-3 rows: bench/utilisation.py, 100 per 10 s in embedded mode, 163 messages for
400 carried rows, ~45 a window for 8 worker threads.  Each held its thread ~0.6 s; the window's
later messages waited for a thread past their rows' grace, and one late row costs a whole extra
window (a row that misses its slot books again behind the last full window): 0.76 instead of
0.94 in 2 of 5 runs on a quiet machine.

So a process holds its carried rows here until ``enqueue_ahead_s`` before the first of them and
then groups **every** held row of that stretch (``enqueue_ahead_s`` of slots), whichever batch
booked it: a window's rows ride a few messages of contiguous slots (``group``).  Nothing is
lost by holding a row: it is ``queued`` with ``enqueued_at`` set before it is held, so a process
that dies holding it leaves it to the reconciler's lost-message check (released again after
``lost_after_s``; only its slot is lost), and a worker that stops flushes what it holds
(``flush``).  Rows booked less than ``enqueue_ahead_s`` ahead are put on the queue at once.

A process holds rows at most ``hold_s`` (120 s) ahead of their slots, so what it holds is
bounded by its throughput (a run released for the 6 h booking horizon at 75 MPS would
otherwise hold a million bookings, ~1.5 KB each).  Rows further ahead are *parked*: they ride a
delayed message due ``hold_s / 2`` before their first slot, and the process that receives it
holds them again without touching the database (``Pipeline.deliver_many``), to be grouped with
the rest of their stretch.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from dispatcher.clock import Clock
from dispatcher.delivery.config import DeliverConfig
from dispatcher.delivery.ports import Enqueue
from dispatcher.throttle.reservation import Reservation

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Carried:
    """A row booked for a later slot, to ride a delayed queue message: ``due`` is when its slot
    comes by this host's clock."""

    row_id: int
    booking: Reservation
    due: float


def slot_of(c: Carried) -> float:
    """A carried row's slot (the throttle's clock; ``due`` for a booking without one)."""
    return c.due if c.booking.slot_at is None else c.booking.slot_at


def group(carried: Iterable[Carried], pace: float, span: float) -> list[list[Carried]]:
    """The messages for ``carried``: rows in the order of their slots, a message per group of
    rows whose slots lie within ``span`` of its first and that one thread, sending them in
    turn at ``pace`` seconds a row, sends within half their grace of their slots.

    Ordered and grouped by the slots themselves (the throttle's one clock), not by ``due``: a
    row's ``due`` is this host's late estimate of its slot, late by the booking call's time
    after the script ran, and the calls of one ``reserve_many`` ran one after the other (the
    first row's the longest before the answer).  Where those calls are slow (the embedded
    mode's fakeredis runs each script in this process, under its GIL: 0.25 s for a pipeline of
    7 at 120 rows a window) that error exceeds the slots' spacing, and sorted by ``due`` a
    group's rows came in reverse order: its thread waited for the last slot first and the
    earlier rows missed their grace (bench/utilisation.py, MPS-bound)."""
    pace = max(pace, 1e-3)
    groups: list[list[Carried]] = []
    free = 0.0  # when the last group's thread is done with its rows so far (projected)
    late = 0.0  # half the least grace of the last group's rows
    for c in sorted(carried, key=slot_of):
        at = slot_of(c)
        done = max(at, free) + pace  # the thread sends the rows in turn, each at its slot
        half = 0.5 * c.booking.grace_s
        if groups and at - slot_of(groups[-1][0]) <= span and done - at <= min(late, half):
            groups[-1].append(c)
            late = min(late, half)
        else:
            groups.append([c])
            done, late = at + pace, half
        free = done
    return groups


class CarryBuffer:
    """The carried rows this process holds until a moment before their slots (module
    docstring).  ``release`` gives a slot back when its message cannot be enqueued; ``pace``
    is the process's recent send pace (seconds a row, ``Slots.send_pace``).  A thread of its
    own puts each stretch on the queue when it comes (started with the first row held);
    ``autoflush`` False leaves that to the caller's ``flush_due`` (a FakeClock, which no
    thread can wait for)."""

    def __init__(
        self,
        clock: Clock,
        enqueue: Enqueue,
        config: DeliverConfig,
        release: Callable[[Reservation], None],
        pace: Callable[[], float],
    ) -> None:
        self.clock, self.enqueue, self.config = clock, enqueue, config
        self.release, self.pace = release, pace
        self._held: list[tuple[float, int, Carried]] = []  # a heap by slot
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.autoflush = True

    def add(self, carried: list[Carried]) -> None:
        """A batch's carried rows: those of a stretch that has come go on the queue now (with
        any held rows of the same stretch), the others are held for their stretch."""
        if not carried:
            return
        t = self.clock.time()
        # rows beyond hold_s are parked; nothing is when nothing is held (enqueue_ahead_s inf)
        hold = self.config.hold_s if math.isfinite(self.config.enqueue_ahead_s) else math.inf
        far: list[Carried] = []
        with self._cond:
            for c in carried:
                if slot_of(c) - t > hold:
                    far.append(c)
                else:
                    heapq.heappush(self._held, (slot_of(c), next(self._seq), c))
            due = self._take(t, everything=self._closed)
            if self._held:
                self._start()
                self._cond.notify()
        self._put(due)
        self._park(far)

    def far(self, slot_at: float) -> bool:
        """Whether a slot is still too far to go on the queue for it (a parked row's message
        came: the row is held again instead)."""
        return slot_at - self.clock.time() > self.config.enqueue_ahead_s + self.config.wake_lead_s

    def flush(self) -> None:
        """Put every held row on the queue now (a worker stopping) and stop holding."""
        with self._cond:
            self._closed = True
            rows = self._take(self.clock.time(), everything=True)
            self._cond.notify()
        self._put(rows)

    def held(self) -> int:
        with self._cond:
            return len(self._held)

    def flush_due(self) -> None:
        """Put the stretches that have come on the queue (what the thread does when one
        comes)."""
        with self._cond:
            rows = self._take(self.clock.time())
        self._put(rows)

    # ------------------------------------------------------------------ internals
    def _take(self, t: float, everything: bool = False) -> list[Carried]:
        """Under the lock: the held rows of the stretch that has come at ``t`` (the first held
        slot at most ``enqueue_ahead_s`` away, and every row up to ``enqueue_ahead_s`` past
        it), taken out of the buffer; none if no stretch has come.  ``everything``: all."""
        ahead = self.config.enqueue_ahead_s
        held = self._held
        if not held or (not everything and held[0][0] - t > ahead):
            return []
        end = math.inf if everything else held[0][0] + ahead
        rows = []
        while held and held[0][0] <= end:
            rows.append(heapq.heappop(held)[2])
        return rows

    def _wait_s(self) -> float | None:
        """Under the lock: seconds until the next stretch comes (None: nothing held)."""
        if not self._held:
            return None
        return self._held[0][0] - self.config.enqueue_ahead_s - self.clock.time()

    def _start(self) -> None:
        if self._thread is None and self.autoflush:
            self._thread = threading.Thread(target=self._run, name="carry", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    wait = self._wait_s()
                    if self._closed or (wait is not None and wait <= 0):
                        rows = self._take(self.clock.time(), everything=self._closed)
                        break
                    self._cond.wait(wait)
            try:
                self._put(rows)
            except Exception:  # noqa: BLE001 - the thread must live on; the rows are lost only
                log.exception("could not put %d carried rows on the queue", len(rows))
            if self._closed and not rows:
                return

    def _put(self, rows: list[Carried]) -> None:
        """Enqueue ``rows`` in their groups, each message due ``wake_lead_s`` before its first
        slot (the earlier of the two estimates of it on this host's clock)."""
        cfg = self.config
        span = max(0.0, cfg.max_hold_s - cfg.wake_lead_s)
        self._send(group(rows, self.pace(), span), cfg.wake_lead_s)

    def _park(self, rows: list[Carried]) -> None:
        """Rows further than ``hold_s`` ahead: one message per ``hold_s / 2`` of slots, due
        ``hold_s / 2`` before its first (its receiver holds them again)."""
        half = 0.5 * self.config.hold_s
        groups: list[list[Carried]] = []
        for c in sorted(rows, key=slot_of):
            if groups and slot_of(c) - slot_of(groups[-1][0]) <= half:
                groups[-1].append(c)
            else:
                groups.append([c])
        self._send(groups, half)

    def _send(self, groups: list[list[Carried]], lead: float) -> None:
        """One message per group, due ``lead`` before its first slot (the earlier of the two
        estimates of it on this host's clock)."""
        t = self.clock.time()
        for g in groups:
            first = min(slot_of(g[0]), *(c.due for c in g))
            delay = max(0.0, first - t - lead)
            try:
                self.enqueue([(c.row_id, c.booking.to_dict()) for c in g], delay)
            except Exception:  # noqa: BLE001 - the reconciler releases the rows again
                log.warning("could not enqueue %d booked rows", len(g), exc_info=True)
                for c in g:
                    self.release(c.booking)
