"""The schedule model: when each row still to send can go, hence a run's finish and its per-hour
send plan.  One model for the dry run, ``run show``, ``run watch``, the API's run figures and the
demo.  Pure: no I/O, no clock; the time is an argument (seconds since the epoch).

It predicts what the pipeline does (``dispatch``, ``slots``, ``housekeeping``; docs/throttle.md),
with the product's own rules for every limit:

* **Order.** Rows are released in the order of their due time, then their row id (the release
  loop's ``ORDER BY due_at, id``); the caller gives them in that order.
* **Quiet hours** (``compliance.quiet_hours``, the windows ``decide()`` uses).  A row is gated
  when it is released: inside its recipient's quiet hours it is deferred to the moment the window
  opens, taking no slot.  A row is gated again at its booked slot: a slot that falls inside its
  quiet hours is given back and the row deferred likewise.  Each group's open times come from
  ``quiet_hours.allowed_intervals`` (the gate's own functions), so the plan agrees with the gate.
* **Buckets** (``throttle.policy.buckets_for``, as the pipeline calls it: campaign window in
  messages, sender MPS and the T-Mobile daily cap in segments, the pipeline's grace).  A row books
  the earliest slot at or after the last one booked that every bucket can take — the sliding log
  books ``limit`` every ``period + grace`` — or, for the daily cap, the next calendar day in its
  zone.  A slot more than the booking horizon ahead is not booked: the row waits in the outbox
  and is released (and gated) when its slot comes within the horizon.
* **Per-recipient caps.**  A run has one row per recipient, so within a run a per-recipient cap
  binds only through earlier sends; the gate turns those into a later due time, which is the
  row's ``ready``.

Approximations, each on the side of the throttle's guarantee (never over a bucket): slots are
booked in order (a new slot never goes before one already booked: true while a backlog fills
every window); a slot given back is not reused (its neighbours are booked, so no other row could
take it); rows beyond the horizon are assumed to be released one by one as the horizon moves,
where the release loop lets them through in chunks.

Rows are described by a small integer, their :class:`Group`: recipients the model cannot tell
apart (the same quiet-hour windows and segments).  The work is a few arithmetic steps per row,
no per-row time-zone arithmetic: 0.2-2 s for 200 000 rows (``bench/schedule.py``).
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_right
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

from dispatcher.compliance.quiet_hours import allowed_intervals
from dispatcher.throttle.policy import RECIPIENT_KINDS, Bucket, buckets_for

INF = float("inf")
DAY_S = 86_400.0
#: how far ahead a throttled row books a slot (``dispatch.BOOK_HORIZON_S``; a test checks that
#: both say the same; imported from there it would load the whole delivery path into every CLI
#: command that shows a run)
BOOK_HORIZON_S = 6 * 3600.0
#: a group whose window does not open within this long is reported as never (impossible policy)
GIVE_UP_S = 400 * DAY_S
#: rows of a run the release loop keeps booked ahead at most (``HousekeepingConfig``; tested)
MAX_CARRIED_PER_RUN = 5000

Windows = tuple[tuple[ZoneInfo, int, int], ...]
BucketsOf = Callable[[int], Sequence[Bucket]]


@dataclass(frozen=True, slots=True)
class Group:
    """Rows the model cannot tell apart: their recipients' quiet-hour windows (zone + state rule
    as ``quiet_hours.resolve`` gives them; ``()`` when no quiet hours apply) and the segments of
    their message.  ``label`` names it for people (e.g. ``America/New_York``)."""

    windows: Windows
    segments: int = 1
    label: str = ""
    unknown_zone: bool = False


class Row(NamedTuple):
    """A row still to send: when it is due (seconds since the epoch), its group (an index into
    the groups), and whether it already holds a throttle slot at ``ready`` (a queue message
    carries it there)."""

    ready: float
    group: int
    booked: bool = False


@dataclass(frozen=True, slots=True)
class Load:
    """What the buckets already hold at ``now``: recent sends and rows being sent, as
    ``(bucket key, time, cost)``, and the cost each calendar bucket already counted for the day
    of ``now`` (``{bucket key: cost}``)."""

    sends: tuple[tuple[str, float, int], ...] = ()
    day_used: tuple[tuple[str, int], ...] = ()


def campaign_buckets(
    campaign: Any, *, brand_id: int | str, brand_tier: str | None, min_grace_s: float
) -> BucketsOf:
    """The buckets a message of ``campaign`` takes, by its segment count, exactly as the pipeline
    asks ``throttle.policy.buckets_for`` for them (``dispatcher.slots``), less the per-recipient
    ones (see the module docstring)."""
    sender = getattr(campaign, "messaging_service_sid", None) or getattr(campaign, "sender", None)
    cache: dict[int, list[Bucket]] = {}

    def buckets_of(segments: int) -> list[Bucket]:
        hit = cache.get(segments)
        if hit is None:
            hit = cache[segments] = [
                b
                for b in buckets_for(
                    campaign,
                    brand_id=brand_id,
                    brand_tier=brand_tier,
                    sender=sender,
                    recipient="schedule-model",
                    segments=segments,
                    now=0.0,
                    min_grace_s=min_grace_s,
                )
                if b.kind not in RECIPIENT_KINDS
            ]
        return hit

    return buckets_of


# ------------------------------------------------------------------------------------- plan
@dataclass(frozen=True, slots=True)
class GroupPlan:
    group: Group
    rows: int
    first: float | None
    last: float | None
    never: int  # rows whose window never opens (an impossible custom quiet-hours policy)


@dataclass
class Plan:
    """When each row goes (``times[i]`` for ``rows[i]``; ``INF``: never), the finish (the last
    send), the sends per UTC hour, per group, and how many booked slots the gate gave back."""

    now: float
    times: list[float]
    groups: list[GroupPlan]
    given_back: int = 0
    hours: list[tuple[float, int]] = field(default_factory=list)

    @property
    def finish(self) -> float | None:
        done = [g.last for g in self.groups if g.last is not None]
        return max(done) if done else None

    @property
    def first(self) -> float | None:
        done = [g.first for g in self.groups if g.first is not None]
        return min(done) if done else None

    @property
    def never(self) -> int:
        return sum(g.never for g in self.groups)


class _Open:
    """When a group's recipients may be texted: its allowed intervals, a week at a time."""

    __slots__ = ("always", "ends", "origin", "starts", "until", "windows")

    def __init__(self, windows: Windows, origin: float) -> None:
        self.windows = windows
        self.always = not windows
        self.starts: list[float] = []
        self.ends: list[float] = []
        self.origin = self.until = origin

    def _extend(self) -> None:
        a = datetime.fromtimestamp(self.until, UTC)
        for s, e in allowed_intervals(self.windows, a, a + timedelta(days=7)):
            s_t, e_t = s.timestamp(), e.timestamp()
            if self.ends and self.ends[-1] == s_t:  # cut at the previous week's end
                self.ends[-1] = e_t
            else:
                self.starts.append(s_t)
                self.ends.append(e_t)
        self.until += 7 * DAY_S

    def at(self, t: float) -> float:
        """``t`` if the window is open at ``t`` (``t`` >= the origin), else when it next opens
        (``INF``: not within ``GIVE_UP_S``)."""
        if self.always:
            return t
        while True:
            if t < self.until:
                i = bisect_right(self.starts, t) - 1
                if i >= 0 and t < self.ends[i]:
                    return t
                if i + 1 < len(self.starts):
                    return self.starts[i + 1]
            if self.until - self.origin >= GIVE_UP_S:
                return INF
            self._extend()


