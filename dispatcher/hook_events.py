"""Writing producer webhook events (``dispatcher.hooks`` has the rest: subscriptions, delivery)
in the caller's transaction, in SQLAlchemy Core: a revocation appended to the ledger from any
path (``dispatcher consent revoke`` among them, which starts without the models) writes its
``contact.opted_out`` here."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import insert, select

from dispatcher.clock import as_utc
from dispatcher.tables import api_key as AK
from dispatcher.tables import brand, campaign, contact
from dispatcher.tables import webhook_event as WE
from dispatcher.tables import webhook_subscription as WS

if TYPE_CHECKING:
    from sqlalchemy import Connection

RUN_FINISHED, RUN_PAUSED, CONTACT_OPTED_OUT = "run.finished", "run.paused", "contact.opted_out"
EVENT_TYPES = (RUN_FINISHED, RUN_PAUSED, CONTACT_OPTED_OUT)
#: event types whose payload holds a phone number: the key must have this scope
NEEDS_CONTACTS = {CONTACT_OPTED_OUT: "contacts:read"}
PENDING, DELIVERED, FAILED, CANCELLED = "pending", "delivered", "failed", "cancelled"


@dataclass(frozen=True)
class Target:
    subscription_id: int
    key_name: str
    events: frozenset[str]
    scopes: frozenset[str]


_CACHE = "dispatcher.hooks.targets"


def targets(conn: Connection, event_type: str) -> list[Target]:
    """Active subscriptions of keys not revoked that want ``event_type``.  Read once per
    transaction (a bulk revocation of 100 000 numbers asks once, not 100 000 times)."""
    txn = conn.get_transaction()
    cached = conn.info.get(_CACHE)
    if cached is None or cached[0] is not txn:
        rows = conn.execute(
            select(WS.c.id, AK.c.name, WS.c.events, AK.c.scopes)
            .join(AK, AK.c.id == WS.c.api_key_id)
            .where(WS.c.disabled_at.is_(None), AK.c.revoked_at.is_(None))
        )
        found = [
            Target(sid, name, frozenset(events or ()), frozenset(scopes or ()))
            for sid, name, events, scopes in rows
        ]
        cached = conn.info[_CACHE] = (txn, found)
    needs = NEEDS_CONTACTS.get(event_type)
    return [t for t in cached[1] if event_type in t.events and (needs is None or needs in t.scopes)]


def write(
    conn: Connection,
    event_type: str,
    subscriptions: Iterable[int],
    payload: dict[str, Any],
    now: datetime,
) -> int:
    rows = [
        {
            "subscription_id": sid,
            "type": event_type,
            "payload": payload,
            "state": PENDING,
            "attempts": 0,
            "created_at": now,
            "next_attempt_at": now,
        }
        for sid in subscriptions
    ]
    if rows:
        conn.execute(insert(WE), rows)
    return len(rows)


def opted_out(conn: Connection, event: Mapping[str, Any]) -> int:
    """``contact.opted_out`` for a revocation just appended to the ledger (its transaction);
    ``event`` has the consent event's columns."""
    found = targets(conn, CONTACT_OPTED_OUT)
    if not found:
        return 0

    def one(t: Any, col: str, ident: Any) -> Any:
        return conn.execute(select(t.c[col]).where(t.c.id == ident)).scalar() if ident else None

    payload = {
        "phone": one(contact, "phone", event["contact_id"]),
        "brand": one(brand, "name", event["brand_id"]),
        "campaign": one(campaign, "sid", event["campaign_id"]),
        "source": event["source"],
        "occurred_at": iso(event["occurred_at"]),
        "consent_event_id": event["id"],
    }
    subs = [t.subscription_id for t in found]
    return write(conn, CONTACT_OPTED_OUT, subs, payload, event["recorded_at"])


def iso(value: datetime) -> str:
    """A time as the API writes it (``2026-01-05T15:00:00Z``)."""
    return as_utc(value).isoformat().replace("+00:00", "Z")
