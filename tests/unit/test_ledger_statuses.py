"""ledger.statuses runs its column select through Core: same answers as the ORM query, and it
still sees events added earlier in the same session (Session.exec would autoflush them)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlmodel import select

from dispatcher import contacts, ledger, registry
from dispatcher.models import ConsentEvent

SEED = Path(__file__).parents[2] / "dispatcher" / "data" / "usa2p_seed004.json"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _setup(db: Any) -> tuple[int, int, int, list[int]]:
    with db.session() as s:
        b = registry.add_brand(s, name="Acme Corporation", tmobile_brand_tier="TOP")
        other = registry.add_brand(s, name="Other Brand", tmobile_brand_tier="TOP")
        c, _ = registry.import_campaign(s, json.loads(SEED.read_text()), brand=b)
        ids = [contacts.upsert_contact(s, f"(415) 555-12{i:02d}")[0].id for i in range(6)]
        return b.id, other.id, c.id, ids


def _event(
    contact_id: int, brand_id: int, campaign_id: int | None, action: str, minutes: int
) -> ConsentEvent:
    return ConsentEvent(
        contact_id=contact_id,
        brand_id=brand_id,
        campaign_id=campaign_id,
        action=action,
        source="api",
        actor="t",
        note="n",
        occurred_at=T0 + timedelta(minutes=minutes),
        recorded_at=T0,
    )


def _orm_statuses(
    s: Any, ids: list[int], brand_id: int, campaign_id: int | None
) -> dict[int, ledger.ConsentStatus]:
    """The reference: the ORM query statuses ran before, written out plainly."""
    scope = ConsentEvent.brand_id == brand_id
    events = s.exec(
        select(ConsentEvent)
        .where(scope, ConsentEvent.contact_id.in_(ids))  # type: ignore[attr-defined]
        .order_by(ConsentEvent.contact_id, ConsentEvent.occurred_at, ConsentEvent.id)
    ).all()
    out: dict[int, ledger.ConsentStatus] = {}
    for ev in events:
        if ev.campaign_id is not None and ev.campaign_id != campaign_id:
            continue
        prev = out.get(ev.contact_id, ledger.NO_CONSENT)
        at = ev.occurred_at.replace(tzinfo=ev.occurred_at.tzinfo or UTC).astimezone(UTC)
        out[ev.contact_id] = ledger.ConsentStatus(
            ev.action == "grant",
            ev.action == "revoke",
            at if ev.action == "grant" else prev.granted_at,
            at if ev.action == "revoke" else prev.revoked_at,
        )
    return out


def test_statuses_match_the_orm_query_in_every_scope(any_db: Any) -> None:
    bid, other, cid, ids = _setup(any_db)
    a, b, c, d, e, _ = ids
    with any_db.session() as s:
        s.add_all(
            [
                _event(a, bid, None, "grant", 1),
                _event(a, bid, cid, "revoke", 2),
                _event(b, bid, cid, "grant", 1),
                _event(b, bid, None, "revoke", 3),
                _event(c, bid, None, "revoke", 1),
                _event(c, bid, None, "grant", 2),
                _event(d, other, None, "grant", 1),
                _event(e, bid, cid, "grant", 5),
                _event(e, other, None, "revoke", 6),
            ]
        )
    with any_db.session() as s:
        for brand_id in (bid, other):
            for campaign_id in (None, cid):
                for some in (ids, ids[:1], ids[2:5], []):  # one statement, any number of ids
                    got = ledger.statuses(s, set(some), brand_id=brand_id, campaign_id=campaign_id)
                    assert got == _orm_statuses(s, some, brand_id, campaign_id), (
                        brand_id,
                        campaign_id,
                        some,
                    )
        assert ledger.status(s, a, brand_id=bid, campaign_id=cid).opted_out
        assert ledger.status(s, a, brand_id=bid, campaign_id=None).granted


def test_statuses_see_events_pending_in_the_same_session(any_db: Any) -> None:
    bid, _, cid, ids = _setup(any_db)
    with any_db.session() as s:
        assert ledger.status(s, ids[0], brand_id=bid, campaign_id=cid) == ledger.NO_CONSENT
        s.add(_event(ids[0], bid, None, "grant", 1))  # not flushed: statuses must flush it
        assert s.new
        assert ledger.status(s, ids[0], brand_id=bid, campaign_id=cid).granted
        assert not s.new
        with s.no_autoflush:  # as Session.exec: no autoflush asked, none done
            s.add(_event(ids[0], bid, cid, "revoke", 2))
            assert ledger.status(s, ids[0], brand_id=bid, campaign_id=cid).granted
        assert ledger.status(s, ids[0], brand_id=bid, campaign_id=cid).opted_out
