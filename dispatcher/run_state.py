"""A run's state in SQLAlchemy Core, without SQLModel or the ORM: the run states, pausing a run,
and a run read back as its document.  ``dispatcher.runs`` (the rest of run control) and
``dispatcher.run_report`` use these; ``dispatcher run pause`` uses nothing else, so that it
starts without importing the models (bench/cli_startup.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update

from dispatcher.clock import as_utc
from dispatcher.errors import ConflictError, NotFoundError
from dispatcher.tables import as_id
from dispatcher.tables import run as R

if TYPE_CHECKING:
    from sqlalchemy import Connection, Row

    from dispatcher.delivery.ports import HaltSignal

SCHEDULED, FANNING_OUT, RUNNING, PAUSED, COMPLETED, CANCELLED = (
    "scheduled",
    "fanning_out",
    "running",
    "paused",
    "completed",
    "cancelled",
)
ACTIVE = (SCHEDULED, FANNING_OUT, RUNNING)


def run_id(key: int | str) -> int:
    """A run id that can exist, or NotFoundError (0, negative, past 64 bits, not digits)."""
    ident = as_id(key)
    if ident is None or ident <= 0:
        raise NotFoundError("run", key)
    return ident


def run_row(conn: Connection, key: int | str) -> Row[Any]:
    """The run's row (its columns as attributes, as a ``Run`` has them), or NotFoundError."""
    row = conn.execute(select(R).where(R.c.id == run_id(key))).first()
    if row is None:
        raise NotFoundError("run", key)
    return row


def pause(conn: Connection, key: int | str, reason: str, *, halts: HaltSignal) -> bool:
    """Pause an active run (takes effect for every message not yet handed to the carrier: rows
    not claimed by the claim's run-state check, rows a worker already claimed by the halt key
    signalled here, before the caller commits).  False when it was paused already."""
    ident = run_id(key)
    res = conn.execute(
        update(R)
        .where(R.c.id == ident, R.c.state.in_(ACTIVE))
        .values(state=PAUSED, pause_reason=reason[:1000])
    )
    if res.rowcount == 0:
        state = run_row(conn, key).state
        if state == PAUSED:
            return False
        raise ConflictError(f"run {key} is {state}; only an active run can be paused")
    halts.signal(runs=[ident])
    return True


def run_dict(run: Any) -> dict[str, Any]:
    """A run's summary: of a ``Run`` or of its row (``run_row``)."""
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
