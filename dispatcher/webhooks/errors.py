"""Turn expected failures into JSON answers (``{"error": ...}``) inside the webhook routes only
(the HTTP API mounted on the same app has its own error format)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from starlette.responses import JSONResponse, Response

from dispatcher.errors import (
    ConflictError,
    DispatcherError,
    InputError,
    NotFoundError,
    StorageError,
)
from dispatcher.webhooks.forms import WebhookError

log = logging.getLogger(__name__)


def error_response(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": " ".join(message.split())[:500]}, status_code=status)


async def answer(handler: Callable[[], Awaitable[Response]]) -> Response:
    try:
        return await handler()
    except WebhookError as e:
        return error_response(e.status, e.message)
    except StorageError as e:
        log.warning("webhook: %s", e)
        return error_response(503, "database unavailable, retry later")
    except InputError as e:
        return error_response(400, str(e))
    except NotFoundError as e:
        return error_response(404, str(e))
    except ConflictError as e:
        return error_response(409, str(e))
    except DispatcherError as e:
        log.warning("webhook: %s", e)
        return error_response(503, str(e))
