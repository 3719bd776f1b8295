"""Reputation guard, I/O side: count a run's figures in SQL, evaluate (dispatcher.guard), pause.

Called after a provider status that carries an error code (a callback in the webhooks, a fetch or
a listing in the delivery core's resolve: ``check_runs``) and after a STOP, at most once per run
per ``min_interval_s`` of clock time (:class:`GuardLimiter`).  A pause
records its reason on the run (``Run.pause_reason``) and a ``GuardEvent`` (the reason and the
figures judged); resuming is the operator's decision.  A resume with an acknowledgement
(``runs.resume_run(acknowledge=...)``: CLI ``run resume --acknowledge``, API ``:resume`` with
``acknowledge``) records who and why and starts a fresh window: from then on the guard judges
only the run's sends at or after it (``guard_since``), never the old figures again.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Protocol

from sqlalchemy import and_, case, func, or_, select
from sqlmodel import Session

from dispatcher import hooks, outbox, runs
from dispatcher.clock import Clock, as_utc
from dispatcher.errors import ConflictError, InputError
from dispatcher.guard import (
    DEFAULT_THRESHOLDS,
    RunFigures,
    Thresholds,
    Verdict,
    evaluate,
    thresholds_from,
)
from dispatcher.models import Campaign, ConsentEvent, GuardEvent, OutboxMessage, Run

if TYPE_CHECKING:
    from dispatcher.delivery.ports import HaltSignal
    from dispatcher.store import Database

log = logging.getLogger(__name__)

#: messages handed to the carrier (the denominator of every rate)
HANDED = (outbox.SENT, outbox.DELIVERED, outbox.UNDELIVERED, outbox.FAILED)
OPT_OUT_SOURCES = ("keyword", "natural_language", "carrier")
FILTERING_CODE = 30007

T = OutboxMessage.__table__  # type: ignore[attr-defined]
CE = ConsentEvent.__table__  # type: ignore[attr-defined]
C = Campaign.__table__  # type: ignore[attr-defined]
GE = GuardEvent.__table__  # type: ignore[attr-defined]
#: the guard's own actor in ``GuardEvent``
GUARD_ACTOR = "reputation-guard"
#: ``GuardEvent.kind``
PAUSE, RESUME, ACKNOWLEDGE = "pause", "resume", "acknowledge"


class GuardMetrics(Protocol):
    def guard_event(self, campaign: str, kind: str) -> None: ...

    def guard_paused(self, campaign: str, reason: str) -> None: ...


def guard_since(session: Session, run_id: int) -> datetime | None:
    """When the run's guard window starts: its last acknowledgement, or None (every send)."""
    at = (
        session.connection()
        .execute(select(func.max(GE.c.at)).where(GE.c.run_id == run_id, GE.c.kind == ACKNOWLEDGE))
        .scalar()
    )
    return as_utc(at) if at is not None else None


def record(
    session: Session,
    run_id: int,
    kind: str,
    actor: str,
    now: datetime,
    reason: str | None = None,
    figures: dict[str, object] | None = None,
) -> GuardEvent:
    """One ``GuardEvent`` in the caller's transaction."""
    ev = GuardEvent(
        run_id=run_id, kind=kind, actor=actor[:128], reason=reason, figures=figures or {}, at=now
    )
    session.add(ev)
    return ev


def campaign_thresholds(campaign: Campaign, base: Thresholds = DEFAULT_THRESHOLDS) -> Thresholds:
    """The campaign's overrides on ``base``; a bad ``guard`` document falls back to ``base``."""
    try:
        return thresholds_from(campaign.guard or None, base)
    except InputError as e:
        log.warning("campaign %s: ignoring guard settings (%s)", campaign.sid, e)
        return base


def run_figures(
    session: Session, run: Run, campaign: Campaign, now: datetime, *, with_repetition: bool = True
) -> RunFigures:
    """The run's figures over its guard window: every send, or (after an acknowledgement) only
    the sends at or after it, and the opt-outs recorded since."""
    conn = session.connection()
    assert run.id is not None
    since = guard_since(session, run.id)
    handed = and_(T.c.run_id == run.id, T.c.state.in_(HANDED))
    if since is not None:
        handed = and_(handed, T.c.sent_at >= since)
    opt_out_from = max(as_utc(run.created_at), since) if since else run.created_at
    sends, filtered, failures = conn.execute(
        select(
            func.count(),
            func.coalesce(func.sum(case((T.c.error_code == FILTERING_CODE, 1), else_=0)), 0),
            func.coalesce(
                func.sum(case((T.c.state.in_((outbox.UNDELIVERED, outbox.FAILED)), 1), else_=0)), 0
            ),
        ).where(handed)
    ).one()
    recipients = select(T.c.contact_id).where(handed)
    opt_outs = conn.execute(
        select(func.count(func.distinct(CE.c.contact_id))).where(
            CE.c.action == "revoke",
            CE.c.source.in_(OPT_OUT_SOURCES),
            CE.c.brand_id == campaign.brand_id,
            CE.c.recorded_at >= opt_out_from,
            CE.c.contact_id.in_(recipients),
        )
    ).scalar_one()
    identical = 0
    if with_repetition:
        identical = _max_identical_today(session, campaign, now)
    return RunFigures(int(sends), int(filtered), int(failures), int(opt_outs), identical)


