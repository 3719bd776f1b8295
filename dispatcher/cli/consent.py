"""`dispatcher consent` commands: the append-only ledger."""

from __future__ import annotations

import csv
import json
import sys
from datetime import datetime
from pathlib import Path

import typer

from dispatcher import contacts as contact_svc
from dispatcher import ledger, registry
from dispatcher.cli.common import database, halts
from dispatcher.cli.output import JsonOpt, report
from dispatcher.errors import InputError

app = typer.Typer(no_args_is_help=True)


def _record(
    action: str,
    phone: str,
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
    when = None
    if at:
        try:
            when = datetime.fromisoformat(at.replace("Z", "+00:00"))
        except ValueError as e:
            raise InputError(f"--at {at!r} is not an ISO 8601 time") from e
    with database().session() as s:
        b = registry.get_brand(s, brand)
        c = registry.get_campaign(s, campaign) if campaign else None
        contact, _ = contact_svc.upsert_contact(s, phone)
        ev = ledger.append(
            s,
            contact_id=contact.id,
            brand_id=b.id,
            campaign_id=c.id if c else None,
            action=action,
            source=source,
            actor=actor,
            evidence_text=evidence,
            evidence_url=url,
            note=note,
            occurred_at=when,
            halts=halts(),
        )
        doc = {
            "id": ev.id,
            "action": action,
            "phone": contact.phone,
            "brand": b.name,
            "campaign_sid": c.sid if c else None,
            "occurred_at": ev.occurred_at,
        }
    report(
        doc, as_json, lambda d: typer.echo(f"consent {action} recorded (event {d['id']})", err=True)
    )


_brand = typer.Option(..., "--brand", help="Brand name or id.")
_campaign = typer.Option(None, "--campaign", help="Campaign SID (default: the whole brand).")
_evidence = typer.Option(None, "--evidence", help="Text shown to the person / what they sent.")
_url = typer.Option(None, "--url", help="Form URL or other evidence location.")
_note = typer.Option(None, "--note", help="Free note.")
_actor = typer.Option("operator", "--actor", help="Who records this (audit trail).")
_at = typer.Option(None, "--at", help="When it happened (ISO 8601; default now).")


def _command(action: str, doc: str):  # type: ignore[no-untyped-def]
    """`consent grant` and `consent revoke` take the same options; one body serves both."""

    def command(
        phone: str,
        brand: str = _brand,
        campaign: str = _campaign,
        source: str = typer.Option("operator", "--source"),
        evidence: str = _evidence,
        url: str = _url,
        note: str = _note,
        actor: str = _actor,
        at: str = _at,
        as_json: bool = JsonOpt,
    ) -> None:
        _record(action, phone, brand, campaign, source, evidence, url, note, actor, at, as_json)

    command.__doc__ = doc
    return command


app.command("grant")(_command("grant", "Record a consent grant with its evidence."))
app.command("revoke")(
    _command(
        "revoke",
        "Record a revocation (takes effect for every message not yet handed to the carrier).",
    )
)


@app.command("export")
def export(
    fmt: str = typer.Option("json", "--format", help="csv or json."),
    output: Path = typer.Option(None, "--output", "-o", help="File (default: stdout)."),
    phone: str = typer.Option(None, "--phone", help="Only this contact."),
) -> None:
    """The audit trail: every consent event with its evidence, oldest first."""
    if fmt not in ("csv", "json"):
        raise InputError("--format must be csv or json")
    e164 = contact_svc.normalize_phone(phone) if phone else None
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
