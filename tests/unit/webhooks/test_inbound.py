"""Inbound STOP / START / HELP / other, replays and the in-flight guarantee."""

from __future__ import annotations

import logging
import threading

from sqlalchemy import update
from sqlmodel import select

from dispatcher import ledger
from dispatcher.models import ConsentEvent, Contact, InboundMessage, OutboxMessage
from dispatcher.webhooks import WebhookOptions
from tests.procs import wait_for
from tests.unit.webhooks.conftest import (
    MG,
    PHONE,
    SENDER,
    inbound,
    make_client,
    post,
)

SID2 = "SM" + "2" * 32
SID3 = "SM" + "3" * 32


def _events(db, action=None):
    with db.session() as s:
        q = select(ConsentEvent).order_by(ConsentEvent.id)
        if action:
            q = q.where(ConsentEvent.action == action)
        return list(s.exec(q))


def _row(db, row):
    with db.session() as s:
        return s.get(OutboxMessage, row.id)


def _status(db, contact_id, brand, campaign):
    with db.session() as s:
        return ledger.status(s, contact_id, brand_id=brand.id, campaign_id=campaign.id)


def test_stop_suppresses_pending_rows_of_the_brand_and_records_evidence(client, world, metrics):
    mine = world.add_row("queued")
    sibling = world.add_row("queued", campaign=world.sibling)
    others = world.add_row("queued", campaign=world.other_campaign)
    sent = world.add_row("sent", sid="SM" + "a" * 32)
    r = post(client, "/twilio/inbound", inbound("Stop"))
    assert r.status_code == 200
    assert "<Message>Acme: you are unsubscribed" in r.text
    assert _row(world.db, mine).state == "suppressed"
    assert _row(world.db, mine).suppress_reason == "opted_out"
    assert _row(world.db, sibling).state == "suppressed"  # same brand, other campaign
    assert _row(world.db, others).state == "queued"  # another brand: not in scope
    assert _row(world.db, sent).state == "sent"
    # the suppressions are counted, per campaign, as the database holds them (issue 20)
    sup = sorted(c[1:] for c in metrics.calls if c[0] == "suppressed")
    assert sup == sorted(
        [(world.campaign.sid, "opted_out", 1), (world.sibling.sid, "opted_out", 1)]
    )
    [ev] = _events(world.db)
    assert (ev.action, ev.source, ev.brand_id, ev.campaign_id) == (
        "revoke",
        "keyword",
        world.brand.id,
        None,
    )
    assert ev.evidence_text == "Stop" and ev.evidence_ref == "SM" + "1" * 32
    assert _status(world.db, world.contact.id, world.brand, world.sibling).opted_out
    assert not _status(
        world.db, world.contact.id, world.other_brand, world.other_campaign
    ).opted_out
    assert ("opt_out", world.campaign.sid, "keyword") in metrics.calls


def test_replayed_stop_changes_nothing_and_gets_the_same_reply(client, world):
    first = post(client, "/twilio/inbound", inbound("STOP"))
    late = world.add_row("queued")
    again = post(client, "/twilio/inbound", inbound("STOP"))
    assert again.status_code == 200 and again.text == first.text
    assert len(_events(world.db)) == 1
    assert _row(world.db, late).state == "queued"  # the replay did nothing at all
    with world.db.session() as s:
        assert len(list(s.exec(select(InboundMessage)))) == 1


def test_second_stop_gets_no_second_confirmation(client, world):
    assert "<Message>" in post(client, "/twilio/inbound", inbound("STOP")).text
    r = post(client, "/twilio/inbound", inbound("unsubscribe", sid=SID2))
    assert r.status_code == 200 and "<Message>" not in r.text
    assert [e.action for e in _events(world.db)] == ["revoke", "revoke"]  # both requests logged
    with world.db.session() as s:
        row = s.exec(select(InboundMessage).where(InboundMessage.message_sid == SID2)).one()
    assert row.classification == "STOP_REPEAT"


def test_advanced_opt_out_stays_silent_but_still_revokes(sqlite_db, clock, world):
    client = make_client(sqlite_db, clock, advanced_opt_out=True)
    row = world.add_row("queued")
    r = post(client, "/twilio/inbound", inbound("STOP"))
    assert r.status_code == 200 and "<Message>" not in r.text
    assert _row(world.db, row).state == "suppressed"
    assert _events(world.db)[0].action == "revoke"


def test_opt_out_type_means_twilio_answered(client, world):
    r = post(client, "/twilio/inbound", inbound("ARRET", OptOutType="STOP"))
    assert "<Message>" not in r.text
    assert _events(world.db)[0].action == "revoke"


def test_natural_language_revocation(client, world, metrics):
    row = world.add_row("queued")
    r = post(client, "/twilio/inbound", inbound("please stop texting me"))
    assert "<Message>Acme: you are unsubscribed" in r.text
    [ev] = _events(world.db)
    assert ev.source == "natural_language" and ev.action == "revoke"
    assert _row(world.db, row).state == "suppressed"
    assert ("opt_out", world.campaign.sid, "natural_language") in metrics.calls


