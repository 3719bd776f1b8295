"""The scheduler: APScheduler 3 with its SQLAlchemy job store on the product's database.

Jobs: ``tick`` (start due runs, release due rows, finish runs; every second), ``reconcile``
(lost queue messages, dead sends, unknown rows; every 10 s), ``observe`` (gauges) and ``hooks``
(POST the producers' webhook events, dispatcher.hooks; every 2 s, under a lock of its own: a
slow receiver never holds up the tick).  Many schedulers may run; one leads: a Redis lock
(redis-py's ``Lock``, renewed before every job) decides, and the others stand by and take over
when it expires.  Every job is a compare-and-set over the database besides, so even two leaders
could not fan a run out twice or send a row twice.

On PostgreSQL a ``WakeListener`` thread also ``LISTEN``s for ``dispatcher.runs.WAKE_CHANNEL``: a
run launched (or resumed) to start now is fanned out at once, not at the next tick.  It is only
an accelerator: without it (connection lost, SQLite) the regular tick does the same work.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from redis.exceptions import LockError
from redis.lock import Lock

from dispatcher import keys
from dispatcher.hooks import Deliverer
from dispatcher.release_loop import ReleaseConfig, ReleaseLoop
from dispatcher.runs import WAKE_CHANNEL

log = logging.getLogger(__name__)
_active: dict[str, Scheduler] = {}


class LeaderLock:
    """Who leads: redis-py's ``Lock`` on ``keys.scheduler_leader_key()`` with a TTL, holding
    this scheduler's name (``host:pid:random``, so who leads is visible in Redis).

    ``acquire()`` runs before every job: while this scheduler holds the lock it resets the TTL
    (``Lock.reacquire``, compare-and-set on the name); once the lock has expired or another
    took it, it takes it if free (``SET NX PX``).  A leader that stops renewing (killed, cut
    off from Redis) loses the lead after the TTL; a standby takes over at its next job.  Redis
    unreachable: False (nobody leads until it is back).  Calls from several threads (the tick,
    the hooks job, the wake listener) are serialised."""

    def __init__(self, redis: Any, ttl_s: float, name: str | None = None) -> None:
        self.token = name or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        self._lock: Lock = redis.lock(
            keys.scheduler_leader_key(), timeout=ttl_s, blocking=False, thread_local=False
        )
        self._mutex = threading.Lock()

    def acquire(self) -> bool:
        with self._mutex:
            try:
                try:
                    return self._lock.reacquire()  # LockError: never held, or no longer ours
                except LockError:
                    return bool(self._lock.acquire(token=self.token))
            except Exception:  # noqa: BLE001 - Redis down: nobody leads until it is back
                log.warning("leader lock: Redis unavailable", exc_info=True)
                return False

    def release(self) -> None:
        """Give up the lead at once (only if it is still ours)."""
        with self._mutex:
            try:
                self._lock.release()
            except Exception:  # noqa: BLE001 - not ours any more, or Redis down: it expires
                log.debug("leader lock: nothing to release", exc_info=True)


def _resilient_store(engine: Any) -> Any:
    """APScheduler's SQL job store, hardened: its scheduler loop calls ``update_job`` and
    ``get_next_run_time`` unguarded, so one dropped database connection there (PostgreSQL
    restart, ``pg_terminate_backend``) would end the scheduler thread for good.  Retry once on a
    fresh connection (the pool drops the dead one), then wake again in a second."""
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
    from sqlalchemy.exc import DBAPIError

    class ResilientSQLAlchemyJobStore(SQLAlchemyJobStore):  # type: ignore[misc]
        def _twice(self, fn: Any, *args: Any) -> Any:
            try:
                return fn(*args)
            except DBAPIError:
                log.warning("job store: database error; retrying once", exc_info=True)
                return fn(*args)

        def update_job(self, job: Any) -> None:
            try:
                self._twice(super().update_job, job)
            except DBAPIError:  # the next wake-up recomputes it
                log.warning("job store: could not update %s", job.id)

        def get_next_run_time(self) -> Any:
            from datetime import UTC, datetime, timedelta

            try:
                return self._twice(super().get_next_run_time)
            except DBAPIError:
                return datetime.now(UTC) + timedelta(seconds=1)

    return ResilientSQLAlchemyJobStore(engine=engine)


class WakeListener:
    """A daemon thread on a psycopg connection of its own (autocommit) that ``LISTEN``s on
    ``WAKE_CHANNEL`` and calls ``wake()`` once per burst of notifications.  A lost connection
    is logged (INFO) and retried with backoff; ``stop()`` returns within about ``poll_s``."""

    def __init__(
        self,
        dsn: str,
        wake: Callable[[], None],
        *,
        poll_s: float = 1.0,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
    ) -> None:
        self.dsn = dsn
        self.wake = wake
        self.poll_s = poll_s
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.listening = threading.Event()  # set while LISTENing (tests wait on it)
        self.wakes = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="scheduler-wake", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("wake listener did not stop within %.0f s", timeout)
            self._thread = None

    def _run(self) -> None:
        delay = self.backoff_s
        while not self._stop.is_set():
            try:
                self._listen()
            except Exception as e:  # noqa: BLE001 - never fatal: the regular tick runs anyway
                if self.listening.is_set():  # it was up: a new outage, start the backoff over
                    delay = self.backoff_s
                self.listening.clear()
                if self._stop.is_set():
                    break
                log.info("wake listener: %s; retrying in %.1f s", _short(e), delay)
                self._stop.wait(delay)
                delay = min(delay * 2, self.max_backoff_s)
        self.listening.clear()

    def _listen(self) -> None:
        import psycopg

        # keepalives: a silently dead peer (no RST) would otherwise look like a quiet channel
        with psycopg.connect(
            self.dsn,
            autocommit=True,
            connect_timeout=10,
            keepalives=1,
            keepalives_idle=30,
            keepalives_interval=10,
            keepalives_count=3,
        ) as conn:
            conn.execute(f"LISTEN {WAKE_CHANNEL}")
            self.listening.set()
            while not self._stop.is_set():
                if not sum(1 for _ in conn.notifies(timeout=self.poll_s, stop_after=1)):
                    continue
                # coalesce a burst: whatever else already arrived is covered by this wake
                sum(1 for _ in conn.notifies(timeout=0))
                self.wakes += 1
                try:
                    self.wake()
                except Exception:  # noqa: BLE001 - a failed wake must not drop the connection
                    log.warning("wake listener: wake-up failed", exc_info=True)


def _short(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0]}" if lines else type(e).__name__


def _throttle_seeder(runtime: Any) -> Any:
    """The throttle's ``ensure_seeded``, or None for a runtime without a throttle."""
    throttle = getattr(runtime, "throttle", None)
    return None if throttle is None else throttle.ensure_seeded


