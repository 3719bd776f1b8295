"""Load: what the gate needs for a batch of rows, one statement each: the rows with their run's
state and template and their contact's columns; their contacts' consent (one query per
campaign); their contacts' recent sends and bad-number errors.  Campaigns and brands come from a
per-process cache of ``campaign_cache_s``.

Core rows, not ORM objects: building ORM objects cost ~10 % of a worker's CPU.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, bindparam, or_, select
from sqlmodel import Session

from dispatcher import ledger, outbox
from dispatcher.clock import as_utc
from dispatcher.delivery.config import DeliverConfig
from dispatcher.delivery.gate import BAD_NUMBER_CODES, History
from dispatcher.errors import NotFoundError
from dispatcher.models import Brand, Campaign, Contact, Run


@dataclass(frozen=True, slots=True)
class Row:
    """An outbox row as a batch loads it (the columns of ``_LOAD``, in order); its contact's
    columns make it the gate's ``Recipient``."""

    id: int
    state: str
    run_id: int
    campaign_id: int
    contact_id: int
    to_phone: str
    variables: dict[str, Any] | None
    run_state: str
    template: str
    phone: str
    name: str | None
    attributes: dict[str, Any] | None
    time_zone: str | None
    state_code: str | None


class Loader:
    """Reads a batch for the gate (one per pipeline: it holds the campaign cache)."""

    def __init__(self, config: DeliverConfig) -> None:
        self.config = config
        self._campaigns: dict[int, tuple[Campaign, Brand, float]] = {}

    def rows(self, s: Session, ids: list[int]) -> dict[int, Row]:
        return {r.id: Row(*r) for r in s.connection().execute(_LOAD, {"ids": ids})}

    def campaign(self, s: Session, campaign_id: int) -> tuple[Campaign, Brand]:
        """Campaign and brand, cached per process for ``campaign_cache_s`` (a status change or
        suspension takes effect within that; pause and STOP act on the claim and the halt
        check)."""
        hit = self._campaigns.get(campaign_id)
        mono = time.monotonic()
        if hit is not None and mono - hit[2] < self.config.campaign_cache_s:
            return hit[0], hit[1]
        campaign = s.get(Campaign, campaign_id)
        if campaign is None:
            raise NotFoundError("campaign", campaign_id)
        brand = s.get(Brand, campaign.brand_id)
        if brand is None:
            raise NotFoundError("brand", campaign.brand_id)
        self._campaigns[campaign_id] = (campaign, brand, mono)
        return campaign, brand

    def consents(self, s: Session, live: list[Row]) -> dict[int, ledger.ConsentStatus]:
        """Consent of every live row's contact for its campaign (row id -> status): one query
        per campaign."""
        by_campaign: dict[int, list[Row]] = {}
        for row in live:
            by_campaign.setdefault(row.campaign_id, []).append(row)
        out: dict[int, ledger.ConsentStatus] = {}
        for campaign_id, rows in by_campaign.items():
            campaign, brand = self.campaign(s, campaign_id)
            assert brand.id is not None
            got = ledger.statuses(
                s, {r.contact_id for r in rows}, brand_id=brand.id, campaign_id=campaign.id
            )
            for r in rows:
                out[r.id] = got.get(r.contact_id, ledger.NO_CONSENT)
        return out

    def histories(
        self, s: Session, contact_ids: set[int], now: datetime
    ) -> dict[int, list[History]]:
        """These contacts' recent sends (caps, first message) and any bad-number error, in one
        statement: contact id -> [(campaign_id, at, state, error_code)]."""
        out: dict[int, list[History]] = {}
        if not contact_ids:
            return out
        since = now - timedelta(days=self.config.history_days)
        rows = s.connection().execute(_HISTORY, {"ids": list(contact_ids), "since": since})
        for who, c, sent, upd, st, code in rows:
            if sent is not None or code in BAD_NUMBER_CODES:
                out.setdefault(who, []).append((c, as_utc(sent or upd), st, code))
        return out


def _load_statement() -> Select[Any]:
    """A batch's rows with their run's state and template and their contact's columns."""
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


def _history_statement() -> Select[Any]:
    """Contacts' (``:ids``) sends since ``:since`` and their bad-number errors."""
    t = outbox.T
    return select(
        t.c.contact_id, t.c.campaign_id, t.c.sent_at, t.c.updated_at, t.c.state, t.c.error_code
    ).where(
        t.c.contact_id.in_(bindparam("ids", expanding=True)),
        or_(t.c.sent_at >= bindparam("since"), t.c.error_code.in_(BAD_NUMBER_CODES)),
    )


#: built once: SQLAlchemy reuses their compiled form
_LOAD = _load_statement()
_HISTORY = _history_statement()
