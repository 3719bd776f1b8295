"""Every dashboard query, paired with the database's own figure for the same thing.

``CHECKS`` maps (dashboard file, panel title, target refId) to either

* a :class:`Check`: the labels of the query's series (``by``), how the database computes each
  series' value (a function of a :class:`Snapshot` of the database's rows, the evaluation time
  included) and the tolerance (:data:`EXACT` for counters; any other says why), or
* a :class:`NoDb`: the panel has no database equivalent, with a one-line reason.

A panel query without an entry (a new panel) is listed by
``test_every_panel_query_has_a_database_check_or_says_why_not``.

How a query is compared (tests/e2e/test_dashboards_prometheus.py):

* a query over ``rate(c[w])`` / ``increase(c[w])`` of counters whose whole life lies inside
  ``w``'s reach is compared through its counters: the same expression with each range function
  replaced by the counter itself (:func:`counter_view`), exactly: same aggregation, same label
  filters, same ratios;
* an ``increase`` panel is also evaluated as written, within :func:`increase_tolerance`:
  Prometheus extrapolates ``increase`` to the end of the window (at most one scrape interval past
  the last sample, over the series' sampled span), which is its documented behaviour, not the
  metric's; an unprimed series (first sample already above 0) would lose its first value here;
* gauges are evaluated as written.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

# ------------------------------------------------------------------------------ tolerances


@dataclass(frozen=True)
class Tol:
    """``kind``: ``exact`` (equal, up to float rounding of a ratio), ``abs`` / ``rel`` (within
    ``x``), ``lower_bound`` (Prometheus >= the database's figure); ``why`` says why it is not
    exact."""

    kind: str
    x: float = 0.0
    why: str = ""

    def agrees(self, got: float, want: float) -> bool:
        if self.kind == "lower_bound":
            return got >= want and (want == 0 or got > 0)
        slack = 1e-9 * max(1.0, abs(want))
        if self.kind == "abs":
            slack += self.x
        elif self.kind == "rel":
            slack += self.x * abs(want)
        return abs(got - want) <= slack


EXACT = Tol("exact")
#: Redis' HyperLogLog (PFCOUNT) has a standard error of 0.81 %; 3 sigma, and at least 1
HLL = Tol(
    "rel", 0.025, "distinct bodies are a HyperLogLog estimate (PFCOUNT, 0.81 % standard error)"
)
#: the scheduler observes every tick (0.5 s in the test), Prometheus scrapes every second
OBSERVED_AGE = Tol(
    "abs", 3.0, "an age the scheduler computed at its last observation (<= tick + scrape ago)"
)
DEFERRALS = Tol(
    "lower_bound",
    why="the counter counts deferrals (a row may be deferred many times); the database keeps "
    "each queued row's latest reason only, so it gives a lower bound",
)


# ------------------------------------------------------------------------------ the database


@dataclass
class OutboxRow:
    campaign: str
    sender: str
    brand: str
    run_id: int
    contact_id: int
    state: str
    suppress_reason: str | None
    defer_reason: str | None
    error_code: int | None
    provider_sid: str | None
    segments: int | None
    body_hash: str | None
    sent_at: datetime | None
    due_at: datetime
    enqueued_at: datetime | None

    @property
    def accepted(self) -> bool:  # handed to Twilio and accepted: it has a SID
        return self.provider_sid is not None


@dataclass
class Snapshot:
    """The database's rows the figures are computed from, read at ``at`` (unix time, the
    instant Prometheus evaluates the queries at)."""

    at: float
    rows: list[OutboxRow]
    #: sid -> (brand id, sender, registration status, the guard's thresholds, limits per second)
    campaigns: dict[str, dict[str, Any]]
    #: brand id -> T-Mobile daily cap (segments)
    brand_caps: dict[str, int]
    #: (campaign sid or "unknown", kind) of each new opt-out
    opt_outs: list[tuple[str, str]]
    #: (campaign sid or "unknown", classification) of inbound START / HELP
    replies: list[tuple[str, str]]
    #: (campaign sid, reason) of each guard pause
    pauses: list[tuple[str, str]]
    #: run_report.progress of every run the run gauges show (run_report.metrics_runs)
    runs: list[dict[str, Any]]
    queue: str = "deliver"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def now(self) -> datetime:
        return datetime.fromtimestamp(self.at, UTC)

    def sent(self) -> list[OutboxRow]:
        return [r for r in self.rows if r.accepted]


Figures = dict[tuple[str, ...], float]


def count(items: Iterable[tuple[str, ...]], weights: Iterable[float] | None = None) -> Figures:
    out: Counter[tuple[str, ...]] = Counter()
    keys = list(items)
    ws = list(weights) if weights is not None else [1.0] * len(keys)
    for key, w in zip(keys, ws, strict=True):
        out[key] += w
    return dict(out)


def ratio(num: Figures, den: Figures) -> Figures:
    """``num / clamp_min(den, 1)`` for every key of ``den`` (as the panels divide)."""
    return {k: num.get(k, 0.0) / max(d, 1.0) for k, d in den.items()}


def read_snapshot(db: Any, at: float, queue: str = "deliver") -> Snapshot:
    """Every figure's rows, read in one session."""
    from sqlalchemy import select

    from dispatcher import run_report
    from dispatcher.guard_check import campaign_thresholds
    from dispatcher.models import (
        Brand,
        Campaign,
        ConsentEvent,
        GuardEvent,
        InboundMessage,
        OutboxMessage,
        Run,
    )
    from dispatcher.throttle.policy import sender_mps, tmobile_daily_cap

    now = datetime.fromtimestamp(at, UTC)
    with db.session() as s:
        camps = list(s.scalars(select(Campaign)))
        by_id = {c.id: c for c in camps}
        labels = {
            c.id: (c.sid, c.messaging_service_sid or c.sender or "", str(c.brand_id)) for c in camps
        }
        t = OutboxMessage.__table__  # type: ignore[attr-defined]
        rows = []
        for r in s.connection().execute(select(t)):
            sid, sender, brand = labels[r.campaign_id]
            rows.append(
                OutboxRow(
                    sid,
                    sender,
                    brand,
                    r.run_id,
                    r.contact_id,
                    r.state,
                    r.suppress_reason,
                    r.defer_reason,
                    r.error_code,
                    r.provider_sid,
                    r.segments,
                    r.body_hash,
                    _utc(r.sent_at),
                    _utc(r.due_at),
                    _utc(r.enqueued_at),
                )
            )
        campaigns = {
            c.sid: {
                "brand": str(c.brand_id),
                "sender": labels[c.id][1],
                "status": c.campaign_status or "unknown",
                "thresholds": campaign_thresholds(c),
                "limits": {
                    "campaign_window": c.window_limit / max(c.window_seconds, 1),
                    "sender_mps": sender_mps(c.rate_limits),
                },
            }
            for c in camps
        }
        caps = {}
        for b in s.scalars(select(Brand)):
            cap = tmobile_daily_cap(b.tmobile_brand_tier)
            if cap is not None:
                caps[str(b.id)] = cap

        routes = {c.sender: c.sid for c in sorted(camps, key=lambda c: c.id) if c.sender}

        def answered_by(to: str | None, contact_id: int | None, before: datetime) -> str:
            """The campaign the webhooks label a reply with: the one whose number it was sent
            to, else the one that last texted the contact before ``before``."""
            if to in routes:
                return routes[to]
            sent = [
                r
                for r in rows
                if r.contact_id == contact_id and r.sent_at is not None and r.sent_at <= before
            ]
            return max(sent, key=lambda r: r.sent_at or now).campaign if sent else "unknown"

        opt_outs: list[tuple[str, str]] = []
        replies: list[tuple[str, str]] = []
        for m in s.scalars(select(InboundMessage)):
            camp = answered_by(m.to, m.contact_id, _utc(m.received_at) or now)
            # a revocation from someone already opted out is recorded "<kind>_REPEAT": not new
            if m.classification in ("STOP", "NL_REVOKE"):
                kind = "keyword" if m.classification == "STOP" else "natural_language"
                opt_outs.append((camp, kind))
            elif m.classification in ("START", "HELP"):
                replies.append((camp, m.classification))
        ce = ConsentEvent.__table__  # type: ignore[attr-defined]
        by_sid = {r.provider_sid: r.campaign for r in rows if r.provider_sid}
        refused = {r.contact_id: r.campaign for r in rows if r.error_code == 21610}
        for ev in s.connection().execute(
            select(ce.c.evidence_ref, ce.c.contact_id).where(
                ce.c.action == "revoke", ce.c.source == "carrier"
            )
        ):
            # 21610: the revocation's evidence is the refused message's SID; refused at send
            # time, the row has no SID: the contact's row that met 21610
            camp = by_sid.get(ev.evidence_ref) or refused.get(ev.contact_id, "unknown")
            opt_outs.append((camp, "carrier"))
        pauses = [
            (by_id[run.campaign_id].sid, ev.reason or "")
            for ev, run in s.execute(
                select(GuardEvent, Run)
                .join(Run, Run.id == GuardEvent.run_id)  # type: ignore[arg-type]
                .where(GuardEvent.kind == "pause")
            )
        ]
        shown = run_report.metrics_runs(s, now)
    return Snapshot(at, rows, campaigns, caps, opt_outs, replies, pauses, shown, queue)


