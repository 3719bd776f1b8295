"""The read side of the API: pages of runs and of a run's messages, one contact.

Pagination is by keyset, never by offset: a page is the rows after the cursor in a fixed order
(runs newest first by id; a run's messages by contact id, the order of the outbox's unique
``(run_id, contact_id)`` index), so a page costs the same at the millionth row as at the first
and rows added meanwhile are neither skipped nor repeated.  ``next_cursor`` is the key of the
last row of a full page; a client passes it back as it is (its form is not part of the API).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlmodel import Session

from dispatcher import run_report, runs
from dispatcher.clock import as_utc
from dispatcher.contacts import contact_dict, get_contact
from dispatcher.logs import mask_phone
from dispatcher.models import Run
from dispatcher.registry import get_campaign

#: cursors as the API takes them: a key, at most 19 digits (past the largest key: the end)
CURSOR_PATTERN = r"^[1-9][0-9]{0,18}$"
R = runs.R
OB = runs.OB


#: the largest key of an INTEGER column (run, contact ids; PostgreSQL refuses to compare one
#: with a larger number than it can hold)
INT_MAX = 2**31 - 1


def cursor_key(cursor: str | None, ceiling: int = INT_MAX) -> int | None:
    """The row key a cursor names, at most ``ceiling`` (a key past every row means the end)."""
    return min(int(cursor), ceiling) if cursor else None


def _next(keys: list[int], limit: int) -> str | None:
    return str(keys[limit - 1]) if len(keys) > limit else None


def run_page(
    session: Session,
    *,
    now: datetime,
    state: str | None,
    campaign: str | None,
    cursor: str | None,
    limit: int,
    grace_s: float | None = None,
) -> dict[str, Any]:
    """Runs newest first, each as ``GET /v1/runs/{id}`` shows it (run_report.progress)."""
    q = select(R.c.id)
    if state is not None:
        q = q.where(R.c.state == state)
    if campaign is not None:
        q = q.where(R.c.campaign_id == get_campaign(session, campaign).id)
    after = cursor_key(cursor)
    if after is not None:
        q = q.where(R.c.id < after)
    ids = [r[0] for r in session.connection().execute(q.order_by(R.c.id.desc()).limit(limit + 1))]
    return {
        "items": [run_report.progress(session, i, now, grace_s=grace_s) for i in ids[:limit]],
        "next_cursor": _next(ids, limit),
    }


MESSAGE_COLUMNS = (
    OB.c.id,
    OB.c.contact_id,
    OB.c.to_phone,
    OB.c.state,
    OB.c.suppress_reason,
    OB.c.defer_reason,
    OB.c.due_at,
    OB.c.sent_at,
    OB.c.status_at,
    OB.c.provider_sid,
    OB.c.error_code,
    OB.c.segments,
    OB.c.attempts,
)


def message_page(
    session: Session,
    run_id: int,
    *,
    state: str | None,
    cursor: str | None,
    limit: int,
    full_phones: bool,
) -> dict[str, Any]:
    """A run's messages by contact id with their states; phones masked unless
    ``full_phones`` (the key holds ``contacts:read``)."""
    run: Run = runs.get_run(session, run_id)  # 404 for a run that does not exist
    q = select(*MESSAGE_COLUMNS).where(OB.c.run_id == run.id)
    if state is not None:
        q = q.where(OB.c.state == state)
    after = cursor_key(cursor)
    if after is not None:
        q = q.where(OB.c.contact_id > after)
    rows = session.connection().execute(q.order_by(OB.c.contact_id).limit(limit + 1)).all()
    return {
        "run_id": run.id,
        "phones_masked": not full_phones,
        "items": [_message(r, full_phones) for r in rows[:limit]],
        "next_cursor": _next([r.contact_id for r in rows], limit),
    }


def _message(row: Any, full_phone: bool) -> dict[str, Any]:
    doc = dict(row._mapping)
    doc["phone"] = doc.pop("to_phone") if full_phone else mask_phone(doc.pop("to_phone"))
    for name in ("due_at", "sent_at", "status_at"):
        doc[name] = as_utc(doc[name]) if doc[name] is not None else None
    return doc


def contact_doc(session: Session, phone: str) -> dict[str, Any]:
    c = get_contact(session, phone)
    return {
        **contact_dict(c),
        "created_at": as_utc(c.created_at),
        "updated_at": as_utc(c.updated_at),
    }