class _Sliding:
    """A sliding-window bucket as the throttle books it: at most ``limit`` in any ``span``
    (period + grace) of booked times.  Bookings come in time order (the module's assumption),
    so the log needs only its entries of the last ``span`` before the latest booking."""

    __slots__ = ("limit", "load", "log", "span")

    def __init__(self, limit: int, span: float) -> None:
        self.limit, self.span = limit, span
        self.log: deque[list[float]] = deque()  # [time, cost], one entry per time, ascending
        self.load = 0

    def add(self, t: float, cost: int) -> None:
        if self.log and self.log[-1][0] == t:
            self.log[-1][1] += cost
        else:
            self.log.append([t, cost])
        self.load += cost

    def trim(self, floor: float) -> None:
        """Forget what cannot share a window with a slot at or after ``floor``."""
        log, edge = self.log, floor - self.span
        while log and log[0][0] <= edge:
            self.load -= int(log.popleft()[1])

    def fit(self, t: float, cost: int) -> float:
        """The earliest time at or after ``t`` (no earlier than every entry) with room."""
        if self.load + cost <= self.limit:
            return t
        load = self.load
        for et, ec in self.log:
            if et > t - self.span:
                if load + cost <= self.limit:
                    return t
                t = et + self.span
            load -= int(ec)
        return t

    def room(self, t: float, cost: int) -> int:
        """How many more of ``cost`` a slot at ``t`` (no earlier than every entry) can take."""
        edge = t - self.span
        load = self.load
        for et, ec in self.log:
            if et > edge:
                break
            load -= int(ec)
        return (self.limit - load) // cost


