"""Which buckets apply to a message (pure policy)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from dispatcher.errors import InputError
from dispatcher.throttle.policy import buckets_for, mps_bucket_shape, sender_mps, tmobile_daily_cap


def camp(**kw: object) -> SimpleNamespace:
    base = dict(sid="QE1", window_limit=10, window_seconds=300, messaging_service_sid="MG1",
                sender=None, rate_limits={"att": {"mps": 600, "msg_class": "A"},
                                          "tmobile": {"brand_tier": "TOP"}},
                frequency_cap_count=None, frequency_cap_hours=None)  # fmt: skip
    base.update(kw)
    return SimpleNamespace(**base)


def test_each_bucket_kind() -> None:
    bs = buckets_for(camp(frequency_cap_count=2, frequency_cap_hours=24), brand_id=4,
                     brand_tier=None, sender="+15550001111", recipient="+15551234567",
                     segments=3, recipient_cap=(3, 86_400.0), now=0.0)  # fmt: skip
    by = {b.kind: b for b in bs}
    assert set(by) == {"campaign", "sender_mps", "tmobile_daily", "recipient", "campaign_recipient"}
    assert (by["campaign"].limit, by["campaign"].period_s, by["campaign"].cost) == (10, 300.0, 1)
    assert (by["sender_mps"].limit, by["sender_mps"].period_s, by["sender_mps"].cost) == (
        36_000,
        60.0,
        3,
    )
    assert "MG1" in by["sender_mps"].key
    assert by["tmobile_daily"].limit == 200_000 and by["tmobile_daily"].cost == 3
    assert by["tmobile_daily"].calendar_tz == "America/Los_Angeles"
    assert (by["recipient"].limit, by["recipient"].period_s, by["recipient"].cost) == (
        3,
        86_400.0,
        1,
    )
    assert by["campaign_recipient"].period_s == 24 * 3600
    assert all("{b:4}" in b.key for b in bs)
    assert not any("5551234567" in b.key for b in bs)


def test_mps_choices() -> None:
    assert sender_mps({"att": {"msg_class": "E"}, "tmobile": {"brand_tier": "TOP"}}) == 4.0
    assert sender_mps({"att": {"mps": 75}, "verizon": {"mps": 40}}) == 40.0
    assert sender_mps({}) == 4.0
    assert mps_bucket_shape(1.25) == (75, 60.0)
    assert mps_bucket_shape(0.25, 1.0) == (1, 4.0)


def test_tiers_and_fallbacks() -> None:
    assert tmobile_daily_cap("high-mid") == 40_000
    assert tmobile_daily_cap("Low Mid") == 10_000
    assert tmobile_daily_cap("weird") == 2_000 and tmobile_daily_cap(None) == 2_000
    bs = buckets_for(camp(rate_limits={}, messaging_service_sid=None), brand_id=1,
                     brand_tier="UNCAPPED", sender="+15550001111", recipient="+1555",
                     segments=1, now=0.0)  # fmt: skip
    assert [b.kind for b in bs] == ["campaign", "sender_mps"]
    assert "+15550001111" in bs[1].key and bs[1].limit == 240


def test_bad_input() -> None:
    with pytest.raises(InputError):
        buckets_for(camp(), brand_id=1, brand_tier=None, sender=None, recipient="+1", segments=0,
                    now=0.0)  # fmt: skip
    with pytest.raises(InputError):
        buckets_for(camp(sid=""), brand_id=1, brand_tier=None, sender=None, recipient="+1",
                    segments=1, now=0.0)  # fmt: skip
