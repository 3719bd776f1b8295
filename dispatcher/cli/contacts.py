"""`dispatcher contacts` commands."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from dispatcher import consent, registry
from dispatcher import contacts as svc
from dispatcher.cli.common import database, settings
from dispatcher.cli.output import JsonOpt, err, report, table

app = typer.Typer(no_args_is_help=True)


@app.command("import")
def import_(
    file: Path = typer.Argument(
        ...,
        help="CSV: phone,name,time_zone,state,consent_source,"
        "consent_evidence,consent_url,consented_at, other columns = "
        "template attributes.",
    ),
    brand: str = typer.Option(None, "--brand", help="Brand the consent columns grant."),
    campaign: str = typer.Option(None, "--campaign", help="Narrow consent to one campaign."),
    rejects: Path = typer.Option(None, "--rejects", help="Where to write rejected rows."),
    actor: str = typer.Option("operator", "--actor", help="Who is importing (audit trail)."),
    as_json: bool = JsonOpt,
) -> None:
    """Import contacts (and consent evidence) from a CSV file; bad rows go to a rejects file."""
    with database().session() as s:
        b = c = None
        if brand or campaign:  # the campaign, if given, is checked to be the brand's
            owner = brand or registry.get_campaign(s, campaign).brand_id
            to = consent.target(s, owner, campaign)
            b, c = to.brand, to.campaign
        rep = svc.import_csv(
            s,
            file,
            brand=b,
            campaign=c,
            actor=actor,
            rejects_path=rejects,
            default_tz=settings().default_timezone,
        )
    doc = rep.as_dict()

    def render(d: dict[str, Any]) -> None:
        err().print(
            f"{d['rows']} rows: {d['created']} new, {d['updated']} updated, "
            f"{d['unchanged']} unchanged, {d['consent_events']} consent events, "
            f"{d['rejected']} rejected ({d['seconds']} s)"
        )
        if d["rejects_file"]:
            reasons = ", ".join(f"{k} {v}" for k, v in sorted(d["reasons"].items()))
            err().print(f"rejected rows ({reasons}) written to {d['rejects_file']}")

    report(doc, as_json, render)


@app.command("list")
def list_(
    limit: int = typer.Option(100, "--limit"),
    offset: int = typer.Option(0, "--offset"),
    as_json: bool = JsonOpt,
) -> None:
    """List contacts (phone numbers are shown in full to the operator)."""
    with database().session() as s:
        rows = [svc.contact_dict(c) for c in svc.list_contacts(s, limit=limit, offset=offset)]
    report(
        {"contacts": rows},
        as_json,
        lambda d: table(
            "Contacts",
            ["id", "phone", "name", "time zone", "state"],
            [(c["id"], c["phone"], c["name"], c["time_zone"], c["state"]) for c in d["contacts"]],
        ),
    )
