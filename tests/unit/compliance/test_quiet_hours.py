from datetime import UTC, datetime, time, timedelta

import phonenumbers
import pytest
from phonenumbers import geocoder

from dispatcher.compliance import (
    QuietHoursPolicy,
    allowed_until,
    is_quiet_hours,
    next_allowed_time,
    policy_from_name,
)
from dispatcher.compliance.npa import STATE_NPAS
from dispatcher.compliance.quiet_hours import (
    US_ZONES,
    allowed_intervals,
    fallback_windows,
    resolve,
)
from dispatcher.errors import InputError, InvalidPhoneError

NY, FL, OK, MD = "+12125550123", "+13055550123", "+14055550123", "+14105550123"
HI, AK, PR, GU = "+18085550123", "+19075550123", "+17875550123", "+16715550123"
P = QuietHoursPolicy()


def utc(*a):
    return datetime(*a, tzinfo=UTC)


QUIET = [
    # phone, at (UTC), quiet?
    (NY, utc(2026, 7, 1, 11, 59), True),  # 07:59 EDT
    (NY, utc(2026, 7, 1, 12, 0), False),  # 08:00 EDT
    (NY, utc(2026, 7, 2, 0, 59), False),  # 20:59 EDT
    (NY, utc(2026, 7, 2, 1, 0), True),  # 21:00 EDT
    (NY, utc(2026, 1, 5, 12, 30), True),  # 07:30 EST (winter: UTC-5)
    (NY, utc(2026, 1, 5, 13, 0), False),
    (FL, utc(2026, 7, 1, 23, 59), False),  # 19:59 EDT
    (FL, utc(2026, 7, 2, 0, 0), True),  # 20:00 EDT: Florida stops at 20:00
    (OK, utc(2026, 7, 2, 0, 59), False),  # 19:59 CDT
    (OK, utc(2026, 7, 2, 1, 0), True),  # 20:00 CDT
    (MD, utc(2026, 7, 2, 0, 0), True),  # 20:00 EDT
    (HI, utc(2026, 7, 1, 17, 59), True),  # 07:59 HST (no DST)
    (HI, utc(2026, 7, 1, 18, 0), False),
    (HI, utc(2026, 1, 5, 18, 0), False),  # same offset in winter
    (HI, utc(2026, 7, 2, 7, 0), True),  # 21:00 HST
    (AK, utc(2026, 7, 1, 16, 0), True),  # 08:00 AKDT but 07:00 HDT in Adak (907 covers both)
    (AK, utc(2026, 7, 1, 17, 0), False),  # 08:00 HDT
    (AK, utc(2026, 7, 2, 5, 0), True),  # 21:00 AKDT
    (PR, utc(2026, 7, 1, 11, 59), True),  # 07:59 AST (no DST)
    (PR, utc(2026, 1, 5, 12, 0), False),  # 08:00 AST in winter too
    (GU, utc(2026, 7, 1, 21, 59), True),  # 07:59 ChST (UTC+10)
    (GU, utc(2026, 7, 1, 22, 0), False),
]


@pytest.mark.parametrize(("phone", "at", "quiet"), QUIET)
def test_quiet_table(phone, at, quiet):
    assert is_quiet_hours(phone, at, P) is quiet


def test_alaska_uses_most_restrictive_zone():
    # 907 maps to Anchorage (UTC-8 summer) and Adak (UTC-9): 08:00 AKDT is 07:00 in Adak.
    assert is_quiet_hours(AK, utc(2026, 7, 1, 16, 30), P)
    assert next_allowed_time(AK, utc(2026, 7, 1, 16, 30), P) == utc(2026, 7, 1, 17, 0)


def test_dst_spring_forward():
    # 2026-03-08: clocks jump 02:00 -> 03:00 in New York; 08:00 EDT = 12:00 UTC that day.
    assert next_allowed_time(NY, utc(2026, 3, 8, 6, 0), P) == utc(2026, 3, 8, 12, 0)
    # day before (EST): 08:00 = 13:00 UTC
    assert next_allowed_time(NY, utc(2026, 3, 7, 6, 0), P) == utc(2026, 3, 7, 13, 0)
    assert not is_quiet_hours(NY, utc(2026, 3, 8, 12, 0), P)


def test_dst_fall_back():
    # 2026-11-01: 02:00 EDT -> 01:00 EST.  08:00 EST = 13:00 UTC.
    assert next_allowed_time(NY, utc(2026, 11, 1, 5, 30), P) == utc(2026, 11, 1, 13, 0)
    assert is_quiet_hours(NY, utc(2026, 11, 1, 12, 30), P)  # 07:30 EST


def test_next_allowed_after_evening_is_next_morning():
    assert next_allowed_time(FL, utc(2026, 7, 2, 0, 30), P) == utc(2026, 7, 2, 12, 0)
    at = utc(2026, 7, 1, 15, 0)
    assert next_allowed_time(FL, at, P) == at


