"""500 recipients at the default 10 per 300 s on a virtual clock, through ``Pipeline.deliver``
with a heap for a queue and the release loop as the scheduler runs it."""

from __future__ import annotations

import heapq
import itertools
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import func, select

from dispatcher import outbox, runs
from dispatcher.clock import as_utc
from dispatcher.throttle.policy import Bucket
from tests.unit.pipeline.conftest import make_harness, unheld

N = 500


def _next_due(harness) -> float | None:
    """The earliest due_at of a queued row no queue message carries (the release loop's work)."""
    t = outbox.T
    with harness.db.session() as s:
        v = (
            s.connection()
            .execute(
                select(func.min(t.c.due_at)).where(
                    t.c.state == outbox.QUEUED, t.c.enqueued_at.is_(None)
                )
            )
            .scalar_one()
        )
    return None if v is None else as_utc(v).timestamp()


def simulate(
    harness, run_id: int, observe: Callable[[], None] | None = None, **release: Any
) -> dict[str, Any]:
    """Run ``run_id`` to completion; ``observe()`` is called after every scheduler tick."""
    clock = harness.clock
    heap: list[tuple[float, int, Any]] = []
    seq = itertools.count()
    ops = Counter()
    outcomes: Counter[str] = Counter()

    def enqueue(rows: Sequence[tuple[int, dict[str, Any]]], delay_s: float = 0.0) -> None:
        ops["enqueue"] += 1
        heapq.heappush(heap, (clock.time() + delay_s, next(seq), rows))

    def deliver(rows: Any) -> None:
        if isinstance(rows, int):  # a released row
            outcomes[p.deliver(rows).split(":")[0]] += 1
            return
        out = p.deliver_many([i for i, _ in rows], dict(rows))
        outcomes.update(r.split(":")[0] for r in out.values())

    def enqueue_many(ids: list[int]) -> None:
        ops["release"] += len(ids)
        for row_id in ids:
            heapq.heappush(heap, (clock.time(), next(seq), row_id))

    # no webhook traffic: this test is about the queue and throttle
    p = replace(unheld(harness.rt.pipeline(enqueue)), status_callback=None)
    hk = harness.release_loop(p, **release)
    hk.enqueue_many = enqueue_many
    steps = 0
    while True:
        steps += 1
        assert steps < 20_000, "the run does not converge"
        while heap and heap[0][0] <= clock.time():
            deliver(heapq.heappop(heap)[2])
        hk.tick()  # start due runs, release due rows, complete finished runs
        if observe is not None:
            observe()
        if harness.run(run_id).state == runs.COMPLETED:
            break
        if heap and heap[0][0] <= clock.time():
            continue  # the tick released rows: deliver them at this instant
        nxt = [t for t in (heap[0][0] if heap else None, _next_due(harness)) if t is not None]
        assert nxt, "nothing scheduled but the run is not complete"
        clock.set(max(clock.time(), min(nxt)))
    return {"ops": ops, "outcomes": outcomes, "steps": steps}


def max_in_window(times: list[float], width: float) -> int:
    """The most sends in any half-open interval [x, x + width)."""
    ts = sorted(times)
    return max((bisect_left(ts, t + width) - i for i, t in enumerate(ts)), default=0)


def run_virtual(directory, n: int, **release: Any) -> dict[str, Any]:
    with make_harness(directory) as harness:
        harness.set_campaign(quiet_hours_policy="none")
        harness.contacts(n)
        start = harness.clock.time()
        run_id = harness.launch(fan_out=False)  # the scheduler's tick fans it out
        result = simulate(harness, run_id, **release)
        recs = harness.records()
        rows = harness.rows(run_id)
    times = [r["received_at"] for r in recs]
    grace = Bucket("x:{b:0}", 10, 300.0).grace
    ideal = (n // 10 - 1) * (300 + grace)
    finish = max(times) - start
    worst = max_in_window(times, 300.0)
    per_send = (result["ops"]["enqueue"] + result["ops"]["release"]) / n
    print(
        f"\nvirtual clock ({n}, {release or 'default release loop'}): finish {finish:.0f} s"
        f" (ideal {ideal:.0f} s, {100 * (finish / ideal - 1):+.2f} %), max per 300 s window "
        f"{worst}, queue ops per send {per_send:.2f} ({dict(result['ops'])}), "
        f"outcomes {dict(result['outcomes'])}, loop steps {result['steps']}"
    )
    return {
        "recs": recs,
        "rows": rows,
        "times": times,
        "ideal": ideal,
        "finish": finish,
        "worst": worst,
        "per_send": per_send,
        **result,
    }


@pytest.mark.timeout(600)  # ~1000 deliveries; slow on a loaded host
def test_500_recipients_at_10_per_5_min_finish_in_4_h_with_no_window_over_10(tmp_path):
    v = run_virtual(tmp_path, N)  # the scheduler's and pipeline's defaults
    recs, rows = v["recs"], v["rows"]
    assert len(rows) == N
    assert all(r.state == outbox.SENT for r in rows)
    # every recipient exactly once
    assert len(recs) == N
    assert Counter(r["to"] for r in recs) == Counter({r.to_phone: 1 for r in rows})
    assert {r.provider_sid for r in rows} == {r["sid"] for r in recs}
    # no sliding 300 s window holds more than 10 (and the rate is used fully)
    assert v["worst"] == 10
    # finishes in 49 windows of (300 + grace) s, +-1 %  (~4 h 05 m)
    assert abs(v["finish"] - v["ideal"]) <= 0.01 * v["ideal"], (v["finish"], v["ideal"])
    # one release + one booked re-enqueue per message, at most
    assert v["per_send"] <= 2.1, (v["per_send"], dict(v["ops"]), dict(v["outcomes"]))
