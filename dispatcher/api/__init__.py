"""The notifications HTTP API (``/v1``): runs, contacts and consent for other systems.

The integrator mounts it on the shared ASGI app::

    from dispatcher.api import build_router, install_error_handlers
    app.include_router(build_router(runtime))
    install_error_handlers(app)

:func:`create_api_app` builds a stand-alone app (tests, the committed OpenAPI document).
Nothing here is imported until called; the launch path itself (``dispatcher.launch``) needs
no FastAPI.
"""

from __future__ import annotations

from typing import Any

TITLE = "SMS dispatcher notifications API"
VERSION = "1.0.0"
DESCRIPTION = (
    "Queue bulk service notifications through the same gates, throttle, outbox and audit as the "
    "CLI.  Authenticate with `Authorization: Bearer <API key>`; each operation names its scope.  "
    "Every 4xx is an `application/problem+json` document (type, title, status, detail, field)."
)
TAGS = [
    {"name": "runs", "description": "Launch (idempotent), follow and control runs."},
    {"name": "contacts", "description": "Contacts and their attributes."},
    {"name": "consent", "description": "The append-only consent ledger."},
    {
        "name": "webhooks",
        "description": "Events POSTed to the producer, signed: run finished, run paused by "
        "the reputation guard, contact opted out.",
    },
]


def build_router(runtime: Any) -> Any:
    """``fastapi.APIRouter`` with every ``/v1`` route over ``runtime`` (``.db``, ``.clock``)."""
    from dispatcher.api.routes import build_router as build

    return build(runtime)


def install_error_handlers(app: Any) -> None:
    """Problem documents for ``/v1`` errors (other routes keep their own behaviour)."""
    from dispatcher.api.problems import install_error_handlers as install

    install(app)


def new_app(app_class: Any = None) -> Any:
    """An empty FastAPI app (or of ``app_class``, a FastAPI subclass) carrying the API's title,
    description and tags, with no ``/docs`` or ``/redoc`` page: the contract is the document
    (``/openapi.json``), for any OpenAPI viewer or client generator.  Both apps start from
    it."""
    from fastapi import FastAPI

    return (app_class or FastAPI)(
        title=TITLE,
        version=VERSION,
        description=DESCRIPTION,
        openapi_tags=TAGS,
        docs_url=None,
        redoc_url=None,
    )


def create_api_app(runtime: Any) -> Any:
    """A stand-alone app serving only the API (tests, the committed OpenAPI document); the
    served one is ``dispatcher.webhooks.create_app`` (the Twilio webhooks beside it)."""
    app = new_app()
    app.include_router(build_router(runtime))
    install_error_handlers(app)
    return app
