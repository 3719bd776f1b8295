"""The run gauges: each run's rows by state, total, remaining and start, computed by the one model
of run figures (``run_report.progress``, what ``dispatcher run show`` prints) and served as they
were last observed.

A collector rather than labelled ``Gauge`` objects: the series are exactly the last observation,
so a run that ended (and left the observed set) has no series at all, with or without
prometheus-client's multiprocess mode (whose gauges cannot remove a label set).  The scheduler
observes (``ReleaseLoop.observe``, leader only); an observation older than ``max_age_s`` is not
served, so a scheduler that lost the lead stops exporting what the new leader now exports.
"""

from __future__ import annotations

import platform
import threading
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from prometheus_client import ProcessCollector
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from dispatcher.clock import Clock
from dispatcher.run_report import LIVE, ROW_STATES

#: name -> (help, labels) of the gauges :class:`RunGauges` yields
RUN_GAUGES: dict[str, tuple[str, tuple[str, ...]]] = {
    "dispatcher_run_messages": (
        "Rows of a run by row state (run show's by_state; every state, 0 included).",
        ("run", "campaign", "state"),
    ),
    "dispatcher_run_total_messages": (
        "Recipients of a run (run show's total).",
        ("run", "campaign"),
    ),
    "dispatcher_run_remaining_messages": (
        "Rows of a run still to go: queued, deferred, sending, unknown (run show's live).",
        ("run", "campaign"),
    ),
    "dispatcher_run_start_time_seconds": (
        "Unix time at which the run started sending.",
        ("run", "campaign"),
    ),
    "dispatcher_run_info": (
        "1 per run shown, with its state (scheduled, running, paused, completed, cancelled...).",
        ("run", "campaign", "state"),
    ),
}
#: how long an observation is served (the scheduler observes every few seconds)
MAX_AGE_S = 60.0


class RunGauges(Collector):
    def __init__(self, clock: Clock, max_age_s: float = MAX_AGE_S) -> None:
        self._clock = clock
        self._max_age_s = max_age_s
        self._lock = threading.Lock()
        self._at: float | None = None
        self._runs: list[Mapping[str, Any]] = []

    def set(self, progress: Iterable[Mapping[str, Any]]) -> None:
        runs = list(progress)
        with self._lock:
            self._at, self._runs = self._clock.time(), runs

    def describe(self) -> Iterable[Metric]:
        return [GaugeMetricFamily(n, h, labels=list(lb)) for n, (h, lb) in RUN_GAUGES.items()]

    def collect(self) -> Iterable[Metric]:
        fams = {n: GaugeMetricFamily(n, h, labels=list(lb)) for n, (h, lb) in RUN_GAUGES.items()}
        with self._lock:
            at, runs = self._at, self._runs
        if at is None or self._clock.time() - at > self._max_age_s:
            runs = []
        for p in runs:
            run, campaign = str(p["id"]), str(p.get("campaign") or "")
            by_state: Mapping[str, int] = p.get("by_state") or {}
            for state in (*ROW_STATES, *sorted(set(by_state) - set(ROW_STATES))):
                fams["dispatcher_run_messages"].add_metric(
                    [run, campaign, state], by_state.get(state, 0)
                )
            fams["dispatcher_run_total_messages"].add_metric([run, campaign], int(p["total"]))
            fams["dispatcher_run_remaining_messages"].add_metric(
                [run, campaign], sum(n for s, n in by_state.items() if s in LIVE)
            )
            started = p.get("started_at")
            if isinstance(started, datetime):
                fams["dispatcher_run_start_time_seconds"].add_metric(
                    [run, campaign], started.timestamp()
                )
            fams["dispatcher_run_info"].add_metric([run, campaign, str(p["state"])], 1)
        return list(fams.values())


# ------------------------------------------------------------------ campaigns and the guard
#: the guard's signals (``guard.evaluate``'s reasons), the ``signal`` label of its counters
GUARD_SIGNALS = ("filtering", "opt_out", "failure", "repetition")
#: how ``guard.evaluate`` words each crossed signal (tests/unit/test_metrics.py checks each one)
_SIGNAL_WORDS = {
    "filtering": "30007 filtering",
    "opt_out": "opt-out rate",
    "failure": "delivery failures",
    "repetition": "identical bodies",
}


def guard_signals(reason: str) -> list[str]:
    """The signals a guard pause names in its reason (``reputation guard: a; b``), in the order
    it names them (the order the guard checks them)."""
    found = [(reason.find(words), s) for s, words in _SIGNAL_WORDS.items() if words in reason]
    return [s for _, s in sorted(found)]


