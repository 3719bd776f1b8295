"""Commands that need the workers package, added to `dispatcher` via the entry point group
``dispatcher.cli``: demo, up (the embedded stack in the foreground), scheduler, worker."""

from __future__ import annotations

import signal
import threading
from typing import Any

import typer


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
    app.command("up")(up)
    app.command("scheduler")(scheduler)
    app.command("worker")(worker)


#: the worker pool's exporter: forked by dramatiq, serves the sum of the pool's processes
WORKER_FORK = "dispatcher.metrics:worker_exporter"


def worker_argv(processes: int, threads: int) -> list[str]:
    """``dramatiq`` with the worker pool and its metrics exporter (docker-compose.yml's worker
    runs exactly this; tests/unit/test_compose.py checks)."""
    return [
        "dramatiq",
        "workers.actors",
        "--processes",
        str(processes),
        "--threads",
        str(threads),
        "--fork-function",
        WORKER_FORK,
    ]


def worker(
    processes: int = typer.Option(2, "--processes", min=1, help="Worker processes."),
    threads: int = typer.Option(8, "--threads", min=1, help="Threads per worker process."),
    metrics_port: int = typer.Option(
        None,
        "--metrics-port",
        help="Port of the pool's metrics exporter (default DISPATCHER_METRICS_PORT, 9108).",
    ),
    metrics_dir: str = typer.Option(
        None,
        "--metrics-dir",
        help="prometheus-client multiprocess directory (default: a fresh temporary one). "
        "Emptied at start: values of an earlier pool would be summed in.",
    ),
) -> None:
    """A distributed worker pool with its metrics: dramatiq's processes write their values to
    one multiprocess directory and a forked exporter serves their sum on --metrics-port (the
    same command as docker-compose.yml's worker)."""
    import os
    import sys
    import tempfile
    from pathlib import Path

    from dispatcher.errors import ConfigError
    from dispatcher.metrics import MULTIPROC_ENV
    from dispatcher.settings import get_settings

    settings = get_settings()
    if settings.embedded:
        raise ConfigError("workers need DISPATCHER_REDIS_URL (embedded mode: use `dispatcher up`)")
    port = metrics_port or settings.metrics_port
    directory = Path(metrics_dir or tempfile.mkdtemp(prefix="dispatcher-metrics-"))
    directory.mkdir(parents=True, exist_ok=True)
    for f in directory.glob("*.db"):  # must start empty (docs/metrics.md)
        f.unlink()
    env = {
        **os.environ,
        MULTIPROC_ENV: str(directory),
        "DISPATCHER_METRICS_PORT": str(port),
    }
    env.setdefault("dramatiq_worker_timeout", "100")
    argv = worker_argv(processes, threads)
    os.execve(sys.executable, [sys.executable, "-m", *argv], env)


def demo(
    realistic: bool = typer.Option(
        False,
        "--realistic",
        help="Keep the 10 per 5 min limit: the run then takes as long as that limit needs "
        "(the demo prints its estimated finish first and the time it took at the end).",
    ),
    contacts: int = typer.Option(200, "--contacts", min=10, max=5000),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as one JSON document."),
) -> None:
    """A real campaign run end to end in one process: queue, throttle, gates, sandbox carrier."""
    from dispatcher import run_report
    from dispatcher.cli.output import emit_json, err, table
    from dispatcher.cli.watch import print_verdict
    from workers.demo import run_demo

    res = run_demo(realistic=realistic, n=contacts, show=True)
    p = res["run"]
    carrier = res["carrier"]
    per_phone: dict[str, int] = {}
    for m in carrier:
        per_phone[m["to"]] = per_phone.get(m["to"], 0) + 1
    dupes = sum(1 for v in per_phone.values() if v > 1)
    numbers = {
        "carrier_received": len(carrier),
        "carrier_duplicates": dupes,
        "handed": res["handed"],
    }
    zone = _zone()
    ok, lines = run_report.verdict(p, zone=zone, **numbers)
    doc = {
        "run": p["id"],
        "state": p["state"],
        "substate": p["substate"],
        "total": p["total"],
        "by_state": p["by_state"],
        "suppressed_by_reason": p["suppressed_by_reason"],
        "deferred_by_reason": p["deferred_by_reason"],
        "failed_by_code": p["failed_by_code"],
        **numbers,
        "adds_up": ok,
        "verdict": lines,
        "seconds": round(res["seconds"]),
        "estimated_seconds": round(res["estimated_seconds"]),
        "estimated_finish": p["eta"],
        "plan": res["seeded"]["plan"],
    }
    if as_json:
        emit_json(doc)
        return
    rows = [(f"rows {k}", v) for k, v in p["by_state"].items()]
    rows += [(f"  suppressed: {k}", v) for k, v in sorted(p["suppressed_by_reason"].items())]
    rows += [(f"  failed: error {k}", v) for k, v in sorted(p["failed_by_code"].items())]
    rows += [(f"  deferred: {k}", v) for k, v in sorted(p["deferred_by_reason"].items())]
    rows += [
        ("carrier received", len(carrier)),
        ("carrier duplicates", dupes),
        ("accounted for", f"{sum(p['by_state'].values())} of {p['total']} recipients"),
    ]
    table(f"Run {p['id']} ({run_report.state_words(p)})", ["", "recipients"], rows)
    print_verdict(p, zone=zone, **numbers)
    err().print(
        f"The demo took {run_report.duration(res['seconds'])} "
        f"(estimated {run_report.duration(res['estimated_seconds'])}).",
        markup=False,
    )


