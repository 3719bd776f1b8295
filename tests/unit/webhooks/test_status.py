"""Status callbacks: monotonic, idempotent, error-code reactions, reputation guard."""

from __future__ import annotations

import pytest
from sqlmodel import select

from dispatcher import ledger
from dispatcher.models import Campaign, ConsentEvent, Contact, OutboxMessage, Run
from dispatcher.webhooks import WebhookOptions
from tests.unit.webhooks.conftest import build_world, make_client, post, status

SID = "SM" + "c" * 32


def _get(db, model, pk):
    with db.session() as s:
        return s.get(model, pk)


def test_out_of_order_and_duplicated_callbacks(client, world, metrics):
    row = world.add_row("sent", sid=SID)
    for st in ("delivered", "sent", "sending", "delivered", "sent"):
        assert post(client, "/twilio/status", status(SID, st)).status_code == 200
    got = _get(world.db, OutboxMessage, row.id)
    assert got.state == "delivered" and got.provider_status == "delivered"
    assert [c for c in metrics.calls if c[0] == "delivered"] == [
        ("delivered", world.campaign.sid, world.campaign.messaging_service_sid)
    ]


def test_unknown_sid_is_ignored(client, world):
    r = post(client, "/twilio/status", status("SM" + "9" * 32, "delivered"))
    assert r.status_code == 200


def test_unknown_status_value_is_ignored(client, world):
    row = world.add_row("sent", sid=SID)
    assert post(client, "/twilio/status", status(SID, "teleported")).status_code == 200
    assert _get(world.db, OutboxMessage, row.id).state == "sent"


@pytest.mark.parametrize("code", ["abc", "-1", "1e5", "99999999999"])
def test_bad_error_code_is_400(client, world, code):
    p = {**status(SID, "failed"), "ErrorCode": code}
    r = post(client, "/twilio/status", p)
    assert r.status_code == 400 and "ErrorCode" in r.json()["error"]


def test_21610_records_a_carrier_opt_out_once(client, world, metrics):
    sent = world.add_row("sent", sid=SID)
    pending = world.add_row("queued", campaign=world.sibling)
    for _ in range(2):
        post(client, "/twilio/status", status(SID, "failed", 21610))
    with world.db.session() as s:
        [ev] = s.exec(select(ConsentEvent)).all()
        st = ledger.status(s, world.contact.id, brand_id=world.brand.id, campaign_id=None)
    assert (ev.action, ev.source, ev.evidence_ref, ev.campaign_id) == (
        "revoke",
        "carrier",
        SID,
        None,
    )
    assert st.opted_out
    assert _get(world.db, OutboxMessage, sent.id).state == "failed"
    assert _get(world.db, OutboxMessage, pending.id).state == "suppressed"
    assert ("opt_out", world.campaign.sid, "carrier") in metrics.calls
    # the pending row the revocation suppressed is counted once (issue 20)
    assert [c for c in metrics.calls if c[0] == "suppressed"] == [
        ("suppressed", world.sibling.sid, "opted_out", 1)
    ]
    assert (
        "failed",
        world.campaign.sid,
        world.campaign.messaging_service_sid,
        21610,
    ) in metrics.calls


def test_21610_on_several_rows_of_a_brand_is_one_opt_out_of_that_brand_only(client, world):
    """The consent service's rules: one ledger entry per carrier block (not per message), and
    the revocation covers the brand whose campaign met it, no other."""
    a = world.add_row("sent", sid=SID)
    b = world.add_row("sent", campaign=world.sibling, sid="SM" + "7" * 32)
    elsewhere = world.add_row("queued", campaign=world.other_campaign)
    post(client, "/twilio/status", status(SID, "failed", 21610))
    post(client, "/twilio/status", status("SM" + "7" * 32, "failed", 21610))
    with world.db.session() as s:
        events = s.exec(select(ConsentEvent)).all()
    assert [(e.action, e.brand_id, e.evidence_ref) for e in events] == [
        ("revoke", world.brand.id, SID)
    ]
    assert [_get(world.db, OutboxMessage, r.id).state for r in (a, b)] == ["failed", "failed"]
    assert _get(world.db, OutboxMessage, elsewhere.id).state == "queued"


