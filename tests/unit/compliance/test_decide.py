from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatcher.compliance import (
    ContactState,
    Defer,
    DeferReason,
    OutgoingMessage,
    Send,
    Suppress,
    SuppressReason,
    compose,
    decide,
)
from dispatcher.errors import InputError
from dispatcher.models import Campaign

from .helpers import Camp

NOON_NY = datetime(2026, 7, 1, 16, 0, tzinfo=UTC)  # 12:00 EDT
BODY = compose("Your order shipped", brand_name="Acme", opt_out_language=None, first_message=True)
MSG = OutgoingMessage("+12125550123", BODY, first_message=True, brand_name="Acme")
OK_CONTACT = ContactState(consent_granted=True)


def test_send_with_validity_bound():
    d = decide(MSG, OK_CONTACT, Camp(), now=NOON_NY)
    assert d == Send(valid_until=datetime(2026, 7, 2, 1, 0, tzinfo=UTC), segments=1)


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        ("IN_PROGRESS", SuppressReason.CAMPAIGN_IN_PROGRESS),
        ("PENDING", SuppressReason.CAMPAIGN_IN_PROGRESS),
        ("FAILED", SuppressReason.CAMPAIGN_FAILED),
        ("SUSPENDED", SuppressReason.CAMPAIGN_SUSPENDED),
        (None, SuppressReason.CAMPAIGN_STATUS_UNKNOWN),
        ("WEIRD", SuppressReason.CAMPAIGN_STATUS_UNKNOWN),
    ],
)
def test_campaign_status(status, reason):
    d = decide(MSG, OK_CONTACT, Camp(campaign_status=status), now=NOON_NY)
    assert isinstance(d, Suppress) and d.reason == reason


def test_suppressions():
    now = NOON_NY
    assert decide(MSG, ContactState(True, opted_out=True), Camp(), now=now).reason == "opted_out"
    assert decide(MSG, ContactState(False), Camp(), now=now).reason == "no_consent"
    d = decide(MSG, ContactState(True, suppressed_reason="21614"), Camp(), now=now)
    assert d == Suppress(SuppressReason.CARRIER_SUPPRESSED, "21614")
    bad = OutgoingMessage("+1212", BODY, True)
    assert decide(bad, OK_CONTACT, Camp(), now=now).reason == "invalid_number"
    drift = decide(MSG, OK_CONTACT, Camp(us_app_to_person_usecase="CONVERSATIONAL"), now=now)
    assert drift.reason == SuppressReason.CAMPAIGN_DRIFT
    raw = OutgoingMessage("+12125550123", "Your order shipped", True, brand_name="Acme")
    d = decide(raw, OK_CONTACT, Camp(), now=now)
    assert d == Suppress(SuppressReason.LINT_ERROR, "missing_brand_name")
    link = OutgoingMessage("+12125550123", BODY + " www.acme.com", True)
    assert decide(link, OK_CONTACT, Camp(), now=now) == Suppress(
        SuppressReason.LINT_ERROR, "undeclared_link"
    )


def test_reply_in_conversation_needs_no_consent_or_window():
    reply = OutgoingMessage("+12125550123", "See you at 5", first_message=False, proactive=False)
    night = datetime(2026, 7, 1, 4, 0, tzinfo=UTC)
    assert isinstance(decide(reply, ContactState(False), Camp(), now=night), Send)
    assert (
        decide(reply, ContactState(False, opted_out=True), Camp(), now=night).reason == "opted_out"
    )


def test_quiet_hours_defer():
    night = datetime(2026, 7, 1, 4, 0, tzinfo=UTC)  # 00:00 EDT
    d = decide(MSG, OK_CONTACT, Camp(), now=night)
    assert d == Defer(datetime(2026, 7, 1, 12, 0, tzinfo=UTC), DeferReason.QUIET_HOURS, None)
    sam = OutgoingMessage("+16845550123", BODY, True, brand_name="Acme")
    d = decide(sam, OK_CONTACT, Camp(), now=night)
    assert d.reason == DeferReason.QUIET_HOURS_UNKNOWN_ZONE


