"""deliver_many(): the path of every message.  load -> gates -> render, for a batch of rows (one
statement each), then the hand-over (``delivery.handover``): claim the batch, then per row
halt check -> throttle slot -> send, and record the sends.  ``deliver(id, booking)`` is a batch of
one.  Gets its collaborators as arguments (one composition root builds them).

Exactly once: the rows are claimed ``queued -> sending`` by compare-and-set (and only while the
run is running) and committed *before* the carrier is called; a second delivery of the same id
finds the row claimed and does nothing.  A send that may have reached the carrier but has no answer
(timeout) becomes ``unknown`` and is resolved by asking the carrier (``find_sent``) — never by
sending again blindly.  A throttled message books a future slot and is re-enqueued with that
delay (no worker thread waits); a message that cannot book within the horizon goes back to the
outbox with a later ``due_at`` and costs no queue operation until then.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, or_
from sqlmodel import Session, select

from dispatcher import ledger, outbox, runs
from dispatcher.clock import Clock, as_utc
from dispatcher.delivery.gate import BAD_NUMBER_CODES, evaluate
from dispatcher.delivery.handover import Handover
from dispatcher.delivery.slots import Enqueue, Slots
from dispatcher.errors import GatewayError
from dispatcher.gateway.client import body_hash
from dispatcher.logs import mask_phone
from dispatcher.models import Brand, Campaign, Contact, OutboxMessage, Run
from dispatcher.templates import parse_template

log = logging.getLogger(__name__)

#: A throttled message books a slot up to this far ahead and rides a delayed queue message to
#: it; the scheduler releases no more rows of a run than can book within it (release_loop.py), so a
#: long backlog waits in the outbox at no queue cost (docs/throttle.md: ~2 queue ops per send).
BOOK_HORIZON_S = 6 * 3600.0


@dataclass
class DeliverConfig:
    book_horizon_s: float = BOOK_HORIZON_S  # how far ahead a throttled message may book
    max_attempts: int = 8  # retryable carrier errors before giving up
    backoff_base_s: float = 2.0
    backoff_max_s: float = 300.0
    first_message_days: int = 30  # STOP language at least once a month (compliance.md 2.1)
    history_days: int = 31
    now_epsilon_s: float = 0.002  # a booking this close to now is "now"
    #: a booked slot may be used this late: must exceed the queue's wake-up lateness (Dramatiq
    #: delivers delayed messages within ~worker_timeout); costs T/(T+g) of a window's throughput
    min_grace_s: float = 1.0
    campaign_cache_s: float = 2.0
    #: a batch's rows not reached after this long go back to the outbox (well inside the
    #: reconciler's sending lease, and inside the halt keys' ``max_age_s``)
    batch_max_s: float = 30.0
    #: accepted sends wait at most this long to be recorded together (a STOP webhook waits for
    #: its contact's claimed rows; early status callbacks are retried meanwhile)
    mark_within_s: float = 0.5


@dataclass
class Pipeline:
    db: Any  # dispatcher.store.Database
    throttle: Any  # dispatcher.throttle.redis.RedisThrottle
    gateway: Any  # dispatcher.gateway.TwilioGateway
    clock: Clock
    enqueue: Enqueue
    status_callback: str | None = None
    validity_cap_s: int = 36000
    metrics: Any = None
    config: DeliverConfig = None  # type: ignore[assignment]
    halts: Any = None  # dispatcher.halts.Halts; None: every row is checked in the database

    def __post_init__(self) -> None:
        if self.config is None:
            self.config = DeliverConfig()
        self._campaigns: dict[int, tuple[Campaign, Brand, float]] = {}
        self.slots = Slots(self.throttle, self.clock, self.enqueue, self.config, self._metric)
        self.handover = Handover(self)

    # ------------------------------------------------------------------------------ deliver
    def deliver(self, row_id: int, booking: dict[str, Any] | None = None) -> str:
        """Handle one queue message for one row (a booked slot rides with it)."""
        return self.deliver_many([row_id], {row_id: booking} if booking else None)[row_id]

    def deliver_many(
        self, ids: list[int], bookings: dict[int, dict[str, Any]] | None = None
    ) -> dict[int, str]:
        """Handle one queue message carrying several rows.  Returns what happened to each.

        Loading and gates run for the lot in one transaction (one statement each for rows,
        consent and history); then the hand-over claims the lot in one statement and each row
        in turn passes the halt check, takes its throttle slot and is sent, so a STOP, pause or
        cancel still stops every row not yet handed to the carrier exactly as for a single row,
        and no slot waits for the rows before it.
        """
        read_at = self.clock.time()
        epoch = self._epoch()  # before the load: a halt after it is seen by the check
        now = self.clock.now()
        ids = list(dict.fromkeys(ids))  # a repeated id is one row
        bookings = bookings or {}
        out: dict[int, str] = {}
        ready: list[_Ready] = []
        with self.db.session() as s:
            loaded = {row.id: row for row in s.connection().execute(_LOAD, {"ids": ids})}
            live = []
            for rid in ids:
                if rid not in loaded:
                    out[rid] = "missing"
                    continue
                verdict = self._check_row(s, loaded[rid], now)
                if verdict is not None:
                    self._release(bookings.get(rid))
                    out[rid] = verdict
                    continue
                live.append(loaded[rid])
            consent = self._consents(s, live)
            history = self._histories(s, {row.contact_id for row in live}, now)
            for row in live:
                campaign, brand = self._campaign(s, row.campaign_id)
                verdict = self._gate(
                    s,
                    row,
                    campaign,
                    brand,
                    now,
                    consent.get(row.id, ledger.NO_CONSENT),
                    history.get(row.contact_id, []),
                )
                if isinstance(verdict, str):
                    self._release(bookings.get(row.id))
                    out[row.id] = verdict
                    continue
                text, decision = verdict
                ready.append(
                    _Ready(
                        row.id,
                        row.run_id,
                        row.contact_id,
                        row.to_phone,
                        text,
                        decision,
                        campaign,
                        brand,
                        bookings.get(row.id),
                        self._validity(decision, now),
                        body_hash(text),
                    )
                )
        if ready:
            out.update(self.handover.run(ready, epoch, read_at))
        return out

    def _epoch(self) -> Any:
        if self.halts is None:
            return None
        try:
            return self.halts.epoch()
        except Exception:  # noqa: BLE001 - Redis unreachable: every row is checked in the DB
            log.warning("could not read the halts epoch", exc_info=True)
            return None

    def _check_row(self, s: Session, row: Any, now: datetime) -> str | None:
        """The row's and its run's state; None if the row may go on to the gates."""
        if row.state != outbox.QUEUED:
            return f"skip:{row.state}"
        if row.run_state == runs.CANCELLED:
            outbox.suppress(s, row.id, "run_cancelled", now)
            s.connection().execute(
                outbox.T.update()
                .where(outbox.T.c.id == row.id, outbox.T.c.state == outbox.SUPPRESSED)
                .values(state=outbox.CANCELLED)
            )
            return "cancelled"
        if row.run_state != runs.RUNNING:
            outbox.unqueue(s, row.id, now)
            return f"run:{row.run_state}"
        return None

    # ------------------------------------------------------------------------------ gates
    def _gate(
        self,
        s: Session,
        row: Any,
        campaign: Campaign,
        brand: Brand,
        now: datetime,
        consent: ledger.ConsentStatus,
        history: list[tuple],
    ) -> Any:
        """``row`` (a ``_LOAD`` row) also stands for its contact: name, attributes, time_zone,
        state_code and phone are the contact's columns."""
        g = evaluate(
            parse_template(row.template),
            row.variables,
            row,
            brand,
            campaign,
            consent,
            history,
            now,
            first_message_days=self.config.first_message_days,
        )
        if g.kind == "send":
            return g.text, g.decision
        if g.kind == "pause":
            runs.pause_run(s, row.run_id, f"campaign: {g.reason}", now)
            outbox.unqueue(s, row.id, now)
            return f"paused:{g.reason}"
        if g.kind == "defer":
            outbox.defer(s, row.id, g.decision.until, g.reason, now)
            self._metric("deferred", campaign.sid, g.reason)
            return f"deferred:{g.reason}"
        outbox.suppress(s, row.id, g.reason, now)
        self._metric("suppressed", campaign.sid, g.reason)
        if g.reason == "template_variable_missing":
            log.info("row %s: template field missing for %s", row.id, mask_phone(row.phone))
        return f"suppressed:{g.reason}"

    def _histories(
        self, s: Session, contact_ids: set[int], now: datetime
    ) -> dict[int, list[tuple]]:
        """These contacts' recent sends (caps, first message) and any bad-number error, in one
        statement: contact id -> [(campaign_id, at, state, error_code)]."""
        out: dict[int, list[tuple]] = {}
        if not contact_ids:
            return out
        since = now - timedelta(days=self.config.history_days)
        rows = s.connection().execute(_HISTORY, {"ids": list(contact_ids), "since": since}).all()
        for who, c, sent, upd, st, code in rows:
            if sent is not None or code in BAD_NUMBER_CODES:
                out.setdefault(who, []).append((c, as_utc(sent or upd), st, code))
        return out

    def _consents(self, s: Session, live: list[Any]) -> dict[int, ledger.ConsentStatus]:
        """Consent of every live row's contact for its campaign: one query per campaign."""
        by_campaign: dict[int, list[Any]] = {}
        for row in live:
            by_campaign.setdefault(row.campaign_id, []).append(row)
        out: dict[int, ledger.ConsentStatus] = {}
        for campaign_id, rows in by_campaign.items():
            campaign, brand = self._campaign(s, campaign_id)
            got = ledger.statuses(
                s, {r.contact_id for r in rows}, brand_id=brand.id, campaign_id=campaign.id
            )
            for r in rows:
                out[r.id] = got.get(r.contact_id, ledger.NO_CONSENT)
        return out

    def _campaign(self, s: Session, campaign_id: int) -> tuple[Campaign, Brand]:
        """Campaign and brand, cached per process for ``campaign_cache_s`` (a status change or
        suspension takes effect within that; pause and STOP act on the claim and the halt
        check)."""
        hit = self._campaigns.get(campaign_id)
        mono = time.monotonic()
        if hit is not None and mono - hit[2] < self.config.campaign_cache_s:
            return hit[0], hit[1]
        campaign = s.get(Campaign, campaign_id)
        brand = s.get(Brand, campaign.brand_id)
        self._campaigns[campaign_id] = (campaign, brand, mono)
        return campaign, brand

    # ------------------------------------------------------------------------------ resolve
    def resolve(self, row_id: int) -> str:
        """An ``unknown`` row: ask the carrier whether the message exists; sent or re-queued."""
        with self.db.session() as s:
            row = s.get(OutboxMessage, row_id)
            if row is None or row.state != outbox.UNKNOWN:
                return "skip"
            campaign = s.get(Campaign, row.campaign_id)
            sender = campaign.messaging_service_sid or campaign.sender or ""
            since = as_utc(row.claimed_at or row.updated_at) - timedelta(minutes=2)
            to, bh = row.to_phone, row.body_hash
        try:
            found = self.gateway.find_sent(to, sender, since, bh or "")
        except GatewayError as e:
            log.info("row %s: lookup failed (%s); stays unknown", row_id, e)
            return "unknown"
        now = self.clock.now()
        with self.db.session() as s:
            outbox.resolve_unknown(
                s,
                row_id,
                found_sid=found.sid if found else None,
                status=found.status if found else None,
                now=now,
            )
        if found:
            self._metric("sent", campaign.sid, sender, found.num_segments or 1)
            return "resolved:sent"
        return "resolved:requeued"

    def refresh(self, row_id: int) -> str:
        """A ``sent`` row that heard no final status: ask the carrier (its status callbacks may
        have come before the row knew its SID, or been lost)."""
        with self.db.session() as s:
            row = s.get(OutboxMessage, row_id)
            if row is None or row.state != outbox.SENT or not row.provider_sid:
                return "skip"
            sid = row.provider_sid
        try:
            found = self.gateway.fetch(sid)
        except GatewayError as e:
            log.info("row %s: status fetch failed (%s)", row_id, e)
            return "unknown"
        now = self.clock.now()
        with self.db.session() as s:
            moved = outbox.apply_provider_status(s, sid, found.status, None, now)
            if moved is None:  # still "sent" at the carrier: ask again only after a while
                outbox.touch(s, row_id, outbox.SENT, now)
        return f"refreshed:{found.status}" if moved is not None else "unchanged"

    # ------------------------------------------------------------------------------ helpers
    def _validity(self, decision: Any, now: datetime) -> int:
        cap = self.validity_cap_s
        if decision.valid_until is not None:
            cap = min(cap, int((decision.valid_until - now).total_seconds()))
        return max(1, cap)

    def _release(self, booking: dict[str, Any] | None) -> None:
        self.slots.release(booking)

    def _metric(self, name: str, *args: Any, **kwargs: Any) -> None:
        if self.metrics is not None:
            try:
                getattr(self.metrics, name)(*args, **kwargs)
            except Exception:  # noqa: BLE001 - metrics never break a send
                log.debug("metric %s failed", name, exc_info=True)


