"""Logging setup and masking.  Never log a full phone number, a token or a message body."""

from __future__ import annotations

import logging
import re
import sys

_PHONE = r"\+?\d[\d\- ().]{6,}\d"
_IPV4 = r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])"
#: an IPv4 address is tried first at each position, so its dots never read as a phone number's
_MASKABLE = re.compile(f"(?P<ip>{_IPV4})|{_PHONE}")


def mask_phone(phone: str | None) -> str:
    """``+14155551234`` -> ``+1415555****`` (last four digits hidden)."""
    if not phone:
        return ""
    if len(phone) <= 4:
        return "*" * len(phone)
    return phone[:-4] + "****"


def scrub(text: str) -> str:
    """Mask anything that looks like a phone number inside free text (not IPv4 addresses)."""
    return _MASKABLE.sub(_mask_match, text)


#: a date (``2026-12-07``, the start of a timestamp) is not a phone number
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}\b")
#: the fewest digits of a full number (a US number without +1): fewer identify nobody
_MIN_DIGITS = 10


def _mask_match(m: re.Match[str]) -> str:
    text = m.group(0)
    if m.group("ip"):
        return text
    date = _DATE.match(text)
    if date:  # the date stays; what follows it is scrubbed on its own
        return text[: date.end()] + scrub(text[date.end() :])
    digits = re.sub(r"[^\d+]", "", text)
    if sum(c.isdigit() for c in digits) < _MIN_DIGITS:
        return text
    return mask_phone(digits)


class _ScrubFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            try:
                record.msg = record.getMessage()
                record.args = None
            except Exception:  # noqa: BLE001 - a broken format must not kill logging
                return True
        if isinstance(record.msg, str):
            record.msg = scrub(record.msg)
        return True


def setup_logging(level: str = "WARNING") -> None:
    """Logs go to stderr (stdout is reserved for --json output)."""
    root = logging.getLogger()
    if getattr(root, "_dispatcher_configured", False):
        root.setLevel(level.upper())
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_ScrubFilter())
    root.addHandler(handler)
    root.setLevel(level.upper())
    root._dispatcher_configured = True  # type: ignore[attr-defined]
