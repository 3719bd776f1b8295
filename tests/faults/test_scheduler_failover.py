"""Fault 6: two ``dispatcher scheduler`` processes on the same Redis and PostgreSQL; the leader
(named in ``dispatcher:scheduler:leader`` as host:pid:random) is killed with SIGKILL mid-run.
The standby takes over within the lock's expiry (plus a tick), the runs complete, and no run is
fanned out twice: one outbox row per (run, contact), each run's ``total`` equals its audience,
and the carrier received each recipient exactly once.  One run has ``send_at`` in the future so
its fan-out happens after the failover, by the new leader."""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from dispatcher import keys
from tests.faults.conftest import distributed
from tests.harness import (
    check_delivery,
    outbox_rows,
    run_counts,
    seed,
    wait_for,
    wait_run_done,
)

pytestmark = [pytest.mark.integration, pytest.mark.faults]
REDIS_DB = 15
TTL = 3.0
TICK = 0.2
GROUPS = ("a", "b", "c")
PER_GROUP = 40


@pytest.fixture
def dist15(tmp_path):
    with distributed(tmp_path, REDIS_DB) as pair:
        yield pair


def _leader(r) -> str | None:  # type: ignore[no-untyped-def]
    v = r.get(keys.scheduler_leader_key())
    return v.decode() if v else None


def _tag_groups(db, phones_by_group: dict[str, list[str]]) -> None:  # type: ignore[no-untyped-def]
    """Give each contact an attribute ``grp`` so each run's audience is a SQL segment (fanned
    out by INSERT ... SELECT in the scheduler, not staged at launch)."""
    from dispatcher import contacts

    with db.session() as s:
        for g, phones in phones_by_group.items():
            for p in phones:
                c = contacts.get_contact(s, p)
                c.attributes = {**(c.attributes or {}), "grp": g}
                s.add(c)


def _launch_segment(db, seeded, group: str, send_at: datetime | None) -> int:  # type: ignore[no-untyped-def]
    from dispatcher import runs
    from tests.harness import TEMPLATE

    req = runs.LaunchRequest(
        campaign=seeded.campaign_sid,
        template=TEMPLATE,
        audience={"kind": "segment", "query": f"grp={group}"},
        send_at=send_at,
        actor="test",
    )
    with db.session() as s:
        run, _ = runs.launch(s, req, now=datetime.now(UTC))
        return int(run.id)


@pytest.mark.timeout(120)
def test_standby_takes_over_and_no_run_fans_out_twice(dist15, tmp_path):
    import redis

    stack, db = dist15
    n = PER_GROUP * len(GROUPS)
    # window 20 per 1 s: each 40-recipient run takes ~2 s, so the kill lands mid-run
    seeded = seed(
        db,
        tmp_path,
        consented=n,
        opted_out=3,
        no_consent=3,
        window_limit=20,
        window_seconds=1,
        mps=600,
    )
    groups = {
        g: seeded.consented[i * PER_GROUP : (i + 1) * PER_GROUP] for i, g in enumerate(GROUPS)
    }
    groups["a"] = groups["a"] + seeded.opted_out + seeded.no_consent  # gated: suppressed
    _tag_groups(db, groups)

    stack.start_sandbox()
    stack.start_webhooks()
    stack.start_workers(processes=2, threads=4)
    knobs = dict(
        tick=TICK,
        leader_ttl=TTL,
        reconcile=2.0,
        lost_after=10.0,
        sending_lease=12.0,
        status_after=5.0,
    )
    # staggered: two schedulers started at the same instant on a fresh database race to
    # CREATE TABLE apscheduler_jobs and the loser exits (reported; see docs/reliability.md)
    scheds = {"sched-1": stack.start_scheduler("sched-1", **knobs)}
    r = redis.Redis.from_url(stack.redis_url)
    try:
        wait_for(lambda: _leader(r), 30, "sched-1 to lead", check=lambda: stack.check_alive())
        scheds["sched-2"] = stack.start_scheduler("sched-2", **knobs)
        wait_for(
            lambda: "scheduler started" in scheds["sched-2"].tail(),
            30,
            "sched-2 to stand by",
            check=lambda: stack.check_alive(),
        )
        token = _leader(r)
        assert token
        pid = int(token.split(":")[-2])
        leader = next(name for name, p in scheds.items() if p.pid == pid)
        standby = next(name for name in scheds if name != leader)

        run_a = _launch_segment(db, seeded, "a", None)
        run_b = _launch_segment(db, seeded, "b", None)
        assert stack.carrier is not None
        # mid-run: the old leader has fanned out a and b and the carrier has some messages
        wait_for(
            lambda: stack.carrier.count() >= 5,
            30,
            "the runs to start sending",
            check=lambda: stack.check_alive(),
        )
        # due only after the failover (the kill follows at once, takeover <= TTL + a tick)
        run_c = _launch_segment(db, seeded, "c", datetime.now(UTC) + timedelta(seconds=TTL + 3))
        assert run_counts(db, run_c)[0] == "scheduled"
        before = _leader(r)
        assert before == token, "the leader changed before the kill"
        scheds[leader].kill9()
        killed = time.monotonic()
        killed_at = datetime.now(UTC)
        new = wait_for(
            lambda: (v := _leader(r)) and v != token and v,
            TTL + 10,
            "the standby to take the lock",
            every=0.02,
        )
        takeover = time.monotonic() - killed
        assert int(new.split(":")[-2]) == scheds[standby].pid
        print(
            f"\nleader {leader} (pid {pid}) killed; {standby} took over after "
            f"{takeover:.2f} s (lock ttl {TTL:g} s, tick {TICK:g} s)"
        )
        assert takeover <= TTL + TICK + 1.0, f"takeover took {takeover:.2f} s"

        check = (standby, "workers", "webhooks", "sandbox")
        for rid in (run_a, run_b, run_c):
            wait_run_done(db, rid, 60, stack, check_names=check)
    finally:
        r.close()

    records = stack.carrier.records()
    rows = outbox_rows(db, [run_a, run_b, run_c])
    rep = check_delivery(
        records,
        rows,
        expected=seeded.consented,
        forbidden=seeded.opted_out + seeded.no_consent,
        brand=seeded.brand,
    )
    print(rep.summary())
    assert rep.ok(), rep.summary()
    # one row per (run, contact) and each run's total is its audience
    per = Counter((row["run_id"], row["contact_id"]) for row in rows)
    assert max(per.values()) == 1
    from dispatcher import runs

    audience = {run_a: len(groups["a"]), run_b: PER_GROUP, run_c: PER_GROUP}
    with db.session() as s:
        for rid, size in audience.items():
            run = runs.get_run(s, rid)
            assert run.state == "completed"
            assert run.total == size, (rid, run.total, size)
            assert sum(1 for row in rows if row["run_id"] == rid) == size
            if rid == run_c:  # fanned out by the new leader, after the kill
                assert run.started_at is not None
                started = (
                    run.started_at if run.started_at.tzinfo else run.started_at.replace(tzinfo=UTC)
                )
                assert started > killed_at, "run c was fanned out before the failover"
