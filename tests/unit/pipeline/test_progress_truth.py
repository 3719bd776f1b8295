"""Issue 18 items 1 and 2 and issue 21 item 5, as an operator sees them: the CLI in a child
process, its output is what is tested.

* the dry run's finish counts quiet hours and is shown in the operator's zone to the minute;
* ``run show`` of a run whose rows wait for quiet hours says so, with a finish that is not in
  the past;
* progress counts only rows that are done, so it never goes backwards; one word per row state;
* ``run watch`` ends with a verdict computed from the numbers, naming what does not add up.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from dispatcher import outbox, run_report, runs
from dispatcher.compliance import next_allowed_time, policy_from_name
from tests.unit.pipeline.conftest import TEMPLATE, Harness

ROOT = Path(__file__).parents[3]


def cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "COLUMNS": "200",
        "DISPATCHER_DATABASE_URL": f"sqlite:///{home}/cli.db",
        "DISPATCHER_DEFAULT_TIMEZONE": "America/New_York",
        "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
    }
    r = subprocess.run(
        [sys.executable, "-m", "dispatcher.cli.app", *args],
        cwd=home,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert "Traceback" not in r.stderr, r.stderr
    return r


@pytest.fixture
def h(cli_env) -> Any:
    """A seeded harness on the CLI's own database (no carrier: nothing here is sent)."""
    from dispatcher.cli.common import database
    from dispatcher.clock import FakeClock
    from dispatcher.runtime import Runtime
    from dispatcher.settings import get_settings

    rt = Runtime(get_settings(), clock=FakeClock())
    rt.__dict__["db"] = database()
    harness = Harness(rt=rt, clock=rt.clock)
    harness.seed()
    return harness


DAY, Z = "2030-01-08", "+00:00"
RAW_UTC = re.compile(r"\d{2}:\d{2}:\d{2}(\.\d+)?\+00:00")


