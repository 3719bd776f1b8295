"""``POST /twilio/status``: delivery status callbacks.

Each request is validated on its own (signature, fields); the database work is group-committed
(groupcommit.py): every callback that arrived while the previous batch was being applied goes
into ONE transaction, and each request is answered 200 only after that transaction committed.
The group-commit thread keeps one connection checked out while it has work
(``store.HeldConnection``): no pool checkout with its pre-ping ``SELECT 1`` per batch.  On
PostgreSQL it keeps a second one in autocommit, and a batch's final statuses without an error
code go first through ONE statement there (``provider_status.apply_statuses_alone``): the move
is all such a callback does, so it needs no transaction around it (no BEGIN/COMMIT round trips,
no ORM session: -0.28 ms of client CPU per batch); one that moved nothing is told apart (unknown
SID, late status) by a read on the same connection.  What those do not settle (error codes,
unknown status values, a suspended campaign, a row committed meanwhile) goes to the
transaction as before.
A batch that fails is retried callback by callback, so each request gets the answer it would
have got alone (503 when the database is unavailable: Twilio retries).

A callback whose SID no outbox row has yet (the worker records SIDs after a batch of sends) is
answered 200 too, and kept to be applied again a little later (early.py).

A callback that provably changes nothing -- an intermediate status (queued, sent, ...) without an
error code: ``provider_status.moves_nothing`` says why -- is answered 200 right after its
signature and fields are checked, with no transaction and nothing kept: two of the three
callbacks Twilio posts per message.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response

from dispatcher import provider_status
from dispatcher.errors import StorageError
from dispatcher.provider_status import (
    StatusResult,
    StatusUpdate,
    apply_status,
    apply_statuses,
    apply_statuses_alone,
    is_plain,
)
from dispatcher.store import HeldConnection
from dispatcher.webhooks.context import Context
from dispatcher.webhooks.early import EarlyStatuses
from dispatcher.webhooks.errors import answer
from dispatcher.webhooks.forms import SID_MAX, WebhookError, signed_form
from dispatcher.webhooks.groupcommit import GroupCommit, PartialBatch
from dispatcher.webhooks.twiml import twiml_response

PATH = "/twilio/status"
#: where a transaction gets its session: ``Database.session`` or ``HeldConnection.session``
InSession = Callable[[], AbstractContextManager[Any]]


def install(app: Starlette, ctx: Context) -> StatusEndpoint:
    """Add the route to ``app`` and return its endpoint, a plain ASGI app that the webhook app
    calls for ``POST /twilio/status`` before its middleware stack (app.WebhookApp): nothing
    there is needed by a callback (the endpoint records its own request metric, answers its own
    errors), and it was a third of the route's CPU.  The route added here serves the other
    methods (405) and names the path for the metrics."""
    commit = ctx.status_commit = status_commit(ctx)
    early = ctx.early = status_early(ctx)
    endpoint = StatusEndpoint(ctx, commit, early)

    async def status(request: Request) -> Response:
        return await answer(lambda: _status(ctx, commit, early, request.scope, request.receive))

    app.add_route(PATH, status, methods=["POST"], include_in_schema=False)
    return endpoint


class StatusEndpoint:
    """``POST /twilio/status`` as a plain ASGI app."""

    def __init__(
        self,
        ctx: Context,
        commit: GroupCommit[StatusUpdate, StatusResult],
        early: EarlyStatuses,
    ) -> None:
        self.ctx, self.commit, self.early = ctx, commit, early
        self._record = getattr(ctx.runtime.metrics, "http_request", None)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        started = time.perf_counter()
        code = 500  # what the server answers if the handler raises
        try:
            response = await answer(
                lambda: _status(self.ctx, self.commit, self.early, scope, receive)
            )
            code = response.status_code
            await response(scope, receive, send)
        finally:
            if self._record is not None:
                try:
                    self._record(PATH, "POST", code, time.perf_counter() - started)
                except Exception:  # noqa: BLE001, S110 - metrics never fail a request
                    pass


def apply_batch(
    ctx: Context, updates: list[StatusUpdate], in_session: InSession | None = None
) -> list[StatusResult]:
    """Callbacks in one transaction (``provider_status.apply_statuses``), in a session of
    ``in_session`` (default: the database's pool)."""
    now = ctx.runtime.clock.now()
    with (in_session or ctx.runtime.db.session)() as s:
        return apply_statuses(s, updates, now=now, campaigns=ctx.campaigns, halts=ctx.runtime.halts)


def status_commit(ctx: Context) -> GroupCommit[StatusUpdate, StatusResult]:
    """The group commit, its thread on ONE held connection (``store.HeldConnection``: no pool
    checkout and pre-ping round trip per batch), given back when the thread goes idle.

    On PostgreSQL a second held connection, in autocommit, takes each batch's plain callbacks
    first (``apply_alone``): the common batch -- final statuses, no error code, every row
    found -- is then one statement and no transaction."""
    db = ctx.runtime.db
    held = db.held()
    alone = db.held(autocommit=True) if db.engine.dialect.name == "postgresql" else None

    def release() -> None:
        held.release()
        if alone is not None:
            alone.release()

    return GroupCommit(
        lambda us: apply_alone(ctx, us, alone, held.session),
        lambda u: apply_alone_one(ctx, u, alone, held.session),
        max_batch=ctx.options.status_batch_max,
        give_up=(StorageError,),
        name="status-commit",
        on_idle=release,
    )


def apply_alone(
    ctx: Context,
    updates: list[StatusUpdate],
    alone: HeldConnection | None,
    in_session: InSession | None = None,
) -> list[StatusResult]:
    """A batch: what one autocommit statement settles (``provider_status.apply_statuses_alone``
    on ``alone``), then the rest in one transaction (``apply_batch``).  If the statement fails
    nothing of the batch was written; if the transaction fails after the statement committed,
    ``PartialBatch`` carries what is settled (the group commit retries the rest one by one)."""
    if alone is None:
        return apply_batch(ctx, updates, in_session)
    with alone.connection() as conn:
        out = apply_statuses_alone(conn, updates, now=ctx.runtime.clock.now())
    rest = [i for i, r in enumerate(out) if r is None]
    if rest:
        try:
            done = apply_batch(ctx, [updates[i] for i in rest], in_session)
        except Exception as e:
            if len(rest) < len(out):
                raise PartialBatch(out, e) from e
            raise
        for i, r in zip(rest, done, strict=True):
            out[i] = r
    return out  # type: ignore[return-value]


def apply_alone_one(
    ctx: Context, u: StatusUpdate, alone: HeldConnection | None, in_session: InSession | None
) -> StatusResult:
    """One callback: a plain one in one autocommit statement if that settles it, otherwise (or
    without ``alone``) in its own transaction (``apply_one``)."""
    if alone is not None and is_plain(u):
        with alone.connection() as conn:
            res = apply_statuses_alone(conn, [u], now=ctx.runtime.clock.now())[0]
        if res is not None:
            return res
    return apply_one(ctx, u, in_session)


def status_early(ctx: Context) -> EarlyStatuses:
    return EarlyStatuses(
        lambda u: apply_one(ctx, u),
        lambda res: ctx.guard_now(react(ctx, res)),
        delays=ctx.options.early_retry_delays_s,
        max_pending=ctx.options.early_max_pending,
        apply_many=lambda us: apply_batch(ctx, us),
        max_batch=ctx.options.status_batch_max,
    )


def apply_one(ctx: Context, u: StatusUpdate, in_session: InSession | None = None) -> StatusResult:
    """One callback in its own transaction (in a session of ``in_session``)."""
    return ctx.transaction(
        apply_status,
        in_session=in_session,
        sid=u.sid,
        status=u.status,
        error_code=u.error_code,
        campaigns=ctx.campaigns,
        halts=ctx.runtime.halts,
    )


def react(ctx: Context, res: StatusResult) -> list[int]:
    """The reactions to a callback that moved its row: ``provider_status.react`` (metrics; the
    runs whose reputation guard to evaluate, which the caller does: the route awaits
    ``ctx.guard``, the early retrier calls ``ctx.guard_now``)."""
    return provider_status.react(ctx.metrics, res)


def parse_error_code(raw: str | None) -> int | None:
    text = (raw or "").strip()
    if not text:
        return None
    if not text.isascii() or not text.isdigit() or len(text) > 9:
        raise WebhookError(400, "field ErrorCode must be a number")
    return int(text) or None


#: the answer to every accepted callback (a Response is stateless once built: sent as is)
_OK = twiml_response(None)


async def _status(
    ctx: Context,
    commit: GroupCommit[StatusUpdate, StatusResult],
    early: EarlyStatuses,
    scope: Any,
    receive: Any,
) -> Response:
    settings = ctx.runtime.settings
    form = await signed_form(scope, receive, settings.auth_token, settings.public_base_url)
    sid = form.get("MessageSid", required=True, max_len=SID_MAX) or ""
    status = (form.get("MessageStatus", required=True, max_len=32) or "").strip().lower()
    error_code = parse_error_code(form.get("ErrorCode", max_len=16))
    if provider_status.moves_nothing(status, error_code):
        return _OK  # applying it would change nothing, now or later (provider_status.py)
    update = StatusUpdate(sid, status, error_code)
    res = await commit.submit(update)
    if res.outcome == "applied":
        if run_ids := react(ctx, res):
            await ctx.guard(run_ids)
    elif res.outcome == "unknown_sid":
        early.keep(update)  # still 200: Twilio does not retry a status callback
    return _OK
