"""`dispatcher brand` commands."""

from __future__ import annotations

import typer

from dispatcher import registry
from dispatcher.cli.common import database
from dispatcher.cli.output import JsonOpt, report, table

app = typer.Typer(no_args_is_help=True)


@app.command("add")
def add(
    name: str = typer.Argument(..., help="Company name as it must appear in messages."),
    tier: str = typer.Option(None, "--tier", help="T-Mobile brand tier (TOP, HIGH, ...)."),
    ein: str = typer.Option(None, "--ein", help="Employer Identification Number."),
    as_json: bool = JsonOpt,
) -> None:
    """Register a brand."""
    with database().session() as s:
        b = registry.add_brand(s, name=name, tmobile_brand_tier=tier, ein=ein)
        doc = registry.brand_dict(b)
    report(doc, as_json, lambda d: typer.echo(f"brand {d['id']} {d['name']!r} added", err=True))


@app.command("list")
def list_(as_json: bool = JsonOpt) -> None:
    """List brands."""
    with database().session() as s:
        rows = [registry.brand_dict(b) for b in registry.list_brands(s)]
    report(
        {"brands": rows},
        as_json,
        lambda d: table(
            "Brands",
            ["id", "name", "T-Mobile tier", "EIN"],
            [(b["id"], b["name"], b["tmobile_brand_tier"], b["ein"]) for b in d["brands"]],
        ),
    )
