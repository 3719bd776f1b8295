"""Status callbacks that arrive before the worker recorded their SID: answered 200, kept and
applied again once the SID is there (early.py); late or duplicate callbacks are not kept."""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import pytest
from sqlalchemy import update
from sqlmodel import select

from dispatcher import outbox
from dispatcher import provider_status as delivery
from dispatcher.delivery.fakes import MemoryHalts
from dispatcher.errors import StorageError
from dispatcher.models import ConsentEvent, OutboxMessage
from dispatcher.provider_status import StatusUpdate, apply_status, apply_statuses
from dispatcher.webhooks import WebhookOptions
from tests.procs import wait_for
from tests.unit.webhooks.conftest import (
    PHONE,
    RecordingMetrics,
    build_world,
    make_client,
    post,
    status,
)

T: Any = OutboxMessage.__table__  # type: ignore[attr-defined]
SID = "SM" + "e" * 32
#: short, but long enough (~8 s in all) for a test to record the SID before it is given up
DELAYS = (0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 4.0)


def _setup(
    db: Any, clock: Any, *, delays: tuple[float, ...] = DELAYS, **options: Any
) -> tuple[Any, Any, RecordingMetrics]:
    metrics = RecordingMetrics()
    client = make_client(
        db, clock, metrics=metrics, options=WebhookOptions(early_retry_delays_s=delays, **options)
    )
    return build_world(db), client, metrics


def _early(client: Any) -> Any:
    return client.app.state.webhooks.early


def _handed_over(world: Any) -> OutboxMessage:
    """A row the worker handed to the carrier; its SID is not recorded yet."""
    return world.add_row("sending")


def _record_sid(world: Any, clock: Any, row: OutboxMessage) -> None:
    """What the worker does at the end of its batch of sends."""
    with world.db.session() as s:
        moved = (
            s.connection()
            .execute(
                update(T)
                .where(T.c.id == row.id, T.c.state == "sending")
                .values(
                    state="sent",
                    provider_sid=SID,
                    provider_status="queued",
                    sent_at=clock.now(),
                    updated_at=clock.now(),
                )
            )
            .rowcount
        )
    assert moved == 1


def _row(world: Any, row_id: int) -> OutboxMessage:
    with world.db.session() as s:
        return s.get(OutboxMessage, row_id)


def _count(metrics: RecordingMetrics) -> Counter[str]:
    return Counter(c[0] for c in metrics.calls)


def test_a_callback_before_its_sid_is_applied_once_the_sid_is_recorded(any_db, clock):
    world, client, metrics = _setup(any_db, clock)
    row = _handed_over(world)
    assert post(client, "/twilio/status", status(SID, "delivered")).status_code == 200
    early = _early(client)
    assert early.pending() == 1 and _row(world, row.id).state == "sending"

    _record_sid(world, clock, row)
    wait_for(lambda: _count(metrics)["delivered"] == 1)
    wait_for(lambda: early.pending() == 0)
    got = _row(world, row.id)
    assert (got.state, got.provider_status, got.provider_sid) == ("delivered", "delivered", SID)
    assert metrics.calls == [
        ("delivered", world.campaign.sid, world.campaign.messaging_service_sid)
    ]


@pytest.mark.parametrize("order", [("sent", "delivered"), ("delivered", "sent")])
def test_several_early_callbacks_of_one_sid_end_at_the_highest(sqlite_db, clock, order):
    world, client, metrics = _setup(sqlite_db, clock)
    row = _handed_over(world)
    for st in order:
        assert post(client, "/twilio/status", status(SID, st)).status_code == 200
    # only the final status is kept: the intermediate one changes nothing (moves_nothing)
    assert _early(client).pending() == 1
    _record_sid(world, clock, row)
    wait_for(lambda: _early(client).pending() == 0)
    got = _row(world, row.id)
    assert (got.state, got.provider_status) == ("delivered", "delivered")
    assert _count(metrics) == {"delivered": 1}


def test_a_sid_that_never_appears_is_given_up(sqlite_db, clock, caplog):
    world, client, metrics = _setup(sqlite_db, clock, delays=(0.01, 0.02, 0.03))
    row = _handed_over(world)
    caplog.set_level(logging.DEBUG, logger="dispatcher.webhooks.early")
    assert post(client, "/twilio/status", status(SID, "delivered")).status_code == 200
    early = _early(client)
    thread = early.thread
    assert thread is not None and thread.daemon

    wait_for(lambda: early.pending() == 0)
    thread.join(5)
    assert not thread.is_alive() and early.thread is None
    got = _row(world, row.id)
    assert (got.state, got.provider_sid, got.provider_status) == ("sending", None, None)
    assert metrics.calls == []
    assert "gave up" in caplog.text and SID in caplog.text and PHONE not in caplog.text


def test_a_late_or_duplicate_callback_is_not_kept(sqlite_db, clock):
    world, client, metrics = _setup(sqlite_db, clock)
    row = world.add_row("delivered", sid=SID)
    for st in ("sent", "delivered"):
        assert post(client, "/twilio/status", status(SID, st)).status_code == 200
    assert _early(client).pending() == 0 and _early(client).thread is None
    assert _row(world, row.id).state == "delivered" and metrics.calls == []


def test_an_unknown_status_value_is_not_kept(sqlite_db, clock):
    _, client, _ = _setup(sqlite_db, clock)
    assert post(client, "/twilio/status", status(SID, "teleported")).status_code == 200
    assert _early(client).pending() == 0 and _early(client).thread is None


