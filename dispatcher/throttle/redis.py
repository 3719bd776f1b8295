"""Atomic multi-bucket throttle in one Redis Lua call (real Redis or fakeredis).

Algorithm: a **sliding log with future booking**.  Each sliding bucket is a sorted set of booked
send times (score = slot in ms, member = ``<reservation id>:<cost>``).  ``reserve`` finds the
earliest time ``t >= now`` at which *every* bucket can take the message and, if ``t - now <=
max_wait_s``, books ``t`` in all of them (all or none, one script, one round trip).

Why this meets "never more than N in ANY interval of length T" (half-open ``[x, x+T)``):
a slot ``t`` is booked in a bucket only if, for every window ``[x, x+L)`` that contains ``t``, the
booked cost already in it plus this cost stays ``<= N`` (checked exactly against the log, in
``wfits``).  Windows not containing ``t`` are unchanged, so the invariant "every window of length
``L`` holds at most N" is kept by every booking, whatever the order of bookings (a booking may land
*before* existing future ones).  A token bucket or GCRA with burst N only bounds the *average*: a
full bucket spends N at once and then refills, letting up to 2N-1 through in one T-long interval;
the log checks every window instead (a GCRA state admits N at 0 and one more at T/N; a ring of the
last N grants is exact only for unit costs booked in time order, and future booking lands
bookings before later ones).

**State (fast path):** beside its log each sliding bucket keeps ``sum,first,last`` (one key,
read for all buckets with the epoch in one MGET): ``sum`` = the total cost of the log, ``first``
<= its oldest entry, ``last`` >= its newest; no state with an empty log.  The script books
without reading the log when ``sum + cost <= N``, trims only when ``first <= now - L``, and takes
the monotone path (below) only when ``last <= t``.  *Claim:* this books exactly what the full
check would.  (1) If ``sum`` >= the log's cost, every window holds at most ``sum`` before the
booking (its entries are log entries), so ``sum + cost <= N`` implies the full check passes.
(2) ``sum`` equals the log's cost: every script that changes the log changes ``sum`` with it
(reserve: ``ZADD`` +cost, trim -gone; release: ``ZREM`` -cost or drop; seed.lua and a re-seeded
row's ``ZREM``: drop, and a missing or unreadable state is rebuilt from the log); the state
expires no later than the log (both from ``last + L + 1 s``) and a trim that finds the log empty
zeroes it.  (3) ``first`` is a lower bound (bookings lower it, releases only make it looser),
so ``first > now - L`` means no entry has left the window and (2) still holds without a trim.
(4) ``last`` is an upper bound (bookings raise it, releases only loosen it), so ``last <= t``
means no booking after ``t``, the monotone path's premise; a loose ``last`` only sends the
script to the full log check.  Hence no window of length ``L`` ever holds more than N, as with
the log alone; an uncongested bucket costs O(1) however many bookings its window holds.

**Never idle:** the earliest feasible slot is ``now`` or the right end ``e + L`` of a full stretch
(``e`` a booked entry); the script tries exactly these candidates in order, so it books the first
moment the limit allows: a backlog sends N every ``T + g`` (utilisation ``T / (T + g)``; >= 99 %
with
the default grace, 99.67 % for 10 per 300 s).

**Lateness (grace ``g``):** the caller sends a booked message a little after its slot (queue
wake-up, HTTP latency).  Each bucket books with ``L = T + g`` and the caller may send only while
``slot <= now < slot + g`` (``Reservation.send_by``; ``g`` is the smallest grace of the buckets).
Proof: let actual send times be ``a_i`` in ``[s_i, s_i + g)``.  Any interval ``[x, x+T)`` that
contains ``a_i`` has ``s_i`` in ``(x - g, x + T]``, an interval of length ``T + g`` (half-open on
the other side; with integer-millisecond slots it is ``[x-g+1ms, x+T+1ms)``, a window of length
``L``).  That window holds at most N booked costs, so ``[x, x+T)`` holds at most N actual sends.
A message that misses its ``send_by`` must be released and reserved again (``send_status``).

**Calendar buckets** (T-Mobile daily cap) are a hash ``period start ms -> used`` per bucket; a slot
in the last ``g`` of a day is charged to both days (a late send may cross midnight).

**Clock:** ``RedisThrottle(clock=None)`` uses Redis ``TIME`` inside the script (one clock for all
hosts; immediate sends cannot be skewed).  With a ``clock`` (tests, embedded mode) or an explicit
``now`` the caller's time is passed as ``now_ms``.  Host clock skew only matters when a worker
decides *locally* that a booked slot has come: ``send_status`` reads Redis ``TIME`` for that reason.

**Restart:** bucket state is volatile.  Each brand has an epoch token (``keys.throttle_epoch_key``);
a Redis restart (or flush) loses it, ``send_status`` then answers ``"lost"`` for every older booking
and the caller re-reserves.  With a ``seeder`` (the dispatcher's: ``throttle.seed.OutboxSeeder``)
only ``seed.lua`` creates the epoch, together with every send the outbox says may share a window
with a new one, so "never over" holds across the loss (proof: docs/throttle.md, "Loss of
Redis"); without one the first reservation creates it and a loss forgets the current windows.

**Monotone path:** with no booking after the candidate slot ``t``, the fullest window containing
``t' >= t`` is ``(t'-L, t']``, so the earliest fit is ``max(t, S[k] + L)``, ``S[k]`` the entry at
which the oldest entries' cost reaches the excess over the limit: at most ``excess`` entries read
instead of the whole log (exact, unlike GCRA: docs/throttle.md).

Every key gets a TTL: sliding buckets until their last booked slot + L (+1 s), calendar hashes until
the end of the last charged day (+60 s), the epoch 2 days past the last booking.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from redis.exceptions import NoScriptError, RedisError

from dispatcher import keys, lua
from dispatcher.clock import Clock
from dispatcher.errors import InputError, ThrottleError
from dispatcher.throttle.policy import Bucket
from dispatcher.throttle.reservation import Reservation, SendStatus
from dispatcher.throttle.seed import Seeder

log = logging.getLogger(__name__)
_TAG = re.compile(r"\{b:([^}]*)\}")
CALENDAR_DAYS_AHEAD = 3
#: how long a reservation that found its brand being re-seeded waits before asking again
SEED_RETRY_S = 0.25
#: how long one worker may take to re-seed a brand before another may (a seed takes milliseconds;
#: a worker that dies or times out holding the lock stops the brand's sends this long at most)
SEED_LOCK_MS = 5_000


@dataclass(frozen=True, slots=True)
class _Shape:
    """What every reservation over one bucket tuple sends and how its answer is read, built
    once per tuple (``RedisThrottle._shape``)."""

    buckets: tuple[Bucket, ...]
    brand: str
    keys: list[bytes]
    spec: str  # the buckets as JSON for reserve.lua, '%s' where a calendar's bounds go
    calendars: tuple[str, ...]  # the calendar buckets' time zones, in order
    grace: float  # the smallest grace of the buckets (the reservation's send window)
    holds: tuple[tuple[str, str, int], ...]  # (kind, key, cost) per bucket


@dataclass(slots=True)
class _Request:
    """One reservation's script call (keys, args) and how to read its answer."""

    shape: _Shape
    rid: str
    max_wait_s: float
    args: list[Any]

    @property
    def brand(self) -> str:
        return self.shape.brand

    @property
    def keys(self) -> list[bytes]:
        return self.shape.keys

    def answer(self, res: Any) -> Reservation:
        sh = self.shape
        if int(res[0]) == -1:  # the brand is being re-seeded: ask again shortly
            now_s = int(res[2]) / 1000
            return Reservation(False, SEED_RETRY_S, None, None, 0.0, now_s, self.rid, "", sh.brand)
        allowed = int(res[0]) == 1
        slot_ms, now_ms = int(res[1]), int(res[2])
        epoch = res[3].decode() if isinstance(res[3], bytes) else str(res[3])
        n = len(sh.holds)
        binding = int(res[4 + n]) if len(res) > 4 + n else 0
        bound = sh.buckets[binding - 1].kind if binding else None
        if not allowed:
            unknown = slot_ms <= now_ms + round(self.max_wait_s * 1000)
            return Reservation(
                False, max(0.0, (slot_ms - now_ms) / 1000), None if unknown else slot_ms / 1000,
                None, sh.grace, now_ms / 1000, self.rid, epoch, sh.brand, (), bound,
            )  # fmt: skip
        holds = tuple(
            (kind, key, f"{self.rid}:{cost}", cost)
            if kind == "w"
            else (kind, key, c.decode() if isinstance(c, bytes) else str(c), cost)
            for (kind, key, cost), c in zip(sh.holds, res[4 : 4 + n], strict=True)
        )
        slot = slot_ms / 1000
        return Reservation(
            True, max(0.0, (slot_ms - now_ms) / 1000), slot, slot + sh.grace, sh.grace,
            now_ms / 1000, self.rid, epoch, sh.brand, holds, bound,
        )  # fmt: skip


