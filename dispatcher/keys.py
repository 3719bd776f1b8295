"""Every Redis key name the product uses, in one place.

Every key one call (a script, an MGET, a MULTI) touches sits in one Redis Cluster hash slot, by
a hash tag: throttle keys carry ``{b:<brand>}`` (all buckets of one reservation: campaign window,
sender MPS, brand daily cap, recipient cap, the brand's epoch), a sender's repetition structures
``{r:<sender>}``, halt keys ``{halt}``.  tests/integration/test_redis_cluster.py runs them on a
three-master cluster.
"""

from __future__ import annotations

PREFIX = "dispatcher"


def _brand_tag(brand_id: int | str) -> str:
    return "{b:" + str(brand_id) + "}"


def bucket_key(brand_id: int | str, kind: str, ident: str) -> str:
    """Throttle bucket state, e.g. ``dispatcher:tb:{b:1}:campaign:QE...``."""
    return f"{PREFIX}:tb:{_brand_tag(brand_id)}:{kind}:{ident}"


def broker_epoch_key() -> str:
    """A random token on the broker's Redis; a changed one means Redis lost its keys (and the
    queue its messages): the scheduler releases every carried row again at once."""
    return f"{PREFIX}:broker:epoch"


def scheduler_leader_key() -> str:
    return f"{PREFIX}:scheduler:leader"


def repetition_key(sender: str, day: str) -> str:
    """Per-sender per-day HyperLogLog of distinct body hashes (metrics)."""
    return f"{PREFIX}:rep:{{r:{sender}}}:{day}"


def repetition_counts_key(sender: str, day: str) -> str:
    """Per-sender per-day body counts; the same hash tag as ``repetition_key`` (one script)."""
    return f"{PREFIX}:repc:{{r:{sender}}}:{day}"


def throttle_epoch_key(brand_id: int | str) -> str:
    """Per-brand throttle generation token; a missing key means Redis lost the bookings."""
    return f"{PREFIX}:tb:{_brand_tag(brand_id)}:epoch"


def throttle_seed_lock_key(brand_id: int | str) -> str:
    """Held by the one worker that re-seeds a brand's throttle from the outbox after a loss."""
    return f"{PREFIX}:tb:{_brand_tag(brand_id)}:seeding"


def throttle_sum_key(bucket_key: str) -> str:
    """A sliding bucket's state 'sum,first,last' (reserve.lua; same hash tag as the bucket)."""
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


# Halt signals (dispatcher/halts.py).  One hash tag for all: the worker's MGET of the epoch and
# three keys is one command, in one slot of a Redis Cluster.
_HALT = f"{PREFIX}:{{halt}}"


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
