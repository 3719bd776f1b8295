"""Outbound webhooks for producers: how a system that launches runs through the API learns, without
polling, that a run finished, that the reputation guard paused one, or that a contact opted out.

Subscriptions belong to an API key (``POST /v1/webhooks``): a URL, the event types, and a
secret made here and shown once.  An event is written as a row of ``webhookevent`` **in the
transaction of the change it reports** (an outbox): the run's completion, the guard's pause,
the revocation in the consent ledger.  It is committed with that change or not at all, so no
event is lost if the process dies, and none reports a change that was rolled back.  The
scheduler's ``hooks`` job (workers/scheduler.py) then POSTs it, signed (dispatcher.signing),
and records every attempt in ``webhookattempt`` (the delivery log).  A failed attempt (no
answer, a non-2xx status) is retried with exponential backoff, 30 s doubling up to 6 h, 21
attempts in all (about 3 days), then the event is ``failed``.  Delivery is at least once: a receiver
deduplicates by the event id (``Dispatcher-Event-Id``).

Who receives what: ``run.finished`` and ``run.paused`` go to the subscriptions of the API key
that launched the run (``Run.actor == "api:<key name>"``); ``contact.opted_out`` (one per
revocation appended to the ledger, whatever its path: STOP, the API, the CLI, a carrier
error) goes to every subscription to it, which needs a key with ``contacts:read``: the event
carries the phone number.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import insert, select, update
from sqlmodel import Session, col

from dispatcher.clock import Clock, as_utc
from dispatcher.errors import ConflictError, InputError, NotFoundError
from dispatcher.hook_events import (  # the event types and states: part of this module's API
    CANCELLED as CANCELLED,
)
from dispatcher.hook_events import CONTACT_OPTED_OUT as CONTACT_OPTED_OUT
from dispatcher.hook_events import DELIVERED as DELIVERED
from dispatcher.hook_events import EVENT_TYPES as EVENT_TYPES
from dispatcher.hook_events import FAILED as FAILED
from dispatcher.hook_events import NEEDS_CONTACTS as NEEDS_CONTACTS
from dispatcher.hook_events import PENDING as PENDING
from dispatcher.hook_events import RUN_FINISHED as RUN_FINISHED
from dispatcher.hook_events import RUN_PAUSED as RUN_PAUSED
from dispatcher.hook_events import iso as iso
from dispatcher.hook_events import targets as _targets
from dispatcher.hook_events import write as _write
from dispatcher.models import (
    ApiKey,
    Run,
    WebhookAttempt,
    WebhookEvent,
    WebhookSubscription,
)
from dispatcher.signing import HEADER, header_value

log = logging.getLogger(__name__)

MAX_SUBSCRIPTIONS = 20
SECRET_PREFIX = "whsec_"

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_PORT = (  # 1..65535
    r"(?::(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}"
    r"|[1-9][0-9]{0,3}))?"
)
#: where events may be sent: HTTPS, or plain HTTP to this host only (development); the path and
#: query in the characters RFC 3986 allows
URL_PATTERN = (
    rf"^(?:https://(?:{_LABEL}\.)*{_LABEL}|http://(?:localhost|127\.0\.0\.1)){_PORT}"
    r"(?:[/?#][A-Za-z0-9\-._~:/?#@!$&'()*+,;=%]*)?$"
)

WS = WebhookSubscription.__table__  # type: ignore[attr-defined]
WE = WebhookEvent.__table__  # type: ignore[attr-defined]
WA = WebhookAttempt.__table__  # type: ignore[attr-defined]
AK = ApiKey.__table__  # type: ignore[attr-defined]
R = Run.__table__  # type: ignore[attr-defined]


# ----------------------------------------------------------------------------- subscriptions
def create_subscription(
    session: Session, key: ApiKey, url: str, events: Iterable[str], *, now: datetime
) -> tuple[WebhookSubscription, str]:
    """A subscription of ``key``; returns it and its secret (shown this once).  The caller
    commits.  InputError for a bad URL or event type, ScopeError when an event type needs a
    scope the key lacks, ConflictError past :data:`MAX_SUBSCRIPTIONS` active ones."""
    from dispatcher.apikeys import require_scope

    if re.fullmatch(URL_PATTERN, url) is None:
        raise InputError(
            "url must be https://..., or http://localhost / http://127.0.0.1 for development",
            field="url",
        )
    wanted = list(dict.fromkeys(events))
    unknown = [e for e in wanted if e not in EVENT_TYPES]
    if unknown or not wanted:
        raise InputError(f"events: each one of {', '.join(EVENT_TYPES)}", field="events")
    for event in wanted:
        if event in NEEDS_CONTACTS:
            require_scope(key, NEEDS_CONTACTS[event])
    active = session.exec(
        select(WebhookSubscription.id).where(  # type: ignore[call-overload]
            WebhookSubscription.api_key_id == key.id,
            WebhookSubscription.disabled_at.is_(None),  # type: ignore[union-attr]
        )
    ).all()
    if len(active) >= MAX_SUBSCRIPTIONS:
        raise ConflictError(
            f"API key {key.name!r} has {MAX_SUBSCRIPTIONS} subscriptions; delete one first"
        )
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    assert key.id is not None
    sub = WebhookSubscription(
        api_key_id=key.id, url=url, secret=secret, events=wanted, created_at=now
    )
    session.add(sub)
    session.flush()
    return sub, secret


def subscriptions(session: Session, key: ApiKey) -> list[WebhookSubscription]:
    """``key``'s subscriptions (not deleted), oldest first."""
    return list(
        session.scalars(
            select(WebhookSubscription)
            .where(
                col(WebhookSubscription.api_key_id) == key.id,
                col(WebhookSubscription.disabled_at).is_(None),
            )
            .order_by(col(WebhookSubscription.id))
        )
    )


