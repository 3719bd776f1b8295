"""No function in dispatcher/ or workers/ grows past what a reader takes in at once (issue 19:
lint_campaign was 248 lines, build_router 460, the sandbox's create_app 154).  Migrations,
which are a schema written out once, are exempt."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAX_LINES = 140


def test_no_function_is_longer_than_the_limit() -> None:
    long = []
    for f in sorted([*(ROOT / "dispatcher").rglob("*.py"), *(ROOT / "workers").rglob("*.py")]):
        if "migrations" in f.parts:
            continue
        for node in ast.walk(ast.parse(f.read_text("utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = (node.end_lineno or node.lineno) - node.lineno + 1
                if n > MAX_LINES:
                    long.append(f"{f.relative_to(ROOT)}:{node.lineno} {node.name} ({n} lines)")
    assert long == []
