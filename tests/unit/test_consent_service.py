"""The consent service (dispatcher/consent.py): one scope rule, one dedupe rule, and the only
writer of the ledger and of a revocation's suppressions (docs/compliance.md, "Consent: one
service").  Each caller's own path is tested beside it (CLI, API, webhooks, delivery); here: the
rules, on SQLite and PostgreSQL, and that nobody else writes."""

from __future__ import annotations

import ast
import json
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import func, select

import dispatcher
from dispatcher import consent, contacts, registry
from dispatcher.clock import FakeClock
from dispatcher.delivery.fakes import MemoryHalts
from dispatcher.errors import NotFoundError
from dispatcher.models import ConsentEvent, OutboxMessage, Run
from dispatcher.store import Database

PACKAGE = Path(dispatcher.__file__).parent
NOW = datetime(2026, 1, 5, 15, 0, tzinfo=UTC)
PHONE = "+12125550100"


@dataclass
class World:
    db: Database
    brands: dict[str, int]  # brand name -> id
    campaigns: dict[str, int]  # "A1", "A2" (brand A), "B1" (brand B) -> id
    contact_id: int
    rows: dict[str, int]  # campaign key -> the contact's queued outbox row

    def states(self) -> dict[str, str]:
        with self.db.session() as s:
            return {k: s.get(OutboxMessage, i).state for k, i in self.rows.items()}  # type: ignore[union-attr]

    def events(self) -> list[ConsentEvent]:
        with self.db.session() as s:
            return list(s.exec(select(ConsentEvent).order_by(ConsentEvent.id)))

    def scope(self, brand: str, campaign: str | None = None) -> consent.Scope:
        return consent.Scope(self.brands[brand], self.campaigns[campaign] if campaign else None)


def _doc(n: int) -> dict[str, Any]:
    doc = json.loads(resources.files("dispatcher.data").joinpath("usa2p_seed004.json").read_text())
    doc.update(sid=f"QE{n:032x}", campaign_status="VERIFIED", messaging_service_sid=None)
    return doc


def _world(db: Database) -> World:
    """Brands A (campaigns A1, A2) and B (B1); one contact with a queued row in each."""
    with db.session() as s:
        brands, campaigns, rows = {}, {}, {}
        n = 0
        for name, keys in (("A", ("A1", "A2")), ("B", ("B1",))):
            brand = registry.add_brand(s, name=f"Brand {name}")
            brands[name] = brand.id
            for key in keys:
                n += 1
                c, _ = registry.import_campaign(
                    s, _doc(n), brand=brand, policy={"sender": f"+1500555000{n}"}
                )
                campaigns[key] = c.id
        contact, _ = contacts.upsert_contact(s, PHONE)
        for key, cid in campaigns.items():
            run = Run(campaign_id=cid, template="Hi", state="running")
            s.add(run)
            s.flush()
            row = OutboxMessage(
                run_id=run.id, campaign_id=cid, contact_id=contact.id, to_phone=PHONE
            )
            s.add(row)
            s.flush()
            rows[key] = row.id
        return World(db, brands, campaigns, contact.id, rows)  # type: ignore[arg-type]


@pytest.fixture
def world(any_db: Database) -> World:
    return _world(any_db)


def _revoke(w: World, scope: consent.Scope, *, source: str = "operator", ref: str | None = None):
    halts = MemoryHalts(FakeClock(NOW))
    with w.db.session() as s:
        got = consent.revoke_and_suppress(
            s,
            w.contact_id,
            scope,
            source,
            consent.Evidence(text="STOP", ref=ref),
            actor="test",
            halts=halts,
            now=NOW,
        )
    return got, halts


def _grant(w: World, scope: consent.Scope, ref: str | None = "form-1") -> consent.Recorded:
    with w.db.session() as s:
        return consent.record_grant(
            s, w.contact_id, scope, "web_form", consent.Evidence(ref=ref), actor="test"
        )


