"""Logging setup and masking.  Never log a full phone number, a token or a message body."""

from __future__ import annotations

import logging
import re
import sys

_PHONE = re.compile(r"\+?\d[\d\- ().]{6,}\d")


def mask_phone(phone: str | None) -> str:
    """``+14155551234`` -> ``+1415555****`` (last four digits hidden)."""
    if not phone:
        return ""
    if len(phone) <= 4:
        return "*" * len(phone)
    return phone[:-4] + "****"


def mask_secret(secret: str | None) -> str:
    if not secret:
        return ""
    return secret[:4] + "…" if len(secret) > 8 else "****"


def scrub(text: str) -> str:
    """Mask anything that looks like a phone number inside free text."""
    return _PHONE.sub(lambda m: mask_phone(re.sub(r"[^\d+]", "", m.group(0))), text)


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
