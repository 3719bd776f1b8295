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
``--help`` for comparison.  Not a pass/fail test: the numbers are for reading
(tests/unit/test_cli_startup.py guards what each command imports instead).

Measured (2026-12-06, 2 shared cores, load average 4.3-6.4 from other sessions, so wall times
are ~2x CPU; ``--runs 7``, the code before (main at 88e8895) and after, twice each, alternating;
CPU medians, and in brackets the ratio to ``import sqlalchemy``, which moves less with load):

==================  ===================================  ===================================
command             before                               after
==================  ===================================  ===================================
run pause 1         0.822 / 0.781 s (2.66 / 2.68)        0.504 / 0.490 s (1.56 / 1.60)
consent revoke      0.853 / 0.789 s (2.76 / 2.71)        0.547 / 0.557 s (1.69 / 1.81)
run show 1          0.903 / 0.798 s (2.93 / 2.74)        0.839 / 0.753 s (2.59 / 2.45)
import sqlalchemy   0.309 / 0.291 s                      0.324 / 0.307 s
==================  ===================================  ===================================

On a quiet machine ``import sqlalchemy`` takes ~0.20 s of CPU (the issue's before: 0.52-0.55 s
per quick command, ratio ~2.7), so after: ``run pause`` ~0.32 s, ``consent revoke`` ~0.35 s,
``run show`` ~0.50 s.  What they pay now (``python -X importtime`` and cProfile of ``run pause``):
SQLAlchemy Core ~60 %, Typer ~25 % (Typer 0.2x coerces every parameter through a pydantic
``TypeAdapter``: pydantic's import and one adapter per parameter), the settings model ~4 %,
the interpreter ~6 %, the SQLite dialect, the schema check and the work itself the rest; the
floor ``import typer._adapters, sqlalchemy`` alone is ratio ~1.45.  ``consent revoke`` adds
phonenumbers (normalising the number).  What was removed: SQLModel, the ORM and the models
(``run pause`` and ``consent grant|revoke`` work in Core on ``dispatcher/tables.py``),
pydantic-settings (argparse, asyncio, python-dotenv; ``dispatcher/settings.py``), the other
command modules of each group.  ``run show`` still loads the models, the ORM and Rich: its
report (``run_report.progress`` and the schedule model over the audience) reads through the
ORM; moving it to Core is what would remain (the models' and ORM's share, ratio ~0.8-1.0).  Below
0.3 s on every machine needs a command path without SQLAlchemy or without Typer's pydantic
coercion.
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
