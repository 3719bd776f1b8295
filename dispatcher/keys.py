"""Every Redis key name the product uses, in one place.

Throttle keys carry a Redis Cluster hash tag ``{b:<brand>}`` so that all buckets touched by one
reservation (campaign window, sender MPS, brand daily cap, recipient cap) sit in one hash slot.
"""

from __future__ import annotations

PREFIX = "dispatcher"


def _brand_tag(brand_id: int | str) -> str:
    return "{b:" + str(brand_id) + "}"


def bucket_key(brand_id: int | str, kind: str, ident: str) -> str:
    """Throttle bucket state, e.g. ``dispatcher:tb:{b:1}:campaign:QE...``."""
    return f"{PREFIX}:tb:{_brand_tag(brand_id)}:{kind}:{ident}"


def scheduler_leader_key() -> str:
    return f"{PREFIX}:scheduler:leader"


def repetition_key(sender: str, day: str) -> str:
    """Per-sender per-day HyperLogLog of distinct body hashes (metrics)."""
    return f"{PREFIX}:rep:{sender}:{day}"


def repetition_counts_key(sender: str, day: str) -> str:
    return f"{PREFIX}:repc:{sender}:{day}"


def throttle_epoch_key(brand_id: int | str) -> str:
    """Per-brand throttle generation token; a missing key means Redis lost the bookings."""
    return f"{PREFIX}:tb:{_brand_tag(brand_id)}:epoch"


def throttle_sum_key(bucket_key: str) -> str:
    """Running total cost of a sliding bucket's log (same hash tag as the bucket)."""
    return f"{bucket_key}:sum"


def throttle_release_key(brand_id: int | str, reservation_id: str) -> str:
    """Tombstone that makes ``RedisThrottle.release`` idempotent."""
    return f"{PREFIX}:tb:{_brand_tag(brand_id)}:rel:{reservation_id}"


def repetition_senders_key(day: str) -> str:
    """Set of the senders that have repetition structures for ``day`` (metrics)."""
    return f"{PREFIX}:rep:senders:{day}"


def brand_daily_segments_key(brand: str, day: str) -> str:
    """Segments sent for ``brand`` on ``day`` (UTC), for the daily-volume gauge (metrics)."""
    return f"{PREFIX}:bvol:{brand}:{day}"


def brand_daily_index_key(day: str) -> str:
    """Set of the brands with a daily-volume counter for ``day`` (metrics)."""
    return f"{PREFIX}:bvol:brands:{day}"


# Halt signals (dispatcher/halts.py).  No hash tag: on a Redis Cluster the worker's MGET of the
# epoch and three keys would need one (e.g. ``dispatcher:{halt}``).
_HALT = f"{PREFIX}:halt"


def halt_epoch_key() -> str:
    """The halt epoch: a changed (or lost) epoch tells workers to reread halts from the
    database."""
    return f"{_HALT}:epoch"


def halt_contact_key(contact_id: int) -> str:
    """Set while a contact's consent was just revoked."""
    return f"{_HALT}:c:{contact_id}"


def halt_run_key(run_id: int) -> str:
    """Set while a run was just paused or cancelled."""
    return f"{_HALT}:r:{run_id}"


def halt_campaign_key(campaign_id: int) -> str:
    """Set while a campaign was just stopped."""
    return f"{_HALT}:k:{campaign_id}"