def _zone() -> str:
    from dispatcher.settings import Settings

    return Settings().default_timezone


def _wait_for_signal() -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()


def up(
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8000, "--port"),
) -> None:
    """Run the embedded stack in the foreground: scheduler, workers, webhooks (+ sandbox)."""
    import uvicorn

    from dispatcher.cli.output import err
    from dispatcher.cli.serve import listen_port_warning
    from dispatcher.settings import get_settings
    from workers.embedded import EmbeddedStack

    settings = get_settings()
    warning = listen_port_warning(settings.public_base_url, port)
    if warning:
        typer.echo(warning, err=True)
    stack = EmbeddedStack(settings).start()
    err().print(f"embedded stack up; webhooks on http://{host}:{port} (Ctrl-C to stop)")
    try:
        uvicorn.run(stack.runtime.webhook_app, host=host, port=port, log_level="warning")
    finally:
        stack.stop()


def scheduler(
    metrics_port: int = typer.Option(
        None, "--metrics-port", help="Expose this process's metrics (default: none)."
    ),
    tick: float = typer.Option(1.0, "--tick", help="Seconds between ticks."),
    leader_ttl: float = typer.Option(10.0, "--leader-ttl", help="Leader lock expiry (s)."),
    reconcile: float = typer.Option(10.0, "--reconcile", help="Seconds between reconciles."),
    lost_after: float = typer.Option(
        60.0, "--lost-after", help="A queued row whose queue message is this old is re-sent."
    ),
    sending_lease: float = typer.Option(
        90.0,
        "--sending-lease",
        help="A row 'sending' this long belongs to a dead worker (must exceed the gateway "
        "timeout); it is then resolved at the carrier.",
    ),
    status_after: float = typer.Option(
        300.0,
        "--status-after",
        help="A sent row with no final status this long asks the carrier for it.",
    ),
    quick_status_after: float = typer.Option(
        10.0,
        "--quick-status-after",
        help="... and this long once callbacks stopped arriving (webhooks down).",
    ),
) -> None:
    """The distributed scheduler (one leads via a Redis lock; others stand by)."""
    from dispatcher.cli.output import err
    from dispatcher.errors import ConfigError
    from dispatcher.logs import setup_logging
    from dispatcher.settings import get_settings
    from workers import actors
    from workers.scheduler import Scheduler

    settings = get_settings()
    setup_logging(settings.log_level)
    if settings.embedded:
        raise ConfigError(
            "the scheduler needs DISPATCHER_REDIS_URL (embedded mode: use `dispatcher up`)"
        )
    rt: Any = actors.runtime()
    rt.db.ensure_schema() if rt.db.is_sqlite else None
    if metrics_port:
        from dispatcher.metrics import start_exporter

        start_exporter(metrics_port, rt.metrics)
    from dispatcher.release_loop import ReleaseConfig

    s = Scheduler(
        rt,
        actors.enqueue_many,
        tick_s=tick,
        leader_ttl_s=leader_ttl,
        reconcile_s=reconcile,
        resolve=lambda i: actors.pipeline().resolve(i),
        refresh=lambda i: actors.pipeline().refresh(i),
        release=ReleaseConfig(
            lost_after_s=lost_after,
            sending_lease_s=sending_lease,
            status_after_s=status_after,
            quick_status_after_s=quick_status_after,
        ),
    )
    s.start()
    err().print("scheduler started (standing by until it holds the leader lock)")
    try:
        _wait_for_signal()
    finally:
        s.stop()
