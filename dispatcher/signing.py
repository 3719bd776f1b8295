"""Webhook signatures, both kinds.  Pure.

**Twilio's** ``X-Twilio-Signature`` (compliance.md section 9.2) is computed and checked by the
official library's ``RequestValidator``: :func:`twilio_signature` signs the sandbox carrier's
callbacks, dispatcher.webhooks.forms checks what arrives, both through :func:`twilio_validator`.

**The dispatcher's own**, on the webhooks it sends to producers (dispatcher.hooks):

The scheme is Stripe's: the header ::

    Dispatcher-Signature: t=1767625200,v1=5257a869e7ec...(64 hex digits)

carries the time of the attempt (Unix seconds) and, per scheme version, the hex HMAC-SHA256 of
``"<t>.<body>"`` under the subscription's secret.  A receiver recomputes it over the raw body it
got, compares in constant time and refuses a timestamp outside its replay window (5 minutes by
default): a captured request cannot be replayed later, and a changed body or time does not verify.
Several ``v1=`` entries may appear (one per secret while a secret is being rotated).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from dispatcher.errors import DispatcherError

if TYPE_CHECKING:  # twilio is imported on first use: quick CLI commands import this module
    from twilio.request_validator import RequestValidator

HEADER = "Dispatcher-Signature"
SCHEME = "v1"
TOLERANCE_S = 300


@lru_cache(maxsize=16)
def twilio_validator(auth_token: str) -> RequestValidator:
    """The official ``RequestValidator`` for ``auth_token`` (one per token)."""
    from twilio.request_validator import RequestValidator

    return RequestValidator(auth_token)


def twilio_signature(
    auth_token: str, url: str, params: Mapping[str, str], algorithm: str | None = None
) -> str:
    """``X-Twilio-Signature`` of a form POST of ``params`` to ``url``: HMAC-SHA1 (or the
    ``algorithm`` named, e.g. ``HMAC_SHA256``) over the URL and the sorted names and values,
    keyed by the Auth Token, base64 -- as Twilio computes it."""
    return str(twilio_validator(auth_token).compute_signature(url, params, algorithm))


class WebhookSignatureError(DispatcherError):
    """A webhook whose signature is missing, malformed, wrong or outside the replay window."""


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """Hex HMAC-SHA256 of ``"<timestamp>.<body>"`` under ``secret``."""
    signed = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def header_value(secret: str, timestamp: int, body: bytes) -> str:
    return f"t={timestamp},{SCHEME}={signature(secret, timestamp, body)}"


def verify(
    body: bytes,
    header: str | None,
    secret: str,
    *,
    now: float,
    tolerance_s: float = TOLERANCE_S,
) -> dict[str, Any]:
    """The event in ``body`` if ``header`` signs it with ``secret`` within ``tolerance_s`` of
    ``now`` (Unix seconds); :class:`WebhookSignatureError` otherwise.  ``body`` must be the raw
    bytes received (a re-serialised JSON document does not verify)."""
    timestamp, candidates = _parse(header or "")
    if abs(now - timestamp) > tolerance_s:
        raise WebhookSignatureError(
            f"webhook timestamp {timestamp} is {abs(now - timestamp):.0f} s from now "
            f"(more than {tolerance_s:.0f} s): a replay or a clock far off"
        )
    expected = signature(secret, timestamp, body)
    if not any(hmac.compare_digest(expected, c) for c in candidates):
        raise WebhookSignatureError("webhook signature does not match (wrong secret or body)")
    try:
        event = json.loads(body)
    except ValueError as e:
        raise WebhookSignatureError(f"webhook body is not JSON: {e}") from None
    if not isinstance(event, dict):
        raise WebhookSignatureError("webhook body is not a JSON object")
    return event


def _parse(header: str) -> tuple[int, list[str]]:
    timestamp: int | None = None
    candidates: list[str] = []
    for item in header.split(","):
        name, _, value = item.strip().partition("=")
        if name == "t" and value.isascii() and value.isdigit():
            timestamp = int(value)
        elif name == SCHEME and value:
            candidates.append(value)
    if timestamp is None or not candidates:
        raise WebhookSignatureError(
            f"missing or malformed {HEADER} header (want t=<unix time>,{SCHEME}=<hex hmac>)"
        )
    return timestamp, candidates