def test_start_after_stop_regrants(client, world, metrics):
    post(client, "/twilio/inbound", inbound("STOP"))
    assert _status(world.db, world.contact.id, world.brand, world.campaign).opted_out
    r = post(client, "/twilio/inbound", inbound("start", sid=SID2))
    assert "<Message>Acme: you are subscribed" in r.text
    grant = _events(world.db, "grant")[0]
    assert (grant.source, grant.campaign_id, grant.evidence_text, grant.evidence_ref) == (
        "keyword",
        world.campaign.id,
        "start",
        SID2,
    )
    assert _status(world.db, world.contact.id, world.brand, world.campaign).granted
    # the START went to this campaign's service: the sibling campaign stays opted out
    assert _status(world.db, world.contact.id, world.brand, world.sibling).opted_out
    assert ("opt_in", world.campaign.sid) in metrics.calls
    # a new STOP after the START is a new revocation: confirmed again
    assert "<Message>" in post(client, "/twilio/inbound", inbound("STOP", sid=SID3)).text


def test_help_reply_content(client, world, metrics):
    r = post(client, "/twilio/inbound", inbound("help"))
    assert "acme.example/help" in r.text and "STOP" in r.text
    assert ("help_request", world.campaign.sid) in metrics.calls
    assert _events(world.db) == []


def test_help_default_names_the_brand(client, world):
    r = post(client, "/twilio/inbound", inbound("INFO", to=world.sibling.sender, mg=None))
    assert "Acme Corporation" in r.text and "STOP" in r.text and "help" in r.text.lower()


def test_other_text_is_logged_only(client, world):
    r = post(client, "/twilio/inbound", inbound("What time is my appointment?"))
    assert r.status_code == 200 and "<Message>" not in r.text
    with world.db.session() as s:
        [row] = s.exec(select(InboundMessage)).all()
    assert row.classification == "OTHER" and row.contact_id == world.contact.id
    assert _events(world.db) == []


def test_stop_from_unknown_number_creates_the_contact_and_revokes(client, world):
    r = post(client, "/twilio/inbound", inbound("STOP", frm="(415) 555-9999"))
    assert "<Message>" in r.text
    with world.db.session() as s:
        c = s.exec(select(Contact).where(Contact.phone == "+14155559999")).one()
    assert _status(world.db, c.id, world.brand, world.campaign).opted_out


def test_stop_to_a_number_no_campaign_uses_falls_back_to_brands_that_texted(client, world):
    world.add_row("sent", campaign=world.other_campaign, sid="SM" + "b" * 32)
    pending = world.add_row("queued", campaign=world.other_campaign)
    r = post(client, "/twilio/inbound", inbound("STOP", to="+14155550199", mg=None))
    assert r.status_code == 200
    [ev] = _events(world.db)
    assert ev.brand_id == world.other_brand.id
    assert _row(world.db, pending).state == "suppressed"


def test_sibling_number_routes_to_its_campaign(client, world):
    r = post(client, "/twilio/inbound", inbound("STOP", to=world.sibling.sender, mg=None))
    assert "unsubscribed" in r.text  # default reply (the sibling has no opt-out message)
    assert "Acme Corporation" in r.text


def test_stop_waits_until_the_in_flight_row_leaves_sending(client, world):
    row = world.add_row("sending")
    done = threading.Event()
    box = {}

    def call():
        box["r"] = post(client, "/twilio/inbound", inbound("STOP"))
        done.set()

    t = threading.Thread(target=call)
    t.start()
    try:
        wait_for(lambda: _events(world.db))  # the revoke is committed ...
        assert not done.is_set()  # ... but the reply waits for the message being handed over
    finally:
        with world.db.session() as s:
            s.connection().execute(
                update(OutboxMessage.__table__)
                .where(OutboxMessage.__table__.c.id == row.id)
                .values(state="sent")
            )
        t.join(10)
    assert done.is_set() and box["r"].status_code == 200
    assert "<Message>" in box["r"].text


def test_in_flight_wait_is_bounded(sqlite_db, clock, world, caplog):
    client = make_client(
        sqlite_db, clock, options=WebhookOptions(in_flight_timeout_s=0.2, in_flight_poll_s=0.02)
    )
    world.add_row("sending")
    with caplog.at_level(logging.WARNING, logger="dispatcher.webhooks"):
        r = post(client, "/twilio/inbound", inbound("STOP"))
    assert r.status_code == 200
    assert "still being handed to the carrier" in caplog.text
    assert PHONE not in caplog.text


def test_from_that_is_not_a_us_number_is_logged(client, world):
    r = post(client, "/twilio/inbound", inbound("STOP", frm="+442071838750"))
    assert r.status_code == 200 and "<Message>" not in r.text
    assert _events(world.db) == []


def test_service_routing_unaffected_by_to(client, world):
    r = post(client, "/twilio/inbound", inbound("HELP", to=SENDER, mg=MG))
    assert "acme.example/help" in r.text
