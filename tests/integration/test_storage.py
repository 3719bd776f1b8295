"""Storage on SQLite and PostgreSQL: round trips, migrations, the append-only ledger."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from dispatcher import contacts, ledger, outbox, registry
from dispatcher.errors import LedgerError
from dispatcher.halts import NoHaltKeys
from dispatcher.models import OutboxMessage, Run

SEED = Path(__file__).parents[2] / "dispatcher" / "data" / "usa2p_seed004.json"


def _setup(db):
    with db.session() as s:
        b = registry.add_brand(s, name="Acme Corporation", tmobile_brand_tier="TOP")
        c, created = registry.import_campaign(s, json.loads(SEED.read_text()), brand=b)
        ct, _ = contacts.upsert_contact(
            s, "(415) 555-1234", name="Ann", attributes={"date": "2027-01-01"}
        )
        return b.id, c.id, ct.id


def test_round_trip(any_db):
    bid, cid, ctid = _setup(any_db)
    with any_db.session() as s:
        c = registry.get_campaign(s, "QEaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa")
        assert c.rate_limits == {
            "att": {"mps": 600, "msg_class": "A"},
            "tmobile": {"brand_tier": "TOP"},
        }
        assert c.message_samples[0].startswith("EXPRESS")
        assert c.opt_out_keywords == ["STOP"] and c.window_limit == 10
        run = Run(campaign_id=cid, template="Hi [name]")
        s.add(run)
        s.flush()
        s.add(
            OutboxMessage(
                run_id=run.id,
                campaign_id=cid,
                contact_id=ctid,
                to_phone="+14155551234",
                body="Hi Ann",
            )
        )
    with any_db.session() as s:
        row = s.exec(__import__("sqlmodel").select(OutboxMessage)).one()
        assert row.state == "queued" and row.attempts == 0 and row.body == "Hi Ann"
        assert row.due_at is not None


def test_a_batch_is_claimed_and_recorded_in_one_statement_each(any_db):
    """claim_many claims only rows still queued in a running run; mark_sent_many records only
    sends whose claim token still matches; unclaim gives back the claim's attempt."""
    _, cid, ctid = _setup(any_db)
    now = datetime.now(UTC)
    with any_db.session() as s:
        run = Run(campaign_id=cid, template="Hi", state="running")
        paused = Run(campaign_id=cid, template="Hi", state="paused")
        s.add_all([run, paused])
        s.flush()
        others = [contacts.upsert_contact(s, f"(415) 555-12{i:02d}")[0].id for i in range(3)]
        rows = [
            OutboxMessage(run_id=run.id, campaign_id=cid, contact_id=who, to_phone="+14155551234")
            for who in (ctid, *others[:2])
        ]
        rows.append(
            OutboxMessage(
                run_id=paused.id, campaign_id=cid, contact_id=others[2], to_phone="+14155551234"
            )
        )
        s.add_all(rows)
        s.flush()
        a, b, c, d = (r.id for r in rows)
    with any_db.connect(autocommit=True) as conn:
        conn.execute(outbox.T.update().where(outbox.T.c.id == c).values(state="suppressed"))
        token, claimed = outbox.claim_many(
            conn, [outbox.ToClaim(i, f"Hi {i}", f"h{i}", 1) for i in (a, b, c, d)], now
        )
        assert claimed == {a, b}  # c was suppressed, d's run is paused
        assert outbox.claim_many(conn, [outbox.ToClaim(a, "Hi", "h", 1)], now)[1] == set()
        sent = [
            outbox.Sent(a, token, "SM" + "a" * 32, "accepted", now),
            outbox.Sent(b, "stale", "SM" + "b" * 32, "queued", now),
        ]
        assert outbox.mark_sent_many(conn, sent) == 1  # a stale token records nothing
        assert outbox.unclaim(conn, [a, b], token, now, reason="throttle", enqueued=True) == 1
    with any_db.session() as s:
        got = {
            r.id: (r.state, r.provider_sid, r.body, r.attempts, r.claim_token)
            for r in s.exec(__import__("sqlmodel").select(OutboxMessage))
        }
    assert got == {
        a: ("sent", "SM" + "a" * 32, f"Hi {a}", 1, token),
        b: ("queued", None, f"Hi {b}", 0, None),
        c: ("suppressed", None, None, 0, None),
        d: ("queued", None, None, 0, None),
    }


