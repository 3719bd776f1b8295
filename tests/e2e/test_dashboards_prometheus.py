"""Every PromQL query of the shipped dashboards, evaluated by a real Prometheus.

Prometheus (Debian's ``prometheus`` package; ``.ci/prometheus.sh`` installs it, and under CI this
test runs that script when the binary is missing) scrapes ``metrics_target()`` every second.  Each
panel query must be valid and return at least one non-NaN sample, through ``/api/v1/query`` and,
for time-series panels, ``/api/v1/query_range``.

``metrics_target`` is the seam for the integrator: today it serves a ``Metrics`` registry on which
every metric method is exercised with realistic values; it can yield the ``/metrics`` URL of a real
embedded demo run instead without touching the rest.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.servers import in_ci

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "grafana" / "dashboards"
STARTUP_DEADLINE_S = 30.0
MIN_SCRAPES = 4


# ------------------------------------------------------------------------------ Prometheus
def find_prometheus() -> str | None:
    found = shutil.which("prometheus")
    if found:
        return found
    return "/usr/bin/prometheus" if os.access("/usr/bin/prometheus", os.X_OK) else None


def ensure_prometheus() -> str:
    """Path of the prometheus binary; installs it under CI, skips locally if absent."""
    path = find_prometheus()
    if path:
        return path
    if not in_ci():
        pytest.skip("prometheus not installed (bash .ci/prometheus.sh installs it)")
    proc = subprocess.run(
        ["bash", str(ROOT / ".ci" / "prometheus.sh")],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    path = find_prometheus()
    if not path:
        pytest.fail(f"could not install prometheus (CI=true): {proc.stderr.strip()[-500:]}")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(
    what: str, check: Callable[[], bool], deadline_s: float = STARTUP_DEADLINE_S
) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if check():
            return
        time.sleep(0.1)  # polling interval while waiting on a condition with a deadline
    raise AssertionError(f"timed out after {deadline_s:.0f} s waiting for {what}")


@dataclass
class Prometheus:
    base_url: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def api(self, path: str, **params: str | float) -> dict[str, Any]:
        url = f"{self.base_url}{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as e:  # 400 / 422: invalid query -> JSON error body
            return json.loads(e.read())

    def query(self, expr: str, at: float | None = None) -> dict[str, Any]:
        return self.api("/api/v1/query", query=expr, time=at if at is not None else time.time())

    def query_range(self, expr: str, start: float, end: float, step: float = 1) -> dict[str, Any]:
        return self.api("/api/v1/query_range", query=expr, start=start, end=end, step=step)

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError("prometheus exited:\n" + self.log_path.read_text()[-2000:])
        try:
            with urllib.request.urlopen(self.base_url + "/-/ready", timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False


def start_prometheus(binary: str, target_url: str, workdir: Path) -> Prometheus:
    target = urllib.parse.urlparse(target_url)
    config = workdir / "prometheus.yml"
    config.write_text(
        json.dumps(  # YAML is a superset of JSON
            {
                "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
                "scrape_configs": [
                    {
                        "job_name": "dispatcher",
                        "metrics_path": target.path or "/metrics",
                        "static_configs": [{"targets": [target.netloc]}],
                    }
                ],
            }
        )
    )
    port = free_port()
    log_path = workdir / "prometheus.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
        )
    return Prometheus(f"http://127.0.0.1:{port}", proc, log_path)


# ------------------------------------------------------------------------------ the target
CAMPAIGN = "QE2c6890da8086d771620e9b13fadeba0b"
CAMPAIGN_2 = "QE" + "7" * 32
SENDER = "+15005550006"
MG = "MG" + "1" * 32
BRAND = "BN" + "2" * 32


def exercise(m: Any, tick: int) -> None:
    """Every Metrics method with realistic values (one 'tick' of a running campaign)."""
    template = "Acme: your maintenance contract expires on 3/31. Reply STOP to opt out."
    for i, (campaign, sender) in enumerate(((CAMPAIGN, SENDER), (CAMPAIGN_2, MG))):
        body = template if (tick + i) % 3 else f"Acme: hi #{tick}, contract renewal. STOP to end"
        m.sent(campaign, sender, 1 + i, brand=BRAND, body=body, duration_s=0.05 + 0.01 * i)
        m.delivered(campaign, sender)
        m.throttle_wait_seconds("sender", 0.0, True)
        m.throttle_wait_seconds("campaign", 2.5 + i, False)
    m.undelivered(CAMPAIGN, SENDER, 30007)
    m.failed(CAMPAIGN_2, MG, 30003)
    m.suppressed(CAMPAIGN, "opted_out")
    m.deferred(CAMPAIGN, "quiet_hours")
    m.throttle_wait_seconds("brand_daily", 30.0, False)
    m.opt_out(CAMPAIGN, "keyword")
    m.opt_out(CAMPAIGN_2, "natural_language")
    m.opt_in(CAMPAIGN)
    m.help_request(CAMPAIGN)
    m.queue_depth("deliver", 500 - tick)
    m.oldest_due_age_seconds("deliver", 1.5)
    m.run_started(1, time.time() - 60 - tick)
    m.run_progress(1, "queued", max(0, 400 - 2 * tick))
    m.run_progress(1, "sent", 100 + 2 * tick)
    m.run_progress(1, "suppressed", 3)
    m.worker_in_flight(4)
    m.brand_daily_cap(BRAND, 2000)


@pytest.fixture(scope="module")
def metrics_target() -> Iterator[str]:
    """URL of a /metrics endpoint with samples for every metric, changing while scraped."""
    import fakeredis
    from prometheus_client import CollectorRegistry

    from dispatcher.metrics import Metrics, start_exporter

    m = Metrics(CollectorRegistry(), redis=fakeredis.FakeRedis())
    exercise(m, 0)
    stop = threading.Event()

    def load() -> None:
        tick = 1
        while not stop.wait(0.2):
            exercise(m, tick)
            tick += 1

    loader = threading.Thread(target=load, name="metrics-load", daemon=True)
    loader.start()
    server, _thread = start_exporter(0, m, addr="127.0.0.1")
    try:
        yield f"http://127.0.0.1:{server.server_port}/metrics"
    finally:
        stop.set()
        loader.join(timeout=5)
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def prometheus(
    metrics_target: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Prometheus]:
    binary = ensure_prometheus()
    prom = start_prometheus(binary, metrics_target, tmp_path_factory.mktemp("prometheus"))
    try:
        wait_until("prometheus /-/ready", prom.ready)

        def scraped_enough() -> bool:
            r = prom.query('count_over_time(up{job="dispatcher"}[1m])')
            res = r.get("data", {}).get("result", [])
            return bool(res) and float(res[0]["value"][1]) >= MIN_SCRAPES

        wait_until(f"{MIN_SCRAPES} scrapes of {metrics_target}", scraped_enough)
        up = prom.query('up{job="dispatcher"}')["data"]["result"]
        assert up and up[0]["value"][1] == "1", up
        yield prom
    finally:
        prom.proc.terminate()
        try:
            prom.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            prom.proc.kill()
            prom.proc.wait(timeout=10)


# ------------------------------------------------------------------------------ checks
def load_panel_queries() -> list[tuple[str, str, str, str]]:
    """(dashboard file, panel title, panel type, expr) of every query in the committed JSON."""
    out = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        dash = json.loads(path.read_text(encoding="utf-8"))
        stack = list(dash.get("panels", []))
        while stack:
            panel = stack.pop(0)
            stack.extend(panel.get("panels", []))
            for target in panel.get("targets") or []:
                out.append((path.name, panel["title"], panel["type"], target["expr"]))
    return out


PANEL_QUERIES = load_panel_queries()


def assert_has_data(resp: dict[str, Any], expr: str) -> None:
    assert resp.get("status") == "success", f"invalid query {expr!r}: {resp.get('error')}"
    result = resp["data"]["result"]
    assert result, f"no data for {expr!r}"
    values: list[str] = []
    for series in result:
        if "value" in series:
            values.append(series["value"][1])
        values.extend(v for _, v in series.get("values", []))
    assert any(not math.isnan(float(v)) for v in values), f"only NaN for {expr!r}"


def test_dashboards_have_queries() -> None:
    assert len({d for d, *_ in PANEL_QUERIES}) == 3
    assert len(PANEL_QUERIES) >= 30


@pytest.mark.parametrize(
    ("dashboard", "title", "panel_type", "expr"),
    PANEL_QUERIES,
    ids=[f"{d.removesuffix('.json')}:{t}:{e[:40]}" for d, t, _, e in PANEL_QUERIES],
)
def test_panel_query_returns_data(
    prometheus: Prometheus, dashboard: str, title: str, panel_type: str, expr: str
) -> None:
    now = time.time()
    assert_has_data(prometheus.query(expr, now), expr)
    if panel_type == "timeseries":
        assert_has_data(prometheus.query_range(expr, now - 10, now, 1), expr)


def test_the_check_rejects_typos_and_unknown_metrics(prometheus: Prometheus) -> None:
    with pytest.raises(AssertionError, match="invalid query"):
        assert_has_data(prometheus.query("sum(rate(dispatcher_messages_sent_total[1m])"), "typo")
    with pytest.raises(AssertionError, match="no data"):
        assert_has_data(prometheus.query("sum(rate(dispatcher_no_such_total[1m]))"), "unknown")
