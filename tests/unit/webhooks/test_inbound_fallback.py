"""Inbound replies to a number no campaign is routed by (issue 18 item 5): STOP and HELP are
answered with the registered messages of the campaign that last texted the contact; the
revocation itself is recorded exactly as before."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import select

from dispatcher.models import Brand, Campaign, ConsentEvent, Contact
from tests.unit.webhooks.conftest import (
    World,
    build_world,
    campaign_doc,
    inbound,
    make_client,
    post,
)

POOL = "+15005550006"  # a Messaging Service pool number: no campaign has it as sender
STOP_GLOBEX = "Globex: you will get no more texts from us. Reply START to rejoin."
HELP_GLOBEX = "Globex: help at globex.example/help or 800-555-0199. Reply STOP to opt out."
SENT_AT = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)  # before the FakeClock's now (15:00)


def _service_campaign(world: World, n: int, brand: Brand, **kw: str) -> Campaign:
    """A campaign imported without --sender: it sends through its Messaging Service."""
    with world.db.session() as s:
        c = campaign_doc(brand.id, n, messaging_service_sid="MG" + f"{n:032x}", **kw)
        s.add(c)
    return c


@pytest.fixture
def world(any_db) -> World:
    """The fallback's query is new SQL: every test here runs on SQLite and PostgreSQL."""
    return build_world(any_db)


@pytest.fixture
def client(any_db, clock, metrics):
    return make_client(any_db, clock, metrics=metrics)


@pytest.fixture
def globex(world: World) -> Campaign:
    return _service_campaign(
        world,
        10,
        world.other_brand,
        opt_out_message=STOP_GLOBEX,
        help_message=HELP_GLOBEX,
    )


def _sent(world: World, campaign: Campaign, at: datetime, n: int) -> None:
    world.add_row("sent", campaign=campaign, sid="SM" + f"{n:032x}", sent_at=at)


def _events(world: World) -> list[ConsentEvent]:
    with world.db.session() as s:
        return list(s.exec(select(ConsentEvent).order_by(ConsentEvent.id)))


def test_stop_to_an_unrouted_number_gets_the_texting_brands_opt_out_message(client, world, globex):
    _sent(world, globex, SENT_AT, 1)
    r = post(client, "/twilio/inbound", inbound("STOP", to=POOL, mg=None))
    assert r.status_code == 200
    assert f"<Message>{STOP_GLOBEX}</Message>" in r.text
    assert "This sender" not in r.text
    # the revocation is recorded as before: brand-wide, for the brands that texted the contact
    [ev] = _events(world)
    assert (ev.action, ev.brand_id, ev.campaign_id) == ("revoke", world.other_brand.id, None)
    assert "matched no campaign" in (ev.note or "")


def test_help_to_an_unrouted_number_gets_the_texting_brands_help_message(
    client, world, globex, metrics
):
    _sent(world, globex, SENT_AT, 1)
    r = post(client, "/twilio/inbound", inbound("HELP", to=POOL, mg=None))
    assert f"<Message>{HELP_GLOBEX}</Message>" in r.text
    assert ("help_request", globex.sid) in metrics.calls
    assert _events(world) == []  # HELP writes nothing to the ledger


def test_an_unknown_messaging_service_routes_by_history_too(client, world, globex):
    _sent(world, globex, SENT_AT, 1)
    r = post(client, "/twilio/inbound", inbound("HELP", to=POOL, mg="MG" + "f" * 32))
    assert HELP_GLOBEX in r.text


def test_the_campaign_that_texted_last_answers(client, world, globex):
    acme = _service_campaign(
        world, 11, world.brand, help_message="Acme: help at acme.example. Reply STOP to opt out."
    )
    _sent(world, globex, SENT_AT - timedelta(days=2), 1)
    _sent(world, acme, SENT_AT, 2)
    assert "acme.example" in post(client, "/twilio/inbound", inbound("HELP", to=POOL, mg=None)).text
    _sent(world, globex, SENT_AT + timedelta(hours=1), 3)
    r = post(client, "/twilio/inbound", inbound("HELP", sid="SM" + "9" * 32, to=POOL, mg=None))
    assert HELP_GLOBEX in r.text


def test_a_campaign_with_its_own_sender_did_not_text_from_the_pool_number(client, world, globex):
    """world.other_campaign sends From +14155550102: a reply to POOL answers a service campaign."""
    _sent(world, globex, SENT_AT - timedelta(days=1), 1)
    _sent(world, world.other_campaign, SENT_AT, 2)
    assert HELP_GLOBEX in post(client, "/twilio/inbound", inbound("HELP", to=POOL, mg=None)).text


def test_rows_sent_after_the_reply_do_not_change_its_replay(client, world, globex, clock):
    _sent(world, globex, SENT_AT, 1)
    first = post(client, "/twilio/inbound", inbound("STOP", to=POOL, mg=None))
    acme = _service_campaign(world, 11, world.brand, opt_out_message="Acme: bye. Reply START.")
    clock.advance(3600)
    _sent(world, acme, clock.now() - timedelta(minutes=1), 2)
    again = post(client, "/twilio/inbound", inbound("STOP", to=POOL, mg=None))
    assert again.text == first.text and STOP_GLOBEX in again.text


def test_help_is_never_empty_and_names_the_brand_it_knows(client, world):
    # a contact only queued (never texted) by Globex: the brand is known, no campaign texted
    world.add_row("queued", campaign=world.other_campaign)
    r = post(client, "/twilio/inbound", inbound("HELP", to=POOL, mg=None))
    assert "<Message>" in r.text and "Globex Inc" in r.text and "STOP" in r.text
    # a number we never texted, two brands in the database: generic but not empty
    r = post(
        client,
        "/twilio/inbound",
        inbound("HELP", sid="SM" + "8" * 32, frm="+14155559999", to=POOL, mg=None),
    )
    assert "<Message>" in r.text and "help" in r.text.lower() and "STOP" in r.text


def test_help_names_the_only_brand(client, any_db):
    with any_db.session() as s:
        s.add(Brand(name="Solo Dental"))
    r = post(client, "/twilio/inbound", inbound("HELP", to=POOL, mg=None))
    assert "Solo Dental" in r.text and "STOP" in r.text


def test_start_to_an_unrouted_number_still_grants_nothing(client, world, globex):
    """Consent is never created on a guess: START needs a routed campaign (unchanged)."""
    _sent(world, globex, SENT_AT, 1)
    r = post(client, "/twilio/inbound", inbound("START", to=POOL, mg=None))
    assert r.status_code == 200 and "<Message>" not in r.text
    assert _events(world) == []
    with world.db.session() as s:
        assert s.exec(select(Contact).where(Contact.phone == world.contact.phone)).one()