def _rows(db, n: int, state: str = "running") -> list[int]:
    _, cid, ctid = _setup(db)
    with db.session() as s:
        run = Run(campaign_id=cid, template="Hi", state=state)
        s.add(run)
        s.flush()
        who = [ctid] + [
            contacts.upsert_contact(s, f"(415) 555-13{i:02d}")[0].id for i in range(n - 1)
        ]
        rows = [
            OutboxMessage(run_id=run.id, campaign_id=cid, contact_id=c, to_phone="+14155551234")
            for c in who
        ]
        s.add_all(rows)
        s.flush()
        return [r.id for r in rows]


def test_a_claimed_row_of_a_run_cancelled_meanwhile_is_cancelled_when_given_back(any_db):
    """cancel_run moves only queued rows; a row a worker had claimed and then gives back must
    not sit queued in a cancelled run (nothing releases those)."""
    a, b = _rows(any_db, 2)
    now = datetime.now(UTC)
    with any_db.connect(autocommit=True) as conn:
        token, claimed = outbox.claim_many(
            conn, [outbox.ToClaim(i, "Hi", "h", 1) for i in (a, b)], now
        )
        assert claimed == {a, b}
        conn.execute(Run.__table__.update().values(state="cancelled"))
        assert outbox.unclaim(conn, [a], token, now) == 1
        # a request the carrier refused goes back the same way; its attempt counts
        assert outbox.release(conn, b, token, now, "retry", now)
    with any_db.session() as s:
        got = {
            r.id: (r.state, r.claim_token, r.attempts)
            for r in s.exec(__import__("sqlmodel").select(OutboxMessage))
        }
    assert got == {a: ("cancelled", None, 0), b: ("cancelled", None, 1)}


@pytest.mark.integration
def test_a_batch_claim_skips_a_row_someone_holds_instead_of_waiting(pg_db):
    """PostgreSQL: the claim locks its rows in id order and skips one held by another
    transaction (a cancel or a STOP updating many rows): a lost claim, never a deadlock."""
    a, b, c = _rows(pg_db, 3)
    now = datetime.now(UTC)
    with pg_db.engine.connect() as other:
        other.execute(text("SELECT id FROM outboxmessage WHERE id = :i FOR UPDATE"), {"i": b})
        with pg_db.connect(autocommit=True) as conn:
            _, claimed = outbox.claim_many(
                conn, [outbox.ToClaim(i, "Hi", "h", 1) for i in (c, b, a)], now
            )
        other.rollback()
    assert claimed == {a, c}


def test_consent_derived_from_ledger(any_db):
    bid, cid, ctid = _setup(any_db)
    with any_db.session() as s:
        assert ledger.status(s, ctid, brand_id=bid, campaign_id=cid) == ledger.NO_CONSENT
        ledger.append(
            s,
            contact_id=ctid,
            brand_id=bid,
            action="grant",
            source="web_form",
            actor="t",
            evidence_text="box ticked",
        )
        assert ledger.status(s, ctid, brand_id=bid, campaign_id=cid).granted
        ledger.append(
            s,
            contact_id=ctid,
            brand_id=bid,
            campaign_id=cid,
            action="revoke",
            source="keyword",
            actor="t",
            evidence_text="STOP",
            halts=NoHaltKeys(),  # no worker to halt
        )
        st = ledger.status(s, ctid, brand_id=bid, campaign_id=cid)
        assert st.opted_out and not st.granted
        # the campaign-scoped revoke does not touch brand-wide consent for other campaigns
        assert ledger.status(s, ctid, brand_id=bid, campaign_id=None).granted


