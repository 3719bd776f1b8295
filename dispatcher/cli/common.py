"""What every command needs: settings and the database, opened lazily."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dispatcher.settings import Settings, get_settings
from dispatcher.store import Database

if TYPE_CHECKING:
    from dispatcher.delivery.ports import HaltSignal


def settings() -> Settings:
    return get_settings()


def database() -> Database:
    """The database as a Runtime opens it."""
    from dispatcher.runtime import Runtime

    return Runtime(settings()).db


def halts() -> HaltSignal:
    """What a pause, cancel or revoke from the CLI signals before it commits, so that it reaches
    the workers' Redis check (dispatcher/halts.py).  Makes no connection until it signals."""
    from dispatcher.runtime import Runtime

    return Runtime(settings()).halts
