"""One function applies a provider status with its error code, whatever brought it (issue 21.1):
a status callback, a fetch of a ``sent`` row that heard nothing (``refresh``) and a message found
by listing for an ``unknown`` row (``resolve``).  Each reaction is checked through each path:
21610 opts the recipient out, 30034 pauses the campaign's runs, 30007 is recorded on the row and
the reputation guard judges the run with it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from sqlmodel import select

from dispatcher import guard_check, ledger, outbox, provider_status, runs
from dispatcher.delivery.fakes import FakeGateway, MemoryHalts, MemoryThrottle, RecordingMetrics
from dispatcher.delivery.results import Outcome
from dispatcher.errors import AmbiguousSendError, GatewayError
from dispatcher.models import Campaign
from tests.unit.delivery.test_pipeline import World
from tests.unit.pipeline.conftest import make_harness


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


def _callback(w: World, row_id: int, status: str, code: int) -> None:
    """What POST /twilio/status does with a callback (webhooks/status.py)."""
    sid = w.h.row(row_id).provider_sid
    with w.h.db.session() as s:
        res = provider_status.apply_status(
            s, sid=sid, status=status, error_code=code, now=w.h.clock.now(), halts=w.halts
        )
    limiter = guard_check.GuardLimiter(w.h.clock)
    run_ids = provider_status.react(w.metrics, res)
    guard_check.check_runs(w.h.db, run_ids, w.h.clock, limiter, halts=w.halts, metrics=w.metrics)


def _fetch(w: World, row_id: int, status: str, code: int) -> None:
    """The carrier moved on; the row heard nothing and the reconciler asks (``refresh``)."""
    w.gateway.settle(w.h.row(row_id).provider_sid, status, code)
    assert w.p.refresh(row_id).outcome is Outcome.REFRESHED


def _listing(w: World, row_id: int, status: str, code: int) -> None:
    """The row's send was ambiguous and the lookup failed (``unknown``); the carrier moved on;
    the reconciler lists the recipient's messages (``resolve``)."""
    (msg,) = [m for m in w.gateway.messages if m.to == w.h.row(row_id).to_phone]
    w.gateway.settle(msg.sid, status, code)
    w.gateway.lookups = None
    assert w.p.resolve(row_id).outcome is Outcome.RESOLVED


PATHS: dict[str, Callable[[World, int, str, int], None]] = {
    "callback": _callback,
    "fetch": _fetch,
    "list": _listing,
}


def _first_sent(w: World, path: str) -> tuple[int, int, int]:
    """A run of two rows with the first handed to the carrier (``sent``, or ``unknown`` for the
    listing path); returns (run id, first row, second row, still queued)."""
    w.h.contacts(2)
    run_id = w.h.launch()
    first, second = (r.id for r in w.h.rows(run_id))
    if path == "list":
        w.gateway.fail_next(AmbiguousSendError("read timeout"), reached=True)
        w.gateway.lookups = GatewayError("lookup down")
        assert w.p.deliver(first).outcome is Outcome.UNKNOWN
        assert w.state(first) == outbox.UNKNOWN
    else:
        assert w.p.deliver(first) == "sent"
    return run_id, first, second


@pytest.mark.parametrize("path", PATHS)
def test_21610_opts_the_recipient_out(world: World, path: str) -> None:
    run_id, first, _ = _first_sent(world, path)
    contact_id = world.h.row(first).contact_id
    PATHS[path](world, first, "undelivered", 21610)
    row = world.h.row(first)
    assert (row.state, row.error_code) == (outbox.UNDELIVERED, 21610)
    with world.h.db.session() as s:
        got = ledger.statuses(
            s, [contact_id], brand_id=world.h.brand_id, campaign_id=world.h.campaign_id
        )
    st = got[contact_id]
    assert st.opted_out
    assert contact_id in world.halts.signalled()["contacts"]
    assert ("opt_out", (world.h.campaign_sid, "carrier"), {}) in world.metrics.calls


@pytest.mark.parametrize("path", PATHS)
def test_30034_pauses_the_campaigns_runs(world: World, path: str) -> None:
    run_id, first, _ = _first_sent(world, path)
    PATHS[path](world, first, "undelivered", 30034)
    assert world.h.row(first).error_code == 30034
    run = world.h.run(run_id)
    assert run.state == runs.PAUSED and "30034" in (run.pause_reason or "")
    assert world.h.campaign_id in world.halts.signalled()["campaigns"]


@pytest.mark.parametrize("path", PATHS)
def test_30007_is_the_guards_input_and_it_judges_the_run(world: World, path: str) -> None:
    with world.h.db.session() as s:
        c = s.exec(select(Campaign).where(Campaign.sid == world.h.campaign_sid)).one()
        c.guard = {"min_sends": 1}  # one filtered message out of one: over 2 %
    run_id, first, _ = _first_sent(world, path)
    PATHS[path](world, first, "undelivered", 30007)
    assert world.h.row(first).error_code == 30007
    assert world.metrics.named("undelivered") == [
        (world.h.campaign_sid, world.h.row(first).provider_sid and _sender(world), 30007)
    ]
    run = world.h.run(run_id)
    assert run.state == runs.PAUSED
    assert (run.pause_reason or "").startswith("reputation guard: 30007 filtering")


def _sender(w: World) -> str:
    with w.h.db.session() as s:
        c = s.exec(select(Campaign).where(Campaign.sid == w.h.campaign_sid)).one()
        return c.messaging_service_sid or c.sender or ""


@pytest.mark.parametrize("path", ["fetch", "list"])
def test_a_delivered_status_found_by_the_core_counts_as_a_callbacks_would(
    world: World, path: str
) -> None:
    _, first, _ = _first_sent(world, path)
    code = 0  # no error code
    PATHS[path](world, first, "delivered", code)
    row = world.h.row(first)
    assert (row.state, row.error_code) == (outbox.DELIVERED, None)
    assert world.metrics.named("delivered") == [(world.h.campaign_sid, _sender(world))]
