"""Every series name dispatcher.metrics exposes (what a dashboard query may name): used by the
metrics and dashboard tests."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from dispatcher.metrics import Metrics
from dispatcher.metrics_daily import DAILY_GAUGES
from dispatcher.metrics_runs import RUN_GAUGES, STATE_GAUGES


def series_names() -> set[str]:
    """Every series name this module exposes (``_total``, ``_bucket``, ``_sum``, ...): what a
    dashboard query may name."""
    out: set[str] = set()
    for fam in Metrics(CollectorRegistry()).registry.collect():
        if fam.type == "counter":
            out.update({fam.name + "_total", fam.name + "_created"})
        elif fam.type == "histogram":
            out.update(fam.name + s for s in ("_bucket", "_sum", "_count", "_created"))
        else:
            out.add(fam.name)
    out.update(DAILY_GAUGES)
    out.update(RUN_GAUGES)
    out.update(STATE_GAUGES)
    out.add("dispatcher_build_info")
    return out
