"""Alembic environment: run against the connection handed in by dispatcher.store."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine
from sqlmodel import SQLModel

import dispatcher.models  # noqa: F401 - registers the tables

config = context.config
target_metadata = SQLModel.metadata


def _include(obj, name, type_, reflected, compare_to) -> bool:  # type: ignore[no-untyped-def]
    # APScheduler's job store keeps its own table in the same database
    return not (type_ == "table" and name == "apscheduler_jobs")


def _run(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        include_object=_include,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    url = config.get_main_option("sqlalchemy.url")
    assert url, "alembic.ini / Config must set sqlalchemy.url (dispatcher/store.py does)"
    engine = create_engine(url)
    with engine.begin() as conn:
        _run(conn)
