"""CLI: --json prints one parseable document; bad input exits 1 with one line, no traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

SEED = Path(__file__).parents[2] / "dispatcher" / "data" / "usa2p_seed004.json"


@pytest.fixture
def run(cli_run):
    return cli_run


def _json(result):
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_json_outputs_parse(run, cli_env):
    assert _json(run("brand", "add", "Acme Corporation", "--tier", "top", "--json"))["id"] == 1
    assert _json(run("brand", "list", "--json"))["brands"][0]["tmobile_brand_tier"] == "TOP"
    doc = _json(run("campaign", "import", str(SEED), "--json"))
    assert doc["created"] and doc["window"] == "10/300s"
    assert _json(run("campaign", "import", str(SEED), "--json"))["created"] is False
    assert len(_json(run("campaign", "list", "--json"))["campaigns"]) == 1
    assert _json(run("campaign", "show", doc["sid"], "--json"))["opt_out_keywords"] == ["STOP"]
    csvf = cli_env / "c.csv"
    csvf.write_text("phone,name,consent_evidence,consented_at\n4155551234,Ann,form,2025-01-01\n")
    rep = _json(run("contacts", "import", str(csvf), "--brand", "Acme Corporation", "--json"))
    assert rep["created"] == 1 and rep["consent_events"] == 1
    assert _json(run("contacts", "list", "--json"))["contacts"][0]["phone"] == "+14155551234"
    ev = _json(
        run(
            "consent",
            "revoke",
            "4155551234",
            "--brand",
            "Acme Corporation",
            "--source",
            "operator",
            "--note",
            "asked by phone",
            "--json",
        )
    )
    assert ev["action"] == "revoke"
    export = _json(run("consent", "export", "--format", "json"))
    assert [e["action"] for e in export["events"]] == ["grant", "revoke"]
    assert _json(run("db", "status", "--json"))["current"] is not None


@pytest.mark.parametrize(
    "args, needle",
    [
        (["brand", "add", "x"], "2..255"),
        (["campaign", "import", "/nonexistent.json"], "cannot read"),
        (["campaign", "show", "QEnope"], "no campaign"),
        (["consent", "grant", "12", "--brand", "nobody"], "no brand"),
        (["consent", "export", "--format", "xml"], "csv or json"),
        (["contacts", "import", "/nonexistent.csv"], "cannot read"),
        # ids past 64 bits: "not found", not an overflow inside the database driver
        (["campaign", "show", str(2**70)], "no campaign"),
        (["consent", "grant", "12", "--brand", str(2**70)], "no brand"),
        (["run", "show", str(2**70)], "no run"),
        (["run", "pause", str(2**70)], "no run"),
    ],
)
def test_bad_input_exits_1_with_one_line(run, args, needle):
    r = run(*args)
    assert r.exit_code == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0]
    assert "Traceback" not in r.output


def test_malformed_campaign_json_names_the_field(run, cli_env):
    run("brand", "add", "Acme Corporation")
    doc = json.loads(SEED.read_text())
    doc["message_samples"] = "not a list"
    f = cli_env / "bad.json"
    f.write_text(json.dumps(doc))
    r = run("campaign", "import", str(f))
    assert r.exit_code == 1 and "'message_samples'" in r.stderr


def test_bad_phone_in_consent_grant(run):
    run("brand", "add", "Acme Corporation")
    r = run("consent", "grant", "415-555-12", "--brand", "Acme Corporation", "--evidence", "x")
    assert r.exit_code == 1 and "too short" in r.stderr


def test_consent_revoke_from_a_file(run, cli_env):
    """`consent revoke --file`: a report (JSON or two lines), a rejects file, and one error line
    when it is given both a number and a file, or neither (issue 18 item 6)."""
    run("brand", "add", "Acme Corporation")
    f = cli_env / "stop.csv"
    f.write_text("phone,note\n4155551234,by email\nnot a phone,\n4155551234,\n")
    args = ["consent", "revoke", "--file", str(f), "--brand", "Acme Corporation"]
    doc = _json(run(*args, "--json"))
    assert (doc["rows"], doc["revoked"], doc["repeated"], doc["rejected"]) == (3, 1, 1, 1)
    assert doc["rejects_file"] == str(cli_env / "stop.rejects.csv")
    r = run(*args)
    assert r.exit_code == 0
    assert r.stderr.splitlines()[1].startswith("NOT revoked: 1 rows (invalid_phone 1)")
    events = _json(run("consent", "export", "--format", "json"))["events"]
    assert [e["note"] for e in events] == ["by email; from stop.csv row 2"] * 2
    for bad in (args[:2] + args[4:], [*args, "+14155551234"]):
        r = run(*bad)
        assert r.exit_code == 1 and r.stderr.startswith("error: give a phone number or --file")


def test_consent_refuses_a_campaign_of_another_brand(run, cli_env):
    """The CLI makes the API's check (one check, in the consent service): a campaign of
    another brand is an error, for consent and for the consent columns of an import."""
    run("brand", "add", "Acme Corporation")
    run("brand", "add", "Other Brand")
    sid = _json(run("campaign", "import", str(SEED), "--brand", "Acme Corporation", "--json"))[
        "sid"
    ]
    csvf = cli_env / "c.csv"
    csvf.write_text("phone,consent_evidence,consented_at\n4155551234,form,2025-01-01\n")
    for args in (
        ["consent", "grant", "4155551234", "--evidence", "form"],
        ["consent", "revoke", "4155551234"],
        ["contacts", "import", str(csvf)],
    ):
        r = run(*args, "--brand", "Other Brand", "--campaign", sid)
        assert r.exit_code == 1, args
        assert r.stderr.strip() == f"error: no campaign '{sid} of brand Other Brand'"
    assert _json(run("consent", "export", "--format", "json"))["events"] == []
    ok = run("consent", "grant", "4155551234", "--evidence", "form", "--brand", "Acme Corporation")
    assert ok.exit_code == 0, ok.stderr
