"""A short per-process cache of what a status callback needs of its campaign."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import Connection, Integer, bindparam, func, select

from dispatcher.models import Campaign

C: Any = Campaign.__table__  # type: ignore[attr-defined]

_CAMPAIGN = select(
    C.c.sid, func.coalesce(C.c.messaging_service_sid, C.c.sender), C.c.campaign_status
).where(C.c.id == bindparam("b_id", type_=Integer))


class CampaignCache:
    """(sid, sender, campaign_status) by campaign id, kept ``ttl_s`` seconds (monotonic), the way
    delivery/gate.py caches campaigns: a suspension reaches the reactions within that; ``ttl_s`` 0
    disables the cache."""

    def __init__(self, ttl_s: float = 2.0) -> None:
        self.ttl_s = ttl_s
        self._hits: dict[int, tuple[tuple[str, str | None, str | None], float]] = {}

    def get(self, conn: Connection, campaign_id: int) -> tuple[str, str | None, str | None]:
        mono = time.monotonic()
        hit = self._hits.get(campaign_id)
        if hit is not None and mono - hit[1] < self.ttl_s:
            return hit[0]
        sid, sender, status = conn.execute(_CAMPAIGN, {"b_id": campaign_id}).one()
        self._hits[campaign_id] = ((sid, sender, status), mono)
        return sid, sender, status
