"""What every command needs: settings and the database, opened lazily."""

from __future__ import annotations

from dispatcher.settings import Settings, get_settings
from dispatcher.store import Database, open_database


def settings() -> Settings:
    return get_settings()


def database() -> Database:
    return open_database(settings().database_url)
