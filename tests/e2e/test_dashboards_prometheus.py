"""Every PromQL query of the shipped dashboards, evaluated by a real Prometheus.

Prometheus (Debian's ``prometheus`` package; ``.ci/prometheus.sh`` installs it, and under CI this
test runs that script when the binary is missing) scrapes ``metrics_target()`` every second.  Each
panel query must be valid and return at least one non-NaN sample, through ``/api/v1/query`` and,
for time-series panels, ``/api/v1/query_range``.

``metrics_target`` is a real embedded run of the product (pipeline, throttle, webhooks, sandbox
carrier with 30007 filtering, inbound HELP/STOP/START), scraped while it goes on.

``distributed`` is the distributed stack (webhooks, a worker pool, the scheduler, one Prometheus
scraping the three) after a healthy run and after a faulty one.  There every panel query must
return a series, and each one with a database equivalent must return the database's figure
(tests/e2e/dashboard_checks.py: the table of panel query -> database computation -> tolerance;
a new panel without an entry fails ``test_every_panel_query_has_a_database_check_or_says_why_not``).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.procs import Proc, free_port, wait_for
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


@dataclass
class Prometheus:
    base_url: str
    proc: Proc

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
        if not self.proc.alive():
            raise AssertionError("prometheus exited:\n" + self.proc.tail(2000))
        try:
            with urllib.request.urlopen(self.base_url + "/-/ready", timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False


def start_prometheus(
    binary: str, target_url: str | dict[str, list[str]], workdir: Path
) -> Prometheus:
    """A Prometheus scraping every second: one target (job ``dispatcher``) or ``{job: [urls]}``."""
    jobs = {"dispatcher": [target_url]} if isinstance(target_url, str) else target_url
    configs = []
    for job, urls in jobs.items():
        parsed = [urllib.parse.urlparse(u) for u in urls]
        configs.append(
            {
                "job_name": job,
                "metrics_path": parsed[0].path or "/metrics",
                "static_configs": [{"targets": [t.netloc for t in parsed]}],
            }
        )
    config = workdir / "prometheus.yml"
    config.write_text(
        json.dumps(  # YAML is a superset of JSON
            {"global": {"scrape_interval": "1s", "scrape_timeout": "1s"}, "scrape_configs": configs}
        )
    )
    port = free_port()
    proc = Proc(
        "prometheus",
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        dict(os.environ),
        workdir,
        cwd=workdir,
    )
    return Prometheus(f"http://127.0.0.1:{port}", proc)


# ------------------------------------------------------------------------------ the target
@pytest.fixture(scope="module")
def metrics_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The /metrics of a real embedded run: the product's own pipeline, webhooks and sandbox
    carrier (10 % of deliveries filtered with 30007), plus inbound HELP, STOP and START."""
    from datetime import UTC, datetime, timedelta

    from dispatcher import registry, run_report, runs
    from dispatcher.metrics import start_exporter
    from dispatcher.sandbox.config import SandboxConfig, Schedule
    from dispatcher.settings import Settings
    from workers.demo import TEMPLATE, seed
    from workers.embedded import EmbeddedStack

    work = tmp_path_factory.mktemp("embedded")
    settings = Settings(database_url=f"sqlite:///{work}/metrics.db")
    cfg = SandboxConfig(
        account_sid=settings.account_sid,
        auth_token=settings.auth_token,
        inbound_url=settings.public_base_url.rstrip("/") + "/twilio/inbound",
        delivery_errors={30007: 0.1},
        schedule=Schedule(sending_after_s=0.05, sent_after_s=0.1, final_after_s=0.3),
    )
    stack = EmbeddedStack(settings, sandbox_config=cfg, tick_s=0.25).start()
    server = None
    try:
        rt = stack.runtime
        now = datetime.now(UTC)
        seeded = seed(rt.db, work, now, realistic=False, n=300)  # sends go on while scraped
        with rt.db.session() as s:
            # 10 % filtering would (rightly) make the reputation guard pause the run
            registry.get_campaign(s, seeded["campaign"]).guard = {"filtering_rate": 0.5}
            run, _ = runs.launch(
                s,
                runs.LaunchRequest(
                    campaign=seeded["campaign"],
                    template=TEMPLATE,
                    audience={"kind": "all"},
                    actor="test",
                ),
                now=now,
            )
            run_id = run.id
            # a second run starts while Prometheus scrapes: fresh throttle waits to rate()
            runs.launch(
                s,
                runs.LaunchRequest(
                    campaign=seeded["campaign"],
                    template="Reminder: " + TEMPLATE,
                    audience={"kind": "all"},
                    actor="test",
                    send_at=now + timedelta(seconds=12),
                ),
                now=now,
            )

        def progressed() -> bool:
            with rt.db.session() as s:
                c = run_report.progress(s, run_id, datetime.now(UTC))["by_state"]
            return c.get("delivered", 0) + c.get("undelivered", 0) >= 5

        wait_for(progressed, 90, "the embedded run to deliver 5 messages")
        phones = sorted({m["to"] for m in rt.sandbox.records()})
        for body, phone in (
            ("HELP", phones[0]),
            ("STOP", phones[1]),
            ("START", phones[1]),
            ("please stop texting me", phones[2]),
        ):
            rt.sandbox.inbound(phone, body)
        server, _thread = start_exporter(0, rt.metrics, addr="127.0.0.1")
        yield f"http://127.0.0.1:{server.server_port}/metrics"
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
        stack.stop()


