"""Group commit (dispatcher.webhooks.groupcommit) on its own: batching, fallback, give-up,
several event loops.  No database here (test_status_batch.py has the real thing)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from dispatcher.errors import StorageError
from dispatcher.webhooks.groupcommit import GroupCommit, PartialBatch
from tests.procs import wait_for


class Recorder:
    """run_batch / run_one that record their calls; ``fail_batch`` makes every batch fail,
    ``fail_one`` maps an item to the exception its own transaction raises; the first call
    can be held until ``release`` (so that items queue up behind it)."""

    def __init__(self, *, hold_first: bool = False) -> None:
        self.batches: list[list[Any]] = []
        self.ones: list[Any] = []
        self.committed: set[Any] = set()
        self.fail_batch = False
        self.fail_one: dict[Any, BaseException] = {}
        self.entered = threading.Event()
        self.release = threading.Event()
        if not hold_first:
            self.release.set()

    def _hold(self) -> None:
        self.entered.set()
        assert self.release.wait(10), "never released"

    def run_batch(self, items: list[Any]) -> list[Any]:
        self._hold()
        self.batches.append(list(items))
        if self.fail_batch:
            raise RuntimeError("batch failed")
        self.committed.update(items)  # "commit": results exist only from here on
        return [f"ok:{i}" for i in items]

    def run_one(self, item: Any) -> Any:
        self._hold()
        self.ones.append(item)
        if item in self.fail_one:
            raise self.fail_one[item]
        self.committed.add(item)
        return f"ok:{item}"


def make(rec: Recorder, **kw: Any) -> GroupCommit[Any, Any]:
    return GroupCommit(rec.run_batch, rec.run_one, **kw)


async def _submit_all(
    gc: GroupCommit[Any, Any], rec: Recorder, first: Any, rest: list[Any]
) -> list[Any]:
    """Submit ``first`` (held in its transaction), then ``rest`` while it is held; release once
    all of ``rest`` are queued.  Every result is checked to arrive after its commit."""

    async def one(item: Any) -> Any:
        try:
            res = await gc.submit(item)
        except Exception as e:  # noqa: BLE001 - the test looks at it
            return e
        assert item in rec.committed, f"{item} answered before it was committed"
        return res

    head = asyncio.ensure_future(one(first))
    await asyncio.to_thread(rec.entered.wait, 10)
    tail = [asyncio.ensure_future(one(i)) for i in rest]  # they queue while we wait below
    await asyncio.to_thread(wait_for, lambda: gc.pending() == len(rest))
    rec.release.set()
    return await asyncio.gather(head, *tail)


def test_an_item_alone_is_applied_at_once():
    rec = Recorder()
    gc = make(rec)
    assert asyncio.run(gc.submit("a")) == "ok:a"
    assert asyncio.run(gc.submit("b")) == "ok:b"
    assert list(gc.batches) == [1, 1] and rec.ones == ["a", "b"] and rec.batches == []


def test_items_queued_meanwhile_are_applied_in_one_batch():
    rec = Recorder(hold_first=True)
    gc = make(rec)
    got = asyncio.run(_submit_all(gc, rec, "first", ["a", "b", "c"]))
    assert got == ["ok:first", "ok:a", "ok:b", "ok:c"]
    assert list(gc.batches) == [1, 3] and rec.batches == [["a", "b", "c"]]


def test_max_batch_bounds_a_batch():
    rec = Recorder(hold_first=True)
    gc = make(rec, max_batch=2)
    got = asyncio.run(_submit_all(gc, rec, 0, [1, 2, 3, 4, 5]))
    assert got == [f"ok:{i}" for i in range(6)]
    assert list(gc.batches) == [1, 2, 2, 1]


def test_a_failed_batch_is_retried_one_by_one():
    rec = Recorder(hold_first=True)
    rec.fail_batch = True
    boom = ValueError("bad item")
    rec.fail_one["bad"] = boom
    gc = make(rec)
    got = asyncio.run(_submit_all(gc, rec, "first", ["a", "bad", "c"]))
    assert got[:2] == ["ok:first", "ok:a"] and got[2] is boom and got[3] == "ok:c"
    assert rec.ones == ["first", "a", "bad", "c"]
    assert "bad" not in rec.committed


def test_give_up_error_fails_the_rest_of_the_batch_without_trying():
    rec = Recorder(hold_first=True)
    rec.fail_batch = True
    down = StorageError("database error: connection refused")
    rec.fail_one["b"] = down
    gc = make(rec, give_up=(StorageError,))
    got = asyncio.run(_submit_all(gc, rec, "first", ["a", "b", "c", "d"]))
    assert got[:2] == ["ok:first", "ok:a"]
    assert got[2] is down and got[3] is down and got[4] is down
    assert rec.ones == ["first", "a", "b"]  # c and d were not tried
    assert rec.committed == {"first", "a"}


def test_a_single_item_error_reaches_its_request():
    rec = Recorder()
    rec.fail_one["x"] = StorageError("database error: gone")
    gc = make(rec, give_up=(StorageError,))
    with pytest.raises(StorageError):
        asyncio.run(gc.submit("x"))
    assert asyncio.run(gc.submit("y")) == "ok:y"  # the thread lives on


def test_submit_from_several_event_loops_at_once():
    rec = Recorder()
    gc = make(rec)
    results: dict[int, Any] = {}

    def worker(k: int) -> None:
        async def many() -> list[Any]:
            return list(await asyncio.gather(*(gc.submit((k, i)) for i in range(20))))

        results[k] = asyncio.run(many())

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == {k: [f"ok:{(k, i)}" for i in range(20)] for k in range(6)}
    assert sum(gc.batches) == 120


def test_the_thread_stops_when_idle_and_restarts():
    rec = Recorder()
    gc = make(rec, idle_s=0.01)
    assert asyncio.run(gc.submit(1)) == "ok:1"
    wait_for(lambda: gc._thread is None)
    assert asyncio.run(gc.submit(2)) == "ok:2"


def test_on_idle_runs_once_per_idle_exit_before_a_new_thread_starts():
    """The status route gives its held connection back in ``on_idle``: it runs when the thread
    goes idle (not per batch), under the lock (a submit meanwhile waits for it), and a thread
    dying on an unexpected error runs it too."""
    rec = Recorder()
    calls: list[str] = []
    gc = make(rec, idle_s=0.01, on_idle=lambda: calls.append(threading.current_thread().name))
    assert asyncio.run(gc.submit(1)) == "ok:1"
    assert asyncio.run(gc.submit(2)) == "ok:2"
    wait_for(lambda: gc._thread is None)
    assert calls == ["group-commit"]
    assert asyncio.run(gc.submit(3)) == "ok:3"
    wait_for(lambda: gc._thread is None)
    assert len(calls) == 2

    rec.fail_one[4] = KeyboardInterrupt()  # not an Exception: it kills the thread
    with pytest.raises(KeyboardInterrupt):
        asyncio.run(gc.submit(4))
    wait_for(lambda: len(calls) == 3)


def test_a_partial_batch_answers_what_it_committed_and_retries_the_rest_alone():
    """A run_batch in two steps (the status route: an autocommit statement, then a transaction)
    whose second step failed: the items of the first are answered with their results, the
    others are applied alone."""
    rec = Recorder(hold_first=True)

    def two_steps(items: list[Any]) -> list[Any]:
        rec._hold()
        rec.batches.append(list(items))
        done = [i for i in items if i.startswith("x")]
        rec.committed.update(done)
        raise PartialBatch([f"x:{i}" if i in done else None for i in items], OSError("step 2"))

    gc = GroupCommit(two_steps, rec.run_one)
    rec.fail_one = {"b": StorageError("database error: gone")}
    got = asyncio.run(_submit_all(gc, rec, "first", ["xa", "b", "xc", "d"]))
    assert got[0] == "ok:first"
    assert got[1] == "x:xa" and got[3] == "x:xc" and got[4] == "ok:d"
    assert isinstance(got[2], StorageError)
    assert rec.ones == ["first", "b", "d"] and list(gc.batches) == [1, 4]
