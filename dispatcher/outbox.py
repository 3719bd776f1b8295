"""Outbox state machine: the ONLY writer of outbox states.  Every transition is one function
here, a compare-and-set UPDATE from the states it allows, so two workers (or a worker, the
scheduler and a webhook) can never both move one row.

    queued ──claim──► sending ──► sent ──status──► delivered | undelivered
      │                  ├──────► failed                 (sent/failed also set by callbacks)
      │                  ├──────► unknown ──resolve──► sent | queued
      │                  └──────► queued | suppressed | cancelled   (claimed, never sent)
      └──► suppressed | cancelled      (never handed to the carrier)

=====================================  ======================================  ===============
transition                             function                                called by
=====================================  ======================================  ===============
queued -> sending (a batch)            ``claim_many``                          the pipeline
sending|unknown -> sent                ``mark_sent_many`` / ``mark_sent``      the pipeline
sending -> queued (not handed over)    ``unclaim``; ``release`` (refused)      the pipeline
sending -> suppressed | cancelled      ``drop_claimed``                        the halt check
sending -> failed | unknown            ``mark_failed`` / ``mark_unknown``      the send step
sending -> unknown (worker lost)       ``expire_claims``                       the reconciler
unknown -> sent | queued               ``resolve_unknown``                     resolve
queued -> later / suppressed           ``defer`` / ``suppress``                the gate
queued -> cancelled                    ``cancel`` (a row) / ``cancel_run_rows``  pipeline / runs
queued -> suppressed (a revocation)    ``suppress_for_contact`` (in            consent service
                                       ``outbox_states``: no models)
queued, carried by a queue message     ``release_due`` (the release loop);     scheduler,
  or not                               ``unqueue``, ``unpark_run``,            pipeline,
                                       ``forget_lost``                         runs, reconciler
sent+ -> a later status                ``apply_provider_status`` /             status callbacks
                                       ``apply_provider_statuses`` (a batch)
=====================================  ======================================  ===============

A row is claimed with its batch (``claim_many``) and *in flight* from the moment its worker
starts its send: it may have reached the carrier.  Only the worker that claimed it gives a row it
never sent back (``unclaim``, ``drop_claimed``, ``release`` for a refused request); a row that
may have reached the carrier goes back to ``queued`` only through ``resolve_unknown``, after
asking the carrier.  Rows are created by ``runs`` (fan-out, staged lists) in ``queued``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    DateTime,
    Integer,
    String,
    and_,
    bindparam,
    case,
    func,
    literal,
    or_,
    select,
    text,
    update,
)
from sqlmodel import Session

from dispatcher.models import OutboxMessage
from dispatcher.outbox_states import CANCELLED as CANCELLED  # states and suppress_for_contact: API
from dispatcher.outbox_states import DELIVERED as DELIVERED
from dispatcher.outbox_states import FAILED as FAILED
from dispatcher.outbox_states import NOT_HANDED as NOT_HANDED
from dispatcher.outbox_states import QUEUED as QUEUED
from dispatcher.outbox_states import SENDING as SENDING
from dispatcher.outbox_states import SENT as SENT
from dispatcher.outbox_states import STATES as STATES
from dispatcher.outbox_states import SUPPRESSED as SUPPRESSED
from dispatcher.outbox_states import UNDELIVERED as UNDELIVERED
from dispatcher.outbox_states import UNKNOWN as UNKNOWN
from dispatcher.outbox_states import suppress_for_contact as suppress_for_contact

#: ordering for status callbacks: a later callback never moves a row backwards
RANK = {QUEUED: 0, SENDING: 1, UNKNOWN: 1, SENT: 2, DELIVERED: 3, UNDELIVERED: 3, FAILED: 3}

T = OutboxMessage.__table__  # type: ignore[attr-defined]


def _conn(db: Session | Connection) -> Connection:
    """Transitions run in a Session's transaction or on a held Connection (the worker's)."""
    return db if isinstance(db, Connection) else db.connection()


def _cas(
    session: Session | Connection,
    row_id: int,
    expect: tuple[str, ...],
    values: dict[str, Any],
    extra: Any = None,
) -> bool:
    cond = and_(T.c.id == row_id, T.c.state.in_(expect))
    if extra is not None:
        cond = and_(cond, extra)
    res = _conn(session).execute(update(T).where(cond).values(**values))
    return res.rowcount == 1


def _claim_statement() -> Any:
    from dispatcher.models import Run

    runs = Run.__table__  # type: ignore[attr-defined]
    return (
        update(T)
        .where(
            T.c.id == bindparam("b_id"),
            T.c.state == QUEUED,
            T.c.run_id.in_(select(runs.c.id).where(runs.c.state == "running")),
        )
        .values(
            state=SENDING,
            claimed_at=bindparam("b_now"),
            claim_token=bindparam("b_token"),
            updated_at=bindparam("b_now"),
            attempts=T.c.attempts + 1,
            body=bindparam("b_body"),
            body_hash=bindparam("b_hash"),
            segments=bindparam("b_segments"),
            defer_reason=None,
        )
    )


def _mark_sent_statement() -> Any:
    """sending|unknown -> sent with the carrier's SID, if the claim token still matches."""
    return (
        update(T)
        .where(
            T.c.id == bindparam("b_id"),
            or_(T.c.state == SENDING, T.c.state == UNKNOWN),
            T.c.claim_token == bindparam("b_token"),
        )
        .values(
            state=SENT,
            provider_sid=bindparam("b_sid"),
            provider_status=bindparam("b_status"),
            sent_at=bindparam("b_now"),
            updated_at=bindparam("b_now"),
            error_code=None,
            error_message=None,
        )
    )


