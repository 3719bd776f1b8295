"""Start-up time of the quick CLI commands, as ratios against ceilings measured in the same run.

    python bench/cli_startup.py [--runs 15] [--dispatcher .venv/bin/dispatcher]

Makes a small embedded SQLite database (one brand, campaign, contact and scheduled run), then
runs each command below ``--runs`` times as a child process, interleaved round by round so that
a machine getting busier or quieter affects all of them alike, and prints the median wall time
and CPU time (user + sys of the child, from ``resource.getrusage(RUSAGE_CHILDREN)``) of each,
and the ratio of each median to the ceilings:

* ``python -c pass``                 the interpreter alone;
* ``python -c "import sqlalchemy"``  SQLAlchemy's import, which every database command pays;
* ``python -c "import dispatcher.models"``  SQLAlchemy + SQLModel + pydantic + our tables: the
  floor of any command that reads the database through the models (``runs``, ``ledger``).

The commands: ``run show 1``, ``run pause 1``, ``consent revoke PHONE --brand 1``, and
``--help`` for comparison.  Not a pass/fail test: the numbers are for reading.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SEED = ROOT / "dispatcher" / "data" / "usa2p_seed004.json"
PHONE = "+14155551234"


def _child_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall, cpu) seconds of one run of ``argv``; raises if it fails."""
    cpu0, t0 = _child_cpu(), time.perf_counter()
    r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    wall, cpu = time.perf_counter() - t0, _child_cpu() - cpu0
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {r.returncode}: {r.stderr[-2000:]}")
    return wall, cpu


def seed(dispatcher: str, env: dict[str, str], workdir: Path) -> None:
    contacts = workdir / "contacts.csv"
    contacts.write_text(f"phone,name,consent_evidence,consented_at\n{PHONE},Ann,form,2025-01-01\n")
    for args in (
        ["brand", "add", "Acme Corporation"],
        ["campaign", "import", str(SEED)],
        ["contacts", "import", str(contacts), "--brand", "1"],
        ["run", "launch", "--campaign", "1", "--template", "Hi [name]", "--at", "2099-01-01T10:00"],
    ):
        timed([dispatcher, *args], env)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--dispatcher", default=str(Path(sys.executable).with_name("dispatcher")))
    a = ap.parse_args()
    d = a.dispatcher
    py = str(Path(d).with_name("python"))  # the ceilings run in the command's own environment
    with tempfile.TemporaryDirectory(prefix="cli-startup-") as tmp:
        env = {
            **os.environ,
            "DISPATCHER_DATABASE_URL": f"sqlite:///{tmp}/bench.db",
            "DISPATCHER_REDIS_URL": "",
        }
        seed(d, env, Path(tmp))
        ceilings = {
            "python -c pass": [py, "-c", "pass"],
            "import sqlalchemy": [py, "-c", "import sqlalchemy"],
            "import dispatcher.models": [py, "-c", "import dispatcher.models"],
        }
        commands = {
            "run show 1": [d, "run", "show", "1"],
            "run pause 1": [d, "run", "pause", "1"],
            "consent revoke": [d, "consent", "revoke", PHONE, "--brand", "1"],
            "--help": [d, "--help"],
        }
        every = {**ceilings, **commands}
        for argv in every.values():  # warm the page cache and the .pyc files
            timed(argv, env)
        samples: dict[str, list[tuple[float, float]]] = {k: [] for k in every}
        for _ in range(a.runs):
            for name, argv in every.items():
                samples[name].append(timed(argv, env))
    med = {
        k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v))
        for k, v in samples.items()
    }
    floor_w, floor_c = med["import dispatcher.models"]
    sa_w, sa_c = med["import sqlalchemy"]
    print(f"{a.runs} runs each, medians; ratios of CPU time (wall in brackets)")
    print(f"{'':26} {'wall s':>7} {'cpu s':>7}  {'/ sqlalchemy':>18}  {'/ models floor':>18}")
    for k, (w, c) in med.items():
        print(
            f"{k:26} {w:7.3f} {c:7.3f}  {c / sa_c:6.2f} ({w / sa_w:5.2f})     "
            f"{c / floor_c:6.2f} ({w / floor_w:5.2f})"
        )


if __name__ == "__main__":
    main()
