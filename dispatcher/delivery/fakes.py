"""In-memory fakes of the delivery ports, for unit tests (StubBroker beside RedisBroker).

Each fake subclasses its port (``dispatcher/delivery/ports.py``), so a changed port breaks the
fake at type-check time, and ``tests/unit/delivery/test_ports.py`` runs one contract over each
fake and its real adapter, so they answer alike.  Time comes from the injected ``Clock``.
"""

from __future__ import annotations

import math
import os
import re
import threading
import uuid
from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dispatcher import compliance
from dispatcher.clock import Clock
from dispatcher.delivery.ports import Epoch, Gateway, HaltKeys, HaltSignal, Metrics, Throttle
from dispatcher.errors import GatewayError, InputError
from dispatcher.gateway.outcomes import SendResult
from dispatcher.templates import body_hash
from dispatcher.throttle.policy import Bucket
from dispatcher.throttle.reservation import Reservation, SendStatus

if TYPE_CHECKING:
    from dispatcher.metrics import OptOutKind

__all__ = ["FakeGateway", "MemoryHalts", "MemoryThrottle", "RecordingMetrics"]

_TAG = re.compile(r"\{b:([^}]*)\}")
_CALENDAR_DAYS_AHEAD = 3  # as throttle.redis: the calendar range a reservation looks at


# ---------------------------------------------------------------------------------- throttle
@dataclass
class _Sliding:
    log: list[tuple[int, int, str]] = field(default_factory=list)  # (slot ms, cost, member)