@pytest.fixture(scope="module")
def prometheus(
    metrics_target: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Prometheus]:
    binary = ensure_prometheus()
    prom = start_prometheus(binary, metrics_target, tmp_path_factory.mktemp("prometheus"))
    try:
        wait_for(prom.ready, STARTUP_DEADLINE_S, "prometheus /-/ready")

        def scraped_enough() -> bool:
            r = prom.query('count_over_time(up{job="dispatcher"}[1m])')
            res = r.get("data", {}).get("result", [])
            return bool(res) and float(res[0]["value"][1]) >= MIN_SCRAPES

        wait_for(scraped_enough, STARTUP_DEADLINE_S, f"{MIN_SCRAPES} scrapes of {metrics_target}")

        def moving(expr: str) -> Callable[[], bool]:
            def check() -> bool:
                res = prom.query(expr).get("data", {}).get("result", [])
                return any(float(r["value"][1]) > 0 for r in res)

            return check

        # the run sends in bursts (one window at a time): wait until Prometheus has seen the
        # histograms move, so rate() has something to say
        for expr in (
            "increase(dispatcher_send_duration_seconds_count[5m])",
            "increase(dispatcher_throttle_wait_seconds_count[5m])",
        ):
            wait_for(moving(expr), 60, expr)
        up = prom.query('up{job="dispatcher"}')["data"]["result"]
        assert up and up[0]["value"][1] == "1", up
        yield prom
    finally:
        prom.proc.stop()


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
                out.append((path.name, panel["title"], panel["type"], all_values(target["expr"])))
    return out


def all_values(expr: str) -> str:
    """A query as Grafana sends it with every template variable at All: ``.*``."""
    for var in ("$brand", "$campaign", "$sender", "$run"):
        expr = expr.replace(var, ".*")
    return expr


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


# ------------------------------------------------- the distributed stack (issue 20, item 7)
#: DB of the session's own redis-server (integration 12, faults 13, failover 15)
REDIS_DB = 11


#: the faulty run's carrier: 30007 filtering (the guard pauses the run) and the other codes the
#: reputation panels watch (30003 unreachable, 30005 unknown, 30006 landline, 21610 opted out)
FAULTY_ERRORS = {30007: 0.2, 30003: 0.05, 30005: 0.05, 30006: 0.05, 21610: 0.05}
#: the faulty run sends one body to everyone (the repetition panels see identical sends)
IDENTICAL = "Acme Corporation: your maintenance contract is due for renewal on [date]."


@dataclass
class Distributed:
    prometheus: Prometheus
    db: Any
    run_id: int
    #: when Prometheus was ready (its first scrapes follow): the sampled span of every series
    ready_at: float
    faulty: bool


def _inbound(stack: Any, pairs: list[tuple[str, str]]) -> None:
    url = f"http://127.0.0.1:{stack.sandbox_port}/_sandbox/inbound"
    for body, phone in pairs:
        httpx.post(url, json={"from": phone, "body": body}, timeout=10).raise_for_status()