def test_ledger_cannot_be_updated_or_deleted(any_db):
    bid, cid, ctid = _setup(any_db)
    with any_db.session() as s:
        ev = ledger.append(
            s,
            contact_id=ctid,
            brand_id=bid,
            action="grant",
            source="api",
            actor="t",
            evidence_text="yes",
        )
        evid = ev.id
    with pytest.raises(LedgerError), any_db.session() as s:
        ev = s.get(ledger.ConsentEvent, evid)
        ev.action = "revoke"
    with pytest.raises(LedgerError), any_db.session() as s:
        s.delete(s.get(ledger.ConsentEvent, evid))
    with pytest.raises(LedgerError), any_db.session() as s:  # the event append() returns, too
        fresh = ledger.append(
            s, contact_id=ctid, brand_id=bid, action="grant", source="api", actor="t", note="n"
        )
        fresh.note = "changed"
    # and below the ORM, the database itself refuses
    for stmt in ("UPDATE consentevent SET action='revoke'", "DELETE FROM consentevent"):
        with pytest.raises(DBAPIError) as e, any_db.engine.begin() as conn:
            conn.execute(text(stmt))
        assert "append-only" in str(e.value)
    with any_db.session() as s:
        assert s.get(ledger.ConsentEvent, evid).action == "grant"


def test_migrations_have_no_drift(any_db):
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext
    from sqlmodel import SQLModel

    with any_db.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(ctx, SQLModel.metadata)
    assert diff == []
    assert any_db.current_revision() == any_db.head_revision()


def test_alembic_check_command(any_db):
    from alembic import command

    from dispatcher.store import alembic_config

    with any_db.engine.connect() as conn:
        command.check(alembic_config(conn))  # raises if models and migrations differ


def test_run_progress_and_its_schedule_read_the_same_on_both_databases(any_db):
    """run_report reads the rows still to send with plain numbers from SQL (due time as epoch
    seconds, 'carried by a queue message' as a boolean): the same schedule on either database."""
    from datetime import timedelta

    from sqlmodel import select

    from dispatcher import run_report, runs

    now = datetime(2026, 1, 5, 17, 0, tzinfo=UTC)  # 12:00 EST
    with any_db.session() as s:
        b = registry.add_brand(s, name="Acme Corporation", tmobile_brand_tier="TOP")
        doc = json.loads(SEED.read_text())
        doc["campaign_status"] = "VERIFIED"
        c, _ = registry.import_campaign(s, doc, brand=b, policy={"sender": "+15005550006"})
        for i in range(25):
            ct, _ = contacts.upsert_contact(s, f"+1212555{i:04d}", name=f"C{i} Demo")
            ledger.append(s, contact_id=ct.id, brand_id=b.id, action="grant", source="import",
                          actor="t", evidence_text="form", occurred_at=now)  # fmt: skip
        run, _ = runs.launch(
            s,
            runs.LaunchRequest(
                campaign=c.sid, template="Hi [first_name]", audience={"kind": "all"}
            ),
            now=now,
        )
        runs.fan_out(s, run.id, now)
        run_id = run.id
    with any_db.session() as s:
        ids = [r.id for r in s.exec(select(OutboxMessage).order_by(OutboxMessage.id))]
        # as the throttle leaves a run at 10 per 300 s: 10 sent a second ago, the next 10
        # booked a window (300 s + 1 s grace) after them, riding a queue message; 5 due
        sent_at, slot = now - timedelta(seconds=1), now + timedelta(seconds=301)
        for k, i in enumerate(ids[:20]):
            values = (
                {"state": outbox.SENT, "sent_at": sent_at, "segments": 1}
                if k < 10
                else {"due_at": slot, "enqueued_at": now, "defer_reason": "throttle"}
            )
            s.connection().execute(outbox.T.update().where(outbox.T.c.id == i).values(**values))
    with any_db.session() as s:
        p = run_report.progress(s, run_id, now)
    assert p["by_state"] == {"queued": 5, "deferred": 10, "sent": 10}
    assert p["schedule"]["rows"] == 15 and p["next_send_at"] == slot
    assert p["eta"] == slot + timedelta(seconds=301)  # the 5 after the booked window (+1 s grace)
