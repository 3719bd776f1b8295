"""Recovery with the shipped defaults (issue 21.2), on the release loop with an injected clock:
a changed broker epoch (Redis lost its keys) releases every carried row at once, not after
``lost_after_s``; ``sent`` rows are asked of the carrier after a short delay once callbacks
stopped arriving, at a bounded rate, and after ``status_after_s`` while callbacks arrive."""

from __future__ import annotations

from dispatcher import outbox
from dispatcher.release_loop import ReleaseConfig, ReleaseLoop
from tests.unit.delivery import test_status_paths as paths
from tests.unit.delivery.test_pipeline import World

world = paths.world  # the fixture: fakes for every port, SQLite for the outbox


class Epoch:
    """The broker's epoch token; ``flush()`` is what FLUSHALL does to it."""

    def __init__(self) -> None:
        self.n = 0

    def __call__(self) -> object:
        return self.n

    def flush(self) -> None:
        self.n += 1


def _loop(w: World, epoch: Epoch | None = None, **cfg: float) -> ReleaseLoop:
    return ReleaseLoop(
        w.h.db,
        w.h.clock,
        w.h.enqueue_many,
        resolve=w.p.resolve,
        refresh=w.p.refresh,
        config=ReleaseConfig(**cfg),  # type: ignore[arg-type]
        epoch=epoch,
    )


def test_a_changed_epoch_releases_every_carried_row_at_once(world: World) -> None:
    w, epoch = world, Epoch()
    w.h.contacts(5)
    w.h.launch()
    loop = _loop(w, epoch)  # the shipped defaults: lost_after_s 60
    loop.tick()
    assert len(w.h.released) == 5
    w.h.clock.advance(1.0)
    loop.tick()
    assert len(w.h.released) == 5  # still carried: nothing released twice
    epoch.flush()  # Redis lost its keys (and the queue its messages)
    w.h.clock.advance(1.0)
    loop.tick()
    assert len(w.h.released) == 10 and loop.epoch_changes == 1
    assert sorted(w.h.released[5:]) == sorted(w.h.released[:5])
    w.h.clock.advance(1.0)
    loop.tick()
    assert len(w.h.released) == 10  # once per change


def test_without_an_epoch_the_rows_wait_for_lost_after(world: World) -> None:
    w = world
    w.h.contacts(3)
    w.h.launch()
    loop = _loop(w)
    loop.tick()
    w.h.clock.advance(30.0)
    loop.reconcile()
    loop.tick()
    assert len(w.h.released) == 3


def _sent(w: World, n: int) -> list[int]:
    w.h.set_campaign(window_limit=1000)
    w.h.contacts(n)
    ids = [r.id for r in w.h.rows(w.h.launch())]
    assert w.p.deliver_many(ids) == {i: "sent" for i in ids}
    for m in w.gateway.messages:
        w.gateway.settle(m.sid, "delivered")  # the carrier delivered; no callback came
    return ids


def test_silent_rows_are_fetched_soon_once_callbacks_stopped(world: World) -> None:
    w = world
    ids = _sent(w, 4)
    loop = _loop(w)  # shipped defaults: quick_status_after_s 10, status_after_s 300
    w.h.clock.advance(5.0)
    loop.reconcile()
    assert {w.state(i) for i in ids} == {outbox.SENT}  # too soon to ask
    w.h.clock.advance(6.0)
    loop.reconcile()
    assert {w.state(i) for i in ids} == {outbox.DELIVERED}  # 11 s after the send


def test_while_callbacks_arrive_a_silent_row_waits_status_after(world: World) -> None:
    w = world
    ids = _sent(w, 3)
    loop = _loop(w)
    w.h.clock.advance(11.0)
    paths._callback(w, ids[0], "delivered", 0)  # a callback just arrived
    loop.reconcile()
    assert [w.state(i) for i in ids] == [outbox.DELIVERED, outbox.SENT, outbox.SENT]
    w.h.clock.advance(290.0)
    loop.reconcile()
    assert {w.state(i) for i in ids} == {outbox.DELIVERED}


def test_a_row_whose_callback_was_lost_is_fetched_soon_once_later_ones_are_heard(
    world: World,
) -> None:
    """The webhooks were down for the first rows' callbacks and are back: a row sent later
    heard its callback, so the older rows' callbacks were lost; they are fetched soon."""
    w = world
    lost = _sent(w, 2)
    w.h.clock.advance(12.0)
    w.h.contacts(1)
    later = w.h.rows(w.h.launch())[-1].id
    assert w.p.deliver(later) == "sent"
    paths._callback(w, later, "delivered", 0)
    loop = _loop(w)
    loop.reconcile()
    assert {w.state(i) for i in lost} == {outbox.DELIVERED}


def test_fetches_are_bounded_per_second(world: World) -> None:
    w = world
    ids = _sent(w, 30)
    loop = _loop(w, refresh_per_s=1.0)
    w.h.clock.advance(11.0)
    loop.reconcile()  # the first reconcile counts 10 s since the last
    assert sum(w.state(i) == outbox.DELIVERED for i in ids) == 10
    w.h.clock.advance(5.0)
    loop.reconcile()
    assert sum(w.state(i) == outbox.DELIVERED for i in ids) == 15
