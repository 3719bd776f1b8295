"""Grafana dashboards as code (grafana-foundation-sdk); grafana/dashboards/*.json is generated.

    python grafana/dashboards.py            # (re)write grafana/dashboards/*.json
    python grafana/dashboards.py --check    # exit 1 if the committed JSON differs

Every query names only metrics that ``dispatcher/metrics.py`` defines
(tests/unit/test_dashboards.py) and returns data against a real Prometheus
(tests/e2e/test_dashboards_prometheus.py).  Queries use fixed windows (no Grafana-only macros
such as ``$__rate_interval``) so that Prometheus' HTTP API evaluates them as written here; the
only ``$`` are the template variables ``$brand``, ``$campaign``, ``$sender`` and ``$run`` (label
regexes: the tests evaluate them as ``.*``, "All").

Reputation thresholds are the reputation guard's (``dispatcher.guard.DEFAULT_THRESHOLDS``: one
source; a campaign's overrides are drawn from ``dispatcher_guard_threshold_ratio``).  Every panel
has a description saying what to do when it turns red.
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
from grafana_foundation_sdk.models.dashboard import (
    DataSourceRef,
    Threshold,
    ThresholdsMode,
    VariableRefresh,
    VariableSort,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dispatcher.guard import DEFAULT_THRESHOLDS  # noqa: E402 - the repo root is put on the path

OUT_DIR = Path(__file__).resolve().parent / "dashboards"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="prometheus")
TAGS = ["sms-dispatcher"]

#: Reputation thresholds drawn on the panels: the guard's (dispatcher/guard.py), so the board turns
#: red where the guard pauses; warn levels are the guard's opt-out warning, and half the pause
#: level for the others (as the guard's opt-out warning is half its pause level).
_G = DEFAULT_THRESHOLDS
OPT_OUT_WARN = _G.opt_out_warn_rate
OPT_OUT_CRIT = _G.opt_out_rate
ERROR_RATE_WARN = _G.failure_rate / 2
ERROR_RATE_CRIT = _G.failure_rate
FILTERING_WARN = _G.filtering_rate / 2
FILTERING_CRIT = _G.filtering_rate
FILTERED_CRIT = 1  # any 30007 in the hour is evidence of filtering worth a look
REPEAT_WARN = 0.5  # operating heuristics: the guard's repetition check is off by default
REPEAT_CRIT = 0.9
CAP_WARN = 0.8
CAP_CRIT = 1.0

#: label filters by the template variables
CAMP = 'campaign=~"$campaign"'
SEND = 'sender=~"$sender"'
BRAND = 'brand=~"$brand"'
RUN = 'run=~"$run"'
CS = f"{CAMP},{SEND}"

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


#: the template variables: (name, label, query); each narrows the next
VARIABLES = [
    ("brand", "Brand", "label_values(dispatcher_campaign_info, brand)"),
    ("campaign", "Campaign", 'label_values(dispatcher_campaign_info{brand=~"$brand"}, campaign)'),
    ("sender", "Sender", 'label_values(dispatcher_campaign_info{campaign=~"$campaign"}, sender)'),
]
RUN_VARIABLE = ("run", "Run", 'label_values(dispatcher_run_info{campaign=~"$campaign"}, run)')


def _variable(name: str, label: str, query: str) -> db.QueryVariable:
    """Multi-value with All (= every value the query lists, so All of a brand's campaigns
    stays within the brand); refreshed when the time range changes."""
    return (
        db.QueryVariable(name)
        .label(label)
        .query(query)
        .datasource(DATASOURCE)
        .multi(True)
        .include_all(True)
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
    )


def _dashboard(
    uid: str,
    title: str,
    description: str,
    rows: list[tuple[str, list[PanelSpec]]],
    variables: list[tuple[str, str, str]] = VARIABLES,
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
    for name, label, query in variables:
        d = d.with_variable(_variable(name, label, query))
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
RUN_FILTER = f"{RUN},{CAMP}"
RUN_DONE = (
    "sum by (run) ("
    + RUN_BY_STATE.replace("STATE", f'{RUN_FILTER},state!~"{PENDING_STATES}"')
    + ")"
)
RUN_LEFT = f"max by (run) (dispatcher_run_remaining_messages{{{RUN_FILTER}}})"
RUN_ALL = f"max by (run) (dispatcher_run_total_messages{{{RUN_FILTER}}})"
RUN_ELAPSED = (
    f"clamp_min(time() - max by (run) (dispatcher_run_start_time_seconds{{{RUN_FILTER}}}), 1)"
)
#: per campaign -> its brand (dispatcher_campaign_info), to sum a campaign-labelled counter by brand
BY_BRAND = (
    "* on (campaign) group_left (brand) "
    f"max by (campaign, brand) (dispatcher_campaign_info{{{BRAND}}})"
)

SENT = "dispatcher_messages_sent_total"
OUTCOMES = "dispatcher_message_outcomes_total"
OPT_OUTS = "dispatcher_opt_outs_total"


def overview() -> dict:
    rows = [
        (
            "Volume",
            [
                PanelSpec(
                    "Messages sent (24 h)",
                    [Query(f"sum(increase({SENT}{{{CS}}}[1d]))")],
                    kind="stat",
                    width=6,
                    height=4,
                    description="Messages Twilio accepted in the last 24 h for the selected "
                    "campaigns and senders. Lower than expected: check Runs > Progress and the "
                    "throttle's refused reservations.",
                ),
                PanelSpec(
                    "Delivered share (1 h)",
                    [
                        Query(
                            f'sum(increase({OUTCOMES}{{{CS},status="delivered"}}[1h])) '
                            f"/ clamp_min(sum(increase({OUTCOMES}{{{CS}}}[1h])), 1)"
                        )
                    ],
                    kind="stat",
                    unit="percentunit",
                    width=6,
                    height=4,
                    thresholds=[
                        (0, "red"),
                        (1 - ERROR_RATE_CRIT, "orange"),
                        (1 - ERROR_RATE_WARN, "green"),
                    ],  # fmt: skip
                    description="Delivered over final outcomes. Red (below 1 - the guard's "
                    "failure rate): open Reputation > errors by code; 30007 = content filtered, "
                    "30003/30005/30006 = bad numbers (clean the list).",
                ),
                PanelSpec(
                    "Opt-outs (24 h)",
                    [Query(f"sum(increase({OPT_OUTS}{{{CAMP}}}[1d]))")],
                    kind="stat",
                    width=6,
                    height=4,
                    description="STOP, natural-language and carrier (21610) opt-outs. The rate "
                    "matters, not the count: Reputation > opt-out rate.",
                ),
                PanelSpec(
                    "Queue depth",
                    [Query("max(dispatcher_queue_depth)")],
                    kind="stat",
                    width=6,
                    height=4,
                    description="Messages waiting in the delivery queue. Growing while "
                    "throughput is flat: add workers, or see which throttle limit binds (Runs).",
                ),
                PanelSpec(
                    "Throughput: messages per second by campaign",
                    [Query(f"sum by (campaign) (rate({SENT}{{{CS}}}[1m]))", "{{campaign}}")],
                    unit="reqps",
                    description="Messages accepted by Twilio per second. Flat at a ceiling: a "
                    "throttle limit binds (Runs > reservations by bucket kind); 0 while a run "
                    "runs: alert RunningRunSendsNothing.",
                ),
                PanelSpec(
                    "Throughput: segments per second by sender",
                    [
                        Query(
                            f"sum by (sender) (rate(dispatcher_message_segments_sent_total"
                            f"{{{CS}}}[1m]))",
                            "{{sender}}",
                        )
                    ],
                    unit="reqps",
                    description="Carriers meter sender throughput (MPS) in segments. Near the "
                    "sender's MPS: long bodies cost several segments each; shorten them.",
                ),
            ],
        ),
        (
            "Delivery and errors",
            [
                PanelSpec(
                    "Delivery outcomes per second",
                    [Query(f"sum by (status) (rate({OUTCOMES}{{{CS}}}[5m]))", "{{status}}")],
                    unit="reqps",
                    description="Final outcomes from status callbacks. undelivered/failed "
                    "rising: see the error codes panel beside.",
                ),
                PanelSpec(
                    "Errors per second by Twilio error code",
                    [
                        Query(
                            f'sum by (error_code) (rate({OUTCOMES}{{{CS},status!="delivered"}}'
                            "[5m]))",
                            "{{error_code}}",
                        )
                    ],
                    unit="reqps",
                    description="30007: carrier filtering (review content); 30003/30005/30006: "
                    "unreachable, unknown or landline numbers (clean the list); 21610: the "
                    "recipient opted out at the carrier (already suppressed).",
                ),
                PanelSpec(
                    "Suppressed by reason (per second)",
                    [
                        Query(
                            "sum by (reason) (rate(dispatcher_messages_suppressed_total"
                            f"{{{CAMP}}}[5m]))",
                            "{{reason}}",
                        )
                    ],
                    unit="reqps",
                    description="Messages a compliance gate stopped. no_consent/opted_out: "
                    "expected; lint_error or campaign_*: fix the template or the campaign's "
                    "registration (dispatcher campaign show).",
                ),
                PanelSpec(
                    "Deferred by reason (per second)",
                    [
                        Query(
                            "sum by (reason) (rate(dispatcher_messages_deferred_total"
                            f"{{{CAMP}}}[5m]))",
                            "{{reason}}",
                        )
                    ],
                    unit="reqps",
                    description="Messages moved later: quiet hours and frequency caps are the "
                    "law working; throttle = the rate limits (see Runs > Throttle).",
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
                    thresholds=[(2.5, "orange"), (10, "red")],
                    description="Time of one create-message call. Above a few seconds: Twilio "
                    "or the network is slow; workers hold threads meanwhile (add threads).",
                ),
                PanelSpec(
                    "Workers in flight and queue",
                    [
                        Query("sum(dispatcher_worker_in_flight_messages)", "in flight"),
                        Query("max by (queue) (dispatcher_queue_depth)", "queued {{queue}}"),
                    ],
                    description="Deliveries being processed vs waiting. Queue high and in "
                    "flight at the thread count: add workers (--scale worker=N).",
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
                            f"sum by (campaign, kind) (increase({OPT_OUTS}{{{CAMP}}}[1h]))",
                            "{{campaign}} {{kind}}",
                        )
                    ],
                    description="Opt-outs by kind (keyword STOP, natural language, carrier "
                    "21610). A spike after a send: the content or the audience is wrong; pause "
                    "the run (dispatcher run pause).",
                ),
                PanelSpec(
                    "Opt-ins and HELP per campaign (1 h)",
                    [
                        Query(
                            f"sum by (campaign) (increase(dispatcher_opt_ins_total{{{CAMP}}}[1h]))",
                            "opt-in {{campaign}}",
                        ),
                        Query(
                            "sum by (campaign) (increase(dispatcher_help_requests_total"
                            f"{{{CAMP}}}[1h]))",
                            "HELP {{campaign}}",
                        ),
                    ],
                    description="HELP rising after a send: recipients do not recognise the "
                    "sender; make the brand name and purpose clear in the message.",
                ),
            ],
        ),
        (
            "Service",
            [
                PanelSpec(
                    "HTTP requests per second by route and status",
                    [
                        Query(
                            "sum by (handler, status) "
                            "(rate(dispatcher_http_request_duration_seconds_count[5m]))",
                            "{{handler}} {{status}}",
                        )
                    ],
                    unit="reqps",
                    description="Webhook and API requests. 403 on /twilio/*: signatures fail "
                    "(DISPATCHER_PUBLIC_BASE_URL or the auth token, docs/deploy.md); 5xx: see the "
                    "webhook server's log.",
                ),
                PanelSpec(
                    "HTTP latency p95 by route",
                    [
                        Query(
                            "histogram_quantile(0.95, sum by (le, handler) "
                            "(rate(dispatcher_http_request_duration_seconds_bucket[5m])))",
                            "{{handler}}",
                        )
                    ],
                    unit="s",
                    thresholds=[(1, "orange"), (5, "red")],
                    description="Twilio times a webhook out after 15 s and retries. Red: the "
                    "database is slow or the server is short of workers.",
                ),
                PanelSpec(
                    "Process CPU by job",
                    [
                        Query(
                            "sum by (job) (rate(process_cpu_seconds_total[5m]))",
                            "{{job}}",
                        )
                    ],
                    description="CPU seconds per second of each kind of process. A job at its "
                    "cores' count: scale it out.",
                ),
                PanelSpec(
                    "Processes up by version",
                    [
                        Query(
                            "count by (job, version) (dispatcher_build_info)", "{{job}} {{version}}"
                        )
                    ],
                    description="Processes serving metrics, by build. Two versions after a "
                    "deploy: some process was not restarted; none for a job: its target is down.",
                ),
            ],
        ),
    ]
    return _dashboard(
        "dispatcher-overview",
        "SMS dispatcher: overview",
        "Volume, throughput, delivery, errors, opt-outs and the service, by brand, campaign, "
        "sender.",
        rows,
    )


def reputation() -> dict:
    rows = [
        (
            "Volume per day",
            [
                PanelSpec(
                    "Daily segments per brand vs T-Mobile cap",
                    [
                        Query(
                            f"max by (brand) (dispatcher_brand_daily_segments{{{BRAND}}})",
                            "sent {{brand}}",
                        ),
                        Query(
                            f"max by (brand) (dispatcher_brand_daily_cap_segments{{{BRAND}}})",
                            "cap {{brand}}",
                        ),
                    ],
                    description="Segments since 00:00 UTC; the T-Mobile cap counts every "
                    "campaign of the brand. Sent near cap: the throttle holds the rest until "
                    "midnight Pacific.",
                ),
                PanelSpec(
                    "Share of the daily cap used",
                    [
                        Query(
                            f"max by (brand) (dispatcher_brand_daily_segments{{{BRAND}}}) / "
                            f"max by (brand) (dispatcher_brand_daily_cap_segments{{{BRAND}}})",
                            "{{brand}}",
                        )
                    ],
                    unit="percentunit",
                    thresholds=[(CAP_WARN, "orange"), (CAP_CRIT, "red")],
                    description="Orange from 80 % (alert BrandDailyCapAbove80Percent): move "
                    "non-urgent runs to tomorrow; red: the cap is reached, sends wait for the "
                    "next T-Mobile day.",
                ),
                PanelSpec(
                    "Messages per day by sender",
                    [
                        Query(
                            f"max by (sender) (dispatcher_sender_daily_sends{{{SEND}}})",
                            "{{sender}}",
                        )
                    ],
                    description="Sends since 00:00 UTC per sending number / Messaging Service. "
                    "A sudden jump on one sender concentrates reputation risk: spread volume.",
                ),
                PanelSpec(
                    "Throughput by sender (messages per second)",
                    [Query(f"sum by (sender) (rate({SENT}{{{CS}}}[1m]))", "{{sender}}")],
                    unit="reqps",
                    description="Against the binding limit: Runs > reservations refused by "
                    "bucket kind says which one (campaign window, sender MPS, daily cap).",
                ),
                PanelSpec(
                    "Segments per brand (messages' volume, 1 h)",
                    [
                        Query(
                            "sum by (brand) (increase(dispatcher_brand_segments_sent_total"
                            f"{{{BRAND}}}[1h]))",
                            "{{brand}}",
                        )
                    ],
                    description="Segments handed to the carriers per brand in the last hour "
                    "(every campaign of the brand). Compare with the daily cap's pace.",
                ),
            ],
        ),
        (
            "Repetition of identical content",
            [
                PanelSpec(
                    "Share of sends repeating an identical body (rolling 24 h)",
                    [
                        Query(
                            f"max by (sender) (dispatcher_sender_24h_repeat_ratio{{{SEND}}})",
                            "{{sender}}",
                        )
                    ],
                    unit="percentunit",
                    max_value=1,
                    thresholds=[(REPEAT_WARN, "orange"), (REPEAT_CRIT, "red")],
                    description="Carriers filter high volumes of identical content. Red: "
                    "personalise the body (name, contract fields) or set the guard's "
                    "identical_bodies_per_day. (Thresholds are an operating heuristic.)",
                ),
                PanelSpec(
                    "Distinct bodies and largest identical-body count (rolling 24 h)",
                    [
                        Query(
                            f"max by (sender) (dispatcher_sender_24h_distinct_bodies{{{SEND}}})",
                            "distinct {{sender}}",
                        ),
                        Query(
                            "max by (sender) (dispatcher_sender_24h_max_identical_sends"
                            f"{{{SEND}}})",
                            "max identical {{sender}}",
                        ),
                    ],
                    description="Max identical far above distinct: one body dominates the "
                    "sender's day; vary it before carriers flag it as bulk.",
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
                            f'sum by (sender) (increase({OUTCOMES}{{{CS},error_code="30007"}}'
                            "[1h]))",
                            "{{sender}}",
                        )
                    ],
                    thresholds=[(FILTERED_CRIT, "red")],
                    description="Any 30007 is direct evidence of filtering: review the content "
                    "(links, wording against the registered samples) before sending more.",
                ),
                PanelSpec(
                    "30007 filtering rate per campaign (1 h) vs the guard",
                    [
                        Query(
                            f'sum by (campaign) (increase({OUTCOMES}{{{CS},error_code="30007"}}'
                            f"[1h])) / clamp_min(sum by (campaign) (increase({SENT}{{{CS}}}"
                            "[1h])), 1)",
                            "{{campaign}}",
                        ),
                        Query(
                            "max by (campaign) (dispatcher_guard_threshold_ratio"
                            f'{{{CAMP},signal="filtering"}})',
                            "guard pauses at {{campaign}}",
                        ),
                    ],
                    unit="percentunit",
                    thresholds=[(FILTERING_WARN, "orange"), (FILTERING_CRIT, "red")],
                    description="Red at the guard's pause level (the dashed series is each "
                    "campaign's own, overrides included): the guard pauses the run; fix the "
                    "content before resuming.",
                ),
                PanelSpec(
                    "Error rate per sender (1 h)",
                    [
                        Query(
                            f'sum by (sender) (increase({OUTCOMES}{{{CS},status!="delivered"}}'
                            f"[1h])) / clamp_min(sum by (sender) (increase({OUTCOMES}{{{CS}}}"
                            "[1h])), 1)",
                            "{{sender}}",
                        )
                    ],
                    unit="percentunit",
                    thresholds=[(ERROR_RATE_WARN, "orange"), (ERROR_RATE_CRIT, "red")],
                    description="Red at the guard's failure rate: the guard pauses; see errors "
                    "by code: bad numbers (30003/30005/30006) mean the list needs cleaning.",
                ),
                PanelSpec(
                    "Errors by Twilio code per campaign (1 h)",
                    [
                        Query(
                            f"sum by (campaign, error_code) (increase({OUTCOMES}{{{CS},"
                            'error_code=~"30003|30005|30006|30007|21610"}[1h]))',
                            "{{campaign}} {{error_code}}",
                        )
                    ],
                    description="The codes carriers judge a sender by. 30007 filtering, "
                    "30003 unreachable, 30005 unknown number, 30006 landline, 21610 opted out "
                    "at the carrier. Any rising: act on that cause.",
                ),
                PanelSpec(
                    "Opt-out rate per campaign (24 h)",
                    [
                        Query(
                            f"sum by (campaign) (increase({OPT_OUTS}{{{CAMP}}}[1d])) "
                            f"/ clamp_min(sum by (campaign) (increase({SENT}{{{CS}}}[1d])), 1)",
                            "{{campaign}}",
                        )
                    ],
                    unit="percentunit",
                    thresholds=[(OPT_OUT_WARN, "orange"), (OPT_OUT_CRIT, "red")],
                    description="STOP + natural language + carrier 21610 over sends. Orange "
                    "(the guard's warning, carrier monitoring): review consent and frequency; "
                    "red (the guard's pause level, possible suspension): stop the campaign.",
                ),
                PanelSpec(
                    "Opt-out rate per brand (24 h)",
                    [
                        Query(
                            f"sum by (brand) (increase({OPT_OUTS}{{{CAMP}}}[1d]) {BY_BRAND}) "
                            f"/ clamp_min(sum by (brand) (increase({SENT}{{{CS}}}[1d]) "
                            f"{BY_BRAND}), 1)",
                            "{{brand}}",
                        )
                    ],
                    unit="percentunit",
                    thresholds=[(OPT_OUT_WARN, "orange"), (OPT_OUT_CRIT, "red")],
                    description="The same over every campaign of the brand: carriers judge the "
                    "brand too. Red: pause the brand's campaigns and review the audience.",
                ),
            ],
        ),
        (
            "Guard",
            [
                PanelSpec(
                    "Guard pauses by campaign and signal (24 h)",
                    [
                        Query(
                            "sum by (campaign, signal) (increase(dispatcher_guard_pauses_total"
                            f"{{{CAMP}}}[1d]))",
                            "{{campaign}} {{signal}}",
                        )
                    ],
                    thresholds=[(1, "red")],
                    description="Runs the reputation guard paused. Red: `dispatcher run show` "
                    "gives the reason; fix the cause before `dispatcher run resume`.",
                ),
                PanelSpec(
                    "Runs by state",
                    [Query(f"count by (state) (dispatcher_run_info{{{CAMP}}})", "{{state}}")],
                    kind="stat",
                    description="Runs shown by the scheduler (active, paused, ended in the last "
                    "hour). paused: see the guard pauses beside or the operator's reason.",
                ),
                PanelSpec(
                    "Campaigns by registration status",
                    [
                        Query(
                            f"count by (status) (dispatcher_campaign_info{{{BRAND},{CAMP}}})",
                            "{{status}}",
                        )
                    ],
                    kind="stat",
                    description="Only VERIFIED campaigns send. SUSPENDED or FAILED: the gates "
                    "pause their runs; fix the registration with Twilio (dispatcher campaign "
                    "sync).",
                ),
            ],
        ),
    ]
    return _dashboard(
        "dispatcher-reputation",
        "SMS dispatcher: sender reputation",
        "Signals carriers watch, per brand, campaign and sender: volume per day vs cap, "
        "repetition, filtering (30007), errors by code, opt-outs, the guard.",
        rows,
    )


def runs() -> dict:
    res = "dispatcher_throttle_reservations_total"

    def state_stat(title: str, states: str, what: str) -> PanelSpec:
        return PanelSpec(
            title,
            [Query(f'sum(dispatcher_run_messages{{{RUN_FILTER},state=~"{states}"}})')],
            kind="stat",
            width=4,
            height=4,
            description=f"{what} `dispatcher run show <id> --json` reads the same figure "
            "(by_state) from the same model (run_report.progress).",
        )

    rows = [
        (
            "Run (pick one in $run)",
            [
                state_stat(
                    "Sent (incl. delivered)",
                    "sent|delivered",
                    "Rows handed to the carrier and accepted, delivered or not yet.",
                ),
                state_stat(
                    "Failed or undelivered",
                    "failed|undelivered",
                    "Rows the carrier "
                    "refused or could not deliver: errors by code (Reputation) say why.",
                ),
                state_stat(
                    "Suppressed",
                    "suppressed",
                    "Rows a gate stopped (no consent, opted "
                    "out...): suppressed_by_reason in run show.",
                ),
                state_stat(
                    "Remaining",
                    PENDING_STATES,
                    "Rows still to go (queued, deferred, "
                    "sending, unknown). Not falling while the run runs: alert "
                    "RunningRunSendsNothing.",
                ),
                state_stat("Cancelled", "cancelled", "Rows a cancel stopped before they went."),
                PanelSpec(
                    "Total",
                    [Query(f"sum({RUN_ALL})")],
                    kind="stat",
                    width=4,
                    height=4,
                    description="The run's recipients (run show's total); sent + failed + "
                    "suppressed + cancelled + remaining adds up to it.",
                ),
            ],
        ),
        (
            "Progress",
            [
                PanelSpec(
                    "Run progress (share of messages done)",
                    [Query(f"{RUN_DONE} / clamp_min({RUN_ALL}, 1)", "run {{run}}")],
                    unit="percentunit",
                    max_value=1,
                    description="Done rows over the run's total (run show's done/total). Flat "
                    "below 100 %: rows deferred (quiet hours, caps) or a binding throttle limit.",
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
                    description="Rows left over the run's average pace since it started (run "
                    "show's eta uses the schedule model: trust it over this line when they "
                    "differ, e.g. across quiet hours).",
                ),
                PanelSpec(
                    "Run messages by state",
                    [Query(RUN_BY_STATE.replace("STATE", RUN_FILTER), "run {{run}} {{state}}")],
                    width=24,
                    description="Rows of each run by row state (docs/operating.md). failed or "
                    "undelivered growing: Reputation > errors by code.",
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
                    description="How long the binding limit makes messages wait. Long waits on "
                    "tmobile_daily: the brand's cap is spent for today; on campaign: the "
                    "campaign window (raise it only if the registration allows).",
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
                    description="Which limit binds: refused by campaign (window), sender_mps, "
                    "tmobile_daily, recipient / campaign_recipient (caps); none = sent at once.",
                ),
                PanelSpec(
                    "Share of reservations refused",
                    [
                        Query(
                            f'sum by (bucket_kind) (rate({res}{{result="refused"}}[5m])) '
                            f"/ scalar(clamp_min(sum(rate({res}[5m])), 0.000001))",
                            "{{bucket_kind}}",
                        )
                    ],
                    unit="percentunit",
                    description="Share of all reservations held back, by the limit that held "
                    "them. High is normal for a backlog; the kind says what to change.",
                ),
                PanelSpec(
                    "Throughput by campaign against its binding limit",
                    [
                        Query(
                            f"sum by (campaign) (rate({SENT}{{{CS}}}[1m])) / on (campaign) "
                            "min by (campaign) (dispatcher_campaign_rate_limit_per_second"
                            f"{{{CAMP}}})",
                            "{{campaign}}",
                        )
                    ],
                    unit="percentunit",
                    description="Sends per second over the smaller of the campaign window and "
                    "the sender's MPS. Near 100 % with a backlog: the limit binds (expected); "
                    "far below with a backlog: workers, Redis or the carrier are the bottleneck.",
                ),
            ],
        ),
        (
            "Queue and workers",
            [
                PanelSpec(
                    "Queue depth",
                    [Query("max by (queue) (dispatcher_queue_depth)", "{{queue}}")],
                    description="Messages enqueued for workers. Growing: add workers or see "
                    "the oldest due age.",
                ),
                PanelSpec(
                    "Age of the oldest due message",
                    [
                        Query(
                            "max by (queue) (dispatcher_queue_oldest_due_age_seconds)", "{{queue}}"
                        )
                    ],
                    unit="s",
                    thresholds=[(60, "orange"), (300, "red")],
                    description="Red (alert QueueOldestDueTooOld): due messages are not sent; "
                    "check the worker targets, the scheduler's lead, Redis.",
                ),
                PanelSpec(
                    "Workers in flight",
                    [Query("sum(dispatcher_worker_in_flight_messages)", "in flight")],
                    width=24,
                    description="Deliveries being processed. At processes x threads: the "
                    "workers are saturated; scale out.",
                ),
            ],
        ),
    ]
    return _dashboard(
        "dispatcher-runs",
        "SMS dispatcher: runs",
        "One run's figures (as run show), progress and ETA, which throttle limit binds, queue "
        "and workers.",
        rows,
        variables=[*VARIABLES, RUN_VARIABLE],
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