def test_allowed_until():
    assert allowed_until(NY, utc(2026, 7, 1, 15), P) == utc(2026, 7, 2, 1)
    assert allowed_until(FL, utc(2026, 7, 1, 15), P) == utc(2026, 7, 2, 0)
    assert allowed_until(NY, utc(2026, 7, 1, 3), P) is None


def test_time_zone_override_and_state_code():
    # A New York number whose contact lives in Los Angeles.
    assert is_quiet_hours(NY, utc(2026, 7, 1, 14, 0), P, time_zone="America/Los_Angeles")
    assert not is_quiet_hours(NY, utc(2026, 7, 1, 15, 0), P, time_zone="America/Los_Angeles")
    # A New York number whose owner is known to live in Florida: 20:00 end.
    assert is_quiet_hours(NY, utc(2026, 7, 2, 0, 30), P, state_code="FL")
    assert not is_quiet_hours(NY, utc(2026, 7, 2, 0, 30), P)


def test_unknown_zone_needs_every_us_zone():
    # American Samoa 684 has no zone in phonenumbers: treated as every US zone + state rules.
    sam = "+16845550123"
    assert is_quiet_hours(sam, utc(2026, 7, 1, 15, 0), P)  # 05:00 in Honolulu
    t = next_allowed_time(sam, utc(2026, 7, 1, 15, 0), P)
    assert t == utc(2026, 7, 1, 18, 0)  # 08:00 HST, 14:00 EDT
    assert not is_quiet_hours(sam, t, P)


def test_policies():
    assert policy_from_name(None) == QuietHoursPolicy()
    fed = policy_from_name("federal")
    assert not is_quiet_hours(FL, utc(2026, 7, 2, 0, 30), fed)  # 20:30 EDT
    off = policy_from_name("none")
    assert not is_quiet_hours(NY, utc(2026, 7, 1, 3), off)
    custom = policy_from_name("09:00-17:00")
    assert custom.start == time(9) and custom.end == time(17)
    assert is_quiet_hours(NY, utc(2026, 7, 1, 12, 30), custom)
    with pytest.raises(InputError):
        policy_from_name("sometimes")
    with pytest.raises(InputError):
        policy_from_name("18:00-09:00")


def test_bad_inputs():
    with pytest.raises(InputError):
        is_quiet_hours(NY, datetime(2026, 7, 1, 12), P)
    with pytest.raises(InvalidPhoneError):
        is_quiet_hours("not a number", utc(2026, 7, 1), P)
    with pytest.raises(InputError):
        is_quiet_hours(NY, utc(2026, 7, 1), P, time_zone="Mars/Olympus")


@pytest.mark.parametrize("state", sorted(STATE_NPAS))
def test_npa_table_matches_geocoder(state):
    names = {"FL": "Florida", "OK": "Oklahoma", "MD": "Maryland"}
    for npa in STATE_NPAS[state]:
        descs = {
            geocoder.description_for_number(phonenumbers.parse(f"+1{npa}{x}4567"), "en")
            for x in (234, 555, 789, 321)
        }
        assert any(names[state] in d or d.endswith(f", {state}") for d in descs), (npa, descs)


# ------------------------------------------------------------------ unknown zones (issue 21)
def test_non_geographic_numbers_have_an_unknown_zone():
    # phonenumbers lists every NANP zone (Guam to Newfoundland) for these: it does not know
    for phone in ("+15005550006", "+18005550100", "+18885550100", "+19005550100"):
        r = resolve(phone, P)
        assert r.unknown_zone and r.windows == fallback_windows(P), phone
    assert not resolve(NY, P).unknown_zone and not resolve(GU, P).unknown_zone


def test_unknown_zone_window_is_the_intersection_of_every_us_zone_all_year():
    """The most restrictive window over all US zones (08:00 in Honolulu to 20:00 in Puerto
    Rico): 18:00-00:00 UTC every day of 2026, DST days included; nothing outside it is open
    in every zone, everything inside is."""
    windows = fallback_windows(P)
    assert {z.key for z, _, _ in windows} == set(US_ZONES)
    day = utc(2026, 1, 1)
    while day.year == 2026:
        got = allowed_intervals(windows, day, day + timedelta(days=1))
        assert got == [(day + timedelta(hours=18), day + timedelta(days=1))], got
        for minute in range(0, 24 * 60, 30):
            at = day + timedelta(minutes=minute)
            everywhere = all(
                not is_quiet_hours(NY, at, P, time_zone=z, state_code="FL") for z in US_ZONES
            )
            assert everywhere is (minute >= 18 * 60), at
        day += timedelta(days=1)


def test_allowed_intervals_agree_with_the_gate_to_the_minute():
    for phone, kw in ((NY, {}), (FL, {}), (AK, {}), (HI, {}), (NY, {"time_zone": "Asia/Tokyo"})):
        r = resolve(phone, P, kw.get("time_zone"))
        start = utc(2026, 3, 6)
        spans = allowed_intervals(r.windows, start, start + timedelta(days=4))
        for minute in range(0, 4 * 24 * 60, 7):
            at = start + timedelta(minutes=minute)
            inside = any(a <= at < b for a, b in spans)
            assert inside is not is_quiet_hours(phone, at, P, **kw), (phone, at)
