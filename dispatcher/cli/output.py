"""Output helpers shared by every command: ``--json`` prints exactly one JSON document on stdout;
tables, progress and logs go to stderr.

Text is printed as it is: the consoles have Rich markup off, so a body, template, name or error
that contains ``[date]`` or ``[bring ID]`` keeps its brackets in tables, ``report()`` lines and
``err().print(...)``.  Style goes in ``style=`` or a ``rich.text.Text``; a caller that really
wants markup passes ``markup=True`` and escapes what it interpolates (``rich.markup.escape``).

Rich is imported on first use, not with this module (CLI start-up time)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Sequence
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text

JsonOpt = typer.Option(False, "--json", help="Print one JSON document on stdout.")

_out: Console | None = None
_err: Console | None = None


def _console(stderr: bool) -> Console:
    from rich.console import Console

    return Console(stderr=stderr, soft_wrap=True, markup=False)


def out() -> Console:
    global _out
    if _out is None:
        _out = _console(stderr=False)
    return _out


def err() -> Console:
    global _err
    if _err is None:
        _err = _console(stderr=True)
    return _err


def say(line: str) -> None:
    """One plain line on stderr (no Rich: the quick commands print only this)."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


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
    """A table on stdout.  Cells are text as they are (a ``rich.text.Text`` keeps its style).
    Nothing is cut: text wraps between words, and a word (a SID, a phone number) is never
    split.  A table that cannot fit the terminal that way is printed as one block of
    ``column  value`` lines per row instead."""
    from rich.table import Table
    from rich.text import Text

    cells = [
        [v if isinstance(v, Text) else Text("" if v is None else str(v)) for v in r] for r in rows
    ]
    t = Table(title=title)
    for c in columns:
        t.add_column(c, overflow="fold")
    for r in cells:
        t.add_row(*r)
    console = out()
    if _narrowest(columns, cells) <= console.width:
        console.print(t)
        return
    if title:
        console.print(Text(title, style="bold"))
    for r in cells:
        block = Table.grid(padding=(0, 2))
        block.add_column(style="bold", no_wrap=True)
        block.add_column(overflow="fold")
        for name, value in zip(columns, r, strict=False):
            block.add_row(name or "", value)
        console.print(block)
        console.print()


def _narrowest(columns: Sequence[str], cells: list[list[Text]]) -> int:
    """Width of the table with each column as narrow as its longest word (a box table pads
    each column by one space a side and draws a line between columns and at both ends)."""
    from rich.cells import cell_len

    widest = [max((cell_len(w) for w in str(c).split()), default=0) for c in columns]
    for r in cells:
        for i, v in enumerate(r[: len(widest)]):
            widest[i] = max(widest[i], max((cell_len(w) for w in v.plain.split()), default=0))
    return sum(widest) + 3 * len(widest) + 1


def report(doc: Any, as_json: bool, render: Callable[[Any], Any] | None = None) -> None:
    """Print ``doc`` as JSON when asked, else call ``render(doc)`` (or print key: value lines)."""
    if as_json:
        emit_json(doc)
        return
    if render is not None:
        render(doc)
        return
    if isinstance(doc, dict):
        from rich.text import Text

        for k, v in doc.items():
            out().print(Text.assemble((str(k), "bold"), ": ", str(v)))
    else:
        out().print(str(doc))
