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
    return {t for t in _IDENT.findall(_STRING.sub('""', expr)) if t.startswith("dispatcher_")}


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
    known = series_names()
    seen: set[str] = set()
    for name, dash in committed().items():
        panels = [p for p in dash["panels"] if p["type"] != "row"]
        assert panels, name
        for panel in panels:
            assert panel.get("targets"), f"{name}: panel {panel['title']!r} has no query"
            for target in panel["targets"]:
                expr = target["expr"]
                assert target["datasource"]["uid"] == "prometheus"
                assert "$" not in expr, f"{panel['title']}: Grafana macro in {expr!r}"
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
        "dispatcher_sender_daily_repeat_ratio",
        "dispatcher_brand_daily_segments",
        "dispatcher_brand_daily_cap_segments",
        "dispatcher_throttle_wait_seconds_bucket",
        "dispatcher_run_messages",
        "dispatcher_queue_oldest_due_age_seconds",
        "dispatcher_worker_in_flight_messages",
    ):
        assert must in seen, must


def test_metric_name_extraction_ignores_label_values() -> None:
    expr = 'sum by (sender) (rate(dispatcher_x_total{reason="dispatcher_fake"}[5m]))'
    assert metric_names_in(expr) == {"dispatcher_x_total"}


def test_reputation_thresholds_are_drawn() -> None:
    rep = committed()["reputation.json"]
    by_title = {p["title"]: p for p in rep["panels"]}

    def steps(title: str) -> list[float]:
        p = by_title[title]
        vals = [s["value"] for s in p["fieldConfig"]["defaults"]["thresholds"]["steps"]]
        assert p["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"]["mode"] != "off"
        return [v for v in vals if v is not None]

    assert steps("Opt-out rate per campaign (24 h)") == [0.05, 0.10]
    assert steps("Error rate per sender (1 h)") == [0.10]
    assert steps("Filtered by carrier (30007) per sender, last hour") == [1]


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
