"""One queue message carrying several rows (``deliver_many``) decides exactly as one message per
row would, and still lets a STOP, pause or stale slot stop every row not yet handed over."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import Any

import pytest

from dispatcher import outbox, runs
from dispatcher.clock import as_utc
from dispatcher.delivery.pipeline import Pipeline
from dispatcher.errors import StorageError
from dispatcher.halts import NoHaltKeys
from tests.unit.pipeline.conftest import make_harness


def _mixed(h) -> tuple[int, list[int]]:
    """Consented New Yorkers, one without consent, one in quiet hours (Los Angeles 07:00), one
    opted out after launch, one magic number the carrier refuses; returns (run, row ids)."""
    h.contacts(6)
    h.contact("+12125550900", consent=False)
    h.contact("+13105550901", time_zone="America/Los_Angeles")
    stopper = h.contact("+12125550902")
    h.contact("+15005550001")  # Twilio magic number: 21211 invalid 'To'
    run_id = h.launch()
    h.stop(stopper)
    return run_id, [r.id for r in h.rows(run_id)]


def test_batch_outcomes_equal_one_message_per_row(tmp_path):
    with make_harness(tmp_path / "single") as h1:
        run1, ids1 = _mixed(h1)
        p1 = h1.pipeline()
        single = [p1.deliver(i) for i in ids1]
        states1 = [(r.state, r.suppress_reason, r.error_code) for r in h1.rows(run1)]
        bodies1 = sorted((r["to"], r["body"]) for r in h1.records())
    with make_harness(tmp_path / "batch") as h2:
        run2, ids2 = _mixed(h2)
        p2 = h2.pipeline()
        # a duplicate id and an id that does not exist ride along
        batch = p2.deliver_many([*ids2, ids2[0], 10**9])
        states2 = [(r.state, r.suppress_reason, r.error_code) for r in h2.rows(run2)]
        bodies2 = sorted((r["to"], r["body"]) for r in h2.records())
    assert [batch[i] for i in ids2] == single
    assert batch[10**9] == "missing"
    assert states2 == states1
    assert bodies2 == bodies1  # same composition (brand, STOP language) and nobody twice
    assert Counter(single)["sent"] == 6


class Interfering:
    """The real gateway; after its first send something else happens (a STOP, a pause, time)."""

    def __init__(self, inner: Any, after_first: Any) -> None:
        self.inner, self.after_first, self.sends = inner, after_first, 0

    def send(self, *a: Any, **kw: Any) -> Any:
        out = self.inner.send(*a, **kw)
        self.sends += 1
        if self.sends == 1:
            self.after_first()
        return out

    def find_sent(self, *a: Any, **kw: Any) -> Any:
        return self.inner.find_sent(*a, **kw)


class CountingThrottle:
    """The real throttle, recording its reservation calls (name, messages)."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.calls = inner, []

    def reserve(self, *a: Any, **kw: Any) -> Any:
        self.calls.append(("reserve", 1))
        return self.inner.reserve(*a, **kw)

    def reserve_many(self, requests: Any, **kw: Any) -> Any:
        self.calls.append(("reserve_many", len(requests)))
        return self.inner.reserve_many(requests, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _pipeline(h, gateway: Any, throttle: Any = None) -> Pipeline:
    """The harness's pipeline with these edges, and no halt keys: every claimed row is checked
    in the database before its send."""
    return replace(
        h.pipeline(), gateway=gateway, throttle=throttle or h.rt.throttle, halt_keys=NoHaltKeys()
    )


def test_stop_during_a_batch_stops_rows_not_yet_handed(harness):
    cids = harness.contacts(4)
    run_id = harness.launch()
    ids = [r.id for r in harness.rows(run_id)]
    p = _pipeline(harness, Interfering(harness.rt.gateway, lambda: harness.stop(cids[2])))
    out = p.deliver_many(ids)
    assert out[ids[2]] == "suppressed:opted_out"  # claimed with the batch, stopped at its turn
    assert [out[i] for i in ids if i != ids[2]] == ["sent"] * 3
    stopped = harness.row(ids[2])
    assert (stopped.state, stopped.suppress_reason) == (outbox.SUPPRESSED, "opted_out")
    assert stopped.to_phone not in {r["to"] for r in harness.records()}


def test_pause_during_a_batch_leaves_the_rest_queued_for_resume(harness):
    harness.contacts(3)
    run_id = harness.launch()
    ids = [r.id for r in harness.rows(run_id)]

    def pause() -> None:
        with harness.db.session() as s:
            runs.pause_run(s, run_id, "operator", harness.clock.now(), halts=harness.rt.halts)

    p = _pipeline(harness, Interfering(harness.rt.gateway, pause))
    out = p.deliver_many(ids)
    assert [out[i] for i in ids] == ["sent", "run:paused", "run:paused"]
    rest = [harness.row(i) for i in ids[1:]]
    # queued and carried by no queue message: released again once the run resumes
    assert [(r.state, r.enqueued_at) for r in rest] == [(outbox.QUEUED, None)] * 2
    assert len(harness.records()) == 1


def test_a_slot_reserved_ahead_and_made_late_is_given_back_and_reserved_again(harness):
    """Slots for a batch are reserved ahead in one call; a slow first send makes the others miss
    their send_by: each is released (or the 3-per-minute window would be full) and reserved
    again at its turn, so no row is sent on a stale slot."""
    harness.set_campaign(window_limit=3, window_seconds=60)
    harness.contacts(3)
    run_id = harness.launch()
    ids = [r.id for r in harness.rows(run_id)]
    throttle = CountingThrottle(harness.rt.throttle)
    p = _pipeline(
        harness, Interfering(harness.rt.gateway, lambda: harness.clock.advance(5.0)), throttle
    )
    assert p.deliver_many(ids) == {i: "sent" for i in ids}
    received = [r["received_at"] for r in harness.records()]
    assert received[1] - received[0] == 5.0 and received[2] == received[1]
    assert throttle.calls == [("reserve_many", 3), ("reserve", 1), ("reserve", 1)]


def test_slots_are_reserved_ahead_only_as_far_as_the_pace_allows(harness):
    harness.contacts(5)
    run_id = harness.launch()
    ids = [r.id for r in harness.rows(run_id)]
    throttle = CountingThrottle(harness.rt.throttle)
    p = _pipeline(harness, harness.rt.gateway, throttle)
    p.slots.pace = 0.2  # 0.2 s per row: half the 1 s grace covers 2 rows
    p.config.min_grace_s = 1.0
    # the injected clock does not move: the batch's own pace (0 s per row) covers the rest
    assert p.deliver_many(ids) == {i: "sent" for i in ids}
    assert throttle.calls == [("reserve_many", 2), ("reserve_many", 3)]


def test_slots_reserved_ahead_are_given_back_when_the_batch_fails(harness):
    harness.set_campaign(window_limit=3, window_seconds=60)
    harness.contacts(3)
    run_id = harness.launch()
    ids = [r.id for r in harness.rows(run_id)]

    def down() -> None:
        raise StorageError("database is down")

    p = _pipeline(harness, Interfering(harness.rt.gateway, down))
    with pytest.raises(StorageError):
        p.deliver_many(ids)
    # the first row went out; the other two rows' slots came back: 2 more fit in the window
    p2 = harness.pipeline()
    assert p2.deliver_many(ids[1:]) == {i: "sent" for i in ids[1:]}


def test_a_throttled_batch_sends_what_the_window_allows_and_books_the_rest(harness):
    harness.set_campaign(window_limit=1, window_seconds=60)
    harness.contacts(3)
    run_id = harness.launch()
    ids = [r.id for r in harness.rows(run_id)]
    seen = []  # the first row's state as each row is checked (0.6 s apart)
    p = harness.pipeline()
    check = p.halt_check.check

    def slow_check(*a: Any) -> Any:
        seen.append(harness.row(ids[0]).state)
        harness.clock.advance(0.6)
        return check(*a)

    p.halt_check.check = slow_check  # type: ignore[method-assign]
    start = harness.clock.time()
    out = p.deliver_many(ids)
    assert [out[i] for i in ids] == ["sent", "booked", "booked"]
    # accepted sends are recorded together, but none waits longer than mark_within_s (0.5 s)
    assert p.config.mark_within_s == 0.5
    assert seen == [outbox.SENDING, outbox.SENDING, outbox.SENT]
    # the booked rows' slots are a window (+ grace) apart: one delayed message each, due a
    # moment (wake_lead_s) before its slot
    assert [rows for rows, _ in harness.messages] == [[ids[1]], [ids[2]]]
    lead = p.config.wake_lead_s
    due = [harness.clock.time() + delay + lead for _, delay in harness.messages]
    assert due[0] - start >= 60 and due[1] - due[0] >= 60
    assert len(harness.records()) == 1
    p = harness.pipeline()
    for (row_id, _, booking), at in zip(list(harness.queued), due, strict=True):
        harness.clock.set(at - lead)  # the message comes early: the row waits for its slot
        assert p.deliver(row_id, booking) == "sent"
        assert harness.clock.time() >= at - 0.01
    assert len(harness.records()) == 3


def test_a_windows_booked_rows_ride_one_message_and_go_at_their_slots(harness):
    """Three rows per 60 s, nine queued: the six booked rows ride two delayed messages (one per
    window), each due ``wake_lead_s`` before its first slot; there each row waits for its own
    slot and goes within its grace, and no 60 s window of sends holds more than three."""
    harness.set_campaign(window_limit=3, window_seconds=60)
    harness.contacts(9)
    run_id = harness.launch()
    ids = [r.id for r in harness.rows(run_id)]
    p = harness.pipeline()
    out = p.deliver_many(ids)
    assert [out[i] for i in ids] == ["sent"] * 3 + ["booked"] * 6
    assert [sorted(rows) for rows, _ in harness.messages] == [ids[3:6], ids[6:9]]
    assert [r.enqueued_at is not None for r in harness.rows(run_id)[3:]] == [True] * 6
    bookings = {row_id: b for row_id, _, b in harness.queued}
    lead = p.config.wake_lead_s
    t0 = harness.clock.time()
    for rows, delay in list(harness.messages):
        harness.clock.set(t0 + delay)
        got = p.deliver_many(rows, {i: bookings[i] for i in rows})
        assert set(got.values()) == {"sent"}
        slots = sorted(bookings[i]["slot_at"] for i in rows)
        assert abs(t0 + delay + lead - slots[0]) < 0.01
    times = sorted(r["received_at"] for r in harness.records())
    assert len(times) == 9
    assert all(b - a >= 60 for a, b in zip(times, times[3:], strict=False))
    booked = sorted(b["slot_at"] for b in bookings.values())
    assert times[3:] == pytest.approx(booked, abs=0.01)  # each at its own slot


def test_slots_are_reserved_ahead_within_the_slots_own_grace(harness):
    """A 1 s campaign window caps its slots' grace at 0.5 s whatever the configured 2 s: the
    rows reserved ahead are those the pace reaches within half of 0.5 s (at 0.1 s a row, 2)."""
    harness.set_campaign(window_limit=1000, window_seconds=1)
    harness.contacts(5)
    run_id = harness.launch()
    ids = [r.id for r in harness.rows(run_id)]
    throttle = CountingThrottle(harness.rt.throttle)
    p = _pipeline(harness, harness.rt.gateway, throttle)
    p.slots.pace = 0.1
    p.config.min_grace_s = 2.0
    assert p.deliver_many(ids) == {i: "sent" for i in ids}
    assert throttle.calls == [("reserve_many", 2), ("reserve_many", 3)]


def test_a_per_recipient_cap_keeps_one_bucket_per_recipient_within_a_batch(harness):
    """The campaign's buckets are shared by its rows; a per-recipient cap is not: at 1 message
    per recipient a day, three recipients in one batch all go at once."""
    harness.set_campaign(frequency_cap_count=1, frequency_cap_hours=24)
    harness.contacts(3)
    run_id = harness.launch()
    ids = [r.id for r in harness.rows(run_id)]
    p = harness.pipeline()
    assert p.deliver_many(ids) == {i: "sent" for i in ids}
    assert p.deliver_many(ids) == {i: "skip:sent" for i in ids}


def test_a_stop_while_a_carried_row_waits_for_its_slot_stops_it(harness):
    """A carried row waits in its thread for its slot before its halt check: a STOP that comes
    meanwhile suppresses it: nothing is sent."""
    harness.set_campaign(window_limit=1, window_seconds=60)
    cids = harness.contacts(3)
    run_id = harness.launch()
    ids = [r.id for r in harness.rows(run_id)]
    p = harness.pipeline()
    booked = p.deliver_many(ids)
    assert [booked[i] for i in ids] == ["sent", "booked", "booked"]
    bookings = {row_id: b for row_id, _, b in harness.queued}
    (first, delay), _ = harness.messages
    harness.clock.advance(delay)  # the message comes wake_lead_s before the slot
    sleep = harness.clock.sleep
    stopped: list[float] = []

    def stop_meanwhile(seconds: float) -> None:
        stopped.append(seconds)
        harness.stop(cids[1])
        sleep(seconds)

    harness.clock.sleep = stop_meanwhile  # type: ignore[method-assign]
    out = p.deliver_many(first, {i: bookings[i] for i in first})
    assert out == {ids[1]: "suppressed:opted_out"}
    assert stopped and 0 < stopped[0] <= p.config.wake_lead_s + 0.01
    assert harness.row(ids[1]).state == outbox.SUPPRESSED
    assert len(harness.records()) == 1


class SlowBookings:
    """The real throttle, its reservations for later slots slow as in the embedded mode, where
    fakeredis runs each script of a pipeline in turn in the worker's process: ``seconds`` pass
    after each call that books ahead (the first row's answer comes the latest after its
    script ran)."""

    def __init__(self, inner: Any, clock: Any, seconds: float) -> None:
        self.inner, self.clock, self.seconds = inner, clock, seconds

    def reserve_many(self, requests: Any, *, rows: Any, **kw: Any) -> Any:
        out = []
        for req, row in zip(requests, rows, strict=True):
            out += self.inner.reserve_many([req], rows=[row], **kw)
            if out[-1].wait_s > 0:
                self.clock.advance(self.seconds)
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_a_groups_rows_ride_in_slot_order_when_their_bookings_answered_late(harness):
    """Four rows booked for the next window in one slow pipeline (0.1 s per call, their slots
    10 ms apart): each row's own estimate of when its slot comes is late by the calls after
    its own (0.3 s for the first row, 0 for the last), the reverse of the slots' order.  The
    message still carries them in slot order, due ``wake_lead_s`` before the first slot, and
    each goes at its own slot (sorted by the estimates the thread waited for the last row's
    slot first, and the MPS-bound embedded run lost a window for its earlier rows)."""
    harness.set_campaign(window_limit=4, window_seconds=60)
    harness.contacts(8)
    run_id = harness.launch()
    ids = [r.id for r in harness.rows(run_id)]
    p = _pipeline(harness, harness.rt.gateway)
    check = p.halt_check.check

    def check_10ms(*a: Any) -> Any:
        harness.clock.advance(0.01)
        return check(*a)

    p.halt_check.check = check_10ms  # type: ignore[method-assign]
    p.slots.pace = 0.2  # one row at a time: the first window's slots 10 ms apart
    assert p.deliver_many(ids[:4]) == {i: "sent" for i in ids[:4]}
    p = replace(p, throttle=SlowBookings(harness.rt.throttle, harness.clock, 0.1))
    p.slots.pace = 0.01  # the next four are booked in one pipeline
    assert p.deliver_many(ids[4:]) == {i: "booked" for i in ids[4:]}
    bookings = {row_id: b for row_id, _, b in harness.queued}
    slots = [bookings[i]["slot_at"] for i in ids[4:]]
    assert slots == sorted(slots) and slots[-1] - slots[0] < 0.05
    ((rows, delay),) = harness.messages
    assert rows == ids[4:]  # in slot order
    lead = p.config.wake_lead_s
    assert harness.clock.time() + delay + lead == pytest.approx(slots[0], abs=0.002)
    harness.clock.advance(delay)
    assert p.deliver_many(rows, bookings) == {i: "sent" for i in rows}
    times = sorted(r["received_at"] for r in harness.records())[4:]
    assert all(0 <= t - s < 0.02 for t, s in zip(times, slots, strict=True))


def test_booked_rows_are_grouped_at_the_pace_of_a_send_not_of_a_booking(harness):
    """A batch whose first ten rows are sent (10 ms each) and next ten booked for the next
    window (0.1 s each: unclaiming a row for later is its own write): one thread sends the ten
    booked rows well within half their grace of their slots, so they ride ONE message.  At the
    batch's own pace (booking included, 0.06 s a row) they rode two, and a window's booked rows
    of many batches needed more worker threads at once than the embedded mode has."""
    harness.set_campaign(window_limit=10, window_seconds=60)
    harness.contacts(20)
    run_id = harness.launch()
    ids = [r.id for r in harness.rows(run_id)]
    p = _pipeline(harness, harness.rt.gateway)
    check, later = p.halt_check.check, p.slots._later

    def check_10ms(*a: Any) -> Any:
        harness.clock.advance(0.01)
        return check(*a)

    def slow_later(*a: Any, **kw: Any) -> Any:
        harness.clock.advance(0.1)
        return later(*a, **kw)

    p.halt_check.check = check_10ms  # type: ignore[method-assign]
    p.slots._later = slow_later  # type: ignore[method-assign]
    out = p.deliver_many(ids)
    assert [out[i] for i in ids] == ["sent"] * 10 + ["booked"] * 10
    assert p.slots.pace > 0.05 and p.slots.send_pace < 0.02
    ((rows, delay),) = harness.messages
    assert sorted(rows) == ids[10:]
    bookings = {row_id: b for row_id, _, b in harness.queued}
    harness.clock.advance(delay)
    p.slots._later = later  # type: ignore[method-assign]
    assert p.deliver_many(rows, bookings) == {i: "sent" for i in rows}
    times = sorted(r["received_at"] for r in harness.records())[10:]
    slots = sorted(bookings[i]["slot_at"] for i in rows)
    late = [t - s for t, s in zip(times, slots, strict=True)]
    assert 0 <= min(late) and max(late) <= 0.5 * bookings[rows[0]]["grace_s"]


def _held(harness: Any, limit: int, seconds: int, n: int) -> tuple[int, list[int], Pipeline]:
    """A run of ``n`` at ``limit`` per ``seconds`` and a pipeline that holds its carried rows,
    as shipped (the test puts each stretch on the queue: no thread waits for a FakeClock)."""
    harness.set_campaign(window_limit=limit, window_seconds=seconds)
    harness.contacts(n)
    run_id = harness.launch()
    p = harness.rt.pipeline(harness.enqueue)
    p.slots.carried.autoflush = False
    return run_id, [r.id for r in harness.rows(run_id)], p


def test_the_booked_rows_of_two_batches_ride_one_message_for_their_window(harness):
    """Four per 30 s, two batches of six: the first sends four and books two for the next
    window, the second books the window's other two and four for the third.  With the shipped
    ``enqueue_ahead_s`` nothing goes on the queue when the batches end; 2 s before the next
    window one message carries its four rows, both batches' (batch by batch they rode two,
    each holding a worker thread), and they go at their slots; a stopping worker flushes the
    third window's four (``Pipeline.close``)."""
    run_id, ids, p = _held(harness, 4, 30, 12)
    assert p.config.enqueue_ahead_s == 2.0
    try:
        first = p.deliver_many(ids[:6])
        second = p.deliver_many(ids[6:])
        assert [first[i] for i in ids[:6]] == ["sent"] * 4 + ["booked"] * 2
        assert set(second.values()) == {"booked"}
        assert harness.messages == [] and p.slots.carried.held() == 8
        bookings = {r.id: r for r in harness.rows(run_id)}
        window2 = sorted(ids[4:10], key=lambda i: bookings[i].due_at)[:4]
        assert set(window2) == set(ids[4:8])
        slot = min(bookings[i].due_at for i in window2)
        harness.clock.set(as_utc(slot).timestamp() - 2.0)
        p.slots.carried.flush_due()
        ((rows, delay),) = harness.messages
        assert sorted(rows) == sorted(ids[4:8]) and delay == pytest.approx(1.5, abs=0.02)
        booked = {row_id: b for row_id, _, b in harness.queued}
        harness.clock.advance(delay)
        assert p.deliver_many(rows, booked) == {i: "sent" for i in rows}
        assert len(harness.records()) == 8
    finally:
        p.close()
    assert sorted(r for m, _ in harness.messages[1:] for r in m) == sorted(ids[8:])
    assert p.slots.carried.held() == 0


def test_a_parked_rows_message_holds_it_again_without_touching_the_outbox(harness):
    """One per 300 s: the second row's slot is ~300 s ahead, beyond ``hold_s`` (120 s), so it
    is parked: its message is due 60 s before its slot, and the process that receives it holds
    it again (``early``) without a database write; 2 s before its slot it goes on the queue
    for its slot and is sent there."""
    _, ids, p = _held(harness, 1, 300, 2)
    try:
        assert p.deliver_many(ids) == {ids[0]: "sent", ids[1]: "booked"}
        ((rows, delay),) = harness.messages
        booking = harness.queued[0][2]
        assert rows == [ids[1]] and booking is not None
        slot = booking["slot_at"]
        assert slot - harness.clock.time() > p.config.hold_s
        assert harness.clock.time() + delay == pytest.approx(slot - 60.0, abs=0.01)
        before = harness.row(ids[1])
        harness.clock.advance(delay)
        assert p.deliver_many(rows, {ids[1]: booking}) == {ids[1]: "early"}
        after = harness.row(ids[1])
        assert (after.state, after.enqueued_at, after.attempts, after.updated_at) == (
            before.state,
            before.enqueued_at,
            before.attempts,
            before.updated_at,
        )
        assert len(harness.messages) == 1 and p.slots.carried.held() == 1
        harness.clock.set(slot - 2.0)
        p.slots.carried.flush_due()
        assert harness.messages[-1][0] == [ids[1]]
        harness.clock.advance(harness.messages[-1][1])
        assert p.deliver_many([ids[1]], {ids[1]: booking}) == {ids[1]: "sent"}
    finally:
        p.close()
    assert len(harness.records()) == 2
