"""Dispatch pipeline throughput on real Redis + PostgreSQL + the sandbox carrier (server mode).

    python bench/pipeline.py [--n 2000] [--rounds 3] [--processes 2] [--threads 8]
                             [--redis redis://HOST:PORT/DB] [--pg postgresql://...]
                             [--profile DIR]   # py-spy the pipeline's processes during (b)

(a) ceiling — ``python -m dramatiq bench._bare_actor``: one twilio-client create per queue
    message against the sandbox; the bench enqueues N messages and times until the sandbox
    holds N.  Two kinds, both in every run:
    (a1) "ceiling_bare_actor": the creates ask for no status callbacks, so the sandbox posts
         none -- the figure this bench has always printed;
    (a2) "ceiling_bare_actor_with_callbacks": each create names a status-callback URL served
         by a bare receiver (``bench/_sink.py``: stdlib asyncio, answers 200 and the empty
         TwiML to every POST, no signature check, no form parsing, no database), so the
         sandbox builds, signs and posts the same callbacks per message as in (b) with
         callbacks, on the same cores; the receiver is its own process, CPU metered.  What
         Twilio spends on its callbacks is not the dispatcher's cost: this ceiling carries it
         too, and what is left between (a2) and (b) is the dispatcher's side of a callback.
(b) full pipeline with limits lifted (window 10^9 per second, 10 000 MPS, quiet hours "none",
    every recipient consented): ``python -m dramatiq workers.actors`` + ``dispatcher scheduler
    --tick 0.2`` + ``dispatcher serve`` (status callbacks), same broker, processes and threads.
    The bench launches a run of N recipients (``dispatcher.runs.launch``) and times from that
    commit until the sandbox holds N; then checks every recipient got exactly one message.
    ``--rounds`` runs with the carrier dropping its status callbacks (compared with (a1): the
    same carrier work per message), then ``--callback-rounds`` (default 1) with its status
    callbacks (queued, sending, sent, delivered: 4 per message through a messaging service)
    handled by ``dispatcher serve`` on the same cores, each compared with BOTH ceilings:
    "ratio_to_ceiling" against (a1), as before, and "ratio_to_callback_ceiling" against (a2).
    Either window ends when the sandbox holds N: the callbacks still queued in its sender
    then are out of both.

Both sides stay up and warm (a small batch / a small run first); the side not being measured is
frozen (SIGSTOP), so it takes no CPU.  This machine's speed drifts by tens of % between minutes,
so the runs alternate — ceiling, pipeline, ceiling, pipeline, ..., ceiling, then (a2) (b with
callbacks) (a2) (a1) per callback round — and each pipeline run is compared with the mean of the
ceiling runs of each kind either side of it; the headline ratio is the median over the rounds
(goal >= 60 %).  Prints one JSON document on stdout (messages/s end to end and over the
carrier's receive span, first to last message received, CPU per message by process) and the
ratios, labelled, on stderr.
Without ``--redis`` the bench starts a redis-server of its own on a free port (stopped at the
end); a DB given with ``--redis`` is flushed before and after.  The PostgreSQL database is a
throw-away one, dropped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python bench/pipeline.py` puts bench/, not the root, on the path
    sys.path.insert(0, str(ROOT))

from bench._procs import CpuMeter, frozen, py_spy, wait_idle  # noqa: E402
from tests.harness import (  # noqa: E402 - the integration tests' process management
    Carrier,
    Proc,
    Stack,
    flush_redis,
    free_port,
    http_ok,
    wait_for,
)
from tests.servers import PG_DSN, redis_or_own, throwaway_database  # noqa: E402

SEED = ROOT / "dispatcher" / "data" / "usa2p_seed004.json"
SERVICE_SID = "MG" + "0" * 31 + "1"
TEMPLATE = "Your order has shipped."
BODY = "Acme Corporation: Your order has shipped. Reply STOP to opt out."
#: the scheduler's CLI defaults but the tick (the harness's test defaults reconcile every second)
SCHEDULER = {
    "tick": 0.2,
    "leader_ttl": 10.0,
    "reconcile": 10.0,
    "lost_after": 60.0,
    "sending_lease": 90.0,
    "status_after": 300.0,
}
WARM = 320  # >= one batch (DISPATCHER_DELIVER_BATCH) per worker thread (workers warm up at boot)


def phone(i: int) -> str:
    return f"+1646{2_000_000 + i:07d}"


# ------------------------------------------------------------------------------------ servers
def wait_count(carrier: Carrier, stack: Stack, n: int, timeout: float) -> float:
    """Block until the carrier holds >= n messages; return the perf_counter at that moment."""
    wait_for(
        lambda: carrier.count() >= n,
        timeout,
        f"the carrier to hold {n} messages",
        every=0.02,
        check=stack.check_alive,
    )
    return time.perf_counter()


def span_rate(records: list[dict[str, Any]]) -> float | None:
    times = sorted(float(r["received_at"]) for r in records)
    if len(times) < 2 or times[-1] <= times[0]:
        return None
    return (len(times) - 1) / (times[-1] - times[0])


# ------------------------------------------------------------------------------------ (a)
def start_ceiling(stack: Stack, processes: int, threads: int) -> Proc:
    """The bare actor's workers, warmed by a small batch."""
    os.environ["BENCH_REDIS_URL"] = stack.redis_url
    from bench import _bare_actor

    carrier = stack.carrier
    assert carrier is not None
    workers = stack.start(
        "bare_workers",
        [
            sys.executable,
            "-m",
            "dramatiq",
            "bench._bare_actor",
            "--processes",
            str(processes),
            "--threads",
            str(threads),
        ],
        {"BENCH_REDIS_URL": stack.redis_url, "BENCH_SANDBOX_URL": carrier.url},
    )
    for i in range(WARM):
        _bare_actor.bare_send.send(phone(900_000 + i), BODY)
    wait_count(carrier, stack, WARM, 60)
    return workers