def get_subscription(session: Session, key: ApiKey, sub_id: int) -> WebhookSubscription:
    """``key``'s subscription ``sub_id``; another key's, or a deleted one, is not found (as one
    that never was)."""
    sub = session.get(WebhookSubscription, sub_id) if 0 < sub_id < 2**31 else None
    if sub is None or sub.api_key_id != key.id or sub.disabled_at is not None:
        raise NotFoundError("webhook subscription", sub_id)
    return sub


def delete_subscription(session: Session, key: ApiKey, sub_id: int, *, now: datetime) -> int:
    """Delete a subscription: it is disabled (the row and its delivery log stay in the
    database, for the operator) and its pending events are cancelled.  Returns how many."""
    sub = get_subscription(session, key, sub_id)
    sub.disabled_at = now
    session.add(sub)
    session.flush()
    return (
        session.connection()
        .execute(
            update(WE)
            .where(WE.c.subscription_id == sub.id, WE.c.state == PENDING)
            .values(state=CANCELLED, last_error="subscription deleted")
        )
        .rowcount
    )


def subscription_dict(sub: WebhookSubscription) -> dict[str, Any]:
    return {
        "id": sub.id,
        "url": sub.url,
        "events": list(sub.events),
        "created_at": as_utc(sub.created_at),
    }


def delivery_page(
    session: Session, key: ApiKey, sub_id: int, *, cursor: int | None, limit: int
) -> dict[str, Any]:
    """The delivery log of a subscription: its events newest first, each with its attempts."""
    sub = get_subscription(session, key, sub_id)
    q = select(WE).where(WE.c.subscription_id == sub.id)
    if cursor is not None:
        q = q.where(WE.c.id < cursor)
    conn = session.connection()
    events = conn.execute(q.order_by(WE.c.id.desc()).limit(limit + 1)).all()
    page = events[:limit]
    attempts: dict[int, list[dict[str, Any]]] = {e.id: [] for e in page}
    if page:
        for a in conn.execute(
            select(WA).where(WA.c.event_id.in_(list(attempts))).order_by(WA.c.id)
        ).all():
            attempts[a.event_id].append(
                {
                    "attempted_at": as_utc(a.attempted_at),
                    "status_code": a.status_code,
                    "error": a.error,
                    "duration_ms": a.duration_ms,
                }
            )
    return {
        "subscription_id": sub.id,
        "items": [
            {
                "id": e.id,
                "event_id": event_id(e.id),
                "type": e.type,
                "state": e.state,
                "attempts": e.attempts,
                "created_at": as_utc(e.created_at),
                "next_attempt_at": as_utc(e.next_attempt_at) if e.state == PENDING else None,
                "delivered_at": as_utc(e.delivered_at) if e.delivered_at else None,
                "last_status": e.last_status,
                "last_error": e.last_error,
                "log": attempts[e.id],
            }
            for e in page
        ],
        "next_cursor": str(page[-1].id) if len(events) > limit else None,
    }


