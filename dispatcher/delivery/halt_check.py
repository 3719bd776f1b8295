"""Halt check: right before each send, may anything have halted this row since its batch was read?

The batch was claimed in ONE statement, so the claim no longer re-checks consent and run state per
row.  Instead every revoke, pause and cancel sets a Redis key before it commits
(``dispatcher/halts.py``), and here ONE command (``HaltKeys.clear``, an MGET) says whether
anything halted the row's contact, run or campaign since the batch was read and whether Redis
could have lost such a key.  Only then does the row pay for a database check (``verify``): its
run's state and its contact's consent, and it is unclaimed, cancelled or suppressed accordingly.
So a STOP, pause or cancel committed before the check stops the row, as a per-row claim would;
the STOP webhook waits for the contact's claimed rows (up to its deadline), so its 200 comes after
any send that passed its check first.
"""

from __future__ import annotations

import logging
import time

from sqlalchemy import select

from dispatcher import ledger, outbox, runs
from dispatcher.clock import Clock
from dispatcher.delivery.config import DeliverConfig
from dispatcher.delivery.gate import Ready
from dispatcher.delivery.ports import Epoch, HaltKeys, Metrics
from dispatcher.delivery.results import Outcome, Result
from dispatcher.models import Run
from dispatcher.store import Database

log = logging.getLogger(__name__)
_T, _R = outbox.T, Run.__table__  # type: ignore[attr-defined]
#: the claimed row's state and its run's state, by id
_VERIFY = select(_T.c.state, _T.c.claim_token, _R.c.state.label("run_state")).join(
    _R, _R.c.id == _T.c.run_id
)


class HaltCheck:
    def __init__(
        self, keys: HaltKeys, db: Database, clock: Clock, metrics: Metrics, config: DeliverConfig
    ) -> None:
        self.keys, self.db, self.clock, self.metrics = keys, db, clock, metrics
        self.config = config
        self._warned_at = float("-inf")  # a Redis outage is logged once a minute, not per row

    def epoch(self) -> Epoch | None:
        """Read BEFORE the batch is loaded: a halt after it is seen by ``check``.  None (Redis
        unreachable): every row of the batch is checked in the database."""
        try:
            return self.keys.epoch()
        except Exception:  # noqa: BLE001 - Redis unreachable: every row is checked in the DB
            log.warning("could not read the halts epoch", exc_info=True)
            return None

    def deadline(self, read_at: float) -> float:
        """When (``clock.time()``) a batch read at ``read_at`` must stop sending: well inside the
        reconciler's sending lease, and inside the time halt keys are kept."""
        return read_at + min(self.config.batch_max_s, self.keys.max_age_s)

    def check(self, x: Ready, token: str, epoch: Epoch | None) -> Result | None:
        """None if the row (claimed with ``token``) may be sent; else what became of it."""
        if epoch is not None:
            try:
                if self.keys.clear(
                    epoch, contact_id=x.contact_id, run_id=x.run_id, campaign_id=x.campaign_id
                ):
                    return None
            except Exception as e:  # noqa: BLE001 - Redis unreachable: the database decides
                mono = time.monotonic()
                if mono - self._warned_at >= 60.0:
                    self._warned_at = mono
                    log.warning(
                        "halt check failed (%s: %s); checking rows in the database",
                        type(e).__name__,
                        e,
                    )
        return self.verify(x, token)

    def verify(self, x: Ready, token: str) -> Result | None:
        """The database check behind a halt key (or a Redis that may have lost one)."""
        now = self.clock.now()
        with self.db.session() as s:
            row = s.connection().execute(_VERIFY.where(_T.c.id == x.row_id)).first()
            if row is None or row.state != outbox.SENDING or row.claim_token != token:
                return Result(Outcome.LOST_CLAIM)
            if row.run_state == runs.CANCELLED:
                outbox.drop_claimed(s, x.row_id, token, outbox.CANCELLED, "run_cancelled", now)
                return Result(Outcome.CANCELLED)
            if row.run_state != runs.RUNNING:
                outbox.unclaim(s, [x.row_id], token, now)
                return Result(Outcome.HALTED, row.run_state)
            consent = ledger.status(s, x.contact_id, brand_id=x.brand_id, campaign_id=x.campaign_id)
            if consent.opted_out:
                outbox.drop_claimed(s, x.row_id, token, outbox.SUPPRESSED, "opted_out", now)
                self.metrics.suppressed(x.campaign.sid, "opted_out")
                return Result(Outcome.SUPPRESSED, "opted_out")
        return None