def _max_identical_today(session: Session, campaign: Campaign, now: datetime) -> int:
    """Largest number of sends of one identical body today (UTC) by the campaign's sender
    (its Messaging Service, else its From number: every campaign sharing it counts)."""
    if campaign.messaging_service_sid:
        same = C.c.messaging_service_sid == campaign.messaging_service_sid
    elif campaign.sender:
        same = C.c.sender == campaign.sender
    else:
        same = C.c.id == campaign.id
    start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    per_body = (
        select(func.count().label("n"))
        .where(
            T.c.campaign_id.in_(select(C.c.id).where(or_(same, C.c.id == campaign.id))),
            T.c.state.in_(HANDED),
            T.c.body_hash.is_not(None),
            T.c.sent_at >= start,
            T.c.sent_at < start + timedelta(days=1),
        )
        .group_by(T.c.body_hash)
        .subquery()
    )
    return int(session.connection().execute(select(func.max(per_body.c.n))).scalar() or 0)


def check_run(
    session: Session,
    run_id: int,
    now: datetime,
    base: Thresholds = DEFAULT_THRESHOLDS,
    *,
    halts: HaltSignal,
    metrics: GuardMetrics | None = None,
) -> Verdict | None:
    """Evaluate one run; pause it (in the caller's transaction, signalling ``halts``) when a
    threshold is crossed, recording the decision (``GuardEvent`` kind ``pause``, with the
    figures; ``metrics.guard_event``).  Returns None when the run is not active."""
    run = session.get(Run, run_id)
    if run is None or run.state not in runs.ACTIVE:
        return None
    campaign = session.get(Campaign, run.campaign_id)
    if campaign is None:
        return None
    t = campaign_thresholds(campaign, base)
    if not t.enabled:
        return Verdict(False)
    fig = run_figures(
        session, run, campaign, now, with_repetition=t.identical_bodies_per_day is not None
    )
    verdict = evaluate(fig, t)
    for w in verdict.warnings:
        log.info("run %s: reputation warning: %s", run_id, w)
    if verdict.pause and verdict.reason:
        try:
            if runs.pause_run(session, run_id, verdict.reason, now, halts=halts):
                log.warning("run %s paused: %s", run_id, verdict.reason)
                hooks.runs_changed(session, hooks.RUN_PAUSED, [run_id], now)
                since = guard_since(session, run_id)
                figures = {**vars(fig), "rates": verdict.rates}
                figures["since"] = since.isoformat() if since else None
                record(session, run_id, PAUSE, GUARD_ACTOR, now, verdict.reason, figures)
                if metrics is not None:
                    metrics.guard_event(campaign.sid, PAUSE)
                    metrics.guard_paused(campaign.sid, verdict.reason)
        except ConflictError:
            log.debug("run %s left the active states before the guard paused it", run_id)
    return verdict


def check_runs(
    db: Database,
    run_ids: list[int],
    clock: Clock,
    limiter: GuardLimiter,
    base: Thresholds = DEFAULT_THRESHOLDS,
    *,
    halts: HaltSignal,
    metrics: GuardMetrics | None = None,
) -> None:
    """Evaluate the guard of these runs, each in its own transaction, rate-limited per run by
    ``limiter``; never raises (the status that asked for it is already committed)."""
    for run_id in run_ids:
        if not limiter.allow(run_id):
            continue
        try:
            with db.session() as s:
                check_run(s, run_id, clock.now(), base, halts=halts, metrics=metrics)
        except Exception:  # noqa: BLE001
            log.exception("reputation guard failed for run %s", run_id)


class GuardLimiter:
    """At most one evaluation per run per ``min_interval_s`` of clock time (thread-safe)."""

    def __init__(self, clock: Clock, min_interval_s: float = 5.0) -> None:
        self.clock = clock
        self.min_interval_s = min_interval_s
        self._last: dict[int, float] = {}
        self._lock = threading.Lock()

    def allow(self, run_id: int) -> bool:
        now = self.clock.time()
        with self._lock:
            last = self._last.get(run_id)
            if last is not None and now - last < self.min_interval_s:
                return False
            if len(self._last) > 10_000:
                self._last.clear()
            self._last[run_id] = now
            return True
