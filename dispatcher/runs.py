"""Run control shared by the CLI, the HTTP API and ``notify()``: one code path.

(Grows with the pipeline; the functions below are the stable part other modules call.)
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import update
from sqlmodel import Session, select

from dispatcher.errors import ConflictError, NotFoundError
from dispatcher.models import Run

SCHEDULED, FANNING_OUT, RUNNING, PAUSED, COMPLETED, CANCELLED = (
    "scheduled", "fanning_out", "running", "paused", "completed", "cancelled",
)
ACTIVE = (SCHEDULED, FANNING_OUT, RUNNING)
R = Run.__table__  # type: ignore[attr-defined]


def get_run(session: Session, run_id: int) -> Run:
    run = session.get(Run, run_id)
    if run is None:
        raise NotFoundError("run", run_id)
    return run


def pause_run(session: Session, run_id: int, reason: str, now: datetime) -> bool:
    """Pause an active run (takes effect for every message not yet handed to the carrier)."""
    res = session.connection().execute(
        update(R).where(R.c.id == run_id, R.c.state.in_(ACTIVE))
        .values(state=PAUSED, pause_reason=reason[:1000])
    )
    if res.rowcount == 0:
        run = get_run(session, run_id)
        if run.state == PAUSED:
            return False
        raise ConflictError(f"run {run_id} is {run.state}; only an active run can be paused")
    return True


def pause_campaign_runs(session: Session, campaign_id: int, reason: str, now: datetime) -> int:
    """Pause every active run of a campaign (campaign suspended, 30034, reputation guard)."""
    res = session.connection().execute(
        update(R).where(R.c.campaign_id == campaign_id, R.c.state.in_(ACTIVE))
        .values(state=PAUSED, pause_reason=reason[:1000])
    )
    return res.rowcount


def active_runs_of_campaign(session: Session, campaign_id: int) -> list[Run]:
    return list(session.exec(select(Run).where(Run.campaign_id == campaign_id,
                                               Run.state.in_(ACTIVE))))  # type: ignore[attr-defined]