def _utc(v: datetime | None) -> datetime | None:
    if v is None:
        return None
    return v.replace(tzinfo=UTC) if v.utcoffset() is None else v.astimezone(UTC)


# ------------------------------------------------------------------------------ figures
OUTCOME_STATES = ("delivered", "undelivered", "failed")
ERROR_STATES = ("undelivered", "failed")
WATCHED = ("30003", "30005", "30006", "30007", "21610")


def _code(r: OutboxRow) -> str:
    return "none" if r.error_code is None else str(r.error_code)


def sent_by(*labels: str) -> Callable[[Snapshot], Figures]:
    return lambda s: count(tuple(getattr(r, k) for k in labels) for r in s.sent())


def segments_by(*labels: str) -> Callable[[Snapshot], Figures]:
    return lambda s: count(
        (tuple(getattr(r, k) for k in labels) for r in s.sent()),
        [float(r.segments or 1) for r in s.sent()],
    )


def outcomes(
    s: Snapshot,
    labels: tuple[str, ...],
    states: tuple[str, ...] = OUTCOME_STATES,
    codes: tuple[str, ...] | None = None,
) -> Figures:
    """Rows in a final carrier outcome (the status callbacks' and send-time errors'), by
    ``labels`` among campaign, sender, status, error_code."""

    def key(r: OutboxRow) -> tuple[str, ...]:
        return tuple(
            r.state if k == "status" else _code(r) if k == "error_code" else getattr(r, k)
            for k in labels
        )

    return count(
        key(r) for r in s.rows if r.state in states and (codes is None or _code(r) in codes)
    )


