"""What a run looks like, for the CLI, the HTTP API and the demo: progress (counts by state,
reasons, ETA), a run's summary, and the dry run of a launch (audience, suppressions, the first
message, the estimated finish).  Reads only; run control is in dispatcher.runs."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlmodel import Session

from dispatcher import audience as aud
from dispatcher import ledger, outbox
from dispatcher.clock import as_utc
from dispatcher.models import Campaign, Contact, Run
from dispatcher.runs import (
    CANCELLED,
    COMPLETED,
    OB,
    STAGE_BATCH,
    LaunchRequest,
    get_run,
    recipient_list,
)
from dispatcher.templates import parse_template


# --------------------------------------------------------------------------------- progress
def counts(session: Session, run_id: int) -> dict[str, int]:
    rows = (
        session.connection()
        .execute(select(OB.c.state, func.count()).where(OB.c.run_id == run_id).group_by(OB.c.state))
        .all()
    )
    return {state: n for state, n in rows}


def reasons(session: Session, run_id: int) -> dict[str, int]:
    rows = (
        session.connection()
        .execute(
            select(OB.c.suppress_reason, func.count())
            .where(OB.c.run_id == run_id, OB.c.state == outbox.SUPPRESSED)
            .group_by(OB.c.suppress_reason)
        )
        .all()
    )
    return {r or "unknown": n for r, n in rows}


def progress(session: Session, run_id: int, now: datetime) -> dict[str, Any]:
    run = get_run(session, run_id)
    c = counts(session, run_id)
    total = run.total or sum(c.values())
    deferred_by = {
        r or "unknown": n
        for r, n in session.connection()
        .execute(
            select(OB.c.defer_reason, func.count())
            .where(OB.c.run_id == run_id, OB.c.state == outbox.QUEUED, OB.c.due_at > now)
            .group_by(OB.c.defer_reason)
        )
        .all()
    }
    deferred = sum(deferred_by.values())
    handed = sum(c.get(s, 0) for s in ("sent", "delivered", "undelivered", "sending", "unknown"))
    done = handed + sum(c.get(s, 0) for s in ("failed", "suppressed", "cancelled"))
    campaign = session.get(Campaign, run.campaign_id)
    return {
        "id": run.id,
        "campaign": campaign.sid if campaign else None,
        "state": run.state,
        "pause_reason": run.pause_reason,
        "send_at": as_utc(run.send_at),
        "started_at": as_utc(run.started_at) if run.started_at else None,
        "finished_at": as_utc(run.finished_at) if run.finished_at else None,
        "total": total,
        "done": done,
        "by_state": c,
        "deferred": deferred,
        "deferred_by_reason": deferred_by,
        "suppressed_by_reason": reasons(session, run_id),
        "failed_by_code": {
            str(code): n
            for code, n in session.connection()
            .execute(
                select(OB.c.error_code, func.count())
                .where(OB.c.run_id == run_id, OB.c.state.in_((outbox.FAILED, outbox.UNDELIVERED)))
                .group_by(OB.c.error_code)
            )
            .all()
        },
        "eta": _eta(run, campaign, total - done, now),
    }


def _eta(run: Run, campaign: Campaign | None, remaining: int, now: datetime) -> datetime | None:
    if campaign is None or remaining <= 0 or run.state in (COMPLETED, CANCELLED):
        return None
    start = max(now, as_utc(run.send_at))
    return start + timedelta(seconds=estimate_seconds(remaining, campaign))


def estimate_seconds(n: int, campaign: Campaign, segments: int = 1) -> float:
    """Time to send ``n`` messages at the tightest configured rate (no quiet hours)."""
    if n <= 0:
        return 0.0
    from dispatcher.throttle.policy import Bucket, mps_bucket_shape, sender_mps

    win = Bucket("x:{b:0}", campaign.window_limit, float(campaign.window_seconds))
    t_window = ((n - 1) // campaign.window_limit) * (campaign.window_seconds + win.grace)
    limit, period = mps_bucket_shape(sender_mps(campaign.rate_limits))
    t_mps = ((n * segments - 1) // limit) * period
    return float(max(t_window, t_mps))


def run_dict(run: Run) -> dict[str, Any]:
    return {
        "id": run.id,
        "campaign_id": run.campaign_id,
        "state": run.state,
        "send_at": as_utc(run.send_at),
        "total": run.total,
        "actor": run.actor,
        "pause_reason": run.pause_reason,
        "audience": run.audience,
        "idempotency_key": run.idempotency_key,
        "created_at": as_utc(run.created_at),
    }


# ---------------------------------------------------------------------------------- dry run
def dry_run(
    session: Session, req: LaunchRequest, *, now: datetime, sample_limit: int | None = None
) -> dict[str, Any]:
    """What a launch would do, without writing: audience size, suppressed by reason, the first
    message composed for a real recipient with its segments, and the estimated finish time."""
    from dispatcher import compliance
    from dispatcher.delivery.gate import evaluate
    from dispatcher.registry import get_brand, get_campaign

    tpl = parse_template(req.template)
    campaign = get_campaign(session, req.campaign)
    brand = get_brand(session, campaign.brand_id)
    send_at = as_utc(req.send_at) if req.send_at else now
    outcome: Counter[str] = Counter()
    rejected: Counter[str] = Counter()
    first_text: str | None = None
    pause: str | None = None
    total = 0
    for batch in _audience_batches(session, req, rejected):
        ids = [c.id for c, _ in batch if c.id is not None]
        consent = ledger.statuses(session, ids, brand_id=brand.id, campaign_id=campaign.id)
        for contact, variables in batch:
            total += 1
            st = consent.get(contact.id, ledger.NO_CONSENT) if contact.id else ledger.NO_CONSENT
            g = evaluate(tpl, variables, contact, brand, campaign, st, [], send_at)
            if g.kind == "pause":
                pause = g.reason
                outcome["would_send"] += 1
            elif g.kind == "suppress":
                outcome[f"suppressed:{g.reason}"] += 1
            else:
                outcome["would_send" if g.kind == "send" else f"deferred:{g.reason}"] += 1
            if first_text is None and g.text and g.kind in ("send", "defer"):
                first_text = g.text
        if sample_limit and total >= sample_limit:
            break
    sendable = total - sum(v for k, v in outcome.items() if k.startswith("suppressed:"))
    seg = compliance.segments(first_text) if first_text else None
    seconds = estimate_seconds(sendable, campaign, seg.count if seg else 1)
    return {
        "campaign": campaign.sid,
        "campaign_status": campaign.campaign_status,
        "audience": total,
        "rejected": dict(rejected),
        "would_send": outcome.get("would_send", 0),
        "deferred": {
            k.split(":", 1)[1]: v for k, v in outcome.items() if k.startswith("deferred:")
        },
        "suppressed": {
            k.split(":", 1)[1]: v for k, v in outcome.items() if k.startswith("suppressed:")
        },
        "blocked_by_campaign": pause,
        "first_message": first_text,
        "encoding": seg.encoding if seg else None,
        "segments": seg.count if seg else None,
        "limits": f"{campaign.window_limit} per {campaign.window_seconds}s",
        "estimated_seconds": round(seconds),
        "estimated_finish": send_at + timedelta(seconds=seconds),
    }


def _audience_batches(session: Session, req: LaunchRequest, rejected: Counter[str]):  # type: ignore[no-untyped-def]
    kind = req.audience.get("kind")
    if kind in ("all", "segment"):
        cond = aud.where_clause(req.audience)
        last = 0
        while True:
            rows = list(
                session.exec(
                    select(Contact)
                    .where(cond, Contact.id > last)
                    .order_by(Contact.id)
                    .limit(STAGE_BATCH)
                ).scalars()
            )
            if not rows:
                return
            last = rows[-1].id
            yield [(c, None) for c in rows]
        return

    def resolve(chunk: list[tuple[str, dict[str, Any]]]) -> list[tuple[Contact, Any]]:
        known = {
            c.phone: c
            for c in session.exec(
                select(Contact).where(Contact.phone.in_([p for p, _ in chunk]))
            ).scalars()
        }  # type: ignore[attr-defined]
        return [(known.get(p) or Contact(phone=p), v) for p, v in chunk]

    chunk: list[tuple[str, dict[str, Any]]] = []
    for e164, _why, v in recipient_list(req):  # streamed: never the whole list in memory
        if e164 is None:
            rejected["invalid_phone"] += 1
            continue
        chunk.append((e164, v))
        if len(chunk) >= STAGE_BATCH:
            yield resolve(chunk)
            chunk = []
    if chunk:
        yield resolve(chunk)
