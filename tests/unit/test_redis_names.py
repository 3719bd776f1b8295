"""Every Lua script lives in dispatcher/lua/ with a header naming its KEYS, ARGV and answer;
every Redis key name is built in dispatcher/keys.py, and every name there is used."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from dispatcher import keys, lua

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = [ROOT / "dispatcher", ROOT / "workers"]
LUA_DIR = ROOT / "dispatcher" / "lua"


def _py_files() -> list[Path]:
    return sorted(f for pkg in PACKAGES for f in pkg.rglob("*.py"))


def _rel(f: Path) -> str:
    return f.relative_to(ROOT).as_posix()


def test_every_lua_file_is_in_the_lua_package_and_registered_by_name() -> None:
    found = sorted(_rel(f) for pkg in PACKAGES for f in pkg.rglob("*.lua"))
    assert found == sorted(f"dispatcher/lua/{n}.lua" for n in lua.NAMES)


@pytest.mark.parametrize("name", lua.NAMES)
def test_each_script_has_a_header_naming_every_key_and_argument_it_reads(name: str) -> None:
    text = lua.source(name)
    lines = text.splitlines()
    header = lines[: next(i for i, ln in enumerate(lines) if not ln.startswith("--"))]
    assert header[0].startswith(f"-- {name}.lua: ")
    joined = "\n".join(header)
    assert "Called by " in joined and "-- Returns " in joined
    body = "\n".join(lines[len(header) :])
    for kind in ("KEYS", "ARGV"):
        used = set(re.findall(rf"{kind}\[(\d+)\]", body))
        documented = set(re.findall(rf"-- {kind}\[(\d+)\]", joined))
        assert used <= documented, f"{name}.lua: {kind} {sorted(used - documented)} undocumented"


def test_scripts_are_registered_only_through_dispatcher_lua() -> None:
    pattern = re.compile(r"register_script\(|\.eval\(|evalsha|redis\.call\(", re.IGNORECASE)
    offenders = [
        f"{_rel(f)}:{n}"
        for f in _py_files()
        if f != LUA_DIR / "__init__.py"
        for n, line in enumerate(f.read_text("utf-8").splitlines(), 1)
        if pattern.search(line)
    ]
    assert offenders == []


def _string_constants(tree: ast.AST) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            out.append((node.lineno, node.value))
        elif isinstance(node, ast.JoinedStr) and node.values:
            first = node.values[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                out.append((node.lineno, first.value))
    return out


def test_redis_key_names_are_built_only_in_keys_py() -> None:
    offenders = []
    for f in _py_files():
        if f == ROOT / "dispatcher" / "keys.py":
            continue
        src = f.read_text("utf-8")
        tree = ast.parse(src)
        offenders += [
            f"{_rel(f)}:{n}: {s[:40]!r}"
            for n, s in _string_constants(tree)
            if s.startswith(f"{keys.PREFIX}:")
        ]
        if re.search(r"\bkeys\.(PREFIX|_HALT)\b", src):
            offenders.append(f"{_rel(f)}: uses keys.PREFIX")
    assert offenders == []


def test_every_key_builder_in_keys_py_is_used() -> None:
    tree = ast.parse((ROOT / "dispatcher" / "keys.py").read_text("utf-8"))
    public = [
        n.name for n in tree.body if isinstance(n, ast.FunctionDef) and not n.name.startswith("_")
    ]
    others = "\n".join(
        f.read_text("utf-8") for f in _py_files() if f != ROOT / "dispatcher" / "keys.py"
    )
    unused = [name for name in public if not re.search(rf"\bkeys\.{name}\(", others)]
    assert public and unused == []
