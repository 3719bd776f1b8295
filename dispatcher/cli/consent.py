"""`dispatcher consent` commands: the append-only ledger."""

from __future__ import annotations

import csv
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import typer

from dispatcher import consent_events
from dispatcher.cli.common import database, halts, settings
from dispatcher.cli.output import JsonOpt, report, say
from dispatcher.consent import target
from dispatcher.consent_file import Recorder, record, revoke_csv
from dispatcher.errors import InputError
from dispatcher.phones import normalize_phone

app = typer.Typer(no_args_is_help=True)


def _when(at: str | None) -> datetime | None:
    if not at:
        return None
    try:
        return datetime.fromisoformat(at.replace("Z", "+00:00"))
    except ValueError as e:
        raise InputError(f"--at {at!r} is not an ISO 8601 time") from e


def _consent(
    action: str,
    phone: str | None,
    file: Path | None,
    rejects: Path | None,
    brand: str,
    campaign: str | None,
    source: str,
    evidence: str | None,
    url: str | None,
    note: str | None,
    actor: str,
    at: str | None,
    as_json: bool,
) -> None:
    """One event for ``phone``, or a revoke for every number in ``file``: the same ``record``,
    in one Core transaction (no models on this path: bench/cli_startup.py)."""
    when = _when(at)
    with database().begin() as s:
        who = Recorder(
            target=target(s, brand, campaign),
            source=source,
            actor=actor,
            evidence_text=evidence,
            evidence_url=url,
            note=note,
            halts=halts(),
        )
        if file is not None:
            tz = settings().default_timezone
            rep = revoke_csv(s, file, who, rejects_path=rejects, default_tz=tz, occurred_at=when)
            doc = rep.as_dict()
        else:
            assert phone is not None
            ev, e164, _ = record(s, who, action, phone, occurred_at=when)
            doc = {
                "id": ev.id,
                "action": action,
                "phone": e164,
                "brand": who.target.brand.name,
                "campaign_sid": who.target.campaign.sid if who.target.campaign else None,
                "occurred_at": ev.occurred_at,
            }
    report(doc, as_json, _file_lines if file is not None else _event_line)


def _event_line(d: dict[str, Any]) -> None:
    say(f"consent {d['action']} recorded (event {d['id']})")


def _file_lines(d: dict[str, Any]) -> None:
    say(
        f"{d['rows']} rows: {d['revoked']} revoked ({d['new_contacts']} of them new "
        f"contacts), {d['repeated']} repeated, {d['rejected']} rejected ({d['seconds']} s)"
    )
    if d["rejects_file"]:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(d["reasons"].items()))
        say(
            f"NOT revoked: {d['rejected']} rows ({reasons}), written to {d['rejects_file']}; "
            "fix them and run again with --file on that file"
        )


_brand = typer.Option(..., "--brand", help="Brand name or id.")
_campaign = typer.Option(None, "--campaign", help="Campaign SID (default: the whole brand).")
_source = typer.Option(
    "operator", "--source", help="How it came: " + ", ".join(consent_events.SOURCES) + "."
)
_evidence = typer.Option(None, "--evidence", help="Text shown to the person / what they sent.")
_url = typer.Option(None, "--url", help="Form URL or other evidence location.")
_note = typer.Option(None, "--note", help="Free note.")
_actor = typer.Option("operator", "--actor", help="Who records this (audit trail).")
_at = typer.Option(None, "--at", help="When it happened (ISO 8601; default now).")


@app.command("grant")
def grant(
    phone: str = typer.Argument(..., help="Phone number."),
    brand: str = _brand,
    campaign: str = _campaign,
    source: str = _source,
    evidence: str = _evidence,
    url: str = _url,
    note: str = _note,
    actor: str = _actor,
    at: str = _at,
    as_json: bool = JsonOpt,
) -> None:
    """Record a consent grant with its evidence."""
    args = (brand, campaign, source, evidence, url, note, actor, at, as_json)
    _consent("grant", phone, None, None, *args)


@app.command("revoke")
def revoke(
    phone: str = typer.Argument(None, help="Phone number (or --file)."),
    brand: str = _brand,
    campaign: str = _campaign,
    source: str = _source,
    evidence: str = _evidence,
    url: str = _url,
    note: str = _note,
    actor: str = _actor,
    at: str = _at,
    file: Path = typer.Option(
        None,
        "--file",
        help="CSV of numbers to revoke, in one transaction: a phone column; optional per-row "
        "evidence, url, evidence_ref, note, occurred_at, source (else the options above).",
    ),
    rejects: Path = typer.Option(
        None, "--rejects", help="Where --file writes rejected rows (default: FILE.rejects.csv)."
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Record a revocation (takes effect for every message not yet handed to the carrier)."""
    if (phone is None) == (file is None):
        raise InputError("give a phone number or --file PHONES.csv (one of them)")
    args = (brand, campaign, source, evidence, url, note, actor, at, as_json)
    _consent("revoke", phone, file, rejects, *args)


@app.command("export")
def export(
    fmt: str = typer.Option("json", "--format", help="csv or json."),
    output: Path = typer.Option(None, "--output", "-o", help="File (default: stdout)."),
    phone: str = typer.Option(None, "--phone", help="Only this contact."),
) -> None:
    """The audit trail: every consent event with its evidence, oldest first."""
    if fmt not in ("csv", "json"):
        raise InputError("--format must be csv or json")
    from dispatcher import ledger

    e164 = normalize_phone(phone) if phone else None
    fh = output.open("w", newline="", encoding="utf-8") if output else sys.stdout
    try:
        with database().session() as s:
            rows = ledger.export_rows(s, phone=e164)
            if fmt == "csv":
                w = csv.DictWriter(fh, fieldnames=ledger.EXPORT_COLUMNS)
                w.writeheader()
                for r in rows:
                    w.writerow(r)
            else:  # one JSON document, streamed
                fh.write('{"events": [')
                for i, r in enumerate(rows):
                    fh.write(("," if i else "") + json.dumps(r, ensure_ascii=False))
                fh.write("]}\n")
    finally:
        if output:
            fh.close()
