"""outbox.py is the only writer of outbox states: no other module of the package issues an UPDATE
on the outbox table (it calls the named, compare-and-set transition in dispatcher/outbox.py).
outbox_states.py is part of the owner: the revocation's transition, without the models (outbox.py
imports it; ``consent revoke`` starts without the models)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import dispatcher
from dispatcher.models import OutboxMessage

PACKAGE = Path(dispatcher.__file__).parent
TABLE = OutboxMessage.__tablename__
#: how a module names the outbox table
TABLE_EXPRESSIONS = {"outbox.T", "OutboxMessage.__table__", "tables.outbox_message"}
OWNERS = {PACKAGE / "outbox.py", PACKAGE / "outbox_states.py"}


def _aliases(tree: ast.Module) -> set[str]:
    """Module names bound to the outbox table (``T = outbox.T``, ``OB = ...__table__``)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Assign):
            continue
        pairs: list[tuple[ast.expr, ast.expr]] = []
        for target in node.targets:
            if isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple):
                pairs += zip(target.elts, node.value.elts, strict=False)
            else:
                pairs.append((target, node.value))
        for target, value in pairs:
            if isinstance(target, ast.Name) and ast.unparse(value) in TABLE_EXPRESSIONS:
                names.add(target.id)
    for node in ast.walk(tree):  # from dispatcher.tables import outbox_message [as OM]
        if isinstance(node, ast.ImportFrom) and node.module == "dispatcher.tables":
            names |= {a.asname or a.name for a in node.names if a.name == "outbox_message"}
    return names


def _writers(path: Path) -> list[str]:
    """Where ``path`` updates the outbox table: ``update(<table>)``, ``<table>.update()`` or a
    raw ``UPDATE`` of it."""
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source)
    table = TABLE_EXPRESSIONS | _aliases(tree)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        if isinstance(f, ast.Name) and f.id == "update" and node.args:
            if ast.unparse(node.args[0]) in table:
                found.append(f"{path.name}:{node.lineno}")
        elif isinstance(f, ast.Attribute) and f.attr == "update":
            if ast.unparse(f.value) in table:
                found.append(f"{path.name}:{node.lineno}")
    raw = re.compile(rf"UPDATE\s+({TABLE}\b|{{t}})", re.IGNORECASE)
    for i, line in enumerate(source.splitlines(), 1):
        if raw.search(line):
            found.append(f"{path.name}:{i}")
    return found


def test_only_outbox_py_updates_the_outbox_table() -> None:
    others = [p for p in PACKAGE.rglob("*.py") if p not in OWNERS and "migrations" not in p.parts]
    assert len(others) > 50
    assert [w for p in others for w in _writers(p)] == []


def test_the_check_finds_the_owners_own_updates() -> None:
    assert len(_writers(PACKAGE / "outbox.py")) >= 8
    assert len(_writers(PACKAGE / "outbox_states.py")) == 1  # through the Core view


def _sid_writes(path: Path) -> list[tuple[str, bool]]:
    """Where ``path`` sets ``provider_sid`` (``.values(provider_sid=...)``, a ``{"provider_sid":
    ...}`` of values, a raw ``SET ... provider_sid = ...``), each with whether the same write
    sets the state to ``sent``."""
    source = path.read_text(encoding="utf-8")
    found: list[tuple[str, bool]] = []
    for node in ast.walk(ast.parse(source)):
        pairs: dict[str, str] = {}
        if isinstance(node, ast.Call):
            pairs = {k.arg: ast.unparse(k.value) for k in node.keywords if k.arg}
        elif isinstance(node, ast.Dict):
            pairs = {
                k.value: ast.unparse(v)
                for k, v in zip(node.keys, node.values, strict=True)
                if isinstance(k, ast.Constant) and isinstance(k.value, str)
            }
        if "provider_sid" in pairs:
            sent = pairs.get("state") in {"SENT", "'sent'", "outbox.SENT"}
            found.append((f"{path.name}:{node.lineno}", sent))  # type: ignore[attr-defined]
    flat = re.sub(r'"\s*\n\s*"', "", source)  # adjacent string literals of one statement
    for m in re.finditer(r"\bSET\b(.*?)\b(?:FROM|WHERE|RETURNING)\b", flat, re.S | re.I):
        if re.search(r"\bprovider_sid\s*=", m.group(1)):
            line = source.count("\n", 0, m.start()) + 1
            found.append((f"{path.name}:~{line}", "state = 'sent'" in m.group(1)))
    return found


def test_a_sid_is_recorded_only_with_the_state_sent() -> None:
    """provider_status.moves_nothing rests on this: every row that has a provider SID ranks at
    least ``sent`` (the SID is written only together with ``state = 'sent'``; no transition
    lowers a row from ``sent`` or a final state), so an intermediate status never moves one."""
    code = [p for p in PACKAGE.rglob("*.py") if "migrations" not in p.parts]
    writes = [w for p in code for w in _sid_writes(p)]
    assert len(writes) >= 3  # mark_sent, mark_sent_many, resolve_unknown
    assert {w.split(":")[0] for w, _ in writes} == {"outbox.py"}
    assert [w for w, sent in writes if not sent] == []