def opt_outs_by(s: Snapshot, labels: tuple[str, ...]) -> Figures:
    def key(camp: str, kind: str) -> tuple[str, ...]:
        parts = {
            "campaign": camp,
            "kind": kind,
            "brand": s.campaigns.get(camp, {}).get("brand", ""),
        }
        return tuple(parts[k] for k in labels)

    return count(key(c, k) for c, k in s.opt_outs if "brand" not in labels or c in s.campaigns)


def rolling_24h(s: Snapshot) -> list[OutboxRow]:
    """Sends of the last 24 hourly buckets (UTC), the current one included: the window of the
    ``dispatcher_sender_24h_*`` gauges; only sends with a body hash feed them."""
    start = s.now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=23)
    return [r for r in s.sent() if r.body_hash and r.sent_at and r.sent_at >= start]


def repetition(s: Snapshot, what: str) -> Figures:
    per: dict[str, Counter[str]] = {}
    for r in rolling_24h(s):
        per.setdefault(r.sender, Counter())[r.body_hash or ""] += 1
    out: Figures = {}
    for sender, bodies in per.items():
        total, distinct = sum(bodies.values()), len(bodies)
        out[(sender,)] = {
            "distinct": distinct,
            "max": max(bodies.values()),
            "ratio": (total - distinct) / total,
        }[what]
    return out


