"""The pipeline harness's database is the Runtime's: its STOPs, pauses and cancels reach Redis
(dispatcher/halts.py) as the worker's pre-send check will expect."""

from __future__ import annotations

from dispatcher import runs


def test_harness_stop_pause_and_cancel_signal_halts(harness):
    halts, redis = harness.rt.halts, harness.rt.redis
    stopper = harness.contact()
    harness.contact()
    run_id = harness.launch()
    epoch = halts.epoch()
    assert halts.clear(epoch, contact_id=stopper, run_id=run_id, campaign_id=harness.campaign_id)

    harness.stop(stopper)
    assert redis.exists(halts.contact_key(stopper))
    with harness.db.session() as s:
        runs.pause_run(s, run_id, "operator", harness.clock.now(), halts=harness.rt.halts)
    assert redis.exists(halts.run_key(run_id))
    with harness.db.session() as s:
        runs.pause_campaign_runs(
            s,
            harness.campaign_id,
            "campaign SUSPENDED",
            harness.clock.now(),
            halts=harness.rt.halts,
        )
    assert redis.exists(halts.campaign_key(harness.campaign_id))

    other = harness.launch()
    with harness.db.session() as s:
        runs.cancel_run(s, other, harness.clock.now(), halts=harness.rt.halts)
    assert not halts.clear(epoch, contact_id=0, run_id=other, campaign_id=0)
