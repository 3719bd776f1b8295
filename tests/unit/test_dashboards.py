"""Grafana dashboards: committed JSON == generator output; every query names defined metrics."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from tests.metric_series import series_names

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "grafana"


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("grafana_dashboards", GRAFANA / "dashboards.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("grafana_dashboards", mod)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def gen() -> ModuleType:
    return load_generator()


def committed() -> dict[str, dict]:
    return {
        p.name: json.loads(p.read_text(encoding="utf-8"))
        for p in sorted((GRAFANA / "dashboards").glob("*.json"))
    }


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def metric_names_in(expr: str) -> set[str]:
    """Identifiers of a PromQL expression that are our metric names (label values stripped)."""
    return {
        t
        for t in _IDENT.findall(_STRING.sub('""', expr))
        if t.startswith(("dispatcher_", "process_"))
    }


#: prometheus-client's process collector (every exporter serves it: dispatcher/metrics_runs.py)
PROCESS_SERIES = {
    "process_cpu_seconds_total", "process_resident_memory_bytes", "process_virtual_memory_bytes",
    "process_open_fds", "process_max_fds", "process_start_time_seconds",
}  # fmt: skip


def test_committed_json_matches_the_generator(gen: ModuleType) -> None:
    built = gen.build_all()
    files = committed()
    assert set(files) == set(built), "run: python grafana/dashboards.py"
    for name, data in built.items():
        path = GRAFANA / "dashboards" / name
        assert path.read_text(encoding="utf-8") == gen.render(data), (
            f"{name} is stale: run python grafana/dashboards.py"
        )


def test_check_mode_reports_no_drift(gen: ModuleType) -> None:
    assert gen.main(["--check"]) == 0


def test_three_dashboards_with_unique_uids() -> None:
    uids = [d["uid"] for d in committed().values()]
    assert sorted(uids) == ["dispatcher-overview", "dispatcher-reputation", "dispatcher-runs"]


def test_every_panel_has_a_query_naming_only_defined_metrics(gen: ModuleType) -> None:
    known = series_names() | PROCESS_SERIES
    seen: set[str] = set()
    for name, dash in committed().items():
        panels = [p for p in dash["panels"] if p["type"] != "row"]
        assert panels, name
        for panel in panels:
            assert panel.get("targets"), f"{name}: panel {panel['title']!r} has no query"
            for target in panel["targets"]:
                expr = target["expr"]
                assert target["datasource"]["uid"] == "prometheus"
                macros = set(re.findall(r"\$\w+", expr)) - TEMPLATE_VARIABLES
                assert not macros, f"{panel['title']}: Grafana macro {macros} in {expr!r}"
                names = metric_names_in(expr)
                assert names, f"{panel['title']}: no dispatcher metric in {expr!r}"
                unknown = names - known
                assert not unknown, f"{name}: {panel['title']!r} names unknown metrics {unknown}"
                seen |= names
    assert len(gen.panel_queries(committed()["runs.json"])) >= 8
    # the signals are all on a board
    for must in (
        "dispatcher_messages_sent_total",
        "dispatcher_message_outcomes_total",
        "dispatcher_opt_outs_total",
        "dispatcher_sender_24h_repeat_ratio",
        "dispatcher_sender_24h_max_identical_sends",
        "dispatcher_brand_daily_segments",
        "dispatcher_brand_daily_cap_segments",
        "dispatcher_throttle_wait_seconds_bucket",
        "dispatcher_run_messages",
        "dispatcher_queue_oldest_due_age_seconds",
        "dispatcher_worker_in_flight_messages",
    ):
        assert must in seen, must


TEMPLATE_VARIABLES = {"$brand", "$campaign", "$sender", "$run"}


def all_panels() -> list[tuple[str, dict]]:
    return [(name, p) for name, d in committed().items() for p in d["panels"] if p["type"] != "row"]


def test_every_panel_says_what_to_do_when_it_turns_red() -> None:
    missing = [f"{n}: {p['title']}" for n, p in all_panels() if len(p.get("description", "")) < 40]
    assert not missing, missing


def test_brand_campaign_sender_variables_filter_the_panels() -> None:
    for name, dash in committed().items():
        variables = {v["name"]: v for v in dash["templating"]["list"]}
        assert {"brand", "campaign", "sender"} <= set(variables), name
        for v in variables.values():
            assert v["type"] == "query" and v["includeAll"] and v["multi"], (name, v["name"])
        # each narrows the next: the campaigns of the chosen brands, their senders
        assert "$brand" in variables["campaign"]["query"]
        assert "$campaign" in variables["sender"]["query"]
    filtered = [
        t["expr"]
        for _, p in all_panels()
        for t in p["targets"]
        if re.search(r"dispatcher_(messages_sent|message_outcomes|opt_outs)_total", t["expr"])
    ]
    assert filtered and all("$campaign" in e for e in filtered), [
        e for e in filtered if "$campaign" not in e
    ]
    assert "run" in {v["name"] for v in committed()["runs.json"]["templating"]["list"]}


def test_the_run_view_shows_run_shows_figures() -> None:
    """One stat per figure of `run show --json` (by_state groups and total), for $run."""
    runs = {p["title"]: p for p in committed()["runs.json"]["panels"]}
    for title, states in {
        "Sent (incl. delivered)": "sent|delivered",
        "Failed or undelivered": "failed|undelivered",
        "Suppressed": "suppressed",
        "Remaining": "queued|deferred|sending|unknown",
    }.items():
        (target,) = runs[title]["targets"]
        assert "$run" in target["expr"] and f'state=~"{states}"' in target["expr"], title
    assert "dispatcher_run_total_messages" in runs["Total"]["targets"][0]["expr"]


def test_metric_name_extraction_ignores_label_values() -> None:
    expr = 'sum by (sender) (rate(dispatcher_x_total{reason="dispatcher_fake"}[5m]))'
    assert metric_names_in(expr) == {"dispatcher_x_total"}


def test_reputation_thresholds_are_the_guards() -> None:
    """One source: the panels turn red where dispatcher.guard pauses."""
    from dispatcher.guard import DEFAULT_THRESHOLDS as G

    rep = committed()["reputation.json"]
    by_title = {p["title"]: p for p in rep["panels"]}

    def steps(title: str) -> list[float]:
        p = by_title[title]
        vals = [s["value"] for s in p["fieldConfig"]["defaults"]["thresholds"]["steps"]]
        assert p["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"]["mode"] != "off"
        return [v for v in vals if v is not None]

    assert steps("Opt-out rate per campaign (24 h)") == [G.opt_out_warn_rate, G.opt_out_rate]
    assert steps("Opt-out rate per brand (24 h)") == [G.opt_out_warn_rate, G.opt_out_rate]
    assert steps("Error rate per sender (1 h)") == [G.failure_rate / 2, G.failure_rate]
    assert steps("30007 filtering rate per campaign (1 h) vs the guard") == [
        G.filtering_rate / 2,
        G.filtering_rate,
    ]
    assert steps("Filtered by carrier (30007) per sender, last hour") == [1]
    # the campaign's own threshold (overrides applied) is drawn as a series
    exprs = [t["expr"] for t in by_title["30007 filtering rate per campaign (1 h) vs the guard"]
             ["targets"]]  # fmt: skip
    assert any("dispatcher_guard_threshold_ratio" in e for e in exprs)


def _steps(panel: dict) -> list[float]:
    steps = panel["fieldConfig"]["defaults"].get("thresholds", {}).get("steps", [])
    return [s["value"] for s in steps if s["value"] is not None]


def _alert_level(name: str) -> float:
    """The number an alert rule compares with (``... > N``): the panel draws the same line."""
    (expr,) = [r["expr"] for r in alert_rules() if r["alert"] == name]
    found = re.search(r">\s*([0-9.]+)\s*$", expr.strip())
    assert found, f"{name}: no '> N' at the end of {expr!r}"
    return float(found.group(1))


def test_every_threshold_comes_from_the_guard_an_alert_or_a_stated_heuristic() -> None:
    """Each panel that draws thresholds is listed here with where its numbers come from: the
    reputation guard's settings (dispatcher.guard.DEFAULT_THRESHOLDS), the alert rule the panel
    stands beside (grafana/alerts.yml), or an operating heuristic with its reason.  A new
    panel with thresholds fails until it is listed."""
    from dispatcher.guard import DEFAULT_THRESHOLDS as G

    from_guard = {
        ("overview.json", "Delivered share (1 h)"): [0, 1 - G.failure_rate, 1 - G.failure_rate / 2],
        ("reputation.json", "30007 filtering rate per campaign (1 h) vs the guard"): [
            G.filtering_rate / 2, G.filtering_rate],
        ("reputation.json", "Error rate per sender (1 h)"): [G.failure_rate / 2, G.failure_rate],
        ("reputation.json", "Opt-out rate per campaign (24 h)"): [G.opt_out_warn_rate,
                                                                  G.opt_out_rate],
        ("reputation.json", "Opt-out rate per brand (24 h)"): [G.opt_out_warn_rate,
                                                               G.opt_out_rate],
    }  # fmt: skip
    from_alerts = {
        ("reputation.json", "Share of the daily cap used"): [
            _alert_level("BrandDailyCapAbove80Percent"), 1.0],
        ("runs.json", "Age of the oldest due message"): [60, _alert_level("QueueOldestDueTooOld")],
    }  # fmt: skip
    heuristics = {
        ("overview.json", "Send latency to Twilio"): (
            [2.5, 10], "Twilio answers a create in well under a second; 10 s holds a thread"),
        ("overview.json", "HTTP latency p95 by route"): (
            [1, 5], "Twilio gives a webhook 15 s before it times out and retries"),
        ("reputation.json", "Share of sends repeating an identical body (rolling 24 h)"): (
            [0.5, 0.9], "the guard's repetition check is off by default (an absolute count)"),
        ("reputation.json", "Filtered by carrier (30007) per sender, last hour"): (
            [1], "a count: any 30007 is evidence of filtering"),
        ("reputation.json", "Guard pauses by campaign and signal (24 h)"): (
            [1], "a count: any pause needs an operator"),
    }  # fmt: skip
    drawn = {(n, p["title"]): _steps(p) for n, p in all_panels() if _steps(p)}
    listed = set(from_guard) | set(from_alerts) | set(heuristics)
    assert set(drawn) <= listed, f"thresholds of unknown origin: {sorted(set(drawn) - listed)}"
    assert listed <= set(drawn), f"listed but drawing no thresholds: {sorted(listed - set(drawn))}"
    for key, want in {**from_guard, **from_alerts}.items():
        assert drawn[key] == pytest.approx(want), key
    for key, (want, why) in heuristics.items():
        assert drawn[key] == want and len(why) > 20, key


def test_provisioning_files() -> None:
    ds = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())
    (source,) = ds["datasources"]
    assert source["uid"] == "prometheus" and source["type"] == "prometheus"
    prov = yaml.safe_load((GRAFANA / "provisioning/dashboards/dashboards.yml").read_text())
    (provider,) = prov["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/etc/grafana/dashboards"
    prom = yaml.safe_load((GRAFANA / "prometheus.yml").read_text())
    jobs = {j["job_name"] for j in prom["scrape_configs"]}
    assert {"webhooks", "worker"} <= jobs


# ------------------------------------------------------------------ alert rules (issue 20)
def promtool() -> str:
    """promtool (Debian's ``prometheus`` package ships it; .ci/prometheus.sh installs it)."""
    import os
    import shutil
    import subprocess

    found = shutil.which("promtool")
    if found is None and os.environ.get("CI") == "true":
        subprocess.run(["bash", str(ROOT / ".ci" / "prometheus.sh")], check=True)
        found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool not installed (bash .ci/prometheus.sh installs it)")
    return found


def alert_rules() -> list[dict]:
    doc = yaml.safe_load((GRAFANA / "alerts.yml").read_text(encoding="utf-8"))
    return [r for g in doc["groups"] for r in g["rules"]]


def test_alert_rules_are_valid_and_every_rule_passes_its_promtool_tests() -> None:
    import subprocess

    tool = promtool()
    check = subprocess.run([tool, "check", "rules", "alerts.yml"], cwd=GRAFANA,
                           capture_output=True, text=True)  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    run = subprocess.run([tool, "test", "rules", "alerts.test.yml"], cwd=GRAFANA,
                         capture_output=True, text=True)  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr


def test_every_alert_rule_has_a_test_and_the_asked_rules_exist() -> None:
    tests = yaml.safe_load((GRAFANA / "alerts.test.yml").read_text(encoding="utf-8"))
    tested = {
        t["alertname"]
        for case in tests["tests"]
        for t in case.get("alert_rule_test", [])
        if t.get("exp_alerts")  # a firing case, not only a quiet one
    }
    names = {r["alert"] for r in alert_rules()}
    assert names <= tested, f"alert rules without a firing test: {names - tested}"
    assert {
        "CarrierFilteringAboveWarnLevel", "OptOutSpike", "BrandDailyCapAbove80Percent",
        "QueueOldestDueTooOld", "RunPausedByGuard", "WebhookSignaturesFailing",
        "RunningRunSendsNothing",
    } <= names  # fmt: skip
    for r in alert_rules():
        assert r["annotations"].get("description"), f"{r['alert']}: say what to do"


def test_alert_rules_name_only_exported_series_and_read_the_guards_thresholds() -> None:
    known = series_names() | {"up"}
    for r in alert_rules():
        for name in re.findall(r"\b((?:dispatcher|process)_[a-z_]+|up)\b", r["expr"]):
            assert name in known, f"{r['alert']}: {name} is not exported"
    exprs = {r["alert"]: r["expr"] for r in alert_rules()}
    for alert in ("CarrierFilteringAboveWarnLevel", "OptOutSpike"):
        assert "dispatcher_guard_threshold_ratio" in exprs[alert]  # one source: the guard
        assert not re.search(r"\b0\.0\d", exprs[alert]), f"{alert}: a threshold written in"


def test_the_compose_prometheus_loads_the_alert_rules() -> None:
    prom = yaml.safe_load((GRAFANA / "prometheus.yml").read_text(encoding="utf-8"))
    assert prom["rule_files"] == ["/etc/prometheus/alerts.yml"]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    mounts = compose["services"]["prometheus"]["volumes"]
    assert "./grafana/alerts.yml:/etc/prometheus/alerts.yml:ro" in mounts