def event_id(row_id: int) -> str:
    return f"evt_{row_id}"


# ---------------------------------------------------------------------------------- emission
def runs_changed(session: Session, event_type: str, run_ids: Iterable[int], now: datetime) -> int:
    """``run.finished`` / ``run.paused`` for ``run_ids`` (in the caller's transaction), to the
    subscriptions of the key that launched each run; the payload is the run document of
    ``GET /v1/runs/{id}``.  Returns the events written."""
    ids = list(run_ids)
    targets = _targets(session.connection(), event_type) if ids else []
    if not targets:
        return 0
    from dispatcher.run_report import progress

    written = 0
    actors = session.connection().execute(select(R.c.id, R.c.actor).where(R.c.id.in_(ids)))
    for run_id, actor in list(actors):
        name = actor.removeprefix("api:") if actor and actor.startswith("api:") else None
        mine = [t.subscription_id for t in targets if t.key_name == name]
        if mine:
            # the change was an UPDATE statement: a Run this session loaded before is stale
            session.get(Run, run_id, populate_existing=True)
            doc = _jsonable(progress(session, run_id, now))
            written += _write(session.connection(), event_type, mine, doc, now)
    return written


def _jsonable(doc: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(json.dumps(doc, default=_iso))
    return out


def _iso(value: Any) -> str:
    if isinstance(value, datetime):
        return iso(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


# ---------------------------------------------------------------------------------- delivery
@dataclass
class DeliveryConfig:
    batch: int = 20  # events claimed at once
    timeout_s: float = 10.0  # per POST
    lease_s: float = 120.0  # a claimed event is retried after this if its attempt never ended
    base_delay_s: float = 30.0  # first retry; doubles each attempt
    max_delay_s: float = 6 * 3600.0
    max_attempts: int = 21  # the last one ~2.9 days after the first, with the delays above
    budget_s: float = 10.0  # one run() starts no attempt after this (wall time)


def backoff_s(attempts: int, config: DeliveryConfig) -> float:
    """Delay before the attempt after the ``attempts``-th failed one."""
    return float(min(config.base_delay_s * 2 ** max(attempts - 1, 0), config.max_delay_s))


@dataclass(frozen=True)
class _Claimed:
    id: int
    type: str
    payload: dict[str, Any]
    created_at: datetime
    attempt: int
    url: str
    secret: str


class Deliverer:
    """POSTs due events; run by the scheduler's ``hooks`` job (any number of schedulers: an
    event is claimed by a compare-and-set on its row before it is sent)."""

    def __init__(
        self,
        db: Any,
        clock: Clock,
        *,
        http: Any = None,
        config: DeliveryConfig | None = None,
    ) -> None:
        self.db = db
        self.clock = clock
        self.config = config or DeliveryConfig()
        self._http = http

    @property
    def http(self) -> Any:
        if self._http is None:
            import httpx

            self._http = httpx.Client(timeout=self.config.timeout_s, follow_redirects=False)
        return self._http

    def close(self) -> None:
        if self._http is not None:
            self._http.close()

    def run(self) -> dict[str, int]:
        """Deliver due events until none is left or the time budget is spent."""
        totals = {"delivered": 0, "retrying": 0, "failed": 0}
        started = time.monotonic()
        while time.monotonic() - started < self.config.budget_s:
            done = self.run_once()
            for k, v in done.items():
                totals[k] += v
            if not sum(done.values()):
                break
        return totals

    def run_once(self) -> dict[str, int]:
        outcome = {"delivered": 0, "retrying": 0, "failed": 0}
        for event in self._claim():
            outcome[self._attempt(event)] += 1
        return outcome

    def _claim(self) -> list[_Claimed]:
        now = self.clock.now()
        cfg = self.config
        with self.db.session() as s:
            conn = s.connection()
            due = conn.execute(  # read only when nothing is due: no write lock every 2 s
                select(WE.c.id, WS.c.disabled_at, AK.c.revoked_at)
                .join(WS, WS.c.id == WE.c.subscription_id)
                .join(AK, AK.c.id == WS.c.api_key_id)
                .where(WE.c.state == PENDING, WE.c.next_attempt_at <= now)
                .order_by(WE.c.next_attempt_at, WE.c.id)
                .limit(cfg.batch)
                .with_for_update(skip_locked=True, of=WE)
            ).all()
            gone = [r.id for r in due if r.disabled_at is not None or r.revoked_at is not None]
            if gone:  # the key was revoked since (a deleted subscription cancelled its own)
                conn.execute(
                    update(WE)
                    .where(WE.c.id.in_(gone), WE.c.state == PENDING)
                    .values(state=CANCELLED, last_error="subscription inactive")
                )
            due = [r for r in due if r.id not in gone]
            if not due:
                return []
            claimed = conn.execute(
                update(WE)
                .where(
                    WE.c.id.in_([r.id for r in due]),
                    WE.c.state == PENDING,
                    WE.c.next_attempt_at <= now,
                )
                .values(
                    next_attempt_at=now + timedelta(seconds=cfg.lease_s),
                    attempts=WE.c.attempts + 1,
                )
                .returning(WE.c.id)
            ).all()
            rows = conn.execute(
                select(
                    WE.c.id,
                    WE.c.type,
                    WE.c.payload,
                    WE.c.created_at,
                    WE.c.attempts,
                    WS.c.url,
                    WS.c.secret,
                )
                .join(WS, WS.c.id == WE.c.subscription_id)
                .where(WE.c.id.in_([r[0] for r in claimed]))
                .order_by(WE.c.id)
            ).all()
        return [_Claimed(*r) for r in rows]

    def _attempt(self, event: _Claimed) -> str:
        body = json.dumps(
            {
                "id": event_id(event.id),
                "type": event.type,
                "created_at": iso(event.created_at),
                "data": event.payload,
            },
            separators=(",", ":"),
            sort_keys=True,
        ).encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "sms-dispatcher-webhooks/1",
            "Dispatcher-Event-Id": event_id(event.id),
            "Dispatcher-Event-Type": event.type,
            "Dispatcher-Attempt": str(event.attempt),
            HEADER: header_value(event.secret, int(self.clock.time()), body),
        }
        status: int | None = None
        error: str | None = None
        started = time.monotonic()
        try:
            response = self.http.post(event.url, content=body, headers=headers)
            status = response.status_code
            if not 200 <= status < 300:
                error = f"HTTP {status}"
        except Exception as e:  # noqa: BLE001 - any failure to deliver is a failed attempt
            error = f"{type(e).__name__}: {str(e)[:300]}" if str(e) else type(e).__name__
        duration_ms = int((time.monotonic() - started) * 1000)
        return self._record(event, status, error, duration_ms)

    def _record(self, event: _Claimed, status: int | None, error: str | None, ms: int) -> str:
        now = self.clock.now()
        cfg = self.config
        if error is None:
            outcome, values = "delivered", {"state": DELIVERED, "delivered_at": now}
        elif event.attempt >= cfg.max_attempts:
            outcome, values = "failed", {"state": FAILED}
        else:
            delay = timedelta(seconds=backoff_s(event.attempt, cfg))
            outcome, values = "retrying", {"next_attempt_at": now + delay}
        with self.db.session() as s:
            conn = s.connection()
            conn.execute(
                insert(WA).values(
                    event_id=event.id,
                    attempted_at=now,
                    status_code=status,
                    error=error,
                    duration_ms=ms,
                )
            )
            conn.execute(  # a subscription deleted meanwhile keeps its event cancelled
                update(WE)
                .where(WE.c.id == event.id, WE.c.state == PENDING)
                .values(last_status=status, last_error=error, **values)
            )
        if outcome != "delivered":
            log.info(
                "webhook %s to %s: attempt %d %s (%s)",
                event_id(event.id),
                urlsplit(event.url).hostname,
                event.attempt,
                outcome,
                error,
            )
        return outcome
