"""Unit tests (SQLite + fakeredis + FakeClock, no servers) for the pipeline fixes the fault
suite led to.  Each names the failure it pins down."""

from __future__ import annotations

from tests.unit.pipeline.conftest import make_harness


def test_a_row_released_late_for_an_old_due_time_is_not_lost(tmp_path):
    """Rows are due at the run's start; a backlog releases some of them long after.  Their
    queue message was just written: the reconciler must not call them lost (it did, by due_at
    alone, and re-enqueued every carried row every reconcile -> a storm of duplicate queue
    messages that stalled a 2 000-recipient run)."""
    with make_harness(tmp_path) as h:
        for _ in range(3):
            h.contact()
        h.launch()
        hk = h.release_loop()
        h.clock.advance(hk.config.lost_after_s * 3)  # the backlog: due long ago
        assert hk.release() == 3
        assert hk.reconcile()["lost"] == 0  # just enqueued: not lost
        h.clock.advance(hk.config.lost_after_s + 1)
        assert hk.reconcile()["lost"] == 3  # now the messages really are overdue


def test_a_sent_row_whose_callbacks_came_too_early_gets_its_final_status(tmp_path):
    """The carrier answered slowly: its 'delivered' callback came before the row knew its SID
    and was dropped, so the row stayed 'sent' forever.  The reconciler now asks the carrier."""
    with make_harness(tmp_path) as h:
        h.contact()
        run_id = h.launch()
        p = h.pipeline()
        hk = h.release_loop(p)
        hk.refresh = p.refresh
        hk.config.status_after_s = 60
        (row_id,) = [r.id for r in h.rows(run_id)]
        h.sandbox.set_faults({"drop_callbacks": 1.0})  # the callbacks never reach the row
        assert p.deliver(row_id) == "sent"
        h.sandbox.advance(5)  # the carrier delivers it
        hk.reconcile()
        assert h.row(row_id).state == "sent"  # not yet: callbacks may still come
        h.clock.advance(61)
        hk.reconcile()
        assert h.row(row_id).state == "delivered"


def test_a_row_resolved_by_lookup_takes_the_carriers_final_status(tmp_path):
    """A lookup finds the SID (unknown -> sent), then its final status is applied like any
    other, with its error code, by the one status function (issue 21.1)."""
    from dispatcher import outbox, provider_status
    from dispatcher.halts import NoHaltKeys

    with make_harness(tmp_path) as h:
        h.contact()
        run_id = h.launch()
        (row_id,) = [r.id for r in h.rows(run_id)]
        with h.db.session() as s:
            s.connection().execute(
                outbox.T.update().where(outbox.T.c.id == row_id).values(state="unknown")
            )
        with h.db.session() as s:
            assert outbox.resolve_unknown(
                s, row_id, found_sid="SM1", status="delivered", now=h.clock.now()
            )
        assert h.row(row_id).state == "sent"
        with h.db.session() as s:
            res = provider_status.apply_status(
                s, sid="SM1", status="delivered", error_code=None, now=h.clock.now(),
                halts=NoHaltKeys(),
            )  # fmt: skip
        assert res.outcome == "applied" and h.row(row_id).state == "delivered"
