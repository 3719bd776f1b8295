"""Live progress of a run (Rich progress bar on stderr).  Reads only the database, so it works
the same against the embedded mode and the distributed mode."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from dispatcher import run_report, runs
from dispatcher.cli.output import err

FINAL_RUN = (runs.COMPLETED, runs.CANCELLED)


def _fmt_eta(eta: Any) -> str:
    if not eta:
        return "-"
    secs = max(0, int((eta - datetime.now(UTC)).total_seconds()))
    h, rem = divmod(secs, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def watch(
    db: Any,
    run_id: int,
    *,
    interval: float = 0.5,
    until: Callable[[dict], bool] | None = None,
    timeout: float | None = None,
) -> dict[str, Any]:
    """Show a progress bar until the run completes (or is cancelled/paused with nothing left to
    do, or ``until(progress)`` is true).  Returns the last progress document."""
    started = time.monotonic()
    prog = Progress(
        TextColumn("[bold]run {task.fields[run]}[/bold] {task.fields[state]}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn(
            "sent [green]{task.fields[sent]}[/green] deferred [yellow]"
            "{task.fields[deferred]}[/yellow] suppressed [cyan]{task.fields[suppressed]}"
            "[/cyan] failed [red]{task.fields[failed]}[/red]"
        ),
        TextColumn("{task.fields[rate]}/s ETA {task.fields[eta]}"),
        TimeElapsedColumn(),
        console=err(),
        transient=False,
    )
    last: dict[str, Any] = {}
    first_done, first_t = None, None
    with prog:
        task = prog.add_task(
            "run",
            total=1,
            run=run_id,
            state="",
            sent=0,
            deferred=0,
            suppressed=0,
            failed=0,
            rate="0.0",
            eta="-",
        )
        while True:
            with db.session() as s:
                last = run_report.progress(s, run_id, datetime.now(UTC))
            c = last["by_state"]
            sent = sum(c.get(k, 0) for k in ("sent", "delivered", "undelivered"))
            now = time.monotonic()
            if first_done is None:
                first_done, first_t = sent, now
            rate = (sent - first_done) / (now - first_t) if now > first_t else 0.0
            prog.update(
                task,
                total=max(1, last["total"]),
                completed=last["done"],
                state=last["state"],
                sent=sent,
                deferred=last["deferred"],
                suppressed=c.get("suppressed", 0),
                failed=c.get("failed", 0) + c.get("undelivered", 0),
                rate=f"{rate:.1f}",
                eta=_fmt_eta(last["eta"]),
            )
            if last["state"] in FINAL_RUN or (until is not None and until(last)):
                break
            if last["state"] == runs.PAUSED:
                err().print(f"run {run_id} paused: {last['pause_reason']}", style="yellow")
                break
            if timeout is not None and now - started > timeout:
                break
            time.sleep(interval)
    return last
