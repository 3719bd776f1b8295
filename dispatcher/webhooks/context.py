"""Per-app state shared by the routers: the runtime, options, guard limiter, metric calls."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool

from dispatcher import outbox
from dispatcher.guard import DEFAULT_THRESHOLDS, Thresholds
from dispatcher.guard_check import GuardLimiter, check_runs
from dispatcher.registry import CampaignCache
from dispatcher.webhooks.protocol import NoMetrics, Runtime, WebhookMetrics

if TYPE_CHECKING:
    from sqlmodel import Session

    from dispatcher.webhooks.early import EarlyStatuses

log = logging.getLogger(__name__)
R = TypeVar("R")


@dataclass(frozen=True)
class WebhookOptions:
    #: how long an inbound STOP waits for the contact's in-flight (``sending``) rows to settle
    in_flight_timeout_s: float = 10.0
    in_flight_poll_s: float = 0.05
    #: at most one reputation-guard evaluation per run per this many seconds of clock time
    guard_min_interval_s: float = 5.0
    guard_thresholds: Thresholds = field(default=DEFAULT_THRESHOLDS)
    #: status callbacks applied together in one transaction (group commit), at most this many
    status_batch_max: int = 200
    #: campaign (sid, sender, status) kept this long by the status route (0: no cache)
    campaign_cache_s: float = 2.0
    #: a status callback whose SID no row has yet is applied again after each of these delays
    #: (seconds, cumulative: ~64 s), then given up (early.py); the first is the worker's
    #: longest wait before it records its sends (DeliverConfig.mark_within_s)
    early_retry_delays_s: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
    #: at most this many such callbacks kept at once; more are dropped (with a warning)
    early_max_pending: int = 10_000


class Context:
    def __init__(self, runtime: Runtime, options: WebhookOptions) -> None:
        self.runtime = runtime
        self.options = options
        self.metrics: WebhookMetrics = runtime.metrics or NoMetrics()
        self.limiter = GuardLimiter(runtime.clock, options.guard_min_interval_s)
        self.campaigns = CampaignCache(options.campaign_cache_s)
        self.status_commit: Any = None  # the status route's GroupCommit (status.py)
        #: the status route's retrier of callbacks that came before their SID (status.py)
        self.early: EarlyStatuses | None = None

    def close(self) -> None:
        """Stop background work (pending early status callbacks are dropped; the status group
        commit's thread exits and gives its held connection back)."""
        if self.early is not None:
            self.early.close()
        if self.status_commit is not None:
            self.status_commit.close()

    # ---------------------------------------------------------------------------- database
    def transaction(
        self,
        fn: Callable[..., R],
        *args: Any,
        in_session: Callable[[], AbstractContextManager[Session]] | None = None,
        **kw: Any,
    ) -> R:
        """``fn(session, *args, now=clock.now(), **kw)`` in one transaction (sync), in a
        session of ``in_session`` (default: the database's pool; the status route's
        group-commit thread passes its held connection's)."""
        now = self.runtime.clock.now()
        session = in_session or self.runtime.db.session
        try:
            with session() as s:
                return fn(s, *args, now=now, **kw)
        except IntegrityError:
            # a concurrent request for the same MessageSid committed first: do it again, it
            # now takes the replay path (and changes nothing)
            with session() as s:
                return fn(s, *args, now=now, **kw)

    async def run(self, fn: Callable[..., R], *args: Any, **kw: Any) -> R:
        return await run_in_threadpool(self.transaction, fn, *args, **kw)

    # ----------------------------------------------------------------------------- in flight
    def _in_flight(self, contact_id: int) -> int:
        with self.runtime.db.session() as s:
            return outbox.in_flight_for_contact(s, contact_id)

    async def wait_not_in_flight(self, contact_id: int) -> bool:
        """Poll until no row of the contact is ``sending`` (wall-clock deadline, on purpose:
        this bounds a real HTTP reply).  False if the deadline passed first."""
        deadline = time.monotonic() + self.options.in_flight_timeout_s
        while True:
            if await run_in_threadpool(self._in_flight, contact_id) == 0:
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                log.warning(
                    "STOP from contact %s: a message was still being handed to the "
                    "carrier after %.1fs",
                    contact_id,
                    self.options.in_flight_timeout_s,
                )
                return False
            await asyncio.sleep(min(self.options.in_flight_poll_s, left))

    # -------------------------------------------------------------------------------- guard
    def guard_now(self, run_ids: list[int]) -> None:
        """Evaluate the reputation guard of these runs (rate-limited per run; sync, never
        raises)."""
        check_runs(
            self.runtime.db,
            run_ids,
            self.runtime.clock,
            self.limiter,
            self.options.guard_thresholds,
            halts=self.runtime.halts,
            metrics=self.metrics,
        )

    async def guard(self, run_ids: list[int]) -> None:
        if run_ids:
            await run_in_threadpool(self.guard_now, run_ids)