class _Daily:
    """A calendar bucket: at most ``limit`` per day from midnight in ``zone``; a slot in the last
    ``grace`` of a day counts in both days (as the throttle's script charges it)."""

    __slots__ = ("d0", "d1", "grace", "limit", "used", "zone")

    def __init__(self, limit: int, zone: str, grace: float) -> None:
        self.limit, self.zone, self.grace = limit, ZoneInfo(zone), grace
        self.used: Counter[float] = Counter()
        self.d0, self.d1 = INF, -INF

    def bounds(self, t: float) -> tuple[float, float]:
        if not self.d0 <= t < self.d1:
            day = datetime.fromtimestamp(t, self.zone).date()
            nxt = day + timedelta(days=1)
            self.d0 = datetime(day.year, day.month, day.day, tzinfo=self.zone).timestamp()
            self.d1 = datetime(nxt.year, nxt.month, nxt.day, tzinfo=self.zone).timestamp()
        return self.d0, self.d1

    def days(self, t: float) -> tuple[float, ...]:
        d0, d1 = self.bounds(t)
        return (d0, d1) if t + self.grace >= d1 else (d0,)

    def fit(self, t: float, cost: int) -> float:
        if self.d0 <= t < self.d1 - self.grace and self.used[self.d0] + cost <= self.limit:
            return t
        while True:
            days = self.days(t)
            if all(self.used[d] + cost <= self.limit for d in days):
                return t
            t = self.bounds(t)[1]

    def room(self, t: float, cost: int) -> int:
        return min((self.limit - self.used[d]) // cost for d in self.days(t))

    def add(self, t: float, cost: int) -> None:
        if self.d0 <= t < self.d1 - self.grace:
            self.used[self.d0] += cost
            return
        for d in self.days(t):
            self.used[d] += cost


def plan(
    rows: Sequence[Row],
    groups: Sequence[Group],
    buckets_of: BucketsOf,
    *,
    now: float,
    load: Load | None = None,
    horizon_s: float = BOOK_HORIZON_S,
    max_carried: int = MAX_CARRIED_PER_RUN,
) -> Plan:
    """When each of ``rows`` (in release order: due time, then row id) can go, from ``now``.

    ``buckets_of(segments)`` gives the throttle's buckets for a message of that many segments
    (:func:`campaign_buckets`); ``load`` what they already hold.  See the module docstring."""
    return _Model(rows, groups, buckets_of, now, load, horizon_s, max_carried).run()


class _Model:
    """One run of the model: the buckets, the rows waiting by due time (a *cohort* per instant:
    per group, its row ids in release order), the slots booked ahead and the slots to check."""

    def __init__(
        self,
        rows: Sequence[Row],
        groups: Sequence[Group],
        buckets_of: BucketsOf,
        now: float,
        load: Load | None,
        horizon_s: float,
        max_carried: int,
    ) -> None:
        self.rows, self.groups, self.now, self.horizon = rows, groups, now, horizon_s
        self.times = [INF] * len(rows)
        shape = list(buckets_of(1))
        self.sliding = [
            _Sliding(b.limit, b.period_s + b.grace) for b in shape if b.calendar_tz is None
        ]
        self.daily = [
            _Daily(b.limit, b.calendar_tz, b.grace) for b in shape if b.calendar_tz is not None
        ]
        order = [b.key for b in shape if b.calendar_tz is None]
        order += [b.key for b in shape if b.calendar_tz is not None]
        self.buckets: list[_Sliding | _Daily] = [*self.sliding, *self.daily]
        # per group, its cost in each bucket (sliding ones first) as the policy charges it
        self.costs: list[tuple[int, ...]] = []
        for g in groups:
            cost_of = {b.key: b.cost for b in buckets_of(g.segments)}
            self.costs.append(tuple(cost_of[k] for k in order))
        self.opens = [_Open(g.windows, now) for g in groups]
        # the release loop keeps at most this many rows of a run booked ahead (housekeeping)
        camp = next((b for b in shape if b.kind == "campaign"), None)
        self.carried_cap = max_carried
        if camp is not None:
            bookable = camp.limit * (math.ceil(horizon_s / camp.period_s) + 1)
            self.carried_cap = max(1, min(max_carried, bookable))
        #: rows let through per release once the cap binds (the loop releases as slots pass;
        #: the model, a window's worth or an eighth of the cap at a time)
        self.step = max(
            1, min(self.carried_cap, max(camp.limit if camp else 1, self.carried_cap // 8))
        )
        self.last = now  # the latest slot booked
        self.ahead: deque[list[float]] = deque()  # [slot, rows] booked ahead, ascending
        self.ahead_n = 0  # rows booked ahead (carried by queue messages)
        self.pending: dict[float, dict[int, list[tuple[list[int], int]]]] = {}
        self.instants: list[float] = []  # heap of the cohorts' instants
        self.wakes: list[tuple[float, int]] = []  # heap: (slot, row) to gate at its slot
        self.given_back = 0
        by_key = dict(zip(order, self.buckets, strict=True))
        if load is not None:
            for key, t, cost in sorted(load.sends, key=lambda x: x[1]):
                b = by_key.get(key)
                if b is not None:
                    b.add(t, cost)
                    self.last = max(self.last, t)
            for key, used in load.day_used:
                d = by_key.get(key)
                if isinstance(d, _Daily):
                    d.used[d.bounds(now)[0]] += used
        booked = sorted((max(r.ready, now), i) for i, r in enumerate(rows) if r.booked)
        for t, i in booked:
            self._book(t, self.costs[rows[i].group])
            if t > now:
                self.ahead.append([t, 1])
                self.ahead_n += 1
            heapq.heappush(self.wakes, (t, i))
        by_instant: dict[float, dict[int, list[int]]] = {}
        for i, r in enumerate(rows):
            if not r.booked:
                by_instant.setdefault(max(r.ready, now), {}).setdefault(r.group, []).append(i)
        for t, cohort in by_instant.items():
            for gi, ids in cohort.items():
                self._add(t, gi, ids, 0)

    # ---------------------------------------------------------------------------- helpers
    def _add(self, t: float, g: int, ids: list[int], off: int) -> None:
        cohort = self.pending.get(t)
        if cohort is None:
            cohort = self.pending[t] = {}
            heapq.heappush(self.instants, t)
        cohort.setdefault(g, []).append((ids, off))

    def _book(self, s: float, cost: tuple[int, ...]) -> None:
        for b, c in zip(self.buckets, cost):  # noqa: B905 - one cost per bucket (built so)
            b.add(s, c)
        if s > self.last:
            self.last = s

    def _slot(self, t: float, cost: tuple[int, ...]) -> float:
        """The earliest slot every bucket can take, at or after ``t`` and the last booked."""
        s = t if t > self.last else self.last
        for b in self.sliding:
            b.trim(s)
        buckets = self.buckets
        while True:
            s0 = s
            for bucket, c in zip(buckets, cost):  # noqa: B905 - one cost per bucket (built so)
                s = bucket.fit(s, c)
            if s == s0:
                return s

    # ---------------------------------------------------------------------------- run
    def run(self) -> Plan:
        instants, wakes = self.instants, self.wakes
        while instants or wakes:
            if wakes and (not instants or wakes[0][0] <= instants[0]):
                self._wake(*heapq.heappop(wakes))
            else:
                t = heapq.heappop(instants)
                self._release(t, self.pending.pop(t))
        return _summarise(self.rows, self.groups, self.times, self.now, self.given_back)

    def _wake(self, s: float, i: int) -> None:
        """A row at its booked slot: the gate again; inside quiet hours the slot is given back
        and the row deferred to the opening."""
        g = self.rows[i].group
        nxt = self.opens[g].at(s)
        if nxt == s:
            self.times[i] = s
            return
        cost = self.costs[g][len(self.sliding) :]
        for d, c in zip(self.daily, cost, strict=True):
            for day in d.days(s):
                d.used[day] -= c  # the day's count gets it back
        self.given_back += 1
        if nxt != INF:
            self._add(nxt, g, [i], 0)

    def _release(self, t: float, cohort: dict[int, list[tuple[list[int], int]]]) -> None:
        """The rows due at ``t``: a group in quiet hours waits for its opening; the others
        book slots in release order while the release loop would let them through."""
        live: list[list[Any]] = []  # [ids, offset, group]
        for g, parts in cohort.items():
            nxt = self.opens[g].at(t)
            if nxt != t:
                if nxt != INF:
                    for ids, off in parts:
                        self._add(nxt, g, ids, off)
                continue
            if len(parts) == 1:
                live.append([parts[0][0], parts[0][1], g])
            else:
                merged: list[int] = []
                for ids, off in parts:
                    merged.extend(ids[off:] if off else ids)
                merged.sort()  # sorted runs: a merge
                live.append([merged, 0, g])
        ahead = self.ahead
        while ahead and ahead[0][0] <= t:
            self.ahead_n -= int(ahead.popleft()[1])
        heap = [(e[0][e[1]], k) for k, e in enumerate(live) if e[1] < len(e[0])]
        heapq.heapify(heap)
        stop: float | None = None
        times, opens, costs = self.times, self.opens, self.costs
        while heap:
            if self.ahead_n >= self.carried_cap:
                stop = self._frees(self.step)
                break
            cost = costs[live[heap[0][1]][2]]
            s = self._slot(t, cost)
            if s - t > self.horizon:  # refused: back to the outbox, due at that slot
                stop = s
                break
            # the rows of this cost that the slot takes, in release order
            room = min(b.room(s, c) for b, c in zip(self.buckets, cost))  # noqa: B905
            if s > t:
                room = min(room, self.carried_cap - self.ahead_n)
            open_at: dict[int, bool] = {}
            took = 0
            while heap and took < room:
                i, k = heap[0]
                entry = live[k]
                g = entry[2]
                if costs[g] != cost:
                    break
                ok = open_at.get(g)
                if ok is None:
                    ok = open_at[g] = s == t or opens[g].at(s) == s
                if ok:
                    times[i] = s
                else:
                    heapq.heappush(self.wakes, (s, i))  # its slot is in its quiet hours
                took += 1
                entry[1] += 1
                if entry[1] < len(entry[0]):
                    heapq.heapreplace(heap, (entry[0][entry[1]], k))
                else:
                    heapq.heappop(heap)
            self._book(s, tuple(c * took for c in cost))
            if s > t:
                ahead.append([s, took])
                self.ahead_n += took
        if stop is not None:
            for ids, off, g in live:
                if off < len(ids):
                    self._add(stop, g, ids, off)

    def _frees(self, n: int) -> float:
        """When ``n`` of the rows booked ahead have gone (the release loop lets more through)."""
        seen = 0
        for slot, count in self.ahead:
            seen += int(count)
            if seen >= n:
                return float(slot)
        return float(self.ahead[-1][0])


def _summarise(
    rows: Sequence[Row], groups: Sequence[Group], times: list[float], now: float, given_back: int
) -> Plan:
    first: list[float | None] = [None] * len(groups)
    last: list[float | None] = [None] * len(groups)
    count = [0] * len(groups)
    never = [0] * len(groups)
    hours: Counter[int] = Counter()
    for r, t in zip(rows, times, strict=True):
        g = r.group
        count[g] += 1
        if t == INF:
            never[g] += 1
            continue
        hours[int(t // 3600)] += 1
        f, la = first[g], last[g]
        if f is None or t < f:
            first[g] = t
        if la is None or t > la:
            last[g] = t
    return Plan(
        now=now,
        times=times,
        groups=[
            GroupPlan(g, count[k], first[k], last[k], never[k])
            for k, g in enumerate(groups)
            if count[k]
        ],
        given_back=given_back,
        hours=[(h * 3600.0, hours[h]) for h in sorted(hours)],
    )