def today_utc(s: Snapshot) -> list[OutboxRow]:
    day = s.now.date()
    return [r for r in s.sent() if r.body_hash and r.sent_at and r.sent_at.date() == day]


def cap_day_segments(s: Snapshot) -> Figures:
    """Segments sent in today's T-Mobile day (midnight Pacific) per brand."""
    from dispatcher.metrics_daily import cap_day_of

    day = cap_day_of(s.now)
    mine = [r for r in s.sent() if r.sent_at and cap_day_of(r.sent_at) == day]
    return count(((r.brand,) for r in mine), [float(r.segments or 1) for r in mine])


def guard_pauses(s: Snapshot) -> Figures:
    from dispatcher.metrics_runs import guard_signals

    def signal(reason: str) -> str:
        found = guard_signals(reason)
        return found[0] if found else "other"

    return count((camp, signal(reason)) for camp, reason in s.pauses)


def runs_by_state(s: Snapshot, states: tuple[str, ...] | None) -> Figures:
    """Sum over the runs shown of their rows in ``states`` (None: total) - run show's figures."""
    return {
        (): float(
            sum(
                p["total"] if states is None else sum(p["by_state"].get(x, 0) for x in states)
                for p in s.runs
            )
        )
    }


LIVE = ("queued", "deferred", "sending", "unknown")


def run_done(p: dict[str, Any]) -> float:
    return float(sum(n for st, n in p["by_state"].items() if st not in LIVE))


def run_eta(s: Snapshot) -> Figures:
    out: Figures = {}
    for p in s.runs:
        if p.get("started_at") is None:
            continue
        elapsed = max(s.at - p["started_at"].timestamp(), 1.0)
        left = float(sum(p["by_state"].get(x, 0) for x in LIVE))
        out[(str(p["id"]),)] = left / max(run_done(p) / elapsed, 0.000001)
    return out


def queue_depth(s: Snapshot) -> Figures:
    """Rows a queue message carries (queued, enqueued): what the scheduler counts."""
    return {(s.queue,): float(sum(1 for r in s.rows if r.state == "queued" and r.enqueued_at))}


def oldest_due_age(s: Snapshot) -> Figures:
    due = [r.due_at for r in s.rows if r.state == "queued" and r.due_at <= s.now]
    return {(s.queue,): (s.now - min(due)).total_seconds() if due else 0.0}


def campaign_field(what: Callable[[dict[str, Any]], float]) -> Callable[[Snapshot], Figures]:
    return lambda s: {(sid,): float(what(c)) for sid, c in s.campaigns.items()}


def binding_limit(c: dict[str, Any]) -> float:
    return float(min(c["limits"].values()))


# ------------------------------------------------------------------------------ the table


@dataclass(frozen=True)
class Check:
    by: tuple[str, ...]
    db: Callable[[Snapshot], Figures]
    tol: Tol = EXACT
    sql: str = ""  # what the database figure is, in words (the table's middle column)


@dataclass(frozen=True)
class NoDb:
    reason: str


Entry = Check | NoDb
OV, RE, RU = "overview.json", "reputation.json", "runs.json"

_OPT_RATE_CAMPAIGN: Callable[[Snapshot], Figures] = lambda s: ratio(  # noqa: E731
    opt_outs_by(s, ("campaign",)), sent_by("campaign")(s)
)


def _opt_rate_brand(s: Snapshot) -> Figures:
    return ratio(opt_outs_by(s, ("brand",)), sent_by("brand")(s))