def test_state_frequency_cap_then_quiet_hours():
    fl = OutgoingMessage("+13055550123", BODY, True, brand_name="Acme")
    sends = tuple(NOON_NY - timedelta(hours=h) for h in (1, 2, 3))
    d = decide(fl, ContactState(True, recent_sends=sends), Camp(), now=NOON_NY)
    # oldest of the 3 + 24 h = 2026-07-02 13:00 UTC = 09:00 EDT: allowed
    assert d == Defer(
        datetime(2026, 7, 2, 13, 0, tzinfo=UTC), DeferReason.STATE_FREQUENCY_CAP, "FL"
    )
    two = sends[:2]
    assert isinstance(decide(fl, ContactState(True, recent_sends=two), Camp(), now=NOON_NY), Send)
    old = tuple(NOON_NY - timedelta(hours=h) for h in (25, 26, 27))
    assert isinstance(decide(fl, ContactState(True, recent_sends=old), Camp(), now=NOON_NY), Send)
    # state code from the contact overrides the NY area code
    d = decide(MSG, ContactState(True, state_code="MD", recent_sends=sends), Camp(), now=NOON_NY)
    assert d.reason == DeferReason.STATE_FREQUENCY_CAP and d.detail == "MD"


def test_campaign_frequency_cap():
    camp = Camp(frequency_cap_count=1, frequency_cap_hours=48)
    sends = (NOON_NY - timedelta(hours=47),)
    d = decide(MSG, ContactState(True, recent_sends=sends), camp, now=NOON_NY)
    assert d == Defer(NOON_NY + timedelta(hours=1), DeferReason.FREQUENCY_CAP, None)


def test_naive_now_rejected():
    with pytest.raises(InputError):
        decide(MSG, OK_CONTACT, Camp(), now=datetime(2026, 7, 1, 12))


def test_campaign_row_works_as_is():
    row = Campaign(
        sid="QE" + "a" * 32,
        brand_id=1,
        description="d",
        message_flow="f",
        us_app_to_person_usecase="ACCOUNT_NOTIFICATION",
        campaign_status="VERIFIED",
    )
    assert isinstance(decide(MSG, OK_CONTACT, row, now=NOON_NY), Send)
    row.frequency_cap_count, row.frequency_cap_hours = 1, 24
    d = decide(MSG, ContactState(True, recent_sends=(NOON_NY,)), row, now=NOON_NY)
    assert d.reason == DeferReason.FREQUENCY_CAP


phones = st.sampled_from(
    [
        "+12125550123",
        "+13055550123",
        "+18085550123",
        "+19075550123",
        "+17875550123",
        "+16715550123",
        "+16845550123",
        "+18005550123",
        "+1212",
    ]
)
instants = st.datetimes(
    min_value=datetime(2024, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC)
)
campaigns = st.builds(
    Camp,
    campaign_status=st.sampled_from(["VERIFIED", "IN_PROGRESS", "FAILED", "SUSPENDED", None]),
    us_app_to_person_usecase=st.sampled_from(["MARKETING", "CONVERSATIONAL", "2FA"]),
    has_embedded_links=st.booleans(),
    has_embedded_phone=st.booleans(),
    quiet_hours_policy=st.sampled_from(["strictest", "federal", "none", "09:00-17:00"]),
    frequency_cap_count=st.one_of(st.none(), st.integers(0, 5)),
    frequency_cap_hours=st.one_of(st.none(), st.integers(1, 72)),
)


@given(
    phones,
    st.text(max_size=200),
    st.booleans(),
    st.booleans(),
    st.booleans(),
    instants,
    campaigns,
    st.lists(instants, max_size=5),
    st.sampled_from([None, "FL", "TX"]),
    st.sampled_from([None, "America/Chicago", "Pacific/Honolulu"]),
)
@settings(max_examples=300, deadline=None)
def test_never_send_to_opted_out(
    phone, body, first, proactive, consent, now, camp, sends, state, tz
):
    msg = OutgoingMessage(phone, body, first_message=first, proactive=proactive)
    contact = ContactState(
        consent, opted_out=True, time_zone=tz, state_code=state, recent_sends=tuple(sends)
    )
    assert not isinstance(decide(msg, contact, camp, now=now), Send)
