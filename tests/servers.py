"""Real servers on loopback for integration tests.

Absent server: the test is skipped locally but FAILS under CI (``CI=true``), so a green CI run
cannot hide integration tests that never ran.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

REDIS_HOST = os.environ.get("DISPATCHER_TEST_REDIS_HOST", "127.0.0.1")
REDIS_PORT = int(os.environ.get("DISPATCHER_TEST_REDIS_PORT", "6379"))
PG_DSN = os.environ.get("DISPATCHER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def require(name: str, host: str, port: int) -> None:
    if port_open(host, port):
        return
    msg = f"{name} not reachable on {host}:{port}"
    if in_ci():
        pytest.fail(msg + " (CI=true: integration tests must run)")
    pytest.skip(msg)


def redis_url(db: int) -> str:
    require("Redis", REDIS_HOST, REDIS_PORT)
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/{db}"


@contextmanager
def throwaway_database(dsn: str = PG_DSN, prefix: str = "dispatcher_t_") -> Iterator[str]:
    """Create a database on the server of ``dsn``, yield its SQLAlchemy URL, drop it after.
    No pytest here: the benchmarks use it too."""
    import psycopg

    name = prefix + uuid.uuid4().hex[:12]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = dsn.rsplit("/", 1)[0]
    try:
        yield f"postgresql+psycopg://{base.split('://', 1)[1]}/{name}"
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def conninfo(url: str) -> str:
    """psycopg conninfo of a SQLAlchemy ``postgresql+psycopg://`` URL."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


@contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """A throw-away database on the loopback PostgreSQL (skip locally / fail in CI if absent)."""
    require("PostgreSQL", "127.0.0.1", 5432)
    with throwaway_database() as url:
        yield url