def _cancelled_runs() -> Any:
    from dispatcher.models import Run

    runs = Run.__table__  # type: ignore[attr-defined]
    return select(runs.c.id).where(runs.c.state == CANCELLED)  # a run state of the same name


_CANCELLED_RUNS = _cancelled_runs()

#: the statements of every send, built once (SQLAlchemy then reuses their compiled form without
#: rebuilding the construct and its cache key per message)
_CLAIM = _claim_statement()
_MARK_SENT = _mark_sent_statement()


def _batch_text(sql: str) -> Any:
    """A PostgreSQL statement over a whole batch: its rows ride as arrays through ``unnest``,
    so the text is constant (parsed and cached once) whatever the batch's size."""
    from dispatcher.models import Campaign, Run

    return text(
        sql.replace("{t}", T.name)
        .replace("{runs}", str(Run.__tablename__))
        .replace("{campaigns}", str(Campaign.__tablename__))
    )


#: the batch's rows are locked in id order (a cancel or a STOP updating many rows at once cannot
#: deadlock with it); a row someone else holds right now is skipped: a lost claim, as if they
#: had moved it first
_CLAIM_MANY_PG = _batch_text(
    "WITH c AS MATERIALIZED (SELECT id FROM {t} WHERE id = ANY(CAST(:ids AS bigint[])) "
    "AND state = 'queued' ORDER BY id FOR UPDATE SKIP LOCKED) "
    "UPDATE {t} AS o SET state = 'sending', claimed_at = :now, claim_token = :token, "
    "updated_at = :now, attempts = o.attempts + 1, body = v.body, body_hash = v.body_hash, "
    "segments = v.segments, defer_reason = NULL "
    "FROM unnest(CAST(:ids AS bigint[]), CAST(:bodies AS text[]), CAST(:hashes AS text[]), "
    "CAST(:segments AS integer[])) AS v(id, body, body_hash, segments), c "
    "WHERE o.id = v.id AND o.id = c.id AND o.state = 'queued' "
    "AND o.run_id IN (SELECT id FROM {runs} WHERE state = 'running') RETURNING o.id"
)
_MARK_SENT_MANY_PG = _batch_text(
    "UPDATE {t} AS o SET state = 'sent', provider_sid = v.sid, provider_status = v.status, "
    "sent_at = v.at, updated_at = v.at, error_code = NULL, error_message = NULL "
    "FROM unnest(CAST(:ids AS bigint[]), CAST(:tokens AS text[]), CAST(:sids AS text[]), "
    "CAST(:statuses AS text[]), CAST(:ats AS timestamptz[])) AS v(id, token, sid, status, at) "
    "WHERE o.id = v.id AND o.state IN ('sending', 'unknown') AND o.claim_token = v.token"
)