@pytest.fixture(scope="module", params=["faulty", "healthy"])
def distributed(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Distributed]:
    """Webhooks, a worker pool (`dispatcher worker`) and the scheduler as real processes on
    PostgreSQL and Redis, scraped by one Prometheus (jobs webhooks, worker, scheduler), after a
    run with throttle deferrals, HELP, STOP and START, and either carrier errors (``faulty``:
    30007 filtering makes the guard pause the run; 30003/30005/30006/21610 too; one identical
    body for everyone; a natural-language STOP from someone whose message is still queued) or
    none (``healthy``: the run completes; every panel still has data)."""
    faulty = request.param == "faulty"
    from dispatcher import run_report
    from tests.harness import DISPATCHER, TEMPLATE, deployment, launch, seed
    from tests.servers import fresh_postgres_database, redis_url

    binary = ensure_prometheus()
    work = tmp_path_factory.mktemp("distributed")
    with (
        fresh_postgres_database() as pg,
        deployment(redis_url(REDIS_DB), pg, work / "logs") as (
            stack,
            db,
        ),
    ):
        # 20 per 2 s: the campaign window binds (deferrals)
        seeded = seed(db, work, consented=120, opted_out=5, window_limit=20, window_seconds=2)
        carrier = work / "carrier.json"
        carrier.write_text(json.dumps({"delivery_errors": FAULTY_ERRORS if faulty else {}}))
        stack.start_sandbox(
            "--config", str(carrier), "--seed", "7",
            "--inbound-url", f"{stack.webhook_url}/twilio/inbound",
        )  # fmt: skip
        stack.start_webhooks()
        wport, sport = free_port(), free_port()
        stack.start("workers", [DISPATCHER, "worker", "--processes", "2", "--threads", "4",
                                "--metrics-port", str(wport), "--metrics-dir",
                                str(work / "multiproc")])  # fmt: skip
        stack.start("scheduler", [DISPATCHER, "scheduler", "--tick", "0.5", "--reconcile", "2",
                                  "--status-after", "5", "--metrics-port", str(sport)])  # fmt: skip
        targets = {
            "webhooks": [f"{stack.webhook_url}/metrics"],
            "worker": [f"http://127.0.0.1:{wport}/metrics"],
            "scheduler": [f"http://127.0.0.1:{sport}/metrics"],
        }
        (work / "prometheus").mkdir()
        prom = start_prometheus(binary, targets, work / "prometheus")
        try:
            wait_for(prom.ready, STARTUP_DEADLINE_S, "prometheus /-/ready")

            def primed_everywhere() -> bool:
                """Every job serves the campaign's counters at 0 (issue 20.4), scraped twice:
                the run's first sends are then seen by increase()."""
                r = prom.query(
                    "count by (job) (count_over_time(dispatcher_messages_sent_total[1m]) >= 2)"
                )
                return len(r.get("data", {}).get("result", [])) == 3

            wait_for(primed_everywhere, 60, "every job's primed counters scraped twice")
            ready_at = time.time()
            run_id = launch(db, seeded, template=IDENTICAL if faulty else TEMPLATE)

            until = "paused" if faulty else "completed"

            def settled() -> bool:
                stack.check_alive()
                with db.session() as s:
                    return (
                        run_report.progress(s, run_id, datetime.now(UTC), schedule=False)["state"]
                        == until
                    )

            wait_for(settled, 180, f"the run to be {until} (carrier errors: {faulty})")
            assert stack.carrier is not None
            texted = sorted({r["to"] for r in stack.carrier.records()})
            replies = [("HELP", texted[0]), ("STOP", texted[1]), ("START", texted[1])]
            if faulty:  # someone whose message still waits: the revocation suppresses it
                waiting = sorted(set(seeded.consented) - set(texted))
                assert waiting, "the guard paused the run after everyone was texted"
                replies.append(("please stop texting me", waiting[0]))
            _inbound(stack, replies)

            def everyone_up_and_moved() -> bool:
                ups = prom.query("up")["data"]["result"]
                opt = prom.query("sum(dispatcher_opt_outs_total)")["data"]["result"]
                ins = prom.query("sum(dispatcher_opt_ins_total)")["data"]["result"]
                pauses = prom.query("sum(dispatcher_guard_pauses_total)")["data"]["result"]
                return (
                    len(ups) == 3
                    and all(u["value"][1] == "1" for u in ups)
                    and bool(opt) and float(opt[0]["value"][1]) >= 1
                    and bool(ins) and float(ins[0]["value"][1]) >= 1
                    and bool(pauses) and float(pauses[0]["value"][1]) >= (1 if faulty else 0)
                )  # fmt: skip

            wait_for(everyone_up_and_moved, 60, "three targets up, the STOP and the pause seen")
            yield Distributed(prom, db, run_id, ready_at, faulty)
        finally:
            prom.proc.stop()


