"""Dispatch pipeline throughput on real Redis + PostgreSQL + the sandbox carrier (server mode).

    python bench/pipeline.py [--n 2000] [--rounds 3] [--processes 2] [--threads 8]
                             [--redis redis://HOST:PORT/DB] [--pg postgresql://...]
                             [--profile DIR]   # py-spy the pipeline's processes during (b)

(a) ceiling — ``python -m dramatiq bench._bare_actor``: one twilio-client create per queue
    message against the sandbox; the bench enqueues N messages and times until the sandbox
    holds N.
(b) full pipeline with limits lifted (window 10^9 per second, 10 000 MPS, quiet hours "none",
    every recipient consented): ``python -m dramatiq workers.actors`` + ``dispatcher scheduler
    --tick 0.2`` + ``dispatcher serve`` (status callbacks), same broker, processes and threads.
    The bench launches a run of N recipients (``dispatcher.runs.launch``) and times from that
    commit until the sandbox holds N; then checks every recipient got exactly one message.
    ``--rounds`` runs with the carrier dropping its status callbacks (the ceiling asks for
    none: the same carrier work per message), then one with its 3 callbacks per message
    handled on the same cores.

Both sides stay up and warm (a small batch / a small run first); the side not being measured is
frozen (SIGSTOP), so it takes no CPU.  This machine's speed drifts by tens of % between minutes,
so the runs alternate — ceiling, pipeline, ceiling, pipeline, ..., ceiling — and each pipeline
run is compared with the mean of the ceiling runs either side of it; the headline ratio is the
median over the rounds (goal >= 60 %).  Prints one JSON document: messages/s end to end and
over the carrier's receive span (first to last message received), CPU per message by process.
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

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python bench/pipeline.py` puts bench/, not the root, on the path
    sys.path.insert(0, str(ROOT))

from bench._procs import CpuMeter, frozen, py_spy, wait_idle  # noqa: E402
from tests.harness import (  # noqa: E402 - the integration tests' process management
    Carrier,
    Proc,
    Stack,
    flush_redis,
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


def measure_ceiling(stack: Stack, workers: Proc, n: int, timeout: float) -> dict[str, Any]:
    from bench import _bare_actor

    carrier = stack.carrier
    assert carrier is not None
    wait_idle([workers])
    carrier.reset()
    meter = CpuMeter({"sandbox": stack.procs["sandbox"], "workers": workers}, stack.redis_url)
    meter.start()
    t0 = time.perf_counter()
    for i in range(n):
        _bare_actor.bare_send.send(phone(i), BODY)
    t1 = wait_count(carrier, stack, n, timeout)
    cpu = meter.stop(n)
    records = carrier.records()
    carrier.reset()
    return {
        "seconds": t1 - t0,
        "msgs_per_s": n / (t1 - t0),
        "carrier_span_msgs_per_s": span_rate(records),
        "received": len(records),
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
        "--profile",
        type=Path,
        default=None,
        help="directory for a py-spy raw profile of the pipeline's workers",
    )
    p.add_argument("--keep-logs", type=Path, default=None, help="copy process logs here")
    a = p.parse_args()
    if a.profile:
        a.profile.mkdir(parents=True, exist_ok=True)
    groups = [f"round{i + 1}" for i in range(a.rounds)]
    with (
        throwaway_database(a.pg, "dispatcher_bench_") as url,
        redis_or_own(a.redis) as redis_url,
        tempfile.TemporaryDirectory() as d,
    ):
        sid = seed(url, a.n, [*groups, "callbacks"])
        flush_redis(redis_url)
        stack = Stack(redis_url, url, Path(d))
        try:
            stack.start_sandbox()
            bare = start_ceiling(stack, a.processes, a.threads)
            with frozen([bare]):
                pipe = start_pipeline(stack, sid, a.processes, a.threads)
            pipe_side = [pipe[k] for k in ("workers", "scheduler", "webhooks")]
            ceilings: list[dict[str, Any]] = []

            def ceiling() -> None:
                with frozen(pipe_side):
                    ceilings.append(measure_ceiling(stack, bare, a.n, a.timeout))

            def pipeline(group: str, callbacks: bool) -> dict[str, Any]:
                with frozen([bare]):
                    return measure_pipeline(
                        stack, pipe, sid, group, a.n, callbacks, a.timeout, a.profile
                    )

            # the machine's speed drifts by tens of % between minutes (CPU frequency,
            # neighbours): every pipeline run sits between two ceiling runs and is compared
            # with their mean; the side not being measured is frozen
            ceiling()
            plain = []
            for g in groups:
                plain.append(pipeline(g, callbacks=False))
                ceiling()
            with_callbacks = pipeline("callbacks", callbacks=True)
            ceiling()
        finally:
            stack.close()
            flush_redis(redis_url)
            if a.keep_logs:
                shutil.copytree(d, a.keep_logs, dirs_exist_ok=True)
    runs = [_versus(run, ceilings[i], ceilings[i + 1]) for i, run in enumerate(plain)]
    ratios = [r["ratio_to_ceiling"] for r in runs]
    out: dict[str, Any] = {
        "n": a.n,
        "processes": a.processes,
        "threads": a.threads,
        "rounds": a.rounds,
        "ceiling_bare_actor": {
            "msgs_per_s": [round(c["msgs_per_s"], 1) for c in ceilings],
            "cpu_ms_per_msg_total": [c["cpu_ms_per_msg_total"] for c in ceilings],
            "runs": [_round(c) for c in ceilings],
        },
        "pipeline_without_callbacks": {
            "msgs_per_s": [round(r["msgs_per_s"], 1) for r in runs],
            "ratios": ratios,
            "ratio_to_ceiling": statistics.median(ratios),
            "goal_ratio_ge_60pct": statistics.median(ratios) >= 0.6,
            "duplicates": sum(r["duplicates"] for r in runs),
            "runs": runs,
        },
        "pipeline_with_callbacks": _versus(with_callbacks, ceilings[-2], ceilings[-1]),
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }
    print(json.dumps(out, indent=2))


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
