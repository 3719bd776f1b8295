"""Template safety at launch (issue 18, finding 4) through the one launch path (issue 19): the
CLI, the HTTP API and ``notify()`` refuse the same mistakes with the same rule.

The world: brand "Northwind Dental", a verified campaign that declared no links, ten consented
contacts of whom seven have a ``date`` attribute and three do not.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine, event
from sqlmodel import func, select
from typer.testing import CliRunner

from dispatcher import contacts, ledger, registry, runs
from dispatcher.api import create_api_app
from dispatcher.cli.app import app
from dispatcher.errors import DispatcherError
from dispatcher.models import Contact, OutboxMessage, Run
from dispatcher.notify import notify
from tests.unit.api.conftest import ApiClient, make_key, make_runtime

SEED = Path(__file__).parents[2] / "dispatcher" / "data" / "usa2p_seed004.json"
BRAND = "Northwind Dental"
GOOD = "Your cleaning is on [date]."
WITH_DATE, WITHOUT_DATE = 7, 3


@pytest.fixture
def world(cli_env: Path) -> dict[str, Any]:
    """The CLI's database, seeded; ``api`` and ``rt`` work on the same database."""
    from dispatcher.cli.common import database

    db = database()
    with db.session() as s:
        brand = registry.add_brand(s, name=BRAND)
        doc = {
            **json.loads(SEED.read_text()),
            "campaign_status": "VERIFIED",
            "has_embedded_links": False,
        }
        campaign, _ = registry.import_campaign(s, doc, brand=brand)
        for i in range(WITH_DATE + WITHOUT_DATE):
            c, _ = contacts.upsert_contact(
                s,
                f"+1212555{i:04d}",
                name=f"Pat{i} Lee",
                attributes={"date": "May 1", "plan": "gold"} if i < WITH_DATE else {"plan": "gold"},
            )
            ledger.append(
                s,
                contact_id=c.id,
                brand_id=brand.id,
                action="grant",
                source="web_form",
                actor="test",
                evidence_text="web form",
            )
        sid = campaign.sid
    rt = make_runtime(db)
    return {
        "db": db,
        "sid": sid,
        "rt": rt,
        "api": ApiClient(create_api_app(rt), make_key(db, "billing")),
        "dir": cli_env,
    }


def _cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def _launch(w: dict[str, Any], template: str, *extra: str) -> Any:
    return _cli("run", "launch", "--campaign", w["sid"], "--template", template, *extra)


def _error_line(res: Any) -> str:
    """The CLI failed the way an operator expects: exit 1, one ``error:`` line, no traceback."""
    assert res.exit_code == 1, (res.exit_code, res.stdout, res.stderr)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert "Traceback" not in res.stdout + res.stderr
    return lines[0]


def _runs(w: dict[str, Any]) -> int:
    with w["db"].session() as s:
        return s.exec(select(func.count()).select_from(Run)).one()


def _api_run(w: dict[str, Any], template: str, **kw: Any) -> Any:
    body = {"campaign": w["sid"], "template": template, "audience": {"kind": "all"}, **kw}
    return w["api"].post("/v1/runs", json=body)


def _problem(r: Any) -> dict[str, Any]:
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    return r.json()


def _rules(doc: dict[str, Any]) -> list[str]:
    return [e["rule"] for e in doc["errors"]]


def _notify(w: dict[str, Any], template: str, **kw: Any) -> Any:
    return notify(w["rt"], w["sid"], template, {"kind": "all"}, **kw)


