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

import threading
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

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
