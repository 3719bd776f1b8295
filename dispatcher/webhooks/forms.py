"""Reading a Twilio webhook: form body, X-Twilio-Signature, required fields.

Order of checks (nothing is recorded before all pass):

1. no ``X-Twilio-Signature`` header -> 403;
2. not ``application/x-www-form-urlencoded``, too large, not UTF-8, NUL bytes -> 400 / 413;
3. signature does not match ``public_base_url + path (+ ?query)`` with the Auth Token -> 403;
4. a required field missing, duplicated or too long -> 400 (by the endpoint).
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qsl, urlparse

from starlette.requests import Request
from twilio.request_validator import (
    SIGNATURE_HEADER,
    SIGNATURE_SETTINGS_HEADER,
    add_port,
    get_signature_algorithm,
    remove_port,
)

from dispatcher.signing import twilio_validator

log = logging.getLogger(__name__)

#: Twilio SIDs (SM..., MG..., AC...) are 34 characters; E.164 numbers are shorter
SID_MAX = 34

FORM_TYPE = "application/x-www-form-urlencoded"
MAX_BODY_BYTES = 256 * 1024
MAX_FIELDS = 200


class WebhookError(Exception):
    """Answered as ``{"error": message}`` with ``status``; never a traceback."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Form:
    """The decoded form: every value per name (what the signature covers) + field helpers."""

    def __init__(self, pairs: Iterable[tuple[str, str]]) -> None:
        self._values: dict[str, list[str]] = {}
        for k, v in pairs:
            self._values.setdefault(k, []).append(v)

    # RequestValidator.get_values() uses getlist() on multi-valued mappings
    def getlist(self, name: str) -> list[str]:
        return list(self._values.get(name, []))

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._values)

    def __contains__(self, name: object) -> bool:
        return name in self._values

    def __len__(self) -> int:
        return len(self._values)

    def get(self, name: str, *, max_len: int | None = None, required: bool = False) -> str | None:
        """The single value of ``name`` (None if absent); 400 if duplicated, too long, or
        required and absent/empty."""
        values = self._values.get(name, [])
        if len(values) > 1:
            raise WebhookError(400, f"field {name} appears {len(values)} times")
        value = values[0] if values else None
        if required and not value:
            raise WebhookError(400, f"missing field {name}")
        if value is not None and max_len is not None and len(value) > max_len:
            raise WebhookError(400, f"field {name} is longer than {max_len} characters")
        return value


def parse_form(content_type: str | None, body: bytes) -> Form:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media != FORM_TYPE:
        raise WebhookError(400, f"body must be {FORM_TYPE}, not {media or 'missing'}")
    if len(body) > MAX_BODY_BYTES:
        raise WebhookError(413, f"body larger than {MAX_BODY_BYTES} bytes")
    try:
        text = body.decode("ascii")
        pairs = parse_qsl(
            text,
            keep_blank_values=True,
            strict_parsing=False,
            encoding="utf-8",
            errors="strict",
            max_num_fields=MAX_FIELDS,
        )
    except UnicodeDecodeError:
        raise WebhookError(400, "form body is not valid URL-encoded UTF-8") from None
    except ValueError as e:
        raise WebhookError(400, f"malformed form body: {e}") from None
    for k, v in pairs:
        if "\x00" in k or "\x00" in v:
            raise WebhookError(400, "form body contains a NUL character")
    return Form(pairs)


def public_url(base: str, scope: Mapping[str, Any]) -> str:
    """The URL Twilio called: the configured public base + the request's path (+ query), from
    its ASGI scope."""
    raw = scope.get("raw_path")
    path = raw.decode("latin-1") if isinstance(raw, bytes) and raw else scope["path"]
    query = scope.get("query_string") or b""
    url = base.rstrip("/") + path
    if query:
        url += "?" + query.decode("latin-1")
    return url


def asgi_headers(scope: Mapping[str, Any]) -> dict[str, str]:
    """The request's headers by lower-case name (the first of a repeated one, as Starlette's
    ``Headers.get``)."""
    out: dict[str, str] = {}
    for k, v in scope["headers"]:
        out.setdefault(k.decode("latin-1"), v.decode("latin-1"))
    return out


async def read_signed_form(request: Request, auth_token: str, base_url: str) -> Form:
    """``signed_form`` of a Starlette request."""
    return await signed_form(request.scope, request.receive, auth_token, base_url)


async def signed_form(
    scope: Mapping[str, Any],
    receive: Callable[[], Awaitable[Mapping[str, Any]]],
    auth_token: str,
    base_url: str,
) -> Form:
    """The form of an ASGI request whose ``X-Twilio-Signature`` matches; ``WebhookError``
    otherwise (checks in the order of the module's docstring)."""
    headers = asgi_headers(scope)
    signature = headers.get(SIGNATURE_HEADER.lower())
    if not signature:
        raise WebhookError(403, f"missing {SIGNATURE_HEADER} header")
    length = headers.get("content-length")
    if length and length.isdigit() and int(length) > MAX_BODY_BYTES:
        raise WebhookError(413, f"body larger than {MAX_BODY_BYTES} bytes")
    form = parse_form(headers.get("content-type"), await _body(receive))
    algorithm = get_signature_algorithm(headers.get(SIGNATURE_SETTINGS_HEADER.lower()))
    try:
        ok = signature_matches(auth_token, public_url(base_url, scope), form, signature, algorithm)
    except ValueError:  # e.g. an unparsable port in the configured URL
        ok = False
    if not ok:
        raise WebhookError(403, f"invalid {SIGNATURE_HEADER}")
    return form


async def _body(receive: Callable[[], Awaitable[Mapping[str, Any]]]) -> bytes:
    """The request body (413 past ``MAX_BODY_BYTES``); a client gone mid-body reads as what
    came."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise WebhookError(413, f"body larger than {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def signature_matches(
    auth_token: str, url: str, form: Form, signature: str, algorithm: str
) -> bool:
    """What ``RequestValidator(auth_token).validate(url, form, signature, algorithm)`` answers
    for a form body: the signature over the URL without or with the default port.  The variant
    equal to the URL as called is tried first and the other computed only on a mismatch (the
    validator always computes both).  ValueError for an unparsable port."""
    validator = twilio_validator(auth_token)
    for candidate in _url_variants(url):
        try:
            computed = validator.compute_signature(candidate, form, algorithm)
        except ValueError:
            log.warning("unsupported webhook signature algorithm %r", algorithm)
            return False
        if hmac.compare_digest(computed.encode(), signature.encode()):
            return True
    return False


@lru_cache(maxsize=256)
def _url_variants(url: str) -> tuple[str, ...]:
    """The validator's two URLs (without, with the default port), the one equal to ``url``
    first."""
    parsed = urlparse(url)
    variants = list(dict.fromkeys([remove_port(parsed), add_port(parsed)]))
    return tuple(sorted(variants, key=lambda v: v != url))
