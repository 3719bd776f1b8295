"""`dispatcher db` commands."""

from __future__ import annotations

import typer

from dispatcher.cli.common import settings
from dispatcher.cli.output import JsonOpt, report
from dispatcher.store import Database

app = typer.Typer(no_args_is_help=True)


@app.command("upgrade")
def upgrade(as_json: bool = JsonOpt) -> None:
    """Apply schema migrations up to the newest."""
    db = Database(settings().database_url)
    before = db.current_revision()
    db.upgrade()
    doc = {"from": before, "to": db.current_revision()}
    db.dispose()
    report(doc, as_json, lambda d: typer.echo(f"schema at {d['to']} (was {d['from']})", err=True))


@app.command("status")
def status(as_json: bool = JsonOpt) -> None:
    """Show the schema revision."""
    db = Database(settings().database_url)
    doc = {"current": db.current_revision(), "head": db.head_revision()}
    db.dispose()
    report(doc, as_json)
