"""The README's first command: `dispatcher demo` runs a real campaign end to end and accounts for
every recipient exactly as the seeded data says it should."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(300)
def test_demo_accounts_for_every_recipient(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "dispatcher.cli.app", "demo", "--contacts", "60", "--json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert r.returncode == 0, r.stderr[-2000:]
    doc = json.loads(r.stdout)
    plan, by_state = doc["plan"], doc["by_state"]
    assert sum(by_state.values()) == doc["total"] == 60
    # everyone planned to receive it did, once; the carrier got nothing else
    assert by_state.get("delivered", 0) + by_state.get("sent", 0) == plan["ok"]
    assert doc["carrier_received"] == plan["ok"] and doc["carrier_duplicates"] == 0
    assert doc["suppressed_by_reason"] == {
        k: v
        for k, v in (
            ("no_consent", plan.get("no_consent", 0)),
            ("opted_out", plan.get("opted_out", 0)),
            ("template_variable_missing", plan.get("missing_field", 0)),
        )
        if v
    }
    assert doc["deferred_by_reason"] == {"quiet_hours": plan["quiet_hours"]}
    assert sorted(doc["failed_by_code"]) == ["21211", "21610", "21612", "21614"]
    assert "Traceback" not in r.stderr