@dataclass(frozen=True, slots=True)
class Sent:
    """A send the carrier accepted, to record with ``mark_sent`` / ``mark_sent_many``."""

    row_id: int
    token: str
    sid: str
    status: str | None
    at: datetime

    def params(self) -> dict[str, Any]:
        return {
            "b_id": self.row_id,
            "b_token": self.token,
            "b_sid": self.sid,
            "b_status": self.status,
            "b_now": self.at,
        }


@dataclass(frozen=True, slots=True)
class ToClaim:
    """A row to claim with the body it will carry."""

    row_id: int
    body: str
    body_hash: str
    segments: int | None


def claim_many(conn: Connection, rows: list[ToClaim], now: datetime) -> tuple[str, set[int]]:
    """queued -> sending for a batch (each with its composed body), only while its run is
    running: ONE statement on PostgreSQL.  Returns the batch's claim token and the ids claimed;
    the others were moved by someone else (a STOP suppressed it, the run was paused or
    cancelled, another worker has it).  Call on an autocommit connection: the claim is committed
    before any row is handed to the carrier."""
    token = uuid.uuid4().hex
    if not rows:
        return token, set()
    if conn.dialect.name == "postgresql":
        got = conn.execute(
            _CLAIM_MANY_PG,
            {
                "now": now,
                "token": token,
                "ids": [r.row_id for r in rows],
                "bodies": [r.body for r in rows],
                "hashes": [r.body_hash for r in rows],
                "segments": [r.segments for r in rows],
            },
        )
        return token, {r[0] for r in got}
    claimed: set[int] = set()  # SQLite: in process, so a statement per row costs no round trip
    try:
        for r in rows:
            if (
                conn.execute(
                    _CLAIM,
                    {
                        "b_id": r.row_id,
                        "b_now": now,
                        "b_token": token,
                        "b_body": r.body,
                        "b_hash": r.body_hash,
                        "b_segments": r.segments,
                    },
                ).rowcount
                == 1
            ):
                claimed.add(r.row_id)
    except BaseException:
        unclaim(conn, sorted(claimed), token, now)  # none of them is handed over
        raise
    return token, claimed


def mark_sent(session: Session | Connection, sent: Sent) -> bool:
    return _conn(session).execute(_MARK_SENT, sent.params()).rowcount == 1


def mark_sent_many(conn: Connection, sents: list[Sent]) -> int:
    """Record several accepted sends (each only if its claim token still matches): one
    statement on PostgreSQL.  Returns how many rows it moved."""
    if not sents:
        return 0
    if conn.dialect.name == "postgresql":
        return conn.execute(
            _MARK_SENT_MANY_PG,
            {
                "ids": [x.row_id for x in sents],
                "tokens": [x.token for x in sents],
                "sids": [x.sid for x in sents],
                "statuses": [x.status for x in sents],
                "ats": [x.at for x in sents],
            },
        ).rowcount
    return sum(mark_sent(conn, x) for x in sents)


def unclaim(
    session: Session | Connection,
    ids: list[int],
    token: str,
    now: datetime,
    *,
    due_at: datetime | None = None,
    reason: str | None = None,
    enqueued: bool = False,
    refund: bool = True,
) -> int:
    """sending -> queued for claimed rows that were NOT handed to the carrier (their slot is
    later, their run paused, their batch ran out of time): with ``refund`` the claim's attempt
    is given back.  ``enqueued``: a delayed queue message carries the row; otherwise release
    enqueues it when due.  A row whose run was cancelled meanwhile becomes ``cancelled``
    (nothing releases a cancelled run's rows).  Returns how many rows moved (only those still
    claimed with ``token``)."""
    if not ids:
        return 0
    values: dict[str, Any] = {
        "state": case((T.c.run_id.in_(_CANCELLED_RUNS), CANCELLED), else_=QUEUED),
        "claim_token": None,
        "attempts": T.c.attempts - 1 if refund else T.c.attempts,
        "enqueued_at": now if enqueued else None,
        "updated_at": now,
    }
    if due_at is not None:
        values["due_at"] = due_at
    if reason is not None:
        values["defer_reason"] = reason
    return (
        _conn(session)
        .execute(
            update(T)
            .where(T.c.id.in_(ids), T.c.state == SENDING, T.c.claim_token == token)
            .values(**values)
        )
        .rowcount
    )