def test_every_panel_has_data_on_the_distributed_stack(distributed: Distributed) -> None:
    """Every panel query, with the variables at All, returns a series (a healthy 0 counts)."""
    empty = []
    now = time.time()
    for dashboard, title, _type, expr in PANEL_QUERIES:
        resp = distributed.prometheus.query(expr, now)
        assert resp.get("status") == "success", f"{title}: {resp.get('error')}"
        if not resp["data"]["result"]:
            empty.append(f"{dashboard}: {title}: {expr}")
    assert not empty, "panels without data:\n" + "\n".join(empty)


def test_the_run_view_equals_run_show_on_the_distributed_stack(distributed: Distributed) -> None:
    """The runs board's figures for the run = `run show --json` (run_report.progress), once
    the scheduler observed the same state (the run is paused: its rows no longer move)."""
    from dispatcher import run_report

    prom, run = distributed.prometheus, str(distributed.run_id)
    groups = {
        "sent": ("sent", "delivered"),
        "failed": ("failed", "undelivered"),
        "suppressed": ("suppressed",),
        "remaining": ("queued", "deferred", "sending", "unknown"),
    }

    def figures() -> tuple[dict[str, float], dict[str, int]]:
        with distributed.db.session() as s:
            p = run_report.progress(s, int(run), datetime.now(UTC), schedule=False)
        want = {g: sum(p["by_state"].get(x, 0) for x in states) for g, states in groups.items()}
        want["total"] = p["total"]
        got = {}
        for g, states in groups.items():
            res = prom.query(
                f'sum(dispatcher_run_messages{{run="{run}",state=~"{"|".join(states)}"}})'
            )
            got[g] = float(res["data"]["result"][0]["value"][1]) if res["data"]["result"] else -1
        res = prom.query(f'max(dispatcher_run_total_messages{{run="{run}"}})')["data"]["result"]
        got["total"] = float(res[0]["value"][1]) if res else -1
        return got, want

    last: list[Any] = []

    def agree() -> bool:
        got, want = figures()
        last[:] = [got, want]
        return got == {k: float(v) for k, v in want.items()}

    try:
        wait_for(agree, 60, "the run view to match run show")
    except TimeoutError:
        raise AssertionError(f"prometheus {last[0]} != run show {last[1]}") from None


# ------------------------------------------------- every panel's value against the database
def target_ref_ids() -> list[tuple[str, str, str, str]]:
    """(dashboard file, panel title, refId, expr) of every query of the committed JSON."""
    out = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        dash = json.loads(path.read_text(encoding="utf-8"))
        stack = list(dash.get("panels", []))
        while stack:
            panel = stack.pop(0)
            stack.extend(panel.get("panels", []))
            for target in panel.get("targets") or []:
                out.append((path.name, panel["title"], target["refId"], target["expr"]))
    return out


def test_every_panel_query_has_a_database_check_or_says_why_not() -> None:
    """A new panel needs an entry in tests/e2e/dashboard_checks.py: how the database computes
    its figure, or a one-line reason why it has no database equivalent."""
    from tests.e2e.dashboard_checks import CHECKS, NoDb

    keys = {(d, t, ref) for d, t, ref, _ in target_ref_ids()}
    missing = sorted(keys - set(CHECKS))
    assert not missing, "panel queries without a database check or a NoDb reason:\n" + "\n".join(
        f"  {k}" for k in missing
    )
    stale = sorted(set(CHECKS) - keys)
    assert not stale, f"entries for panels that no longer exist: {stale}"
    for key, entry in CHECKS.items():
        if isinstance(entry, NoDb):
            assert len(entry.reason) >= 20 and "\n" not in entry.reason, key
        else:
            assert entry.sql, f"{key}: say what the database computes"
            assert entry.tol.kind == "exact" or entry.tol.why, f"{key}: say why not exact"


