"""Pure reputation-guard evaluation and per-campaign overrides."""

from __future__ import annotations

import pytest

from dispatcher.errors import InputError
from dispatcher.guard import DEFAULT_THRESHOLDS, RunFigures, evaluate, thresholds_from


def test_defaults_are_documented_values():
    t = DEFAULT_THRESHOLDS
    assert (
        t.opt_out_rate,
        t.opt_out_warn_rate,
        t.filtering_rate,
        t.failure_rate,
        t.min_sends,
        t.identical_bodies_per_day,
    ) == (0.10, 0.05, 0.02, 0.10, 50, None)


def test_no_judgement_below_min_sample():
    assert not evaluate(RunFigures(sends=49, filtered=49, failures=49, opt_outs=49)).pause


def test_filtering_reason_names_rate_threshold_and_sample():
    v = evaluate(RunFigures(sends=200, filtered=24, failures=24))
    assert v.pause
    assert v.reason.startswith("reputation guard: 30007 filtering 12.0% >= 2.0% over 200 sends")
    assert "delivery failures 12.0%" in v.reason


def test_opt_out_warn_level_does_not_pause():
    v = evaluate(RunFigures(sends=100, opt_outs=6))
    assert not v.pause and v.warnings and "monitoring" in v.warnings[0]
    assert evaluate(RunFigures(sends=100, opt_outs=10)).pause


def test_identical_bodies_only_when_configured():
    fig = RunFigures(sends=10, identical_bodies=10_000)
    assert not evaluate(fig).pause
    t = thresholds_from({"identical_bodies_per_day": 5000})
    assert "identical bodies" in evaluate(fig, t).reason


def test_overrides_accept_percentages_and_reject_nonsense():
    t = thresholds_from({"filtering_rate": 5, "opt_out_rate": 0.2, "min_sends": 10})
    assert (t.filtering_rate, t.opt_out_rate, t.min_sends) == (0.05, 0.2, 10)
    assert not evaluate(RunFigures(100, filtered=100), thresholds_from({"enabled": False})).pause
    for bad in (
        {"nope": 1},
        {"filtering_rate": "x"},
        {"min_sends": 0},
        {"enabled": 1},
        {"filtering_rate": 500},
        {"min_sends": 2.5},
    ):
        with pytest.raises(InputError):
            thresholds_from(bad)