def test_dry_run_finish_counts_quiet_hours_and_is_shown_to_the_minute_in_the_operators_zone(h):
    """Finding 1: at 21:00 EST, 300 New York numbers wait for 08:00; 100 in Honolulu (16:00)
    go at once; 50 with no known zone (+1500) wait for the window every US zone shares,
    18:00-00:00 UTC.  The finish is the last of those: 13:20 EST, not 00:40 EST."""
    h.contacts(300, npa="212")
    h.contacts(100, npa="808")
    h.contacts(50, npa="500")
    at = "2030-01-08T02:00Z"  # Monday 2030-01-07 21:00 EST
    args = ["run", "launch", "--campaign", h.campaign_sid, "--template", TEMPLATE, "--dry-run"]
    r = cli(Path.cwd(), *args, "--at", at, "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["would_send"] == 100  # at once; the others are deferred
    assert doc["deferred"] == {"quiet_hours": 300, "quiet_hours_unknown_zone": 50}
    sch = doc["schedule"]
    windows = {w["window"]: w for w in sch["windows"]}
    hi = windows["Pacific/Honolulu 08:00-21:00"]
    ny = windows["America/New_York 08:00-21:00"]
    unknown = windows["unknown zone (all 9 US zones) 08:00-20:00"]
    assert (hi["rows"], hi["first"]) == (100, f"{DAY}T02:00:00{Z}")  # 16:00 in Honolulu
    assert hi["last"] == f"{DAY}T02:45:09{Z}"  # 10 windows of 10 at 10 per 300 s + 1 s grace
    assert (ny["rows"], ny["first"]) == (300, f"{DAY}T13:00:00{Z}")  # 08:00 EST
    assert (unknown["rows"], unknown["first"]) == (50, f"{DAY}T18:00:00{Z}")  # 13:00 EST
    assert doc["estimated_finish"] == f"{DAY}T18:20:04{Z}" == sch["finish"]
    assert doc["estimated_seconds"] == 16 * 3600 + 20 * 60 + 4
    assert sum(x["sends"] for x in sch["hours"]) == 450

    human = cli(Path.cwd(), *args, "--at", at)
    assert human.returncode == 0, human.stderr
    out = human.stdout + human.stderr
    assert re.search(r"estimated finish\s*│\s*2030-01-08 13:20 EST", out), out
    assert re.search(r"first send\s*│\s*2030-01-07 21:00 EST", out), out
    assert "estimated duration" in out and "16 h 20 min" in out
    assert not RAW_UTC.search(out), "a time printed in raw UTC"
    assert "unknown zone (all 9 US zones)" in out  # the schedule shows them


def _waiting_run(h: Any, n: int) -> tuple[int, datetime]:
    """A running run whose every row waits for its recipient's quiet hours, as the gate
    leaves it: contacts in a zone where it is night now; returns (run id, their due time)."""
    now = datetime.now(UTC)
    # A fixed-offset zone where it is 03:xx now, whatever the hour in UTC (CI runs at any hour;
    # a list of named zones left a gap).  Etc/GMT-N is UTC+N.
    offset = (3 - now.hour) % 24
    offset = offset - 24 if offset > 14 else offset
    zone = f"Etc/GMT{'-' if offset > 0 else '+'}{abs(offset)}"
    assert now.astimezone(ZoneInfo(zone)).hour == 3
    for i in range(n):
        h.contact(f"+1212555{i:04d}", time_zone=zone)
    run_id = h.launch()
    with h.db.session() as s:
        due = None
        for row in h.rows(run_id):
            due = next_allowed_time(row.to_phone, now, policy_from_name(None), time_zone=zone)
            outbox.defer(s, row.id, due, "quiet_hours", now)
    assert due is not None
    return run_id, due


def test_run_show_of_a_run_waiting_for_quiet_hours_says_so_with_a_finish_not_in_the_past(h):
    """Finding 1 (run show) and issue 21 item 5: the only rows left wait for quiet hours; the
    run says so and its finish is when they go, not 'now'."""
    run_id, due = _waiting_run(h, 25)
    r = cli(Path.cwd(), "run", "show", str(run_id), "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["state"] == "running" and doc["substate"] == "waiting_for_quiet_hours"
    assert doc["by_state"] == {"deferred": 25} and doc["done"] == 0 and doc["live"] == 25
    assert doc["next_send_at"] == due.isoformat()
    eta = datetime.fromisoformat(doc["eta"])
    assert eta == due + timedelta(seconds=2 * 301)  # three windows of 10 (300 s + 1 s grace)
    human = cli(Path.cwd(), "run", "show", str(run_id))
    out = human.stdout
    assert "running (waiting for quiet hours to end)" in out
    local = eta.astimezone(ZoneInfo("America/New_York"))
    assert re.search(rf"estimated finish\s*│\s*{local:%Y-%m-%d %H:%M} E[SD]T", out), out
    assert not RAW_UTC.search(out)


def test_progress_never_goes_backwards_and_claimed_rows_are_not_done(h):
    """Finding 2: a claimed row that goes back to the outbox (a later slot) was counted done,
    so the bar went 138 -> 121.  Done counts only done states."""
    h.set_campaign(quiet_hours_policy="none")
    h.contacts(20)
    run_id = h.launch()
    now = h.clock.now()
    seen: list[int] = []

    def done() -> int:
        with h.db.session() as s:
            p = run_report.progress(s, run_id, h.clock.now(), schedule=False)
        assert set(p["by_state"]) <= set(run_report.ROW_STATES), p["by_state"]
        assert sum(p["by_state"].values()) == p["total"] == 20
        assert p["done"] + p["live"] == 20
        seen.append(p["done"])
        return int(p["done"])

    ids = [r.id for r in h.rows(run_id)]
    with h.db.connect(autocommit=True) as conn:
        token, claimed = outbox.claim_many(
            conn, [outbox.ToClaim(i, "body", "hash", 1) for i in ids[:10]], now
        )
        assert done() == 0  # sending: live
        for i in ids[:4]:
            outbox.mark_sent(conn, outbox.Sent(i, token, f"SM{i:032d}", "queued", now))
        assert done() == 4
        outbox.unclaim(conn, ids[4:10], token, now, due_at=now + timedelta(seconds=300))
        assert done() == 4  # back to the outbox: still not done, and nothing went backwards
    with h.db.session() as s:
        by = run_report.progress(s, run_id, now, schedule=False)["by_state"]
    assert by == {"queued": 10, "deferred": 6, "sent": 4}
    assert seen == sorted(seen)


def test_the_row_states_are_documented_in_one_table_with_the_codes_words():
    doc = (ROOT / "docs" / "operating.md").read_text(encoding="utf-8")
    section = doc.split("## Row states", 1)[1].split("\n## ", 1)[0]
    table = re.findall(r"^\| `([a-z_]+)` \|", section, re.M)
    assert tuple(table) == run_report.ROW_STATES


def test_run_watch_ends_with_a_verdict_computed_from_the_numbers(h):
    """Finding 2: the closing sentence was a fixed string.  Now it is computed, and names the
    figure that does not add up."""
    h.contacts(5)
    run_id = h.launch()
    now = h.clock.now()
    with h.db.session() as s:
        for row in h.rows(run_id):
            outbox.suppress(s, row.id, "no_consent", now)
        runs.complete_finished(s, now)
    r = cli(Path.cwd(), "run", "watch", str(run_id))
    assert r.returncode == 0, r.stderr
    assert "Every recipient is accounted for: 5 of 5 (5 suppressed)." in r.stderr
    assert "Does not add up" not in r.stderr
    with h.db.session() as s:  # a run whose rows do not add up to its total
        run = runs.get_run(s, run_id)
        run.total = 6
        s.add(run)
    r = cli(Path.cwd(), "run", "watch", str(run_id))
    assert "Does not add up: the rows by state sum to 5, the run has 6 recipients" in r.stderr
    assert "Every recipient is accounted for" not in r.stderr


def test_verdict_names_each_figure_that_does_not_add_up():
    p = {
        "total": 10,
        "by_state": {"delivered": 7, "suppressed": 2, "deferred": 1},
        "suppressed_by_reason": {"no_consent": 1},
        "deferred_by_reason": {"quiet_hours": 1},
        "next_send_at": datetime(2026, 1, 6, 13, tzinfo=UTC),
        "eta": datetime(2026, 1, 6, 13, tzinfo=UTC),
    }
    ok, lines = run_report.verdict(
        p, carrier_received=8, handed=7, carrier_duplicates=1, zone="America/New_York"
    )
    assert not ok
    assert lines[0].startswith("Every recipient is accounted for: 10 of 10")
    assert "the carrier received 8 messages, the outbox records 7" in lines[1]
    assert "1 recipients got the message more than once" in lines[2]
    assert "2 suppressed, but the reasons count 1" in lines[3]
    assert lines[4] == (
        "1 still to go (deferred 1; deferred: quiet_hours 1): the next at 2026-01-06 08:00 EST, "
        "the last at 2026-01-06 08:00 EST."
    )
    p["suppressed_by_reason"] = {"no_consent": 2}
    ok, lines = run_report.verdict(p, carrier_received=7, handed=7, carrier_duplicates=0)
    assert ok and not any("Does not add up" in x for x in lines)


def test_the_metrics_gauge_uses_the_same_words_and_forgets_no_state(h):
    """``dispatcher_run_messages{state}``: deferred rows as ``deferred``; a state a run's rows
    all left reads 0 rather than its last count; every figure is run show's; a run that ended
    keeps its final figures for ``METRICS_LINGER_S``, then has no series (issue 20.2)."""
    from dispatcher.metrics import Metrics
    from dispatcher.release_loop import ReleaseLoop

    metrics = Metrics(redis=h.rt.redis, clock=h.clock)
    hk = ReleaseLoop(h.db, h.clock, lambda ids: None, metrics=metrics)
    h.contacts(3)
    run_id = h.launch()
    now = h.clock.now()
    labels = {"run": str(run_id), "campaign": h.campaign_sid}

    def gauge(state: str) -> float | None:
        return metrics.exposition_registry().get_sample_value(
            "dispatcher_run_messages", {**labels, "state": state}
        )

    def matches_run_show() -> None:
        with h.db.session() as s:
            p = run_report.progress(s, run_id, h.clock.now(), schedule=False)
        for state in run_report.ROW_STATES:
            assert gauge(state) == p["by_state"].get(state, 0), state
        reg = metrics.exposition_registry()
        assert reg.get_sample_value("dispatcher_run_total_messages", labels) == p["total"]
        assert reg.get_sample_value("dispatcher_run_remaining_messages", labels) == p["live"]
        assert reg.get_sample_value("dispatcher_run_info", {**labels, "state": p["state"]}) == 1

    hk.observe()
    assert (gauge("queued"), gauge("deferred"), gauge("sent")) == (3, 0, 0)
    matches_run_show()
    with h.db.session() as s:
        for row in h.rows(run_id):
            outbox.defer(s, row.id, now + timedelta(hours=9), "quiet_hours", now)
    hk.observe()
    assert (gauge("queued"), gauge("deferred")) == (0, 3)
    matches_run_show()
    with h.db.session() as s:
        runs.cancel_run(s, run_id, now, halts=h.rt.halts)
    hk.observe()  # ended: its final figures, nothing live
    assert (gauge("deferred"), gauge("cancelled")) == (0, 3)
    matches_run_show()
    h.clock.advance(run_report.METRICS_LINGER_S + 1)
    hk.observe()
    assert gauge("cancelled") is None
    assert (
        metrics.exposition_registry().get_sample_value("dispatcher_run_total_messages", labels)
        is None
    )


def test_a_scheduled_run_has_its_schedule_from_its_consented_audience(h):
    h.contacts(30)  # New York, consented
    h.contact("+13125550001", consent=False)
    at = h.clock.now() + timedelta(days=1)  # Tuesday 10:00 EST
    run_id = h.launch(fan_out=False, send_at=at)
    with h.db.session() as s:
        p = run_report.progress(s, run_id, h.clock.now())
    assert p["state"] == "scheduled" and p["substate"] is None
    assert p["schedule"]["rows"] == 30
    assert p["next_send_at"] == at and p["eta"] == at + timedelta(seconds=2 * 301)


def test_run_resume_acknowledge_records_who_and_why_and_run_show_lists_it(h):
    """Issue 21.4: ``run resume --acknowledge`` records the operator and the reason; the guard's
    decisions and the acknowledgements are in ``run show`` (JSON and table)."""
    from dispatcher.halts import NoHaltKeys

    h.contacts(2)
    run_id = h.launch()
    with h.db.session() as s:
        runs.pause_run(s, run_id, "reputation guard: test", h.clock.now(), halts=NoHaltKeys())
    r = cli(Path.cwd(), "run", "resume", str(run_id), "--acknowledge", "looked at it", "--json")
    assert r.returncode == 0, r.stderr
    r = cli(Path.cwd(), "run", "show", str(run_id), "--json")
    guard = json.loads(r.stdout)["guard"]
    (ack,) = guard["events"]
    assert (ack["kind"], ack["reason"]) == ("acknowledge", "looked at it")
    assert ack["actor"].startswith("operator:") and guard["since"] == ack["at"]
    assert ack["figures"] == {"pause_reason": "reputation guard: test"}
    out = cli(Path.cwd(), "run", "show", str(run_id)).stdout
    assert "Reputation guard (judging sends since" in out and "looked at it" in out
    r = cli(Path.cwd(), "run", "resume", str(run_id), "--acknowledge", "again")
    assert r.returncode == 1 and r.stderr.startswith("error: run") and "paused" in r.stderr


def test_run_watch_line_of_a_run_waiting_for_quiet_hours_names_the_wait_and_the_finish():
    """Finding 1 (run watch): the demo's bar ended at "ETA 0m00s" while rows waited hours for
    daytime.  The line says what it waits for, the next send and the finish, in the operator's
    zone to the minute."""
    from dispatcher.cli.watch import _finish

    now = datetime(2026, 1, 6, 3, 0, tzinfo=UTC)  # 22:00 in New York
    nxt, eta = datetime(2026, 1, 6, 13, 0, tzinfo=UTC), datetime(2026, 1, 6, 13, 10, tzinfo=UTC)
    p = {
        "state": runs.RUNNING,
        "substate": run_report.WAITING_QUIET,
        "eta": eta,
        "next_send_at": nxt,
        "finished_at": None,
    }
    line = _finish(p, "America/New_York", now)
    assert line == (
        "waiting for quiet hours to end: next send 2026-01-06 08:00 EST, "
        "finish 2026-01-06 08:10 EST (in 10 h 10 min)"
    )