def broker_epoch(redis: Any) -> object:
    """The broker Redis's epoch token (created if missing): one round trip."""
    p = redis.pipeline(transaction=True)
    p.set(keys.broker_epoch_key(), uuid.uuid4().hex, nx=True)
    p.get(keys.broker_epoch_key())
    return p.execute()[1]


def _job(scheduler_id: str, name: str) -> None:
    """Module-level job function (the SQL job store stores a reference, not a closure)."""
    s = _active.get(scheduler_id)
    if s is not None:
        s.run_job(name)


class Scheduler:
    def __init__(
        self,
        runtime: Any,
        enqueue_many: Any,
        *,
        tick_s: float = 1.0,
        reconcile_s: float = 10.0,
        leader_ttl_s: float = 10.0,
        resolve: Any = None,
        scheduler_id: str = "dispatcher",
        release: ReleaseConfig | None = None,
        refresh: Any = None,
        hooks_s: float = 2.0,
        deliverer: Deliverer | None = None,
    ) -> None:
        self.runtime = runtime
        self.id = scheduler_id
        self.tick_s = tick_s
        self.reconcile_s = reconcile_s
        self.hooks_s = hooks_s
        self.deliverer = deliverer or Deliverer(runtime.db, runtime.clock)
        self.lock = LeaderLock(runtime.redis, leader_ttl_s)
        self.release_loop = ReleaseLoop(
            runtime.db,
            runtime.clock,
            enqueue_many,
            resolve=resolve,
            metrics=runtime.metrics,
            config=release,
            refresh=refresh,
            epoch=lambda: broker_epoch(runtime.redis),
            seed_throttle=_throttle_seeder(runtime),
        )
        # the Redis daily gauges describe the deployment: served by the leader alone
        self._leading = False
        serve = getattr(runtime.metrics, "serve_daily", None)
        if serve is not None:
            serve(lambda: self._leading)
        self._aps: Any = None
        self.listener: WakeListener | None = None
        self._job_lock = threading.Lock()
        self._hooks_lock = threading.Lock()
        self.errors = 0

    @property
    def leading(self) -> bool:
        return self._leading

    def run_job(self, name: str) -> None:
        with self._hooks_lock if name == "hooks" else self._job_lock:
            self._leading = self.lock.acquire()
            if not self._leading:
                return
            try:
                if name == "tick":
                    self.release_loop.tick()
                elif name == "reconcile":
                    self.release_loop.reconcile()
                elif name == "observe":
                    self.release_loop.observe()
                elif name == "hooks":
                    self.deliverer.run()
            except Exception:  # noqa: BLE001 - a failed tick is retried by the next one
                self.errors += 1
                log.warning("scheduler job %s failed", name, exc_info=True)

    def start(self) -> None:
        from apscheduler.jobstores.memory import MemoryJobStore
        from apscheduler.schedulers.background import BackgroundScheduler

        _active[self.id] = self
        self._aps = BackgroundScheduler(
            # The SQL job store rewrites a job's row at every run: fine for the reconciler
            # (every 10 s), wasteful for the sub-second tick, which lives in memory (it is
            # re-added at every start anyway; its state is the outbox, not the job).
            jobstores={
                "default": _resilient_store(self.runtime.db.engine),
                "memory": MemoryJobStore(),
            },
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 30},
            timezone="UTC",
        )
        for name, every, store in (
            ("tick", self.tick_s, "memory"),
            ("reconcile", self.reconcile_s, "default"),
            ("observe", max(self.tick_s, 5.0), "memory"),
            ("hooks", self.hooks_s, "memory"),
        ):
            self._aps.add_job(
                _job,
                "interval",
                seconds=every,
                args=[self.id, name],
                id=f"{self.id}:{name}",
                replace_existing=True,
                jobstore=store,
            )
        for attempt in range(5):
            try:
                self._aps.start()
                break
            except Exception:  # noqa: BLE001 - two schedulers creating the job table at once
                if attempt == 4:
                    raise
                log.info("scheduler start raced another one creating its job table; retrying")
                time.sleep(0.2 * (attempt + 1))
        engine = self.runtime.db.engine
        if engine.dialect.name == "postgresql":
            # A wake-up runs the tick on the listener's thread, under the same job lock: asking
            # APScheduler to run the tick job now would be skipped (max_instances) whenever a
            # tick is in flight -- just when a launch may commit after it read the due runs.
            dsn = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
            self.listener = WakeListener(dsn, lambda: self.run_job("tick"))
            self.listener.start()

    def stop(self) -> None:
        if self.listener is not None:
            self.listener.stop()
            self.listener = None
        if self._aps is not None:
            self._aps.shutdown(wait=True)
            self._aps = None
        self.lock.release()
        self.deliverer.close()
        _active.pop(self.id, None)