def test_30034_pauses_every_run_of_the_campaign(client, world):
    row = world.add_row("sent", sid=SID)
    other_run = world.new_run()
    sibling_run = world.new_run(world.sibling)
    post(client, "/twilio/status", status(SID, "undelivered", 30034))
    for run_id in (row.run_id, other_run.id):
        run = _get(world.db, Run, run_id)
        assert run.state == "paused" and "30034" in run.pause_reason
    assert _get(world.db, Run, sibling_run.id).state == "running"


def test_suspended_campaign_pauses_runs(client, world):
    with world.db.session() as s:
        c = s.get(Campaign, world.campaign.id)
        c.campaign_status = "SUSPENDED"
        s.add(c)
    row = world.add_row("sent", sid=SID)
    post(client, "/twilio/status", status(SID, "delivered"))
    run = _get(world.db, Run, row.run_id)
    assert run.state == "paused" and "SUSPENDED" in run.pause_reason


def _bulk(world, n):
    run = world.new_run()
    sids = []
    with world.db.session() as s:
        for i in range(n):
            c = Contact(phone=f"+1415556{i:04d}")
            s.add(c)
            s.flush()
            sid = "SM" + f"{i:032x}"
            s.add(
                OutboxMessage(
                    run_id=run.id,
                    campaign_id=world.campaign.id,
                    contact_id=c.id,
                    to_phone=c.phone,
                    state="sent",
                    provider_sid=sid,
                )
            )
            sids.append(sid)
    return run, sids


@pytest.mark.parametrize("filtered_every,paused", [(10, True), (100, False)])
def test_guard_pauses_a_run_at_10_percent_30007(any_db, clock, filtered_every, paused):
    world = build_world(any_db)
    client = make_client(any_db, clock, options=WebhookOptions(guard_min_interval_s=5))
    run, sids = _bulk(world, 100)
    for i, sid in enumerate(sids):
        if i % filtered_every == filtered_every - 1:
            post(client, "/twilio/status", status(sid, "undelivered", 30007))
        else:
            post(client, "/twilio/status", status(sid, "delivered"))
        clock.advance(1)
    got = _get(any_db, Run, run.id)
    if paused:
        assert got.state == "paused"
        assert got.pause_reason.startswith("reputation guard: 30007 filtering")
        assert "over 100 sends" in got.pause_reason
    else:
        assert got.state == "running" and got.pause_reason is None


def test_guard_rate_limit_uses_the_clock(sqlite_db, clock):
    world = build_world(sqlite_db)
    client = make_client(sqlite_db, clock, options=WebhookOptions(guard_min_interval_s=5))
    run, sids = _bulk(world, 60)
    for sid in sids[:10]:  # 10 filtered in the same clock second: only the first is judged
        post(client, "/twilio/status", status(sid, "undelivered", 30007))
    assert _get(sqlite_db, Run, run.id).state == "running"
    clock.advance(5)
    post(client, "/twilio/status", status(sids[10], "undelivered", 30007))
    assert _get(sqlite_db, Run, run.id).state == "paused"


def test_guard_pauses_on_opt_out_rate_after_stops(sqlite_db, clock):
    from tests.unit.webhooks.conftest import inbound

    world = build_world(sqlite_db)
    client = make_client(sqlite_db, clock, options=WebhookOptions(guard_min_interval_s=0))
    run, sids = _bulk(world, 50)
    with sqlite_db.session() as s:
        phones = [c.phone for c in s.exec(select(Contact).where(Contact.phone.like("+1415556%")))]
    for i, phone in enumerate(phones[:5]):
        post(client, "/twilio/inbound", inbound("STOP", frm=phone, sid="SM" + f"{i:032x}"))
    got = _get(sqlite_db, Run, run.id)
    assert got.state == "paused" and "opt-out rate 10.0%" in got.pause_reason


