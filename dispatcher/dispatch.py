"""deliver(): the path of every message.  load -> gates -> render -> throttle -> claim -> send
-> record.  Gets its collaborators as arguments (one composition root builds them).

Exactly once: the row is claimed ``queued -> sending`` by compare-and-set (and only while the run
is running) and committed *before* the carrier is called; a second delivery of the same id finds
the row claimed and does nothing.  A send that may have reached the carrier but has no answer
(timeout) becomes ``unknown`` and is resolved by asking the carrier (``find_sent``) — never by
sending again blindly.  A throttled message books a future slot and is re-enqueued with that
delay (no worker thread waits); a message that cannot book within the horizon goes back to the
outbox with a later ``due_at`` and costs no queue operation until then.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_
from sqlmodel import Session, select

from dispatcher import compliance, ledger, outbox, runs
from dispatcher.clock import Clock, as_utc
from dispatcher.errors import GatewayError, MessageTooLongError
from dispatcher.gateway.client import body_hash
from dispatcher.logs import mask_phone
from dispatcher.models import Brand, Campaign, Contact, OutboxMessage, Run
from dispatcher.templates import MissingField, Template, contact_values, parse_template
from dispatcher.throttle.policy import buckets_for
from dispatcher.throttle.redis import Reservation

log = logging.getLogger(__name__)

#: error codes that mark a number as unusable for SMS (compliance.md 7)
BAD_NUMBER_CODES = frozenset({21211, 21614, 30005, 30006})
HANDED = ("sending", "sent", "delivered", "undelivered", "unknown")
#: A throttled message books a slot up to this far ahead and rides a delayed queue message to
#: it; the scheduler releases no more rows of a run than can book within it (housekeeping), so a
#: long backlog waits in the outbox at no queue cost (docs/throttle.md: ~2 queue ops per send).
BOOK_HORIZON_S = 6 * 3600.0
Enqueue = Callable[[int, float, dict[str, Any] | None], None]


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

    def __post_init__(self) -> None:
        if self.config is None:
            self.config = DeliverConfig()
        self._campaigns: dict[int, tuple[Campaign, Brand, float]] = {}

    # ------------------------------------------------------------------------------ deliver
    def deliver(self, row_id: int, booking: dict[str, Any] | None = None) -> str:
        """Handle one queue message.  Returns what happened (for logs and tests)."""
        now = self.clock.now()
        with self.db.session() as s:
            loaded = s.exec(  # row, run and contact in one statement
                select(OutboxMessage, Run, Contact)
                .join(Run, Run.id == OutboxMessage.run_id)  # type: ignore[arg-type]
                .join(Contact, Contact.id == OutboxMessage.contact_id)  # type: ignore[arg-type]
                .where(OutboxMessage.id == row_id)).first()
            if loaded is None:
                return "missing"
            row, run, contact = loaded
            if row.state != outbox.QUEUED:
                self._release(booking)
                return f"skip:{row.state}"
            if run.state == runs.CANCELLED:
                self._release(booking)
                outbox.suppress(s, row_id, "run_cancelled", now)
                s.connection().execute(
                    outbox.T.update().where(outbox.T.c.id == row_id,
                                            outbox.T.c.state == outbox.SUPPRESSED)
                    .values(state=outbox.CANCELLED))
                return "cancelled"
            if run.state != runs.RUNNING:
                self._release(booking)
                outbox.unqueue(s, row_id, now)
                return f"run:{run.state}"
            campaign, brand = self._campaign(s, row.campaign_id)
            verdict = self._gate(s, row, run, campaign, brand, contact, now)
            if isinstance(verdict, str):
                self._release(booking)
                return verdict
            text, decision = verdict

            # ---- throttle
            slot_ok = False
            if booking is not None:
                res = Reservation.from_dict(booking)
                st = self.throttle.send_status(res, now=self._throttle_now())
                if st == "send":
                    slot_ok = True
                elif st == "early":
                    delay = max(0.0, (res.slot_at or 0) - self.clock.time())
                    outbox.defer(s, row_id, now + timedelta(seconds=delay), "throttle", now,
                                 enqueued=True)
                    s.commit()
                    self.enqueue(row_id, delay, booking)
                    return "early"
                elif st == "late":
                    self._release(booking)
                booking = None if not slot_ok else booking
            if not slot_ok:
                seg = decision.segments or compliance.segments(text).count
                buckets = buckets_for(
                    campaign, brand_id=brand.id, brand_tier=brand.tmobile_brand_tier,
                    sender=campaign.messaging_service_sid or campaign.sender,
                    recipient=row.to_phone, segments=seg, now=self.clock.time(),
                    min_grace_s=self.config.min_grace_s,
                )
                res = self.throttle.reserve(buckets, now=self._throttle_now(),
                                            max_wait_s=self.config.book_horizon_s)
                # "allowed" in the metric = could go at once; a booked future slot is a wait
                self._metric("throttle_wait_seconds", "reservation", res.wait_s,
                             res.allowed and res.wait_s <= self.config.now_epsilon_s)
                if not res.allowed:
                    until = now + timedelta(seconds=max(res.wait_s, 0.05))
                    outbox.defer(s, row_id, until, "throttle", now)
                    self._metric("deferred", campaign.sid, "throttle")
                    return "throttled"
                if res.wait_s > self.config.now_epsilon_s:
                    outbox.defer(s, row_id, now + timedelta(seconds=res.wait_s), "throttle",
                                 now, enqueued=True)
                    s.commit()
                    self.enqueue(row_id, res.wait_s, res.to_dict())
                    return "booked"
                booking = res.to_dict()

            # ---- claim (commit before the carrier is called)
            token = outbox.claim(s, row_id, now, body=text, body_hash=body_hash(text),
                                 segments=decision.segments, defer_reason=None)
            if token is None:
                self._release(booking)
                return "lost_claim"
            sender = campaign.messaging_service_sid or campaign.sender
            to = row.to_phone
            cid, csid = campaign.id, campaign.sid
            validity = self._validity(decision, now)
        return self._send(row_id, token, to, text, sender, validity, cid, csid,
                          row.contact_id, brand.id, segs=decision.segments or 1,
                          brand_name=brand.name)

    # ------------------------------------------------------------------------------ gates
    def _gate(self, s: Session, row: OutboxMessage, run: Run, campaign: Campaign, brand: Brand,
              contact: Contact, now: datetime) -> Any:
        consent = ledger.status(s, contact.id, brand_id=brand.id, campaign_id=campaign.id)
        g = evaluate(parse_template(run.template), row.variables, contact, brand, campaign,
                     consent, self._history(s, contact.id, now), now,
                     first_message_days=self.config.first_message_days)
        if g.kind == "send":
            return g.text, g.decision
        if g.kind == "pause":
            runs.pause_run(s, run.id, f"campaign: {g.reason}", now)
            outbox.unqueue(s, row.id, now)
            return f"paused:{g.reason}"
        if g.kind == "defer":
            outbox.defer(s, row.id, g.decision.until, g.reason, now)
            self._metric("deferred", campaign.sid, g.reason)
            return f"deferred:{g.reason}"
        outbox.suppress(s, row.id, g.reason, now)
        self._metric("suppressed", campaign.sid, g.reason)
        if g.reason == "template_variable_missing":
            log.info("row %s: template field missing for %s", row.id, mask_phone(contact.phone))
        return f"suppressed:{g.reason}"

    def _history(self, s: Session, contact_id: int, now: datetime) -> list[tuple]:
        """This contact's recent sends (caps, first message) and any bad-number error, in one
        statement: (campaign_id, at, state, error_code)."""
        since = now - timedelta(days=self.config.history_days)
        t = outbox.T
        rows = s.connection().execute(
            select(t.c.campaign_id, t.c.sent_at, t.c.updated_at, t.c.state, t.c.error_code)
            .where(t.c.contact_id == contact_id,
                   or_(t.c.sent_at >= since, t.c.error_code.in_(BAD_NUMBER_CODES)))
        ).all()
        return [(c, as_utc(sent or upd), st, code) for c, sent, upd, st, code in rows
                if sent is not None or code in BAD_NUMBER_CODES]

    def _campaign(self, s: Session, campaign_id: int) -> tuple[Campaign, Brand]:
        """Campaign and brand, cached per process for ``campaign_cache_s`` (a status change or
        suspension takes effect within that; pause and STOP act on the claim itself)."""
        hit = self._campaigns.get(campaign_id)
        mono = time.monotonic()
        if hit is not None and mono - hit[2] < self.config.campaign_cache_s:
            return hit[0], hit[1]
        campaign = s.get(Campaign, campaign_id)
        brand = s.get(Brand, campaign.brand_id)
        self._campaigns[campaign_id] = (campaign, brand, mono)
        return campaign, brand

    # ------------------------------------------------------------------------------ send
    def _send(self, row_id: int, token: str, to: str, text: str, sender: str | None,
              validity: int, campaign_id: int, campaign_sid: str, contact_id: int,
              brand_id: int, *, segs: int = 1, brand_name: str | None = None) -> str:
        kwargs: dict[str, Any] = {"status_callback": self.status_callback,
                                  "validity_period": validity}
        if sender and sender.startswith("MG"):
            kwargs["messaging_service_sid"] = sender
        else:
            kwargs["from_"] = sender
        started = self.clock.time()
        try:
            result = self.gateway.send(to, text, **kwargs)
        except GatewayError as e:
            return self._failed_send(row_id, token, e, campaign_id, campaign_sid, contact_id,
                                     brand_id, to, sender or "")
        now = self.clock.now()
        with self.db.session() as s:
            outbox.mark_sent(s, row_id, token, result.sid, result.status, now)
        # a Messaging Service answers num_segments=0 ("accepted"): count our own segments
        self._metric("sent", campaign_sid, sender or "", result.num_segments or segs,
                     brand=brand_name, body_hash=body_hash(text))
        self._metric("send_duration_seconds", self.clock.time() - started)
        return "sent"

    def _failed_send(self, row_id: int, token: str, e: GatewayError, campaign_id: int,
                     campaign_sid: str, contact_id: int, brand_id: int, to: str,
                     sender: str) -> str:
        now = self.clock.now()
        with self.db.session() as s:
            if e.outcome == "retryable":
                row = s.get(OutboxMessage, row_id)
                if row.attempts >= self.config.max_attempts:
                    outbox.mark_failed(s, row_id, token, e.code, f"gave up: {e}", now)
                    self._metric("failed", campaign_sid, sender, e.code)
                    return "failed:retries_exhausted"
                delay = min(self.config.backoff_max_s,
                            self.config.backoff_base_s * 2 ** (row.attempts - 1))
                delay *= 0.5 + random.random() / 2  # noqa: S311 - jitter, not crypto
                outbox.release(s, row_id, token, now + timedelta(seconds=delay), "retry", now)
                return "retry"
            if e.outcome == "ambiguous":
                outbox.mark_unknown(s, row_id, token, str(e), now)
                s.commit()
                return self.resolve(row_id)
            outbox.mark_failed(s, row_id, token, e.code, str(e), now)
            if e.code == 21610:  # the carrier holds a STOP we did not see: record it
                ledger.append(s, contact_id=contact_id, brand_id=brand_id, action="revoke",
                              source="carrier", actor="carrier",
                              evidence_text="Twilio error 21610: recipient replied STOP",
                              evidence_ref=str(e.code))
                outbox.suppress_for_contact(s, contact_id, brand_campaign_ids=None,
                                            reason="opted_out", now=now)
                self._metric("opt_out", campaign_sid, "carrier")
        self._metric("failed", campaign_sid, sender, e.code)
        log.info("row %s to %s failed: %s", row_id, mask_phone(to), e)
        return f"failed:{e.code}"

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
            outbox.resolve_unknown(s, row_id, found_sid=found.sid if found else None,
                                   status=found.status if found else None, now=now)
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

    def _throttle_now(self) -> float | None:
        return None if getattr(self.throttle, "_clock", None) is None else self.clock.time()

    def _release(self, booking: dict[str, Any] | None) -> None:
        if booking:
            try:
                self.throttle.release(Reservation.from_dict(booking))
            except Exception:  # noqa: BLE001 - a lost slot is only lost throughput
                log.warning("could not release a throttle booking", exc_info=True)

    def _metric(self, name: str, *args: Any, **kwargs: Any) -> None:
        if self.metrics is not None:
            try:
                getattr(self.metrics, name)(*args, **kwargs)
            except Exception:  # noqa: BLE001 - metrics never break a send
                log.debug("metric %s failed", name, exc_info=True)


@dataclass(frozen=True)
class GateResult:
    kind: str  # send | defer | suppress | pause
    reason: str | None = None
    text: str | None = None
    decision: Any = None
    first_message: bool = False


def evaluate(tpl: Template, variables: dict[str, Any] | None, contact: Contact, brand: Brand,
             campaign: Campaign, consent: ledger.ConsentStatus, history: list[tuple],
             now: datetime, *, first_message_days: int = 30) -> GateResult:
    """Every gate for one recipient, without I/O: render, compose, decide.  ``history`` rows are
    (campaign_id, at, state, error_code) of this contact's recent outbox rows."""
    try:
        rendered = tpl.render(contact_values(contact.name, contact.attributes, variables))
    except MissingField:
        return GateResult("suppress", "template_variable_missing")
    cutoff = now - timedelta(days=first_message_days)
    first = not any(c == campaign.id and at >= cutoff and st in HANDED
                    for c, at, st, _ in history)
    try:
        text = compliance.compose(rendered, brand_name=brand.name, opt_out_language=None,
                                  first_message=first)
    except MessageTooLongError:
        return GateResult("suppress", "message_too_long")
    bad = next((str(code) for _, _, _, code in history if code in BAD_NUMBER_CODES), None)
    state = compliance.ContactState(
        consent_granted=consent.granted, opted_out=consent.opted_out,
        time_zone=contact.time_zone, state_code=contact.state_code,
        recent_sends=tuple(at for _, at, st, _ in history if st in HANDED),
        suppressed_reason=bad,
    )
    msg = compliance.OutgoingMessage(to=contact.phone, body=text, first_message=first,
                                     brand_name=brand.name)
    d = compliance.decide(msg, state, campaign, now=now)
    if isinstance(d, compliance.Suppress):
        reason = d.reason.value
        if d.reason in compliance.CAMPAIGN_LEVEL_REASONS:
            return GateResult("pause", reason + (f" ({d.detail})" if d.detail else ""), text, d,
                              first)
        return GateResult("suppress", reason, text, d, first)
    if isinstance(d, compliance.Defer):
        return GateResult("defer", d.reason.value, text, d, first)
    return GateResult("send", None, text, d, first)
