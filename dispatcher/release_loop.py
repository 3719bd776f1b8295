"""The release loop: the scheduler's jobs, as plain functions over the database: start due runs
(fan-out), release due outbox rows to the queue, finish runs, and reconcile what a crash or a
flushed Redis lost.

Safe on any number of hosts at once: every step is a compare-and-set (``UPDATE ... WHERE state``
with ``RETURNING``), so two hosts can never both release, fan out or resolve one row.

The queue is not the source of truth: a row is *carried* by a queue message when ``enqueued_at``
is set.  A row whose due time passed ``lost_after_s`` ago and that is still ``queued`` lost its
message (Redis flushed, a worker died before acking): it is released again.  A row ``sending``
for longer than ``sending_lease_s`` belongs to a worker that died mid-send: it becomes
``unknown`` and is resolved by asking the carrier before anything is resent.

**Redis lost its keys** (FLUSHALL, a restart without persistence, a failover): the broker's
epoch key (``epoch``, read at every tick) changed, so every queue message written before it is
gone.  The tick then forgets every carried row at once (``forget_lost`` with ``before = now``)
and releases them in the same tick, instead of waiting ``lost_after_s``.  Rows ``sending``
belong to live workers (a flush kills none; their halt check sees the changed epoch and asks the
database); a dead one's rows meet the lease as before.  A row released twice (its new message
written between the flush and the tick) is claimed once: the claim is a compare-and-set.

**Silent ``sent`` rows** are asked of the carrier after ``status_after_s`` while callbacks
arrive, and after only ``quick_status_after_s`` once callbacks stopped (the webhooks were down
or unreachable: no final status recorded for ``callbacks_quiet_s`` while rows older than that
are still ``sent``) or once a row sent ``callbacks_quiet_s`` after it heard its callback (its
own was lost while the webhooks were down), at most ``refresh_per_s`` carrier calls per second
of reconcile interval.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlmodel import col

from dispatcher import outbox, run_report, runs
from dispatcher.clock import Clock, as_utc
from dispatcher.delivery.config import BOOK_HORIZON_S
from dispatcher.delivery.results import Outcome, Result
from dispatcher.guard_check import campaign_thresholds
from dispatcher.metrics import Metrics
from dispatcher.models import Brand, Campaign, Run
from dispatcher.store import Database
from dispatcher.throttle.policy import sender_mps, tmobile_daily_cap

log = logging.getLogger(__name__)
T = outbox.T
R = Run.__table__  # type: ignore[attr-defined]
EnqueueMany = Callable[[list[int]], None]
#: states only a carrier's status brings (a callback, or a fetch)
_CALLBACK_FINAL = (outbox.DELIVERED, outbox.UNDELIVERED, outbox.FAILED)


@dataclass
class ReleaseConfig:
    release_batch: int = 1000  # rows released per tick
    book_horizon_s: float = BOOK_HORIZON_S
    max_carried_per_run: int = 5000  # rows a run may have riding in the queue at once
    lost_after_s: float = 60.0
    sending_lease_s: float = 90.0  # > gateway timeout + slack: a slow send is not a dead one
    resolve_batch: int = 100
    #: a ``sent`` row with no final status after this long asks the carrier (callbacks that
    #: came before the row knew its SID, or were lost)
    status_after_s: float = 300.0
    #: ... and after only this long once callbacks stopped arriving
    quick_status_after_s: float = 10.0
    #: no final status recorded for this long while older rows are still ``sent``: callbacks
    #: stopped (the webhooks are down or unreachable)
    callbacks_quiet_s: float = 10.0
    #: carrier status fetches per second of reconcile interval, at most
    refresh_per_s: float = 10.0


class ReleaseLoop:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        enqueue_many: EnqueueMany,
        *,
        resolve: Callable[[int], Result] | None = None,
        config: ReleaseConfig | None = None,
        metrics: Metrics | None = None,
        refresh: Callable[[int], Result] | None = None,
        epoch: Callable[[], object] | None = None,
        seed_throttle: Callable[[set[str]], None] | None = None,
    ) -> None:
        self.db = db
        self.seed_throttle = seed_throttle
        self.clock = clock
        self.enqueue_many = enqueue_many
        self.resolve = resolve
        self.refresh = refresh
        self.config = config or ReleaseConfig()
        self.metrics = metrics
        self.epoch = epoch
        self._epoch: object = None
        self._reconciled_at: float | None = None
        self._refreshed: dict[int, float] = {}  # rows this loop fetched: clock time
        self.epoch_changes = 0

    def _redis_lost_keys(self) -> bool:
        """Whether the broker's epoch changed since the last tick (never on the first read; a
        failed read is no answer: the next tick asks again)."""
        if self.epoch is None:
            return False
        try:
            now = self.epoch()
        except Exception:  # noqa: BLE001 - Redis down: the queue is down too
            return False
        before, self._epoch = self._epoch, now
        return before is not None and now != before

    def recover(self) -> int:
        """Redis lost its keys: every carried row lost its queue message; forget them all now
        (the release that follows sends them again).  Returns how many."""
        now = self.clock.now()
        with self.db.session() as s:
            lost = outbox.forget_lost(s.connection(), now + timedelta(microseconds=1), now)
        self.epoch_changes += 1
        log.warning("Redis lost its keys (epoch changed): %d carried rows released again", lost)
        return lost

    # ------------------------------------------------------------------------------ tick
    def tick(self) -> dict[str, int]:
        """Start due runs, release due rows, complete finished runs.  Run every ~second."""
        now = self.clock.now()
        started = 0
        if self._redis_lost_keys():
            self.recover()
        with self.db.session() as s:
            due = runs.due_runs(s, now)
        for run_id in due:
            with self.db.session() as s:
                runs.fan_out(s, run_id, now)
                started += 1
        released = self.release()
        with self.db.session() as s:
            done = runs.complete_finished(s, now)
        return {"started": started, "released": released, "completed": len(done)}

    def release(self) -> int:
        now = self.clock.now()
        cfg = self.config
        with self.db.session() as s:
            conn = s.connection()
            carried: dict[int, int] = dict(
                conn.execute(
                    select(T.c.run_id, func.count())
                    .where(T.c.state == outbox.QUEUED, T.c.enqueued_at.is_not(None))
                    .group_by(T.c.run_id)
                ).all()
            )
            running = conn.execute(
                select(
                    R.c.id,
                    col(Campaign.window_limit),
                    col(Campaign.window_seconds),
                    col(Campaign.brand_id),
                )
                .join(Campaign, col(Campaign.id) == R.c.campaign_id)
                .where(R.c.state == runs.RUNNING)
            ).all()
            ids: list[int] = []
            brands: set[str] = set()
            for run_id, limit, seconds, brand_id in running:
                # no more riding than can book a slot within the horizon: the rest would only
                # be refused by the throttle and put back (a queue operation each, every cycle)
                bookable = limit * (math.ceil(cfg.book_horizon_s / seconds) + 1)
                room = min(
                    cfg.release_batch - len(ids),
                    min(cfg.max_carried_per_run, bookable) - carried.get(run_id, 0),
                )
                if room <= 0:
                    continue
                got = outbox.release_due(conn, run_id, room, now)
                ids += got
                if got:
                    brands.add(str(brand_id))
        if brands and self.seed_throttle is not None:
            # a throttle that lost its state (a fresh or flushed Redis) is seeded from the
            # outbox now, while these rows are not yet claimed: seeded by the first worker to
            # reserve, every row claimed meanwhile would count as in flight (docs/throttle.md)
            self.seed_throttle(brands)
        # committed first: if we die before enqueueing, the reconciler finds them lost
        if ids:
            self.enqueue_many(sorted(ids))
        return len(ids)

    # ------------------------------------------------------------------------------ reconcile
    def reconcile(self) -> dict[str, int]:
        now = self.clock.now()
        cfg = self.config
        lost_before = now - timedelta(seconds=cfg.lost_after_s)
        lease_before = now - timedelta(seconds=cfg.sending_lease_s)
        with self.db.session() as s:
            conn = s.connection()
            lost = outbox.forget_lost(conn, lost_before, now)
            stale = outbox.expire_claims(conn, lease_before, now)
            unknown = [
                r[0]
                for r in conn.execute(
                    select(T.c.id)
                    .where(T.c.state == outbox.UNKNOWN)
                    .order_by(T.c.updated_at)
                    .limit(cfg.resolve_batch)
                )
            ]
            silent = [] if self.refresh is None else self._silent(conn, now)
        for row_id in silent:
            self._refreshed[row_id] = self.clock.time()
            self.refresh(row_id)  # type: ignore[misc]
        resolved = 0
        if self.resolve is not None:
            for row_id in unknown:
                if self.resolve(row_id).outcome is Outcome.RESOLVED:
                    resolved += 1
        if lost or stale:
            log.warning("reconciler: %d lost queue messages, %d stale sends", lost, stale)
        return {"lost": lost, "stale": stale, "resolved": resolved}

    def _heard(self, conn: Any, now: datetime) -> Any:
        """Where a final status recorded within ``callbacks_quiet_s`` that this loop did not
        fetch itself (a callback) may be found: the filter over the outbox."""
        cfg = self.config
        mono = self.clock.time()
        self._refreshed = {
            i: t for i, t in self._refreshed.items() if mono - t < 2 * cfg.callbacks_quiet_s
        }
        quiet = now - timedelta(seconds=cfg.callbacks_quiet_s)
        cond = and_(T.c.state.in_(_CALLBACK_FINAL), T.c.status_at >= quiet)
        if self._refreshed:
            cond = and_(cond, T.c.id.not_in(list(self._refreshed)))
        return cond

    def status_wait(self, conn: Any, now: datetime) -> tuple[float, datetime | None]:
        """How long a ``sent`` row waits for its callback before the carrier is asked, and the
        latest send whose callback came lately.  ``quick_status_after_s`` once callbacks
        stopped (no callback for ``callbacks_quiet_s`` while older rows are still ``sent``);
        else ``status_after_s``, except for a row sent before the latest send a callback came
        for: its own callback was lost (the webhooks were down), so it waits the quick delay."""
        cfg = self.config
        quiet = now - timedelta(seconds=cfg.callbacks_quiet_s)
        waiting = conn.execute(
            select(T.c.id).where(T.c.state == outbox.SENT, T.c.sent_at < quiet).limit(1)
        ).first()
        if waiting is None:
            return cfg.status_after_s, None
        latest = conn.execute(select(func.max(T.c.sent_at)).where(self._heard(conn, now))).scalar()
        if latest is None:
            return cfg.quick_status_after_s, None
        return cfg.status_after_s, as_utc(latest)

    def _silent(self, conn: Any, now: datetime) -> list[int]:
        """The ``sent`` rows to ask the carrier about now, oldest first, at most
        ``refresh_per_s`` per second since the last reconcile (and ``resolve_batch``)."""
        cfg = self.config
        mono = self.clock.time()
        since = 10.0 if self._reconciled_at is None else max(0.0, mono - self._reconciled_at)
        self._reconciled_at = mono
        budget = min(cfg.resolve_batch, max(1, int(cfg.refresh_per_s * since)))
        wait, latest = self.status_wait(conn, now)
        due = T.c.updated_at < now - timedelta(seconds=wait)
        if latest is not None:  # overtaken: a later send's callback came, this one's did not
            overtaken = and_(
                T.c.updated_at < now - timedelta(seconds=cfg.quick_status_after_s),
                T.c.sent_at < latest - timedelta(seconds=cfg.callbacks_quiet_s),
            )
            due = or_(due, overtaken)
        return [
            r[0]
            for r in conn.execute(
                select(T.c.id)
                .where(
                    T.c.state == outbox.SENT,
                    due,
                    T.c.sent_at > now - timedelta(days=3),  # Twilio keeps no status forever
                )
                .order_by(T.c.updated_at)
                .limit(budget)
            )
        ]

    # ------------------------------------------------------------------------------ gauges
    def observe(self) -> None:
        if self.metrics is None:
            return
        now = self.clock.now()
        with self.db.session() as s:
            conn = s.connection()
            depth = conn.execute(
                select(func.count())
                .select_from(T)
                .where(T.c.state == outbox.QUEUED, T.c.enqueued_at.is_not(None))
            ).scalar_one()
            oldest = conn.execute(
                select(func.min(T.c.due_at)).where(T.c.state == outbox.QUEUED, T.c.due_at <= now)
            ).scalar_one()
        with self.db.session() as s:
            # the one model of run figures (what `run show` reads); ended runs drop out
            self.metrics.runs_observed(run_report.metrics_runs(s, now))
            brands = (
                s.connection()
                .execute(select(col(Brand.id), col(Brand.name), col(Brand.tmobile_brand_tier)))
                .all()
            )
            self.metrics.campaigns_observed(
                {
                    "campaign": c.sid,
                    "brand": str(c.brand_id),
                    "sender": c.messaging_service_sid or c.sender or "",
                    "status": c.campaign_status,
                    "thresholds": campaign_thresholds(c),  # the guard's own (one source)
                    # the limits the throttle applies (throttle.policy), per second
                    "limits": {
                        "campaign_window": c.window_limit / max(c.window_seconds, 1),
                        "sender_mps": sender_mps(c.rate_limits),
                    },
                }
                for c in s.scalars(select(Campaign))
            )
        for brand_id, name, tier in brands:  # the brand label is the id; its name rides brand_info
            self.metrics.brand_info(str(brand_id), name)
            cap = tmobile_daily_cap(tier)
            if cap is not None:
                self.metrics.brand_daily_cap(str(brand_id), cap)
        queue = self.metrics.queue_name  # DISPATCHER_QUEUE_NAME
        self.metrics.queue_depth(queue, depth)
        self.metrics.oldest_due_age_seconds(
            queue, (now - as_utc(oldest)).total_seconds() if oldest else 0.0
        )
