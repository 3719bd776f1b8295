"""``GET /healthz`` (database and Redis) and ``GET /metrics`` (Prometheus text)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response

from dispatcher.webhooks.context import Context

log = logging.getLogger(__name__)
EMPTY_EXPOSITION = "text/plain; version=0.0.4; charset=utf-8"


def router(ctx: Context) -> APIRouter:
    r = APIRouter()

    @r.get("/healthz", include_in_schema=False)
    async def healthz() -> Response:
        checks = await run_in_threadpool(_checks, ctx)
        ok = all(v in ("ok", "not configured") for v in checks.values())
        return JSONResponse(
            {"status": "ok" if ok else "unavailable", **checks}, status_code=200 if ok else 503
        )

    @r.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        render = getattr(ctx.runtime, "render_metrics", None)
        if not callable(render):
            return Response(b"", media_type=EMPTY_EXPOSITION)
        try:
            body, content_type = await run_in_threadpool(render)
        except Exception:  # noqa: BLE001 - a scrape error is logged, never a traceback
            log.warning("rendering metrics failed", exc_info=True)
            return JSONResponse({"error": "metrics unavailable"}, status_code=503)
        return Response(body, headers={"Content-Type": content_type})

    return r


def _checks(ctx: Context) -> dict[str, Any]:
    checks: dict[str, Any] = {}
    try:
        with ctx.runtime.db.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as e:  # noqa: BLE001
        checks["database"] = f"error: {type(e).__name__}"
    redis = getattr(ctx.runtime, "redis", None)
    if redis is None:
        checks["redis"] = "not configured"
    else:
        try:
            checks["redis"] = "ok" if redis.ping() else "error: no PONG"
        except Exception as e:  # noqa: BLE001
            checks["redis"] = f"error: {type(e).__name__}"
    return checks
