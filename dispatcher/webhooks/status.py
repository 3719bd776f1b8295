"""``POST /twilio/status``: delivery status callbacks."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from dispatcher import outbox
from dispatcher.webhooks.context import Context
from dispatcher.webhooks.delivery import apply_status
from dispatcher.webhooks.errors import answer
from dispatcher.webhooks.forms import SID_MAX, WebhookError, read_signed_form
from dispatcher.webhooks.twiml import twiml_response


def router(ctx: Context) -> APIRouter:
    r = APIRouter()

    @r.post("/twilio/status", include_in_schema=False)
    async def status(request: Request) -> Response:
        return await answer(lambda: _status(ctx, request))

    return r


def parse_error_code(raw: str | None) -> int | None:
    text = (raw or "").strip()
    if not text:
        return None
    if not text.isascii() or not text.isdigit() or len(text) > 9:
        raise WebhookError(400, "field ErrorCode must be a number")
    return int(text) or None


async def _status(ctx: Context, request: Request) -> Response:
    settings = ctx.runtime.settings
    form = await read_signed_form(request, settings.auth_token, settings.public_base_url)
    sid = form.get("MessageSid", required=True, max_len=SID_MAX) or ""
    status = (form.get("MessageStatus", required=True, max_len=32) or "").strip().lower()
    error_code = parse_error_code(form.get("ErrorCode", max_len=16))
    res = await ctx.run(apply_status, sid=sid, status=status, error_code=error_code)
    if res.outcome == "applied":
        campaign, sender = res.campaign_sid or "unknown", res.sender or "unknown"
        if res.state == outbox.DELIVERED:
            ctx.metric("delivered", campaign, sender)
        elif res.state == outbox.UNDELIVERED:
            ctx.metric("undelivered", campaign, sender, error_code)
        elif res.state == outbox.FAILED:
            ctx.metric("failed", campaign, sender, error_code)
        if res.carrier_opt_out:
            ctx.metric("opt_out", campaign, "carrier")
        if error_code and res.run_id is not None:
            await ctx.guard([res.run_id])
    return twiml_response(None)
