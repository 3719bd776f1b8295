"""The outbox's states, and the one transition a revocation makes, without the models: part of
the outbox owner (``dispatcher/outbox.py`` imports all of it, and its table of transitions lists
this one).  Here because ``dispatcher consent revoke`` suppresses the contact's rows through the
consent service and starts without SQLModel, the ORM or ``dispatcher.models``
(bench/cli_startup.py); ``outbox.py`` builds its statements on the model's table at import."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import Connection, and_, update

from dispatcher.tables import outbox_message as OM

if TYPE_CHECKING:
    from sqlmodel import Session

QUEUED, SENDING, SENT, DELIVERED, UNDELIVERED, FAILED, UNKNOWN = (
    "queued",
    "sending",
    "sent",
    "delivered",
    "undelivered",
    "failed",
    "unknown",
)
SUPPRESSED, CANCELLED = "suppressed", "cancelled"
STATES = (QUEUED, SENDING, SENT, DELIVERED, UNDELIVERED, FAILED, UNKNOWN, SUPPRESSED, CANCELLED)
#: rows no worker has claimed: a STOP or cancel moves them in its own transaction (claimed rows
#: not yet sent meet the halt check: dispatcher/halts.py)
NOT_HANDED = (QUEUED,)


def suppress_for_contact(
    db: Session | Connection,
    contact_id: int,
    *,
    campaign_ids: list[int],
    reason: str,
    now: datetime,
) -> dict[int, int]:
    """queued -> suppressed for every not-yet-handed row of a contact in these campaigns (a
    revocation's scope: ``consent.revoke_and_suppress`` is the caller).  Returns the rows
    suppressed per campaign id (the suppressions' metrics)."""
    if not campaign_ids:
        return {}
    cond = and_(
        OM.c.contact_id == contact_id,
        OM.c.state.in_(NOT_HANDED),
        OM.c.campaign_id.in_(campaign_ids),
    )
    conn = db if isinstance(db, Connection) else db.connection()
    res = conn.execute(
        update(OM)
        .where(cond)
        .values(state=SUPPRESSED, suppress_reason=reason, updated_at=now)
        .returning(OM.c.campaign_id)
    )
    return dict(Counter(cid for (cid,) in res))
