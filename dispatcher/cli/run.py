"""`dispatcher run` commands: launch (or dry-run), list, show, pause, resume, cancel, watch."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import typer

from dispatcher import run_report, runs
from dispatcher.audience import parse_audience
from dispatcher.cli.common import database, halts, settings
from dispatcher.cli.output import JsonOpt, err, report, table
from dispatcher.errors import InputError

app = typer.Typer(no_args_is_help=True)


def _when(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as e:
        raise InputError(f"--at {text!r} is not an ISO 8601 time (e.g. 2026-12-01T09:00)") from e
    if t.tzinfo is None:
        t = t.replace(tzinfo=ZoneInfo(settings().default_timezone))
    return t.astimezone(UTC)


def _template(text: str) -> str:
    p = Path(text)
    if len(text) < 256 and p.suffix in (".txt", ".tmpl", ".template") and p.exists():
        try:
            return p.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as e:
            raise InputError(f"cannot read template file {p}: {e}") from e
    return text


def _render_dry(d: dict) -> None:
    table(
        "Dry run",
        ["", ""],
        [
            ("campaign", f"{d['campaign']} ({d['campaign_status']})"),
            ("audience", d["audience"]),
            ("would send", d["would_send"]),
            ("deferred", ", ".join(f"{k} {v}" for k, v in d["deferred"].items()) or "-"),
            ("suppressed", ", ".join(f"{k} {v}" for k, v in d["suppressed"].items()) or "-"),
            ("rejected rows", ", ".join(f"{k} {v}" for k, v in d["rejected"].items()) or "-"),
            ("blocked by campaign", d["blocked_by_campaign"] or "-"),
            ("first message", d["first_message"] or "-"),
            ("encoding / segments", f"{d['encoding']} / {d['segments']}"),
            ("limits", d["limits"]),
            (
                "estimated duration",
                f"{d['estimated_seconds'] // 3600}h {d['estimated_seconds'] % 3600 // 60}m",
            ),
            ("estimated finish", d["estimated_finish"]),
        ],
    )


@app.command("launch")
def launch(
    campaign: str = typer.Option(..., "--campaign", help="Campaign SID or id."),
    template: str = typer.Option(..., "--template", help="Template text or a .txt file."),
    audience: str = typer.Option(
        "all", "--audience", help="all | segment:key=value[,key=value] | FILE.csv"
    ),
    at: str = typer.Option(None, "--at", help="Start time (ISO 8601; default now)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Report only; send nothing."),
    key: str = typer.Option(None, "--idempotency-key", help="Launching twice is a no-op."),
    as_json: bool = JsonOpt,
) -> None:
    """Launch a run of one template to an audience of one campaign (now or at a time)."""
    req = runs.LaunchRequest(
        campaign=campaign,
        template=_template(template),
        audience=parse_audience(audience),
        send_at=_when(at),
        actor="cli",
        idempotency_key=key,
    )
    now = datetime.now(UTC)
    with database().session() as s:
        if dry_run:
            doc = run_report.dry_run(s, req, now=now)
            s.rollback()
            report(doc, as_json, _render_dry)
            return
        run, created = runs.launch(s, req, now=now)
        doc = {**run_report.run_dict(run), "created": created}
    report(
        doc,
        as_json,
        lambda d: err().print(
            f"run {d['id']} {'scheduled' if created else 'already exists'} for {d['send_at']}; "
            f"watch it with: dispatcher run watch {d['id']}"
        ),
    )


@app.command("list")
def list_(as_json: bool = JsonOpt) -> None:
    """Recent runs."""
    with database().session() as s:
        rows = [run_report.run_dict(r) for r in runs.list_runs(s)]
    report(
        {"runs": rows},
        as_json,
        lambda d: table(
            "Runs",
            ["id", "campaign", "state", "send at", "total", "pause reason"],
            [
                (r["id"], r["campaign_id"], r["state"], r["send_at"], r["total"], r["pause_reason"])
                for r in d["runs"]
            ],
        ),
    )


@app.command("show")
def show(run_id: int, as_json: bool = JsonOpt) -> None:
    """Progress by state, suppression reasons, ETA and pause reason."""
    with database().session() as s:
        doc = run_report.progress(s, run_id, datetime.now(UTC))
    report(
        doc,
        as_json,
        lambda d: table(
            f"Run {d['id']}",
            ["", ""],
            [
                ("campaign", d["campaign"]),
                ("state", d["state"]),
                ("pause reason", d["pause_reason"] or "-"),
                ("total", d["total"]),
                ("done", d["done"]),
                ("by state", ", ".join(f"{k} {v}" for k, v in sorted(d["by_state"].items()))),
                ("deferred (due later)", d["deferred"]),
                (
                    "suppressed",
                    ", ".join(f"{k} {v}" for k, v in d["suppressed_by_reason"].items()) or "-",
                ),
                ("ETA", d["eta"] or "-"),
            ],
        ),
    )


def _control(verb: str, run_id: int, as_json: bool, reason: str | None = None) -> None:
    now = datetime.now(UTC)
    with database().session() as s:
        if verb == "pause":
            runs.pause_run(s, run_id, reason or "paused by operator", now, halts=halts())
        elif verb == "resume":
            runs.resume_run(s, run_id, now)
        else:
            runs.cancel_run(s, run_id, now, halts=halts())
        doc = run_report.run_dict(runs.get_run(s, run_id))
    report(doc, as_json, lambda d: err().print(f"run {run_id} {d['state']}"))


@app.command("pause")
def pause(
    run_id: int, reason: str = typer.Option(None, "--reason"), as_json: bool = JsonOpt
) -> None:
    """Pause: nothing more is handed to the carrier until resumed."""
    _control("pause", run_id, as_json, reason)


@app.command("resume")
def resume(run_id: int, as_json: bool = JsonOpt) -> None:
    """Resume a paused run (the operator's decision, also after the reputation guard)."""
    _control("resume", run_id, as_json)


@app.command("cancel")
def cancel(run_id: int, as_json: bool = JsonOpt) -> None:
    """Cancel: every message not yet handed to the carrier is dropped (recorded as cancelled)."""
    _control("cancel", run_id, as_json)


@app.command("watch")
def watch_(
    run_id: int, interval: float = typer.Option(0.5, "--interval"), as_json: bool = JsonOpt
) -> None:
    """Live progress bar until the run finishes (works in embedded and distributed mode)."""
    from dispatcher.cli.watch import watch

    doc = watch(database(), run_id, interval=interval)
    if as_json:
        report(doc, True)