STATE_GAUGES: dict[str, tuple[str, tuple[str, ...]]] = {
    "dispatcher_campaign_info": (
        "1 per campaign: its brand id, sender and registration status (VERIFIED, ...).",
        ("campaign", "brand", "sender", "status"),
    ),
    "dispatcher_guard_threshold_ratio": (
        "The reputation guard's thresholds of the campaign (its overrides applied), as ratios: "
        "filtering (30007) and opt_out pause the run, opt_out_warn warns, failure pauses.",
        ("campaign", "signal"),
    ),
    "dispatcher_guard_min_sends": (
        "Sends a run needs before the guard judges its rates.",
        ("campaign",),
    ),
    "dispatcher_guard_enabled": ("1 if the campaign's reputation guard is on.", ("campaign",)),
    "dispatcher_campaign_rate_limit_per_second": (
        "Messages per second the throttle allows the campaign: its window (window_limit per "
        "window_seconds) and its sender's MPS (throttle.policy), whichever binds.",
        ("campaign", "limit"),
    ),
}
THRESHOLD_SIGNALS = {
    "filtering": "filtering_rate",
    "opt_out": "opt_out_rate",
    "opt_out_warn": "opt_out_warn_rate",
    "failure": "failure_rate",
}


class StateGauges(Collector):
    """The campaigns as last observed by the scheduler (served while the observation is fresh,
    like the run gauges): a status change replaces the series, no old status lingers at 1."""

    def __init__(self, clock: Clock, max_age_s: float = MAX_AGE_S) -> None:
        self._clock, self._max_age_s = clock, max_age_s
        self._lock = threading.Lock()
        self._at: float | None = None
        self._campaigns: list[Mapping[str, Any]] = []

    def set_campaigns(self, campaigns: Iterable[Mapping[str, Any]]) -> None:
        got = list(campaigns)
        with self._lock:
            self._at, self._campaigns = self._clock.time(), got

    def describe(self) -> Iterable[Metric]:
        return [GaugeMetricFamily(n, h, labels=list(lb)) for n, (h, lb) in STATE_GAUGES.items()]

    def collect(self) -> Iterable[Metric]:
        fams = {n: GaugeMetricFamily(n, h, labels=list(lb)) for n, (h, lb) in STATE_GAUGES.items()}
        with self._lock:
            at, campaigns = self._at, self._campaigns
        if at is None or self._clock.time() - at > self._max_age_s:
            campaigns = []
        for c in campaigns:
            sid = str(c["campaign"])
            fams["dispatcher_campaign_info"].add_metric(
                [sid, str(c["brand"]), str(c["sender"]), str(c.get("status") or "unknown")], 1
            )
            for limit, per_s in (c.get("limits") or {}).items():
                fams["dispatcher_campaign_rate_limit_per_second"].add_metric(
                    [sid, limit], float(per_s)
                )
            t = c.get("thresholds")
            if t is None:
                continue
            for signal, attr in THRESHOLD_SIGNALS.items():
                fams["dispatcher_guard_threshold_ratio"].add_metric(
                    [sid, signal], float(getattr(t, attr))
                )
            fams["dispatcher_guard_min_sends"].add_metric([sid], float(t.min_sends))
            fams["dispatcher_guard_enabled"].add_metric([sid], 1.0 if t.enabled else 0.0)
        return list(fams.values())


# ------------------------------------------------------------------ the process itself
def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sms-dispatcher")
    except PackageNotFoundError:
        return "unknown"


class ProcessInfo(Collector):
    """``dispatcher_build_info`` and prometheus-client's ``process_*`` (CPU, memory, open file
    descriptors, start time), which it only registers on its global registry.  In
    multiprocess mode (``multiprocess_dir``), ``process_*`` of every live process that writes
    there, labelled ``pid`` (prometheus-client cannot sum them; a restarted process's pid goes
    with it)."""

    def __init__(self, multiprocess_dir: str | None = None) -> None:
        self._dir = multiprocess_dir
        self._labels = {"version": _version(), "python": platform.python_version()}

    def collect(self) -> Iterable[Metric]:
        build = GaugeMetricFamily(
            "dispatcher_build_info",
            "1 per process: the dispatcher's version and the Python running it.",
            labels=list(self._labels),
        )
        build.add_metric(list(self._labels.values()), 1)
        out: list[Metric] = [build]
        if self._dir is None:
            out.extend(ProcessCollector(registry=None).collect())
            return out
        merged: dict[str, Metric] = {}
        for pid in _pids(self._dir):
            for fam in ProcessCollector(pid=lambda p=pid: p, registry=None).collect():  # type: ignore[misc]
                m = merged.get(fam.name)
                if m is None:
                    m = merged[fam.name] = Metric(fam.name, fam.documentation, fam.type)
                for s in fam.samples:
                    m.add_sample(s.name, {**s.labels, "pid": str(pid)}, s.value)
        out.extend(merged.values())
        return out


def _pids(directory: str) -> list[int]:
    """Live processes with files in the multiprocess directory (``<kind>_<pid>.db``)."""
    pids: set[int] = set()
    for f in Path(directory).glob("*.db"):
        tail = f.stem.rsplit("_", 1)[-1]
        if tail.isdigit() and Path(f"/proc/{tail}").exists():
            pids.add(int(tail))
    return sorted(pids)
