"""Database engine, sessions and schema upgrades (SQLite in WAL mode with foreign keys, or
PostgreSQL through psycopg 3).  Nothing here runs at import time."""

from __future__ import annotations

import logging
import re
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import JSON, Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from dispatcher.errors import StorageError

if TYPE_CHECKING:
    from sqlalchemy.orm import sessionmaker
    from sqlmodel import Session

log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).parent / "migrations"


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def make_engine(url: str, *, pool_size: int = 5) -> Engine:
    """Engine for ``url``; SQLite files get their directory created, WAL and foreign keys."""
    try:
        parsed = make_url(url)
    except Exception as e:  # noqa: BLE001 - sqlalchemy raises ArgumentError and friends
        raise StorageError(f"invalid database URL: {e}") from e
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=pool_size,
        max_overflow=pool_size * 2,
        pool_recycle=1800,
    )


class Database:
    """An engine and a session factory.  ``with db.session() as s:`` commits on success;
    ``with db.begin() as conn:`` is one transaction in SQLAlchemy Core.  The ORM and SQLModel
    are imported with the first session, not before (a command that only needs Core starts
    without them: bench/cli_startup.py)."""

    def __init__(self, url: str, *, pool_size: int = 5) -> None:
        self.url = url
        self.engine = make_engine(url, pool_size=pool_size)
        self._held: weakref.WeakSet[HeldConnection] = weakref.WeakSet()

    @cached_property
    def _factory(self) -> sessionmaker[Session]:
        from sqlalchemy.orm import sessionmaker
        from sqlmodel import Session

        return sessionmaker(self.engine, class_=Session, expire_on_commit=False)

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @contextmanager
    def session(self) -> Iterator[Session]:
        s = self._factory()
        try:
            yield s
            s.commit()
        except OperationalError as e:
            s.rollback()
            raise StorageError(f"database error: {_short(e)}") from e
        except BaseException:
            s.rollback()
            raise
        finally:
            s.close()

    def held(self, *, autocommit: bool = False) -> HeldConnection:
        """A connection kept checked out between transactions, for ONE thread at a time; with
        ``autocommit`` each statement is its own transaction (``HeldConnection.connection``)."""
        held = HeldConnection(self, autocommit=autocommit)
        self._held.add(held)
        return held

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """One transaction on one connection: committed on success, rolled back on an error."""
        try:
            with self.engine.begin() as conn:
                yield conn
        except OperationalError as e:
            raise StorageError(f"database error: {_short(e)}") from e

    @contextmanager
    def connect(self, *, autocommit: bool = False) -> Iterator[Connection]:
        """One pooled connection held for several short transactions: the caller commits each,
        or with ``autocommit`` every statement commits on its own (one round trip, no COMMIT).
        Uncommitted work is rolled back on exit."""
        try:
            with self.engine.connect() as conn:
                if autocommit:
                    conn = conn.execution_options(isolation_level="AUTOCOMMIT")
                yield conn
        except OperationalError as e:
            raise StorageError(f"database error: {_short(e)}") from e

    def upgrade(self, revision: str = "head") -> None:
        from alembic import command

        try:
            with self.engine.begin() as conn:
                command.upgrade(alembic_config(conn), revision)
        except SQLAlchemyError as e:
            raise StorageError(f"migration failed: {_short(e)}") from e

    def current_revision(self) -> str | None:
        from alembic.runtime.migration import MigrationContext

        with self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def head_revision(self) -> str | None:
        from alembic.script import ScriptDirectory

        return ScriptDirectory.from_config(alembic_config(None)).get_current_head()

    def ensure_schema(self) -> None:
        """Upgrade to head if behind (the embedded default does this on first use).

        Every CLI command on the embedded SQLite database passes here: a schema already at the
        head costs one ``SELECT`` and a glance at the migration files, not Alembic's import."""
        head = quick_head()
        if head is not None and self._stored_revision() == head:
            return
        if self.current_revision() != self.head_revision():
            self.upgrade()

    def _stored_revision(self) -> str | None:
        """``alembic_version`` as stored (None when there is none, or several rows)."""
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(text("SELECT version_num FROM alembic_version")).all()
        except SQLAlchemyError:  # no table yet: a new database
            return None
        return rows[0][0] if len(rows) == 1 else None

    def dispose(self) -> None:
        """Close the pool's connections, the held ones included (their users are done: a
        connection still checked out would stay open in the old pool until collected)."""
        for held in list(self._held):
            held.release()
        self.engine.dispose()


