"""A large 'all' audience on PostgreSQL (issue 22 item 6): the dry run of a launch and a running
run's schedule are counted in SQL, not a row per contact through Python.  Asserted by the
statements run and the rows they return, not by time."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import event, text

from dispatcher import run_report, runs
from tests.harness import seed

N = 200_000
NOW = datetime(2026, 1, 5, 17, 0, tzinfo=UTC)  # Monday 12:00 in New York


class Reads:
    """Statements run and rows returned on an engine while the block runs."""

    def __init__(self, engine: Any) -> None:
        self.engine, self.statements, self.rows = engine, 0, 0

    def _count(self, conn, cursor, statement, params, context, many) -> None:  # noqa: ANN001
        self.statements += 1
        if cursor.description is not None:  # a statement that returns rows
            self.rows += max(0, cursor.rowcount or 0)

    def __enter__(self) -> Reads:
        event.listen(self.engine, "after_cursor_execute", self._count)
        return self

    def __exit__(self, *exc: object) -> None:
        event.remove(self.engine, "after_cursor_execute", self._count)


@pytest.fixture
def big(pg_db, tmp_path):
    w = seed(pg_db, tmp_path, consented=3, opted_out=1, no_consent=1, window_limit=30,
             window_seconds=10)  # fmt: skip
    with pg_db.session() as s:
        s.execute(
            text("UPDATE campaign SET quiet_hours_policy = 'strictest' WHERE id = :c").bindparams(
                c=w.campaign_id
            )
        )
        # N contacts over 4 area codes (3 zones), a quarter of them without consent
        s.execute(
            text(
                "INSERT INTO contact (phone, name, attributes, created_at, updated_at) "
                "SELECT '+1' || (ARRAY['212','305','312','415'])[1 + i % 4] "
                "|| lpad((2000000 + i)::text, 7, '0'), 'Pat ' || i, "
                "json_build_object('contract', 'MC-' || i), now(), now() "
                "FROM generate_series(1, :n) AS i"
            ).bindparams(n=N)
        )
        s.execute(
            text(
                "INSERT INTO consentevent (contact_id, brand_id, action, consent_type, source, "
                "actor, occurred_at, recorded_at) SELECT id, :b, 'grant', 'express', 'import', "
                "'test', now(), now() FROM contact WHERE name LIKE 'Pat %' AND id % 4 <> 0"
            ).bindparams(b=w.brand_id)
        )
        granted = s.execute(
            text("SELECT count(*) FROM contact WHERE name LIKE 'Pat %' AND id % 4 <> 0")
        ).scalar_one()
    return w, granted


def test_dry_run_of_a_large_audience_counts_in_sql(pg_db, big):
    w, granted = big
    req = runs.LaunchRequest(
        campaign=w.campaign_sid, template="Hi [name], your plan renews.", audience={"kind": "all"}
    )
    with pg_db.session() as s, Reads(pg_db.engine) as reads:
        dry = run_report.dry_run(s, req, now=NOW, grace_s=2.0)
        s.rollback()
    assert dry["audience"] == N + 5
    assert dry["suppressed"]["no_consent"] == N - granted + 1
    assert dry["suppressed"]["opted_out"] == 1
    assert dry["would_send"] + sum(dry["deferred"].values()) == granted + 3
    assert dry["schedule"]["rows"] == granted + 3
    assert dry["first_message"] and dry["estimated_finish"] > NOW
    # a statement per concern, a few thousand rows at most: never a row per contact
    assert reads.statements < 40, reads.statements
    assert reads.rows < 2_000, reads.rows


def test_schedule_of_a_large_running_run_counts_in_sql(pg_db, big):
    w, granted = big
    req = runs.LaunchRequest(
        campaign=w.campaign_sid, template="Hi [name], your plan renews.", audience={"kind": "all"}
    )
    with pg_db.session() as s:
        from dispatcher.registry import get_campaign

        run = runs.create_run(s, req, get_campaign(s, w.campaign_sid), now=NOW)
        s.commit()
        created = runs.fan_out(s, run.id, NOW)
        s.commit()
    assert created == N + 5
    with pg_db.session() as s, Reads(pg_db.engine) as reads:
        p = run_report.progress(s, run.id, NOW, grace_s=2.0)
    assert p["total"] == N + 5 and p["schedule"]["rows"] == N + 5
    assert p["eta"] is not None and p["eta"] > NOW
    assert reads.statements < 40, reads.statements
    assert reads.rows < 2_000, reads.rows


def test_a_scheduled_list_run_with_nobody_staged_has_an_empty_schedule(tmp_path):
    """Every listed phone rejected: ``staged`` is 0, and the schedule of the scheduled run is
    empty (not an 'all'/'segment' audience to count in SQL)."""
    from datetime import timedelta

    from tests.unit.pipeline.conftest import make_harness

    with make_harness(tmp_path) as h:
        later = h.clock.now() + timedelta(hours=1)
        run_id = h.launch(
            audience={"kind": "list"}, recipients=[{"phone": "12"}], send_at=later, fan_out=False
        )
        with h.db.session() as s:
            p = run_report.progress(s, run_id, h.clock.now(), grace_s=2.0)
        assert p["state"] == "scheduled" and p["schedule"]["rows"] == 0