def drop_claimed(
    session: Session | Connection, row_id: int, token: str, state: str, reason: str, now: datetime
) -> bool:
    """sending -> suppressed | cancelled for a claimed row NOT handed to the carrier (its
    contact opted out, its run was cancelled after the claim)."""
    return _cas(
        session,
        row_id,
        (SENDING,),
        {
            "state": state,
            "suppress_reason": reason,
            "claim_token": None,
            "attempts": T.c.attempts - 1,
            "updated_at": now,
        },
        T.c.claim_token == token,
    )


def mark_failed(
    session: Session, row_id: int, token: str, code: int | None, message: str, now: datetime
) -> bool:
    return _cas(
        session,
        row_id,
        (SENDING,),
        {
            "state": FAILED,
            "error_code": code,
            "error_message": message[:500],
            "updated_at": now,
        },
        T.c.claim_token == token,
    )


def mark_unknown(session: Session, row_id: int, token: str, message: str, now: datetime) -> bool:
    return _cas(
        session,
        row_id,
        (SENDING,),
        {
            "state": UNKNOWN,
            "error_message": message[:500],
            "updated_at": now,
        },
        T.c.claim_token == token,
    )


def release(
    session: Session | Connection,
    row_id: int,
    token: str,
    due_at: datetime,
    reason: str,
    now: datetime,
) -> bool:
    """sending -> queued when the request certainly did NOT reach the carrier (refused before
    acceptance: 429, 5xx returned, connection refused).  The attempt counts: the retry's
    backoff grows with it."""
    return unclaim(session, [row_id], token, now, due_at=due_at, reason=reason, refund=False) == 1


def resolve_unknown(
    session: Session, row_id: int, *, found_sid: str | None, status: str | None, now: datetime
) -> bool:
    """unknown -> sent (the carrier has it) or -> queued (it never arrived: safe to resend).  A
    status past "sent" (its callbacks came while the row had no SID) is applied after this, by
    ``provider_status.apply_status`` with its error code, as any other status."""
    if found_sid:
        return _cas(
            session,
            row_id,
            (UNKNOWN,),
            {
                "state": SENT,
                "provider_sid": found_sid,
                "provider_status": status,
                "sent_at": now,
                "updated_at": now,
            },
        )
    return _cas(
        session,
        row_id,
        (UNKNOWN,),
        {
            "state": QUEUED,
            "due_at": now,
            "enqueued_at": None,
            "claim_token": None,
            "defer_reason": "resend_after_lookup",
            "updated_at": now,
        },
    )


def defer(
    session: Session | Connection, row_id: int, until: datetime, reason: str, now: datetime
) -> bool:
    """Keep the row queued but due later: the release loop enqueues it when it falls due."""
    return _cas(
        session,
        row_id,
        (QUEUED,),
        {
            "due_at": until,
            "defer_reason": reason,
            "enqueued_at": None,
            "updated_at": now,
        },
    )


def touch(session: Session, row_id: int, state: str, now: datetime) -> bool:
    return _cas(session, row_id, (state,), {"updated_at": now})


def unqueue(session: Session | Connection, row_id: int, now: datetime) -> bool:
    """Forget that a queue message carries the row (run paused): release picks it up later."""
    return _cas(session, row_id, (QUEUED,), {"enqueued_at": None, "updated_at": now})