def start_sink(stack: Stack) -> tuple[Proc, str]:
    """The bare callback receiver (bench/_sink.py) as a process of its own; its /twilio/status
    URL, to ask the sandbox for callbacks there."""
    port = free_port()
    sink = stack.start("sink", [sys.executable, str(ROOT / "bench" / "_sink.py"), str(port)])
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: http_ok(base + "/count"), 30, "the callback sink", check=stack.check_alive)
    return sink, base + "/twilio/status"


def sink_posts(callback_url: str) -> int:
    base = callback_url.rsplit("/twilio/", 1)[0]
    return int(httpx.get(base + "/count", timeout=10).text)


def measure_ceiling(
    stack: Stack,
    workers: Proc,
    n: int,
    timeout: float,
    sink: tuple[Proc, str] | None = None,
) -> dict[str, Any]:
    """n bare sends; with ``sink`` (its process, its URL) each asks the sandbox for its status
    callbacks there, which the sandbox posts during the run as it does in the pipeline's."""
    from bench import _bare_actor

    carrier = stack.carrier
    assert carrier is not None
    sandbox = stack.procs["sandbox"]
    procs = {"sandbox": sandbox, "workers": workers}
    callback_url = None
    if sink is not None:
        procs["sink"], callback_url = sink
    wait_idle(list(procs.values()))  # the last run's callbacks drained
    carrier.reset()
    carrier.faults(drop_callbacks=0.0)
    posts0 = sink_posts(callback_url) if callback_url else 0
    meter = CpuMeter(procs, stack.redis_url)
    meter.start()
    t0 = time.perf_counter()
    for i in range(n):
        _bare_actor.bare_send.send(phone(i), BODY, callback_url)
    t1 = wait_count(carrier, stack, n, timeout)
    cpu = meter.stop(n)
    received = sink_posts(callback_url) - posts0 if callback_url else None
    stats = carrier.stats()
    records = carrier.records()
    carrier.reset()
    if sink is not None:
        wait_idle(list(procs.values()))  # callbacks drained: the sink may be frozen now
    return {
        "seconds": t1 - t0,
        "msgs_per_s": n / (t1 - t0),
        "carrier_span_msgs_per_s": span_rate(records),
        "received": len(records),
        "callbacks_posted_in_window": stats.get("callbacks", 0),
        **({"callbacks_received_by_sink_in_window": received} if callback_url else {}),
        **cpu,
    }


