"""Send: hand one claimed row to the carrier (``messages.create``) and react to its answer.

Accepted: ("sent", what to record); the batch records its sends together.  A refused send moves
the row by the error's class: retryable -> back to queued after a backoff (the request certainly
did not reach the carrier); ambiguous -> ``unknown``, then asked of the carrier (``resolve``),
never resent blindly; rejected or failed -> ``failed`` (a 21610 also records the opt-out the
carrier holds and suppresses the contact's other rows of the brand: ``consent.carrier_opt_out``).
"""

from __future__ import annotations

import logging
import random
from datetime import timedelta

from dispatcher import consent, outbox
from dispatcher.clock import Clock
from dispatcher.delivery.config import DeliverConfig
from dispatcher.delivery.gate import Ready
from dispatcher.delivery.ports import Gateway, HaltSignal, Metrics
from dispatcher.delivery.resolve import Resolve
from dispatcher.delivery.results import Outcome, Result
from dispatcher.errors import AmbiguousSendError, GatewayError, RetryableSendError
from dispatcher.logs import mask_phone
from dispatcher.models import OutboxMessage
from dispatcher.store import Database

log = logging.getLogger(__name__)
#: the carrier holds a STOP we did not see (compliance.md 7)
CARRIER_OPT_OUT = 21610


class Send:
    def __init__(
        self,
        gateway: Gateway,
        db: Database,
        clock: Clock,
        metrics: Metrics,
        halts: HaltSignal,
        resolve: Resolve,
        config: DeliverConfig,
        status_callback: str | None,
    ) -> None:
        self.gateway, self.db, self.clock, self.metrics = gateway, db, clock, metrics
        self.halts, self.resolve = halts, resolve
        self.config, self.status_callback = config, status_callback

    def __call__(self, x: Ready, token: str) -> tuple[Result, outbox.Sent | None]:
        """Hand the claimed row to the carrier.  Accepted: (sent, what to record)."""
        sender = x.sender
        started = self.clock.time()
        try:
            if sender.startswith("MG"):
                result = self.gateway.send(
                    x.to,
                    x.text,
                    messaging_service_sid=sender,
                    status_callback=self.status_callback,
                    validity_period=x.validity,
                )
            else:
                result = self.gateway.send(
                    x.to,
                    x.text,
                    from_=sender or None,
                    status_callback=self.status_callback,
                    validity_period=x.validity,
                )
        except GatewayError as e:
            return self._failed(x, token, e), None
        # a Messaging Service answers num_segments=0 ("accepted"): count our own segments
        self.metrics.sent(
            x.campaign.sid,
            sender,
            result.num_segments or x.segments or 1,
            brand=str(x.brand_id),  # the brand's id (docs/metrics.md)
            body_hash=x.digest,
            duration_s=self.clock.time() - started,
        )
        sent = outbox.Sent(x.row_id, token, result.sid, result.status, self.clock.now())
        return Result(Outcome.SENT), sent

    def _failed(self, x: Ready, token: str, e: GatewayError) -> Result:
        cfg, now = self.config, self.clock.now()
        with self.db.session() as s:
            if isinstance(e, RetryableSendError):
                row = s.get(OutboxMessage, x.row_id)
                attempts = row.attempts if row is not None else cfg.max_attempts
                if attempts >= cfg.max_attempts:
                    outbox.mark_failed(s, x.row_id, token, e.code, f"gave up: {e}", now)
                    self.metrics.failed(x.campaign.sid, x.sender, e.code)
                    return Result(Outcome.FAILED, "retries_exhausted")
                delay = min(cfg.backoff_max_s, cfg.backoff_base_s * 2 ** (attempts - 1))
                delay *= 0.5 + random.random() / 2  # noqa: S311 - jitter, not crypto
                outbox.release(s, x.row_id, token, now + timedelta(seconds=delay), "retry", now)
                self.metrics.deferred(x.campaign.sid, "retry")
                return Result(Outcome.RETRY)
            if isinstance(e, AmbiguousSendError):
                outbox.mark_unknown(s, x.row_id, token, str(e), now)
                s.commit()
                return self.resolve.unknown(x.row_id)
            outbox.mark_failed(s, x.row_id, token, e.code, str(e), now)
            if e.code == CARRIER_OPT_OUT:  # the carrier holds a STOP we did not see: record it
                got = consent.carrier_opt_out(
                    s,
                    x.contact_id,
                    x.brand_id,
                    note=f"send refused for campaign {x.campaign.sid} (outbox row {x.row_id})",
                    actor="carrier",
                    halts=self.halts,
                    now=now,
                )
                if got.new:
                    self.metrics.opt_out(x.campaign.sid, "carrier")
                for sid, n in got.suppressed.items():
                    self.metrics.suppressed(sid, "opted_out", n)
        self.metrics.failed(x.campaign.sid, x.sender, e.code)
        log.info("row %s to %s failed: %s", x.row_id, mask_phone(x.to), e)
        return Result(Outcome.FAILED, e.code)
