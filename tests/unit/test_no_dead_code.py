"""Nothing at module level in dispatcher/ or workers/ that the product itself never uses: code
only tests or benchmarks need lives in tests/ or bench/ (tests/throttle_sim.py,
tests/metric_series.py).  A name counts as used when it appears anywhere else in the package
or in pyproject.toml (entry points); decorated handlers (routes, commands, actors, event
listeners) are registered by their decorator."""

from __future__ import annotations

import ast
import re
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: left for now, with the reason (remove an entry once its name is gone)
KNOWN: set[tuple[str, str]] = set()


def _defined(tree: ast.Module) -> list[str]:
    names: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            if not node.decorator_list:
                names.append(node.name)
        elif isinstance(node, ast.Assign):
            names += [t.id for t in node.targets if isinstance(t, ast.Name)]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.append(node.target.id)
    return [n for n in names if not n.startswith("__")]


def test_every_module_level_name_is_used_by_the_product() -> None:
    files = sorted([*(ROOT / "dispatcher").rglob("*.py"), *(ROOT / "workers").rglob("*.py")])
    texts = {f.relative_to(ROOT).as_posix(): f.read_text("utf-8") for f in files}
    corpus = "\n".join(texts.values()) + (ROOT / "pyproject.toml").read_text("utf-8")
    words = Counter(re.findall(r"\w+", corpus))
    unused = [
        (path, name)
        for path, src in texts.items()
        for name in _defined(ast.parse(src))
        if words[name] == 1
    ]
    assert sorted(set(unused) - KNOWN) == []