def _unseeded(res: Any) -> bool:
    return isinstance(res, list | tuple) and int(res[0]) == -1


class RedisThrottle:
    """Throttle over one Redis (or fakeredis) client.  Thread-safe (redis-py clients are)."""

    def __init__(
        self, redis_client: Any, clock: Clock | None = None, seeder: Seeder | None = None
    ) -> None:
        self._r = redis_client
        self._clock = clock
        self._seeder = seeder
        self._seed_script = lua.register(redis_client, "seed")
        self._reserve = lua.register(redis_client, "reserve")
        self._release = lua.register(redis_client, "release")
        self._status = lua.register(redis_client, "status")
        self._bounds_cache: dict[tuple[str, int], tuple[float, float, str]] = {}
        self._shapes: dict[tuple[Bucket, ...], _Shape] = {}

    # ------------------------------------------------------------------ helpers
    def _now(self, now: float | None) -> float | None:
        if now is not None:
            return float(now)
        if self._clock is not None:
            return self._clock.time()
        return None

    def _bounds(self, tz: str, ref: float, days: int) -> str:
        """The period starts (ms) from the day before ``ref``'s local day to ``days`` + 1 after,
        kept while ``ref`` stays in that local day."""
        hit = self._bounds_cache.get((tz, days))
        if hit is not None and hit[0] <= ref < hit[1]:
            return hit[2]
        try:
            zone = ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError) as e:
            raise InputError(f"unknown time zone {tz!r}") from e
        today = datetime.fromtimestamp(ref, zone).date()
        starts = []
        for i in range(-1, days + 2):
            d = today + timedelta(days=i)
            starts.append(datetime(d.year, d.month, d.day, tzinfo=zone).timestamp())
        s = ",".join(str(round(x * 1000)) for x in starts)
        if len(self._bounds_cache) > 64:
            self._bounds_cache.clear()
        self._bounds_cache[(tz, days)] = (starts[1], starts[2], s)
        return s

    @staticmethod
    def _brand(buckets: Sequence[Bucket]) -> str:
        brand = None
        for b in buckets:
            m = _TAG.search(b.key)
            if m is None:
                raise InputError(f"bucket key {b.key!r} has no {{b:<brand>}} hash tag")
            if brand is None:
                brand = m.group(1)
            elif m.group(1) != brand:
                raise InputError("all buckets of one reservation must belong to one brand")
        assert brand is not None
        return brand

    # ------------------------------------------------------------------ API
    def reserve(
        self,
        buckets: Sequence[Bucket],
        *,
        now: float | None = None,
        max_wait_s: float = 0.0,
        reservation_id: str | None = None,
        row: int | None = None,
        unsent: Collection[int] = (),
    ) -> Reservation:
        """Book the earliest slot ``>= now`` free in every bucket, if within ``max_wait_s``.

        ``max_wait_s=0``: "may I send now?".  ``max_wait_s=H``: book a future slot up to ``H``
        seconds ahead (the caller re-enqueues with delay ``wait_s`` and sends at the slot without
        reserving again).  Not allowed -> nothing is taken; ``wait_s`` says when to ask again.
        """
        req = self._request(buckets, now, max_wait_s, reservation_id, row)
        try:
            res = self._reserve(keys=req.keys, args=req.args)
            if int(res[0]) == -1 and self.seed(req.brand, unsent):
                res = self._reserve(keys=req.keys, args=req.args)
        except RedisError as e:
            raise ThrottleError(f"throttle reserve failed: {e}") from e
        return req.answer(res)

    def ensure_seeded(self, brands: set[str]) -> None:
        """Seed each brand whose throttle has no epoch (a fresh or flushed Redis) now, rather
        than at its first reservation (the scheduler calls this before handing rows to the
        workers, so the seed does not count them as in flight).  A Redis error is logged: the
        first reservation seeds then, as without this call."""
        try:
            for brand in sorted(brands):
                if not self._r.exists(keys.throttle_epoch_key(brand)):
                    self.seed(brand)
        except RedisError as e:
            log.warning("throttle seed before release failed (%s): the workers will seed", e)

    def seed(self, brand: str, unsent: Collection[int] = ()) -> bool:
        """Re-seed ``brand``'s buckets from the seeder (the outbox) and create its epoch, unless
        another worker holds the seed lock (then False: ask again in ``SEED_RETRY_S``) or did it
        already.  True when the brand has an epoch now.  ``unsent``: claimed rows the caller
        holds and has not handed over (not counted as in flight)."""
        if self._seeder is None:
            return False
        lock = keys.throttle_seed_lock_key(brand)
        token = os.urandom(8).hex()
        if not self._r.set(lock, token, nx=True, px=SEED_LOCK_MS):
            return bool(self._r.exists(keys.throttle_epoch_key(brand)))
        started = time.monotonic()
        now = self._now(None)
        if now is None:
            sec, us = self._r.time()
            now = int(sec) + int(us) / 1e6
        try:
            got = self._seeder(brand, now, frozenset(unsent))
            ks = [keys.throttle_epoch_key(brand), lock] + [b.key for b in got]
            ks += [keys.throttle_sum_key(b.key) for b in got]
            done = self._seed_script(
                keys=ks,
                args=[os.urandom(6).hex(), token, round(now * 1000), len(got)]
                + [b.arg() for b in got],
            )
        except Exception:
            if self._r.get(lock) in (token, token.encode()):
                self._r.delete(lock)  # the next reservation of the brand seeds again
            raise
        log.warning(
            "throttle of brand %s lost (Redis flushed or restarted): %s from the outbox, "
            "%d buckets, %d entries, in %.3f s",
            brand,
            "re-seeded" if int(done) == 1 else "already re-seeded",
            len(got),
            sum(len(b.entries) for b in got),
            time.monotonic() - started,
        )
        return True

    def reserve_many(
        self,
        requests: Sequence[Sequence[Bucket]],
        *,
        now: float | None = None,
        max_wait_s: float = 0.0,
        rows: Sequence[int] | None = None,
        unsent: Collection[int] = (),
    ) -> list[Reservation]:
        """``reserve`` for several messages in one round trip (a pipeline of script calls).

        Each call is the same atomic script as :meth:`reserve`, run in list order, so the answers
        are exactly those of calling ``reserve`` once per request at that moment.  A slot booked
        for a message sent later must still be used before its ``send_by``.  If Redis fails part
        way, the slots already booked are given back and ``ThrottleError`` is raised.
        """
        ids: Sequence[int | None] = rows if rows is not None else [None] * len(requests)
        reqs = [
            self._request(b, now, max_wait_s, None, i) for b, i in zip(requests, ids, strict=True)
        ]
        if not reqs:
            return []
        raw = self._pipelined(reqs)
        unseeded = {q.brand for q, r in zip(reqs, raw, strict=True) if _unseeded(r)}
        if unseeded and all([self.seed(b, unsent) for b in sorted(unseeded)]):
            # nothing was booked for them: ask again now that their brands are seeded
            again = [q for q, r in zip(reqs, raw, strict=True) if _unseeded(r)]
            redo = iter(self._pipelined(again))
            raw = [next(redo) if _unseeded(r) else r for r in raw]
        if any(isinstance(r, NoScriptError) for r in raw):
            # a Redis Cluster pipeline does not load scripts first (redis-py's plain Pipeline
            # does): a node that restarted or was flushed answers NOSCRIPT; load and ask again
            # for those (a NOSCRIPT call booked nothing)
            self._r.script_load(self._reserve.script)
            again = [q for q, r in zip(reqs, raw, strict=True) if isinstance(r, NoScriptError)]
            redo = iter(self._pipelined(again))
            raw = [next(redo) if isinstance(r, NoScriptError) else r for r in raw]
        failed = next((r for r in raw if isinstance(r, Exception)), None)
        if failed is not None:
            for req, res in zip(reqs, raw, strict=True):
                if not isinstance(res, Exception):
                    try:
                        self.release(req.answer(res))
                    except ThrottleError:
                        pass  # a lost slot is only lost throughput
            raise ThrottleError(f"throttle reserve failed: {failed}")
        return [req.answer(res) for req, res in zip(reqs, raw, strict=True)]

    def _pipelined(self, reqs: list[_Request]) -> list[Any]:
        pipe = self._r.pipeline(transaction=False)
        for req in reqs:
            self._reserve(keys=req.keys, args=req.args, client=pipe)
        try:
            return list(pipe.execute(raise_on_error=False))
        except RedisError as e:
            raise ThrottleError(f"throttle reserve failed: {e}") from e
        finally:
            pipe.reset()

    def _request(
        self,
        buckets: Sequence[Bucket],
        now: float | None,
        max_wait_s: float,
        reservation_id: str | None,
        row: int | None = None,
    ) -> _Request:
        if not (max_wait_s >= 0 and math.isfinite(max_wait_s)):
            raise InputError("max_wait_s must be a finite number >= 0")
        bt = tuple(buckets)
        sh = self._shapes.get(bt)
        if sh is None:
            sh = self._shape(bt)
        t_now = self._now(now)
        rnd = os.urandom(14).hex()
        if reservation_id is None:
            rid = rnd[:16]
            rid_json = f'"{rid}"'
        else:
            rid = reservation_id
            rid_json = json.dumps(rid)
        specs = sh.spec
        if sh.calendars:
            ref = t_now if t_now is not None else time.time()
            days = CALENDAR_DAYS_AHEAD + int(max_wait_s // 86_400)
            specs = sh.spec % tuple([self._bounds(tz, ref, days) for tz in sh.calendars])
        argv: list[Any] = [
            f"[{'false' if t_now is None else round(t_now * 1000)},{round(max_wait_s * 1000)},"
            f'{rid_json},"{"" if self._seeder is not None else rnd[16:]}",'
            f'"{"" if row is None else f"s{int(row)}"}",{specs}]'
        ]
        return _Request(sh, rid, max_wait_s, argv)

    def _shape(self, bt: tuple[Bucket, ...]) -> _Shape:
        """What a reservation over ``bt`` always sends (keys, the buckets' ARGV; a calendar
        bucket's bounds are filled per call), checked and kept for the next call."""
        if not bt:
            raise InputError("reserve needs at least one bucket")
        brand = self._brand(bt)
        if len({b.key for b in bt}) != len(bt):
            raise InputError("duplicate bucket key in one reservation")
        # JSON; '%s' takes a calendar bucket's period starts, per call
        spec = ",".join(
            f'["w",{b.limit},{round((b.period_s + b.grace) * 1000)},{b.cost}]'
            if b.calendar_tz is None
            else f'["c",{b.limit},{round(b.grace * 1000)},{b.cost},[%s]]'
            for b in bt
        )
        ks = [keys.throttle_epoch_key(brand)] + [b.key for b in bt]
        ks += [keys.throttle_sum_key(b.key) for b in bt if b.calendar_tz is None]
        sh = _Shape(  # keys and spec as bytes: redis-py sends them as they are
            buckets=bt,
            brand=brand,
            keys=[k.encode() for k in ks],
            spec=f"[{spec}]",
            calendars=tuple(b.calendar_tz for b in bt if b.calendar_tz is not None),
            grace=min(b.grace for b in bt),
            holds=tuple(("w" if b.calendar_tz is None else "c", b.key, b.cost) for b in bt),
        )
        if len(self._shapes) > 1024:
            self._shapes.clear()
        self._shapes[bt] = sh
        return sh

    def release(self, reservation: Reservation) -> bool:
        """Give a booked slot back (message suppressed, paused, or it missed ``send_by``).

        Idempotent (a tombstone key); a no-op after a Redis restart (epoch changed).  Returns True
        if this call released it.  Never release a reservation whose message was sent.
        """
        if not reservation.allowed or not reservation.holds:
            return False
        ks = [keys.throttle_release_key(reservation.brand, reservation.id),
              keys.throttle_epoch_key(reservation.brand)]  # fmt: skip
        argv: list[Any] = [str(3 * 86_400_000), reservation.epoch, str(len(reservation.holds))]
        for kind, key, what, cost in reservation.holds:
            ks.append(key)
            argv += [kind, what, cost]
        ks += [keys.throttle_sum_key(key) for _, key, _, _ in reservation.holds]
        try:
            return int(self._release(keys=ks, args=argv)) == 1
        except RedisError as e:
            raise ThrottleError(f"throttle release failed: {e}") from e

    def send_status(self, reservation: Reservation, *, now: float | None = None) -> SendStatus:
        """May a booked message be sent now?  One round trip (epoch check + Redis TIME).

        ``"send"``: yes.  ``"early"``: wait ``slot_at - now`` more.  ``"late"``: it missed
        ``send_by``: release and reserve again.  ``"lost"``: Redis lost the bookings (restart):
        reserve again (nothing to release).  ``"denied"``: the reservation booked nothing.
        """
        if not reservation.allowed or reservation.slot_at is None or reservation.send_by is None:
            return "denied"
        try:
            same, tms = self._status(
                keys=[keys.throttle_epoch_key(reservation.brand)], args=[reservation.epoch]
            )
        except RedisError as e:
            raise ThrottleError(f"throttle status failed: {e}") from e
        if int(same) != 1:
            return "lost"
        t = self._now(now)
        t = int(tms) / 1000 if t is None else t
        # compare in whole ms, as the script does
        t_ms = round(t * 1000)
        if t_ms < round(reservation.slot_at * 1000):
            return "early"
        if t_ms >= round(reservation.send_by * 1000):
            return "late"
        return "send"
