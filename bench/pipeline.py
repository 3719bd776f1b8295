"""Dispatch pipeline throughput on real Redis + PostgreSQL + the sandbox carrier (server mode).

    python bench/pipeline.py [--n 2000] [--rounds 3] [--processes 2] [--threads 8]
                             [--redis redis://127.0.0.1:6379/14] [--pg postgresql://...]
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
Redis DB ``--redis`` is flushed before and after; the PostgreSQL database is a throw-away one,
dropped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python bench/pipeline.py` puts bench/, not the root, on the path
    sys.path.insert(0, str(ROOT))

from tests.harness import (  # noqa: E402 - the integration tests' process management
    Carrier,
    Proc,
    Stack,
    flush_redis,
    wait_for,
)
from tests.servers import PG_DSN, throwaway_database  # noqa: E402

SEED = ROOT / "dispatcher" / "data" / "usa2p_seed004.json"
SERVICE_SID = "MG" + "0" * 31 + "1"
TEMPLATE = "Your order has shipped."
BODY = "Acme Corporation: Your order has shipped. Reply STOP to opt out."
WARM = 320  # >= one batch (DISPATCHER_DELIVER_BATCH) per worker thread (workers warm up at boot)


def phone(i: int) -> str:
    return f"+1646{2_000_000 + i:07d}"


# ------------------------------------------------------------------------------------ servers
def wait_count(carrier: Carrier, stack: Stack, n: int, timeout: float) -> float:
    """Block until the carrier holds >= n messages; return the perf_counter at that moment."""
    wait_for(lambda: carrier.count() >= n, timeout, f"the carrier to hold {n} messages",
             every=0.02, check=stack.check_alive)
    return time.perf_counter()


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of these processes (Linux /proc; 0 for those gone)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / _TICK


def group_cpu_seconds(proc: Proc) -> float:
    """CPU used so far by a process and everything it forked (live members only)."""
    return cpu_seconds([proc.pid, *proc.children()])


def pg_backend_pids(url: str) -> list[int]:
    import psycopg

    name = url.rsplit("/", 1)[1]
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        return [r[0] for r in conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s", (name,))]


def redis_server_pid(url: str) -> int | None:
    import redis

    r = redis.Redis.from_url(url)
    try:
        return int(r.info("server")["process_id"])
    except Exception:  # noqa: BLE001 - remote Redis: no CPU accounting
        return None
    finally:
        r.close()


class CpuMeter:
    """CPU seconds per component between start() and stop(): our process groups, the bench
    process itself, the PostgreSQL backends of the bench database and the Redis server (shared
    with other users of that server: an upper bound)."""

    def __init__(self, procs: dict[str, Proc], redis_url: str, db_url: str | None = None) -> None:
        self.procs = procs
        self.db_url = db_url
        self.redis_pid = redis_server_pid(redis_url)
        self.before: dict[str, float] = {}

    def _snap(self) -> dict[str, float]:
        snap = {name: group_cpu_seconds(p) for name, p in self.procs.items()}
        snap["bench"] = cpu_seconds([os.getpid()])
        if self.db_url:
            snap["postgres_backends"] = cpu_seconds(pg_backend_pids(self.db_url))
        if self.redis_pid:
            snap["redis_server"] = cpu_seconds([self.redis_pid])
        return snap

    def start(self) -> None:
        self.before = self._snap()

    def stop(self, n: int) -> dict[str, Any]:
        after = self._snap()
        used = {k: after[k] - self.before.get(k, 0.0) for k in after}
        return {"cpu_s": {k: round(v, 2) for k, v in used.items()},
                "cpu_ms_per_msg": {k: round(1000 * v / n, 2) for k, v in used.items()},
                "cpu_ms_per_msg_total": round(1000 * sum(used.values()) / n, 2)}


def wait_idle(procs: list[Proc], timeout: float = 120.0, window: float = 0.5,
              busy_s: float = 0.02) -> None:
    """Until these process groups use under ``busy_s`` of CPU in ``window`` seconds (the warm-up's
    status callbacks drained), so the measured run does not pay for them."""
    deadline = time.monotonic() + timeout
    last = sum(group_cpu_seconds(p) for p in procs)
    while time.monotonic() < deadline:
        time.sleep(window)  # a sampling interval of CPU accounting, not a settle-down guess
        now = sum(group_cpu_seconds(p) for p in procs)
        if now - last < busy_s:
            return
        last = now
    raise TimeoutError("the stack did not go idle after the warm-up")


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
    workers = stack.start("bare_workers", [
        sys.executable, "-m", "dramatiq", "bench._bare_actor", "--processes", str(processes),
        "--threads", str(threads)], {"BENCH_REDIS_URL": stack.redis_url,
                                     "BENCH_SANDBOX_URL": carrier.url})
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
    return {"seconds": t1 - t0, "msgs_per_s": n / (t1 - t0), "carrier_span_msgs_per_s":
            span_rate(records), "received": len(records), **cpu}


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
            campaign, _ = registry.import_campaign(s, doc, brand=brand, policy={
                "campaign_status": "VERIFIED", "window_limit": 1_000_000_000,
                "window_seconds": 1, "quiet_hours_policy": "none",
                "rate_limits": {"att": {"mps": 10_000, "msg_class": "A"},
                                "tmobile": {"brand_tier": "TOP"}},
            })
            conn = s.connection()
            people = [(phone(k * n + i), g) for k, g in enumerate(groups) for i in range(n)]
            people += [(phone(900_000 + i), "warm") for i in range(WARM)]
            conn.execute(insert(Contact.__table__), [  # type: ignore[attr-defined]
                {"phone": p, "name": f"Customer {k}", "attributes": {"grp": g},
                 "created_at": now, "updated_at": now} for k, (p, g) in enumerate(people)])
            ids = [r[0] for r in conn.execute(Contact.__table__.select()  # type: ignore[attr-defined]
                                              .with_only_columns(Contact.__table__.c.id))]  # type: ignore[attr-defined]
            conn.execute(insert(ConsentEvent.__table__), [  # type: ignore[attr-defined]
                {"contact_id": cid, "brand_id": brand.id, "campaign_id": None,
                 "action": "grant", "consent_type": "express", "source": "web_form",
                 "evidence_text": "Checked the box at example.com/signup v3",
                 "actor": "bench", "occurred_at": now, "recorded_at": now} for cid in ids])
            return campaign.sid
    finally:
        db.dispose()


def launch(url: str, sid: str, group: str) -> int:
    from dispatcher import runs
    from dispatcher.store import Database

    db = Database(url)
    try:
        with db.session() as s:
            run, _ = runs.launch(s, runs.LaunchRequest(
                campaign=sid, template=TEMPLATE,
                audience={"kind": "segment", "query": f"grp={group}"}), now=datetime.now(UTC))
            return int(run.id)  # type: ignore[arg-type]
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


@contextmanager
def py_spy(pid: int, out: Path, rate: int = 100) -> Iterator[subprocess.Popen[bytes] | None]:
    """Sample only threads holding the GIL (``--gil``): where the CPU goes, not the waits."""
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(exe).exists():
        print("py-spy not installed: no profile", file=sys.stderr)
        yield None
        return
    p = subprocess.Popen([exe, "record", "--pid", str(pid), "--subprocesses", "--rate",  # noqa: S603
                          str(rate), "--format", "raw", "--output", str(out), "--nonblocking",
                          "--gil"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         start_new_session=True)
    try:
        yield p
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGINT)
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(5)


def start_pipeline(stack: Stack, sid: str, processes: int, threads: int) -> dict[str, Proc]:
    """Webhooks, scheduler and workers, warmed by a small run; returns them by role."""
    url = stack.database_url
    carrier = stack.carrier
    assert carrier is not None
    webhooks = stack.start_webhooks()
    # the CLI's defaults but the tick (the harness's test defaults reconcile every second)
    scheduler = stack.start_scheduler(tick=0.2, leader_ttl=10.0, reconcile=10.0,
                                      lost_after=60.0, sending_lease=90.0, status_after=300.0)
    workers = stack.start_workers(processes=processes, threads=threads)
    warm = launch(url, sid, "warm")
    wait_count(carrier, stack, WARM, 120)
    wait_for(lambda: outbox_states(url, warm).get("sending", 0) == 0, 30, "warm-up",
             check=stack.check_alive)
    carrier.reset()
    return {"sandbox": stack.procs["sandbox"], "workers": workers, "scheduler": scheduler,
            "webhooks": webhooks}


def measure_pipeline(stack: Stack, procs: dict[str, Proc], sid: str, group: str, n: int,
                     callbacks: bool, timeout: float, profile: Path | None) -> dict[str, Any]:
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
    wait_for(lambda: outbox_states(url, run_id).get("sending", 0) == 0, 60,
             "the last sends to be recorded", check=stack.check_alive)
    per_phone = Counter(r["to"] for r in records)
    out = {"seconds": t1 - t0, "msgs_per_s": n / (t1 - t0),
           "carrier_span_msgs_per_s": span_rate(records), "received": len(records),
           "duplicates": sum(1 for v in per_phone.values() if v > 1),
           "outbox_states": outbox_states(url, run_id), **cpu}
    carrier.faults(drop_callbacks=0.0)
    wait_idle(list(procs.values()))  # callbacks drained: the stack may be frozen now
    return out


@contextmanager
def frozen(procs: list[Proc]) -> Iterator[None]:
    """SIGSTOP these process groups for the block: the side not being measured takes no CPU
    (idle Dramatiq consumers poll Redis; the scheduler ticks)."""
    for p in procs:
        os.killpg(p.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for p in procs:
            os.killpg(p.pid, signal.SIGCONT)


# ------------------------------------------------------------------------------------ main
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--redis", default="redis://127.0.0.1:6379/14")
    p.add_argument("--pg", default=PG_DSN)
    p.add_argument("--timeout", type=float, default=600.0)
    p.add_argument("--rounds", type=int, default=3,
                   help="pipeline runs without callbacks, each between two ceiling runs")
    p.add_argument("--profile", type=Path, default=None,
                   help="directory for a py-spy raw profile of the pipeline's workers")
    p.add_argument("--keep-logs", type=Path, default=None, help="copy process logs here")
    a = p.parse_args()
    if a.profile:
        a.profile.mkdir(parents=True, exist_ok=True)
    groups = [f"round{i + 1}" for i in range(a.rounds)]
    with throwaway_database(a.pg, "dispatcher_bench_") as url, tempfile.TemporaryDirectory() as d:
        sid = seed(url, a.n, [*groups, "callbacks"])
        flush_redis(a.redis)
        stack = Stack(a.redis, url, Path(d))
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
                    return measure_pipeline(stack, pipe, sid, group, a.n, callbacks, a.timeout,
                                            a.profile)

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
            flush_redis(a.redis)
            if a.keep_logs:
                shutil.copytree(d, a.keep_logs, dirs_exist_ok=True)
    runs = [_versus(run, ceilings[i], ceilings[i + 1]) for i, run in enumerate(plain)]
    ratios = [r["ratio_to_ceiling"] for r in runs]
    out: dict[str, Any] = {
        "n": a.n, "processes": a.processes, "threads": a.threads, "rounds": a.rounds,
        "ceiling_bare_actor": {
            "msgs_per_s": [round(c["msgs_per_s"], 1) for c in ceilings],
            "cpu_ms_per_msg_total": [c["cpu_ms_per_msg_total"] for c in ceilings],
            "runs": [_round(c) for c in ceilings]},
        "pipeline_without_callbacks": {
            "msgs_per_s": [round(r["msgs_per_s"], 1) for r in runs],
            "ratios": ratios, "ratio_to_ceiling": statistics.median(ratios),
            "goal_ratio_ge_60pct": statistics.median(ratios) >= 0.6,
            "duplicates": sum(r["duplicates"] for r in runs), "runs": runs},
        "pipeline_with_callbacks": _versus(with_callbacks, ceilings[-2], ceilings[-1]),
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }
    print(json.dumps(out, indent=2))


def _versus(run: dict[str, Any], before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """A pipeline run against the mean of the ceiling runs either side of it."""
    ceiling = {k: (before[k] + after[k]) / 2 if before[k] and after[k] else None
               for k in ("msgs_per_s", "carrier_span_msgs_per_s", "cpu_ms_per_msg_total")}
    ratio = run["msgs_per_s"] / ceiling["msgs_per_s"]
    span = (run["carrier_span_msgs_per_s"] / ceiling["carrier_span_msgs_per_s"]
            if run["carrier_span_msgs_per_s"] and ceiling["carrier_span_msgs_per_s"] else None)
    return {**_round(run), "ceiling_msgs_per_s": round(ceiling["msgs_per_s"], 1),
            "ratio_to_ceiling": round(ratio, 3),
            "ratio_carrier_span": round(span, 3) if span else None,
            "cpu_ms_per_msg_ratio_to_ceiling": round(
                run["cpu_ms_per_msg_total"] / ceiling["cpu_ms_per_msg_total"], 2)}


def _round(d: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in d.items()}


if __name__ == "__main__":
    main()