class HeldConnection:
    """``session()`` as ``Database.session`` (committed on success, ``StorageError`` for an
    ``OperationalError``), on ONE connection kept checked out between transactions: no pool
    checkout -- with PostgreSQL's ``pool_pre_ping`` a ``SELECT 1`` round trip -- per
    transaction.  For one thread at a time (a group-commit thread: webhooks/groupcommit.py);
    ``release()`` gives the connection back (its owner calls it when it goes idle).  After an
    ``OperationalError`` (the server restarted, the network broke) the connection is given back
    at once: the next session checks out a fresh one, pre-pinged as usual.

    With ``autocommit`` the connection runs each statement as its own transaction: no BEGIN and
    COMMIT round trips, no ORM session (on PostgreSQL a one-statement transaction costs the
    client ~0.12 ms of CPU this way against ~0.4 ms in a session).  It serves ``connection()``
    only, for statements that are complete alone; ``session()`` refuses (it would not be one
    transaction)."""

    def __init__(self, db: Database, *, autocommit: bool = False) -> None:
        self.db = db
        self.autocommit = autocommit
        self._conn: Connection | None = None

    def _connect(self) -> Connection:
        try:
            if self._conn is None or self._conn.invalidated or self._conn.closed:
                self.release()
                conn = self.db.engine.connect()
                if self.autocommit:  # once per checkout: reset when given back
                    conn = conn.execution_options(isolation_level="AUTOCOMMIT")
                self._conn = conn
        except OperationalError as e:
            raise StorageError(f"database error: {_short(e)}") from e
        return self._conn

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """The held autocommit connection: every statement committed as it returns;
        ``StorageError`` for an ``OperationalError`` (the connection is then given back)."""
        if not self.autocommit:
            raise RuntimeError("connection() is for an autocommit HeldConnection")
        conn = self._connect()
        try:
            yield conn
        except OperationalError as e:
            self.release()
            raise StorageError(f"database error: {_short(e)}") from e
        except BaseException:
            try:
                conn.rollback()  # SQLAlchemy's side of a failed statement (nothing to undo)
            except SQLAlchemyError:
                self.release()
            raise

    @contextmanager
    def session(self) -> Iterator[Session]:
        from sqlmodel import Session

        if self.autocommit:
            raise RuntimeError("an autocommit HeldConnection has no transactions")
        s = Session(bind=self._connect(), expire_on_commit=False)
        try:
            yield s
            s.commit()
        except OperationalError as e:
            self._rollback(s)
            self.release()
            raise StorageError(f"database error: {_short(e)}") from e
        except BaseException:
            self._rollback(s)
            raise
        finally:
            s.close()

    def _rollback(self, s: Session) -> None:
        try:
            s.rollback()
        except SQLAlchemyError:  # the connection is broken: given back, replaced next time
            self.release()

    def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except SQLAlchemyError as e:
                log.debug("held connection: close failed (%s)", _short(e))


def bulk_insert(conn: Any, table: Any, rows: list[dict[str, Any]]) -> None:
    """Insert many rows in the caller's transaction, fast on both backends: PostgreSQL gets a
    COPY (psycopg's executemany costs a round trip per row), SQLite an executemany."""
    if not rows:
        return
    if conn.dialect.name != "postgresql":
        conn.execute(table.insert(), rows)
        return
    import json

    cols = list(rows[0])
    json_cols = {c for c in cols if isinstance(table.c[c].type, JSON)}
    raw = conn.connection.driver_connection  # psycopg.Connection, same transaction
    names = ", ".join(f'"{c}"' for c in cols)
    with raw.cursor() as cur, cur.copy(f'COPY "{table.name}" ({names}) FROM STDIN') as copy:
        for r in rows:
            copy.write_row(
                [json.dumps(r[c]) if c in json_cols and r[c] is not None else r[c] for c in cols]
            )


_REVISION = re.compile(r"^revision\s*(?::[^=]*)?=\s*['\"]([^'\"]+)['\"]", re.M)
_DOWN = re.compile(r"^down_revision\s*(?::[^=]*)?=\s*(?:None|['\"]([^'\"]+)['\"])\s*$", re.M)
_PLAIN = re.compile(r"^(?:branch_labels|depends_on)\s*(?::[^=]*)?=\s*None\s*$", re.M)


def quick_head() -> str | None:
    """The head revision read from the migration files with two regular expressions, for a
    linear history of plain ``revision = "..."`` / ``down_revision = "..."`` files.  Anything
    else (a merge, branch labels, a file it cannot read that way) gives None: then Alembic
    decides (``Database.head_revision``).  tests/unit/test_cli_startup.py checks that both
    agree."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for f in (MIGRATIONS / "versions").glob("*.py"):
        try:
            src = f.read_text(encoding="utf-8")
        except OSError:
            return None
        rev, down = _REVISION.findall(src), _DOWN.findall(src)
        if len(rev) != 1 or len(down) != 1 or len(_PLAIN.findall(src)) != 2:
            return None
        revisions.add(rev[0])
        if down[0]:
            parents.add(down[0])
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 and parents <= revisions else None


def alembic_config(connection: Any) -> Any:
    import sys

    from alembic.config import Config

    # Config's stdout default is bound when alembic is first imported; a command that ran under
    # a captured stdout (Typer's CliRunner) would leave later checks writing to a closed file
    cfg = Config(stdout=sys.stdout)
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def _short(e: Exception) -> str:
    orig = getattr(e, "orig", None)
    text = str(orig if orig is not None else e)
    return " ".join(text.split())[:300]


_databases: dict[str, Database] = {}


def open_database(url: str, *, auto_upgrade: bool | None = None) -> Database:
    """Process-wide Database for ``url``.  SQLite (the embedded default) upgrades itself;
    PostgreSQL expects ``dispatcher db upgrade`` (a deploy step), unless ``auto_upgrade``."""
    db = _databases.get(url)
    if db is None:
        db = Database(url)
        if auto_upgrade if auto_upgrade is not None else db.is_sqlite:
            db.ensure_schema()
        _databases[url] = db
    return db