def _load_statement() -> Any:
    """A batch's rows with their run's state and template and their contact's columns (Core
    rows: building ORM objects cost ~10 % of a worker's CPU)."""
    t, r, c = outbox.T, Run.__table__, Contact.__table__  # type: ignore[attr-defined]
    return (
        select(
            t.c.id,
            t.c.state,
            t.c.run_id,
            t.c.campaign_id,
            t.c.contact_id,
            t.c.to_phone,
            t.c.variables,
            r.c.state.label("run_state"),
            r.c.template,
            c.c.phone,
            c.c.name,
            c.c.attributes,
            c.c.time_zone,
            c.c.state_code,
        )
        .join(r, r.c.id == t.c.run_id)
        .join(c, c.c.id == t.c.contact_id)
        .where(t.c.id.in_(bindparam("ids", expanding=True)))
    )


_LOAD = _load_statement()


def _history_statement() -> Any:
    """Contacts' (``:ids``) sends since ``:since`` and their bad-number errors (built once: its
    compiled form is cached)."""
    t = outbox.T
    return select(
        t.c.contact_id, t.c.campaign_id, t.c.sent_at, t.c.updated_at, t.c.state, t.c.error_code
    ).where(
        t.c.contact_id.in_(bindparam("ids", expanding=True)),
        or_(t.c.sent_at >= bindparam("since"), t.c.error_code.in_(BAD_NUMBER_CODES)),
    )


_HISTORY = _history_statement()


@dataclass(frozen=True, slots=True)
class _Ready:
    """A row that passed the gates: next, the hand-over (claim, halt check, throttle slot,
    send)."""

    row_id: int
    run_id: int
    contact_id: int
    to: str
    text: str
    decision: Any
    campaign: Campaign
    brand: Brand
    booking: dict[str, Any] | None  # a slot booked earlier, carried by the queue message
    validity: int
    digest: str  # the body's hash (the claim records it, the repetition metrics count it)