# ------------------------------------------------------------------- a template file that is not
def test_cli_missing_template_file_is_an_error_in_a_child_process(world):
    """`--template reminder.txt` where there is no such file: one line, exit 1, nothing stored
    (it used to become the body "Northwind Dental: reminder.txt. Reply STOP to opt out.")."""
    env = {**os.environ, "DISPATCHER_DATABASE_URL": f"sqlite:///{world['dir']}/cli.db"}
    for extra in ([], ["--dry-run"]):
        p = subprocess.run(
            [sys.executable, "-m", "dispatcher.cli.app", "run", "launch"]
            + ["--campaign", world["sid"], "--template", "reminder.txt", *extra],
            cwd=world["dir"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert p.returncode == 1, (p.stdout, p.stderr)
        lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr
        assert "reminder.txt" in lines[0] and "no such file" in lines[0]
        assert p.stdout == ""
    assert _runs(world) == 0


@pytest.mark.parametrize("text", ["reminder.txt", "templates/reminder", "./r.tmpl"])
def test_cli_path_like_templates_that_do_not_exist(world, text):
    line = _error_line(_launch(world, text))
    assert text in line and "no such file" in line
    assert _runs(world) == 0


def test_cli_template_file_that_exists_is_read(world):
    (world["dir"] / "reminder.txt").write_text(f"{GOOD}\n", encoding="utf-8")
    res = _launch(world, "reminder.txt", "--dry-run", "--json", "--force")
    assert res.exit_code == 0, res.stderr
    first = json.loads(res.stdout)["first_message"]
    assert first == "Northwind Dental: Your cleaning is on May 1. Reply STOP to opt out."


def test_api_and_notify_refuse_a_file_name_as_template(world):
    doc = _problem(_api_run(world, "reminder.txt"))
    assert _rules(doc) == ["template_looks_like_path"] and doc["field"] == "template"
    with pytest.raises(DispatcherError) as e:
        _notify(world, "reminder.txt")
    assert e.value.rule == "template_looks_like_path"  # type: ignore[attr-defined]
    assert _runs(world) == 0


# -------------------------------------------------------------------------------- fields
def test_cli_unknown_field_names_it_and_the_closest_known_name(world):
    for extra in ([], ["--dry-run"]):
        line = _error_line(_launch(world, "Hi [fist_name], your cleaning is on [date].", *extra))
        assert "[fist_name]" in line and "[first_name]" in line
    assert _runs(world) == 0


def test_api_and_notify_unknown_field(world):
    doc = _problem(_api_run(world, "Hi [fist_name]."))
    assert _rules(doc) == ["unknown_field"]
    assert "[first_name]" in doc["detail"] and doc["field"] == "template"
    with pytest.raises(DispatcherError) as e:
        _notify(world, "Hi [fist_name].")
    assert e.value.rule == "unknown_field"  # type: ignore[attr-defined]
    assert _runs(world) == 0


def test_field_some_contacts_lack_is_a_dry_run_warning_with_the_count(world):
    res = _launch(world, GOOD, "--dry-run", "--json")
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    [w] = doc["warnings"]
    assert (w["rule"], w["count"]) == ("field_missing", WITHOUT_DATE)
    assert "[date]" in w["message"] and f"{WITHOUT_DATE} of 10" in w["message"]
    # the rows are suppressed with their reason, as before: the figure agrees with the warning
    assert doc["suppressed"] == {"template_variable_missing": WITHOUT_DATE}
    text = _launch(world, GOOD, "--dry-run")  # brackets are text, not terminal markup
    assert text.exit_code == 0, text.stderr
    assert f"warning: {WITHOUT_DATE} of 10 recipients have no [date]" in text.stderr
    assert "[field_missing]" in text.stderr


def test_cli_warnings_stop_a_real_launch_until_forced(world):
    line = _error_line(_launch(world, GOOD))
    assert f"{WITHOUT_DATE} of 10" in line and "--force" in line
    assert _runs(world) == 0
    res = _launch(world, GOOD, "--force", "--json")
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["created"] is True and [w["rule"] for w in doc["warnings"]] == ["field_missing"]
    assert _runs(world) == 1


def test_api_and_notify_warnings_need_force(world):
    doc = _problem(_api_run(world, GOOD))
    assert doc["type"].endswith("launch-warnings") and _rules(doc) == ["field_missing"]
    assert doc["errors"][0]["count"] == WITHOUT_DATE and "force" in doc["detail"]
    with pytest.raises(DispatcherError) as e:
        _notify(world, GOOD)
    assert e.value.rule == "field_missing"  # type: ignore[attr-defined]
    assert _runs(world) == 0
    r = _api_run(world, GOOD, force=True)
    assert r.status_code == 201, r.text
    assert [w["rule"] for w in r.json()["dry_run"]["warnings"]] == ["field_missing"]
    res = _notify(world, "Pat: your cleaning is on [date].", force=True)
    assert res["created"] and res["dry_run"]["warnings"][0]["count"] == WITHOUT_DATE
    assert _runs(world) == 2


def test_field_everyone_lacks_is_an_error_not_a_warning(world):
    with world["db"].session() as s:  # a key someone has, but with no value anywhere
        c = contacts.get_contact(s, "+12125550000")
        c.attributes = {**c.attributes, "room": ""}
        s.add(c)
    line = _error_line(_launch(world, "Room [room] on [date].", "--force"))
    assert "[room]" in line
    doc = _problem(_api_run(world, "Room [room].", force=True))
    assert _rules(doc) == ["field_missing"]


def test_list_audience_fields_come_from_the_recipients_variables(world):
    r = world["api"].post(
        "/v1/runs",
        json={
            "campaign": world["sid"],
            "template": "Your cleaning is on [dat].",
            "recipients": [{"phone": "+13125550100", "variables": {"date": "May 2"}}],
        },
    )
    doc = _problem(r)
    assert _rules(doc) == ["unknown_field"] and "[date]" in doc["detail"]
    csvf = world["dir"] / "list.csv"
    csvf.write_text("phone,date\n+13125550100,May 2\n+13125550101,\n", encoding="utf-8")
    res = _launch(world, GOOD, "--audience", str(csvf), "--dry-run", "--json")
    assert res.exit_code == 0, res.stderr
    [w] = json.loads(res.stdout)["warnings"]
    assert (w["rule"], w["count"]) == ("field_missing", 1) and "1 of 2" in w["message"]
    ok = _launch(world, "Pat: your cleaning is on [date].", "--audience", str(csvf), "--force")
    assert ok.exit_code == 0, ok.stderr
    with world["db"].session() as s:
        assert s.exec(select(func.count()).select_from(OutboxMessage)).one() == 2


def test_an_upload_is_checked_over_its_staged_rows(world):
    lines = [
        {"campaign": world["sid"], "template": "Pat: your cleaning is on [date]."},
        {"phone": "+13125550100", "variables": {"date": "May 2"}},
        {"phone": "+13125550101", "variables": {}},
    ]
    body = "\n".join(json.dumps(x) for x in lines) + "\n"
    headers = {"Content-Type": "application/x-ndjson"}
    doc = _problem(world["api"].post("/v1/runs:upload", content=body, headers=headers))
    assert _rules(doc) == ["field_missing"] and doc["errors"][0]["count"] == 1
    with world["db"].session() as s:  # rolled back whole: no run, no row, no new contact
        assert s.exec(select(func.count()).select_from(OutboxMessage)).one() == 0
        assert s.exec(select(func.count()).select_from(Contact)).one() == 10
    lines[0]["force"] = True
    body = "\n".join(json.dumps(x) for x in lines) + "\n"
    r = world["api"].post("/v1/runs:upload", content=body, headers=headers)
    assert r.status_code == 201, r.text
    assert r.json()["dry_run"]["warnings"][0]["count"] == 1 and r.json()["run"]["total"] == 2


# ---------------------------------------------------------------------------------- lint
LINTED = [
    ("Book now: https://bit.ly/3xYz", "url_shortener"),
    ("Book now at https://northwind.example/book", "undeclared_link"),
    ("Our CBD oil is back in stock.", "prohibited_content"),
]


@pytest.mark.parametrize(("template", "rule"), LINTED)
def test_lint_error_refuses_the_launch_everywhere_with_the_same_rule(world, template, rule):
    line = _error_line(_launch(world, template))
    assert rule in line
    assert rule in _error_line(_launch(world, template, "--dry-run"))
    assert rule in _error_line(_launch(world, template, "--force"))  # never for errors
    doc = _problem(_api_run(world, template, force=True))
    assert rule in _rules(doc) and doc["type"].endswith("launch-refused")
    assert rule in doc["detail"]
    with pytest.raises(DispatcherError) as e:
        _notify(world, template, force=True)
    assert rule in [i.rule for i in e.value.issues]  # type: ignore[attr-defined]
    assert _runs(world) == 0


def test_lint_sees_the_template_with_placeholders_for_fields(world):
    """A field beside a shortener's host is still a shortener link; a field alone is not."""
    assert "url_shortener" in _error_line(_launch(world, "Track it: bit.ly/[date]"))
    assert _launch(world, "Track it on [date].", "--dry-run").exit_code == 0


# ------------------------------------------------------------------------------- send_at
def test_send_at_in_the_past_is_refused_with_the_time_and_now(world):
    # the CLI shows times in the operator's zone (DISPATCHER_DEFAULT_TIMEZONE: New York)
    ny = ZoneInfo("America/New_York")
    before = f"(now {datetime.now(ny):%Y-%m-%d} "
    line = _error_line(_launch(world, "Pat: see you soon.", "--at", "2000-01-01T12:00:00Z"))
    assert "start time 2000-01-01 07:00:00 EST is in the past" in line
    assert before in line or f"(now {datetime.now(ny):%Y-%m-%d} " in line
    line = _error_line(_launch(world, "Pat: see you soon.", "--at", "2000-01-01T09:00"))
    assert "start time 2000-01-01 09:00:00 EST" in line  # no offset: the operator's zone
    assert "2000-01-01" in _error_line(
        _launch(world, "Pat: see you soon.", "--at", "2000-01-01T12:00Z", "--dry-run")
    )
    doc = _problem(_api_run(world, "Pat: see you soon.", send_at="2000-01-01T00:00:00Z"))
    assert _rules(doc) == ["send_at_in_past"] and doc["field"] == "send_at"
    assert "2000-01-01" in doc["detail"] and "2026-01-05" in doc["detail"]  # the API's clock
    with pytest.raises(DispatcherError) as e:
        _notify(world, "Pat: see you soon.", send_at=datetime(2000, 1, 1, tzinfo=UTC))
    assert e.value.rule == "send_at_in_past"  # type: ignore[attr-defined]
    assert _runs(world) == 0


def test_send_at_a_moment_ago_is_within_the_clock_skew_tolerance(world):
    now = world["rt"].clock.now()
    ok = _api_run(world, "Pat: see you soon.", send_at=(now - timedelta(minutes=4)).isoformat())
    assert ok.status_code == 201, ok.text
    late = _api_run(world, "Pat: see you.", send_at=(now - timedelta(minutes=6)).isoformat())
    assert _rules(_problem(late)) == ["send_at_in_past"]


def test_a_replay_is_not_checked_again(world):
    """An idempotent retry after send_at has passed returns the run it made, not a refusal."""
    rt = world["rt"]
    at = rt.clock.now() + timedelta(minutes=10)
    body = {"send_at": at.isoformat(), "idempotency_key": "remind-1"}
    first = _api_run(world, "Pat: see you soon.", **body)
    assert first.status_code == 201, first.text
    rt.clock.advance(timedelta(hours=2))
    again = _api_run(world, "Pat: see you soon.", **body)
    assert again.status_code == 200 and again.json()["run"]["id"] == first.json()["run"]["id"]


# ------------------------------------------------------------------------- one launch path
def test_cli_launch_survives_the_idempotency_race(world):
    """Another launch with the same key commits between this launch's look-up and its insert:
    the CLI reports the winner's run (as the API does), not an internal error."""
    winner = runs.LaunchRequest(
        world["sid"], "Pat: see you soon.", {"kind": "all"}, idempotency_key="k-1"
    )
    raced: list[bool] = []

    def race(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if not raced and statement.lstrip().upper().startswith("INSERT INTO RUN "):
            raced.append(True)  # this launch looked and found nothing: the winner commits now
            with world["db"].session() as other:
                runs.launch(other, winner, now=datetime.now(UTC))

    event.listen(Engine, "before_cursor_execute", race)
    try:
        res = _launch(world, "Pat: see you soon.", "--idempotency-key", "k-1", "--json")
    finally:
        event.remove(Engine, "before_cursor_execute", race)
    assert raced
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["created"] is False and doc["idempotency_key"] == "k-1"
    assert _runs(world) == 1


def test_cli_api_and_notify_refuse_the_same_bad_template_with_the_same_rule(world):
    bad = "Hi [fist_name]: book at https://bit.ly/3xYz"
    line = _error_line(_launch(world, bad))
    api = _rules(_problem(_api_run(world, bad)))
    with pytest.raises(DispatcherError) as e:
        _notify(world, bad)
    py = [i.rule for i in e.value.issues]  # type: ignore[attr-defined]
    assert api == py == ["unknown_field", "url_shortener", "undeclared_link"]
    for rule in api:
        assert rule in line


# ------------------------------------------------------------------ a campaign with no sender
def _no_sender(w: dict[str, Any]) -> None:
    from sqlalchemy import update

    from dispatcher.models import Campaign

    with w["db"].session() as s:
        s.exec(  # type: ignore[call-overload]
            update(Campaign).values(sender=None, messaging_service_sid=None)
        )


def test_a_campaign_with_no_sender_is_refused_everywhere(world):
    """Neither a sender number nor a Messaging Service SID: the gateway would refuse every send
    as an input error; the launch is refused instead (one line, exit 1; 422; notify raises)."""
    _no_sender(world)
    env = {**os.environ, "DISPATCHER_DATABASE_URL": f"sqlite:///{world['dir']}/cli.db"}
    for extra in ([], ["--dry-run"], ["--force"]):
        p = subprocess.run(
            [sys.executable, "-m", "dispatcher.cli.app", "run", "launch"]
            + ["--campaign", world["sid"], "--template", "See you soon.", *extra],
            cwd=world["dir"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert p.returncode == 1, (p.stdout, p.stderr)
        lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: launch refused"), p.stderr
        assert "[no_sender]" in lines[0] and world["sid"] in lines[0]
        assert p.stdout == "" and "Traceback" not in p.stderr
    doc = _problem(_api_run(world, "See you soon.", force=True))
    assert _rules(doc) == ["no_sender"] and doc["field"] == "campaign"
    assert doc["type"].endswith("launch-refused") and "no_sender" in doc["detail"]
    with pytest.raises(DispatcherError) as e:
        _notify(world, "See you soon.", force=True)
    assert [i.rule for i in e.value.issues] == ["no_sender"]  # type: ignore[attr-defined]
    assert _runs(world) == 0