# ------------------------------------------------------------------------------------ (b)
def seed(url: str, n: int, groups: list[str]) -> str:
    """Schema, brand, the seed 004 campaign with limits lifted, n consented contacts per group
    and WARM in group warm (each run texts people nobody texted today)."""
    from sqlalchemy import insert

    from dispatcher import registry
    from dispatcher.models import ConsentEvent, Contact
    from dispatcher.store import Database

    db = Database(url)
    db.upgrade()
    now = datetime.now(UTC)
    try:
        with db.session() as s:
            brand = registry.add_brand(s, name="Acme Corporation", tmobile_brand_tier="TOP")
            doc = registry.load_campaign_file(SEED)
            doc["messaging_service_sid"] = SERVICE_SID  # the seed's MGXXX... is not a valid SID
            campaign, _ = registry.import_campaign(
                s,
                doc,
                brand=brand,
                policy={
                    "campaign_status": "VERIFIED",
                    "window_limit": 1_000_000_000,
                    "window_seconds": 1,
                    "quiet_hours_policy": "none",
                    "rate_limits": {
                        "att": {"mps": 10_000, "msg_class": "A"},
                        "tmobile": {"brand_tier": "TOP"},
                    },
                },
            )
            conn = s.connection()
            people = [(phone(k * n + i), g) for k, g in enumerate(groups) for i in range(n)]
            people += [(phone(900_000 + i), "warm") for i in range(WARM)]
            conn.execute(
                insert(Contact.__table__),
                [  # type: ignore[attr-defined]
                    {
                        "phone": p,
                        "name": f"Customer {k}",
                        "attributes": {"grp": g},
                        "created_at": now,
                        "updated_at": now,
                    }
                    for k, (p, g) in enumerate(people)
                ],
            )
            ids = [
                r[0]
                for r in conn.execute(
                    Contact.__table__.select().with_only_columns(Contact.__table__.c.id)  # type: ignore[attr-defined]
                )
            ]  # type: ignore[attr-defined]
            conn.execute(
                insert(ConsentEvent.__table__),
                [  # type: ignore[attr-defined]
                    {
                        "contact_id": cid,
                        "brand_id": brand.id,
                        "campaign_id": None,
                        "action": "grant",
                        "consent_type": "express",
                        "source": "web_form",
                        "evidence_text": "Checked the box at example.com/signup v3",
                        "actor": "bench",
                        "occurred_at": now,
                        "recorded_at": now,
                    }
                    for cid in ids
                ],
            )
            return campaign.sid
    finally:
        db.dispose()


def launch(url: str, sid: str, group: str) -> int:
    from dispatcher import runs
    from dispatcher.store import Database

    db = Database(url)
    try:
        with db.session() as s:
            run, _ = runs.launch(
                s,
                runs.LaunchRequest(
                    campaign=sid,
                    template=TEMPLATE,
                    audience={"kind": "segment", "query": f"grp={group}"},
                ),
                now=datetime.now(UTC),
            )
            return int(run.id)  # type: ignore[arg-type]
    finally:
        db.dispose()


def analyze(url: str) -> None:
    """Planner statistics for the freshly seeded tables, as a live database has them (without,
    the first measured run planned its queries on no statistics and ran ~20 % slower)."""
    from sqlalchemy import text

    from dispatcher.store import Database

    db = Database(url)
    try:
        with db.engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("ANALYZE"))
    finally:
        db.dispose()


def outbox_states(url: str, run_id: int) -> dict[str, int]:
    from dispatcher import run_report
    from dispatcher.store import Database

    db = Database(url)
    try:
        with db.session() as s:
            return run_report.counts(s, run_id)
    finally:
        db.dispose()


