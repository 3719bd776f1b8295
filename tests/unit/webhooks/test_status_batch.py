"""Status callbacks group-committed: N concurrent callbacks applied in one transaction keep the
monotonic, idempotent, react-once semantics; an error in a batch neither loses nor wrongly
acknowledges the others (on SQLite and PostgreSQL)."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

from sqlmodel import select

from dispatcher import outbox
from dispatcher import provider_status as delivery
from dispatcher.errors import StorageError
from dispatcher.models import ConsentEvent, OutboxMessage
from dispatcher.registry import CampaignCache
from tests.procs import wait_for
from tests.unit.webhooks.conftest import (
    RecordingMetrics,
    build_world,
    make_client,
    post,
    status,
)


def sid(n: int) -> str:
    return "SM" + f"{n:032x}"


def _post_held_batch(
    client: Any, first: dict[str, str], batch: list[dict[str, str]]
) -> tuple[Any, list[Any]]:
    """Post ``first`` and hold it inside its transaction; post ``batch`` from one thread each;
    release once all of them are queued, so they are applied together.  Returns the answers
    (an exception the app raised stands for a 500).  The callbacks that change nothing
    (``moves_nothing``: intermediate, no error code) are answered without the group commit."""
    commit = client.app.state.webhooks.status_commit
    queued = sum(
        not delivery.moves_nothing(p["MessageStatus"], int(p.get("ErrorCode") or 0) or None)
        for p in batch
    )
    entered, release = threading.Event(), threading.Event()
    run_one = commit._run_one

    def held(item: Any) -> Any:
        if not entered.is_set():
            entered.set()
            assert release.wait(10), "never released"
        return run_one(item)

    commit._run_one = held
    answers: dict[int, Any] = {}

    def send(i: int, params: dict[str, str]) -> None:
        try:
            answers[i] = post(client, "/twilio/status", params)
        except Exception as e:  # noqa: BLE001 - an app exception: the request got a 500
            answers[i] = e

    threads = [threading.Thread(target=send, args=(-1, first))]
    threads[0].start()
    assert entered.wait(10)
    for i, params in enumerate(batch):
        threads.append(threading.Thread(target=send, args=(i, params)))
        threads[-1].start()
    wait_for(lambda: commit.pending() == queued)
    release.set()
    for t in threads:
        t.join(30)
    assert list(commit.batches)[-2:] == [1, queued]
    return answers[-1], [answers[i] for i in range(len(batch))]


def _rows(db: Any) -> dict[str, OutboxMessage]:
    with db.session() as s:
        return {r.provider_sid: r for r in s.exec(select(OutboxMessage)) if r.provider_sid}


def _code(answer: Any) -> int:
    return answer.status_code if hasattr(answer, "status_code") else 500


def test_concurrent_callbacks_in_one_batch(any_db, clock):
    world = build_world(any_db)
    metrics = RecordingMetrics()
    client = make_client(any_db, clock, metrics=metrics)
    world.add_row("sent", sid=sid(1))
    world.add_row("sent", sid=sid(2))
    pending = world.add_row("queued", campaign=world.sibling)
    world.add_row("sent", sid=sid(3))
    world.add_row("sent", sid=sid(4))
    batch = [
        status(sid(1), "delivered"),
        status(sid(1), "sent"),
        status(sid(1), "delivered"),
        status(sid(2), "failed", 21610),
        status(sid(2), "failed", 21610),
        status(sid(3), "sent"),
        status(sid(3), "delivered"),
        status(sid(3), "queued"),
        status(sid(99), "delivered"),  # unknown SID: 200, ignored
    ]
    first, answers = _post_held_batch(client, status(sid(4), "delivered"), batch)
    assert _code(first) == 200 and [_code(a) for a in answers] == [200] * len(batch)

    rows = _rows(any_db)
    assert (rows[sid(1)].state, rows[sid(1)].provider_status) == ("delivered", "delivered")
    assert (rows[sid(2)].state, rows[sid(2)].error_code) == ("failed", 21610)
    assert (rows[sid(3)].state, rows[sid(3)].provider_status) == ("delivered", "delivered")
    assert rows[sid(4)].state == "delivered"
    with any_db.session() as s:
        events = list(s.exec(select(ConsentEvent)))
        assert s.get(OutboxMessage, pending.id).state == "suppressed"
    assert [(e.source, e.evidence_ref) for e in events] == [("carrier", sid(2))]
    calls = Counter(c[0] for c in metrics.calls)
    # the pending row the revocation suppressed: counted once, as the database holds it
    assert calls == {"delivered": 3, "failed": 1, "opt_out": 1, "suppressed": 1}


def _sent_rows(db: Any, clock: Any, n: int) -> tuple[Any, Any]:
    """A world with rows ``sid(1..n)`` and ``sid(9)`` sent, and a webhook client."""
    world = build_world(db)
    for k in range(1, n + 1):
        world.add_row("sent", sid=sid(k))
    world.add_row("sent", sid=sid(9))
    return world, make_client(db, clock)


def _fail_on(monkeypatch: Any, bad_sid: str, error: Exception) -> None:
    """The status update of ``bad_sid`` raises ``error`` (alone or in a batch's statement, in
    a transaction or in autocommit); every other one applies."""
    move, moves = outbox.apply_provider_status, outbox.apply_provider_statuses
    moves_alone = outbox.apply_provider_statuses_alone

    def failing(conn: Any, s: str, *a: Any) -> Any:
        if s == bad_sid:
            raise error
        return move(conn, s, *a)

    def failing_many(conn: Any, batch: dict[str, str], now: Any) -> Any:
        if bad_sid in batch:
            raise error
        return moves(conn, batch, now)

    def failing_alone(conn: Any, batch: dict[str, str], now: Any, held: Any) -> Any:
        if bad_sid in batch:
            raise error
        return moves_alone(conn, batch, now, held)

    monkeypatch.setattr(delivery.outbox, "apply_provider_status", failing)
    monkeypatch.setattr(delivery.outbox, "apply_provider_statuses", failing_many)
    monkeypatch.setattr(delivery.outbox, "apply_provider_statuses_alone", failing_alone)


def test_an_error_in_a_batch_neither_loses_nor_acknowledges_others(any_db, clock, monkeypatch):
    world, client = _sent_rows(any_db, clock, 5)
    pending = world.add_row("queued", campaign=world.sibling)
    _fail_on(monkeypatch, sid(3), RuntimeError("this one breaks"))
    batch = [
        status(sid(1), "delivered"),
        status(sid(2), "failed", 21610),
        status(sid(3), "delivered"),
        status(sid(4), "undelivered", 30007),
        status(sid(5), "delivered"),
    ]
    _, answers = _post_held_batch(client, status(sid(9), "delivered"), batch)
    assert [_code(a) for a in answers] == [200, 200, 500, 200, 200]
    rows = _rows(any_db)
    assert [rows[sid(n)].state for n in range(1, 6)] == [
        "delivered",
        "failed",
        "sent",
        "undelivered",
        "delivered",
    ]
    with any_db.session() as s:
        # applied in the failed batch (rolled back), then again alone: recorded once
        assert len(list(s.exec(select(ConsentEvent)))) == 1
        assert s.get(OutboxMessage, pending.id).state == "suppressed"


def test_a_database_error_answers_503_and_never_200_for_uncommitted(any_db, clock, monkeypatch):
    _, client = _sent_rows(any_db, clock, 6)
    _fail_on(monkeypatch, sid(4), StorageError("database error: connection lost"))
    batch = [status(sid(n), "delivered") for n in range(1, 7)]
    _, answers = _post_held_batch(client, status(sid(9), "delivered"), batch)
    rows = _rows(any_db)
    codes = [_code(a) for a in answers]
    assert codes[3] == 503 and set(codes) <= {200, 503}
    for n, code in zip(range(1, 7), codes, strict=True):
        # one by one in arrival order: 200 exactly for what was committed
        assert rows[sid(n)].state == ("delivered" if code == 200 else "sent"), (n, codes)
    assert all(
        a.json() == {"error": "database unavailable, retry later"}
        for a in answers
        if _code(a) == 503
    )


def test_campaign_cache_keeps_a_lookup_for_its_ttl(sqlite_db):
    """The one campaign cache (registry.CampaignCache: the gate's and the status route's): a
    change is seen once ``ttl_s`` has passed on its clock, and at once with ``ttl_s`` 0."""
    from dispatcher.clock import FakeClock
    from dispatcher.delivery.config import DeliverConfig
    from dispatcher.delivery.gate import Loader

    world = build_world(sqlite_db)
    clock = FakeClock(0.0)
    cache, fresh = CampaignCache(ttl_s=2.0, now=clock.time), CampaignCache(ttl_s=0)
    with sqlite_db.session() as s:
        assert cache.get(s, world.campaign.id)[0].campaign_status == "VERIFIED"
        s.connection().exec_driver_sql("UPDATE campaign SET campaign_status = 'SUSPENDED'")
        s.rollback()  # the session that read it rolls back: the kept copy is not expired
    with sqlite_db.session() as s:
        s.connection().exec_driver_sql("UPDATE campaign SET campaign_status = 'SUSPENDED'")
    with sqlite_db.session() as s:
        campaign, brand = cache.get(s, world.campaign.id)
        assert (campaign.campaign_status, brand.name) == ("VERIFIED", world.brand.name)
        assert fresh.get(s, world.campaign.id)[0].campaign_status == "SUSPENDED"
        clock.advance(2.0)
        assert cache.get(s, world.campaign.id)[0].campaign_status == "SUSPENDED"
    cache = CampaignCache(2.0)
    assert Loader(DeliverConfig(), cache)._campaigns is cache


STATUSES = ("queued", "sent", "delivered", "undelivered", "failed", "read", "canceled", "bogus")


def _reactions(results: list[delivery.StatusResult]) -> Counter[tuple[Any, ...]]:
    """What the route does after a batch: ``react`` per result (metrics; the state and error
    code of each row whose run's guard is evaluated: the two sides' rows have their own runs)."""
    metrics = RecordingMetrics()
    guarded = [(res.state, res.error_code) for res in results if delivery.react(metrics, res)]
    return Counter([*metrics.calls, *(("guard", *g) for g in guarded)])


def _sid(side: str, trial: int, k: int) -> str:
    return f"SM{side}{trial:03d}{k:028d}"


def test_a_batch_ends_and_reacts_as_each_callback_alone_in_arrival_order(any_db, clock):
    """Random batches (duplicates, late and out-of-order statuses, error codes, unknown SIDs and
    status values) applied with ``apply_statuses`` in one transaction, and the same callbacks
    one by one with ``apply_status`` on a copy of the rows: the same rows (state, Twilio status,
    error code), the same reactions, the same SIDs found unknown."""
    import random

    from dispatcher.delivery.fakes import MemoryHalts
    from dispatcher.provider_status import StatusUpdate, apply_statuses

    world = build_world(any_db)
    rng = random.Random(22)
    halts = MemoryHalts(clock)
    for trial in range(25):
        starts, plan = _trial(world, rng, trial, [None, None, None, 30007, 30003])
        batch = [StatusUpdate(_sid("a", trial, k), st, code) for k, st, code in plan]
        with any_db.session() as s:
            batched = apply_statuses(s, batch, now=clock.now(), halts=halts)
        alone = _one_by_one(any_db, plan, trial, clock, halts)
        _assert_alike(any_db, trial, len(starts), plan, batched, alone)


def test_autocommit_then_a_transaction_ends_and_reacts_as_each_callback_alone(pg_db, clock):
    """The status route's batch on PostgreSQL: what one autocommit statement settles
    (``apply_statuses_alone``), then the rest with ``apply_statuses`` in one transaction;
    against the same callbacks one by one with ``apply_status`` on a copy of the rows: the same
    rows, the same reactions (metric labels included), the same SIDs found unknown."""
    import random

    from dispatcher.delivery.fakes import MemoryHalts
    from dispatcher.provider_status import (
        StatusUpdate,
        apply_statuses,
        apply_statuses_alone,
    )

    world = build_world(pg_db)
    rng = random.Random(2207)
    halts = MemoryHalts(clock)
    alone = pg_db.held(autocommit=True)
    settled_alone = 0
    for trial in range(25):
        starts, plan = _trial(world, rng, trial, [None, None, None, None, 30007])
        batch = [StatusUpdate(_sid("a", trial, k), st, code) for k, st, code in plan]
        with alone.connection() as conn:
            first = apply_statuses_alone(conn, batch, now=clock.now())
        settled_alone += sum(r is not None and r.outcome == "applied" for r in first)
        rest = [i for i, r in enumerate(first) if r is None]
        with pg_db.session() as s:
            later = apply_statuses(s, [batch[i] for i in rest], now=clock.now(), halts=halts)
        batched = list(first)
        for i, r in zip(rest, later, strict=True):
            batched[i] = r
        each = _one_by_one(pg_db, plan, trial, clock, halts)
        _assert_alike(pg_db, trial, len(starts), plan, batched, each)
    alone.release()
    assert settled_alone > 10  # the statement did settle callbacks, not only hand them on


def test_a_suspended_campaign_row_is_moved_in_the_transaction_that_pauses(pg_db, clock):
    """The autocommit statement leaves the row of a SUSPENDED campaign alone (a move there must
    commit with the pause); the route's transaction moves it and pauses the runs."""
    from dispatcher.models import Campaign, Run

    world = build_world(pg_db)
    client = make_client(pg_db, clock)
    with pg_db.session() as s:
        c = s.get(Campaign, world.campaign.id)
        c.campaign_status = "SUSPENDED"
        s.add(c)
    row = world.add_row("sent", sid=sid(1))
    other = world.add_row("sent", sid=sid(2), campaign=world.sibling)
    assert _code(post(client, "/twilio/status", status(sid(1), "delivered"))) == 200
    assert _code(post(client, "/twilio/status", status(sid(2), "delivered"))) == 200
    rows = _rows(pg_db)
    assert rows[sid(1)].state == rows[sid(2)].state == "delivered"
    with pg_db.session() as s:
        run = s.get(Run, row.run_id)
        assert run.state == "paused" and "SUSPENDED" in (run.pause_reason or "")
        assert s.get(Run, other.run_id).state == "running"


