"""Launching a run from a program: the HTTP API and :func:`dispatcher.notify.notify` both come
through :func:`submit_run`, which wraps :func:`dispatcher.runs.launch` (the CLI's path too) with
what a network caller needs: one transaction, the dry-run figures, and the idempotency race.

Concurrent submissions with one idempotency key: both may miss the existing run and insert; the
unique constraint on ``run.idempotency_key`` refuses the second insert, whose transaction is rolled
back whole (no half-written run) and which then returns the winner's run — or 409 when the winner
was launched with another request body.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from dispatcher import run_report, runs
from dispatcher.errors import ConflictError, StorageError
from dispatcher.models import Campaign, Run


@dataclass
class Submission:
    run: dict[str, Any]
    created: bool
    dry_run: dict[str, Any] | None


def run_doc(session: Session, run: Run) -> dict[str, Any]:
    campaign = session.get(Campaign, run.campaign_id)
    return {**run_report.run_dict(run), "campaign": campaign.sid if campaign else None}


def submit_run(
    db: Any,
    req: runs.LaunchRequest,
    *,
    now: datetime,
    dry_run: bool = True,
    sample_limit: int | None = None,
) -> Submission:
    """Launch ``req`` in one transaction (idempotent by ``req.idempotency_key``);
    ``sample_limit`` bounds the dry run to the first recipients of a large list."""
    try:
        with db.session() as s:
            run, created = runs.launch(s, req, now=now)
            preview = (
                run_report.dry_run(s, req, now=now, sample_limit=sample_limit) if dry_run else None
            )
            return Submission(run_doc(s, run), created, preview)
    except IntegrityError:
        if not req.idempotency_key:
            raise
    # lost the race for this idempotency key: the winner's run, read afresh
    with db.session() as s:
        run = s.exec(select(Run).where(Run.idempotency_key == req.idempotency_key)).first()
        if run is None:
            raise StorageError("the run could not be stored; retry with the same key")
        if run.request_hash != req.fingerprint():
            raise ConflictError(
                f"idempotency key {req.idempotency_key!r} was used with a different request"
            )
        preview = (
            run_report.dry_run(s, req, now=now, sample_limit=sample_limit) if dry_run else None
        )
        return Submission(run_doc(s, run), False, preview)