def cancel(session: Session | Connection, row_id: int, reason: str, now: datetime) -> bool:
    """queued -> cancelled (its run was cancelled before a worker claimed it)."""
    return _cas(
        session,
        row_id,
        (QUEUED,),
        {"state": CANCELLED, "suppress_reason": reason, "updated_at": now},
    )


def cancel_run_rows(session: Session | Connection, run_id: int, now: datetime) -> int:
    """queued -> cancelled for every row of a cancelled run (claimed rows meet the halt check).
    Returns how many moved."""
    return (
        _conn(session)
        .execute(
            update(T)
            .where(T.c.run_id == run_id, T.c.state == QUEUED)
            .values(state=CANCELLED, updated_at=now)
        )
        .rowcount
    )


def unpark_run(session: Session | Connection, run_id: int) -> int:
    """Forget the queue messages of a run's queued rows (parked while it was paused): the
    release loop releases them again.  Returns how many rows."""
    return (
        _conn(session)
        .execute(
            update(T).where(T.c.run_id == run_id, T.c.state == QUEUED).values(enqueued_at=None)
        )
        .rowcount
    )


def suppress(session: Session, row_id: int, reason: str, now: datetime) -> bool:
    return _cas(
        session,
        row_id,
        (QUEUED,),
        {
            "state": SUPPRESSED,
            "suppress_reason": reason,
            "updated_at": now,
        },
    )


def in_flight_for_contact(session: Session, contact_id: int) -> int:
    q = select(T.c.id).where(T.c.contact_id == contact_id, T.c.state == SENDING)
    return len(session.connection().execute(q).all())


#: Twilio status -> outbox state (a Messaging Service's accepted/scheduled count as handed over)
PROVIDER_STATE = {
    "queued": SENT,
    "accepted": SENT,
    "scheduled": SENT,
    "sending": SENT,
    "sent": SENT,
    "delivered": DELIVERED,
    "undelivered": UNDELIVERED,
    "failed": FAILED,
    "read": DELIVERED,
    "partially_delivered": DELIVERED,
    "canceled": FAILED,
}


def _provider_move(state: str) -> Any:
    """The callback's compare-and-set to ``state``, built once per target state: the row moves
    only from a lower rank (plain bound values, no IN list expanded per execution)."""
    lower = [literal(s, String) for s, r in RANK.items() if r < RANK[state]]
    now = bindparam("b_now", type_=DateTime(timezone=True))
    return (
        update(T)
        .where(T.c.provider_sid == bindparam("b_sid", type_=String), T.c.state.in_(lower))
        .values(
            state=state,
            provider_status=bindparam("b_status", type_=String),
            status_at=now,
            updated_at=now,
            # an error code is recorded only when the callback carries one
            error_code=func.coalesce(bindparam("b_code", type_=Integer), T.c.error_code),
        )
        .returning(T.c.id, T.c.run_id, T.c.campaign_id, T.c.contact_id, T.c.state)
    )


_PROVIDER_MOVES = {state: _provider_move(state) for state in set(PROVIDER_STATE.values())}


def apply_provider_status(
    session: Session | Connection, sid: str, status: str, error_code: int | None, now: datetime
) -> Any:
    """Status callback: move the row forward only (a late 'sent' never overwrites 'delivered').

    One conditional UPDATE ... RETURNING: the row moves only from a lower rank.  Returns the
    moved row (id, run_id, campaign_id, contact_id, state) or None if nothing moved."""
    state = PROVIDER_STATE.get(status)
    if state is None:
        return None
    return (
        _conn(session)
        .execute(
            _PROVIDER_MOVES[state],
            {
                "b_sid": sid,
                "b_status": status,
                "b_now": now,
                "b_code": error_code or None,
            },
        )
        .first()
    )