def test_plain_final_callbacks_take_no_transaction(pg_db, clock, monkeypatch):
    """On PostgreSQL a batch of final statuses without an error code, every row found, is one
    autocommit statement: no ORM session, no transaction."""
    from dispatcher.webhooks import status as status_route

    world, client = _sent_rows(pg_db, clock, 5)
    metrics = RecordingMetrics()
    client = make_client(pg_db, clock, metrics=metrics)
    transactions: list[int] = []
    batch_tx, one_tx = status_route.apply_batch, status_route.apply_one

    def counting_batch(ctx: Any, us: Any, *a: Any) -> Any:
        transactions.append(len(us))
        return batch_tx(ctx, us, *a)

    def counting_one(ctx: Any, u: Any, *a: Any) -> Any:
        transactions.append(1)
        return one_tx(ctx, u, *a)

    monkeypatch.setattr(status_route, "apply_batch", counting_batch)
    monkeypatch.setattr(status_route, "apply_one", counting_one)
    batch = [status(sid(n), "delivered") for n in range(1, 5)] + [status(sid(2), "delivered")]
    first, answers = _post_held_batch(client, status(sid(9), "undelivered"), batch)
    assert [_code(a) for a in [first, *answers]] == [200] * 6
    assert transactions == []
    rows = _rows(pg_db)
    assert [rows[sid(n)].state for n in (1, 2, 3, 4, 5, 9)] == ["delivered"] * 4 + [
        "sent",
        "undelivered",
    ]
    assert Counter(c[0] for c in metrics.calls) == {"delivered": 4, "undelivered": 1}
    # an unknown SID and a late status are told apart without a transaction either; the
    # unknown one is kept to be applied later
    early = client.app.state.webhooks.early
    assert early.pending() == 0
    assert _code(post(client, "/twilio/status", status(sid(77), "delivered"))) == 200
    assert _code(post(client, "/twilio/status", status(sid(1), "undelivered"))) == 200
    assert transactions == [] and early.pending() == 1
    # an error code does take the transaction
    assert _code(post(client, "/twilio/status", status(sid(5), "undelivered", 30003))) == 200
    assert transactions == [1] and _rows(pg_db)[sid(5)].state == "undelivered"


