"""Core views of some tables, for the paths that must start fast (``dispatcher run pause``,
``dispatcher consent grant|revoke``, single and ``--file``):
SQLAlchemy ``table()`` clauses with the columns those paths read and write, without SQLModel,
pydantic models or the ORM.  ``dispatcher.models`` owns the schema (Alembic migrates it); these
are views of it, and tests/unit/test_cli_startup.py checks that every column here has the name
and type of the model's column.

Why: ``import dispatcher.models`` (SQLModel, the ORM, pydantic validators for every table)
costs more CPU than ``import sqlalchemy`` itself (bench/cli_startup.py has the numbers)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import JSON, DateTime, Integer, String, Text, column, table

if TYPE_CHECKING:
    pass


def _ts(name: str) -> Any:
    return column(name, DateTime(timezone=True))


run = table(
    "run",
    column("id", Integer),
    column("campaign_id", Integer),
    column("template", Text),
    column("audience", JSON),
    column("state", String),
    _ts("send_at"),
    column("pause_reason", Text),
    column("total", Integer),
    column("actor", String),
    column("idempotency_key", String),
    _ts("created_at"),
    _ts("started_at"),
    _ts("finished_at"),
)
brand = table("brand", column("id", Integer), column("name", String))
campaign = table(
    "campaign", column("id", Integer), column("sid", String), column("brand_id", Integer)
)
contact = table(
    "contact",
    column("id", Integer),
    column("phone", String),
    column("name", String),
    column("time_zone", String),
    column("state_code", String),
    column("attributes", JSON),
    _ts("created_at"),
    _ts("updated_at"),
)
consent_event = table(
    "consentevent",
    column("id", Integer),
    column("contact_id", Integer),
    column("brand_id", Integer),
    column("campaign_id", Integer),
    column("action", String),
    column("consent_type", String),
    column("source", String),
    column("evidence_text", Text),
    column("evidence_url", String),
    column("evidence_ref", String),
    column("note", Text),
    column("actor", String),
    _ts("occurred_at"),
    _ts("recorded_at"),
    column("dedupe_key", String),
)
#: the columns a revocation's suppression writes (``outbox_states.suppress_for_contact``: the
#: outbox owner's; tests/unit/test_outbox_owner.py checks nobody else updates through it)
outbox_message = table(
    "outboxmessage",
    column("id", Integer),
    column("campaign_id", Integer),
    column("contact_id", Integer),
    column("state", String),
    column("suppress_reason", String),
    _ts("updated_at"),
)
api_key = table(
    "apikey",
    column("id", Integer),
    column("name", String),
    column("scopes", JSON),
    _ts("revoked_at"),
)
webhook_subscription = table(
    "webhooksubscription",
    column("id", Integer),
    column("api_key_id", Integer),
    column("events", JSON),
    _ts("disabled_at"),
)
webhook_event = table(
    "webhookevent",
    column("id", Integer),
    column("subscription_id", Integer),
    column("type", String),
    column("payload", JSON),
    column("state", String),
    column("attempts", Integer),
    _ts("created_at"),
    _ts("next_attempt_at"),
)

#: the largest primary key a 64-bit integer column holds (SQLite INTEGER, PostgreSQL BIGINT)
MAX_ID = 2**63 - 1


def as_id(key: str | int) -> int | None:
    """``key`` as a row id if it is one (an int, or ASCII digits), else None (a name or SID).
    Digits no id can have (0, or past 64 bits) are an id that does not exist: -1."""
    if isinstance(key, bool):
        return None
    if isinstance(key, int):
        n = key
    elif isinstance(key, str) and key.isascii() and key.isdigit():
        n = int(key)
    else:
        return None
    return n if 0 < n <= MAX_ID else -1