class MemoryThrottle(Throttle):
    """The reservation script of ``dispatcher/lua/reserve.lua`` in Python, on in-process state: the
    same sliding log with future booking (every window containing a new slot is checked), the
    same calendar days, the same answers (times in whole milliseconds).  ``flush()`` forgets
    every booking and epoch, as a Redis restart does."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self.flush()

    def flush(self) -> None:
        self._sliding: dict[str, _Sliding] = {}
        self._calendar: dict[str, dict[int, int]] = {}  # key -> period start ms -> used
        self._epochs: dict[str, str] = {}
        self._released: set[tuple[str, str]] = set()

    # ------------------------------------------------------------------------------- port
    def reserve(
        self,
        buckets: Sequence[Bucket],
        *,
        max_wait_s: float = 0.0,
        row: int | None = None,
        unsent: Collection[int] = (),
    ) -> Reservation:
        with self._lock:  # no re-seed here: ``row`` has no in-flight entry to replace
            return self._reserve(buckets, max_wait_s)

    def reserve_many(
        self,
        requests: Sequence[Sequence[Bucket]],
        *,
        max_wait_s: float = 0.0,
        rows: Sequence[int] | None = None,
        unsent: Collection[int] = (),
    ) -> list[Reservation]:
        with self._lock:
            return [self._reserve(b, max_wait_s) for b in requests]

    def release(self, reservation: Reservation) -> bool:
        if not reservation.allowed or not reservation.holds:
            return False
        with self._lock:
            if self._epochs.get(reservation.brand) != reservation.epoch:
                return False
            tomb = (reservation.brand, reservation.id)
            if tomb in self._released:
                return False
            self._released.add(tomb)
            for kind, key, what, cost in reservation.holds:
                if kind == "w":
                    s = self._sliding.get(key)
                    if s is not None:
                        s.log = [e for e in s.log if e[2] != what]
                else:
                    used = self._calendar.get(key, {})
                    for f in what.split(","):
                        if f:
                            left = used.get(int(f), 0) - cost
                            if left <= 0:
                                used.pop(int(f), None)
                            else:
                                used[int(f)] = left
            return True

    def send_status(self, reservation: Reservation) -> SendStatus:
        if not reservation.allowed or reservation.slot_at is None or reservation.send_by is None:
            return "denied"
        with self._lock:
            if self._epochs.get(reservation.brand) != reservation.epoch:
                return "lost"
        t_ms = round(self.clock.time() * 1000)
        if t_ms < round(reservation.slot_at * 1000):
            return "early"
        if t_ms >= round(reservation.send_by * 1000):
            return "late"
        return "send"

    # ---------------------------------------------------------------------------- script
    def _reserve(self, buckets: Sequence[Bucket], max_wait_s: float) -> Reservation:
        if not buckets:
            raise InputError("reserve needs at least one bucket")
        if not (max_wait_s >= 0 and math.isfinite(max_wait_s)):
            raise InputError("max_wait_s must be a finite number >= 0")
        if len({b.key for b in buckets}) != len(buckets):
            raise InputError("duplicate bucket key in one reservation")
        brand = _brand(buckets)
        ref = self.clock.time()
        now = round(ref * 1000)
        horizon = round(max_wait_s * 1000)
        days = _CALENDAR_DAYS_AHEAD + int(max_wait_s // 86_400)
        shapes = [_Shape(b, now, ref, days, self._sliding, self._calendar) for b in buckets]
        t, unknown = now, False
        bound: str | None = None  # the kind of the bucket that set the slot (as the script)
        while True:
            moved = False
            for b, sh in zip(buckets, shapes, strict=True):
                t2 = sh.next_fit(t)
                if t2 is None:
                    unknown, bound = True, b.kind
                    break
                if t2 > t:
                    t, moved, bound = t2, True, b.kind
            if unknown or not moved:
                break
        epoch = self._epochs.setdefault(brand, os.urandom(6).hex())
        allowed = (not unknown) and t - now <= horizon
        rid = os.urandom(8).hex()
        holds: list[tuple[str, str, str, int]] = []
        if allowed:
            for sh in shapes:
                holds.append(sh.book(t, rid))
        grace = min(b.grace for b in buckets)
        return Reservation(
            allowed=allowed,
            wait_s=max(0.0, (t - now) / 1000),
            slot_at=None if (not allowed and t <= now + horizon) else t / 1000,
            send_by=(t / 1000 + grace) if allowed else None,
            grace_s=grace,
            now=now / 1000,
            id=rid,
            epoch=epoch,
            brand=brand,
            holds=tuple(holds) if allowed else (),
            bound=bound,
        )


class _Shape:
    """One bucket during one reservation (the script's ``B[j]``)."""

    def __init__(
        self,
        b: Bucket,
        now: int,
        ref: float,
        days: int,
        sliding: dict[str, _Sliding],
        calendar: dict[str, dict[int, int]],
    ) -> None:
        self.b, self.cost, self.limit = b, b.cost, b.limit
        if b.calendar_tz is None:
            self.L = round((b.period_s + b.grace) * 1000)
            s = sliding.setdefault(b.key, _Sliding())
            s.log = sorted(e for e in s.log if e[0] > now - self.L)
            self.sliding: _Sliding | None = s
        else:
            self.L = round(b.grace * 1000)
            self.sliding = None
            self.bounds = _bounds(b.calendar_tz, ref, days)
            self.used = calendar.setdefault(b.key, {})
            p = self._period(now)
            if p is not None:  # periods that ended are dropped
                for f in [f for f in self.used if f < self.bounds[p]]:
                    del self.used[f]

    # sliding: does every window [x, x+L) that contains t stay within the limit?
    def _fits(self, t: int) -> bool:
        assert self.sliding is not None
        log, room = self.sliding.log, self.limit - self.cost
        starts = [t] + [s for s, _, _ in log if t - self.L < s <= t]
        return all(sum(c for s, c, _ in log if x <= s < x + self.L) <= room for x in starts)

    def _period(self, t: int) -> int | None:
        for p in range(len(self.bounds) - 1):
            if self.bounds[p] <= t < self.bounds[p + 1]:
                return p
        return None

    def _fields(self, p: int, t: int) -> list[int] | None:
        if t + self.L >= self.bounds[p + 1]:  # a late send may cross midnight
            return [p, p + 1] if p + 2 < len(self.bounds) else None
        return [p]

    def next_fit(self, t: int) -> int | None:
        """The earliest slot >= t this bucket takes (None: beyond the calendar range)."""
        if self.sliding is not None:
            if self._fits(t):
                return t
            for s, _, _ in self.sliding.log:
                if s > t - self.L and self._fits(s + self.L):
                    return s + self.L
            return t
        while True:
            p = self._period(t)
            if p is None:
                return None
            fs = self._fields(p, t)
            if fs is None:
                return None
            if all(self.used.get(self.bounds[q], 0) + self.cost <= self.limit for q in fs):
                return t
            t = self.bounds[p + 1]

    def book(self, t: int, rid: str) -> tuple[str, str, str, int]:
        if self.sliding is not None:
            member = f"{rid}:{self.cost}"
            self.sliding.log.append((t, self.cost, member))
            self.sliding.log.sort()
            return ("w", self.b.key, member, self.cost)
        p = self._period(t)
        assert p is not None
        fs = self._fields(p, t) or []
        for q in fs:
            self.used[self.bounds[q]] = self.used.get(self.bounds[q], 0) + self.cost
        return ("c", self.b.key, ",".join(str(self.bounds[q]) for q in fs), self.cost)


def _brand(buckets: Sequence[Bucket]) -> str:
    brands = set()
    for b in buckets:
        m = _TAG.search(b.key)
        if m is None:
            raise InputError(f"bucket key {b.key!r} has no {{b:<brand>}} hash tag")
        brands.add(m.group(1))
    if len(brands) != 1:
        raise InputError("all buckets of one reservation must belong to one brand")
    return brands.pop()


def _bounds(tz: str, ref: float, days: int) -> list[int]:
    try:
        zone = ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as e:
        raise InputError(f"unknown time zone {tz!r}") from e
    today = datetime.fromtimestamp(ref, zone).date()
    out = []
    for i in range(-1, days + 2):
        d = today + timedelta(days=i)
        out.append(round(datetime(d.year, d.month, d.day, tzinfo=zone).timestamp() * 1000))
    return out


# ----------------------------------------------------------------------------------- gateway
@dataclass
class FakeMessage:
    sid: str
    to: str
    body: str
    sender: str
    status: str
    at: datetime
    validity_period: int | None
    status_callback: str | None
    error_code: int | None = None


class FakeGateway(Gateway):
    """An in-memory carrier: every accepted message is kept in ``messages``.

    ``fail_next(error, reached=...)`` makes the next send raise ``error``; with ``reached`` the
    message is kept first (an answer lost after the carrier accepted it: an ambiguous send).
    ``lookups`` set to an error makes ``find_sent`` and ``fetch`` raise it; ``settle(sid, status,
    error_code)`` moves a message on at the carrier (as its callbacks would report it)."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.messages: list[FakeMessage] = []
        self._failures: list[tuple[GatewayError, bool]] = []
        self.lookups: GatewayError | None = None
        self._lock = threading.Lock()

    def fail_next(self, error: GatewayError, *, reached: bool = False) -> None:
        with self._lock:
            self._failures.append((error, reached))

    def send(
        self,
        to: str,
        body: str,
        *,
        from_: str | None = None,
        messaging_service_sid: str | None = None,
        status_callback: str | None = None,
        validity_period: int | None = None,
    ) -> SendResult:
        sender = messaging_service_sid or from_
        if not sender:
            raise InputError("a send needs from_ or messaging_service_sid")
        msg = FakeMessage(
            "SM" + uuid.uuid4().hex,
            to,
            body,
            sender,
            "accepted" if messaging_service_sid else "queued",
            self.clock.now(),
            validity_period,
            status_callback,
        )
        with self._lock:
            error, reached = self._failures.pop(0) if self._failures else (None, True)
            if reached:
                self.messages.append(msg)
        if error is not None:
            raise error
        return self._result(msg)

    def settle(self, sid: str, status: str, error_code: int | None = None) -> None:
        with self._lock:
            for m in self.messages:
                if m.sid == sid:
                    m.status, m.error_code = status, error_code
                    return
        raise KeyError(sid)

    def find_sent(
        self, to: str, from_or_service: str, since: datetime, digest: str
    ) -> SendResult | None:
        if self.lookups is not None:
            raise self.lookups
        floor = since - timedelta(minutes=1)
        with self._lock:
            for m in self.messages:
                if m.to == to and m.sender == from_or_service and m.at >= floor:
                    if body_hash(m.body) == digest:
                        return self._result(m)
        return None

    def fetch(self, sid: str) -> SendResult:
        if self.lookups is not None:
            raise self.lookups
        with self._lock:
            for m in self.messages:
                if m.sid == sid:
                    return self._result(m)
        raise GatewayError(f"fetch: no message {sid}", code=20404, status=404)

    @staticmethod
    def _result(m: FakeMessage) -> SendResult:
        segments = 0 if m.sender.startswith("MG") else compliance.segments(m.body).count
        return SendResult(m.sid, m.status, segments, m.error_code)


# ------------------------------------------------------------------------------------- halts
class MemoryHalts(HaltKeys, HaltSignal):
    """Halt keys in process, expiring on the injected clock (as ``halts.Halts`` on Redis);
    ``flush()`` loses every key and the epoch, as a Redis restart without persistence does."""

    def __init__(self, clock: Clock, *, ttl_s: float = 300.0) -> None:
        if ttl_s < 1:
            raise ValueError("halt keys need a TTL of at least 1 s")
        self.clock = clock
        self.ttl_s = ttl_s
        self._keys: dict[tuple[str, int], float] = {}  # (kind, id) -> expires at
        self._epoch: str | None = None
        self._lock = threading.Lock()

    @property
    def max_age_s(self) -> float:
        return self.ttl_s / 2.5

    def flush(self) -> None:
        with self._lock:
            self._keys.clear()
            self._epoch = None

    def epoch(self) -> Epoch | None:
        with self._lock:
            if self._epoch is None:
                self._epoch = uuid.uuid4().hex
            return (self._epoch, 0)

    def clear(self, epoch: Epoch, *, contact_id: int, run_id: int, campaign_id: int) -> bool:
        now = self.clock.time()
        with self._lock:
            if epoch != (self._epoch, 0):
                return False
            names = (("c", contact_id), ("r", run_id), ("k", campaign_id))
            return all(self._keys.get(n, float("-inf")) <= now for n in names)

    def signal(
        self,
        *,
        contacts: Iterable[int] = (),
        runs: Iterable[int] = (),
        campaigns: Iterable[int] = (),
    ) -> None:
        until = self.clock.time() + self.ttl_s
        with self._lock:
            for kind, ids in (("c", contacts), ("r", runs), ("k", campaigns)):
                for i in ids:
                    self._keys[(kind, int(i))] = until

    def signalled(self) -> dict[str, set[int]]:
        """The live keys, by kind (contacts, runs, campaigns)."""
        now = self.clock.time()
        out: dict[str, set[int]] = {"contacts": set(), "runs": set(), "campaigns": set()}
        names = {"c": "contacts", "r": "runs", "k": "campaigns"}
        with self._lock:
            for (kind, i), until in self._keys.items():
                if until > now:
                    out[names[kind]].add(i)
        return out


# ----------------------------------------------------------------------------------- metrics
class RecordingMetrics(Metrics):
    """Every call, in order, as ``(method, args, kwargs)``."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self._lock = threading.Lock()

    def _add(self, name: str, *args: Any, **kwargs: Any) -> None:
        with self._lock:
            self.calls.append((name, args, kwargs))

    def named(self, name: str) -> list[tuple[Any, ...]]:
        """The positional arguments of every call of ``name``."""
        return [a for n, a, _ in self.calls if n == name]

    def sent(
        self,
        campaign: str,
        sender: str,
        segments: int = 1,
        *,
        brand: str | None = None,
        body: str | None = None,
        body_hash: str | None = None,
        duration_s: float | None = None,
    ) -> None:
        self._add(
            "sent",
            campaign,
            sender,
            segments,
            brand=brand,
            body=body,
            body_hash=body_hash,
            duration_s=duration_s,
        )

    def failed(self, campaign: str, sender: str, error_code: int | str | None) -> None:
        self._add("failed", campaign, sender, error_code)

    def delivered(self, campaign: str, sender: str) -> None:
        self._add("delivered", campaign, sender)

    def undelivered(self, campaign: str, sender: str, error_code: int | str | None) -> None:
        self._add("undelivered", campaign, sender, error_code)

    def suppressed(self, campaign: str, reason: str, n: int = 1) -> None:
        for _ in range(n):
            self._add("suppressed", campaign, reason)

    def guard_event(self, campaign: str, kind: str) -> None:
        self._add("guard_event", campaign, kind)

    def guard_paused(self, campaign: str, reason: str) -> None:
        self._add("guard_paused", campaign, reason)

    def deferred(self, campaign: str, reason: str) -> None:
        self._add("deferred", campaign, reason)

    def throttle_wait_seconds(self, bucket_kind: str, wait_s: float, allowed: bool) -> None:
        self._add("throttle_wait_seconds", bucket_kind, wait_s, allowed)

    def opt_out(self, campaign: str, kind: OptOutKind = "keyword") -> None:
        self._add("opt_out", campaign, kind)

    @contextmanager
    def daily_batch(self) -> Iterator[None]:
        self._add("daily_batch")
        yield
