"""Grafana dashboards as code (grafana-foundation-sdk); grafana/dashboards/*.json is generated.

    python grafana/dashboards.py            # (re)write grafana/dashboards/*.json
    python grafana/dashboards.py --check    # exit 1 if the committed JSON differs

Every query names only metrics that ``dispatcher/metrics.py`` defines
(tests/unit/test_dashboards.py) and returns data against a real Prometheus
(tests/e2e/test_dashboards_prometheus.py).  Queries use fixed windows (no Grafana-only macros
such as ``$__rate_interval``) so that Prometheus' HTTP API evaluates them as written here.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models.dashboard import DataSourceRef, Threshold, ThresholdsMode

OUT_DIR = Path(__file__).resolve().parent / "dashboards"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="prometheus")
TAGS = ["sms-dispatcher"]

#: Reputation thresholds drawn on the panels (compliance.md: opt-out rate >= 5 % daily ->
#: carrier monitoring, >= 10 % -> possible suspension; any 30007 is evidence of filtering;
#: the error-rate and repetition lines are our own operating defaults).
OPT_OUT_WARN = 0.05
OPT_OUT_CRIT = 0.10
ERROR_RATE_CRIT = 0.10
FILTERED_CRIT = 1  # any 30007
REPEAT_WARN = 0.5
REPEAT_CRIT = 0.9
CAP_WARN = 0.8
CAP_CRIT = 1.0

#: The live row states of a run (docs/operating.md); the others are done.
PENDING_STATES = "queued|deferred|sending|unknown"


@dataclass
class Query:
    expr: str
    legend: str = ""


@dataclass
class PanelSpec:
    """One panel: ``kind`` ``timeseries`` (range queries) or ``stat`` (instant queries)."""

    title: str
    queries: list[Query]
    kind: str = "timeseries"
    unit: str = "short"
    description: str = ""
    width: int = 12
    height: int = 8
    thresholds: list[tuple[float, str]] = field(default_factory=list)
    max_value: float | None = None


def _thresholds(steps: list[tuple[float, str]]) -> db.ThresholdsConfig:
    values = [Threshold(value=None, color="green")] + [
        Threshold(value=v, color=c) for v, c in steps
    ]
    return db.ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE).steps(values)


def _targets(spec: PanelSpec) -> list[prometheus.Dataquery]:
    out = []
    for i, q in enumerate(spec.queries):
        t = prometheus.Dataquery().expr(q.expr).ref_id(chr(ord("A") + i)).datasource(DATASOURCE)
        t = t.instant() if spec.kind == "stat" else t.range()
        if q.legend:
            t = t.legend_format(q.legend)
        out.append(t)
    return out


def _panel(spec: PanelSpec) -> timeseries.Panel | stat.Panel:
    if spec.kind == "stat":
        p = stat.Panel().graph_mode(cm.BigValueGraphMode.NONE)
    elif spec.kind == "timeseries":
        p = (
            timeseries.Panel()
            .fill_opacity(10)
            .legend(
                cb.VizLegendOptions()
                .show_legend(True)
                .display_mode(cm.LegendDisplayMode.LIST)
                .placement(cm.LegendPlacement.BOTTOM)
            )
        )
        if spec.thresholds:
            p = p.thresholds_style(
                cb.GraphThresholdsStyleConfig().mode(cm.GraphTresholdsStyleMode.LINE_AND_AREA)
            )
    else:
        raise ValueError(f"unknown panel kind {spec.kind!r}")
    p = (
        p.title(spec.title)
        .datasource(DATASOURCE)
        .unit(spec.unit)
        .span(spec.width)
        .height(spec.height)
        .targets(_targets(spec))
    )
    if spec.description:
        p = p.description(spec.description)
    if spec.thresholds:
        p = p.thresholds(_thresholds(spec.thresholds))
    if spec.max_value is not None:
        p = p.max(spec.max_value)
    return p


def _dashboard(
    uid: str, title: str, description: str, rows: list[tuple[str, list[PanelSpec]]]
) -> dict:
    d = (
        db.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(TAGS)
        .refresh("30s")
        .time("now-6h", "now")
        .timezone("browser")
        .editable()
    )
    pid = 1
    for row_title, panels in rows:
        d = d.with_row(db.Row(row_title).id(pid))
        pid += 1
        for spec in panels:
            d = d.with_panel(_panel(spec).id(pid))
            pid += 1
    # round-trip through the SDK's encoder to plain JSON data
    return json.loads(json.dumps(d.build(), cls=JSONEncoder))


RUN_BY_STATE = "max by (run, state) (dispatcher_run_messages{STATE})"
RUN_DONE = "sum by (run) (" + RUN_BY_STATE.replace("STATE", f'state!~"{PENDING_STATES}"') + ")"
RUN_LEFT = "sum by (run) (" + RUN_BY_STATE.replace("STATE", f'state=~"{PENDING_STATES}"') + ")"
RUN_ALL = "sum by (run) (" + RUN_BY_STATE.replace("{STATE}", "") + ")"
RUN_ELAPSED = "clamp_min(time() - max by (run) (dispatcher_run_start_time_seconds), 1)"


def overview() -> dict:
    sent = "dispatcher_messages_sent_total"
    outcomes = "dispatcher_message_outcomes_total"
    rows = [
        (
            "Volume",
            [
                PanelSpec(
                    "Messages sent (24 h)",
                    [Query(f"sum(increase({sent}[1d]))")],
                    kind="stat",
                    width=6,
                    height=4,
                ),
                PanelSpec(
                    "Delivered share (1 h)",
                    [
                        Query(
                            f'sum(increase({outcomes}{{status="delivered"}}[1h])) '
                            f"/ clamp_min(sum(increase({outcomes}[1h])), 1)"
                        )
                    ],
                    kind="stat",
                    unit="percentunit",
                    width=6,
                    height=4,
                ),
                PanelSpec(
                    "Opt-outs (24 h)",
                    [Query("sum(increase(dispatcher_opt_outs_total[1d]))")],
                    kind="stat",
                    width=6,
                    height=4,
                ),
                PanelSpec(
                    "Queue depth",
                    [Query("max(dispatcher_queue_depth)")],
                    kind="stat",
                    width=6,
                    height=4,
                ),
                PanelSpec(
                    "Throughput: messages per second by campaign",
                    [Query(f"sum by (campaign) (rate({sent}[1m]))", "{{campaign}}")],
                    unit="reqps",
                    description="Messages accepted by Twilio per second.",
                ),
                PanelSpec(
                    "Throughput: segments per second by sender",
                    [
                        Query(
                            "sum by (sender) (rate(dispatcher_message_segments_sent_total[1m]))",
                            "{{sender}}",
                        )
                    ],
                    unit="reqps",
                    description="Carriers meter sender throughput (MPS) in segments.",
                ),
            ],
        ),
        (
            "Delivery and errors",
            [
                PanelSpec(
                    "Delivery outcomes per second",
                    [Query(f"sum by (status) (rate({outcomes}[5m]))", "{{status}}")],
                    unit="reqps",
                ),
                PanelSpec(
                    "Errors per second by Twilio error code",
                    [
                        Query(
                            f'sum by (error_code) (rate({outcomes}{{status!="delivered"}}[5m]))',
                            "{{error_code}}",
                        )
                    ],
                    unit="reqps",
                ),
                PanelSpec(
                    "Suppressed by reason (per second)",
                    [
                        Query(
                            "sum by (reason) (rate(dispatcher_messages_suppressed_total[5m]))",
                            "{{reason}}",
                        )
                    ],
                    unit="reqps",
                ),
                PanelSpec(
                    "Deferred by reason (per second)",
                    [
                        Query(
                            "sum by (reason) (rate(dispatcher_messages_deferred_total[5m]))",
                            "{{reason}}",
                        )
                    ],
                    unit="reqps",
                ),
                PanelSpec(
                    "Send latency to Twilio",
                    [
                        Query(
                            "histogram_quantile(0.5, sum by (le) "
                            "(rate(dispatcher_send_duration_seconds_bucket[5m])))",
                            "p50",
                        ),
                        Query(
                            "histogram_quantile(0.95, sum by (le) "
                            "(rate(dispatcher_send_duration_seconds_bucket[5m])))",
                            "p95",
                        ),
                    ],
                    unit="s",
                ),
                PanelSpec(
                    "Workers in flight and queue",
                    [
                        Query("sum(dispatcher_worker_in_flight_messages)", "in flight"),
                        Query("max by (queue) (dispatcher_queue_depth)", "queued {{queue}}"),
                    ],
                ),
            ],
        ),
        (
            "Consent",
            [
                PanelSpec(
                    "Opt-outs per campaign (1 h)",
                    [
                        Query(
                            "sum by (campaign, kind) (increase(dispatcher_opt_outs_total[1h]))",
                            "{{campaign}} {{kind}}",
                        )
                    ],
                ),
                PanelSpec(
                    "Opt-ins and HELP per campaign (1 h)",
                    [
                        Query(
                            "sum by (campaign) (increase(dispatcher_opt_ins_total[1h]))",
                            "opt-in {{campaign}}",
                        ),
                        Query(
                            "sum by (campaign) (increase(dispatcher_help_requests_total[1h]))",
                            "HELP {{campaign}}",
                        ),
                    ],
                ),
            ],
        ),
    ]
    return _dashboard(
        "dispatcher-overview",
        "SMS dispatcher: overview",
        "Volume, throughput, delivery, errors and opt-outs per campaign.",
        rows,
    )


def reputation() -> dict:
    sent = "dispatcher_messages_sent_total"
    outcomes = "dispatcher_message_outcomes_total"
    rows = [
        (
            "Volume per day",
            [
                PanelSpec(
                    "Daily segments per brand vs T-Mobile cap",
                    [
                        Query("max by (brand) (dispatcher_brand_daily_segments)", "sent {{brand}}"),
                        Query(
                            "max by (brand) (dispatcher_brand_daily_cap_segments)", "cap {{brand}}"
                        ),
                    ],
                    description="Segments since 00:00 UTC; the T-Mobile cap counts every campaign "
                    "of the brand.",
                ),
                PanelSpec(
                    "Share of the daily cap used",
                    [
                        Query(
                            "max by (brand) (dispatcher_brand_daily_segments) / "
                            "max by (brand) (dispatcher_brand_daily_cap_segments)",
                            "{{brand}}",
                        )
                    ],
                    unit="percentunit",
                    thresholds=[(CAP_WARN, "orange"), (CAP_CRIT, "red")],
                ),
                PanelSpec(
                    "Messages per day by sender",
                    [Query("max by (sender) (dispatcher_sender_daily_sends)", "{{sender}}")],
                    description="Sends since 00:00 UTC per sending number / Messaging Service.",
                ),
                PanelSpec(
                    "Throughput by sender (messages per second)",
                    [Query(f"sum by (sender) (rate({sent}[1m]))", "{{sender}}")],
                    unit="reqps",
                ),
            ],
        ),
        (
            "Repetition of identical content",
            [
                PanelSpec(
                    "Share of sends repeating an identical body (today)",
                    [Query("max by (sender) (dispatcher_sender_daily_repeat_ratio)", "{{sender}}")],
                    unit="percentunit",
                    max_value=1,
                    thresholds=[(REPEAT_WARN, "orange"), (REPEAT_CRIT, "red")],
                    description="Carriers filter high volumes of identical content; personalise "
                    "bodies. (Thresholds are an operating heuristic, not a carrier rule.)",
                ),
                PanelSpec(
                    "Distinct bodies and largest identical-body count (today)",
                    [
                        Query(
                            "max by (sender) (dispatcher_sender_daily_distinct_bodies)",
                            "distinct {{sender}}",
                        ),
                        Query(
                            "max by (sender) (dispatcher_sender_daily_max_identical_sends)",
                            "max identical {{sender}}",
                        ),
                    ],
                ),
            ],
        ),
        (
            "Filtering, errors and opt-outs",
            [
                PanelSpec(
                    "Filtered by carrier (30007) per sender, last hour",
                    [
                        Query(
                            f'sum by (sender) (increase({outcomes}{{error_code="30007"}}[1h]))',
                            "{{sender}}",
                        )
                    ],
                    thresholds=[(FILTERED_CRIT, "red")],
                    description="Any 30007 is direct evidence of filtering: stop and review "
                    "content.",
                ),
                PanelSpec(
                    "30007 filtering rate per sender (1 h)",
                    [
                        Query(
                            f'sum by (sender) (increase({outcomes}{{error_code="30007"}}[1h])) '
                            f"/ clamp_min(sum by (sender) (increase({sent}[1h])), 1)",
                            "{{sender}}",
                        )
                    ],
                    unit="percentunit",
                    thresholds=[(0.001, "red")],
                ),
                PanelSpec(
                    "Error rate per sender (1 h)",
                    [
                        Query(
                            f'sum by (sender) (increase({outcomes}{{status!="delivered"}}[1h])) '
                            f"/ clamp_min(sum by (sender) (increase({outcomes}[1h])), 1)",
                            "{{sender}}",
                        )
                    ],
                    unit="percentunit",
                    thresholds=[(ERROR_RATE_CRIT, "red")],
                ),
                PanelSpec(
                    "Opt-out rate per campaign (24 h)",
                    [
                        Query(
                            "sum by (campaign) (increase(dispatcher_opt_outs_total[1d])) "
                            "/ clamp_min(sum by (campaign) "
                            f'(increase({outcomes}{{status="delivered"}}[1d])), 1)',
                            "{{campaign}}",
                        )
                    ],
                    unit="percentunit",
                    thresholds=[(OPT_OUT_WARN, "orange"), (OPT_OUT_CRIT, "red")],
                    description="Daily opt-out rate >= 5 %: carrier monitoring; >= 10 %: possible "
                    "suspension.",
                ),
            ],
        ),
    ]
    return _dashboard(
        "dispatcher-reputation",
        "SMS dispatcher: sender reputation",
        "Signals carriers watch: volume per day vs cap, repetition, filtering (30007), opt-outs.",
        rows,
    )


def runs() -> dict:
    res = "dispatcher_throttle_reservations_total"
    rows = [
        (
            "Progress",
            [
                PanelSpec(
                    "Run progress (share of messages done)",
                    [Query(f"{RUN_DONE} / clamp_min({RUN_ALL}, 1)", "run {{run}}")],
                    unit="percentunit",
                    max_value=1,
                ),
                PanelSpec(
                    "Estimated time to finish",
                    [
                        Query(
                            f"{RUN_LEFT} / clamp_min({RUN_DONE} / {RUN_ELAPSED}, 0.000001)",
                            "run {{run}}",
                        )
                    ],
                    unit="s",
                    description="Messages left divided by the run's average pace since it started.",
                ),
                PanelSpec(
                    "Run messages by state",
                    [Query(RUN_BY_STATE.replace("{STATE}", ""), "run {{run}} {{state}}")],
                    width=24,
                ),
            ],
        ),
        (
            "Throttle",
            [
                PanelSpec(
                    "Throttle wait by bucket kind",
                    [
                        Query(
                            "histogram_quantile(0.5, sum by (le, bucket_kind) "
                            "(rate(dispatcher_throttle_wait_seconds_bucket[5m])))",
                            "p50 {{bucket_kind}}",
                        ),
                        Query(
                            "histogram_quantile(0.95, sum by (le, bucket_kind) "
                            "(rate(dispatcher_throttle_wait_seconds_bucket[5m])))",
                            "p95 {{bucket_kind}}",
                        ),
                    ],
                    unit="s",
                ),
                PanelSpec(
                    "Reservations per second by bucket kind",
                    [
                        Query(
                            f"sum by (bucket_kind, result) (rate({res}[1m]))",
                            "{{bucket_kind}} {{result}}",
                        )
                    ],
                    unit="reqps",
                ),
                PanelSpec(
                    "Share of reservations refused",
                    [
                        Query(
                            f'sum by (bucket_kind) (rate({res}{{result="refused"}}[5m])) '
                            f"/ clamp_min(sum by (bucket_kind) (rate({res}[5m])), 0.000001)",
                            "{{bucket_kind}}",
                        )
                    ],
                    unit="percentunit",
                ),
                PanelSpec(
                    "Throughput by campaign (messages per second)",
                    [
                        Query(
                            "sum by (campaign) (rate(dispatcher_messages_sent_total[1m]))",
                            "{{campaign}}",
                        )
                    ],
                    unit="reqps",
                ),
            ],
        ),
        (
            "Queue and workers",
            [
                PanelSpec(
                    "Queue depth",
                    [Query("max by (queue) (dispatcher_queue_depth)", "{{queue}}")],
                ),
                PanelSpec(
                    "Age of the oldest due message",
                    [
                        Query(
                            "max by (queue) (dispatcher_queue_oldest_due_age_seconds)", "{{queue}}"
                        )
                    ],
                    unit="s",
                ),
                PanelSpec(
                    "Workers in flight",
                    [Query("sum(dispatcher_worker_in_flight_messages)", "in flight")],
                    width=24,
                ),
            ],
        ),
    ]
    return _dashboard(
        "dispatcher-runs",
        "SMS dispatcher: runs",
        "Run progress and ETA, throttle waits, queue and workers.",
        rows,
    )


BUILDERS = {"overview.json": overview, "reputation.json": reputation, "runs.json": runs}


def build_all() -> dict[str, dict]:
    """File name -> dashboard JSON data."""
    return {name: build() for name, build in BUILDERS.items()}


def panel_queries(dashboard: dict) -> list[tuple[str, str, str]]:
    """(panel title, panel type, PromQL) for every query of every panel, rows included."""
    out = []
    stack = list(dashboard.get("panels", []))
    while stack:
        panel = stack.pop(0)
        stack.extend(panel.get("panels", []))
        for target in panel.get("targets") or []:
            out.append((panel.get("title", ""), panel.get("type", ""), target.get("expr", "")))
    return out


def render(data: dict) -> str:
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for name, data in build_all().items():
        path = OUT_DIR / name
        text = render(data)
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        stale.append(name)
        if not check:
            path.write_text(text, encoding="utf-8")
    if check and stale:
        sys.stderr.write("stale dashboards (run python grafana/dashboards.py): " + ", ".join(stale))
        sys.stderr.write("\n")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
