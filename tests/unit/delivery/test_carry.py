"""The carried rows of a process's batches are held until a moment before their slots, then ride
the queue together (``dispatcher.delivery.carry``): a window's rows in a few messages of
contiguous slots, whichever batch booked them."""

from __future__ import annotations

import math
import threading
from typing import Any

import pytest

from dispatcher.clock import FakeClock, SystemClock
from dispatcher.delivery.carry import Carried, CarryBuffer, group
from dispatcher.delivery.config import DeliverConfig
from dispatcher.throttle.reservation import Reservation
from tests.procs import wait_for

T0 = 1_000_000.0


def carried(row_id: int, slot: float, grace: float = 0.5) -> Carried:
    res = Reservation(
        allowed=True,
        wait_s=slot - T0,
        slot_at=slot,
        send_by=slot + grace,
        grace_s=grace,
        now=T0,
        id=f"r{row_id}",
        epoch="e",
        brand="b",
    )
    return Carried(row_id, res, slot + 0.01)  # the host's estimate: a little late


class Queue:
    """The ``Enqueue`` port: every message (its rows, its delay, when it was put)."""

    def __init__(self, clock: Any, fail: bool = False) -> None:
        self.clock, self.fail = clock, fail
        self.messages: list[tuple[list[int], float, float]] = []
        self.lock = threading.Lock()

    def __call__(self, rows: list[tuple[int, dict[str, Any]]], delay_s: float = 0.0) -> None:
        if self.fail:
            raise ConnectionError("broker down")
        with self.lock:
            self.messages.append(([r for r, _ in rows], delay_s, self.clock.time()))


def make(clock: Any, queue: Queue, **cfg: Any) -> tuple[CarryBuffer, list[Reservation]]:
    released: list[Reservation] = []
    buf = CarryBuffer(clock, queue, DeliverConfig(**cfg), released.append, lambda: 0.002)
    buf.autoflush = not isinstance(clock, FakeClock)  # no thread can wait for a FakeClock
    return buf, released


def test_the_rows_of_two_batches_for_one_window_ride_one_message_in_slot_order() -> None:
    """Two batches booked interleaved slots of the window 10 s away: nothing goes on the queue
    until 2 s (``enqueue_ahead_s``) before the first slot; then one message carries all five,
    in slot order, due ``wake_lead_s`` before the first.  Grouped batch by batch they rode two
    messages (one per batch), each holding a worker thread."""
    clock = FakeClock(T0)
    q = Queue(clock)
    buf, _ = make(clock, q)
    buf.add([carried(1, T0 + 10.00), carried(3, T0 + 10.02), carried(5, T0 + 10.04)])
    buf.add([carried(2, T0 + 10.01), carried(4, T0 + 10.03)])
    assert (q.messages, buf.held()) == ([], 5)
    clock.set(T0 + 7.99)
    buf.flush_due()
    assert q.messages == []
    clock.set(T0 + 8.0)
    buf.flush_due()
    ((rows, delay, _),) = q.messages
    assert rows == [1, 2, 3, 4, 5]
    assert delay == pytest.approx(10.0 - 8.0 - 0.5)
    assert buf.held() == 0
    buf.flush()


def test_a_stretch_that_has_come_goes_at_once_with_the_held_rows_of_it() -> None:
    """A batch's rows booked within ``enqueue_ahead_s`` go on the queue when the batch ends,
    together with rows held for the same stretch; a later window's rows stay held."""
    clock = FakeClock(T0)
    q = Queue(clock)
    buf, _ = make(clock, q)
    buf.add([carried(1, T0 + 2.1), carried(9, T0 + 12.5)])  # nothing has come yet
    assert buf.held() == 2
    clock.set(T0 + 1.0)
    buf.add([carried(2, T0 + 1.5)])  # 0.5 s away: its stretch (to 3.5 s) has come
    ((rows, delay, _),) = q.messages
    assert rows == [2, 1] and delay == pytest.approx(0.0)  # due at once (the lead is 0.5 s)
    assert buf.held() == 1
    buf.flush()


def test_a_stretch_ends_enqueue_ahead_past_its_first_slot() -> None:
    """The rows of a stretch go together; a row further than ``enqueue_ahead_s`` past the
    stretch's first slot waits for its own."""
    clock = FakeClock(T0)
    q = Queue(clock)
    buf, _ = make(clock, q)
    buf.add([carried(1, T0 + 5.0), carried(2, T0 + 6.9), carried(3, T0 + 7.1)])
    clock.set(T0 + 3.0)
    buf.flush_due()
    assert [m[0] for m in q.messages] == [[1], [2]]  # groups: slots more than 0.75 s apart
    assert buf.held() == 1
    clock.set(T0 + 5.1)
    buf.flush_due()
    assert [m[0] for m in q.messages] == [[1], [2], [3]]
    buf.flush()