CHECKS: dict[tuple[str, str, str], Entry] = {
    # ------------------------------------------------------------------ overview
    (OV, "Messages sent (24 h)", "A"): Check((), sent_by(), sql="outbox rows with a provider SID"),
    (OV, "Delivered share (1 h)", "A"): Check(
        (),
        lambda s: ratio(outcomes(s, (), ("delivered",)), outcomes(s, ())),
        sql="rows delivered / rows delivered, undelivered or failed",
    ),
    (OV, "Opt-outs (24 h)", "A"): Check(
        (),
        lambda s: opt_outs_by(s, ()),
        sql="new STOP / natural-language revocations (inbound) + carrier (21610) ledger revokes",
    ),
    (OV, "Queue depth", "A"): Check(
        (),
        lambda s: {(): sum(queue_depth(s).values())},
        sql="rows queued with enqueued_at set (a queue message carries them)",
    ),
    (OV, "Throughput: messages per second by campaign", "A"): Check(
        ("campaign",), sent_by("campaign"), sql="accepted rows by campaign (the rate's counter)"
    ),
    (OV, "Throughput: segments per second by sender", "A"): Check(
        ("sender",), segments_by("sender"), sql="sum(segments) of accepted rows by sender"
    ),
    (OV, "Delivery outcomes per second", "A"): Check(
        ("status",), lambda s: outcomes(s, ("status",)), sql="rows by final state"
    ),
    (OV, "Errors per second by Twilio error code", "A"): Check(
        ("error_code",),
        lambda s: outcomes(s, ("error_code",), ERROR_STATES),
        sql="undelivered/failed rows by error_code",
    ),
    (OV, "Suppressed by reason (per second)", "A"): Check(
        ("reason",),
        lambda s: count((r.suppress_reason or "",) for r in s.rows if r.state == "suppressed"),
        sql="suppressed rows by suppress_reason",
    ),
    (OV, "Deferred by reason (per second)", "A"): Check(
        ("reason",),
        lambda s: count(
            (r.defer_reason,) for r in s.rows if r.state == "queued" and r.defer_reason
        ),
        DEFERRALS,
        sql="queued rows by their (latest) defer_reason",
    ),
    (OV, "Send latency to Twilio", "A"): NoDb("create-message call durations are not stored"),
    (OV, "Send latency to Twilio", "B"): NoDb("create-message call durations are not stored"),
    (OV, "Workers in flight and queue", "A"): NoDb(
        "Dramatiq messages inside a worker thread right now: a process state, not a row state"
    ),
    (OV, "Workers in flight and queue", "B"): Check(
        ("queue",), queue_depth, sql="rows queued with enqueued_at set"
    ),
    (OV, "Opt-outs per campaign (1 h)", "A"): Check(
        ("campaign", "kind"),
        lambda s: opt_outs_by(s, ("campaign", "kind")),
        sql="new opt-outs by the campaign that last texted the contact (21610: the refused "
        "row's) and kind",
    ),
    (OV, "Opt-ins and HELP per campaign (1 h)", "A"): Check(
        ("campaign",),
        lambda s: count((c,) for c, k in s.replies if k == "START"),
        sql="inbound START by the campaign that last texted the contact",
    ),
    (OV, "Opt-ins and HELP per campaign (1 h)", "B"): Check(
        ("campaign",),
        lambda s: count((c,) for c, k in s.replies if k == "HELP"),
        sql="inbound HELP by the campaign that last texted the contact",
    ),
    (OV, "HTTP requests per second by route and status", "A"): NoDb(
        "HTTP requests are not stored (only inbound messages, not callbacks or API calls)"
    ),
    (OV, "HTTP latency p95 by route", "A"): NoDb("request durations are not stored"),
    (OV, "Process CPU by job", "A"): NoDb("operating-system figures of the processes"),
    (OV, "Processes up by version", "A"): NoDb(
        "processes, not data (the test asserts the three targets are up)"
    ),
    # ------------------------------------------------------------------ reputation
    (RE, "Daily segments per brand vs T-Mobile cap", "A"): Check(
        ("brand",),
        cap_day_segments,
        sql="sum(segments) of rows accepted in today's T-Mobile day (midnight Pacific) by brand",
    ),
    (RE, "Daily segments per brand vs T-Mobile cap", "B"): Check(
        ("brand",),
        lambda s: {(b,): float(c) for b, c in s.brand_caps.items()},
        sql="throttle.policy.tmobile_daily_cap(brand.tmobile_brand_tier)",
    ),
    (RE, "Share of the daily cap used", "A"): Check(
        ("brand",),
        lambda s: {k: v / s.brand_caps[k[0]] for k, v in cap_day_segments(s).items()},
        sql="the two above divided",
    ),
    (RE, "Messages per day by sender", "A"): Check(
        ("sender",),
        lambda s: count((r.sender,) for r in today_utc(s)),
        sql="accepted rows with a body hash sent today (UTC) by sender",
    ),
    (RE, "Throughput by sender (messages per second)", "A"): Check(
        ("sender",), sent_by("sender"), sql="accepted rows by sender (the rate's counter)"
    ),
    (RE, "Segments per brand (messages' volume, 1 h)", "A"): Check(
        ("brand",), segments_by("brand"), sql="sum(segments) of accepted rows by brand"
    ),
    (RE, "Share of sends repeating an identical body (rolling 24 h)", "A"): Check(
        ("sender",),
        lambda s: repetition(s, "ratio"),
        Tol("abs", 0.025, "1 - distinct/sends, distinct a HyperLogLog estimate (0.81 % error)"),
        sql="1 - count(distinct body_hash) / count(*) of accepted rows, last 24 hourly buckets",
    ),
    (RE, "Distinct bodies and largest identical-body count (rolling 24 h)", "A"): Check(
        ("sender",),
        lambda s: repetition(s, "distinct"),
        HLL,
        sql="count(distinct body_hash) of accepted rows, last 24 hourly buckets, by sender",
    ),
    (RE, "Distinct bodies and largest identical-body count (rolling 24 h)", "B"): Check(
        ("sender",),
        lambda s: repetition(s, "max"),
        sql="max over body_hash of count(*), accepted rows, last 24 hourly buckets, by sender",
    ),
    (RE, "Filtered by carrier (30007) per sender, last hour", "A"): Check(
        ("sender",),
        lambda s: outcomes(s, ("sender",), ERROR_STATES, ("30007",)),
        sql="rows with error_code 30007 by sender",
    ),
    (RE, "30007 filtering rate per campaign (1 h) vs the guard", "A"): Check(
        ("campaign",),
        lambda s: ratio(
            outcomes(s, ("campaign",), ERROR_STATES, ("30007",)), sent_by("campaign")(s)
        ),
        sql="rows with error_code 30007 / accepted rows, by campaign",
    ),
    (RE, "30007 filtering rate per campaign (1 h) vs the guard", "B"): Check(
        ("campaign",),
        campaign_field(lambda c: c["thresholds"].filtering_rate),
        sql="guard_check.campaign_thresholds(campaign).filtering_rate (campaign.guard applied)",
    ),
    (RE, "Error rate per sender (1 h)", "A"): Check(
        ("sender",),
        lambda s: ratio(outcomes(s, ("sender",), ERROR_STATES), outcomes(s, ("sender",))),
        sql="undelivered+failed rows / delivered+undelivered+failed rows, by sender",
    ),
    (RE, "Errors by Twilio code per campaign (1 h)", "A"): Check(
        ("campaign", "error_code"),
        lambda s: outcomes(s, ("campaign", "error_code"), ERROR_STATES, WATCHED),
        sql="undelivered/failed rows with a watched code by campaign and error_code",
    ),
    (RE, "Opt-out rate per campaign (24 h)", "A"): Check(
        ("campaign",), _OPT_RATE_CAMPAIGN, sql="new opt-outs / accepted rows, by campaign"
    ),
    (RE, "Opt-out rate per brand (24 h)", "A"): Check(
        ("brand",),
        _opt_rate_brand,
        sql="new opt-outs (STOP + natural language + 21610) / accepted rows, by the campaign's "
        "brand",
    ),
    (RE, "Guard pauses by campaign and signal (24 h)", "A"): Check(
        ("campaign", "signal"),
        guard_pauses,
        sql="guardevent rows of kind pause by the run's campaign and the first signal named",
    ),
    (RE, "Runs by state", "A"): Check(
        ("state",),
        lambda s: count((str(p["state"]),) for p in s.runs),
        sql="run rows active or paused, or finished in the last hour, by state",
    ),
    (RE, "Campaigns by registration status", "A"): Check(
        ("status",),
        lambda s: count((c["status"],) for c in s.campaigns.values()),
        sql="campaign rows by campaign_status",
    ),
    # ------------------------------------------------------------------ runs
    (RU, "Sent (incl. delivered)", "A"): Check(
        (), lambda s: runs_by_state(s, ("sent", "delivered")), sql="run show's by_state"
    ),
    (RU, "Failed or undelivered", "A"): Check(
        (), lambda s: runs_by_state(s, ("failed", "undelivered")), sql="run show's by_state"
    ),
    (RU, "Suppressed", "A"): Check(
        (), lambda s: runs_by_state(s, ("suppressed",)), sql="run show's by_state"
    ),
    (RU, "Remaining", "A"): Check((), lambda s: runs_by_state(s, LIVE), sql="run show's live"),
    (RU, "Cancelled", "A"): Check(
        (), lambda s: runs_by_state(s, ("cancelled",)), sql="run show's by_state"
    ),
    (RU, "Total", "A"): Check((), lambda s: runs_by_state(s, None), sql="run show's total"),
    (RU, "Run progress (share of messages done)", "A"): Check(
        ("run",),
        lambda s: {(str(p["id"]),): run_done(p) / max(p["total"], 1) for p in s.runs},
        sql="run show's done / total",
    ),
    (RU, "Estimated time to finish", "A"): Check(
        ("run",),
        run_eta,
        sql="run show's live / (done / (evaluation time - run.started_at))",
    ),
    (RU, "Run messages by state", "A"): Check(
        ("run", "state"),
        lambda s: {(str(p["id"]), st): float(n) for p in s.runs for st, n in p["by_state"].items()},
        sql="run show's by_state, per run",
    ),
    (RU, "Throttle wait by bucket kind", "A"): NoDb("the throttle's waits are not stored"),
    (RU, "Throttle wait by bucket kind", "B"): NoDb("the throttle's waits are not stored"),
    (RU, "Reservations per second by bucket kind", "A"): NoDb(
        "throttle reservations live in Redis, not in the database"
    ),
    (RU, "Share of reservations refused", "A"): NoDb(
        "throttle reservations live in Redis, not in the database"
    ),
    (RU, "Throughput by campaign against its binding limit", "A"): Check(
        ("campaign",),
        lambda s: {
            k: v / binding_limit(s.campaigns[k[0]]) for k, v in sent_by("campaign")(s).items()
        },
        sql="accepted rows by campaign / min(window_limit / window_seconds, sender MPS)",
    ),
    (RU, "Queue depth", "A"): Check(
        ("queue",), queue_depth, sql="rows queued with enqueued_at set"
    ),
    (RU, "Age of the oldest due message", "A"): Check(
        ("queue",),
        oldest_due_age,
        OBSERVED_AGE,
        sql="evaluation time - min(due_at) of queued rows that are due",
    ),
    (RU, "Workers in flight", "A"): NoDb(
        "Dramatiq messages inside a worker thread right now: a process state, not a row state"
    ),
}


# ------------------------------------------------------------------------------ queries
_RANGE = re.compile(r"\b(rate|increase)\((\w+(?:\{[^}]*\})?)\[\w+\]\)")


def counter_view(expr: str) -> str:
    """The query with each ``rate(c[w])`` / ``increase(c[w])`` replaced by ``c``: what the
    counters say over their whole life (the run lies inside every window of the panels)."""
    return _RANGE.sub(r"(\2)", expr)


def range_functions(expr: str) -> set[str]:
    return {m.group(1) for m in _RANGE.finditer(expr)}


def increase_tolerance(scrape_s: float, span_s: float) -> Tol:
    return Tol(
        "rel",
        1.1 * scrape_s / max(span_s, scrape_s),
        "increase() extrapolates to the window's end: at most 1.1 scrape intervals over the "
        "series' sampled span",
    )
