"""Pause / resume / cancel and STOP take effect for every message not yet handed to the carrier."""

from __future__ import annotations

from dispatcher import outbox, runs


def _released_run(harness, n=3):
    for _ in range(n):
        harness.contact()
    run_id = harness.launch()
    hk = harness.release_loop()
    assert hk.release() == n
    return run_id, hk


def test_paused_run_sends_nothing_and_resume_releases_its_rows(harness):
    run_id, hk = _released_run(harness)
    carried = list(harness.released)
    harness.released.clear()
    with harness.db.session() as s:
        assert runs.pause_run(s, run_id, "operator", harness.clock.now(), halts=harness.rt.halts)

    p = harness.pipeline()
    for row_id in carried:
        assert p.deliver(row_id) == "run:paused"
        row = harness.row(row_id)
        assert (row.state, row.enqueued_at) == (outbox.QUEUED, None)  # unqueued, kept
    assert harness.records() == []
    assert hk.release() == 0  # a paused run is not released
    assert hk.tick()["completed"] == 0

    with harness.db.session() as s:
        runs.resume_run(s, run_id, harness.clock.now())
    assert harness.run(run_id).state == runs.RUNNING
    assert hk.release() == 3
    assert sorted(harness.released) == sorted(carried)
    for row_id in harness.released:
        assert p.deliver(row_id) == "sent"
    assert len(harness.records()) == 3
    assert hk.tick()["completed"] == 1
    assert harness.run(run_id).state == runs.COMPLETED


def test_resume_re_releases_rows_still_carried_when_the_run_was_paused(harness):
    run_id, hk = _released_run(harness)
    harness.released.clear()
    with harness.db.session() as s:  # paused and resumed before any worker saw the messages
        runs.pause_run(s, run_id, "operator", harness.clock.now(), halts=harness.rt.halts)
        runs.resume_run(s, run_id, harness.clock.now())
    assert hk.release() == 3
    p = harness.pipeline()
    # both the old and the new queue message arrive: each row is sent once
    outs = [p.deliver(i) for i in harness.released] + [p.deliver(i) for i in harness.released]
    assert outs.count("sent") == 3
    assert len(harness.records()) == 3


def test_pause_releases_a_booked_throttle_slot(harness):
    harness.set_campaign(window_limit=1, window_seconds=300)
    run_id, hk = _released_run(harness, n=2)
    p = harness.pipeline()
    first, second = harness.released
    assert p.deliver(first) == "sent"
    assert p.deliver(second) == "booked"  # the next slot, ~301 s ahead
    ((row_id, delay, booking),) = harness.queued
    assert row_id == second and 300 <= delay <= 302
    with harness.db.session() as s:
        runs.pause_run(s, run_id, "operator", harness.clock.now(), halts=harness.rt.halts)
    harness.clock.advance(delay + p.config.wake_lead_s)  # the message's due time: the slot
    assert p.deliver(second, booking) == "run:paused"
    with harness.db.session() as s:
        runs.resume_run(s, run_id, harness.clock.now())
    harness.released.clear()
    assert hk.release() == 1
    assert p.deliver(second) == "sent"  # the released slot is free again: no extra wait
    assert len(harness.records()) == 2


def test_cancel_marks_queued_rows_cancelled_and_sends_nothing(harness):
    run_id, hk = _released_run(harness)
    p = harness.pipeline()
    first, *rest = harness.released
    assert p.deliver(first) == "sent"
    with harness.db.session() as s:
        assert runs.cancel_run(s, run_id, harness.clock.now(), halts=harness.rt.halts) == 2
    for row_id in rest:
        assert p.deliver(row_id) == "skip:cancelled"
        assert harness.row(row_id).state == outbox.CANCELLED
    assert harness.row(first).state in (outbox.SENT, outbox.DELIVERED)
    assert len(harness.records()) == 1
    assert harness.run(run_id).state == runs.CANCELLED
    assert hk.release() == 0


def test_stop_before_delivery_sends_nothing(harness):
    keep = harness.contact()
    stopper = harness.contact()
    run_id = harness.launch()
    hk = harness.release_loop()
    assert hk.release() == 2
    assert harness.stop(stopper) == 1
    p = harness.pipeline()
    by_contact = {r.contact_id: r for r in harness.rows(run_id)}
    assert p.deliver(by_contact[stopper].id) == "skip:suppressed"
    assert p.deliver(by_contact[keep].id) == "sent"
    (rec,) = harness.records()
    assert rec["to"] == by_contact[keep].to_phone
    row = harness.row(by_contact[stopper].id)
    assert (row.state, row.suppress_reason) == (outbox.SUPPRESSED, "opted_out")
