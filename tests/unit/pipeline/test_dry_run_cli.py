"""`dispatcher run launch --dry-run --json`: audience, suppressed by reason, first message with
segments, and the estimated finish (500 at 10 / 5 min ~ 4 h 05 m)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from typer.testing import CliRunner

from tests.unit.pipeline.conftest import TEMPLATE, Harness


def test_dry_run_reports_audience_suppressions_first_message_and_eta(cli_env):
    from dispatcher.cli.app import app
    from dispatcher.cli.common import database
    from dispatcher.clock import FakeClock
    from dispatcher.runtime import Runtime
    from dispatcher.settings import get_settings

    rt = Runtime(get_settings(), clock=FakeClock())
    rt.__dict__["db"] = database()  # the CLI's own database; no carrier is needed
    h = Harness(rt=rt, clock=rt.clock)
    h.seed()
    h.set_campaign(quiet_hours_policy="none")  # the estimate must not depend on the hour
    h.contacts(500)
    for i in range(3):
        h.contact(f"+1312555{i:04d}", consent=False)
    for i in range(2):
        h.stop(h.contact(f"+1617555{i:04d}"))

    before = datetime.now(UTC)
    res = CliRunner().invoke(
        app,
        [
            "run",
            "launch",
            "--campaign",
            h.campaign_sid,
            "--template",
            TEMPLATE,
            "--dry-run",
            "--json",
        ],
    )
    after = datetime.now(UTC)
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["audience"] == 505
    assert doc["would_send"] == 500
    assert doc["suppressed"] == {"no_consent": 3, "opted_out": 2}
    assert doc["first_message"].startswith("Acme Corporation: Hi ")
    assert "Reply STOP" in doc["first_message"]
    assert (doc["encoding"], doc["segments"]) == ("GSM-7", 1)
    assert doc["limits"] == "10 per 300s"
    # 49 full windows of 300 s + the bucket's grace (1 % of the period, at most 1 s; at least
    # DISPATCHER_THROTTLE_GRACE_S, 0.5 s) = 14 749 s = 4 h 05 m 49 s
    assert doc["estimated_seconds"] == 49 * 301
    finish = datetime.fromisoformat(doc["estimated_finish"].replace("Z", "+00:00"))
    span = timedelta(seconds=49 * 301)
    assert before + span - timedelta(seconds=1) <= finish <= after + span + timedelta(seconds=1)
    with database().session() as s:  # a dry run writes nothing
        from dispatcher.models import Run

        assert s.get(Run, 1) is None
