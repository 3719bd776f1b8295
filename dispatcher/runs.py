"""Run control shared by the CLI, the HTTP API and ``notify()``: one code path.

Life of a run: ``scheduled`` (waiting for ``send_at``) -> ``fanning_out`` (one outbox row per
recipient, in SQL) -> ``running`` (the scheduler releases due rows to the queue) -> ``completed``
when no row is left to send; ``paused`` / ``cancelled`` by the operator, the reputation guard or
a campaign-level gate.  Every transition is a compare-and-set on the run's state, so two
schedulers can never fan a run out twice (and the outbox's unique (run, contact) backs that up).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, insert, literal, select, text, update
from sqlmodel import Session, col

from dispatcher import audience as aud
from dispatcher import hooks, outbox
from dispatcher.clock import as_utc
from dispatcher.dedupe import SeenPhones
from dispatcher.errors import ConflictError, InputError, NotFoundError
from dispatcher.models import Campaign, Contact, GuardEvent, OutboxMessage, Run, pk
from dispatcher.run_state import ACTIVE as ACTIVE  # the run states: part of this module's API
from dispatcher.run_state import CANCELLED as CANCELLED
from dispatcher.run_state import COMPLETED as COMPLETED
from dispatcher.run_state import FANNING_OUT as FANNING_OUT
from dispatcher.run_state import PAUSED as PAUSED
from dispatcher.run_state import RUNNING as RUNNING
from dispatcher.run_state import SCHEDULED as SCHEDULED
from dispatcher.run_state import pause as _pause
from dispatcher.run_state import run_id as _run_id
from dispatcher.store import bulk_insert
from dispatcher.templates import parse_template

if TYPE_CHECKING:
    from dispatcher.delivery.ports import HaltSignal

R = Run.__table__  # type: ignore[attr-defined]
OB = OutboxMessage.__table__  # type: ignore[attr-defined]
C = Contact.__table__  # type: ignore[attr-defined]
STAGE_BATCH = 2000
#: PostgreSQL LISTEN/NOTIFY channel: a transaction that makes work for the scheduler's tick
#: (a run due now, a resumed run) notifies it; the notification is delivered on commit only, and
#: the scheduler (workers/scheduler.py) then ticks at once instead of at its next interval
WAKE_CHANNEL = "dispatcher_wake"


def wake_scheduler(session: Session) -> None:
    """``NOTIFY`` the scheduler when this session's transaction commits (PostgreSQL; a no-op
    elsewhere: the regular tick finds the work anyway, this only makes it sooner)."""
    conn = session.connection()
    if conn.dialect.name == "postgresql":
        conn.execute(text(f"NOTIFY {WAKE_CHANNEL}"))


# ------------------------------------------------------------------------------------ launch
@dataclass
class LaunchRequest:
    campaign: str  # SID or id
    template: str
    audience: dict[str, Any]  # see dispatcher.audience
    send_at: datetime | None = None
    actor: str = "operator"
    idempotency_key: str | None = None
    recipients: list[dict[str, Any]] | None = None  # inline list: {"phone", "variables"}
    options: dict[str, Any] = field(default_factory=dict)
    #: accept the launch checks' warnings (never their errors); not part of the fingerprint:
    #: a replay returns the run whether or not it repeats ``force``
    force: bool = False

    def fingerprint(self) -> str:
        doc = {
            "campaign": self.campaign,
            "template": self.template,
            "audience": self.audience,
            "send_at": self.send_at.isoformat() if self.send_at else None,
            "recipients": self.recipients,
            "options": self.options,
        }
        return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


def launch(session: Session, req: LaunchRequest, *, now: datetime) -> tuple[Run, bool]:
    """Create a run (idempotent by key), unchecked.  Returns (run, created).  The caller commits.

    Launches by an operator or a program go through ``dispatcher.launch.submit_run``, which adds
    the launch checks and the idempotency race; this is the storage step (tests, the demo)."""
    parse_template(req.template)  # malformed template -> InputError before anything is written
    existing = find_replay(session, req)
    if existing is not None:
        return existing, False
    from dispatcher.registry import get_campaign

    return create_run(session, req, get_campaign(session, req.campaign), now=now), True


def find_replay(session: Session, req: LaunchRequest) -> Run | None:
    """The run an earlier request with ``req``'s idempotency key made, or None;
    ``ConflictError`` when that request was another one."""
    if not req.idempotency_key:
        return None
    existing = session.scalars(
        select(Run).where(col(Run.idempotency_key) == req.idempotency_key)
    ).first()
    if existing is not None and existing.request_hash != req.fingerprint():
        raise ConflictError(
            f"idempotency key {req.idempotency_key!r} was used with a different request"
        )
    return existing


def create_run(session: Session, req: LaunchRequest, campaign: Campaign, *, now: datetime) -> Run:
    """Write the run (and, for a CSV or list audience, its outbox rows).  The caller commits;
    a unique-key race on ``req.idempotency_key`` surfaces as IntegrityError."""
    send_at = as_utc(req.send_at) if req.send_at else now
    run = Run(
        campaign_id=pk(campaign),
        template=req.template,
        audience=req.audience,
        state=SCHEDULED,
        send_at=send_at,
        actor=req.actor,
        idempotency_key=req.idempotency_key,
        request_hash=req.fingerprint(),
        options=req.options,
        created_at=now,
    )
    session.add(run)
    session.flush()
    kind = req.audience.get("kind")
    if kind in ("csv", "list"):
        stats = _stage(session, run, campaign, req, send_at, now)
        run.audience = {**req.audience, "staged": True, **stats}
        run.total = stats["staged"]
        session.add(run)
    elif kind not in ("all", "segment"):
        raise InputError(f"unknown audience kind {kind!r}", field="audience")
    session.flush()
    if send_at <= as_utc(now):  # due now: fan out at once (a later one waits for its tick anyway)
        wake_scheduler(session)
    return run


def recipient_list(req: LaunchRequest) -> Iterator[tuple[str | None, str | None, dict[str, Any]]]:
    """(E.164 or None, why not, variables) per recipient of a CSV or list audience, streamed."""
    if req.audience.get("kind") == "csv":
        for _line, e164, why, variables in aud.iter_csv(Path(req.audience["path"])):
            yield e164, why, variables
        return
    from dispatcher.phones import try_normalize

    for r in req.recipients or []:
        e164, why = try_normalize(str(r.get("phone", "")))  # E.164 already: the fast path
        yield e164, why, dict(r.get("variables") or {})


def _stage(
    session: Session,
    run: Run,
    campaign: Campaign,
    req: LaunchRequest,
    send_at: datetime,
    now: datetime,
) -> dict[str, Any]:
    """Write the outbox rows of a recipient list in batches (streamed for CSV files)."""
    rejected: Counter[str] = Counter()
    staged = 0
    batch: list[tuple[str, dict[str, Any]]] = []

    def flush() -> int:
        if not batch:
            return 0
        phones = [p for p, _ in batch]
        conn = session.connection()
        ids: dict[str, int] = dict(
            conn.execute(select(C.c.phone, C.c.id).where(C.c.phone.in_(phones))).all()
        )
        fresh = [p for p in phones if p not in ids]
        if fresh:  # unknown numbers become contacts (with no consent: the gates suppress them)
            bulk_insert(
                conn,
                C,
                [
                    {"phone": p, "attributes": {}, "created_at": now, "updated_at": now}
                    for p in fresh
                ],
            )
            ids.update(conn.execute(select(C.c.phone, C.c.id).where(C.c.phone.in_(fresh))).all())
        bulk_insert(
            conn,
            OB,
            [
                {
                    "run_id": run.id,
                    "campaign_id": campaign.id,
                    "contact_id": ids[p],
                    "to_phone": p,
                    "variables": v,
                    "state": outbox.QUEUED,
                    "due_at": send_at,
                    "attempts": 0,
                    "updated_at": now,
                }
                for p, v in batch
            ],
        )
        n = len(batch)
        batch.clear()
        return n

    with SeenPhones() as seen:  # on disk: a CSV of any size stages in flat memory
        for e164, _why, variables in recipient_list(req):
            if e164 is None:
                rejected["invalid_phone"] += 1
                continue
            if not seen.add(e164):
                rejected["duplicate"] += 1
                continue
            batch.append((e164, variables))
            if len(batch) >= STAGE_BATCH:
                staged += flush()
    staged += flush()
    return {"staged": staged, "rejected": dict(rejected)}


# ---------------------------------------------------------------------------------- fan-out
def fan_out(session: Session, run_id: int, now: datetime) -> int:
    """scheduled -> fanning_out -> running.  Audience 'all'/'segment' becomes outbox rows with one
    INSERT ... SELECT (idempotent: rows that exist are skipped).  Returns rows created."""
    claimed = (
        session.connection()
        .execute(
            update(R)
            .where(R.c.id == run_id, R.c.state.in_((SCHEDULED, FANNING_OUT)))
            .values(state=FANNING_OUT, started_at=now)
        )
        .rowcount
    )
    if not claimed:
        return 0
    run = session.get_one(Run, run_id)
    created = 0
    if "staged" not in run.audience:  # a count, 0 when every listed phone was rejected
        created = _insert_select(session, run, now)
    total = (
        session.connection()
        .execute(select(func.count()).select_from(OB).where(OB.c.run_id == run_id))
        .scalar_one()
    )
    session.connection().execute(
        update(R)
        .where(R.c.id == run_id, R.c.state == FANNING_OUT)
        .values(state=RUNNING, total=total)
    )
    return created


def _insert_select(session: Session, run: Run, now: datetime) -> int:
    cond = aud.where_clause(run.audience)
    exists = select(OB.c.id).where(OB.c.run_id == run.id, OB.c.contact_id == C.c.id).exists()
    src = select(
        literal(run.id),
        literal(run.campaign_id),
        C.c.id,
        C.c.phone,
        literal(outbox.QUEUED),
        literal(as_utc(run.send_at)),
        literal(0),
        literal(now),
    ).where(cond, ~exists)
    # rows numbered in contact order: the release order (due time, row id) is then the order the
    # dry run plans in (dispatcher.schedule), not whichever index the database scans
    src = src.order_by(C.c.id)
    stmt = insert(OB).from_select(
        [
            "run_id",
            "campaign_id",
            "contact_id",
            "to_phone",
            "state",
            "due_at",
            "attempts",
            "updated_at",
        ],
        src,
    )
    # psycopg 3 keeps an INSERT ... SELECT's rowcount only when asked to
    res = session.connection().execute(stmt.execution_options(preserve_rowcount=True))
    return max(0, res.rowcount or 0)


def due_runs(session: Session, now: datetime) -> list[int]:
    q = select(R.c.id).where(R.c.state.in_((SCHEDULED, FANNING_OUT)), R.c.send_at <= now)
    return [r[0] for r in session.connection().execute(q)]


def complete_finished(session: Session, now: datetime) -> list[int]:
    """running -> completed when no row is left queued, sending or unknown."""
    pending = (
        select(OB.c.id)
        .where(
            OB.c.run_id == R.c.id, OB.c.state.in_((outbox.QUEUED, outbox.SENDING, outbox.UNKNOWN))
        )
        .exists()
    )
    ids = [
        r[0]
        for r in session.connection().execute(select(R.c.id).where(R.c.state == RUNNING, ~pending))
    ]
    if ids:
        ids = [  # those this call completed (another scheduler may have taken some)
            r[0]
            for r in session.connection().execute(
                update(R)
                .where(R.c.id.in_(ids), R.c.state == RUNNING)
                .values(state=COMPLETED, finished_at=now)
                .returning(R.c.id)
            )
        ]
        hooks.runs_changed(session, hooks.RUN_FINISHED, ids, now)  # producers' webhooks
    return ids


# ---------------------------------------------------------------------------------- control
def get_run(session: Session, run_id: int) -> Run:
    run = session.get(Run, _run_id(run_id))
    if run is None:
        raise NotFoundError("run", run_id)
    return run


def pause_run(
    session: Session, run_id: int, reason: str, now: datetime, *, halts: HaltSignal
) -> bool:
    """Pause an active run (``dispatcher.run_state.pause``, in the session's transaction)."""
    return _pause(session.connection(), run_id, reason, halts=halts)


def resume_run(
    session: Session,
    run_id: int,
    now: datetime,
    *,
    actor: str = "operator",
    acknowledge: str | None = None,
) -> bool:
    """Resume a paused run, recording who resumed (``GuardEvent`` kind ``resume``).  With
    ``acknowledge`` (why: the operator looked at the guard's figures) the event is an
    ``acknowledge`` and the reputation guard judges only the run's sends from ``now`` on
    (guard_check.guard_since): a fresh window, not the old figures again."""
    run = get_run(session, run_id)
    if run.state != PAUSED:
        raise ConflictError(f"run {run_id} is {run.state}; only a paused run can be resumed")
    why = (acknowledge or "").strip()
    if acknowledge is not None and not why:
        raise InputError("an acknowledgement needs a reason", field="acknowledge")
    target = RUNNING if run.started_at is not None else SCHEDULED
    session.connection().execute(
        update(R)
        .where(R.c.id == run_id, R.c.state == PAUSED)
        .values(state=target, pause_reason=None)
    )
    session.add(
        GuardEvent(
            run_id=pk(run),
            kind="acknowledge" if why else "resume",
            actor=actor[:128],
            reason=why or None,
            figures={"pause_reason": run.pause_reason},
            at=now,
        )
    )
    # rows that a queue message still carried were parked on pause: release them again
    outbox.unpark_run(session, run_id)
    wake_scheduler(session)
    return True


def cancel_run(session: Session, run_id: int, now: datetime, *, halts: HaltSignal) -> int:
    """Cancel: every row not yet handed to the carrier becomes 'cancelled' (rows a worker already
    claimed meet the halt key signalled here, before the caller commits).  Returns how many
    queued rows were cancelled."""
    run = get_run(session, run_id)
    if run.state in (COMPLETED, CANCELLED):
        raise ConflictError(f"run {run_id} is already {run.state}")
    session.connection().execute(
        update(R).where(R.c.id == run_id).values(state=CANCELLED, finished_at=now)
    )
    n = outbox.cancel_run_rows(session, run_id, now)
    assert run.id is not None
    halts.signal(runs=[run.id])
    return n


def pause_campaign_runs(
    session: Session, campaign_id: int, reason: str, now: datetime, *, halts: HaltSignal
) -> int:
    """Pause every active run of a campaign (campaign suspended, 30034, reputation guard); rows
    a worker already claimed meet the halt key signalled here, before the caller commits."""
    res = session.connection().execute(
        update(R)
        .where(R.c.campaign_id == campaign_id, R.c.state.in_(ACTIVE))
        .values(state=PAUSED, pause_reason=reason[:1000])
    )
    halts.signal(campaigns=[campaign_id])
    return res.rowcount


def list_runs(session: Session, limit: int = 50) -> list[Run]:
    return list(session.scalars(select(Run).order_by(col(Run.id).desc()).limit(limit)))
