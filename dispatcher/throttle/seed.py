"""Re-seed a brand's throttle from the outbox after Redis lost it (issue 21.3).

The throttle's state is volatile; the outbox is not.  After a flush, a restart without
persistence or a failover to an empty node the brand's epoch key is gone, and
``RedisThrottle`` (built with a seeder) grants no reservation until ``dispatcher/lua/seed.lua``
has put back, in the same script that creates the new epoch, every send of the brand that may
share a window with a new one: the rows handed to the carrier within the last period of each
bucket, and the segments of the current T-Mobile day.  docs/throttle.md has the proof; in short,
a send that happened at ``a`` is placed at ``p`` with ``a - g < p <= max(a, seed time)``:

* a row with ``sent_at`` (recorded after the carrier answered, so ``a <= sent_at``): at
  ``min(sent_at, seed time)``;
* a row in ``unknown`` (its send failed ambiguously or its worker was lost, both after any
  handover): at ``min(updated_at, seed time)``;
* a row in ``sending`` (claimed; it may reach the carrier after the loss, but only on a slot its
  worker checked before it, so within the grace of the loss): at the seed time, as ``s<row id>``,
  unless the worker seeding holds its claim and has not handed it over (``unsent``).

A row still ``sending`` that never got a slot is counted although it was not sent, until it
reserves (its reservation removes ``s<row id>``) or the window passes: conservative.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import or_, select
from sqlmodel import col
from sqlmodel import select as model_select

from dispatcher import outbox
from dispatcher.models import Brand, Campaign
from dispatcher.throttle.policy import buckets_for


@dataclass
class SeedBucket:
    """What one bucket held before the loss: sliding ``entries`` are ``(position ms or None for
    the seed time, cost, member)``; calendar ones ``(period start ms, cost, "")``.  ``span_ms``:
    the sliding window with its grace (older entries are dropped), or the calendar hash's TTL."""

    key: str
    calendar: bool
    span_ms: int
    entries: list[tuple[int | None, int, str]] = field(default_factory=list)

    def arg(self) -> str:
        """This bucket's ARGV for seed.lua."""
        if self.calendar:
            per: dict[int | None, int] = {}
            for p, c, _ in self.entries:
                per[p] = per.get(p, 0) + c
            body = ",".join(f"{p}:{c}" for p, c in per.items())
            return f"c:{self.span_ms}|{body}"
        body = ",".join(f"{'' if p is None else p}:{c}:{m}" for p, c, m in self.entries)
        return f"w:{self.span_ms}|{body}"


#: (a brand's id, now on the throttle's clock, claimed rows the caller has not handed over) ->
#: the brand's buckets' state before the loss (``OutboxSeeder``; tests pass their own)
Seeder = Callable[[str, float, frozenset[int]], list[SeedBucket]]

_IN_FLIGHT = (outbox.SENDING, outbox.UNKNOWN)
_DAY_MS = 86_400_000  # (a local day is up to 25 h: the query looks 25 h back)


def _ms(v: datetime) -> int:
    return round((v if v.tzinfo else v.replace(tzinfo=UTC)).timestamp() * 1000)


class OutboxSeeder:
    """The outbox's record of what a brand handed to the carrier lately, as the buckets that
    the pipeline would have charged for it (``throttle.policy.buckets_for``, with the pipeline's
    ``min_grace_s``)."""

    def __init__(self, db: object, *, min_grace_s: float = 0.0) -> None:
        self.db = db
        self.min_grace_s = min_grace_s

    def __call__(
        self, brand: str, now: float, unsent: frozenset[int] = frozenset()
    ) -> list[SeedBucket]:
        now_ms = round(now * 1000)
        t = outbox.T
        with self.db.session() as s:  # type: ignore[attr-defined]
            b = s.get(Brand, int(brand))
            tier = b.tmobile_brand_tier if b is not None else None
            mine = model_select(Campaign).where(col(Campaign.brand_id) == int(brand))
            camps = {c.id: c for c in s.exec(mine)}
            shapes = {cid: self._buckets(c, brand, tier, "+0", 1, now) for cid, c in camps.items()}
            span = max(
                (
                    bk.period_s + bk.grace
                    for bs in shapes.values()
                    for bk in bs
                    if bk.calendar_tz is None
                ),
                default=0.0,
            )
            since = datetime.fromtimestamp(now - max(span, 90_000.0) - 1, UTC)
            rows = s.connection().execute(
                select(
                    t.c.id,
                    t.c.campaign_id,
                    t.c.to_phone,
                    t.c.segments,
                    t.c.state,
                    t.c.sent_at,
                    t.c.updated_at,
                ).where(  # fmt: skip
                    t.c.campaign_id.in_(list(camps)),
                    or_(t.c.state.in_(_IN_FLIGHT), t.c.sent_at >= since),
                )
            )
            out: dict[str, SeedBucket] = {}
            for rid, cid, to, segs, state, sent_at, updated_at in rows:
                if sent_at is not None:
                    pos: int | None = min(_ms(sent_at), now_ms)
                elif state == outbox.UNKNOWN and updated_at is not None:
                    pos = min(_ms(updated_at), now_ms)
                elif state == outbox.SENDING and rid not in unsent:
                    pos = None
                else:
                    continue
                for bk in self._buckets(camps[cid], brand, tier, to, max(1, segs or 1), now):
                    self._add(out, bk, pos, now_ms, f"s{rid}")
        return list(out.values())

    def _buckets(self, c: Campaign, brand: str, tier: str | None, to: str, segs: int,
                 now: float) -> list:  # type: ignore[type-arg]  # fmt: skip
        return buckets_for(
            c,
            brand_id=brand,
            brand_tier=tier,
            sender=c.messaging_service_sid or c.sender,
            recipient=to,
            segments=segs,
            now=now,
            min_grace_s=self.min_grace_s,
        )

    @staticmethod
    def _add(out: dict[str, SeedBucket], bk: object, pos: int | None, now_ms: int,
             member: str) -> None:  # fmt: skip
        from dispatcher.throttle.policy import Bucket

        assert isinstance(bk, Bucket)
        at = now_ms if pos is None else pos
        if bk.calendar_tz is None:
            span = round((bk.period_s + bk.grace) * 1000)
            if at <= now_ms - span:
                return
            sb = out.setdefault(bk.key, SeedBucket(bk.key, False, span))
            sb.entries.append((pos, bk.cost, member))
            return
        zone = ZoneInfo(bk.calendar_tz)
        local = datetime.fromtimestamp(at / 1000, zone)
        day = datetime(local.year, local.month, local.day, tzinfo=zone)
        today = datetime.fromtimestamp(now_ms / 1000, zone)
        if day.date() != today.date():
            return  # an earlier day: the cap counts only the current one
        start = _ms(day)
        nxt = _ms(datetime.combine(day.date() + timedelta(days=1), day.time(), zone))
        sb = out.setdefault(bk.key, SeedBucket(bk.key, True, nxt - now_ms + 2 * _DAY_MS))
        sb.entries.append((start, bk.cost, ""))