def test_campaign_guard_override_applies(sqlite_db, clock):
    world = build_world(sqlite_db)
    with sqlite_db.session() as s:
        c = s.get(Campaign, world.campaign.id)
        c.guard = {"filtering_rate": 50}
        s.add(c)
    client = make_client(sqlite_db, clock, options=WebhookOptions(guard_min_interval_s=0))
    run, sids = _bulk(world, 50)
    for sid in sids[:10]:
        post(client, "/twilio/status", status(sid, "undelivered", 30007))
    got = _get(sqlite_db, Run, run.id)
    assert got.state == "paused" and "delivery failures 10.0%" in got.pause_reason
    assert "30007" not in got.pause_reason


INTERMEDIATE = ("queued", "accepted", "scheduled", "sending", "sent")


def test_the_statuses_that_change_nothing_are_the_intermediate_ones_without_a_code():
    from dispatcher import outbox
    from dispatcher.provider_status import moves_nothing

    assert {st for st in outbox.PROVIDER_STATE if moves_nothing(st, None)} == set(INTERMEDIATE)
    assert not any(moves_nothing(st, 30007) for st in outbox.PROVIDER_STATE)
    assert not moves_nothing("teleported", None)  # an unknown value keeps the full path


@pytest.mark.parametrize("start", ["sent", "delivered", "undelivered", "failed"])
def test_an_intermediate_status_moves_no_row_that_has_its_sid(any_db, clock, start):
    """What ``moves_nothing`` claims, against the database's own compare-and-set: from every
    state a row with a SID can be in, the full path moves nothing for an intermediate status
    (and does move a ``sent`` row for a final one: the check is not vacuous)."""
    from dispatcher import outbox

    world = build_world(any_db)
    row = world.add_row(start, sid=SID)
    with any_db.session() as s:
        for st in INTERMEDIATE:
            assert outbox.apply_provider_status(s, SID, st, None, clock.now()) is None, st
        moved = outbox.apply_provider_status(s, SID, "delivered", None, clock.now())
    assert (moved is not None) == (start == "sent")
    assert _get(any_db, OutboxMessage, row.id).state == ("delivered" if start == "sent" else start)


def test_an_intermediate_callback_is_acknowledged_without_a_transaction(
    client, world, metrics, monkeypatch
):
    """Signed and checked, answered 200, never handed to the group commit nor kept for later;
    a bad signature is still refused, and an intermediate status WITH an error code still goes
    the one ``apply_status`` way."""
    ctx = client.app.state.webhooks
    row = world.add_row("sent", sid=SID)
    submitted: list[object] = []
    submit = ctx.status_commit.submit

    async def counting(update: object) -> object:
        submitted.append(update)
        return await submit(update)

    monkeypatch.setattr(ctx.status_commit, "submit", counting)
    for st in INTERMEDIATE:
        assert post(client, "/twilio/status", status(SID, st)).status_code == 200
        assert post(client, "/twilio/status", status("SM" + "e" * 32, st)).status_code == 200
    assert submitted == [] and ctx.early.pending() == 0
    assert post(client, "/twilio/status", status(SID, "sent"), signature="bad").status_code == 403
    assert post(client, "/twilio/status", status(SID, "sent", 30007)).status_code == 200
    assert [(u.status, u.error_code) for u in submitted] == [("sent", 30007)]
    assert post(client, "/twilio/status", status(SID, "delivered")).status_code == 200
    got = _get(world.db, OutboxMessage, row.id)
    assert (got.state, got.provider_status) == ("delivered", "delivered")
    assert [c[0] for c in metrics.calls] == ["delivered"]
