"""The hand-over of a gated batch: one claim, per-row slot and halt check, sends recorded
together; rows not handed to the carrier always go back to the outbox unchanged."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from dispatcher import outbox
from dispatcher.delivery.pipeline import Pipeline


class Gateway:
    """The real gateway with a hook run before each send (index of the send)."""

    def __init__(self, inner: Any, before: Any) -> None:
        self.inner, self.before, self.sends = inner, before, 0

    def send(self, *a: Any, **kw: Any) -> Any:
        self.before(self.sends)
        self.sends += 1
        return self.inner.send(*a, **kw)

    def find_sent(self, *a: Any, **kw: Any) -> Any:
        return self.inner.find_sent(*a, **kw)


def _pipeline(h, gateway: Any, **cfg: Any) -> Pipeline:
    p = replace(h.pipeline(), gateway=gateway)
    for k, v in cfg.items():
        setattr(p.config, k, v)
    return p


def _launch(h, n: int) -> list[int]:
    h.contacts(n)
    return [r.id for r in h.rows(h.launch())]


def test_a_batch_that_runs_out_of_time_gives_its_other_rows_back_unchanged(harness):
    ids = _launch(harness, 4)
    p = _pipeline(
        harness,
        Gateway(harness.rt.gateway, lambda i: harness.clock.advance(20.0)),
        batch_max_s=30.0,
    )
    out = p.deliver_many(ids)
    # sends at t=0 (+20 s) and t=20 (+20 s): at t=40 the batch is over its 30 s
    assert [out[i] for i in ids] == ["sent", "sent", "unclaimed", "unclaimed"]
    rest = [harness.row(i) for i in ids[2:]]
    assert [(r.state, r.attempts, r.claim_token, r.enqueued_at) for r in rest] == [
        (outbox.QUEUED, 0, None, None)
    ] * 2  # released again by the scheduler's next tick
    assert len(harness.records()) == 2
    assert p.deliver_many(ids[2:]) == {ids[2]: "sent", ids[3]: "sent"}


def test_a_row_whose_send_broke_stays_in_flight_and_the_unreached_go_back(harness):
    ids = _launch(harness, 3)

    def boom(i: int) -> None:
        if i == 1:
            raise RuntimeError("connection pool exploded")

    p = _pipeline(harness, Gateway(harness.rt.gateway, boom))
    with pytest.raises(RuntimeError):
        p.deliver_many(ids)
    first, broken, unreached = (harness.row(i) for i in ids)
    assert first.state == outbox.SENT and first.provider_sid  # recorded despite the error
    # it may have reached the carrier: only the reconciler (asking the carrier) decides
    assert broken.state == outbox.SENDING
    assert (unreached.state, unreached.attempts) == (outbox.QUEUED, 0)


def test_a_throttled_row_is_given_back_without_spending_an_attempt(harness):
    harness.set_campaign(window_limit=1, window_seconds=60)
    ids = _launch(harness, 2)
    out = harness.pipeline().deliver_many(ids)
    assert [out[i] for i in ids] == ["sent", "booked"]
    booked = harness.row(ids[1])
    assert (booked.state, booked.attempts, booked.claim_token) == (outbox.QUEUED, 0, None)
    assert booked.enqueued_at is not None  # a delayed queue message carries it


class CountingVerify:
    """Count the rows the halt check verifies in the database (behind a key or lost keys)."""

    def __init__(self, p: Pipeline) -> None:
        self.rows: list[int] = []
        inner = p.halt_check.verify

        def verify(x: Any, token: str) -> Any:
            self.rows.append(x.row_id)
            return inner(x, token)

        p.halt_check.verify = verify  # type: ignore[method-assign]


def test_with_no_halt_no_row_is_checked_in_the_database(harness):
    ids = _launch(harness, 5)
    p = harness.pipeline()
    assert p.halt_keys is harness.rt.halts  # a Redis shared by every process (here: handed in)
    counted = CountingVerify(p)
    assert p.deliver_many(ids) == {i: "sent" for i in ids}
    assert counted.rows == []


def test_a_stop_during_a_batch_meets_its_halt_key(harness):
    cids = harness.contacts(4)
    ids = [r.id for r in harness.rows(harness.launch())]
    p = _pipeline(harness, Gateway(harness.rt.gateway, lambda i: i == 1 and harness.stop(cids[2])))
    counted = CountingVerify(p)
    out = p.deliver_many(ids)
    assert [out[i] for i in ids] == ["sent", "sent", "suppressed:opted_out", "sent"]
    assert counted.rows == [ids[2]]  # only the stopped contact's row paid a database check
    assert harness.row(ids[2]).state == outbox.SUPPRESSED
    assert harness.row(ids[2]).to_phone not in {r["to"] for r in harness.records()}


def test_a_cancel_during_a_batch_cancels_the_claimed_rows(harness):
    from dispatcher import runs

    harness.contacts(3)
    run_id = harness.launch()
    ids = [r.id for r in harness.rows(run_id)]

    def cancel(i: int) -> None:
        if i == 0:  # while the first row is being sent
            with harness.db.session() as s:
                runs.cancel_run(s, run_id, harness.clock.now(), halts=harness.rt.halts)

    out = _pipeline(harness, Gateway(harness.rt.gateway, cancel)).deliver_many(ids)
    assert [out[i] for i in ids] == ["sent", "cancelled", "cancelled"]
    assert [harness.row(i).state for i in ids] == ["sent", "cancelled", "cancelled"]
    assert len(harness.records()) == 1


def test_after_a_redis_flush_every_row_is_checked_in_the_database(harness):
    """The halt keys may be gone with the flush: the epoch read before the batch no longer
    matches, so the remaining rows are checked in the database (and still sent)."""
    ids = _launch(harness, 3)
    p = _pipeline(
        harness, Gateway(harness.rt.gateway, lambda i: i == 0 and harness.rt.redis.flushall())
    )
    counted = CountingVerify(p)
    assert p.deliver_many(ids) == {i: "sent" for i in ids}
    assert counted.rows == ids[1:]  # the rows checked after the flush (during the 1st send)