# ------------------------------------------------------------------------------ scope rule
def test_a_brand_wide_revocation_suppresses_every_campaign_of_the_brand_and_no_other(world):
    got, halts = _revoke(world, world.scope("A"))
    assert world.states() == {"A1": "suppressed", "A2": "suppressed", "B1": "queued"}
    assert got.new and got.suppressed == {
        "QE00000000000000000000000000000001": 1,
        "QE00000000000000000000000000000002": 1,
    }
    assert sorted(got.campaign_ids) == sorted([world.campaigns["A1"], world.campaigns["A2"]])
    assert halts.signalled()["contacts"] == {world.contact_id}  # before the commit
    (ev,) = world.events()
    assert (ev.brand_id, ev.campaign_id, ev.action) == (world.brands["A"], None, "revoke")


def test_a_campaign_revocation_suppresses_that_campaign_only(world):
    got, _ = _revoke(world, world.scope("A", "A2"))
    assert world.states() == {"A1": "queued", "A2": "suppressed", "B1": "queued"}
    assert got.campaign_ids == [world.campaigns["A2"]]


def test_the_suppressed_rows_are_those_the_ledger_refuses(world):
    """What the revocation suppresses now is what the gate refuses later: the same scope."""
    from dispatcher import ledger

    _revoke(world, world.scope("A", "A2"))
    with world.db.session() as s:
        for key, cid in world.campaigns.items():
            brand = world.brands[key[0]]
            st = ledger.status(s, world.contact_id, brand_id=brand, campaign_id=cid)
            assert st.opted_out == (world.states()[key] == "suppressed"), key


def test_a_campaign_of_another_brand_is_refused_in_one_place(world):
    with world.db.session() as s:
        with pytest.raises(NotFoundError, match="of brand Brand A"):
            consent.target(s, "Brand A", world.campaigns["B1"])
        to = consent.target(s, "Brand B", world.campaigns["B1"])
        assert to.scope == world.scope("B", "B1")


# ------------------------------------------------------------------------------ dedupe rule
def test_the_same_reference_twice_is_one_entry_and_signals_once(world):
    first, h1 = _revoke(world, world.scope("A"), source="keyword", ref="SM1")
    again, h2 = _revoke(world, world.scope("A"), source="keyword", ref="SM1")
    assert (first.new, again.new) == (True, False)
    assert again.event.id == first.event.id
    assert len(world.events()) == 1
    assert not h2.signalled()["contacts"]  # nothing appended: nothing to signal
    other, _ = _revoke(world, world.scope("B"), source="keyword", ref="SM1")
    assert other.new  # another scope: another event


def test_without_a_reference_every_request_is_an_entry(world):
    _revoke(world, world.scope("A"))
    _revoke(world, world.scope("A"))
    assert len(world.events()) == 2


def test_a_carrier_block_is_one_entry_until_the_person_opts_in_again(world):
    def carrier(ref: str) -> consent.Recorded:
        with world.db.session() as s:
            return consent.carrier_opt_out(
                s,
                world.contact_id,
                world.brands["A"],
                ref=ref,
                note="test",
                actor="test",
                halts=MemoryHalts(FakeClock(NOW)),
                now=NOW,
            )

    assert carrier("SM1").new
    assert not carrier("SM2").new  # 21610 on another row of the same block
    assert [e.action for e in world.events()] == ["revoke"]
    _grant(world, world.scope("A", "A1"))  # START
    assert carrier("SM3").new  # a new block
    assert [(e.action, e.source) for e in world.events()] == [
        ("revoke", "carrier"),
        ("grant", "web_form"),
        ("revoke", "carrier"),
    ]


def test_a_grant_with_the_same_reference_is_one_entry(world):
    assert _grant(world, world.scope("A", "A1")).new
    assert not _grant(world, world.scope("A", "A1")).new
    assert _grant(world, world.scope("A", "A1"), ref="form-2").new
    assert len(world.events()) == 2