def start_pipeline(stack: Stack, sid: str, processes: int, threads: int) -> dict[str, Proc]:
    """Webhooks, scheduler and workers, warmed by a small run; returns them by role."""
    url = stack.database_url
    carrier = stack.carrier
    assert carrier is not None
    webhooks = stack.start_webhooks()
    scheduler = stack.start_scheduler(**SCHEDULER)
    workers = stack.start_workers(processes=processes, threads=threads)
    warm = launch(url, sid, "warm")
    wait_count(carrier, stack, WARM, 120)
    wait_for(
        lambda: outbox_states(url, warm).get("sending", 0) == 0,
        30,
        "warm-up",
        check=stack.check_alive,
    )
    analyze(url)
    carrier.reset()
    return {
        "sandbox": stack.procs["sandbox"],
        "workers": workers,
        "scheduler": scheduler,
        "webhooks": webhooks,
    }


def measure_pipeline(
    stack: Stack,
    procs: dict[str, Proc],
    sid: str,
    group: str,
    n: int,
    callbacks: bool,
    timeout: float,
    profile: Path | None,
) -> dict[str, Any]:
    """One run of n recipients, from its launch until the carrier holds n.  ``callbacks``: the
    carrier's 3 status callbacks per message are handled by ``dispatcher serve`` on the same
    cores; without, the carrier drops them (the same carrier work per message as the ceiling
    asks for)."""
    url = stack.database_url
    carrier = stack.carrier
    assert carrier is not None
    wait_idle(list(procs.values()))
    carrier.reset()
    carrier.faults(drop_callbacks=0.0 if callbacks else 1.0)
    meter = CpuMeter(procs, stack.redis_url, url)
    with ExitStack() as spies:
        for name in ("workers", "webhooks", "scheduler") if profile else ():
            spies.enter_context(py_spy(procs[name].pid, profile / f"{group}.{name}.raw"))
        meter.start()
        t0 = time.perf_counter()
        run_id = launch(url, sid, group)
        t1 = wait_count(carrier, stack, n, timeout)
        cpu = meter.stop(n)
    stats = carrier.stats()
    records = carrier.records()
    wait_for(
        lambda: outbox_states(url, run_id).get("sending", 0) == 0,
        60,
        "the last sends to be recorded",
        check=stack.check_alive,
    )
    per_phone = Counter(r["to"] for r in records)
    out = {
        "seconds": t1 - t0,
        "msgs_per_s": n / (t1 - t0),
        "carrier_span_msgs_per_s": span_rate(records),
        "received": len(records),
        "duplicates": sum(1 for v in per_phone.values() if v > 1),
        "callbacks_posted_in_window": stats.get("callbacks", 0),
        "outbox_states": outbox_states(url, run_id),
        **cpu,
    }
    carrier.faults(drop_callbacks=0.0)
    wait_idle(list(procs.values()))  # callbacks drained: the stack may be frozen now
    return out


