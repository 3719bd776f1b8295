"""The whole path of one message for each gate outcome: send, suppress, defer, pause, fail."""

from __future__ import annotations

from datetime import UTC, datetime

from dispatcher import ledger, outbox, run_report, runs
from dispatcher.clock import as_utc
from tests.procs import wait_for
from tests.unit.pipeline.conftest import BRAND, START


def test_send_reaches_the_carrier_with_brand_and_stop_language_then_delivered(harness):
    cid = harness.contact()
    run_id = harness.launch()
    (row,) = harness.rows(run_id)
    assert row.contact_id == cid

    assert harness.pipeline().deliver(row.id) == "sent"

    (rec,) = harness.records()
    assert rec["to"] == row.to_phone
    assert rec["from"] == "+15005550006"
    assert rec["body"].startswith(f"{BRAND}: Hi Jane, your maintenance contract MC-10001")
    assert "Reply STOP" in rec["body"]
    assert rec["received_at"] == START.timestamp()
    assert 1 <= rec["validity_period"] <= 36000
    sent = harness.row(row.id)
    assert sent.state == outbox.SENT
    assert sent.provider_sid == rec["sid"]
    assert sent.body == rec["body"]
    assert harness.queued == []  # an immediate slot costs no extra queue operation

    harness.sandbox.advance(1.0)  # queued -> sending -> sent -> delivered, with callbacks
    wait_for(lambda: harness.row(row.id).state == outbox.DELIVERED, what="delivered callback")


def _deliver_one(harness, **contact_kw):
    harness.contact(**contact_kw)
    run_id = harness.launch()
    (row,) = harness.rows(run_id)
    return row, harness.pipeline().deliver(row.id)


def test_suppress_without_consent(harness):
    row, outcome = _deliver_one(harness, consent=False)
    assert outcome == "suppressed:no_consent"
    after = harness.row(row.id)
    assert (after.state, after.suppress_reason) == (outbox.SUPPRESSED, "no_consent")
    assert harness.records() == []


def test_suppress_opted_out(harness):
    cid = harness.contact()
    with harness.db.session() as s:  # a STOP in the ledger only: the gate must catch it
        ledger.append(
            s,
            contact_id=cid,
            brand_id=harness.brand_id,
            action="revoke",
            source="keyword",
            actor="test",
            evidence_text="STOP",
            halts=harness.rt.halts,
        )
    run_id = harness.launch()
    (row,) = harness.rows(run_id)
    assert harness.pipeline().deliver(row.id) == "suppressed:opted_out"
    after = harness.row(row.id)
    assert (after.state, after.suppress_reason) == (outbox.SUPPRESSED, "opted_out")
    assert harness.records() == []


def test_suppress_template_variable_missing(harness):
    row, outcome = _deliver_one(harness, attributes={"contract": "MC-1"})  # no [date]
    assert outcome == "suppressed:template_variable_missing"
    after = harness.row(row.id)
    assert (after.state, after.suppress_reason) == (outbox.SUPPRESSED, "template_variable_missing")
    assert harness.records() == []


def test_defer_in_quiet_hours_then_send_when_the_window_opens(harness):
    # Los Angeles number: 07:00 local at START; the window opens at 08:00 local = 16:00 UTC
    harness.contact("+14155550123")
    run_id = harness.launch()
    (row,) = harness.rows(run_id)
    hk = harness.release_loop()
    assert hk.release() == 1

    assert harness.pipeline().deliver(row.id) == "deferred:quiet_hours"
    after = harness.row(row.id)
    opens = datetime(2026, 1, 5, 16, 0, tzinfo=UTC)
    assert after.state == outbox.QUEUED
    assert after.defer_reason == "quiet_hours"
    assert as_utc(after.due_at) == opens
    assert after.enqueued_at is None  # no queue message rides along while it waits
    assert harness.records() == []
    with harness.db.session() as s:
        assert run_report.progress(s, run_id, harness.clock.now())["deferred_by_reason"] == {
            "quiet_hours": 1
        }

    harness.clock.advance(3599)
    assert hk.release() == 0  # not yet due
    harness.clock.advance(1)
    assert hk.release() == 1
    assert harness.pipeline().deliver(row.id) == "sent"
    (rec,) = harness.records()
    assert rec["received_at"] == opens.timestamp()


def test_campaign_not_verified_pauses_the_run_with_a_reason(harness):
    harness.contact()
    harness.contact()
    run_id = harness.launch()
    harness.set_campaign(campaign_status="SUSPENDED")
    first, second = harness.rows(run_id)
    hk = harness.release_loop()
    assert hk.release() == 2

    outcome = harness.pipeline().deliver(first.id)
    assert outcome.startswith("paused:campaign_suspended")
    run = harness.run(run_id)
    assert run.state == runs.PAUSED
    assert "campaign_suspended" in run.pause_reason
    # the row is kept (not suppressed) and no longer carried by a queue message
    assert harness.row(first.id).state == outbox.QUEUED
    assert harness.row(first.id).enqueued_at is None
    assert harness.pipeline().deliver(second.id) == "run:paused"
    assert harness.row(second.id).enqueued_at is None
    assert harness.records() == []
    assert hk.release() == 0


def test_magic_invalid_number_fails_21211(harness):
    row, outcome = _deliver_one(harness, phone="+15005550001", time_zone="America/New_York")
    assert outcome == "failed:21211"
    after = harness.row(row.id)
    assert (after.state, after.error_code) == (outbox.FAILED, 21211)
    assert harness.records() == []  # the carrier refused it: nothing accepted


def test_magic_unsubscribed_number_fails_21610_and_records_a_carrier_revoke(harness):
    cid = harness.contact("+15005550004", time_zone="America/New_York")
    run_id = harness.launch()
    other_run = harness.launch()  # a second, not yet delivered message to the same contact
    (row,) = harness.rows(run_id)
    (other,) = harness.rows(other_run)

    assert harness.pipeline().deliver(row.id) == "failed:21610"
    after = harness.row(row.id)
    assert (after.state, after.error_code) == (outbox.FAILED, 21610)
    with harness.db.session() as s:
        st = ledger.status(s, cid, brand_id=harness.brand_id, campaign_id=harness.campaign_id)
        assert st.opted_out
        events = list(ledger.export_rows(s, phone="+15005550004"))
    assert events[-1]["action"] == "revoke"
    assert events[-1]["source"] == "carrier"
    # every message not yet handed to the carrier is suppressed
    o = harness.row(other.id)
    assert (o.state, o.suppress_reason) == (outbox.SUPPRESSED, "opted_out")
    assert harness.pipeline().deliver(other.id) == "skip:suppressed"
    assert harness.records() == []