def test_counter_view_replaces_range_functions_only() -> None:
    from tests.e2e.dashboard_checks import counter_view

    expr = (
        'sum by (a) (increase(x_total{a=~".*",b="c"}[1h])) / '
        "clamp_min(sum(rate(y_total[5m])), 1) + histogram_quantile(0.5, z_bucket)"
    )
    assert counter_view(expr) == (
        'sum by (a) ((x_total{a=~".*",b="c"})) / clamp_min(sum((y_total)), 1) '
        "+ histogram_quantile(0.5, z_bucket)"
    )


def _vector(resp: dict[str, Any], by: tuple[str, ...], expr: str) -> dict[tuple[str, ...], float]:
    assert resp.get("status") == "success", f"invalid query {expr!r}: {resp.get('error')}"
    out = {}
    for series in resp["data"]["result"]:
        key = tuple(series["metric"].get(label, "") for label in by)
        assert key not in out, f"{expr!r}: two series for {key} (labels {by} are not its own)"
        out[key] = float(series["value"][1])
    return out


def disagreements(dist: Distributed, at: float) -> list[str]:
    """Every (panel query, series) whose value is not the database's figure, read at ``at``."""
    from tests.e2e.dashboard_checks import (
        CHECKS,
        EXACT,
        Check,
        counter_view,
        increase_tolerance,
        range_functions,
        read_snapshot,
    )

    snap = read_snapshot(dist.db, at)
    wrong = []
    for d, title, ref, expr in target_ref_ids():
        entry = CHECKS[(d, title, ref)]
        if not isinstance(entry, Check):
            continue
        want = entry.db(snap)
        q = all_values(expr)
        funcs = range_functions(q)
        views = []
        if funcs:  # the counters, exactly; an increase as written within its extrapolation
            views.append((counter_view(q), entry.tol))
            if "increase" in funcs and entry.tol == EXACT:
                views.append((q, increase_tolerance(1.0, at - dist.ready_at - 2)))
        else:
            views.append((q, entry.tol))
        for view, tol in views:
            got = _vector(dist.prometheus.query(view, at), entry.by, view)
            for key in sorted(set(got) | set(want)):
                if key not in got and want.get(key, 0.0) == 0:
                    continue  # no series, nothing in the database either
                g, w = got.get(key), want.get(key, 0.0)
                if g is None or not tol.agrees(g, w):
                    wrong.append(
                        f"{d}: {title} [{ref}] {dict(zip(entry.by, key, strict=True))}: "
                        f"prometheus {g} != database {w} ({tol.kind} {tol.x or ''}) "
                        f"in {view}"
                    )
    return wrong


def test_every_panel_agrees_with_the_database_on_the_distributed_stack(
    distributed: Distributed,
) -> None:
    """Each panel query with a database equivalent (tests/e2e/dashboard_checks.py) returns the
    database's figure for every series, within the entry's tolerance (exact for counters), at
    one instant: the database read and the queries' evaluation time."""
    last: list[str] = []

    def agree() -> bool:
        # Prometheus evaluates at millisecond resolution: the database's figures use the same
        last[:] = disagreements(distributed, round(time.time(), 3))
        return not last

    try:
        wait_for(agree, 60, "every panel to agree with the database")
    except TimeoutError:
        raise AssertionError(
            f"{len(last)} panel series disagree with the database:\n" + "\n".join(last)
        ) from None
    if distributed.faulty:  # the run did exercise what the checks compare
        from tests.e2e.dashboard_checks import read_snapshot

        snap = read_snapshot(distributed.db, time.time())
        codes = {r.error_code for r in snap.rows if r.error_code}
        assert 30007 in codes and len(codes) >= 3, codes
        assert snap.pauses, "no guard pause"
        assert any(r.defer_reason == "throttle" for r in snap.rows), "no throttle deferral"
        revoked = [r for r in snap.rows if r.suppress_reason == "opted_out"]
        assert len(revoked) > 5, "the STOP of a waiting recipient suppressed nothing"
        assert len({r.body_hash for r in snap.sent()}) == 1, "identical bodies expected"