# ------------------------------------------------------------------------------------ main
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--redis", default=None, help="default: a redis-server of its own")
    p.add_argument("--pg", default=PG_DSN)
    p.add_argument("--timeout", type=float, default=600.0)
    p.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="pipeline runs without callbacks, each between two ceiling runs",
    )
    p.add_argument(
        "--callback-rounds",
        type=int,
        default=1,
        help="pipeline runs with callbacks, each between two pairs of ceiling runs",
    )
    p.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="directory for py-spy raw profiles of the pipeline's workers, webhooks, scheduler",
    )
    p.add_argument("--keep-logs", type=Path, default=None, help="copy process logs here")
    a = p.parse_args()
    if a.profile:
        a.profile.mkdir(parents=True, exist_ok=True)
    groups = [f"round{i + 1}" for i in range(a.rounds)]
    cb_groups = ["callbacks", *(f"callbacks{i + 2}" for i in range(a.callback_rounds - 1))]
    with (
        throwaway_database(a.pg, "dispatcher_bench_") as url,
        redis_or_own(a.redis) as redis_url,
        tempfile.TemporaryDirectory() as d,
    ):
        sid = seed(url, a.n, [*groups, *cb_groups])
        flush_redis(redis_url)
        stack = Stack(redis_url, url, Path(d))
        try:
            stack.start_sandbox()
            sink = start_sink(stack)
            bare = start_ceiling(stack, a.processes, a.threads)
            with frozen([bare]):
                pipe = start_pipeline(stack, sid, a.processes, a.threads)
            pipe_side = [pipe[k] for k in ("workers", "scheduler", "webhooks")]
            ceilings: list[dict[str, Any]] = []
            cb_ceilings: list[dict[str, Any]] = []

            def ceiling() -> None:
                with frozen([*pipe_side, sink[0]]):
                    ceilings.append(measure_ceiling(stack, bare, a.n, a.timeout))

            def cb_ceiling() -> None:
                with frozen(pipe_side):
                    cb_ceilings.append(measure_ceiling(stack, bare, a.n, a.timeout, sink))

            def pipeline(group: str, callbacks: bool) -> dict[str, Any]:
                with frozen([bare, sink[0]]):
                    return measure_pipeline(
                        stack, pipe, sid, group, a.n, callbacks, a.timeout, a.profile
                    )

            # the machine's speed drifts by tens of % between minutes (CPU frequency,
            # neighbours): every pipeline run sits between two ceiling runs of each kind it is
            # compared with, and is compared with their mean; the side not being measured is
            # frozen.  C P C P C ... P C | Ccb Pcb Ccb C [Ccb Pcb Ccb C ...]
            ceiling()
            plain = []
            for g in groups:
                plain.append(pipeline(g, callbacks=False))
                ceiling()
            with_callbacks = []
            for g in cb_groups:
                cb_ceiling()
                with_callbacks.append(pipeline(g, callbacks=True))
                cb_ceiling()
                ceiling()
        finally:
            stack.close()
            flush_redis(redis_url)
            if a.keep_logs:
                shutil.copytree(d, a.keep_logs, dirs_exist_ok=True)
    runs = [_versus(run, ceilings[i], ceilings[i + 1]) for i, run in enumerate(plain)]
    ratios = [r["ratio_to_ceiling"] for r in runs]
    # callback round k: plain ceilings a.rounds + k (before) and + k + 1 (after); callback
    # ceilings 2k and 2k + 1
    cb_runs = [
        _versus_both(
            run,
            (ceilings[a.rounds + k], ceilings[a.rounds + k + 1]),
            (cb_ceilings[2 * k], cb_ceilings[2 * k + 1]),
        )
        for k, run in enumerate(with_callbacks)
    ]
    out: dict[str, Any] = {
        "n": a.n,
        "processes": a.processes,
        "threads": a.threads,
        "rounds": a.rounds,
        "callback_rounds": a.callback_rounds,
        "ceiling_bare_actor": {
            "what": "bare actor, no status callbacks asked for",
            "msgs_per_s": [round(c["msgs_per_s"], 1) for c in ceilings],
            "cpu_ms_per_msg_total": [c["cpu_ms_per_msg_total"] for c in ceilings],
            "runs": [_round(c) for c in ceilings],
        },
        "ceiling_bare_actor_with_callbacks": {
            "what": "bare actor, the sandbox posting each message's status callbacks to a bare"
            " receiver (bench/_sink.py: 200, no signature check, no database)",
            "msgs_per_s": [round(c["msgs_per_s"], 1) for c in cb_ceilings],
            "cpu_ms_per_msg_total": [c["cpu_ms_per_msg_total"] for c in cb_ceilings],
            "runs": [_round(c) for c in cb_ceilings],
        },
        "pipeline_without_callbacks": {
            "msgs_per_s": [round(r["msgs_per_s"], 1) for r in runs],
            "ratios": ratios,
            "ratio_to_ceiling": statistics.median(ratios),
            "goal_ratio_ge_60pct": statistics.median(ratios) >= 0.6,
            "duplicates": sum(r["duplicates"] for r in runs),
            "runs": runs,
        },
        # the first (or only) run; "ratio_to_ceiling" is against the ceiling without
        # callbacks, as before; "ratio_to_callback_ceiling" against the one with them
        "pipeline_with_callbacks": cb_runs[0],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }
    if len(cb_runs) > 1:
        out["pipeline_with_callbacks_runs"] = {
            "ratios": [r["ratio_to_ceiling"] for r in cb_runs],
            "ratios_to_callback_ceiling": [r["ratio_to_callback_ceiling"] for r in cb_runs],
            "ratio_to_ceiling": statistics.median(r["ratio_to_ceiling"] for r in cb_runs),
            "ratio_to_callback_ceiling": statistics.median(
                r["ratio_to_callback_ceiling"] for r in cb_runs
            ),
            "runs": cb_runs,
        }
    print(json.dumps(out, indent=2))
    print(_summary(out, runs, cb_runs), file=sys.stderr)


