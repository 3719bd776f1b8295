"""Core views of some tables, for the paths that must start fast (``dispatcher run pause``):
SQLAlchemy ``table()`` clauses with the columns those paths read and write, without SQLModel,
pydantic models or the ORM.  ``dispatcher.models`` owns the schema (Alembic migrates it); these
are views of it, and tests/unit/test_cli_startup.py checks that every column here has the name
and type of the model's column.

Why: ``import dispatcher.models`` (SQLModel, the ORM, pydantic validators for every table)
costs more CPU than ``import sqlalchemy`` itself (bench/cli_startup.py has the numbers)."""

from __future__ import annotations

from sqlalchemy import JSON, DateTime, Integer, String, Text, column, table

run = table(
    "run",
    column("id", Integer),
    column("campaign_id", Integer),
    column("template", Text),
    column("audience", JSON),
    column("state", String),
    column("send_at", DateTime(timezone=True)),
    column("pause_reason", Text),
    column("total", Integer),
    column("actor", String),
    column("idempotency_key", String),
    column("created_at", DateTime(timezone=True)),
    column("started_at", DateTime(timezone=True)),
    column("finished_at", DateTime(timezone=True)),
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


#: every view above, by table name (the test compares each with the model's table)
VIEWS = {t.name: t for t in (run,)}
