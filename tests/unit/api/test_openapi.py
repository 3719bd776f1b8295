"""The committed docs/openapi.json is the app's document; schemathesis, with every check and
every phase over every operation (a key holding every scope), finds nothing (issue 23)."""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from schemathesis.config import SchemathesisConfig

from dispatcher import contacts, registry, runs
from dispatcher.api import create_api_app
from dispatcher.api.openapi import document, render
from dispatcher.api.routes import NDJSON_TYPES
from dispatcher.launch import submit_run
from dispatcher.store import Database
from tests.unit.api.conftest import SEED, make_key, make_runtime

COMMITTED = Path(__file__).parents[3] / "docs" / "openapi.json"


def test_committed_openapi_matches_the_app(app):
    assert COMMITTED.exists(), "run: python -m dispatcher.api.openapi > docs/openapi.json"
    committed = json.loads(COMMITTED.read_text(encoding="utf-8"))
    assert committed == app.openapi() == document(), (
        "docs/openapi.json is stale: python -m dispatcher.api.openapi > docs/openapi.json"
    )
    assert COMMITTED.read_text(encoding="utf-8") == render()


def test_served_openapi_lists_every_operation(client):
    doc = client.get("/openapi.json", token=None).json()
    ops = {(m.upper(), p) for p, item in doc["paths"].items() for m in item}
    assert ops == {
        ("POST", "/v1/runs"),
        ("POST", "/v1/runs:upload"),
        ("GET", "/v1/runs/{run_id}"),
        ("GET", "/v1/runs"),
        ("GET", "/v1/runs/{run_id}/messages"),
        ("GET", "/v1/contacts/{phone}"),
        ("POST", "/v1/runs/{run_id}:pause"),
        ("POST", "/v1/runs/{run_id}:resume"),
        ("POST", "/v1/runs/{run_id}:cancel"),
        ("PUT", "/v1/contacts/{phone}"),
        ("POST", "/v1/consent"),
        ("GET", "/v1/contacts/{phone}/consent"),
        ("POST", "/v1/webhooks"),
        ("GET", "/v1/webhooks"),
        ("GET", "/v1/webhooks/{subscription_id}"),
        ("DELETE", "/v1/webhooks/{subscription_id}"),
        ("GET", "/v1/webhooks/{subscription_id}/deliveries"),
    }
    assert doc["components"]["securitySchemes"]["ApiKey"]["scheme"] == "bearer"


#: the refusals of a schema-valid request that no schema can state (docs/api.md, Errors): the
#: numbering plan, the time zone database, a rule between header and body, the launch checks
SEMANTIC_REFUSALS = {
    "invalid-phone",
    "unknown-time-zone",
    "idempotency-key-mismatch",
    "launch-refused",
    "launch-warnings",
}


@schemathesis.serializer(*NDJSON_TYPES)
def _ndjson(ctx: object, value: object) -> bytes:
    """The document writes an NDJSON body as the array of its lines; anything but an array is
    sent as a plain (indented) JSON document, which is not NDJSON."""
    if isinstance(value, list):
        return "".join(json.dumps(v, ensure_ascii=False) + "\n" for v in value).encode()
    return json.dumps(value, indent=2).encode()


@schemathesis.check
def refusals_are_documented_semantics(ctx: Any, response: Any, case: Any) -> None:
    """A schema-valid request may be refused (400/422) only with a problem type no schema can
    state; a 'validation' problem there is a rule missing from the document."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or response.status_code < 400:
        return None
    if response.status_code not in (400, 422):
        return None
    kind = str(response.json().get("type", "")).rsplit(":", 1)[-1]
    if kind not in SEMANTIC_REFUSALS:
        raise AssertionError(
            f"a schema-valid request was refused: {response.status_code} {kind}: "
            f"{response.json().get('detail')}"
        )
    return None


def _fuzz_world(db: Database) -> tuple[dict[str, Any], str]:
    """The brand and campaign the document's examples name, contacts, a run, a key."""
    import copy

    from dispatcher.api.routes import EXAMPLE_BRAND, EXAMPLE_CAMPAIGN

    with db.session() as s:
        brand = registry.add_brand(s, name=EXAMPLE_BRAND)
        doc = copy.deepcopy(json.loads(SEED.read_text()))
        doc["sid"] = EXAMPLE_CAMPAIGN
        campaign, _ = registry.import_campaign(s, doc, brand=brand)
        for i in range(3):
            contacts.upsert_contact(s, f"+1415555010{i}", attributes={"plan": "gold"})
        world = {
            "brand": brand.name,
            "brand_id": brand.id,
            "campaign": campaign.sid,
            "campaign_id": campaign.id,
        }
    return world, make_key(db, "fuzz")


