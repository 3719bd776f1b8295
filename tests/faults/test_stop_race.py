"""Fault 5: STOP replies arrive (signed, as Twilio posts them) while the run is sending: no
message to that number is accepted by the carrier after the STOP webhook returned 200."""

from __future__ import annotations

import random
import time

import httpx
import pytest

from dispatcher.sandbox.inbound import post_inbound
from dispatcher.settings import SANDBOX_ACCOUNT_SID, SANDBOX_AUTH_TOKEN
from tests.harness import SENDER, launch, outbox_rows, run_counts, seed, wait_for, wait_run_done

pytestmark = [pytest.mark.integration, pytest.mark.faults]
N = 300
STOPS = 40


@pytest.mark.timeout(240)
def test_no_message_accepted_after_stop_webhook_answered(dist, tmp_path):
    stack, db = dist
    seeded = seed(db, tmp_path, consented=N, window_limit=200, window_seconds=2, mps=40)
    stack.up("--fault-slow", "0.2", "--fault-slow-seconds", "0.3")
    rng = random.Random(5)
    # STOP numbers spread over the whole audience
    stoppers = rng.sample(seeded.consented, STOPS)
    run_id = launch(db, seeded)
    wait_for(
        lambda: (
            run_counts(db, run_id)[1].get("delivered", 0) + run_counts(db, run_id)[1].get("sent", 0)
            > 20
        ),
        60,
        "the run to start sending",
    )
    answered: dict[str, float] = {}
    url = stack.webhook_url + "/twilio/inbound"
    with httpx.Client(timeout=30) as client:
        for p in stoppers:
            r = post_inbound(
                url,
                account_sid=SANDBOX_ACCOUNT_SID,
                auth_token=SANDBOX_AUTH_TOKEN,
                from_=p,
                to=SENDER,
                body="STOP",
                client=client,
            )
            assert r.status_code == 200, r.text
            answered[p] = time.time()  # same clock as the carrier's received_at
    wait_run_done(db, run_id, 200, stack)
    records = stack.carrier.records()
    late = [
        (m["to"], m["received_at"] - answered[m["to"]])
        for m in records
        if m["to"] in answered and m["received_at"] > answered[m["to"]]
    ]
    got_before = sum(1 for m in records if m["to"] in answered)
    rows = outbox_rows(db, [run_id])
    suppressed = sum(1 for r in rows if r["to_phone"] in answered and r["state"] == "suppressed")
    print(
        f"\n{STOPS} STOPs during the run: {got_before} had already been sent before their "
        f"STOP, {suppressed} suppressed, {len(late)} accepted after the 200"
    )
    assert not late, late
    assert suppressed > 0  # the race was real: some STOPs beat their message
    # everybody else still got exactly one message
    per_to: dict[str, int] = {}
    for m in records:
        per_to[m["to"]] = per_to.get(m["to"], 0) + 1
    assert max(per_to.values()) == 1
    assert set(seeded.consented) - set(answered) <= set(per_to)