def _trial(world: Any, rng: Any, trial: int, codes: list[Any]) -> tuple[list[str], list[Any]]:
    """Six rows in random states, twice ("a" and "b" SIDs), and a random batch of 1-12
    callbacks for them (a SID index of 6 is a SID no row has; an error code drawn from
    ``codes``)."""
    starts = [rng.choice(["sent", "sent", "unknown", "delivered", "failed"]) for _ in range(6)]
    for side in "ab":
        for k, state in enumerate(starts):
            world.add_row(state, sid=_sid(side, trial, k))
    plan = [
        (rng.randrange(len(starts) + 1), rng.choice(STATUSES), rng.choice(codes))
        for _ in range(rng.randint(1, 12))
    ]
    return starts, plan


def _one_by_one(db: Any, plan: list[Any], trial: int, clock: Any, halts: Any) -> list[Any]:
    """The plan's callbacks applied one by one with ``apply_status`` to the "b" copy of the
    rows, each in its own transaction."""
    from dispatcher.provider_status import apply_status

    out = []
    for k, st, code in plan:
        with db.session() as s:
            out.append(
                apply_status(
                    s,
                    sid=_sid("b", trial, k),
                    status=st,
                    error_code=code,
                    now=clock.now(),
                    halts=halts,
                )
            )
    return out


def _assert_alike(
    db: Any, trial: int, n: int, plan: list[Any], batched: list[Any], each: list[Any]
) -> None:
    """The "a" rows (batched) and the "b" rows (one by one) ended alike, with the same
    reactions and the same SIDs found unknown."""
    rows = _rows(db)
    final = {
        side: [
            (r.state, r.provider_status, r.error_code)
            for r in (rows[_sid(side, trial, k)] for k in range(n))
        ]
        for side in "ab"
    }
    assert final["a"] == final["b"], plan
    assert _reactions(batched) == _reactions(each), plan
    unknown = [[r.outcome == "unknown_sid" for r in rs] for rs in (batched, each)]
    assert unknown[0] == unknown[1], plan