def _config(token: str, world: dict[str, Any], max_examples: int) -> SchemathesisConfig:
    def bind(name: str, probability: float = 0.5) -> dict[str, Any]:
        return {"dictionary": name, "probability": probability}

    positive = ["2xx", "3xx", "400", "401", "403", "404", "409", "422", "429"]
    config = SchemathesisConfig.from_dict(
        {
            "seed": SEED_VALUE,
            "headers": {"Authorization": f"Bearer {token}"},
            "generation": {
                "max-examples": max_examples,
                "deterministic": True,
                "database": "none",
            },
            # checked by refusals_are_documented_semantics: only the documented types
            "checks": {"positive_data_acceptance": {"expected-statuses": positive}},
            # real names half the time, so that generated requests reach real rows (bodies
            # only: a path parameter drawn from a dictionary may replace a negative one and
            # still be counted negative); path parameters have examples in the document
            "dictionaries": {
                "campaigns": {"values": [world["campaign"], str(world["campaign_id"])]},
                "brands": {"values": [world["brand"], str(world["brand_id"])]},
                "phones": {"values": ["+14155550100", "(415) 555-0101", "4155550102"]},
                "templates": {"values": [TEMPLATE, "Acme: hi [name], your order shipped."]},
            },
            "parameters": {
                "body.campaign": bind("campaigns"),
                "body.brand": bind("brands"),
                "body.phone": bind("phones"),
                "body.template": bind("templates"),
            },
        }
    )
    config.projects.override.checks.update(included_check_names=["all"])
    return config


#: per operation and phase; DISPATCHER_TEST_FUZZ_EXAMPLES / _SEED for a longer or another run
MAX_EXAMPLES = int(os.environ.get("DISPATCHER_TEST_FUZZ_EXAMPLES", "50"))
SEED_VALUE = int(os.environ.get("DISPATCHER_TEST_FUZZ_SEED", "23"))
TEMPLATE = "Acme: your appointment is tomorrow at 10. Reply STOP to opt out"


@pytest.mark.timeout(600)
def test_schemathesis_all_checks_every_operation(any_db):
    """schemathesis with every check (--checks all), every phase (examples, coverage, fuzzing,
    stateful), over every operation, the upload included: no failure, no error.  Seeded and
    deterministic; prints the number of cases per operation."""
    from schemathesis.engine import events, from_schema

    db = any_db  # SQLite; PostgreSQL too (integration): NUL, ranges and types differ there
    world, token = _fuzz_world(db)
    rt = make_runtime(db)
    run = runs.LaunchRequest(
        campaign=world["campaign"], template=TEMPLATE, audience={"kind": "all"}
    )
    assert submit_run(db, run, now=rt.clock.now()).run["id"] == 1  # the document's example
    app = create_api_app(rt)
    config = _config(token, world, MAX_EXAMPLES)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=config)
    cases: Counter[str] = Counter()
    statuses: defaultdict[str, Counter[str]] = defaultdict(Counter)
    phases: dict[str, str] = {}
    failures: list[str] = []
    errors: list[str] = []
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished | events.FuzzScenarioFinished):
            recorder = event.recorder
            cases[recorder.label] += len(recorder.interactions)
            for sent in recorder.interactions.values():
                if sent.response is not None:
                    statuses[recorder.label][f"{sent.response.status_code // 100}xx"] += 1
            for case_id, checks in recorder.checks.items():
                for check in checks:
                    if check.status.name == "FAILURE" and len(failures) < 20:
                        sent = recorder.interactions.get(case_id)
                        failures.append(f"{recorder.label}: {check.name}: {_described(sent)}")
        elif isinstance(event, events.NonFatalError | events.FatalError):
            errors.append(repr(getattr(event, "value", getattr(event, "exception", event))))
        elif isinstance(event, events.PhaseFinished):
            phases[event.phase.name.value] = event.status.name
    print(
        f"\nschemathesis ({db.engine.dialect.name}): {sum(cases.values())} cases, phases {phases}"
    )
    for label, n in sorted(cases.items()):
        print(f"  {n:5d}  {label:45s} {dict(sorted(statuses[label].items()))}")
    assert not errors, errors
    assert not failures, "\n".join(failures)
    documented = {
        f"{m.upper()} {p}" for p, item in schema.raw_schema["paths"].items() for m in item
    }
    assert documented <= set(cases), documented - set(cases)
    assert {"examples", "coverage", "fuzzing", "stateful"} <= set(phases), phases
    assert "ERROR" not in phases.values(), phases


def _why(check: Any) -> str:  # a schemathesis CheckNode
    failure = check.failure_info.failure if check.failure_info else None
    return " ".join(str(getattr(failure, "message", "") or "").split())[:400]


def _described(interaction: Any) -> str:  # a schemathesis Interaction
    if interaction is None or interaction.response is None:
        return "no response"
    req = interaction.request
    return (
        f"{req.method} {req.uri} {dict(req.headers)} {str(req.body)[:600]} -> "
        f"{interaction.response.status_code} {interaction.response.content[:300]!r}"
    )


def test_served_app_document_is_the_committed_one(tmp_path):
    """`dispatcher serve` mounts the API beside the webhooks: its /openapi.json is the same."""
    from dispatcher.runtime import Runtime
    from dispatcher.settings import Settings
    from dispatcher.webhooks import create_app

    rt = Runtime(Settings(database_url=f"sqlite:///{tmp_path}/x.db"))
    assert create_app(rt).openapi() == json.loads(COMMITTED.read_text(encoding="utf-8"))
