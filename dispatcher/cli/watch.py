"""Live progress of a run (Rich progress bar on stderr).  Reads only the database, so it works
the same against the embedded mode and the distributed mode.

The bar counts rows in a done state (``run_report.DONE``), which no row ever leaves: it only
moves forward.  The finish is the schedule model's (quiet hours, every throttle bucket), which
reads every row still to send: it is recomputed every few seconds, not at every refresh."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from dispatcher import run_report, runs
from dispatcher.cli.output import err

FINAL_RUN = (runs.COMPLETED, runs.CANCELLED)
#: the schedule is recomputed at most this often, and no more than 1/20 of the time
SCHEDULE_EVERY_S = 5.0


def _finish(p: dict[str, Any], zone: str, now: datetime) -> str:
    """``finish 13:20 EST (in 3 h 10 min)``, or what the run waits for."""
    if p["state"] in FINAL_RUN:
        return f"finished {run_report.local_time(p['finished_at'], zone)}"
    if p["state"] != runs.RUNNING or p["eta"] is None:
        return ""
    left = run_report.duration((p["eta"] - now).total_seconds())
    words = f"finish {run_report.local_time(p['eta'], zone)} (in {left})"
    if p.get("substate") in (run_report.WAITING_QUIET, run_report.WAITING_RECIPIENTS):
        nxt = run_report.local_time(p["next_send_at"], zone)
        return f"{run_report.SUBSTATE_WORDS[p['substate']]}: next send {nxt}, {words}"
    return words


def watch(
    db: Any,
    run_id: int,
    *,
    interval: float = 0.5,
    until: Callable[[dict[str, Any]], bool] | None = None,
    timeout: float | None = None,
    zone: str = "America/New_York",
    grace_s: float | None = None,
    verdict: bool = True,
) -> dict[str, Any]:
    """Show a progress bar until the run completes (or is cancelled/paused with nothing left to
    do, or ``until(progress)`` is true), then (``verdict``) what the numbers say.  Times in
    ``zone`` (the operator's).  Returns the last progress document."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    started = time.monotonic()
    prog = Progress(
        TextColumn("[bold]run {task.fields[run]}[/bold] {task.fields[state]}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} done"),
        TextColumn("{task.fields[counts]}"),
        TextColumn("{task.fields[finish]}"),
        TimeElapsedColumn(),
        console=err(),
        transient=False,
    )
    last: dict[str, Any] = {}
    planned: dict[str, Any] = {}
    planned_at = float("-inf")
    plan_cost = 0.0
    with prog:
        task = prog.add_task("run", total=1, run=run_id, state="", counts="", finish="")
        while True:
            mono = time.monotonic()
            fresh = mono - planned_at >= max(SCHEDULE_EVERY_S, 20 * plan_cost)
            now = datetime.now(UTC)
            with db.session() as s:
                last = run_report.progress(s, run_id, now, schedule=fresh, grace_s=grace_s)
            if fresh or last["state"] != planned.get("state"):
                planned, planned_at = last, mono
                plan_cost = time.monotonic() - mono
            else:  # between schedules: the last one's figures
                last.update({k: planned[k] for k in ("eta", "next_send_at", "schedule")})
            prog.update(
                task,
                total=max(1, last["total"]),
                completed=last["done"],
                state=run_report.state_words(last),
                counts=run_report.state_line(last["by_state"]),
                finish=_finish(last, zone, now),
            )
            if last["state"] in FINAL_RUN or (until is not None and until(last)):
                break
            if last["state"] == runs.PAUSED:
                err().print(f"run {run_id} paused: {last['pause_reason']}", style="yellow")
                break
            if timeout is not None and mono - started > timeout:
                break
            time.sleep(interval)
    if verdict:
        print_verdict(last, zone=zone)
    return last


def print_verdict(p: dict[str, Any], *, zone: str, **carrier: int) -> bool:
    """The run's verdict, computed from its numbers (``run_report.verdict``); a line that does
    not add up in red.  Returns whether everything adds up."""
    ok, lines = run_report.verdict(p, zone=zone, **carrier)
    for line in lines:
        style = "red" if line.startswith("Does not add up") else "green" if ok else ""
        err().print(line, style=style or None, markup=False, highlight=False)
    return ok
