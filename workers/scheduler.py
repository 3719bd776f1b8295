"""The scheduler: APScheduler 3 with its SQLAlchemy job store on the product's database.

Jobs: ``tick`` (start due runs, release due rows, finish runs; every second), ``reconcile``
(lost queue messages, dead sends, unknown rows; every 10 s) and ``observe`` (gauges).  Many
schedulers may run; one leads: a Redis lock (``SET NX PX``, renewed every tick) decides, and the
others stand by and take over when it expires.  Every job is a compare-and-set over the
database besides, so even two leaders could not fan a run out twice or send a row twice.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from typing import Any

from dispatcher import keys
from dispatcher.housekeeping import Housekeeper, HousekeepingConfig

log = logging.getLogger(__name__)
_active: dict[str, Scheduler] = {}

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) and 1 or 0
"""


class LeaderLock:
    def __init__(self, redis: Any, ttl_s: float, name: str | None = None) -> None:
        self.redis = redis
        self.ttl_ms = int(ttl_s * 1000)
        # who leads is visible in Redis: host:pid:random
        self.token = name or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        self._renew = redis.register_script(_RENEW)

    def acquire(self) -> bool:
        try:
            return bool(self._renew(keys=[keys.scheduler_leader_key()],
                                    args=[self.token, self.ttl_ms]))
        except Exception:  # noqa: BLE001 - Redis down: nobody leads until it is back
            log.warning("leader lock: Redis unavailable", exc_info=True)
            return False

    def release(self) -> None:
        try:
            if self.redis.get(keys.scheduler_leader_key()) in (self.token, self.token.encode()):
                self.redis.delete(keys.scheduler_leader_key())
        except Exception:  # noqa: BLE001
            pass


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


def _job(scheduler_id: str, name: str) -> None:
    """Module-level job function (the SQL job store stores a reference, not a closure)."""
    s = _active.get(scheduler_id)
    if s is not None:
        s.run_job(name)


class Scheduler:
    def __init__(self, runtime: Any, enqueue_many: Any, *, tick_s: float = 1.0,
                 reconcile_s: float = 10.0, leader_ttl_s: float = 10.0,
                 resolve: Any = None, scheduler_id: str = "dispatcher",
                 housekeeping: HousekeepingConfig | None = None,
                 refresh: Any = None) -> None:
        self.runtime = runtime
        self.id = scheduler_id
        self.tick_s = tick_s
        self.reconcile_s = reconcile_s
        self.lock = LeaderLock(runtime.redis, leader_ttl_s)
        self.housekeeper = Housekeeper(runtime.db, runtime.clock, enqueue_many,
                                       resolve=resolve, metrics=runtime.metrics,
                                       config=housekeeping, refresh=refresh)
        self._aps: Any = None
        self._leading = False
        self._job_lock = threading.Lock()
        self.errors = 0

    @property
    def leading(self) -> bool:
        return self._leading

    def run_job(self, name: str) -> None:
        with self._job_lock:
            self._leading = self.lock.acquire()
            if not self._leading:
                return
            try:
                if name == "tick":
                    self.housekeeper.tick()
                elif name == "reconcile":
                    self.housekeeper.reconcile()
                elif name == "observe":
                    self.housekeeper.observe()
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
            jobstores={"default": _resilient_store(self.runtime.db.engine),
                       "memory": MemoryJobStore()},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 30},
            timezone="UTC",
        )
        for name, every, store in (("tick", self.tick_s, "memory"),
                                   ("reconcile", self.reconcile_s, "default"),
                                   ("observe", max(self.tick_s, 5.0), "memory")):
            self._aps.add_job(_job, "interval", seconds=every, args=[self.id, name],
                              id=f"{self.id}:{name}", replace_existing=True, jobstore=store)
        for attempt in range(5):
            try:
                self._aps.start()
                break
            except Exception:  # noqa: BLE001 - two schedulers creating the job table at once
                if attempt == 4:
                    raise
                log.info("scheduler start raced another one creating its job table; retrying")
                time.sleep(0.2 * (attempt + 1))

    def stop(self) -> None:
        if self._aps is not None:
            self._aps.shutdown(wait=True)
            self._aps = None
        self.lock.release()
        _active.pop(self.id, None)
