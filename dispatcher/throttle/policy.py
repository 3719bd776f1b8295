"""Which rate buckets apply to one message (pure: no I/O, ``now`` is an argument).

A :class:`Bucket` is "at most ``limit`` units in any interval of ``period_s`` seconds" (a sliding
window, see :mod:`dispatcher.throttle.redis`), or, when ``calendar_tz`` is set, "at most ``limit``
units per calendar day starting at local midnight in that zone" (how T-Mobile meters its daily cap).
``cost`` is what this message takes from the bucket: message segments for carrier buckets, 1 for the
campaign window and the recipient caps (compliance.md 2.3).

Choices documented here (docs/throttle.md has the reasoning):

* **Sender MPS.** The recipient's carrier is unknown without a Lookup, so the sender bucket uses the
  *smallest* per-carrier rate found in ``rate_limits`` (an explicit ``mps``, else the AT&T
  ``msg_class`` via compliance.md 3.3); with none, ``DEFAULT_MPS`` (4 MPS = trust score 1-49 / Low
  Volume Standard, compliance.md 3.2 — the conservative figure).  It is metered per
  ``mps_window_s`` (default 60 s, i.e. AT&T's transactions-per-minute) with limit ``mps * window``:
  a 1-second window would leave a reservation only ~10 ms of send grace; over a minute, a short
  burst is absorbed by Twilio's own per-sender queue (compliance.md 3.5).  Its grace is 1 s (not
  the 0.6 s default) so that every reservation gets the same 1 s send window (98.4 % of the
  MPS).  Keyed by the messaging service when there is one, else the From number.
* **T-Mobile daily cap** (compliance.md 3.4): per brand, in segments, by brand tier; applied to
  every message because the carrier is unknown (conservative).  Resets at midnight
  ``America/Los_Angeles`` ([BIRD]: "midnight Pacific"; [TMO]: "next calendar day");
  configurable with ``tmobile_reset_tz``.
  Unknown tier strings fall back to the lowest tier; ``UNCAPPED`` adds no bucket.
* **Recipient caps.** ``recipient_cap=(count, period_s)`` (e.g. Florida 3 per 24 h) is per recipient
  across the brand's campaigns; the campaign's ``frequency_cap_count/hours`` is per recipient and
  campaign.  Recipients appear in keys only as a hash (no phone numbers in Redis key names).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Any

from dispatcher import keys
from dispatcher.errors import InputError

DEFAULT_MPS = 4.0
DEFAULT_MPS_WINDOW_S = 60.0
TMOBILE_RESET_TZ = "America/Los_Angeles"
DAY_S = 86_400.0

#: compliance.md 3.4 (segments + MMS per day, per brand)
TMOBILE_DAILY_CAPS: dict[str, int | None] = {
    "TOP": 200_000,
    "HIGH_MID": 40_000,
    "LOW_MID": 10_000,
    "LOW": 2_000,
    "UNCAPPED": None,
}
#: compliance.md 3.3 (TPM / 60)
ATT_CLASS_MPS: dict[str, float] = {
    "A": 75.0, "B": 75.0, "C": 40.0, "D": 40.0, "E": 4.0, "F": 4.0, "T": 1.25,
    "K": 75.0, "P": 40.0, "S": 150.0, "X": 75.0, "W": 0.25, "G": 1.0, "N": 1.0,
}  # fmt: skip

#: the kinds whose key depends on the recipient (every other bucket is the campaign's or brand's)
RECIPIENT_KINDS = frozenset({"recipient", "campaign_recipient"})


@dataclass(frozen=True, slots=True)
class Bucket:
    """``limit`` units per ``period_s`` (sliding) or per calendar day in ``calendar_tz``.

    ``grace_s``: how late after its booked slot a send may still happen (see the lateness argument
    in :mod:`dispatcher.throttle.redis`).  ``None`` -> ``min(1 s, 1 % of period_s)``.
    """

    key: str
    limit: int
    period_s: float
    cost: int = 1
    kind: str = "window"
    grace_s: float | None = None
    calendar_tz: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.limit, int) or isinstance(self.limit, bool) or self.limit < 1:
            raise InputError(f"bucket {self.kind}: limit must be a positive integer", field="limit")
        if not (isinstance(self.period_s, int | float) and math.isfinite(self.period_s)):
            raise InputError(f"bucket {self.kind}: period_s must be a number", field="period_s")
        if self.period_s < 0.001:
            raise InputError(f"bucket {self.kind}: period_s must be >= 1 ms", field="period_s")
        if not isinstance(self.cost, int) or isinstance(self.cost, bool) or self.cost < 1:
            raise InputError(f"bucket {self.kind}: cost must be a positive integer", field="cost")
        if self.cost > self.limit:
            raise InputError(
                f"bucket {self.kind}: cost {self.cost} exceeds limit {self.limit}", field="cost"
            )
        if self.grace_s is not None and not (0 <= self.grace_s < self.period_s):
            raise InputError(f"bucket {self.kind}: grace_s must be in [0, period)", field="grace")
        if self.calendar_tz is not None and self.period_s != DAY_S:
            raise InputError(f"bucket {self.kind}: calendar buckets are daily", field="period_s")
        if "{" not in self.key:
            raise InputError(f"bucket {self.kind}: key has no hash tag", field="key")

    @property
    def grace(self) -> float:
        if self.grace_s is not None:
            return float(self.grace_s)
        return min(1.0, 0.01 * float(self.period_s))


def normalise_tier(tier: str | None) -> str:
    if not tier:
        return "LOW"
    t = str(tier).strip().upper().replace("-", "_").replace(" ", "_")
    aliases = {"HIGHMID": "HIGH_MID", "MID_HIGH": "HIGH_MID", "LOWMID": "LOW_MID",
               "MID_LOW": "LOW_MID", "BASIC": "LOW", "LOW_VOLUME": "LOW"}  # fmt: skip
    t = aliases.get(t, t)
    return t if t in TMOBILE_DAILY_CAPS else "LOW"


def tmobile_daily_cap(tier: str | None) -> int | None:
    return TMOBILE_DAILY_CAPS[normalise_tier(tier)]


def sender_mps(rate_limits: Mapping[str, Any] | None, default: float = DEFAULT_MPS) -> float:
    """Smallest per-carrier MPS declared in ``rate_limits`` (see module docstring)."""
    found: list[float] = []
    for carrier, entry in (rate_limits or {}).items():
        if not isinstance(entry, Mapping):
            continue
        mps = entry.get("mps")
        if isinstance(mps, int | float) and not isinstance(mps, bool) and mps > 0:
            found.append(float(mps))
            continue
        cls = entry.get("msg_class")
        if str(carrier).lower() == "att" and isinstance(cls, str):
            if cls.strip().upper() in ATT_CLASS_MPS:
                found.append(ATT_CLASS_MPS[cls.strip().upper()])
    return min(found) if found else float(default)


def mps_bucket_shape(mps: float, window_s: float = DEFAULT_MPS_WINDOW_S) -> tuple[int, float]:
    """(limit, period_s) with an integer limit for ``mps`` metered over about ``window_s``."""
    if not (mps > 0 and window_s > 0):
        raise InputError("MPS and its window must be positive", field="mps")
    frac = Fraction(mps).limit_denominator(1000) * Fraction(window_s).limit_denominator(1000)
    if frac >= 1:
        return max(1, math.floor(frac)), float(window_s)
    return 1, float(window_s) / float(frac)  # slower than 1 per window: widen the window


def recipient_hash(recipient: str) -> str:
    return hashlib.sha256(recipient.encode()).hexdigest()[:20]


def buckets_for(
    campaign: Any,
    *,
    brand_id: int | str,
    brand_tier: str | None,
    sender: str | None,
    recipient: str,
    segments: int,
    recipient_cap: tuple[int, float] | None = None,
    now: float,
    tmobile_reset_tz: str = TMOBILE_RESET_TZ,
    mps_window_s: float = DEFAULT_MPS_WINDOW_S,
    default_mps: float = DEFAULT_MPS,
    tmobile_cap_override: int | None = None,
    min_grace_s: float = 0.0,
) -> list[Bucket]:
    """The buckets one message to ``recipient`` takes (all keys tagged by ``brand_id``).

    ``now`` is accepted for time-dependent policy (pure function contract); the buckets themselves
    do not depend on it today.
    """
    if not isinstance(segments, int) or isinstance(segments, bool) or segments < 1:
        raise InputError("segments must be a positive integer", field="segments")
    if not recipient:
        raise InputError("recipient is required", field="recipient")
    del now
    sid = str(getattr(campaign, "sid", None) or "")
    if not sid:
        raise InputError("campaign has no sid", field="sid")
    out: list[Bucket] = []
    # 1. campaign window (messages)
    out.append(
        Bucket(
            keys.bucket_key(brand_id, "campaign", sid),
            int(getattr(campaign, "window_limit", 10) or 10),
            float(getattr(campaign, "window_seconds", 300) or 300),
            1,
            "campaign",
        )
    )
    # 2. sender MPS (segments)
    ident = (
        getattr(campaign, "messaging_service_sid", None)
        or sender
        or getattr(campaign, "sender", None)
        or sid
    )
    limit, period = mps_bucket_shape(
        sender_mps(getattr(campaign, "rate_limits", None), default_mps), mps_window_s
    )
    out.append(
        Bucket(
            keys.bucket_key(brand_id, "mps", str(ident)),
            limit,
            period,
            min(segments, limit),
            "sender_mps",
            grace_s=min(1.0, 0.1 * period),
        )  # fmt: skip
    )
    # 3. T-Mobile daily cap per brand (segments, calendar day)
    rl = getattr(campaign, "rate_limits", None) or {}
    if brand_tier is None and isinstance(rl.get("tmobile"), Mapping):
        brand_tier = rl["tmobile"].get("brand_tier")
    cap = (
        tmobile_cap_override if tmobile_cap_override is not None else tmobile_daily_cap(brand_tier)
    )
    if cap is not None:
        out.append(
            Bucket(
                keys.bucket_key(brand_id, "tmo", "daily"),
                int(cap),
                DAY_S,
                min(segments, int(cap)),
                "tmobile_daily",
                calendar_tz=tmobile_reset_tz,
            )  # fmt: skip
        )
    # 4. recipient caps (messages)
    rh = recipient_hash(recipient)
    if recipient_cap is not None:
        count, period_s = recipient_cap
        out.append(
            Bucket(
                keys.bucket_key(brand_id, "rcpt", f"{rh}:{int(period_s)}"),
                int(count),
                float(period_s),
                1,
                "recipient",
            )  # fmt: skip
        )
    fc_count = getattr(campaign, "frequency_cap_count", None)
    fc_hours = getattr(campaign, "frequency_cap_hours", None)
    if fc_count and fc_hours:
        out.append(
            Bucket(
                keys.bucket_key(brand_id, "crcpt", f"{sid}:{rh}"),
                int(fc_count),
                float(fc_hours) * 3600.0,
                1,
                "campaign_recipient",
            )  # fmt: skip
        )
    if min_grace_s > 0:  # the caller's wake-up lateness (queue delay precision) needs room
        out = [
            b if b.grace >= min_grace_s else replace(b, grace_s=min(min_grace_s, b.period_s / 2))
            for b in out
        ]
    return out
