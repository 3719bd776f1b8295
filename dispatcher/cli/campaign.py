"""`dispatcher campaign` commands."""

from __future__ import annotations

from pathlib import Path

import typer

from dispatcher import registry
from dispatcher.cli.common import database
from dispatcher.cli.output import JsonOpt, report, table
from dispatcher.errors import InputError
from dispatcher.models import Campaign, pk

app = typer.Typer(no_args_is_help=True)
#: a new campaign's send window, as the model defines it
_DEFAULT = {k: Campaign.model_fields[k].default for k in ("window_limit", "window_seconds")}


def _brand_for(session, brand: str | None):  # type: ignore[no-untyped-def]
    if brand:
        return registry.get_brand(session, brand)
    brands = registry.list_brands(session)
    if len(brands) == 1:
        return brands[0]
    if not brands:
        raise InputError("no brand yet: add one with `dispatcher brand add NAME`")
    raise InputError("several brands exist: name one with --brand")


@app.command(
    "import",
    help="Import (or refresh) a campaign registration.  A new campaign sends at most "
    f"{_DEFAULT['window_limit']} messages per {_DEFAULT['window_seconds']} s unless "
    "--window-limit / --window-seconds say otherwise.",
)
def import_(
    file: Path = typer.Argument(..., help="UsAppToPerson JSON document as Twilio returns it."),
    brand: str = typer.Option(None, "--brand", help="Brand name or id (default: the only one)."),
    sender: str = typer.Option(None, "--sender", help="From number (E.164) for this campaign."),
    window_limit: int = typer.Option(
        None,
        "--window-limit",
        help=f"Messages per window (new campaign: {_DEFAULT['window_limit']}; "
        "a refresh keeps the current value).",
    ),
    window_seconds: int = typer.Option(
        None,
        "--window-seconds",
        help=f"Window length in seconds (new campaign: {_DEFAULT['window_seconds']}).",
    ),
    cap_count: int = typer.Option(
        None, "--frequency-cap", help="Per-recipient messages... (default: no cap)"
    ),
    cap_hours: int = typer.Option(None, "--frequency-cap-hours", help="...per this many hours."),
    as_json: bool = JsonOpt,
) -> None:
    doc = registry.load_campaign_file(file)
    policy = {
        "sender": sender,
        "window_limit": window_limit,
        "window_seconds": window_seconds,
        "frequency_cap_count": cap_count,
        "frequency_cap_hours": cap_hours,
    }
    with database().session() as s:
        b = _brand_for(s, brand)
        c, created = registry.import_campaign(s, doc, brand=b, policy=policy)
        out = {**registry.campaign_dict(c), "created": created}
    if not out["sender"] and not out["messaging_service_sid"]:
        typer.echo(
            f"warning: campaign {out['sid']} has no sender and no messaging_service_sid: it has "
            "no number to send from, and inbound replies cannot be routed to it by number (STOP "
            "and HELP are then answered by the campaign that last texted the contact); pass "
            "--sender +1XXXXXXXXXX",
            err=True,
        )
    report(
        out,
        as_json,
        lambda d: typer.echo(
            f"campaign {d['sid']} {'imported' if created else 'updated'} "
            f"(status {d['campaign_status']}, window {d['window']})",
            err=True,
        ),
    )


@app.command("list")
def list_(as_json: bool = JsonOpt) -> None:
    """List campaigns."""
    with database().session() as s:
        rows = [registry.campaign_dict(c) for c in registry.list_campaigns(s)]
    report(
        {"campaigns": rows},
        as_json,
        lambda d: table(
            "Campaigns",
            ["id", "sid", "use case", "status", "window", "sender / service"],
            [
                (
                    c["id"],
                    c["sid"],
                    c["us_app_to_person_usecase"],
                    c["campaign_status"],
                    c["window"],
                    c["sender"] or c["messaging_service_sid"],
                )
                for c in d["campaigns"]
            ],
        ),
    )


@app.command("show")
def show(
    campaign: str = typer.Argument(..., help="Campaign SID or id."), as_json: bool = JsonOpt
) -> None:
    """Show one campaign in full."""
    with database().session() as s:
        doc = registry.campaign_dict(registry.get_campaign(s, campaign), full=True)
    report(doc, as_json)


@app.command("lint")
def lint(
    file: Path = typer.Argument(..., help="UsAppToPerson JSON document."),
    brand: str = typer.Option(None, "--brand", help="Brand whose name the samples must carry."),
    as_json: bool = JsonOpt,
) -> None:
    """Lint a campaign registration before submitting it (exit 1 on any error finding)."""
    from dispatcher.cli.message import lint_campaign_file

    lint_campaign_file(file, brand, as_json)


@app.command("sync")
def sync(
    campaign: str = typer.Argument(..., help="Campaign SID or id."),
    as_json: bool = JsonOpt,
) -> None:
    """Refresh status, rate_limits and errors from Twilio's UsAppToPerson resource.

    A campaign that became SUSPENDED or FAILED pauses its active runs."""
    from datetime import UTC, datetime

    from dispatcher import runs
    from dispatcher.runtime import Runtime
    from dispatcher.settings import get_settings

    rt = Runtime(get_settings())
    with database().session() as s:
        c = registry.get_campaign(s, campaign)
        if not c.messaging_service_sid:
            raise InputError(f"campaign {c.sid} has no messaging_service_sid to fetch it by")
        service, sid = c.messaging_service_sid, c.sid
    try:
        doc = rt.gateway.fetch_campaign(service, sid)
    finally:
        rt.close()
    now = datetime.now(UTC)
    with database().session() as s:
        c = registry.get_campaign(s, sid)
        changed = registry.sync_campaign(s, c, doc, now)
        paused = 0
        if str(c.campaign_status or "").upper() in ("SUSPENDED", "FAILED"):
            reason = f"campaign {c.campaign_status}"
            paused = runs.pause_campaign_runs(s, pk(c), reason, now, halts=rt.halts)
        out = {**registry.campaign_dict(c), "changed": changed, "runs_paused": paused}
    report(
        out,
        as_json,
        lambda d: typer.echo(
            f"campaign {d['sid']}: status {d['campaign_status']}; "
            f"{len(d['changed'])} field(s) changed; {d['runs_paused']} run(s) paused",
            err=True,
        ),
    )
