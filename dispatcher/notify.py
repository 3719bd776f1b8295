"""In-process notifications for code that runs beside the product (a billing job, a cron task):

    from dispatcher.notify import notify
    from dispatcher.settings import get_settings

    result = notify(get_settings(), "QE...", "Acme: your contract expires on [date]. STOP to end",
                    [{"phone": "+14155550100", "variables": {"date": "May 1"}}],
                    idempotency_key="contracts-2026-05")

The one launch path of the HTTP API and the CLI (``dispatcher.launch.submit_run``): the same
launch checks (``LaunchRefused`` / ``WarningsNotAccepted``, whose ``.rule`` and ``.issues`` name
the findings; ``force=True`` accepts warnings, never errors), gates at fan-out, outbox and
idempotency.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from dispatcher.errors import InputError
from dispatcher.launch import submit_run
from dispatcher.runs import LaunchRequest


def notify(
    runtime_or_settings: Any,
    campaign: str,
    template: str,
    recipients: Iterable[str | Mapping[str, Any]] | Mapping[str, Any],
    *,
    send_at: datetime | None = None,
    idempotency_key: str | None = None,
    actor: str = "python",
    force: bool = False,
) -> dict[str, Any]:
    """Launch a run; returns {"run", "created", "dry_run"} (``dry_run["warnings"]``: the launch
    checks' warnings that ``force`` accepted).

    ``recipients``: phones, ``{"phone", "variables"}`` dicts, or an audience reference
    (``{"kind": "all"}`` / ``{"kind": "segment", "query": "plan=gold"}``).
    ``runtime_or_settings``: a Runtime (its db and clock) or Settings (a database is opened).
    """
    db, clock = _edges(runtime_or_settings)
    if isinstance(recipients, Mapping):
        if recipients.get("kind") not in ("all", "segment"):
            raise InputError(
                "an audience reference is {'kind': 'all'} or {'kind': 'segment', 'query': ...}",
                field="recipients",
            )
        if recipients["kind"] == "segment":
            from dispatcher.audience import parse_segment

            parse_segment(str(recipients.get("query") or ""))
        audience, listed = dict(recipients), None
    else:
        listed = [
            {"phone": r, "variables": {}}
            if isinstance(r, str)
            else {"phone": str(r.get("phone", "")), "variables": dict(r.get("variables") or {})}
            for r in recipients
        ]
        audience = {"kind": "list"}
    req = LaunchRequest(
        campaign=campaign,
        template=template,
        audience=audience,
        send_at=send_at,
        actor=actor,
        idempotency_key=idempotency_key,
        recipients=listed,
        force=force,
    )
    sub = submit_run(db, req, now=clock.now())
    return {"run": sub.run, "created": sub.created, "dry_run": sub.dry_run}


def _edges(obj: Any) -> tuple[Any, Any]:
    if hasattr(obj, "db") and hasattr(obj, "clock"):
        return obj.db, obj.clock
    from dispatcher.clock import SystemClock
    from dispatcher.store import open_database

    return open_database(obj.database_url), SystemClock()
