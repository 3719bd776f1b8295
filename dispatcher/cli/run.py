"""`dispatcher run` commands: launch (or dry-run), list, show, pause, resume, cancel, watch.

Each command imports what it uses: ``run pause`` works in SQLAlchemy Core
(``dispatcher.run_state``) and loads neither the models nor the launch (bench/cli_startup.py,
tests/unit/test_cli_startup.py)."""

from __future__ import annotations

import getpass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import typer

from dispatcher.cli.common import database, halts, settings
from dispatcher.cli.output import JsonOpt, err, report, say, table
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
    """``--template``: the text itself, or the file it names when it looks like a path."""
    from dispatcher.launch_checks import Issue, LaunchRefused, looks_like_path

    if not looks_like_path(text):
        return text
    p = Path(text.strip()).expanduser()
    try:
        why = None if p.is_file() else "is a directory" if p.is_dir() else "no such file"
    except OSError as e:
        why = e.strerror or "cannot be read"
    if why is not None:
        raise LaunchRefused(
            [
                Issue(
                    "template_looks_like_path",
                    "template",
                    f"--template {text.strip()}: {why} (a template that looks like a path is "
                    "read from that file)",
                )
            ]
        )
    try:
        return p.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read template file {p}: {e}", field="template") from e


def _print_warnings(warnings: list[dict[str, Any]]) -> None:
    for w in warnings:
        err().print(f"warning: {w['message']} [{w['rule']}]", highlight=False)


def _render_dry(d: dict[str, Any]) -> None:
    from dispatcher import run_report

    zone = settings().default_timezone
    sch = d["schedule"]
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
            ("start", run_report.local_time(sch["start"], zone)),
            ("first send", run_report.local_time(sch["first_send"], zone)),
            ("estimated finish", run_report.local_time(sch["finish"], zone)),
            ("estimated duration", run_report.duration(d["estimated_seconds"])),
        ],
    )
    render_schedule(sch, zone)


def render_schedule(sch: dict[str, Any] | None, zone: str, hours: int = 12) -> None:
    """The schedule model's plan: when each recipients' window goes, and the sends per hour
    (the first ``hours``; ``--json`` has them all).  Times in the operator's zone."""
    if not sch or not sch["rows"]:
        return
    from dispatcher import run_report

    table(
        f"Schedule by recipients' window (times in {zone})",
        ["window (recipients' local time)", "rows", "first send", "last send"],
        [
            (
                w["window"],
                w["rows"] if not w["never"] else f"{w['rows']} ({w['never']} never)",
                run_report.local_time(w["first"], zone),
                run_report.local_time(w["last"], zone),
            )
            for w in sch["windows"]
        ],
    )
    rows = [(run_report.local_time(h["hour"], zone), h["sends"]) for h in sch["hours"][:hours]]
    if len(sch["hours"]) > hours:
        rest = sch["hours"][hours:]
        rows.append((f"... {len(rest)} more hours", sum(h["sends"] for h in rest)))
    table(f"Sends per hour (times in {zone})", ["hour", "sends"], rows)
    if sch["slots_given_back"]:
        err().print(
            f"{sch['slots_given_back']} throttle slots fall in their recipients' quiet hours: "
            "those rows go when the window opens (counted above)."
        )


