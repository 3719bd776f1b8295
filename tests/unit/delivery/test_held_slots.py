"""A slot reserved ahead for a row of a batch (``slots._Held``): kept while it is still ahead
(the row is carried to it and checked there), used unchecked only within the grace of the call
that booked it once it has come."""

from __future__ import annotations

from dispatcher.delivery.slots import _Held
from dispatcher.throttle.reservation import Reservation

EPS = 0.002
GRACE = 0.5


def _held(wait_s: float, *, asked: float = 100.0, answered: float = 100.01) -> _Held:
    now = 1000.0  # the throttle's clock (Redis TIME), not this host's
    slot = now + wait_s
    res = Reservation(True, wait_s, slot, slot + GRACE, GRACE, now, "r1", "e1", "b1")
    return _Held(res, asked, answered)


def test_a_slot_ahead_is_kept_however_long_ago_it_was_booked():
    held = _held(10.0)
    assert held.wait_s(100.01, EPS) == 10.0
    # the batch's thread reaches the row 2 s later (slow: 8 threads on one GIL): still ahead
    assert held.wait_s(102.01, EPS) == 8.0


def test_a_slot_that_has_come_is_used_only_within_the_grace_of_its_booking_call():
    held = _held(0.0)
    assert held.wait_s(100.2, EPS) == 0.0
    assert held.wait_s(100.0 + GRACE, EPS) is None  # counted from asked: early, the safe side


def test_a_slot_ahead_that_has_come_by_the_time_the_row_is_reached_follows_the_grace_rule():
    held = _held(0.3)
    assert held.wait_s(100.2, EPS) is not None  # 0.11 s ahead
    assert held.wait_s(100.35, EPS) == 0.0  # has come, within the grace of the call
    assert held.wait_s(100.6, EPS) is None  # has come, past the grace of the call


def test_the_wait_errs_late_and_the_deadline_early():
    held = _held(1.0, asked=100.0, answered=100.2)  # a slow call: 0.2 s between ask and answer
    assert held.wait_s(100.7, EPS) == 1.0 - (100.7 - 100.2)  # counted from the answer: later
    assert held.wait_s(101.25, EPS) is None  # come (by the answer), 1.25 s after the ask


def test_a_refused_reservation_answers_its_wait():
    res = Reservation(False, 30.0, None, None, GRACE, 1000.0, "", "e1", "b1")
    assert _Held(res, 100.0, 100.01).wait_s(200.0, EPS) == 30.0
