"""The schedule model's acceptance (issue 18): on a virtual clock, the finish it predicts equals
the actual finish of a real run of the pipeline within 1 % of the run's length plus one window.

The prediction is the dry run's (``run_report.dry_run``, as ``run launch --dry-run`` shows it)
made before the launch, and ``run_report.progress``'s ETA made while the run goes; the actual
finish is the last message the sandbox carrier received from the pipeline's own delivery code
(``Pipeline.deliver`` + the scheduler's release loop, ``test_virtual_clock.simulate``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from dispatcher import run_report, runs
from dispatcher.models import Brand
from tests.unit.pipeline.conftest import TEMPLATE, make_harness
from tests.unit.pipeline.test_virtual_clock import simulate

ET = ZoneInfo("America/New_York")
#: Monday 2026-01-05 12:00 EST and 19:30 EST
NOON_ET = datetime(2026, 1, 5, 17, 0, tzinfo=UTC)
EVENING_ET = datetime(2026, 1, 6, 0, 30, tzinfo=UTC)


def predict_then_run(h: Any, template: str = TEMPLATE) -> dict[str, Any]:
    """The dry run's prediction, then the run on the virtual clock; ETAs from ``progress`` are
    sampled along the way."""
    grace = h.rt.settings.throttle_grace_s
    start = h.clock.now()
    req = runs.LaunchRequest(campaign=h.campaign_sid, template=template, audience={"kind": "all"})
    with h.db.session() as s:
        dry = run_report.dry_run(s, req, now=start, grace_s=grace)
        s.rollback()
    run_id = h.launch(template, fan_out=False)
    etas: list[tuple[float, float, dict[str, Any]]] = []
    every = 3600.0
    next_look = [start.timestamp() + 600.0]

    def look() -> None:
        t = h.clock.time()
        if t < next_look[0]:
            return
        next_look[0] = t + every
        with h.db.session() as s:
            p = run_report.progress(s, run_id, h.clock.now(), grace_s=grace)
        if p["eta"] is not None and p["live"]:
            etas.append((t, p["eta"].timestamp(), p))

    simulate(h, run_id, observe=look)
    times = [r["received_at"] for r in h.records()]
    with h.db.session() as s:
        final = run_report.progress(s, run_id, h.clock.now(), grace_s=grace)
    return {
        "start": start.timestamp(),
        "dry": dry,
        "predicted": dry["estimated_finish"].timestamp(),
        "actual": max(times),
        "sent": len(times),
        "etas": etas,
        "final": final,
    }


def assert_close(r: dict[str, Any], window_s: float) -> None:
    length = r["actual"] - r["start"]
    tolerance = 0.01 * length + window_s
    print(
        f"\npredicted finish {datetime.fromtimestamp(r['predicted'], UTC):%Y-%m-%d %H:%M:%S}, "
        f"actual {datetime.fromtimestamp(r['actual'], UTC):%Y-%m-%d %H:%M:%S} UTC "
        f"({r['predicted'] - r['actual']:+.0f} s over a {length:.0f} s run, tolerance "
        f"{tolerance:.0f} s); {len(r['etas'])} progress ETAs, worst "
        f"{max((abs(e - r['actual']) for _, e, _ in r['etas']), default=0):.0f} s off"
    )
    assert abs(r["predicted"] - r["actual"]) <= tolerance, r["dry"]["schedule"]
    assert r["etas"], "progress never gave an ETA while the run went"
    for t, eta, p in r["etas"]:
        assert abs(eta - r["actual"]) <= tolerance, (datetime.fromtimestamp(t, UTC), p)
    assert r["final"]["state"] == runs.COMPLETED and r["final"]["eta"] is None


@pytest.mark.timeout(600)
def test_500_at_10_per_5_min_launched_at_noon_et(tmp_path):
    with make_harness(tmp_path) as h:
        h.clock.set(NOON_ET)
        h.contacts(500)
        r = predict_then_run(h)
    assert r["sent"] == 500
    assert r["dry"]["schedule"]["slots_given_back"] == 0
    assert_close(r, 300 + 2.0)


@pytest.mark.timeout(600)
def test_500_launched_at_1930_et_with_florida_hawaii_alaska_split_over_two_days(tmp_path):
    with make_harness(tmp_path) as h:
        h.clock.set(EVENING_ET)
        # New York (21:00 close), Florida (20:00), Hawaii (5 h behind), Alaska (Anchorage + Adak)
        h.contacts(500, npa=("212", "305", "808", "907"))
        r = predict_then_run(h)
    assert r["sent"] == 500
    days = {datetime.fromtimestamp(t, ET).date() for t in (r["start"], r["actual"])}
    assert len(days) == 2, "quiet hours must split this run over two days"
    windows = {w["window"]: w for w in r["dry"]["schedule"]["windows"]}
    assert windows["Pacific/Honolulu 08:00-21:00"]["rows"] == 125
    assert windows["America/New_York 08:00-20:00"]["rows"] == 125  # Florida's rule
    assert_close(r, 300 + 2.0)


@pytest.mark.timeout(600)
def test_a_run_that_hits_the_t_mobile_daily_cap(tmp_path):
    with make_harness(tmp_path) as h:
        h.clock.set(NOON_ET)
        with h.db.session() as s:
            brand = s.get(Brand, h.brand_id)
            brand.tmobile_brand_tier = "LOW"  # 2 000 segments a day
            s.add(brand)
        # a campaign window of 100 a minute: the daily cap, not the window, holds the run back
        h.set_campaign(window_limit=100, window_seconds=60)
        h.contacts(300)
        # ten segments a message: 200 messages fill the day; 100 wait for the next one, whose
        # midnight (Pacific) is 03:00 in New York: they go at 08:00
        long = TEMPLATE + " " + " ".join(["Your service plan details follow."] * 40)
        r = predict_then_run(h, long)
    assert r["dry"]["segments"] == 10
    assert r["sent"] == 300
    assert datetime.fromtimestamp(r["actual"], ET).date() == datetime(2026, 1, 6).date()
    assert_close(r, 60 + 2.0)
