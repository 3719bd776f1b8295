"""What the operator's terminal shows (issue 18 items 3 and 7), from the real CLI in a child
process: bracketed text survives Rich, usage errors are one line, help is clean, SIDs are whole.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

SEED = Path(__file__).parents[2] / "dispatcher" / "data" / "usa2p_seed004.json"
SID = json.loads(SEED.read_text())["sid"]
PHONE = "+14155551234"
SAMPLE = "Northwind Dental: your appointment is on [date] at [time]. Reply STOP to opt out."
TEMPLATE = "Northwind Dental: your appointment is on [date] at [time]. [[bring ID]]"
BODY = "Northwind Dental: your appointment is on 2026-03-01 at 10:30. [bring ID]"


def _cli(env: dict[str, str], *args: str, columns: int = 200) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dispatcher.cli.app", *args],
        env={**env, "COLUMNS": str(columns)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _ok(env: dict[str, str], *args: str, columns: int = 200) -> str:
    r = _cli(env, *args, columns=columns)
    assert r.returncode == 0, r.stderr
    return r.stdout + r.stderr


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A database with a brand "[northwind] Dental", a campaign whose sample has [date] and [time],
    and one consenting contact with date and time attributes."""
    tmp = tmp_path_factory.mktemp("cli-output")
    e = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCHER_")}
    e["DISPATCHER_DATABASE_URL"] = f"sqlite:///{tmp}/out.db"
    doc = json.loads(SEED.read_text())
    doc["message_samples"] = [SAMPLE, "Northwind Dental: [bring ID] to your visit."]
    doc["campaign_status"] = "VERIFIED"
    campaign = tmp / "campaign.json"
    campaign.write_text(json.dumps(doc))
    contacts = tmp / "contacts.csv"
    contacts.write_text(
        "phone,name,date,time,consent_evidence,consented_at\n"
        f"{PHONE},Ann,2026-03-01,10:30,form,2025-01-01\n"
    )
    _ok(e, "brand", "add", "[northwind] Dental")
    _ok(e, "campaign", "import", str(campaign))
    _ok(e, "contacts", "import", str(contacts), "--brand", "1")
    return e


# ------------------------------------------------------------------------- item 3: brackets
def test_campaign_show_keeps_bracketed_text(env):
    out = _ok(env, "campaign", "show", SID)
    assert SAMPLE in out and "[bring ID] to your visit" in out


def test_message_preview_keeps_bracketed_text(env):
    out = _ok(env, "message", "preview", TEMPLATE, "--campaign", SID, "--contact", PHONE)
    assert BODY in out


def test_dry_run_first_message_keeps_bracketed_text(env):
    out = _ok(env, "run", "launch", "--campaign", SID, "--template", TEMPLATE, "--dry-run")
    assert BODY in out


def test_tables_and_errors_keep_bracketed_text(env):
    assert "[northwind] Dental" in _ok(env, "brand", "list")
    r = _cli(env, "message", "preview", "Hi [bring ID]", "--campaign", SID, "--contact", PHONE)
    assert r.returncode == 1
    assert r.stderr.startswith("error: template: [bring ID] at column 4 is not a field name")


# ------------------------------------------------------------------------- item 7
@pytest.mark.parametrize(
    "args, needle",
    [
        (["run", "pause", "abc"], "invalid value 'abc' for RUN_ID"),
        (["run", "launch"], "missing option '--campaign'"),
        (["consent", "revoke", PHONE, "--brand", "1", "--bogus"], "no such option: --bogus"),
        (["nope"], "no such command 'nope'"),
        (["--nope"], "no such option: --nope"),
        (["run", "watch", "999"], "no run 999"),
    ],
)
def test_usage_errors_are_one_line_and_exit_1(env, args, needle):
    r = _cli(env, *args)
    assert r.returncode == 1, r.stderr
    assert r.stdout == ""
    [line] = r.stderr.splitlines()  # no box, no progress line before it
    assert line.startswith("error: ") and needle in line, line


def test_a_group_without_a_command_shows_its_help(env):
    r = _cli(env, "run")
    assert r.returncode == 0 and "pause" in r.stdout and r.stderr == ""


@pytest.mark.parametrize(
    "args", [["--help"], ["run", "pause", "--help"], ["consent", "revoke", "--help"]]
)
def test_help_shows_no_type_labels(env, args):
    out = _ok(env, *args)
    assert not re.search(r"<(bool|str|int|float|path)>", out), out
    assert "{" not in out.split("\n", 3)[1]  # the usage line names RUN_ID, not {run_id}


def test_help_of_run_pause_reads_like_click(env):
    out = _ok(env, "run", "pause", "--help")
    assert "run pause [OPTIONS] RUN_ID" in out
    assert re.search(r"--reason\s+TEXT", out) and re.search(r"--json\s+Print", out)


def test_campaign_import_help_states_the_default_window(env):
    out = _ok(env, "campaign", "import", "--help", columns=100)
    assert "at most 10 messages per 300 s" in " ".join(out.split())


def test_campaign_list_never_cuts_a_sid(env):
    for columns in (80, 200):
        assert SID in _ok(env, "campaign", "list", columns=columns)


def test_message_preview_shows_the_number_typed_in_full(env):
    r = _cli(env, "message", "preview", "Hi [plan]", "--campaign", SID, "--contact", "4155551234")
    assert r.returncode == 1 and f"contact {PHONE} has no value for [plan]" in r.stderr


def test_a_server_on_a_taken_port_is_one_error_line(env: dict[str, str]) -> None:
    """Another process holds the port: the operator's to fix (exit 1, one line), not an
    internal error with exit 70."""
    import socket

    from tests.procs import free_port

    port = free_port()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        r = _cli(env, "sandbox", "serve", "--port", str(port))
    assert r.returncode == 1, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: cannot listen: the address is already in use (Address already in use)"
    ]
    assert "Traceback" not in r.stderr
