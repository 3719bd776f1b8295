"""The schedule model (``dispatcher.schedule``), pure: its plan keeps every rule the pipeline
keeps — no row inside its recipient's quiet hours, no bucket ever over — and it paces a backlog
the way the throttle books it."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dispatcher import schedule as sched
from dispatcher.compliance.quiet_hours import (
    US_ZONES,
    is_quiet_hours,
    policy_from_name,
    resolve,
)
from tests.throttle_sim import window_violations

NOON_ET = datetime(2026, 1, 5, 17, 0, tzinfo=UTC)


def camp(**kw: Any) -> SimpleNamespace:
    base = dict(sid="QE1", window_limit=10, window_seconds=300, messaging_service_sid=None,
                sender="+15005550006", rate_limits={"att": {"mps": 600}},
                frequency_cap_count=None, frequency_cap_hours=None,
                quiet_hours_policy="strictest")  # fmt: skip
    base.update(kw)
    return SimpleNamespace(**base)


def buckets(c: SimpleNamespace, tier: str = "TOP", grace: float = 2.0) -> sched.BucketsOf:
    return sched.campaign_buckets(c, brand_id=1, brand_tier=tier, min_grace_s=grace)


def group(phone: str, policy: str = "strictest", segments: int = 1, **kw: Any) -> sched.Group:
    p = policy_from_name(policy)
    r = resolve(phone, p, kw.get("time_zone"), kw.get("state_code"))
    return sched.Group(r.windows if p.enabled else (), segments, phone, r.unknown_zone)


def test_a_backlog_goes_limit_per_period_plus_grace():
    t0 = NOON_ET.timestamp()
    plan = sched.plan(
        [sched.Row(t0, 0)] * 25, [group("+12125550100", "none")], buckets(camp()), now=t0
    )
    assert [t - t0 for t in plan.times] == [302.0 * (k // 10) for k in range(25)]
    assert plan.finish == t0 + 604 and plan.given_back == 0
    assert plan.hours == [(t0 - t0 % 3600, 25)]


def test_rows_in_quiet_hours_wait_for_the_window_and_the_finish_says_so():
    # 02:00 UTC on 2026-12-07 is 21:00 in New York: the first send is at 08:00 EST (13:00 UTC)
    t0 = datetime(2026, 12, 7, 2, 0, tzinfo=UTC).timestamp()
    g = [group("+12125550100"), group("+18085550100")]  # New York, Honolulu (16:00 HST)
    rows = [sched.Row(t0, k % 2) for k in range(40)]
    plan = sched.plan(rows, g, buckets(camp()), now=t0)
    by = {gp.group.label: gp for gp in plan.groups}
    assert by["+18085550100"].first == t0  # Honolulu is awake
    assert by["+12125550100"].first == datetime(2026, 12, 7, 13, 0, tzinfo=UTC).timestamp()
    assert plan.finish == datetime(2026, 12, 7, 13, 0, tzinfo=UTC).timestamp() + 302


def test_a_slot_booked_into_quiet_hours_is_given_back_and_the_row_goes_next_morning():
    # 20:55 EST: 10 go now, the next 10 book 21:00:02, inside New York's quiet hours
    t0 = datetime(2026, 1, 6, 1, 55, tzinfo=UTC).timestamp()
    plan = sched.plan([sched.Row(t0, 0)] * 20, [group("+12125550100")], buckets(camp()), now=t0)
    morning = datetime(2026, 1, 6, 13, 0, tzinfo=UTC).timestamp()
    assert plan.times[:10] == [t0] * 10
    assert plan.times[10:] == [morning] * 10
    assert plan.given_back == 10


def test_unknown_zone_numbers_go_in_the_window_common_to_every_us_zone():
    t0 = NOON_ET.timestamp()  # 17:00 UTC: before the common window (18:00-00:00 UTC)
    g = [group("+15005550009"), group("+18005550100"), group("+16845550100")]
    assert all(x.unknown_zone for x in g)
    plan = sched.plan([sched.Row(t0, k % 3) for k in range(9)], g, buckets(camp()), now=t0)
    assert set(plan.times) == {datetime(2026, 1, 5, 18, 0, tzinfo=UTC).timestamp()}


def test_booked_rows_and_recent_sends_hold_their_buckets():
    t0 = NOON_ET.timestamp()
    c = buckets(camp())
    key = next(b.key for b in c(1) if b.kind == "campaign")
    load = sched.Load(sends=tuple((key, t0 - 100, 1) for _ in range(10)))
    rows = [sched.Row(t0 + 202, 0, booked=True)] * 10 + [sched.Row(t0, 0)] * 3
    plan = sched.plan(rows, [group("+12125550100")], c, now=t0, load=load)
    assert plan.times[:10] == [t0 + 202] * 10  # their slots
    assert plan.times[10:] == [t0 + 202 + 302] * 3  # after them: no window over 10


def test_the_daily_cap_moves_the_rest_to_the_next_day():
    t0 = NOON_ET.timestamp()  # 09:00 in Los Angeles: the cap's day ends at 03:00 EST
    c = buckets(camp(window_limit=1000, window_seconds=60), tier="LOW")  # 2 000 segments a day
    plan = sched.plan([sched.Row(t0, 0)] * 300, [group("+12125550100", segments=10)], c, now=t0)
    assert Counter(plan.times)[t0] == 200
    assert set(plan.times[200:]) == {datetime(2026, 1, 6, 13, 0, tzinfo=UTC).timestamp()}


def test_rows_beyond_the_horizon_wait_in_the_outbox_and_keep_the_pace():
    t0 = NOON_ET.timestamp()
    rows = [sched.Row(t0, 0)] * 3000  # 10 per 302 s: about 25 h
    plan = sched.plan(rows, [group("+12125550100", "none")], buckets(camp()), now=t0)
    assert plan.times == [t0 + 302.0 * (k // 10) for k in range(3000)]


def test_the_model_uses_the_pipelines_horizon_and_carried_rows():
    from dispatcher.delivery.config import BOOK_HORIZON_S
    from dispatcher.release_loop import ReleaseConfig

    assert sched.BOOK_HORIZON_S == BOOK_HORIZON_S == ReleaseConfig().book_horizon_s
    assert sched.MAX_CARRIED_PER_RUN == ReleaseConfig().max_carried_per_run


# ------------------------------------------------------------------------------ property
#: area codes over every US zone and the state rules (FL, OK, MD), and numbers with no zone
NPAS = ("212", "305", "405", "410", "312", "720", "602", "213", "907", "808", "787", "684", "800")
POLICIES = ("strictest", "federal", "none", "09:30-17:45")


@st.composite
def audiences(draw: Any) -> dict[str, Any]:
    n = draw(st.integers(1, 120))
    recipients = []
    for i in range(n):
        npa = draw(st.sampled_from(NPAS))
        tz = draw(st.none() | st.sampled_from(US_ZONES))
        state = draw(st.none() | st.sampled_from(("FL", "OK", "MD", "TX")))
        delay = draw(st.sampled_from((0, 0, 0, 90, 600, 7200, 86_400)))
        recipients.append((f"+1{npa}55{i:05d}", tz, state, draw(st.integers(1, 10)), delay))
    return {
        "recipients": recipients,
        "policy": draw(st.sampled_from(POLICIES)),
        "launch": draw(st.datetimes(datetime(2026, 1, 1), datetime(2026, 12, 31))).replace(
            tzinfo=UTC
        ),
        "window": (draw(st.integers(1, 30)), draw(st.sampled_from((1, 10, 60, 300, 3600)))),
        "mps": draw(st.sampled_from((0.25, 1.0, 4.0, 75.0))),
        "tier": draw(st.sampled_from(("LOW", "TOP"))),
    }


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(audiences())
def test_no_planned_send_falls_in_quiet_hours_and_no_bucket_is_ever_over(a):
    policy = policy_from_name(a["policy"])
    c = camp(window_limit=a["window"][0], window_seconds=a["window"][1],
             rate_limits={"att": {"mps": a["mps"]}}, quiet_hours_policy=a["policy"])  # fmt: skip
    buckets_of = buckets(c, a["tier"])
    t0 = a["launch"].timestamp()
    groups: list[sched.Group] = []
    index: dict[Any, int] = {}
    rows = []
    for phone, tz, state, segs, delay in a["recipients"]:
        r = resolve(phone, policy, tz, state)
        key = (r.windows if policy.enabled else (), segs)
        if key not in index:
            index[key] = len(groups)
            groups.append(sched.Group(key[0], segs))
        rows.append(sched.Row(t0 + delay, index[key]))
    order = sorted(range(len(rows)), key=lambda i: rows[i].ready)  # release order
    rows = [rows[i] for i in order]
    recipients = [a["recipients"][i] for i in order]
    plan = sched.plan(rows, groups, buckets_of, now=t0)

    assert plan.never == 0 and len(plan.times) == len(rows)
    for (phone, tz, state, _, _), row, t in zip(recipients, rows, plan.times, strict=True):
        at = datetime.fromtimestamp(t, UTC)
        assert t >= row.ready
        assert not is_quiet_hours(phone, at, policy, time_zone=tz, state_code=state), (phone, at)
    for b in buckets_of(1):
        costs = [next(x.cost for x in buckets_of(g.segments) if x.key == b.key) for g in groups]
        spent = [costs[r.group] for r in rows]
        if b.calendar_tz is None:
            assert window_violations(plan.times, b.period_s, b.limit, spent) == 0, b.kind
        else:
            per_day: dict[Any, int] = defaultdict(int)
            zone = ZoneInfo(b.calendar_tz)
            for t, cost in zip(plan.times, spent, strict=True):
                per_day[datetime.fromtimestamp(t, zone).date()] += cost
            assert max(per_day.values()) <= b.limit, b.kind
    # the per-hour plan counts every row once
    assert sum(n for _, n in plan.hours) == len(rows)
    assert plan.finish == max(plan.times)
    assert plan.finish <= t0 + timedelta(days=400).total_seconds()
