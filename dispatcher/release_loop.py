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
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import func, select

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
    ) -> None:
        self.db = db
        self.clock = clock
        self.enqueue_many = enqueue_many
        self.resolve = resolve
        self.refresh = refresh
        self.config = config or ReleaseConfig()
        self.metrics = metrics

    # ------------------------------------------------------------------------------ tick
    def tick(self) -> dict[str, int]:
        """Start due runs, release due rows, complete finished runs.  Run every ~second."""
        now = self.clock.now()
        started = 0
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
            carried = dict(
                conn.execute(
                    select(T.c.run_id, func.count())
                    .where(T.c.state == outbox.QUEUED, T.c.enqueued_at.is_not(None))
                    .group_by(T.c.run_id)
                ).all()
            )
            running = conn.execute(
                select(R.c.id, Campaign.window_limit, Campaign.window_seconds)
                .join(Campaign, Campaign.id == R.c.campaign_id)  # type: ignore[arg-type]
                .where(R.c.state == runs.RUNNING)
            ).all()
            ids: list[int] = []
            for run_id, limit, seconds in running:
                # no more riding than can book a slot within the horizon: the rest would only
                # be refused by the throttle and put back (a queue operation each, every cycle)
                bookable = limit * (math.ceil(cfg.book_horizon_s / seconds) + 1)
                room = min(
                    cfg.release_batch - len(ids),
                    min(cfg.max_carried_per_run, bookable) - carried.get(run_id, 0),
                )
                if room <= 0:
                    continue
                ids += outbox.release_due(conn, run_id, room, now)
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
            silent = (
                []
                if self.refresh is None
                else [
                    r[0]
                    for r in conn.execute(
                        select(T.c.id)
                        .where(
                            T.c.state == outbox.SENT,
                            T.c.updated_at < now - timedelta(seconds=cfg.status_after_s),
                            T.c.sent_at > now - timedelta(days=3),
                        )  # Twilio keeps no status forever
                        .order_by(T.c.updated_at)
                        .limit(cfg.resolve_batch)
                    )
                ]
            )
        for row_id in silent:
            self.refresh(row_id)  # type: ignore[misc]
        resolved = 0
        if self.resolve is not None:
            for row_id in unknown:
                if self.resolve(row_id).outcome is Outcome.RESOLVED:
                    resolved += 1
        if lost or stale:
            log.warning("reconciler: %d lost queue messages, %d stale sends", lost, stale)
        return {"lost": lost, "stale": stale, "resolved": resolved}

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
                s.connection().execute(select(Brand.id, Brand.name, Brand.tmobile_brand_tier)).all()
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
                for c in s.exec(select(Campaign)).scalars()
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
