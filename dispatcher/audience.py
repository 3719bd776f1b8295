"""Audiences: who a run goes to.  Kinds:

* ``{"kind": "all"}`` — every contact (gates then suppress those without consent, with reason);
* ``{"kind": "segment", "query": "plan=gold,state=FL"}`` — contacts whose attribute (or ``state``,
  ``time_zone``, ``name``) equals a value; terms are ANDed;
* ``{"kind": "list", ...}`` — recipients given with the run (CSV file or API list): phones with
  per-recipient template variables, staged into the outbox at launch.

Segment and all audiences are evaluated in SQL when the run starts (INSERT ... SELECT), so a
million-recipient run never passes through Python memory.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import and_, true

from dispatcher.errors import InputError
from dispatcher.models import Contact
from dispatcher.phones import try_normalize

_TERM = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_.]{0,63})\s*=\s*(.*?)\s*$")
_KEY_VALUE = r" *[A-Za-z_][A-Za-z0-9_.]{0,63} *=[^,\x00-\x1f]*"
#: segment queries as the HTTP API takes them (every one :func:`parse_segment` accepts): terms
#: ``key=value`` joined by commas; a value holds no comma and no control character
SEGMENT_PATTERN = rf"^{_KEY_VALUE}(?:,{_KEY_VALUE})*$"
_COLUMNS = {"state": "state_code", "time_zone": "time_zone", "name": "name", "phone": "phone"}


def parse_audience(text: str) -> dict[str, Any]:
    """CLI form: ``all``, ``segment:plan=gold,state=FL`` or a path to a CSV file."""
    t = (text or "").strip()
    if t == "all":
        return {"kind": "all"}
    if t.startswith("segment:"):
        q = t[len("segment:") :]
        parse_segment(q)
        return {"kind": "segment", "query": q}
    if t.lower().endswith(".csv"):
        return {"kind": "csv", "path": t}
    raise InputError(
        "--audience must be 'all', 'segment:key=value[,key=value]' or a .csv file", field="audience"
    )


def parse_segment(query: str) -> list[tuple[str, str]]:
    terms = []
    for part in query.split(","):
        m = _TERM.match(part)
        if not m:
            raise InputError(f"segment term {part.strip()!r} is not key=value", field="audience")
        terms.append((m.group(1), m.group(2)))
    if not terms:
        raise InputError("segment query is empty", field="audience")
    return terms


def where_clause(spec: dict[str, Any]) -> Any:
    """SQL condition on Contact for an 'all' or 'segment' audience."""
    if spec["kind"] == "all":
        return true()
    conds = []
    for key, value in parse_segment(spec["query"]):
        if key in _COLUMNS:
            col = getattr(Contact, _COLUMNS[key])
            conds.append(col == (value.upper() if key == "state" else value))
        else:
            conds.append(Contact.attributes[key].as_string() == value)
    return and_(*conds)


def iter_csv(path: Path) -> Iterator[tuple[int, str | None, str | None, dict[str, str]]]:
    """(line, e164 or None, reject reason or None, variables) per row, streamed."""
    try:
        fh = path.open(newline="", encoding="utf-8-sig")
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror}") from e
    with fh:
        reader = csv.DictReader(fh)
        header = [h.strip().lower() for h in (reader.fieldnames or [])]
        if "phone" not in header:
            raise InputError(f"{path}: the header has no 'phone' column")
        reader.fieldnames = header
        try:
            for raw in reader:
                e164, why = try_normalize(raw.get("phone") or "")
                variables = {k: v for k, v in raw.items() if k and k != "phone" and v}
                yield reader.line_num, e164, why, variables
        except (csv.Error, UnicodeDecodeError) as e:
            raise InputError(f"{path}: unreadable CSV near row {reader.line_num}: {e}") from e
