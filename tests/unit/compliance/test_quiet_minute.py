"""The gate's per-minute quiet-hours memo (``quiet_hours.verdict``) answers what the direct
functions answer at the instant itself: at every second of a minute, across DST transitions,
half-hour and 45-minute zones, and a historical offset of -0:44:30 (Monrovia before 1972)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatcher.compliance import quiet_hours as qh
from dispatcher.errors import ComplianceError

ZONES = [
    "America/New_York",
    "America/Chicago",
    "America/Phoenix",
    "Pacific/Honolulu",
    "America/Adak",
    "Australia/Lord_Howe",  # a 30-minute DST shift
    "Pacific/Chatham",  # +12:45
    "Asia/Kolkata",  # +05:30
    "Africa/Monrovia",  # -0:44:30 until 1972-01-07
    "Europe/London",
    "Pacific/Kiritimati",  # +14
]


def direct(resolved: qh.Resolved, at: datetime) -> qh.Verdict | type[ComplianceError]:
    quiet = qh._quiet(resolved.windows, at)
    if not quiet:
        return qh.Verdict(False, qh._allowed_until(resolved, at), None)
    try:
        return qh.Verdict(True, None, qh._next_allowed(resolved, at))
    except ComplianceError:
        return ComplianceError


def memoised(resolved: qh.Resolved, at: datetime) -> qh.Verdict | type[ComplianceError]:
    try:
        return qh.verdict(resolved, at)
    except ComplianceError:
        return ComplianceError


WINDOWS = st.lists(
    st.tuples(
        st.sampled_from(ZONES),
        st.integers(0, 23 * 60),
        st.integers(1, 24 * 60 - 1),
    ).filter(lambda w: w[1] < w[2]),
    min_size=1,
    max_size=3,
).map(lambda ws: tuple((ZoneInfo(z), a, b) for z, a, b in ws))

# the transitions of the zones above, so that draws land on the minutes around them
EDGES = [
    datetime(2026, 3, 8, 7, 0, tzinfo=UTC),  # New York spring forward
    datetime(2026, 11, 1, 6, 0, tzinfo=UTC),  # New York fall back
    datetime(2026, 4, 4, 15, 0, tzinfo=UTC),  # Lord Howe 02:00 -> 01:30
    datetime(2026, 10, 3, 15, 30, tzinfo=UTC),  # Lord Howe 02:00 -> 02:30
    datetime(1972, 1, 7, 0, 44, 30, tzinfo=UTC),  # Monrovia -0:44:30 -> 0:00
    datetime(2026, 3, 29, 1, 0, tzinfo=UTC),  # London
]
MINUTES = st.one_of(
    st.datetimes(datetime(1960, 1, 1), datetime(2080, 1, 1)).map(
        lambda d: d.replace(second=0, microsecond=0, tzinfo=UTC)
    ),
    st.tuples(st.sampled_from(EDGES), st.integers(-24 * 60, 24 * 60)).map(
        lambda e: (e[0] + timedelta(minutes=e[1])).replace(second=0, microsecond=0)
    ),
)
IN_MINUTE = st.integers(0, 60_000_000 - 1).map(lambda us: timedelta(microseconds=us))


@settings(max_examples=1500, deadline=None)
@given(WINDOWS, MINUTES, st.lists(IN_MINUTE, min_size=1, max_size=4))
def test_the_minute_memo_answers_as_the_instant(windows, minute, offsets):
    resolved = qh.Resolved(windows, None, False, None)
    qh._memo = qh._Memo(minute, minute, {})  # a fresh memo: the first call fills it
    for off in offsets:
        at = minute + off
        assert memoised(resolved, at) == direct(resolved, at), (at, windows)


@pytest.mark.parametrize("edge", EDGES)
def test_every_second_around_a_transition(edge):
    windows = tuple((ZoneInfo(z), 0, 24 * 60 - 1) for z in ZONES) + (
        (ZoneInfo("Africa/Monrovia"), 44, 23 * 60),
        (ZoneInfo("Australia/Lord_Howe"), 90, 150),
    )
    for ws in [windows[k : k + 1] for k in range(len(windows))] + [windows[-2:]]:
        resolved = qh.Resolved(ws, None, False, None)
        for s in range(-180, 181, 7):
            at = edge + timedelta(seconds=s, microseconds=s % 3)
            assert memoised(resolved, at) == direct(resolved, at), (at, ws)


def test_an_instant_not_in_utc_is_answered_directly():
    resolved = qh.Resolved(((ZoneInfo("America/New_York"), 480, 1260),), None, False, None)
    at = datetime(2026, 7, 1, 7, 59, 59, tzinfo=ZoneInfo("America/New_York"))
    assert memoised(resolved, at) == direct(resolved, at)
    assert qh.verdict(resolved, at).quiet
