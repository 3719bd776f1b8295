"""What every command needs: settings and the database, opened lazily."""

from __future__ import annotations

from dispatcher.settings import Settings, get_settings
from dispatcher.store import Database


def settings() -> Settings:
    return get_settings()


def database() -> Database:
    """The database as a Runtime opens it: with halts installed, so that a pause, cancel or
    revoke from the CLI reaches the workers' Redis check (dispatcher/halts.py) before it
    commits.  No Redis client is made unless a command has a halt to signal."""
    from dispatcher.runtime import Runtime

    return Runtime(settings()).db
