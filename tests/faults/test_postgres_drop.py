"""Fault 4: every PostgreSQL connection of the run's database is terminated (twice) while the
run is sending: the workers, the scheduler and the webhook server reconnect and the run
completes with nothing lost or doubled."""

from __future__ import annotations

import psycopg
import pytest

from tests.harness import finish_and_check, launch, run_counts, seed, wait_for
from tests.servers import PG_DSN

pytestmark = [pytest.mark.integration, pytest.mark.faults]
N = 300


def terminate_backends(dbname: str) -> int:
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (dbname,),
        ).fetchall()
    return len(rows)


@pytest.mark.timeout(240)
def test_connections_dropped_mid_run(dist, tmp_path):
    stack, db = dist
    seeded = seed(
        db,
        tmp_path,
        consented=N,
        opted_out=5,
        no_consent=5,
        window_limit=200,
        window_seconds=2,
        mps=40,
    )
    stack.up(sending_lease=12.0)
    run_id = launch(db, seeded)
    dbname = stack.database_url.rsplit("/", 1)[1]

    def delivered() -> int:
        c = run_counts(db, run_id)[1]
        return c.get("sent", 0) + c.get("delivered", 0)

    killed = 0
    for target in (60, 160):
        wait_for(
            lambda t=target: delivered() >= t, 90, f"{target} messages out", check=stack.check_alive
        )
        killed += terminate_backends(dbname)
    rep, _, _ = finish_and_check(stack, db, seeded, run_id, timeout=180)
    print(f"\n{killed} backend connections terminated; {rep.summary()}")
    assert killed > 0
    assert rep.ok(), rep.summary()
