"""``POST /twilio/inbound``: replies people send (STOP / START / HELP / anything else)."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from dispatcher.webhooks.context import Context
from dispatcher.webhooks.errors import answer
from dispatcher.webhooks.forms import SID_MAX, read_signed_form
from dispatcher.webhooks.optout import NL_REVOKE, Inbound, process_inbound
from dispatcher.webhooks.twiml import twiml_response


def router(ctx: Context) -> APIRouter:
    r = APIRouter()

    @r.post("/twilio/inbound", include_in_schema=False)
    async def inbound(request: Request) -> Response:
        return await answer(lambda: _inbound(ctx, request))

    return r


async def _inbound(ctx: Context, request: Request) -> Response:
    settings = ctx.runtime.settings
    form = await read_signed_form(request, settings.auth_token, settings.public_base_url)
    msg = Inbound(
        message_sid=form.get("MessageSid", required=True, max_len=SID_MAX) or "",
        from_=form.get("From", required=True, max_len=64) or "",
        to=form.get("To", max_len=SID_MAX),
        body=form.get("Body") or "",
        messaging_service_sid=form.get("MessagingServiceSid", max_len=SID_MAX),
        opt_out_type=form.get("OptOutType", max_len=16),
    )
    result = await ctx.run(
        process_inbound, msg, advanced_opt_out=settings.advanced_opt_out, halts=ctx.runtime.halts
    )
    if result.revocation and result.contact_id is not None:
        # the guarantee: once this webhook has answered, no message to the contact is still
        # being handed to the carrier (rows not yet claimed were suppressed in the transaction;
        # a worker's claimed row meets the revoke's halt key and is dropped, or was sent)
        await ctx.wait_not_in_flight(result.contact_id)
    if not result.replay:
        for sid, n in result.suppressed.items():
            ctx.metrics.suppressed(sid, "opted_out", n)
        label = result.campaign_sid or "unknown"
        if result.new_opt_out:
            ctx.metrics.opt_out(
                label, "natural_language" if result.classification == NL_REVOKE else "keyword"
            )
        elif result.classification == "START":
            ctx.metrics.opt_in(label)
        elif result.classification == "HELP":
            ctx.metrics.help_request(label)
        await ctx.guard(result.run_ids)
    return twiml_response(result.reply)
