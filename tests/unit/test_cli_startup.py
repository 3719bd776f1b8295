"""CLI start-up hygiene (issue 18 item 6): the quick commands import what they need and no
more, and the embedded database's schema check does not load Alembic when the schema is
current.  Times are measured by bench/cli_startup.py, not here."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dispatcher import store
from dispatcher.cli.app import GROUPS, _typer_command
from dispatcher.store import Database, quick_head

SEED = Path(__file__).parents[2] / "dispatcher" / "data" / "usa2p_seed004.json"
PHONE = "+14155551234"
#: never needed by `run show`, `run pause` or `consent revoke` on the embedded database
HEAVY = (
    "alembic",
    "fakeredis",
    "redis",
    "fastapi",
    "starlette",
    "uvicorn",
    "httpx",
    "twilio",
    "dramatiq",
    "workers",
    "dispatcher.cli.apikey",
    "dispatcher.cli.campaign",
    "dispatcher.cli.message",
    "dispatcher.cli.sandbox",
)
#: the compliance modules a report never needs (gates, lints, registration, keywords)
UNUSED_GATES = (
    "dispatcher.compliance.gates",
    "dispatcher.compliance.template_lint",
    "dispatcher.compliance.registration",
    "dispatcher.compliance.keywords",
)
#: SQLModel, the ORM and the models: what a command in SQLAlchemy Core does without
MODELS = (
    "sqlmodel",
    "sqlalchemy.orm",
    "dispatcher.models",
    "dispatcher.runs",
    "dispatcher.launch",
    "dispatcher.ledger",
    "dispatcher.registry",
    "dispatcher.outbox",
    "dispatcher.contacts",
)

CHILD = """
import sys
from dispatcher.cli.app import main
sys.argv = ["dispatcher", *sys.argv[1:]]
try:
    main()
except SystemExit as e:
    code = e.code
else:
    code = 0
print("\\n" + " ".join(sorted(m for m in sys.modules if "." not in m or m.startswith("dispatcher")
                              or m.startswith("workers") or m == "sqlalchemy.orm")))
sys.exit(code)
"""


def _modules(env: dict[str, str], *args: str) -> set[str]:
    r = subprocess.run(
        [sys.executable, "-c", CHILD, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=env["HOME_DIR"],
    )
    assert r.returncode == 0, r.stderr
    return set(r.stdout.splitlines()[-1].split())


@pytest.fixture
def seeded(cli_env: Path) -> dict[str, str]:
    from dispatcher.cli.app import app

    def run(*args: str) -> None:
        r = CliRunner().invoke(app, list(args), catch_exceptions=False)
        assert r.exit_code == 0, r.stderr

    run("brand", "add", "Acme Corporation")
    run("campaign", "import", str(SEED))
    # one contact, so that the scheduled run's report computes a schedule (quiet hours)
    contacts = cli_env / "contacts.csv"
    contacts.write_text(f"phone,name,consent_evidence,consented_at\n{PHONE},Ann,form,2025-01-01\n")
    run("contacts", "import", str(contacts), "--brand", "1")
    run("run", "launch", "--campaign", "1", "--template", "Hi", "--at", "2099-01-01T10:00")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCHER_")}
    return {
        **env,
        "DISPATCHER_DATABASE_URL": f"sqlite:///{cli_env}/cli.db",
        "HOME_DIR": str(cli_env),
    }


@pytest.mark.parametrize(
    "args, also_absent",
    [
        # the schedule model needs compliance.quiet_hours (and its phonenumbers) only: the
        # package's __init__ is lazy
        (["run", "show", "1"], ("dispatcher.cli.consent", *UNUSED_GATES)),
        (["run", "pause", "1"], ("phonenumbers", "rich", "dispatcher.cli.consent", *MODELS)),
        # the one consent service (dispatcher/consent.py) works in Core: no models either
        (["consent", "revoke", PHONE, "--brand", "1"], ("rich", "dispatcher.cli.run", *MODELS)),
        (
            ["consent", "revoke", "--file", "phones.csv", "--brand", "1"],
            ("rich", "dispatcher.cli.run", *MODELS),
        ),
        (
            ["consent", "grant", PHONE, "--brand", "1", "--evidence", "form"],
            ("rich", "dispatcher.cli.run", *MODELS),
        ),
    ],
)
def test_a_quick_command_imports_only_its_own_group(seeded, args, also_absent):
    (Path(seeded["HOME_DIR"]) / "phones.csv").write_text(f"phone\n{PHONE}\n+14155551235\n")
    loaded = _modules(seeded, *args)
    assert args[0] in {m.rpartition(".")[2] for m in loaded if m.startswith("dispatcher.cli.")}
    assert not {m for m in loaded if m.split(".")[0] in HEAVY or m in HEAVY}
    assert not set(also_absent) & loaded


def test_importing_the_cli_loads_no_database_or_web_framework():
    code = "import sys, dispatcher.cli.app; print(' '.join(sorted(sys.modules)))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    loaded = {m.split(".")[0] for m in r.stdout.split()}
    assert not loaded & {"sqlalchemy", "sqlmodel", "pydantic_settings", "rich", *HEAVY}


def test_the_root_help_lists_every_group_without_importing_one(cli_env):
    r = subprocess.run(
        [sys.executable, "-c", CHILD, "--help"], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    loaded = set(r.stdout.splitlines()[-1].split())
    groups = {module for module, _ in GROUPS.values()}
    assert not groups & loaded
    # workers.cli is loaded: its entry point adds `dispatcher worker`, listed with the groups
    assert not loaded & ({"sqlalchemy", "sqlmodel", *HEAVY} - {"workers"})
    for name, (_, help) in GROUPS.items():
        assert re.search(rf"{re.escape(name)}\s+{re.escape(help)}", r.stdout), name


def test_the_listed_help_is_each_groups_own():
    """The listing shows ``GROUPS``' line; a group that gains its own help must say the same."""
    from importlib import import_module

    for name, (module, help) in GROUPS.items():
        assert _typer_command(import_module(module).app, name, help).help == help, name


