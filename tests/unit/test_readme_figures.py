"""Figures the README states for the operator, checked against what the product computes (issue
18 item 2: ``--realistic`` was documented as "~4 h" while the demo estimated 4816 s), and the
packaging metadata whose old form made every install print setuptools' deprecation warning
(issue 18 item 7)."""

from __future__ import annotations

import re
import tomllib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from dispatcher import runs
from dispatcher.launch import submit_run
from workers.demo import TEMPLATE, demo_end, seed

ROOT = Path(__file__).parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("hour", [14, 20])  # UTC: the demo's asleep contacts depend on the hour
def test_the_realistic_demo_takes_what_the_readme_says(sqlite_db, tmp_path, hour):
    m = re.search(
        r"--realistic`.*?~(\d+) sendable messages then take about (\d+) minutes", README, re.S
    )
    assert m, "the README states the realistic demo's size and duration"
    stated_rows, stated_min = int(m.group(1)), int(m.group(2))
    now = datetime(2026, 12, 8, hour, 0, tzinfo=UTC)
    seeded = seed(sqlite_db, tmp_path, now, realistic=True, n=200)
    req = runs.LaunchRequest(
        campaign=seeded["campaign"], template=TEMPLATE, audience={"kind": "all"}, force=True
    )
    dry = submit_run(sqlite_db, req, now=now, dry_run=True, preview=True).dry_run
    assert dry is not None
    end = demo_end(dry["schedule"])
    assert end is not None
    minutes = (end - dry["schedule"]["start"]).total_seconds() / 60
    assert abs(dry["would_send"] - stated_rows) <= 0.1 * stated_rows, dry["would_send"]
    assert abs(minutes - stated_min) <= 0.15 * stated_min, minutes


def test_the_license_is_an_spdx_expression_setuptools_takes_without_a_warning():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert isinstance(meta["project"]["license"], str)  # not the deprecated { text = ... }
    assert not any(c.startswith("License ::") for c in meta["project"].get("classifiers", []))
    (req,) = [r for r in meta["build-system"]["requires"] if r.startswith("setuptools")]
    assert re.fullmatch(r"setuptools>=(\d+)", req) and int(req.split(">=")[1]) >= 77
