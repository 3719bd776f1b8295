"""Child processes the tests (and bench/) start, and the one ``wait_for``.

Every child runs in a process group of its own (``Proc``), so signalling the group also reaches
what it forked (Dramatiq's worker processes).  Every running ``Proc`` is in a registry that
``kill_all()`` empties — called at the end of a test session, on SIGTERM/SIGINT and at exit
(tests/servers.py) — so a run that is stopped leaves no process behind.

A run that is SIGKILLed cannot clean up after itself: its children carry ``OWNER_ENV`` (which
process started them, with its start time) in their environment, and ``sweep_orphans()`` — at
the start of the next test session — kills the groups whose owner is gone.  No pytest here:
the benchmarks use this module too.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    import psutil

ROOT = Path(__file__).resolve().parents[1]
OWNER_ENV = "DISPATCHER_TEST_OWNER"
T = TypeVar("T")


# ------------------------------------------------------------------------------------ waiting
def wait_for(
    cond: Callable[[], T],
    timeout: float = 10.0,
    what: str = "condition",
    every: float = 0.1,
    check: Callable[[], None] | None = None,
) -> T:
    """Poll ``cond`` until it returns a truthy value (returned) or ``timeout`` passes (raises
    ``TimeoutError``).  The first polls come quickly (5 ms) and the interval grows to ``every``,
    so a condition that is met at once costs no waiting and a long wait costs little CPU.
    ``check`` runs every second (e.g. "are my processes still alive?")."""
    deadline = time.monotonic() + timeout
    checked = time.monotonic()
    pause = min(0.005, every)
    while True:
        v = cond()
        if v:
            return v
        now = time.monotonic()
        if now > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        if check is not None and now - checked > 1.0:
            check()
            checked = now
        time.sleep(pause)  # the polling interval of a wait with a deadline
        pause = min(pause * 1.5, every)


_PORTS = "dispatcher-test-ports"
_PORT_TERM = 600  # seconds a reservation holds (a server binds its port within seconds)


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A loopback port for a server we are about to start.  Between this answer and the
    server's bind, nobody else may take it: so it is below the kernel's ephemeral range (no
    outgoing connection gets it as its local port, as ``bind(0)``'s answer could) and reserved
    against every other test run on this host (a file per port and 10-minute term in
    ``$TMPDIR/dispatcher-test-ports``, created with O_EXCL)."""
    marks = Path(tempfile.gettempdir()) / _PORTS
    marks.mkdir(exist_ok=True)
    hi = _ephemeral_low()
    lo = max(1024, hi - 12_000)
    term = int(time.time() // _PORT_TERM)
    for _ in range(500):
        port = lo + secrets.randbelow(hi - lo)  # not `random`: a test may have seeded it
        try:
            os.close(os.open(marks / f"{port}.{term}", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:  # somebody listens there
                continue
        return port
    raise RuntimeError(f"no free port below {hi} in 500 tries")


def _expire_port_marks() -> None:
    term = int(time.time() // _PORT_TERM)
    for mark in (Path(tempfile.gettempdir()) / _PORTS).glob("*.*"):
        if mark.suffix[1:].isdigit() and int(mark.suffix[1:]) < term - 1:
            mark.unlink(missing_ok=True)


# ------------------------------------------------------------------------------------ owners
def _host_tag() -> str:
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:4]


def _start_time(pid: int) -> int | None:
    """Start time of a live process (None: gone, or a zombie its parent has not reaped)."""
    import psutil

    try:
        p = psutil.Process(pid)
        return None if p.status() == psutil.STATUS_ZOMBIE else int(p.create_time())
    except psutil.Error:
        return None


def owner_tag(pid: int | None = None) -> str:
    """``<host>_<pid>_<start time>`` of this process: who owns a child or a database.  The start
    time tells a dead owner from a new process that got its pid."""
    pid = os.getpid() if pid is None else pid
    return f"{_host_tag()}_{pid}_{_start_time(pid)}"


def owner_alive(tag: str) -> bool:
    """Whether the process named by ``owner_tag`` still runs (True for another host's tag:
    nothing here can tell)."""
    try:
        host, pid, started = tag.split("_")
        pid_n, started_n = int(pid), int(started)
    except ValueError:
        return True
    if host != _host_tag():
        return True
    now = _start_time(pid_n)
    return now is not None and abs(now - started_n) <= 1


_REDIS_DIR = "dispatcher-redis-"
_TAG_IN_DIR = re.compile(re.escape(_REDIS_DIR) + r"([0-9a-f]{4}_\d+_\d+)-")


def _owner_of(p: psutil.Process) -> str | None:
    """The owner tag of one of our children: in its environment, or — redis-server overwrites
    its environment with its process title — in the name of its working directory."""
    tag = p.environ().get(OWNER_ENV)
    if tag is None and p.name() == "redis-server":
        m = _TAG_IN_DIR.search(p.cwd())
        tag = m[1] if m else None
    return tag


def sweep_orphans() -> int:
    """Kill the process groups of children whose owner is dead, and remove their redis-server
    directories: what a SIGKILLed test run left.  Returns how many processes were found."""
    import psutil

    me = os.getuid()
    groups: set[int] = set()
    found = 0
    for p in psutil.process_iter(["uids"]):
        try:
            if p.info["uids"] is None or p.info["uids"].real != me or p.pid == os.getpid():
                continue
            tag = _owner_of(p)
        except psutil.Error:
            continue
        if tag and not owner_alive(tag):
            found += 1
            with contextlib.suppress(OSError):
                groups.add(os.getpgid(p.pid))
    for g in groups:
        if g > 1 and g != os.getpgid(0):
            with contextlib.suppress(OSError):
                os.killpg(g, signal.SIGKILL)
    for d in Path(tempfile.gettempdir()).glob(_REDIS_DIR + "*"):
        m = _TAG_IN_DIR.match(d.name)
        if m and not owner_alive(m[1]):
            shutil.rmtree(d, ignore_errors=True)
    _expire_port_marks()
    return found


# ------------------------------------------------------------------------------------ processes
_running: dict[int, Proc] = {}
_lock = threading.Lock()
_exit_hook: list[bool] = []


def _register_exit_hook() -> None:
    if not _exit_hook:
        atexit.register(kill_all)
        _exit_hook.append(True)


class Proc:
    """One child in its own process group; output goes to ``<log_dir>/<name>.log``."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        env: dict[str, str],
        log_dir: Path,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("ab")
        self.started = time.time()
        _register_exit_hook()
        with _lock:  # registered before anyone can interrupt between start and registration
            self.popen = subprocess.Popen(  # noqa: S603 - our interpreter, our arguments
                self.argv,
                env={**env, OWNER_ENV: owner_tag()},
                cwd=cwd or ROOT,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            _running[self.popen.pid] = self

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def children(self) -> list[int]:
        import psutil

        try:
            return [c.pid for c in psutil.Process(self.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    def kill9(self) -> None:
        """SIGKILL the whole group (the process and everything it forked)."""
        self.signal_group(signal.SIGKILL)
        self.popen.wait(10)
        self._done()

    def stop(self, grace: float = 5.0) -> None:
        if self.popen.poll() is None:
            self.signal_group(signal.SIGTERM)
            self.signal_group(signal.SIGCONT)  # a frozen group (bench/_procs.frozen) too
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(grace)
        # the group may outlive its leader (forked workers): make sure it is gone
        self.signal_group(signal.SIGKILL)
        if self.popen.poll() is None:
            self.popen.wait(10)
        self._done()

    def _done(self) -> None:
        with _lock:
            _running.pop(self.popen.pid, None)
        if not self._log.closed:
            self._log.close()


def kill_all(grace: float = 3.0) -> list[str]:
    """Stop every ``Proc`` still running (SIGTERM to all groups at once, SIGKILL after
    ``grace``).  Returns their names."""
    with _lock:
        procs = list(_running.values())
    for p in procs:
        if p.alive():
            p.signal_group(signal.SIGTERM)
            p.signal_group(signal.SIGCONT)
    deadline = time.monotonic() + grace
    for p in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.popen.wait(max(0.0, deadline - time.monotonic()))
    for p in procs:
        p.stop(grace=0)
    return [p.name for p in procs]


# ------------------------------------------------------------------------------------ redis
class RedisServer:
    """A redis-server of our own on a free port, in a directory of its own (no persistence;
    named after its owner, see ``sweep_orphans``), restartable.  Its log goes to ``log_dir``
    (default: that directory).  ``stop()`` kills it and removes the directory."""

    def __init__(self, log_dir: Path | None = None, port: int | None = None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=f"{_REDIS_DIR}{owner_tag()}-"))
        self.log_dir = log_dir or self.dir
        self.port = port or free_port()
        self._fixed_port = port is not None
        self.proc: Proc | None = None

    @property
    def url(self) -> str:
        return self.url_db(0)

    def url_db(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> RedisServer:
        for _attempt in range(5):
            self.proc = Proc(
                f"redis-{self.port}",
                [
                    "redis-server",
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--dir",
                    str(self.dir),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--daemonize",
                    "no",
                    "--maxmemory-policy",
                    "noeviction",
                ],
                dict(os.environ),
                self.log_dir,
            )
            try:
                wait_for(self._ping, 10, f"redis-server on port {self.port}")
                return self
            except RuntimeError:
                # another process took the free port between our look and redis' bind
                if self._fixed_port or "Address already in use" not in self.proc.tail():
                    raise
                self.port = free_port()
        raise RuntimeError("redis-server found no free port in 5 attempts")

    def _ping(self) -> bool:
        import redis

        if self.proc is not None and not self.proc.alive():
            raise RuntimeError(f"redis-server exited:\n{self.proc.tail()}")
        r = redis.Redis(port=self.port, socket_timeout=0.5)
        try:
            return bool(r.ping())
        except redis.RedisError:
            return False
        finally:
            r.close()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def restart(self) -> float:
        """Stop it for real (state lost: no persistence) and start it again on the same port.
        Returns the time (epoch seconds) at which it was down."""
        assert self.proc is not None
        self.proc.kill9()
        down = time.time()
        self._fixed_port = True
        self.start()
        return down


def have_redis_server() -> bool:
    return shutil.which("redis-server") is not None