def test_outcomes_alone_and_in_a_batch(sqlite_db, clock):
    world = build_world(sqlite_db)
    world.add_row("delivered", sid=SID)
    other = "SM" + "f" * 32
    cases = [
        (SID, "sent", "unchanged"),
        (SID, "teleported", "unchanged"),
        (other, "delivered", "unknown_sid"),
        (other, "teleported", "unchanged"),
    ]
    halts = MemoryHalts(clock)
    with sqlite_db.session() as s:
        alone = [
            apply_status(
                s, sid=sid, status=st, error_code=None, now=clock.now(), halts=halts
            ).outcome
            for sid, st, _ in cases
        ]
        batch = apply_statuses(
            s,
            [StatusUpdate(sid, st, None) for sid, st, _ in cases],
            now=clock.now(),
            halts=halts,
        )
    assert alone == [o for *_, o in cases]
    assert [r.outcome for r in batch] == [o for *_, o in cases]


def test_reactions_run_when_a_kept_callback_applies(sqlite_db, clock, monkeypatch):
    world, client, metrics = _setup(sqlite_db, clock)
    ctx = client.app.state.webhooks
    guarded: list[list[int]] = []
    monkeypatch.setattr(ctx, "guard_now", guarded.append)
    row = _handed_over(world)
    assert post(client, "/twilio/status", status(SID, "failed", 21610)).status_code == 200
    _record_sid(world, clock, row)
    wait_for(lambda: guarded)
    got = _row(world, row.id)
    assert (got.state, got.error_code) == ("failed", 21610)
    with sqlite_db.session() as s:
        [ev] = s.exec(select(ConsentEvent)).all()
    assert (ev.source, ev.evidence_ref) == ("carrier", SID)
    assert guarded == [[row.run_id]]
    mg = world.campaign.messaging_service_sid
    assert sorted(metrics.calls) == [
        ("failed", world.campaign.sid, mg, 21610),
        ("opt_out", world.campaign.sid, "carrier"),
    ]


def test_an_error_in_a_retry_is_retried_later(sqlite_db, clock, monkeypatch):
    world, client, _ = _setup(sqlite_db, clock)
    row = _handed_over(world)
    assert post(client, "/twilio/status", status(SID, "delivered")).status_code == 200
    move, failures = outbox.apply_provider_status, []

    def down(conn: Any, sid: str, *a: Any) -> Any:
        if len(failures) < 2:
            failures.append(sid)
            raise StorageError("database error: connection refused")
        return move(conn, sid, *a)

    monkeypatch.setattr(delivery.outbox, "apply_provider_status", down)
    _record_sid(world, clock, row)
    wait_for(lambda: _row(world, row.id).state == "delivered")
    assert failures == [SID, SID]
    wait_for(lambda: _early(client).pending() == 0)


def test_at_most_max_pending_are_kept(sqlite_db, clock, caplog):
    _, client, _ = _setup(sqlite_db, clock, delays=(60.0,), early_max_pending=2)
    early = _early(client)
    for n in range(4):
        assert post(client, "/twilio/status", status(f"SM{n:032x}", "delivered")).status_code == 200
    assert early.pending() == 2
    assert sum("dropped" in r.message for r in caplog.records) == 1  # rate-limited
    thread = early.thread
    client.app.state.webhooks.close()
    assert early.pending() == 0 and not thread.is_alive() and early.thread is None
    assert not early.keep(StatusUpdate(SID, "sent", None))  # closed for good


def _held_early(results: dict[str, str], *, fail_many: bool = False) -> tuple[Any, dict[str, Any]]:
    """An EarlyStatuses whose first single attempt is held until ``calls["release"]`` is set;
    every attempt answers ``results[sid]``; ``apply_many`` raises when ``fail_many``."""
    import threading

    from dispatcher.provider_status import StatusResult
    from dispatcher.webhooks.early import EarlyStatuses

    calls: dict[str, Any] = {
        "one": [],
        "many": [],
        "applied": [],
        "entered": threading.Event(),
        "release": threading.Event(),
    }

    def one(u: StatusUpdate) -> StatusResult:
        calls["one"].append(u.sid)
        calls["entered"].set()
        assert calls["release"].wait(10)
        return StatusResult(results[u.sid], row_id=1)

    def many(us: list[StatusUpdate]) -> list[StatusResult]:
        calls["many"].append([u.sid for u in us])
        if fail_many:
            raise RuntimeError("the batch failed")
        return [StatusResult(results[u.sid], row_id=1) for u in us]

    early = EarlyStatuses(
        one,
        lambda res: calls["applied"].append(res),
        delays=(0.05, 0.05),
        max_pending=100,
        apply_many=many,
    )
    return early, calls


@pytest.mark.parametrize("fail_many", [False, True])
def test_kept_callbacks_due_together_are_applied_in_one_batch(fail_many):
    import time

    results = {"SM1": "unchanged", "SM2": "applied", "SM3": "applied", "SM4": "unknown_sid"}
    early, calls = _held_early(results, fail_many=fail_many)
    try:
        assert early.keep(StatusUpdate("SM1", "delivered", None))
        assert calls["entered"].wait(10)  # the first is applied alone, and held there
        kept_at = time.monotonic()
        for sid in ("SM2", "SM3", "SM4"):
            assert early.keep(StatusUpdate(sid, "delivered", None))
        wait_for(lambda: time.monotonic() > kept_at + 0.1)  # all three are due now
        calls["release"].set()
        wait_for(lambda: early.pending() == 1)  # SM4: kept for its second delay
        assert calls["many"][0] == ["SM2", "SM3", "SM4"]
        # a failed batch: nothing committed, each applied alone instead
        assert calls["one"][:4] == (["SM1", "SM2", "SM3", "SM4"] if fail_many else ["SM1"])
        assert sorted(r.outcome for r in calls["applied"]) == ["applied", "applied"]
        wait_for(lambda: early.pending() == 0)  # SM4 given up after the last delay
    finally:
        early.close()