#: the state's rank as SQL (NULL for a state outside RANK: such a row never moves)
_RANK_SQL = "CASE o.state " + " ".join(f"WHEN '{s}' THEN {r}" for s, r in RANK.items()) + " END"
#: a batch of status moves in ONE statement, each row moved only from a lower rank.  No
#: ``FOR UPDATE`` pass first (as ``claim_many`` has): it wrote every row twice (its lock, then
#: its update; +0.15 ms of PostgreSQL CPU per callback on bench/callbacks.py), and the only other
#: writer of several rows that have SIDs is another webhook server's batch: the SIDs go in sorted,
#: and a deadlock between two such batches fails one, whose callbacks are then applied one by one
_PROVIDER_MOVES_MANY_PG = _batch_text(
    "UPDATE {t} AS o SET state = v.state, provider_status = v.status, status_at = :now, "
    "updated_at = :now "
    "FROM unnest(CAST(:sids AS text[]), CAST(:statuses AS text[]), CAST(:states AS text[]), "
    "CAST(:ranks AS integer[])) AS v(sid, status, state, rank) "
    f"WHERE o.provider_sid = v.sid AND {_RANK_SQL} < v.rank "
    "RETURNING o.provider_sid, o.id, o.run_id, o.campaign_id, o.contact_id, o.state"
)


def apply_provider_statuses(
    session: Session | Connection, moves: dict[str, str], now: datetime
) -> dict[str, Any]:
    """Status callbacks without an error code, one per SID (``{sid: status}``, each status a
    key of ``PROVIDER_STATE``): each row moved forward only, as ``apply_provider_status``
    would.  Returns the moved rows by SID (id, run_id, campaign_id, contact_id, state).

    On PostgreSQL ONE statement whatever the batch's size; elsewhere one per SID."""
    conn = _conn(session)
    if conn.dialect.name != "postgresql":
        moved = {sid: apply_provider_status(conn, sid, st, None, now) for sid, st in moves.items()}
        return {sid: row for sid, row in moved.items() if row is not None}
    rows = conn.execute(_PROVIDER_MOVES_MANY_PG, _moves_params(moves, now))
    return {r[0]: r for r in rows}


def _moves_params(moves: dict[str, str], now: datetime) -> dict[str, Any]:
    """The arrays the ``unnest`` statements take, one entry per SID (sorted)."""
    sids = sorted(moves)
    states = [PROVIDER_STATE[moves[sid]] for sid in sids]
    return {
        "sids": sids,
        "statuses": [moves[sid] for sid in sids],
        "states": states,
        "ranks": [RANK[st] for st in states],
        "now": now,
    }


#: ``_PROVIDER_MOVES_MANY_PG`` for a statement that is its own transaction (autocommit): a row
#: of a campaign whose status is one of ``:held_statuses`` is left alone (its move has reactions
#: that must commit with it: provider_status.apply_statuses_alone), and each moved row comes
#: back with its campaign's SID and sender (what the callback's metrics are labelled with)
_PROVIDER_MOVES_ALONE_PG = _batch_text(
    "UPDATE {t} AS o SET state = v.state, provider_status = v.status, status_at = :now, "
    "updated_at = :now "
    "FROM unnest(CAST(:sids AS text[]), CAST(:statuses AS text[]), CAST(:states AS text[]), "
    "CAST(:ranks AS integer[])) AS v(sid, status, state, rank), {campaigns} AS c "
    f"WHERE o.provider_sid = v.sid AND {_RANK_SQL} < v.rank AND c.id = o.campaign_id "
    "AND upper(coalesce(c.campaign_status, '')) <> ALL(CAST(:held_statuses AS text[])) "
    "RETURNING o.provider_sid, o.id, o.run_id, o.campaign_id, o.contact_id, o.state, "
    "c.sid AS campaign_sid, coalesce(nullif(c.messaging_service_sid, ''), c.sender) AS sender"
)


#: the same for ONE SID: a plain index lookup (the unnest plan costs PostgreSQL ~0.1 ms more
#: CPU per statement, and most batches of status callbacks hold one)
_PROVIDER_MOVE_ALONE_PG = _batch_text(
    "UPDATE {t} AS o SET state = :state, provider_status = :status, status_at = :now, "
    "updated_at = :now FROM {campaigns} AS c "
    f"WHERE o.provider_sid = :sid AND {_RANK_SQL} < :rank AND c.id = o.campaign_id "
    "AND upper(coalesce(c.campaign_status, '')) <> ALL(CAST(:held_statuses AS text[])) "
    "RETURNING o.provider_sid, o.id, o.run_id, o.campaign_id, o.contact_id, o.state, "
    "c.sid AS campaign_sid, coalesce(nullif(c.messaging_service_sid, ''), c.sender) AS sender"
)