def _versus_both(
    run: dict[str, Any],
    plain: tuple[dict[str, Any], dict[str, Any]],
    callbacks: tuple[dict[str, Any], dict[str, Any]],
) -> dict[str, Any]:
    """A callbacks run against both ceilings: the keys of ``_versus`` against the ceiling
    without callbacks, and ``*_callback_ceiling`` ones against the ceiling with them."""
    out = _versus(run, *plain)
    cb = _versus(run, *callbacks)
    out["callback_ceiling_msgs_per_s"] = cb["ceiling_msgs_per_s"]
    out["ratio_to_callback_ceiling"] = cb["ratio_to_ceiling"]
    out["ratio_carrier_span_to_callback_ceiling"] = cb["ratio_carrier_span"]
    out["cpu_ms_per_msg_ratio_to_callback_ceiling"] = cb["cpu_ms_per_msg_ratio_to_ceiling"]
    return out


def _summary(
    out: dict[str, Any], plain: list[dict[str, Any]], callbacks: list[dict[str, Any]]
) -> str:
    lines = [
        f"load average {out['load_average_after']}",
        "ceiling, no callbacks, msg/s:               "
        + " ".join(f"{x:.0f}" for x in out["ceiling_bare_actor"]["msgs_per_s"]),
        "ceiling, callbacks to a bare sink, msg/s:   "
        + " ".join(f"{x:.0f}" for x in out["ceiling_bare_actor_with_callbacks"]["msgs_per_s"]),
        "pipeline without callbacks / ceiling without callbacks: "
        + " ".join(f"{r['ratio_to_ceiling']:.3f}" for r in plain),
        "pipeline with callbacks / ceiling without callbacks:    "
        + " ".join(f"{r['ratio_to_ceiling']:.3f}" for r in callbacks),
        "pipeline with callbacks / ceiling with callbacks:       "
        + " ".join(f"{r['ratio_to_callback_ceiling']:.3f}" for r in callbacks),
    ]
    return "\n".join(lines)


def _versus(run: dict[str, Any], before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """A pipeline run against the mean of the ceiling runs either side of it."""
    ceiling = {
        k: (before[k] + after[k]) / 2 if before[k] and after[k] else None
        for k in ("msgs_per_s", "carrier_span_msgs_per_s", "cpu_ms_per_msg_total")
    }
    ratio = run["msgs_per_s"] / ceiling["msgs_per_s"]
    span = (
        run["carrier_span_msgs_per_s"] / ceiling["carrier_span_msgs_per_s"]
        if run["carrier_span_msgs_per_s"] and ceiling["carrier_span_msgs_per_s"]
        else None
    )
    return {
        **_round(run),
        "ceiling_msgs_per_s": round(ceiling["msgs_per_s"], 1),
        "ratio_to_ceiling": round(ratio, 3),
        "ratio_carrier_span": round(span, 3) if span else None,
        "cpu_ms_per_msg_ratio_to_ceiling": round(
            run["cpu_ms_per_msg_total"] / ceiling["cpu_ms_per_msg_total"], 2
        ),
    }


def _round(d: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in d.items()}


if __name__ == "__main__":
    main()