def test_flush_puts_every_held_row_on_the_queue_and_stops_holding() -> None:
    """A stopping worker flushes: the held rows go on the queue with their delays (another
    worker sends them at their slots), and rows added afterwards are not held."""
    clock = FakeClock(T0)
    q = Queue(clock)
    buf, _ = make(clock, q)
    buf.add([carried(1, T0 + 60.0), carried(2, T0 + 120.0)])
    buf.flush()
    assert sorted((m[0][0], round(m[1], 3)) for m in q.messages) == [(1, 59.5), (2, 119.5)]
    assert buf.held() == 0


def test_rows_whose_message_cannot_be_enqueued_give_their_slots_back() -> None:
    clock = FakeClock(T0)
    q = Queue(clock, fail=True)
    buf, released = make(clock, q)
    buf.add([carried(1, T0 + 0.5), carried(2, T0 + 0.6)])
    assert sorted(r.id for r in released) == ["r1", "r2"]


def test_unheld_rows_go_when_their_batch_ends() -> None:
    """``enqueue_ahead_s`` inf: each batch's rows go on the queue when it ends (the virtual
    clock simulation, where no thread can wait for a FakeClock)."""
    clock = FakeClock(T0)
    q = Queue(clock)
    buf, _ = make(clock, q, enqueue_ahead_s=math.inf)
    buf.add([carried(1, T0 + 300.0), carried(2, T0 + 600.0)])
    assert [m[0] for m in q.messages] == [[1], [2]] and buf.held() == 0


def test_the_buffer_thread_puts_a_stretch_on_the_queue_when_it_comes() -> None:
    """On the system clock nobody has to call ``flush_due``: the buffer's thread puts the rows on
    the queue ``enqueue_ahead_s`` before their first slot (here 0.1 s from now)."""
    clock = SystemClock()
    q = Queue(clock)
    buf, _ = make(clock, q, enqueue_ahead_s=0.5)
    t = clock.time()
    buf.add([carried(1, t + 0.6), carried(2, t + 0.61)])
    assert buf.held() == 2
    wait_for(lambda: q.messages, timeout=5.0)
    ((rows, _, at),) = q.messages
    assert rows == [1, 2]
    assert at >= t + 0.1 - 0.01  # not before its stretch came
    buf.flush()


def test_group_keeps_a_group_within_half_its_rows_least_grace() -> None:
    """One thread sends a group's rows in turn at the send pace: a row joins the group only if
    the thread reaches it within half the least grace of the group's rows."""
    rows = [carried(i, T0 + 0.01 * i, grace=0.5 if i < 5 else 0.1) for i in range(10)]
    groups = group(rows, pace=0.02, span=0.75)
    # 10 ms apart at 20 ms a row: 10 ms behind per row; the 0.1 s grace (half: 50 ms) of
    # rows 5.. cuts the group where the lag would pass it
    assert all(g[-1].row_id - g[0].row_id == len(g) - 1 for g in groups)
    for g in groups:
        lag, free = 0.0, 0.0
        for c in g:
            at = c.booking.slot_at or 0.0
            free = max(at, free) + 0.02
            lag = max(lag, free - at)
        assert lag <= 0.5 * min(c.booking.grace_s for c in g) + 1e-9
    assert len(groups) > 1


def test_rows_beyond_hold_s_are_parked_on_the_queue_not_held() -> None:
    """A process holds rows at most ``hold_s`` (120 s) ahead: a row 300 s ahead rides a message
    due ``hold_s / 2`` before its slot (its receiver holds it again); one 100 s ahead is held."""
    clock = FakeClock(T0)
    q = Queue(clock)
    buf, _ = make(clock, q)
    buf.add([carried(1, T0 + 300.0), carried(2, T0 + 300.5), carried(3, T0 + 100.0)])
    ((rows, delay, _),) = q.messages
    assert rows == [1, 2] and delay == pytest.approx(240.0)
    assert buf.held() == 1
    assert buf.far(T0 + 2.6) and not buf.far(T0 + 2.5)  # enqueue_ahead_s + wake_lead_s
    buf.flush()


def test_rows_added_after_a_flush_are_not_held() -> None:
    """A worker's in-flight batches may end after its stop flushed: their rows go at once."""
    clock = FakeClock(T0)
    q = Queue(clock)
    buf, _ = make(clock, q)
    buf.flush()
    buf.add([carried(1, T0 + 10.0)])
    assert [m[0] for m in q.messages] == [[1]] and buf.held() == 0
