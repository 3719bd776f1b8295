"""The path of one message with every port faked in memory (SQLite for the outbox): each step's
guarantee, asserted on the fakes' records rather than on a carrier or Redis."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlmodel import select

from dispatcher import consent, outbox, registry, runs
from dispatcher.delivery.fakes import FakeGateway, MemoryHalts, MemoryThrottle, RecordingMetrics
from dispatcher.delivery.pipeline import Pipeline
from dispatcher.delivery.results import Outcome
from dispatcher.errors import AmbiguousSendError, RejectedSendError, RetryableSendError
from dispatcher.models import Campaign, ConsentEvent, OutboxMessage, Run
from tests.unit.pipeline.conftest import Harness, make_harness


@dataclass
class World:
    h: Harness
    p: Pipeline
    gateway: FakeGateway
    throttle: MemoryThrottle
    halts: MemoryHalts
    metrics: RecordingMetrics

    def launch(self, n: int) -> list[int]:
        self.h.contacts(n)
        return [r.id for r in self.h.rows(self.h.launch())]

    def state(self, row_id: int) -> str:
        return self.h.row(row_id).state

    def stop(self, contact_id: int) -> None:
        """A STOP: the revoke signals the (fake) halt keys, queued rows are suppressed."""
        with self.h.db.session() as s:
            consent.revoke_and_suppress(
                s,
                contact_id,
                consent.Scope(self.h.brand_id),
                "keyword",
                consent.Evidence(text="STOP"),
                actor="test",
                halts=self.halts,
                now=self.h.clock.now(),
            )

    def pause(self, run_id: int) -> None:
        with self.h.db.session() as s:
            runs.pause_run(s, run_id, "operator", self.h.clock.now(), halts=self.halts)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with make_harness(tmp_path) as h:
        clock = h.clock
        gw, th, halts, m = (
            FakeGateway(clock),
            MemoryThrottle(clock),
            MemoryHalts(clock),
            RecordingMetrics(),
        )
        p = replace(h.pipeline(), gateway=gw, throttle=th, halt_keys=halts, halts=halts, metrics=m)
        yield World(h, p, gw, th, halts, m)


def test_a_batch_sends_each_row_once_and_records_the_sends_together(world: World) -> None:
    ids = world.launch(3)
    assert world.p.deliver_many(ids) == {i: "sent" for i in ids}
    assert [world.state(i) for i in ids] == [outbox.SENT] * 3
    assert sorted(m.to for m in world.gateway.messages) == sorted(
        world.h.row(i).to_phone for i in ids
    )
    assert [world.h.row(i).provider_sid for i in ids] == [m.sid for m in world.gateway.messages]
    assert len(world.metrics.named("sent")) == 3 and len(world.metrics.named("daily_batch")) == 1
    # a redelivery of the same ids finds them handed over and sends nothing
    assert world.p.deliver_many(ids) == {i: "skip:sent" for i in ids}
    assert len(world.gateway.messages) == 3


@pytest.mark.parametrize("reached", [True, False])
def test_an_ambiguous_send_is_asked_of_the_carrier_never_resent_blindly(
    world: World, reached: bool
) -> None:
    (row_id,) = world.launch(1)
    world.gateway.fail_next(AmbiguousSendError("read timeout"), reached=reached)
    out = world.p.deliver(row_id)
    assert out.outcome is Outcome.RESOLVED and out.detail == ("sent" if reached else "requeued")
    assert len(world.gateway.messages) == int(reached)
    if not reached:  # never arrived: safe to send again, once
        assert world.p.deliver(row_id) == "sent"
    assert len(world.gateway.messages) == 1 and world.state(row_id) == outbox.SENT


def test_a_refused_request_goes_back_to_the_outbox_with_a_backoff(world: World) -> None:
    (row_id,) = world.launch(1)
    world.gateway.fail_next(RetryableSendError("429", code=20429, status=429))
    assert world.p.deliver(row_id) == "retry"
    row = world.h.row(row_id)
    assert (row.state, row.attempts, row.defer_reason) == (outbox.QUEUED, 1, "retry")
    assert world.gateway.messages == []


def test_a_stop_held_by_the_carrier_is_recorded_and_signalled(world: World) -> None:
    ids = world.launch(2)
    first = world.h.row(ids[0])
    world.gateway.fail_next(RejectedSendError("opted out", code=21610, status=400))
    out = world.p.deliver(ids[0])
    assert (out.outcome, out.detail) == (Outcome.FAILED, "21610")
    assert world.state(ids[0]) == outbox.FAILED
    assert world.metrics.named("opt_out") == [(world.h.campaign_sid, "carrier")]
    # the workers' halt check sees it before their next send of this contact
    assert first.contact_id in world.halts.signalled()["contacts"]


def test_a_stop_held_by_the_carrier_covers_the_brand_only_and_is_recorded_once(
    world: World,
) -> None:
    """Send-time 21610 goes through the consent service: the brand's rows are suppressed, another
    brand's row of the same contact is not (it was every brand before), and a second 21610 of
    the same block appends nothing."""
    ids = world.launch(1)
    contact_id = world.h.row(ids[0]).contact_id
    other = _row_of_another_brand(world.h, contact_id)
    again = world.h.launch()  # a second run of the same campaign: another row of the contact
    second = next(r.id for r in world.h.rows(again) if r.contact_id == contact_id)
    world.gateway.fail_next(RejectedSendError("opted out", code=21610, status=400))
    world.p.deliver(ids[0])
    assert world.state(second) == outbox.SUPPRESSED
    assert world.state(other) == outbox.QUEUED
    world.gateway.fail_next(RejectedSendError("opted out", code=21610, status=400))
    with world.h.db.session() as s:  # the second row meets the carrier's block too
        s.get(OutboxMessage, second).state = outbox.QUEUED  # type: ignore[union-attr]
    world.p.deliver(second)
    with world.h.db.session() as s:
        events = s.exec(select(ConsentEvent)).all()
    assert [(e.action, e.source, e.campaign_id) for e in events if e.action == "revoke"] == [
        ("revoke", "carrier", None)
    ]
    assert world.metrics.named("opt_out") == [(world.h.campaign_sid, "carrier")]


def _row_of_another_brand(h: Harness, contact_id: int) -> int:
    with h.db.session() as s:
        brand = registry.add_brand(s, name="Other Brand")
        campaign = s.get(Campaign, h.campaign_id)
        doc = {**campaign.model_dump(), "sid": "QE" + "f" * 32}  # type: ignore[union-attr]
        for k in ("id", "brand_id"):
            doc.pop(k)
        twin = Campaign(**doc, brand_id=brand.id)
        s.add(twin)
        s.flush()
        run = Run(campaign_id=twin.id, template="Hi", state="running")  # type: ignore[arg-type]
        s.add(run)
        s.flush()
        row = OutboxMessage(
            run_id=run.id,  # type: ignore[arg-type]
            campaign_id=twin.id,  # type: ignore[arg-type]
            contact_id=contact_id,
            to_phone="+12125550001",
        )
        s.add(row)
        s.flush()
        return row.id  # type: ignore[return-value]


def test_a_stop_during_a_batch_stops_that_row_at_its_halt_check(world: World) -> None:
    ids = world.launch(3)
    third = world.h.row(ids[2])
    sends = world.gateway.send

    def send(*a: object, **kw: object) -> object:
        if len(world.gateway.messages) == 1:  # while the second row goes out
            world.stop(third.contact_id)
        return sends(*a, **kw)  # type: ignore[arg-type]

    world.gateway.send = send  # type: ignore[method-assign]
    checked: list[int] = []
    verify = world.p.halt_check.verify
    world.p.halt_check.verify = lambda x, t: checked.append(x.row_id) or verify(x, t)  # type: ignore[method-assign]
    out = world.p.deliver_many(ids)
    assert [out[i] for i in ids] == ["sent", "sent", "suppressed:opted_out"]
    assert checked == [ids[2]]  # only the halted row paid for a database check
    assert third.to_phone not in {m.to for m in world.gateway.messages}


def test_lost_halt_keys_send_every_row_to_the_database_check(world: World) -> None:
    ids = world.launch(3)
    checked: list[int] = []
    verify = world.p.halt_check.verify
    world.p.halt_check.verify = lambda x, t: checked.append(x.row_id) or verify(x, t)  # type: ignore[method-assign]
    sends = world.gateway.send

    def send(*a: object, **kw: object) -> object:
        world.halts.flush()  # Redis restarted without its keys during the first send
        return sends(*a, **kw)  # type: ignore[arg-type]

    world.gateway.send = send  # type: ignore[method-assign]
    assert world.p.deliver_many(ids) == {i: "sent" for i in ids}
    assert checked == ids[1:]


def test_a_pause_committed_mid_batch_stops_the_rest(world: World) -> None:
    ids = world.launch(3)
    run_id = world.h.row(ids[0]).run_id
    sends = world.gateway.send

    def send(*a: object, **kw: object) -> object:
        out = sends(*a, **kw)  # type: ignore[arg-type]
        world.pause(run_id)
        return out

    world.gateway.send = send  # type: ignore[method-assign]
    out = world.p.deliver_many(ids)
    assert [out[i] for i in ids] == ["sent", "run:paused", "run:paused"]
    assert [world.state(i) for i in ids] == [outbox.SENT, outbox.QUEUED, outbox.QUEUED]


def test_a_full_window_books_the_next_slots_and_they_are_sent_there(world: World) -> None:
    world.h.set_campaign(window_limit=1, window_seconds=60)
    ids = world.launch(2)
    out = world.p.deliver_many(ids)
    assert [out[i] for i in ids] == ["sent", "booked"]
    ((row_id, delay, booking),) = world.h.queued
    assert row_id == ids[1] and delay >= 60 and booking is not None
    # the booked row is deferred (defer_reason "throttle"): the deferrals counter says so
    assert world.h.row(row_id).defer_reason == "throttle"
    assert [a[1] for a in world.metrics.named("deferred")] == ["throttle"]
    world.h.clock.advance(delay)
    assert world.p.deliver(row_id, booking) == "sent"
    at = [m.at for m in world.gateway.messages]
    assert (at[1] - at[0]).total_seconds() >= 60


def test_a_pause_that_rolled_back_costs_a_database_check_and_the_rows_still_go(
    world: World,
) -> None:
    """Its key was set before the commit that never came: the rows of the run are checked in
    the database, where nothing stops them."""
    ids = world.launch(2)
    run_id = world.h.row(ids[0]).run_id
    with pytest.raises(RuntimeError), world.h.db.session() as s:
        runs.pause_run(s, run_id, "operator", world.h.clock.now(), halts=world.halts)
        raise RuntimeError("the operator's transaction failed")
    assert world.halts.signalled()["runs"] == {run_id}
    checked: list[int] = []
    verify = world.p.halt_check.verify
    world.p.halt_check.verify = lambda x, t: checked.append(x.row_id) or verify(x, t)  # type: ignore[method-assign]
    assert world.p.deliver_many(ids) == {i: "sent" for i in ids}
    assert checked == ids


def test_a_slot_is_never_booked_inside_the_recipients_quiet_hours(world: World) -> None:
    """20:50 in New York, one message per 30 min: the second row's next slot (21:20) is in its
    quiet hours (21:00-08:00).  It is not booked there: the row waits in the outbox, and at
    its due time the gate defers it to 08:00."""
    world.h.set_campaign(window_limit=1, window_seconds=1800, quiet_hours_policy="strictest")
    world.h.clock.set(datetime(2026, 1, 6, 1, 50, tzinfo=UTC))  # 20:50 EST
    ids = world.launch(2)
    out = world.p.deliver_many(ids)
    assert [out[i] for i in ids] == ["sent", "throttled"]
    assert world.h.queued == []  # no delayed message carries a slot into quiet hours
    row = world.h.row(ids[1])
    assert row.state == outbox.QUEUED and row.defer_reason == "throttle"
    world.h.clock.set(row.due_at.replace(tzinfo=UTC))
    assert world.p.deliver(ids[1]) == "deferred:quiet_hours"
    opens = world.h.row(ids[1]).due_at.replace(tzinfo=UTC)
    assert opens == datetime(2026, 1, 6, 13, 0, tzinfo=UTC)  # 08:00 EST
    assert len(world.gateway.messages) == 1


def test_the_gate_and_the_resolver_share_one_campaign_cache(world: World) -> None:
    """One campaign cache per process (issue 19): a campaign read by the gate is not read again
    by the status resolver within ``campaign_cache_s``."""
    assert world.p.resolver.campaigns is world.p.load._campaigns
