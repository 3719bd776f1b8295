"""``POST /twilio/status``: delivery status callbacks.

Each request is validated on its own (signature, fields); the database work is group-committed
(groupcommit.py): every callback that arrived while the previous batch was being applied goes
into ONE transaction, and each request is answered 200 only after that transaction committed.
A batch that fails is retried callback by callback, so each request gets the answer it would
have got alone (503 when the database is unavailable: Twilio retries).
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response

from dispatcher import outbox
from dispatcher.errors import StorageError
from dispatcher.webhooks.context import Context
from dispatcher.webhooks.delivery import StatusResult, StatusUpdate, apply_status, apply_statuses
from dispatcher.webhooks.errors import answer
from dispatcher.webhooks.forms import SID_MAX, WebhookError, read_signed_form
from dispatcher.webhooks.groupcommit import GroupCommit
from dispatcher.webhooks.twiml import twiml_response

PATH = "/twilio/status"


def install(app: Starlette, ctx: Context) -> None:
    """Add the route to ``app`` -- call it before any other route is added: a plain Starlette
    route matched first, without FastAPI's per-request dependency machinery (nothing here
    needs it: the handler reads the raw request)."""
    commit = ctx.status_commit = status_commit(ctx)

    async def status(request: Request) -> Response:
        return await answer(lambda: _status(ctx, commit, request))

    app.add_route(PATH, status, methods=["POST"], include_in_schema=False)


def status_commit(ctx: Context) -> GroupCommit[StatusUpdate, StatusResult]:
    def run_batch(updates: list[StatusUpdate]) -> list[StatusResult]:
        now = ctx.runtime.clock.now()
        with ctx.runtime.db.session() as s:
            return apply_statuses(s, updates, now=now, campaigns=ctx.campaigns)

    def run_one(u: StatusUpdate) -> StatusResult:
        return ctx.transaction(apply_status, sid=u.sid, status=u.status,
                               error_code=u.error_code, campaigns=ctx.campaigns)

    return GroupCommit(run_batch, run_one, max_batch=ctx.options.status_batch_max,
                       give_up=(StorageError,), name="status-commit")


def parse_error_code(raw: str | None) -> int | None:
    text = (raw or "").strip()
    if not text:
        return None
    if not text.isascii() or not text.isdigit() or len(text) > 9:
        raise WebhookError(400, "field ErrorCode must be a number")
    return int(text) or None


async def _status(ctx: Context, commit: GroupCommit[StatusUpdate, StatusResult],
                  request: Request) -> Response:
    settings = ctx.runtime.settings
    form = await read_signed_form(request, settings.auth_token, settings.public_base_url)
    sid = form.get("MessageSid", required=True, max_len=SID_MAX) or ""
    status = (form.get("MessageStatus", required=True, max_len=32) or "").strip().lower()
    error_code = parse_error_code(form.get("ErrorCode", max_len=16))
    res = await commit.submit(StatusUpdate(sid, status, error_code))
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