def apply_provider_statuses_alone(
    conn: Connection, moves: dict[str, str], now: datetime, held_statuses: frozenset[str]
) -> dict[str, Any]:
    """``apply_provider_statuses`` as ONE statement complete in itself, for a connection in
    autocommit (PostgreSQL only): the rows of a campaign whose upper-cased ``campaign_status``
    is in ``held_statuses`` do not move.  Returns the moved rows by SID (id, run_id,
    campaign_id, contact_id, state, campaign_sid, sender)."""
    if conn.dialect.name != "postgresql":
        raise NotImplementedError("apply_provider_statuses_alone is PostgreSQL's")
    if len(moves) == 1:
        [(sid, status)] = moves.items()
        state = PROVIDER_STATE[status]
        rows = conn.execute(
            _PROVIDER_MOVE_ALONE_PG,
            {
                "sid": sid,
                "status": status,
                "state": state,
                "rank": RANK[state],
                "now": now,
                "held_statuses": sorted(held_statuses),
            },
        )
        return {r[0]: r for r in rows}
    params = _moves_params(moves, now) | {"held_statuses": sorted(held_statuses)}
    rows = conn.execute(_PROVIDER_MOVES_ALONE_PG, params)
    return {r[0]: r for r in rows}


def release_due(conn: Connection, run_id: int, limit: int, now: datetime) -> list[int]:
    """Queued rows of a run due now that no queue message carries -> carried (``enqueued_at``),
    at most ``limit``, oldest due first: the ids the caller then enqueues (committed first: if
    it dies before enqueueing, the reconciler finds them lost).

    One statement of constant text (psycopg parses and caches it once; a list of up to 1000 ids
    as parameters cost the scheduler a third of its CPU).  SKIP LOCKED: two schedulers never
    wait on each other's rows (SQLite omits it; its writers are serialised anyway); the outer
    WHERE re-checks the row's state.  MATERIALIZED: as a plain ``IN (SELECT ... LIMIT ... FOR
    UPDATE)`` PostgreSQL may rescan the subquery per row (nested-loop semi join), and each rescan
    skips the rows this UPDATE already changed, so the LIMIT slid over every due row."""
    due = (
        select(T.c.id)
        .where(
            T.c.run_id == run_id,
            T.c.state == QUEUED,
            T.c.enqueued_at.is_(None),
            T.c.due_at <= now,
        )
        .order_by(T.c.due_at, T.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .cte("due")
        .prefix_with("MATERIALIZED")
    )
    return [
        r[0]
        for r in conn.execute(
            update(T)
            .where(T.c.id.in_(select(due.c.id)), T.c.state == QUEUED, T.c.enqueued_at.is_(None))
            .values(enqueued_at=now)
            .returning(T.c.id)
        )
    ]


def forget_lost(conn: Connection, before: datetime, now: datetime) -> int:
    """Queued rows due *and* handed to the queue before ``before`` lost their queue message
    (Redis flushed, a worker died before acking): no longer carried, so released again.  A row
    released late for an old ``due_at`` is not lost: its queue message was just written."""
    return conn.execute(
        update(T)
        .where(
            T.c.state == QUEUED,
            T.c.enqueued_at.is_not(None),
            T.c.due_at < before,
            T.c.enqueued_at < before,
        )
        .values(enqueued_at=None, updated_at=now)
    ).rowcount


def expire_claims(conn: Connection, lease_before: datetime, now: datetime) -> int:
    """sending -> unknown for rows claimed before ``lease_before``: their worker died mid-send
    (the send may have reached the carrier: resolve asks it before anything is resent)."""
    return conn.execute(
        update(T)
        .where(T.c.state == SENDING, T.c.claimed_at < lease_before)
        .values(state=UNKNOWN, updated_at=now, error_message="worker lost mid-send")
    ).rowcount
