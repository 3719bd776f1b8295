"""`dispatcher message` commands (and `campaign lint`): findings from the compliance core."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from sqlmodel import select

from dispatcher import compliance, registry
from dispatcher.cli.common import database
from dispatcher.cli.output import JsonOpt, err, report, table
from dispatcher.contacts import get_contact
from dispatcher.errors import InputError
from dispatcher.models import OutboxMessage
from dispatcher.templates import MissingField, contact_values, parse_template

app = typer.Typer(no_args_is_help=True)


def show_findings(findings: list[compliance.Finding], as_json: bool) -> None:
    report(
        compliance.findings_to_dict(findings),
        as_json,
        lambda d: (
            table(
                "Findings",
                ["severity", "field", "code", "message"],
                [(f["severity"], f["field"], f["code"], f["message"]) for f in d["findings"]],
            )
            if d["findings"]
            else err().print("no findings")
        ),
    )
    if compliance.has_errors(findings):
        raise typer.Exit(1)


def lint_campaign_file(file: Path, brand: str | None, as_json: bool) -> None:
    doc = registry.load_campaign_file(file)
    brand_name = None
    if brand:
        with database().session() as s:
            brand_name = registry.get_brand(s, brand).name
    elif isinstance(doc, dict) and isinstance(doc.get("brand_name"), str):
        brand_name = doc["brand_name"]  # a non-string brand_name is the linter's finding
    show_findings(compliance.lint_campaign(doc, brand_name=brand_name), as_json)


@app.command("lint")
def lint(
    body: str = typer.Argument(..., help="Message body (or a template)."),
    campaign: str = typer.Option(..., "--campaign", help="Campaign SID or id."),
    first: bool = typer.Option(
        True, "--first/--follow-up", help="Lint as a first message (brand + STOP required)."
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Lint a message body against a campaign's registration and the content rules."""
    with database().session() as s:
        c = registry.get_campaign(s, campaign)
        b = registry.get_brand(s, c.brand_id)
        findings = compliance.lint_message(body, c, brand_name=b.name, first_message=first)
    show_findings(findings, as_json)


@app.command("preview")
def preview(
    template: str = typer.Argument(..., help="Template text, e.g. 'Hi [name], ...'."),
    campaign: str = typer.Option(..., "--campaign", help="Campaign SID or id."),
    contact: str = typer.Option(..., "--contact", help="Contact phone number."),
    as_json: bool = JsonOpt,
) -> None:
    """Show the body a contact would receive: composed, with encoding and segment count."""
    tpl = parse_template(template)
    with database().session() as s:
        c = registry.get_campaign(s, campaign)
        b = registry.get_brand(s, c.brand_id)
        ct = get_contact(s, contact)
        earlier = s.exec(
            select(OutboxMessage.id).where(
                OutboxMessage.campaign_id == c.id,
                OutboxMessage.contact_id == ct.id,
                OutboxMessage.state.in_(("sent", "delivered", "sending", "unknown")),  # type: ignore[attr-defined]
            )
        ).first()
        try:
            rendered = tpl.render(contact_values(ct.name, ct.attributes))
        except MissingField as e:  # the run would suppress this contact (template_variable_missing)
            raise InputError(  # the operator typed the number: it is shown in full
                f"contact {ct.phone} has no value for [{e.name}]", field="template"
            ) from None
    text = compliance.compose(
        rendered, brand_name=b.name, opt_out_language=None, first_message=earlier is None
    )
    seg = compliance.segments(text)
    doc = {
        "body": text,
        "encoding": seg.encoding,
        "segments": seg.count,
        "characters": seg.characters,
        "first_message": earlier is None,
    }
    report(
        doc,
        as_json,
        _render_preview,
    )


def _render_preview(d: dict[str, Any]) -> None:
    err().print(d["body"])
    err().print(
        f"{d['encoding']}, {d['segments']} segment(s), {d['characters']} characters"
        f"{', first message' if d['first_message'] else ''}",
        style="dim",
    )
