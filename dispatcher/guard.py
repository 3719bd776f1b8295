"""Reputation guard: decide from a run's live figures whether to pause it.  Pure (no I/O).

Carriers publish no thresholds; the defaults below are provider policies or our design, each with
its source in ../shared/compliance.md §10 (every number is configurable per campaign through
``Campaign.guard``, a JSON object whose keys are the field names of :class:`Thresholds`):

=====================  =========  ==========================================================
signal                 default    source
=====================  =========  ==========================================================
opt-out rate (pause)   10 %       [FLOW] daily opt-out rate >= 10 % -> possible suspension
opt-out rate (warn)    5 %        [FLOW] >= 5 % -> carrier monitoring (warning only)
30007 filtering rate   2 %        (design) [E30007] 30007 is direct evidence of filtering;
                                  healthy spam rate < 0.02 % [CHEK]; 2 % is a clear spike
                                  above noise once ``min_sends`` messages went out
delivery failure rate  10 %       [CHEK], [CALLHUB] healthy error rate < 10 %
identical bodies/day   off        [CALLHUB] many identical messages get flagged; [BLK]
                                  (pre-10DLC) >= 30 identical in minutes = bulk.  Notification
                                  broadcasts are identical by nature, so pausing is opt-in
                                  (e.g. ``{"identical_bodies_per_day": 5000}``)
minimum sample         50 sends   (design) no judgement on fewer messages handed to the carrier
=====================  =========  ==========================================================

Rates are counted over messages *handed to the carrier* (sent, delivered, undelivered, failed):
while callbacks are pending the rates are lower bounds, so the guard never pauses early on a
handful of fast error callbacks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from dispatcher.errors import InputError


@dataclass(frozen=True)
class Thresholds:
    enabled: bool = True
    min_sends: int = 50
    opt_out_rate: float = 0.10
    opt_out_warn_rate: float = 0.05
    filtering_rate: float = 0.02
    failure_rate: float = 0.10
    identical_bodies_per_day: int | None = None


DEFAULT_THRESHOLDS = Thresholds()
_RATES = ("opt_out_rate", "opt_out_warn_rate", "filtering_rate", "failure_rate")


def thresholds_from(
    overrides: Mapping[str, Any] | None, base: Thresholds = DEFAULT_THRESHOLDS
) -> Thresholds:
    """``base`` with a campaign's ``guard`` overrides applied; InputError names a bad key/value.

    Rates are fractions (0.05) or percentages (5 -> 0.05 when > 1)."""
    if not overrides:
        return base
    if not isinstance(overrides, Mapping):
        raise InputError("campaign guard settings must be a JSON object", field="guard")
    known = {f.name for f in fields(Thresholds)}
    values: dict[str, Any] = {}
    for key, value in overrides.items():
        if key not in known:
            raise InputError(
                f"unknown guard setting {key!r} (one of {', '.join(sorted(known))})", field="guard"
            )
        values[key] = _check(key, value)
    return replace(base, **values)


def _check(key: str, value: Any) -> Any:
    if key == "enabled":
        if not isinstance(value, bool):
            raise InputError("guard setting 'enabled' must be true or false", field="guard")
        return value
    if key == "identical_bodies_per_day" and value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(f"guard setting {key!r} must be a number", field="guard")
    if key in _RATES:
        rate = float(value) / 100 if value > 1 else float(value)
        if not 0 < rate <= 1:
            raise InputError(f"guard setting {key!r} must be a rate in (0, 1]", field="guard")
        return rate
    if value < 1 or int(value) != value:
        raise InputError(f"guard setting {key!r} must be a positive integer", field="guard")
    return int(value)


@dataclass(frozen=True)
class RunFigures:
    """What the guard looks at for one run (counted by dispatcher.guard_check)."""

    sends: int  # handed to the carrier
    filtered: int = 0  # error 30007
    failures: int = 0  # undelivered + failed
    opt_outs: int = 0  # recipients of the run who revoked since the run started
    identical_bodies: int = 0  # largest count of one body by the run's sender today (UTC)


@dataclass(frozen=True)
class Verdict:
    pause: bool
    reason: str | None = None
    warnings: tuple[str, ...] = ()
    rates: dict[str, float] = field(default_factory=dict)


def _pct(x: float) -> str:
    return f"{x * 100:.1f}%"


def evaluate(fig: RunFigures, t: Thresholds = DEFAULT_THRESHOLDS) -> Verdict:
    """Pause when any signal reaches its threshold (after ``min_sends`` sends)."""
    if not t.enabled or fig.sends <= 0:
        return Verdict(False)
    rates = {
        "filtering": fig.filtered / fig.sends,
        "opt_out": fig.opt_outs / fig.sends,
        "failure": fig.failures / fig.sends,
    }
    crossed: list[str] = []
    warnings: list[str] = []
    over = f"over {fig.sends} sends"
    limit = t.identical_bodies_per_day
    if limit is not None and fig.identical_bodies >= limit:
        crossed.append(f"{fig.identical_bodies} identical bodies from the sender today >= {limit}")
    if fig.sends >= t.min_sends:
        if rates["filtering"] >= t.filtering_rate:
            crossed.append(
                f"30007 filtering {_pct(rates['filtering'])} >= {_pct(t.filtering_rate)} {over}"
            )
        if rates["opt_out"] >= t.opt_out_rate:
            crossed.append(
                f"opt-out rate {_pct(rates['opt_out'])} >= {_pct(t.opt_out_rate)} {over}"
            )
        elif rates["opt_out"] >= t.opt_out_warn_rate:
            warnings.append(
                f"opt-out rate {_pct(rates['opt_out'])} >= "
                f"{_pct(t.opt_out_warn_rate)} {over} (carrier monitoring level)"
            )
        if rates["failure"] >= t.failure_rate:
            crossed.append(
                f"delivery failures {_pct(rates['failure'])} >= {_pct(t.failure_rate)} {over}"
            )
    if crossed:
        return Verdict(True, "reputation guard: " + "; ".join(crossed), tuple(warnings), rates)
    return Verdict(False, None, tuple(warnings), rates)
