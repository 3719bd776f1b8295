"""Process accounting for the benchmarks that run the product as separate processes: CPU per
process group from /proc (Linux), PostgreSQL backends and the Redis server included, waiting for
a stack to go idle, freezing the side not being measured, py-spy around a measurement."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.harness import Proc
from tests.servers import PG_DSN

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_times(pids: list[int]) -> tuple[float, float]:
    """(user, system) CPU seconds of these processes (Linux /proc; 0 for those gone)."""
    user = system = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        user += int(fields[11])  # utime, stime (fields 14 and 15)
        system += int(fields[12])
    return user / _TICK, system / _TICK


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of these processes."""
    return sum(cpu_times(pids))


def group_cpu_seconds(proc: Proc) -> float:
    """CPU used so far by a process and everything it forked (live members only)."""
    return cpu_seconds([proc.pid, *proc.children()])


def pg_backend_pids(url: str) -> list[int]:
    import psycopg

    name = url.rsplit("/", 1)[1]
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        return [
            r[0]
            for r in conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", (name,))
        ]


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
        return {
            "cpu_s": {k: round(v, 2) for k, v in used.items()},
            "cpu_ms_per_msg": {k: round(1000 * v / n, 2) for k, v in used.items()},
            "cpu_ms_per_msg_total": round(1000 * sum(used.values()) / n, 2),
        }


def wait_idle(
    procs: list[Proc], timeout: float = 60.0, window: float = 0.5, busy_s: float = 0.08
) -> bool:
    """Until these process groups use under ``busy_s`` of CPU in ``window`` seconds (the last
    run's status callbacks drained), so the next run does not pay for them.  An idle pipeline
    stack still uses ~10 % of a core (the 0.2 s tick, Dramatiq's 100 ms queue polls).  After
    ``timeout`` it says on stderr which were still busy and returns False: the bench goes on (a
    measurement with some background beats losing the whole run)."""
    deadline = time.monotonic() + timeout
    last = {p.name: group_cpu_seconds(p) for p in procs}
    while time.monotonic() < deadline:
        time.sleep(window)  # a sampling interval of CPU accounting, not a settle-down guess
        now = {p.name: group_cpu_seconds(p) for p in procs}
        used = {k: now[k] - last[k] for k in now}
        if sum(used.values()) < busy_s:
            return True
        last = now
    print(
        f"not idle after {timeout:.0f} s, CPU s per {window} s: "
        f"{ {k: round(v, 3) for k, v in used.items()} }",
        file=sys.stderr,
    )
    return False


@contextmanager
def py_spy(pid: int, out: Path, rate: int = 100) -> Iterator[subprocess.Popen[bytes] | None]:
    """Sample only threads holding the GIL (``--gil``): where the CPU goes, not the waits."""
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(exe).exists():
        print("py-spy not installed: no profile", file=sys.stderr)
        yield None
        return
    p = subprocess.Popen(
        [
            exe,
            "record",
            "--pid",
            str(pid),
            "--subprocesses",
            "--rate",  # noqa: S603
            str(rate),
            "--format",
            "raw",
            "--output",
            str(out),
            "--nonblocking",
            "--gil",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
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
