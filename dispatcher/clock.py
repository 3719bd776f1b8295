"""Time comes from a Clock so that every timing rule can be tested without sleeping."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """Aware UTC datetime."""
        ...

    def time(self) -> float:
        """Seconds since the epoch (float)."""
        ...

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (a worker thread waiting a moment for a booked slot)."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def time(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


class FakeClock:
    """A clock that moves only when told to.  Thread-safe."""

    def __init__(self, start: datetime | float | None = None) -> None:
        if start is None:
            start = datetime(2026, 1, 5, 15, 0, tzinfo=UTC)
        if isinstance(start, datetime):
            if start.tzinfo is None:
                raise ValueError("FakeClock needs an aware datetime")
            start = start.timestamp()
        self._t = float(start)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.time(), UTC)

    def time(self) -> float:
        with self._lock:
            return self._t

    def sleep(self, seconds: float) -> None:
        """Nobody waits on a fake clock: it moves on by ``seconds``."""
        if seconds > 0:
            self.advance(seconds)

    def advance(self, seconds: float | timedelta) -> None:
        if isinstance(seconds, timedelta):
            seconds = seconds.total_seconds()
        with self._lock:
            self._t += seconds

    def set(self, at: datetime | float) -> None:
        with self._lock:
            self._t = at.timestamp() if isinstance(at, datetime) else float(at)


def utcnow() -> datetime:
    """Only for defaults of stored timestamps; logic takes a Clock."""
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """SQLite returns naive datetimes; everything stored is UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)
