"""Output helpers shared by every command: ``--json`` prints exactly one JSON document on stdout;
tables, progress and logs go to stderr."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

JsonOpt = typer.Option(False, "--json", help="Print one JSON document on stdout.")

_out: Console | None = None
_err: Console | None = None


def out() -> Console:
    global _out
    if _out is None:
        _out = Console(soft_wrap=True)
    return _out


def err() -> Console:
    global _err
    if _err is None:
        _err = Console(stderr=True, soft_wrap=True)
    return _err


def _default(o: Any) -> Any:
    if isinstance(o, datetime | date):
        return o.isoformat()
    if hasattr(o, "model_dump"):
        return o.model_dump(mode="json")
    if isinstance(o, set | frozenset | tuple):
        return list(o)
    return str(o)


def to_json(doc: Any) -> str:
    return json.dumps(doc, default=_default, ensure_ascii=False)


def emit_json(doc: Any) -> None:
    sys.stdout.write(to_json(doc) + "\n")
    sys.stdout.flush()


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    t = Table(title=title)
    for c in columns:
        t.add_column(c)
    for r in rows:
        t.add_row(*["" if v is None else str(v) for v in r])
    out().print(t)


def report(doc: Any, as_json: bool, render: Any = None) -> None:
    """Print ``doc`` as JSON when asked, else call ``render(doc)`` (or print key: value lines)."""
    if as_json:
        emit_json(doc)
        return
    if render is not None:
        render(doc)
        return
    if isinstance(doc, dict):
        for k, v in doc.items():
            out().print(f"[bold]{k}[/bold]: {v}")
    else:
        out().print(doc)
