"""Module crossings of the worker half of one message's path (issue 19), for one or more checkouts.

    python bench/crossings.py [ROOT ...]        # default: this checkout

For each checkout (its own code, this interpreter and its packages): the pipeline harness of
``tests/unit/pipeline`` (SQLite, fakeredis, the in-process sandbox carrier) launches a run of 3
consented recipients, then ONE ``workers.actors.deliver_batch`` of the 3 rows is traced
(``sys.setprofile``, this thread: from the actor to the recorded sends).  Every call whose
function lives in ``dispatcher``/``workers`` is attributed to the nearest such frame up the stack
(so a SQLAlchemy commit hook counts as a call from the module that committed).  Counted:

* ``modules``: the product modules the path runs code in;
* ``crossings``: distinct (caller module -> callee module) pairs;
* ``in_cycles``: crossings inside a cycle of that graph (a callee calling back into its caller);
* ``private_calls``: distinct calls into another module's ``_private`` function or method.

The compliance library (``dispatcher.compliance.*``, pure) counts as one module, and the leaf
utilities every module uses (clock, keys, logs, errors) are left out.  ``by_package`` counts the
same trace with each package as one node (``dispatcher.delivery``, ``gateway``, ``throttle``;
``metrics`` with ``metrics_daily``): the view of a reader who follows the path to a port and
stops there.  Structure, not speed: the numbers do not vary between runs.  Prints one JSON
document.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

LEAVES = {"dispatcher.clock", "dispatcher.keys", "dispatcher.logs", "dispatcher.errors"}


PACKAGES = ("dispatcher.delivery", "dispatcher.gateway", "dispatcher.throttle")


def _node(module: str) -> str | None:
    if not module.startswith(("dispatcher", "workers")) or module in LEAVES:
        return None
    return "dispatcher.compliance" if module.startswith("dispatcher.compliance") else module


def _package(node: str) -> str:
    if node == "dispatcher.metrics_daily":
        return "dispatcher.metrics"
    return next((p for p in PACKAGES if node.startswith(p + ".")), node)


def _product(module: str) -> bool:
    return module.startswith(("dispatcher.", "workers."))


def _cycles(edges: set[tuple[str, str]]) -> set[tuple[str, str]]:
    """The edges inside a strongly connected component (a cycle of module calls)."""
    graph: dict[str, set[str]] = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)

    def reaches(src: str, dst: str) -> bool:
        seen, todo = {src}, [src]
        while todo:
            for n in graph.get(todo.pop(), ()):
                if n == dst:
                    return True
                if n not in seen:
                    seen.add(n)
                    todo.append(n)
        return False

    return {(a, b) for a, b in edges if reaches(b, a)}


def measure() -> dict[str, Any]:
    """Trace one deliver_batch in this checkout (run with the checkout on sys.path[0])."""
    from tests.unit.pipeline.conftest import make_harness

    with tempfile.TemporaryDirectory() as d, make_harness(Path(d)) as h:
        h.contacts(3)
        ids = [r.id for r in h.rows(h.launch())]
        from workers import actors

        actors.set_runtime(h.rt)
        actors.pipeline()  # built before the trace: composition, not the path
        edges: dict[tuple[str, str], int] = {}
        private: set[str] = set()
        modules: set[str] = set()

        def profile(frame: Any, event: str, _arg: Any) -> None:
            if event != "call":
                return
            callee = frame.f_globals.get("__name__", "")
            if not _product(callee):
                return
            back = frame.f_back
            while back is not None and not _product(back.f_globals.get("__name__", "")):
                back = back.f_back
            caller = back.f_globals.get("__name__", "") if back is not None else ""
            a, b = _node(caller), _node(callee)
            if b is not None:
                modules.add(b)
            if a is None or b is None or a == b:
                return
            edges[(a, b)] = edges.get((a, b), 0) + 1
            name = frame.f_code.co_name
            if name.startswith("_") and not name.startswith("__") and not name.startswith("<"):
                private.add(f"{a} -> {b}.{frame.f_code.co_qualname}")

        sys.setprofile(profile)
        try:
            actors.deliver_batch.fn(ids)
        finally:
            sys.setprofile(None)
        states = [h.row(i).state for i in ids]
    cyc = _cycles(set(edges))
    packaged = {(_package(a), _package(b)) for a, b in edges} - {(n, n) for n in modules}
    packaged = {(a, b) for a, b in packaged if a != b}
    return {
        "by_package": {
            "modules": len({_package(m) for m in modules}),
            "crossings": len(packaged),
            "in_cycles": len(_cycles(packaged)),
            "crossing_list": [f"{a} -> {b}" for a, b in sorted(packaged)],
        },
        "states": states,
        "modules": len(modules),
        "crossings": len(edges),
        "in_cycles": len(cyc),
        "private_calls": len(private),
        "module_list": sorted(modules),
        "crossing_list": [f"{a} -> {b}" for a, b in sorted(edges)],
        "cycle_list": [f"{a} -> {b}" for a, b in sorted(cyc)],
        "private_list": sorted(private),
    }


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--one":
        sys.path.insert(0, sys.argv[2])
        print(json.dumps(measure()))
        return
    roots = [Path(a).resolve() for a in sys.argv[1:]] or [Path(__file__).resolve().parents[1]]
    out: dict[str, Any] = {}
    for root in roots:
        proc = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--one", str(root)],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        )
        out[str(root)] = json.loads(proc.stdout.strip().splitlines()[-1])
    if len(roots) == 2:
        old, new = (out[str(r)] for r in roots)
        keys = ("modules", "crossings", "in_cycles", "private_calls")
        out["old -> new"] = {k: f"{old[k]} -> {new[k]}" for k in keys}
        out["old -> new by package"] = {
            k: f"{old['by_package'][k]} -> {new['by_package'][k]}" for k in keys[:3]
        }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
