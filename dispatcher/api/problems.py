"""Every 4xx of the API is a JSON problem document (RFC 9457): ``type``, ``title``, ``status``,
``detail`` and ``field`` (the input at fault, when there is one).

The handlers only reshape errors of ``/v1/...`` requests (and ``/openapi.json``); other routes of
the same app (the Twilio webhooks) keep FastAPI's default error bodies.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import (
    http_exception_handler,
    request_validation_exception_handler,
)
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Match

from dispatcher.apikeys import AuthenticationError, ScopeError
from dispatcher.errors import (
    ComplianceError,
    ConflictError,
    DispatcherError,
    InputError,
    InvalidPhoneError,
    LedgerError,
    NotFoundError,
    StorageError,
    UnknownTimeZoneError,
)
from dispatcher.launch_checks import LaunchRefused, WarningsNotAccepted

log = logging.getLogger(__name__)
MEDIA_TYPE = "application/problem+json"
_TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Content too large",
    415: "Unsupported media type",
    422: "Unprocessable content",
    500: "Internal error",
    503: "Service unavailable",
}
_PROBLEM_SCHEMA = {"$ref": "#/components/schemas/Problem"}
#: what a client reads instead of the database's own message (host, port, database name)
STORAGE_DETAIL = "the database is unavailable; retry later"


class IdempotencyKeyMismatch(InputError):
    """The ``Idempotency-Key`` header and the body's ``idempotency_key`` differ (HTTP 422): a
    rule between two parts of a request, which no schema can state."""

    def __init__(self) -> None:
        super().__init__(
            "idempotency_key differs from the Idempotency-Key header (send one, or both equal)",
            field="idempotency_key",
        )


def problem(
    status: int,
    slug: str,
    detail: str,
    *,
    field: str | None = None,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    doc: dict[str, Any] = {
        "type": f"urn:dispatcher:problem:{slug}",
        "title": _TITLES.get(status, "Error"),
        "status": status,
        "detail": " ".join(str(detail).split())[:2000],
        "field": field,
    }
    if errors is not None:
        doc["errors"] = errors
    return JSONResponse(doc, status_code=status, media_type=MEDIA_TYPE, headers=headers)


def problem_responses(
    *codes: int, notes: dict[int, str] | None = None
) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for an operation: each code documented as a problem document, its
    description the status title and ``notes[code]`` (which problem types it carries)."""
    notes = notes or {}
    return {
        code: {
            "description": " ".join(filter(None, (_TITLES.get(code, "Error"), notes.get(code)))),
            "model": _problem_model(),
            "content": {MEDIA_TYPE: {"schema": _PROBLEM_SCHEMA}},
        }
        for code in codes
    }


def _problem_model() -> Any:
    from dispatcher.api.models import Problem

    return Problem


def _ours(request: Request) -> bool:
    return request.url.path.startswith("/v1/")


def _field_of(loc: tuple[Any, ...] | list[Any]) -> str | None:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "path", "query", "header", "cookie"):
        parts = parts[1:]
    return ".".join(parts) or None


#: (error class, status, problem slug), the first match wins: narrower classes first
_CLASSES: tuple[tuple[type[DispatcherError] | tuple[type[DispatcherError], ...], int, str], ...] = (
    (AuthenticationError, 401, "unauthorized"),
    (ScopeError, 403, "missing-scope"),
    (NotFoundError, 404, "not-found"),
    ((ConflictError, LedgerError), 409, "conflict"),
    (StorageError, 503, "storage-unavailable"),
    (WarningsNotAccepted, 422, "launch-warnings"),
    (LaunchRefused, 422, "launch-refused"),
    (IdempotencyKeyMismatch, 422, "idempotency-key-mismatch"),
    (InvalidPhoneError, 400, "invalid-phone"),
    (UnknownTimeZoneError, 400, "unknown-time-zone"),
    (InputError, 400, "invalid-input"),
    (ComplianceError, 400, "compliance"),
)


def classify(e: DispatcherError) -> tuple[int, str]:
    for cls, status, slug in _CLASSES:
        if isinstance(e, cls):
            return status, slug
    return 400, "rejected"


async def _dispatcher_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DispatcherError)
    if not _ours(request):
        raise exc  # other routes of a shared app keep their own behaviour
    status, slug = classify(exc)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    detail = str(exc)
    if status >= 500:  # the operator's log has the cause; the client learns no host or name
        log.warning("request failed: %s", exc)
        detail = STORAGE_DETAIL if isinstance(exc, StorageError) else _TITLES[500]
    errors = [i.to_dict() for i in exc.issues] if isinstance(exc, LaunchRefused) else None
    return problem(
        status, slug, detail, field=getattr(exc, "field", None), errors=errors, headers=headers
    )


async def _validation_error(request: Request, exc: Exception) -> Any:
    assert isinstance(exc, RequestValidationError)
    if not _ours(request):
        return await request_validation_exception_handler(request, exc)
    errors = [
        {
            "field": _field_of(e.get("loc", ())),
            "message": str(e.get("msg", "invalid")).removeprefix("Value error, "),
        }
        for e in exc.errors()
    ]
    first = errors[0] if errors else {"field": None, "message": "invalid request"}
    where = f"{first['field']}: " if first["field"] else ""
    return problem(
        422, "validation", f"{where}{first['message']}", field=first["field"], errors=errors
    )


async def _http_error(request: Request, exc: Exception) -> Any:
    assert isinstance(exc, StarletteHTTPException)
    if not _ours(request):
        return await http_exception_handler(request, exc)
    if exc.status_code == 400:  # FastAPI could not read the body (not UTF-8, not JSON)
        return problem(
            422,
            "validation",
            "body: the request body is not JSON",
            field="body",
            errors=[{"field": "body", "message": "the request body is not JSON"}],
        )
    slug = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http")
    headers = getattr(exc, "headers", None)
    if exc.status_code == 405:
        headers = {**(headers or {}), "Allow": ", ".join(_allowed(request))}
    return problem(exc.status_code, slug, str(exc.detail), headers=headers)


def _allowed(request: Request) -> list[str]:
    """Every method of every route on this path (Starlette's 405 names the first route's
    only: GET /v1/runs would hide POST /v1/runs)."""
    methods = {
        m
        for route in _leaves(request.app.router.routes)
        if route.matches(request.scope)[0] == Match.PARTIAL
        for m in getattr(route, "methods", None) or ()
    }
    return sorted(methods)


def _leaves(routes: Iterable[BaseRoute]) -> Iterator[BaseRoute]:
    """The routes of an app, those of included routers too (newer FastAPI versions keep an
    included router whole, as ``original_router``)."""
    for route in routes:
        nested = getattr(getattr(route, "original_router", None), "routes", None)
        if nested is not None:
            yield from _leaves(nested)
        else:
            yield route


async def _data_error(request: Request, exc: Exception) -> JSONResponse:
    # A value the database refused (out of range, wrong encoding): bad input, not a crash.
    if not _ours(request):
        raise exc
    log.info("database refused a value: %s", type(exc).__name__)
    return problem(400, "invalid-value", "a value is out of the range the database accepts")


def install_error_handlers(app: FastAPI) -> None:
    """Problem documents for API errors.  Safe to call on the shared webhooks app."""
    app.add_exception_handler(DispatcherError, _dispatcher_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(DataError, _data_error)
