"""Twilio wire formats used by the sandbox: dates, SIDs, error bodies (pure).  Segments are
``compliance.segments`` and phone formats ``phones``: one of each in the package."""

from __future__ import annotations

import math
import re
import secrets
import time
from datetime import UTC, date, datetime
from functools import lru_cache
from typing import Any

API_VERSION = "2010-04-01"
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
MG_SID = re.compile(r"^MG[0-9a-fA-F]{32}$")


def rfc2822(ts: float) -> str:
    """``Thu, 24 Aug 2023 05:01:45 +0000`` as Twilio formats dates (locale independent)."""
    return _rfc2822_second(math.floor(ts))


@lru_cache(maxsize=256)
def _rfc2822_second(second: int) -> str:
    """Every message of a second shows the same dates: formatted once (a third of a create)."""
    t = time.gmtime(second)
    return (
        f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000"
    )


def raw_dlr_done_date(ts: float) -> str:
    """``YYMMDDhhmm`` (no time zone) as in RawDlrDoneDate."""
    return time.strftime("%y%m%d%H%M", time.gmtime(ts))


def new_sid(prefix: str) -> str:
    """``prefix`` and 32 random lower-case hex digits (as ``uuid4().hex``, without building a
    UUID)."""
    return prefix + secrets.token_hex(16)


def parse_date_filter(value: str) -> tuple[date | datetime, bool]:
    """``YYYY-MM-DD`` -> (date, True); ISO 8601 / RFC 2822 date-time -> (aware datetime, False)."""
    v = value.strip()
    if len(v) == 10:
        return date.fromisoformat(v), True
    try:
        dt = datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        from email.utils import parsedate_to_datetime

        dt = parsedate_to_datetime(v)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt, False


def error_body(status: int, code: int, message: str) -> dict[str, Any]:
    """Twilio's REST error document."""
    return {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }


class ApiError(Exception):
    """An error answer in Twilio's shape (raised by the carrier, rendered by the app)."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def body(self) -> dict[str, Any]:
        return error_body(self.status, self.code, self.message)