def test_the_core_views_match_the_models():
    """dispatcher.tables are views of dispatcher.models' tables: same names, same types."""
    from sqlalchemy.sql.expression import TableClause

    from dispatcher import models, tables

    views = {v.name: v for v in vars(tables).values() if isinstance(v, TableClause)}
    assert views
    for name, view in views.items():
        owner = models.SQLModel.metadata.tables[name]
        for col in view.c:
            assert col.name in owner.c, f"{name}.{col.name} is not a column of the model"
            mine, theirs = col.type, owner.c[col.name].type
            assert mine._type_affinity is theirs._type_affinity, (name, col.name, mine, theirs)
            assert getattr(mine, "timezone", None) == getattr(theirs, "timezone", None)


def test_a_run_paused_in_core_reads_back_as_the_model_does(sqlite_db):
    from dispatcher import run_state, runs
    from dispatcher.halts import NoHaltKeys
    from dispatcher.models import Brand, Campaign, Run
    from dispatcher.run_report import run_dict

    with sqlite_db.session() as s:
        b = Brand(name="B")
        s.add(b)
        s.flush()
        c = Campaign(
            sid="QE" + "a" * 32,
            brand_id=b.id,
            description="d",
            message_flow="f",
            us_app_to_person_usecase="MARKETING",
        )
        s.add(c)
        s.flush()
        r = Run(campaign_id=c.id, template="Hi", audience={"kind": "all"}, state="running")
        s.add(r)
        s.flush()
        rid = r.id
    with sqlite_db.begin() as conn:
        assert run_state.pause(conn, rid, "x" * 2000, halts=NoHaltKeys()) is True
        assert run_state.pause(conn, rid, "again", halts=NoHaltKeys()) is False
        row = run_state.run_dict(run_state.run_row(conn, rid))
    with sqlite_db.session() as s:
        assert row == run_dict(runs.get_run(s, rid))
    assert row["state"] == "paused" and len(row["pause_reason"]) == 1000
    assert row["audience"] == {"kind": "all"} and row["created_at"].tzinfo is not None


# ------------------------------------------------------------------------------ schema check
def test_quick_head_agrees_with_alembic():
    assert quick_head() is not None
    assert quick_head() == Database("sqlite://").head_revision()


def _versions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *pairs: tuple[str, str]) -> None:
    (tmp_path / "versions").mkdir()
    for rev, down in pairs:
        (tmp_path / "versions" / f"{rev}.py").write_text(
            f'"""m"""\nrevision = "{rev}"\ndown_revision = {down}\n'
            "branch_labels = None\ndepends_on = None\n"
        )
    monkeypatch.setattr(store, "MIGRATIONS", tmp_path)


def test_quick_head_of_a_linear_history(tmp_path, monkeypatch):
    _versions(tmp_path, monkeypatch, ("a", "None"), ("b", '"a"'), ("c", '"b"'))
    assert quick_head() == "c"


@pytest.mark.parametrize(
    "pairs",
    [
        [("a", "None"), ("b", '"a"'), ("c", '"a"')],  # two heads
        [("a", "None"), ("b", '"a"'), ("c", '"a"'), ("m", '("b", "c")')],  # a merge
        [("a", "None"), ("b", '"x"')],  # a parent that is not there
    ],
)
def test_quick_head_leaves_anything_else_to_alembic(tmp_path, monkeypatch, pairs):
    _versions(tmp_path, monkeypatch, *pairs)
    assert quick_head() is None


def test_a_current_schema_is_checked_without_alembic(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    db = Database(url)
    db.ensure_schema()  # a new database: upgraded by Alembic
    assert db.current_revision() == db.head_revision()
    db.dispose()
    code = (
        "import sys; from dispatcher.store import open_database; "
        f"open_database({url!r}); print('alembic' in sys.modules)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "False", r.stderr
