"""Guard resume semantics (issue 21.4): a resume records who; a resume with an acknowledgement
records why and makes the reputation guard judge only the sends after it (a fresh window), so the
same old figures never pause the run again.  The decisions and acknowledgements are in the run's
report (``run show``, the API's run resource) and a metric."""

from __future__ import annotations

from sqlmodel import select

from dispatcher import guard_check, outbox, run_report, runs
from dispatcher.models import Campaign
from tests.unit.delivery import test_status_paths as paths
from tests.unit.delivery.test_pipeline import World

world = paths.world  # the fixture: fakes for every port, SQLite for the outbox
_callback = paths._callback


def _guard_from(w: World, **overrides: object) -> None:
    with w.h.db.session() as s:
        c = s.exec(select(Campaign).where(Campaign.sid == w.h.campaign_sid)).one()
        c.guard = overrides


def _judge(w: World, run_id: int) -> bool:
    """One guard evaluation (what the next callback with an error code triggers)."""
    with w.h.db.session() as s:
        v = guard_check.check_run(s, run_id, w.h.clock.now(), halts=w.halts, metrics=w.metrics)
    return bool(v and v.pause)


def _resume(w: World, run_id: int, **kw: object) -> None:
    with w.h.db.session() as s:
        runs.resume_run(s, run_id, w.h.clock.now(), **kw)  # type: ignore[arg-type]


def test_an_acknowledged_resume_is_judged_on_the_sends_after_it(world: World) -> None:
    w = world
    _guard_from(w, min_sends=2)
    w.h.contacts(4)
    run_id = w.h.launch()
    ids = [r.id for r in w.h.rows(run_id)]
    assert w.p.deliver_many(ids[:2]) == {i: "sent" for i in ids[:2]}
    _callback(w, ids[0], "undelivered", 30007)  # 1 filtered of 2 sends: 50 % >= 2 %
    assert w.h.run(run_id).state == runs.PAUSED
    assert w.metrics.named("guard_event") == [(w.h.campaign_sid, "pause")]

    # a plain resume is recorded, but the guard judges the same figures and pauses again
    w.h.clock.advance(60)
    _resume(w, run_id, actor="operator:ann")
    assert _judge(w, run_id) and w.h.run(run_id).state == runs.PAUSED

    # an acknowledged resume: a fresh window; the old figures no longer count
    w.h.clock.advance(60)
    acked_at = w.h.clock.now()
    _resume(w, run_id, actor="operator:ann", acknowledge="list cleaned, filtering understood")
    assert not _judge(w, run_id) and w.h.run(run_id).state == runs.RUNNING

    # ...and the sends after it are judged on their own: one filtered of two pauses again
    w.h.clock.advance(60)
    assert w.p.deliver_many(ids[2:]) == {i: "sent" for i in ids[2:]}
    assert not _judge(w, run_id)  # two clean sends so far
    _callback(w, ids[2], "undelivered", 30007)
    assert w.h.run(run_id).state == runs.PAUSED

    with w.h.db.session() as s:
        doc = run_report.progress(s, run_id, w.h.clock.now(), schedule=False)["guard"]
    assert doc["since"] == acked_at
    assert [(e["kind"], e["actor"]) for e in doc["events"]] == [
        ("pause", "reputation-guard"),
        ("acknowledge", "operator:ann"),
        ("pause", "reputation-guard"),
        ("resume", "operator:ann"),
        ("pause", "reputation-guard"),
    ]
    last, ack = doc["events"][0], doc["events"][1]
    assert ack["reason"] == "list cleaned, filtering understood"
    assert (last["figures"]["sends"], last["figures"]["filtered"]) == (2, 1)
    assert last["figures"]["since"] == acked_at.isoformat()
    assert w.h.row(ids[0]).state == outbox.UNDELIVERED


def test_an_acknowledgement_needs_a_reason(world: World) -> None:
    import pytest

    from dispatcher.errors import InputError

    w = world
    w.h.contacts(1)
    run_id = w.h.launch()
    with w.h.db.session() as s:
        runs.pause_run(s, run_id, "operator", w.h.clock.now(), halts=w.halts)
    with pytest.raises(InputError):
        _resume(w, run_id, acknowledge="   ")
    assert w.h.run(run_id).state == runs.PAUSED
