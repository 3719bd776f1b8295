"""Status callbacks that arrive before their SID is recorded: kept and applied again later.

The worker records a message's SID (``outbox.provider_sid``) after a batch of sends, so the
carrier's callback can come first and match no row (``apply_status`` -> ``"unknown_sid"``).  The
route answers 200 anyway (Twilio does not retry status callbacks) and hands the callback to
``EarlyStatuses.keep``, which applies it again after each delay of ``delays`` in turn (each
callback due at the same time in one transaction) until it is applied or is found
late/duplicate ("unchanged"),
and gives up after the last delay.  A callback dropped here (full, given up, process restart) is
not lost for good: the scheduler refreshes the row from the carrier after ``status_after``.

One daemon thread per instance, started by ``keep`` and exiting as soon as nothing is pending
(an idle app holds no thread).  Due times are ``time.monotonic()``: they bound real HTTP timing.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from dispatcher.provider_status import StatusResult, StatusUpdate

log = logging.getLogger(__name__)
WARN_EVERY_S = 60.0  # at most one "full" warning per this many seconds


@dataclass(order=True)
class _Kept:
    due: float
    seq: int  # arrival order among equal due times (order does not matter: moves are monotonic)
    attempt: int = field(compare=False)  # index in ``delays`` of the wait before this attempt
    update: StatusUpdate = field(compare=False)


class EarlyStatuses:
    """``apply(update)`` applies one callback in its own transaction, ``apply_many(updates)``
    several in one (their results in order; if it raises, nothing was committed and each is
    tried alone); ``on_applied(result)`` runs the route's reactions (metrics, reputation guard)
    when it moved the row.  The callbacks due at once (up to ``max_batch``) go together."""

    def __init__(
        self,
        apply: Callable[[StatusUpdate], StatusResult],
        on_applied: Callable[[StatusResult], None],
        *,
        delays: Sequence[float],
        max_pending: int,
        apply_many: Callable[[list[StatusUpdate]], Sequence[StatusResult]] | None = None,
        max_batch: int = 200,
        name: str = "early-status",
    ) -> None:
        self._apply = apply
        self._apply_many = apply_many
        self.max_batch = max_batch
        self._on_applied = on_applied
        self.delays = tuple(delays)
        self.max_pending = max_pending
        self.name = name
        self._heap: list[_Kept] = []
        self._seq = 0
        self._busy = 0  # taken from the heap, being applied
        self._closed = False
        self._dropped = 0  # dropped because full, since the last warning
        self._warned_at: float | None = None
        self._cond = threading.Condition(threading.Lock())
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------------------- public
    def keep(self, update: StatusUpdate) -> bool:
        """Apply ``update`` again after the first delay.  False if it was dropped (full,
        closed or no delays configured)."""
        if not self.delays:
            return False
        with self._cond:
            if self._closed:
                return False
            if len(self._heap) + self._busy >= self.max_pending:
                self._full_locked()
                return False
            self._push_locked(update, 0)
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name=self.name, daemon=True)
                self._thread.start()
            else:
                self._cond.notify()
        return True

    def pending(self) -> int:
        """Callbacks kept and not done yet (waiting or being applied)."""
        with self._cond:
            return len(self._heap) + self._busy

    @property
    def thread(self) -> threading.Thread | None:
        """The retrier's thread while it runs (None when idle)."""
        return self._thread

    def close(self, timeout: float = 10.0) -> None:
        """Drop what is pending, stop the thread (waits for an attempt in progress); ``keep``
        drops everything from now on."""
        with self._cond:
            self._closed = True
            self._heap.clear()
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    # ------------------------------------------------------------------------------ thread
    def _push_locked(self, update: StatusUpdate, attempt: int) -> None:
        self._seq += 1
        due = time.monotonic() + self.delays[attempt]
        heapq.heappush(self._heap, _Kept(due, self._seq, attempt, update))

    def _full_locked(self) -> None:
        self._dropped += 1
        mono = time.monotonic()
        if self._warned_at is None or mono - self._warned_at >= WARN_EVERY_S:
            log.warning(
                "%s: %d early status callbacks already kept; dropped %d (the status "
                "refresh catches them)",
                self.name,
                self.max_pending,
                self._dropped,
            )
            self._warned_at, self._dropped = mono, 0

    def _take_locked(self) -> list[_Kept]:
        """The callbacks due now (at least one, at most ``max_batch``: waits for the next);
        none when nothing is pending (or closed)."""
        while self._heap and not self._closed:
            now = time.monotonic()
            left = self._heap[0].due - now
            if left <= 0:
                due: list[_Kept] = []
                while self._heap and self._heap[0].due <= now and len(due) < self.max_batch:
                    due.append(heapq.heappop(self._heap))
                return due
            self._cond.wait(left)
        return []

    def _work(self) -> None:
        me = threading.current_thread()
        try:
            while True:
                with self._cond:
                    self._busy = 0
                    due = self._take_locked()
                    if not due:
                        self._thread = None  # under the lock: the next keep() starts one
                        return
                    self._busy = len(due)
                self._attempt_many(due)
        finally:
            with self._cond:  # died of a BaseException: the next keep() starts a new thread
                if self._thread is me:
                    self._thread, self._busy = None, 0

    def _attempt_many(self, due: list[_Kept]) -> None:
        if len(due) > 1 and self._apply_many is not None:
            try:
                results = list(self._apply_many([k.update for k in due]))
                if len(results) != len(due):
                    raise RuntimeError(f"{len(results)} results for {len(due)} callbacks")
            except Exception as e:  # noqa: BLE001 - nothing committed: each alone below
                log.warning(
                    "%s: a batch of %d failed (%s); applying one by one",
                    self.name,
                    len(due),
                    type(e).__name__,
                )
            else:
                for kept, res in zip(due, results, strict=True):
                    self._outcome(kept, res)
                return
        for kept in due:
            self._attempt(kept)

    def _attempt(self, kept: _Kept) -> None:
        u = kept.update
        try:
            res = self._apply(u)
        except Exception as e:  # noqa: BLE001 - e.g. database down: try again after the next delay
            log.warning(
                "%s: status %r for %s failed (%s); trying again later",
                self.name,
                u.status,
                u.sid,
                type(e).__name__,
            )
            self._again(kept, f"the last attempt failed ({type(e).__name__})")
            return
        self._outcome(kept, res)

    def _outcome(self, kept: _Kept, res: StatusResult) -> None:
        """After an attempt committed: kept again if its SID is still unknown, reactions if it
        moved the row."""
        u = kept.update
        if res.outcome == "unknown_sid":
            self._again(kept, "no outbox row has that SID")
        elif res.outcome == "applied":
            log.debug(
                "%s: status %r for %s applied (attempt %d)",
                self.name,
                u.status,
                u.sid,
                kept.attempt + 1,
            )
            try:
                self._on_applied(res)
            except Exception:  # noqa: BLE001 - the callback is committed; never retried
                log.exception(
                    "%s: reactions to status %r for %s failed", self.name, u.status, u.sid
                )

    def _again(self, kept: _Kept, why: str) -> None:
        nxt = kept.attempt + 1
        if nxt >= len(self.delays):
            log.info(
                "%s: gave up on status %r for %s after %.1fs: %s",
                self.name,
                kept.update.status,
                kept.update.sid,
                sum(self.delays),
                why,
            )
            return
        with self._cond:
            if not self._closed:
                self._push_locked(kept.update, nxt)