@pytest.mark.integration
def test_two_transactions_recording_one_event_append_it_once(pg_db):
    """Two webhooks for one MessageSid at once (PostgreSQL): the unique key and ON CONFLICT
    DO NOTHING make one entry; neither transaction fails."""
    w = _world(pg_db)
    barrier = threading.Barrier(2)
    results: list[bool] = []
    errors: list[BaseException] = []

    def record() -> None:
        try:
            with w.db.session() as s:
                s.exec(select(func.count()).select_from(ConsentEvent)).one()  # start the txn
                barrier.wait(timeout=10)
                got = consent.revoke_and_suppress(
                    s,
                    w.contact_id,
                    w.scope("A"),
                    "keyword",
                    consent.Evidence(text="STOP", ref="SM-race"),
                    actor="test",
                    halts=MemoryHalts(FakeClock(NOW)),
                    now=NOW,
                )
                results.append(got.new)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=record) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors
    assert sorted(results) == [False, True]
    assert len(w.events()) == 1


# ---------------------------------------------------------------------- the only writer
#: where the package may append to the ledger or suppress a contact's rows
OWNERS = {
    PACKAGE / "consent.py",
    PACKAGE / "consent_events.py",  # the ledger's writer, in Core
    PACKAGE / "ledger.py",
    PACKAGE / "outbox.py",
    PACKAGE / "outbox_states.py",  # the revocation's suppression, in Core
}
WRITERS = {"append", "append_once", "suppress_for_contact", "import_grants"}
#: how a module names the ledger's table (the model's, or the Core view and its alias)
LEDGER_TABLE = {"ConsentEvent.__table__", "tables.consent_event", "consent_event", "CE"}


def _ledger_writes(path: Path) -> list[str]:
    """Calls in ``path`` that write the ledger or a revocation's suppression other than
    through the consent service: ``ledger.append*``, ``consent_events.append_once``,
    ``outbox[_states].suppress_for_contact``, ``ConsentEvent(...)`` or its table (the model's or
    the Core view ``tables.consent_event``) handed to a call (an insert)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = ast.unparse(node.func)
        name = f.rsplit(".", 1)[-1]
        modules = {"ledger", "consent_events", "outbox", "outbox_states", name}
        if (
            (name in WRITERS and f.split(".")[0] in modules)
            or f == "ConsentEvent"
            or any(ast.unparse(a) in LEDGER_TABLE for a in node.args)
        ):
            found.append(f"{path.name}:{node.lineno} {f}")
    return found


def test_nobody_but_the_consent_service_writes_the_ledger_or_suppresses_a_contact():
    paths = [*PACKAGE.rglob("*.py"), *(PACKAGE.parent / "workers").rglob("*.py")]
    assert [w for p in paths if p not in OWNERS for w in _ledger_writes(p)] == []


def test_the_scanner_sees_a_direct_write(tmp_path):
    bad = tmp_path / "writer.py"
    bad.write_text(
        "from dispatcher import ledger, outbox\n"
        "def f(s):\n"
        "    ledger.append(s, contact_id=1)\n"
        "    outbox.suppress_for_contact(s, 1, campaign_ids=[1], reason='x', now=None)\n"
        "    consent_events.append_once(c, contact_id=1)\n"
        "    outbox_states.suppress_for_contact(c, 1, campaign_ids=[1], reason='x', now=None)\n"
        "    c.execute(insert(tables.consent_event).values(contact_id=1))\n"
        "    return ConsentEvent(contact_id=1)\n"
    )
    assert len(_ledger_writes(bad)) == 6


def test_recording_through_the_service_needs_no_session_of_its_own(world):
    """The caller owns the transaction: a rollback leaves neither event nor suppression."""
    with pytest.raises(RuntimeError), world.db.session() as s:
        consent.revoke_and_suppress(
            s,
            world.contact_id,
            world.scope("A"),
            "operator",
            consent.Evidence(),
            actor="test",
            halts=MemoryHalts(FakeClock(NOW)),
            now=NOW,
        )
        raise RuntimeError("the caller fails later")
    assert world.events() == []
    assert set(world.states().values()) == {"queued"}