@app.command("launch")
def launch(
    campaign: str = typer.Option(..., "--campaign", help="Campaign SID or id."),
    template: str = typer.Option(
        ..., "--template", help="Template text, or a file (.txt, or a path with a /)."
    ),
    audience: str = typer.Option(
        "all", "--audience", help="all | segment:key=value[,key=value] | FILE.csv"
    ),
    at: str = typer.Option(None, "--at", help="Start time (ISO 8601; default now)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Report only; send nothing."),
    key: str = typer.Option(None, "--idempotency-key", help="Launching twice is a no-op."),
    force: bool = typer.Option(
        False, "--force", help="Accept the launch checks' warnings (never their errors)."
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Launch a run of one template to an audience of one campaign (now or at a time).

    The launch is checked first (as through the API): an error refuses it; warnings (a field
    some recipients lack) are listed by --dry-run and stop a launch unless --force accepts them."""
    from dispatcher import runs
    from dispatcher.audience import parse_audience
    from dispatcher.launch import submit_run
    from dispatcher.launch_checks import WarningsNotAccepted

    req = runs.LaunchRequest(
        campaign=campaign,
        template=_template(template),
        audience=parse_audience(audience),
        send_at=_when(at),
        actor="cli",
        idempotency_key=key,
        force=force,
    )
    try:
        sub = submit_run(
            database(),
            req,
            now=datetime.now(UTC),
            dry_run=dry_run,
            preview=dry_run,
            zone=ZoneInfo(settings().default_timezone),
        )
    except WarningsNotAccepted as e:
        accept = "run again with --force to accept them"
        raise WarningsNotAccepted(e.issues, accept=accept) from None
    if dry_run:

        def render(d: dict[str, Any]) -> None:
            _render_dry(d)
            _print_warnings(d["warnings"])

        report(sub.dry_run, as_json, render)
        return
    doc = {**sub.run, "created": sub.created, "warnings": sub.warnings}

    def done(d: dict[str, Any]) -> None:
        _print_warnings(d["warnings"])
        err().print(
            f"run {d['id']} {'scheduled' if d['created'] else 'already exists'} for "
            f"{d['send_at']}; watch it with: dispatcher run watch {d['id']}"
        )

    report(doc, as_json, done)


@app.command("list")
def list_(as_json: bool = JsonOpt) -> None:
    """Recent runs."""
    from dispatcher import run_report, runs

    with database().session() as s:
        rows = [run_report.run_dict(r) for r in runs.list_runs(s)]
    report(
        {"runs": rows},
        as_json,
        lambda d: table(
            "Runs",
            ["id", "campaign", "state", "send at", "total", "pause reason"],
            [
                (
                    r["id"],
                    r["campaign_id"],
                    r["state"],
                    run_report.local_time(r["send_at"], settings().default_timezone),
                    r["total"],
                    r["pause_reason"],
                )
                for r in d["runs"]
            ],
        ),
    )


@app.command("show")
def show(run_id: int, as_json: bool = JsonOpt) -> None:
    """Rows by state, reasons, the schedule (when the rest goes, the finish) and pause reason."""
    from dispatcher import run_report

    with database().session() as s:
        doc = run_report.progress(s, run_id, datetime.now(UTC), grace_s=settings().throttle_grace_s)
    report(doc, as_json, _render_show)


def _render_show(d: dict[str, Any]) -> None:
    from dispatcher import run_report

    zone = settings().default_timezone
    table(
        f"Run {d['id']}",
        ["", ""],
        [
            ("campaign", d["campaign"]),
            ("state", run_report.state_words(d)),
            ("pause reason", d["pause_reason"] or "-"),
            ("total", d["total"]),
            ("done", f"{d['done']} of {d['total']}"),
            ("by state", run_report.state_line(d["by_state"])),
            (
                "deferred",
                ", ".join(f"{k} {v}" for k, v in sorted(d["deferred_by_reason"].items())) or "-",
            ),
            (
                "suppressed",
                ", ".join(f"{k} {v}" for k, v in d["suppressed_by_reason"].items()) or "-",
            ),
            ("next send", run_report.local_time(d["next_send_at"], zone)),
            ("estimated finish", run_report.local_time(d["eta"], zone)),
            ("finished", run_report.local_time(d["finished_at"], zone)),
        ],
    )
    render_schedule(d["schedule"], zone)
    guard = d.get("guard") or {}
    if guard.get("events"):
        since = guard.get("since")
        table(
            "Reputation guard"
            + (f" (judging sends since {run_report.local_time(since, zone)})" if since else ""),
            ["at", "event", "by", "why"],
            [
                (run_report.local_time(e["at"], zone), e["kind"], e["actor"], e["reason"] or "-")
                for e in guard["events"]
            ],
        )


def _operator() -> str:
    """Who runs the CLI (the audit trail's actor): ``operator:<login>``."""
    try:
        return f"operator:{getpass.getuser()}"
    except (KeyError, OSError):
        return "operator"


def _control(
    verb: str,
    run_id: int,
    as_json: bool,
    reason: str | None = None,
    acknowledge: str | None = None,
    actor: str | None = None,
) -> None:
    if verb == "pause":  # in Core: the quick path of an operator who must stop a run now
        from dispatcher import run_state

        with database().begin() as conn:
            run_state.pause(conn, run_id, reason or "paused by operator", halts=halts())
            doc = run_state.run_dict(run_state.run_row(conn, run_id))
    else:
        from dispatcher import run_report, runs

        now = datetime.now(UTC)
        with database().session() as s:
            if verb == "resume":
                runs.resume_run(s, run_id, now, actor=actor or _operator(), acknowledge=acknowledge)
            else:
                runs.cancel_run(s, run_id, now, halts=halts())
            doc = run_report.run_dict(runs.get_run(s, run_id))
    report(doc, as_json, lambda d: say(f"run {run_id} {d['state']}"))


@app.command("pause")
def pause(
    run_id: int, reason: str = typer.Option(None, "--reason"), as_json: bool = JsonOpt
) -> None:
    """Pause: nothing more is handed to the carrier until resumed."""
    _control("pause", run_id, as_json, reason)


@app.command("resume")
def resume(
    run_id: int,
    acknowledge: str = typer.Option(
        None,
        "--acknowledge",
        help="Why you resume after looking at the reputation guard's figures: recorded with "
        "your name, and the guard then judges only what is sent from now on (a fresh window).",
    ),
    actor: str = typer.Option(
        None, "--actor", help="Who resumes (audit trail; default operator:<login>)."
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Resume a paused run (the operator's decision, also after the reputation guard)."""
    _control("resume", run_id, as_json, acknowledge=acknowledge, actor=actor)


@app.command("cancel")
def cancel(run_id: int, as_json: bool = JsonOpt) -> None:
    """Cancel: every message not yet handed to the carrier is dropped (recorded as cancelled)."""
    _control("cancel", run_id, as_json)


@app.command("watch")
def watch_(
    run_id: int, interval: float = typer.Option(0.5, "--interval"), as_json: bool = JsonOpt
) -> None:
    """Live progress bar until the run finishes (works in embedded and distributed mode), then
    the verdict: whether every row is accounted for, computed from the numbers."""
    from dispatcher import runs
    from dispatcher.cli.watch import watch

    conf = settings()
    db = database()
    with db.session() as s:
        runs.get_run(s, run_id)  # an unknown run is one error line, before any progress bar
    doc = watch(
        db, run_id, interval=interval, zone=conf.default_timezone, grace_s=conf.throttle_grace_s
    )
    if as_json:
        report(doc, True)
