"""Group commit: many requests' database work in one transaction, answered only after it.

``GroupCommit(run_batch, run_one)`` owns one thread.  ``await gc.submit(item)`` (from any event
loop) queues the item and waits.  The thread takes everything queued (up to ``max_batch``),
calls ``run_batch(items)`` -- which must do all of them in ONE transaction and commit before it
returns -- and only then resolves the waiters, each with its own result.  An idle thread starts
at once on the first item: nothing waits for company, a batch is only what queued up while the
previous one was being applied.

If ``run_batch`` raises, nothing of that batch was committed; each item is then retried alone
with ``run_one(item)`` (its own transaction), so one bad item neither sinks nor wrongly
acknowledges the others, and each waiter gets its own result or exception.  After an exception
of a type in ``give_up`` (e.g. the database is unreachable) the rest of that batch is not
retried: its waiters get that exception too.  A batch of one goes straight to ``run_one``.
A ``run_batch`` that commits in more than one step raises ``PartialBatch`` when a later step
fails: the items it has results for are answered with them (they are committed), only the
others are retried alone.

The thread exits after ``idle_s`` without work and is started again by the next item; just
before it exits (idle, or dying) it calls ``on_idle()`` under the queue's lock, so no new thread
runs meanwhile (the status route gives its held database connection back there).  ``close()``
makes an idle thread exit now (the app's shutdown) and waits for it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)
I = TypeVar("I")  # noqa: E741 - item
R = TypeVar("R")  # result


class PartialBatch(Exception):  # noqa: N818 - not an error of its own: it carries one
    """Raised by a ``run_batch`` that committed part of its batch before ``cause`` stopped it:
    ``results[i]`` is item i's committed result, None for an item still to apply."""

    def __init__(self, results: Sequence[Any], cause: BaseException) -> None:
        super().__init__(f"{sum(r is None for r in results)} of {len(results)} left: {cause!r}")
        self.results = list(results)
        self.cause = cause


class _Waiter:
    __slots__ = ("future", "item", "loop")

    def __init__(
        self, item: Any, loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any]
    ) -> None:
        self.item = item
        self.loop = loop
        self.future = future


def _settle_all(settled: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for future, result, error in settled:
        if future.done():  # the request was cancelled (client gone): the work is done anyway
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)


class GroupCommit(Generic[I, R]):
    def __init__(
        self,
        run_batch: Callable[[list[I]], Sequence[R]],
        run_one: Callable[[I], R],
        *,
        max_batch: int = 200,
        idle_s: float = 10.0,
        give_up: tuple[type[BaseException], ...] = (),
        name: str = "group-commit",
        on_idle: Callable[[], None] | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self._run_batch = run_batch
        self._run_one = run_one
        self.max_batch = max_batch
        self.idle_s = idle_s
        self.give_up = give_up
        self.name = name
        self._on_idle = on_idle
        self._closed = False
        self._queue: deque[_Waiter] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._thread: threading.Thread | None = None
        #: sizes of the batches applied so far (a bounded history, for tests and benchmarks)
        self.batches: deque[int] = deque(maxlen=1000)

    async def submit(self, item: I) -> R:
        loop = asyncio.get_running_loop()
        waiter = _Waiter(item, loop, loop.create_future())
        with self._cond:
            self._queue.append(waiter)
            if self._thread is None:
                self._start_locked()
            else:
                self._cond.notify()
        return await waiter.future  # type: ignore[no-any-return]

    def pending(self) -> int:
        """Items queued and not yet taken by the thread."""
        with self._cond:
            return len(self._queue)

    def close(self, timeout: float = 10.0) -> None:
        """The thread exits as soon as the queue is empty (``on_idle`` run), and this waits
        for it.  A later ``submit`` still works (its thread exits once idle)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _start_locked(self) -> None:
        self._thread = threading.Thread(target=self._work, name=self.name, daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------------------ thread
    def _idle(self) -> None:
        """``on_idle()``, under the lock, never raising (the thread is on its way out)."""
        if self._on_idle is not None:
            try:
                self._on_idle()
            except Exception:  # noqa: BLE001 - logged; the thread still exits cleanly
                log.exception("%s: on_idle failed", self.name)

    def _work(self) -> None:
        try:
            while True:
                with self._cond:
                    if not self._queue:
                        if not self._closed:
                            self._cond.wait(self.idle_s)
                        if not self._queue:
                            self._idle()
                            self._thread = None  # under the lock: the next submit starts one
                            return
                    n = min(len(self._queue), self.max_batch)
                    batch = [self._queue.popleft() for _ in range(n)]
                self._apply(batch)
        except BaseException:
            with self._cond:  # dying with items queued: a new thread takes them over
                self._idle()
                self._thread = None
                if self._queue:
                    self._start_locked()
            raise

    def _apply(self, batch: list[_Waiter]) -> None:
        outcomes: list[tuple[Any, BaseException | None]] = []
        try:
            if len(batch) == 1:
                outcomes = self._one_by_one(batch)
            else:
                try:
                    results = self._run_batch([w.item for w in batch])
                    if len(results) != len(batch):
                        raise RuntimeError(f"{len(results)} results for {len(batch)} items")
                    outcomes = [(r, None) for r in results]
                except PartialBatch as e:
                    log.warning(
                        "%s: a batch of %d failed part way (%s); applying the rest one by one",
                        self.name,
                        len(batch),
                        type(e.cause).__name__,
                    )
                    outcomes = self._partial(batch, e.results)
                except Exception as e:  # noqa: BLE001 - nothing committed: item by item
                    log.warning(
                        "%s: a batch of %d failed (%s); applying one by one",
                        self.name,
                        len(batch),
                        type(e).__name__,
                    )
                    outcomes = self._one_by_one(batch)
            self.batches.append(len(batch))
        except BaseException as e:  # never leave a request waiting forever
            outcomes = [(None, e)] * len(batch)
            raise
        finally:
            self._resolve(batch, outcomes)

    def _partial(
        self, batch: list[_Waiter], results: list[Any]
    ) -> list[tuple[Any, BaseException | None]]:
        """The committed items' results; the others applied one by one."""
        if len(results) != len(batch):
            raise RuntimeError(f"{len(results)} partial results for {len(batch)} items")
        rest = iter(self._one_by_one([w for w, r in zip(batch, results, strict=True) if r is None]))
        return [(r, None) if r is not None else next(rest) for r in results]

    def _one_by_one(self, batch: list[_Waiter]) -> list[tuple[Any, BaseException | None]]:
        out: list[tuple[Any, BaseException | None]] = []
        fatal: BaseException | None = None
        for w in batch:
            if fatal is not None:
                out.append((None, fatal))
                continue
            try:
                out.append((self._run_one(w.item), None))
            except Exception as e:  # noqa: BLE001 - handed to the item's own request
                out.append((None, e))
                if isinstance(e, self.give_up):
                    fatal = e
        return out

    @staticmethod
    def _resolve(batch: list[_Waiter], outcomes: list[tuple[Any, BaseException | None]]) -> None:
        """Each waiter's outcome, set on its event loop: one wake-up per loop and batch (each
        costs the loop a self-pipe write and read)."""
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Any, Any, Any]]] = {}
        for w, (result, error) in zip(batch, outcomes, strict=True):
            by_loop.setdefault(w.loop, []).append((w.future, result, error))
        for loop, settled in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle_all, settled)
            except RuntimeError:  # that event loop is closed: nobody is waiting any more
                pass
