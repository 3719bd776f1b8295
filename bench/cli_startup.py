"""Start-up time of the quick CLI commands, as ratios against ceilings measured in the same run.

    python bench/cli_startup.py [--runs 15] [--dispatcher .venv/bin/dispatcher]

Makes a small embedded SQLite database (one brand, campaign and contact, two scheduled runs), then
runs each command below ``--runs`` times as a child process, interleaved round by round so that
a machine getting busier or quieter affects all of them alike, and prints the median wall time
and CPU time (user + sys of the child, from ``resource.getrusage(RUSAGE_CHILDREN)``) of each,
and the ratio of each median to the ceilings:

* ``python -c pass``                 the interpreter alone;
* ``python -c "import sqlalchemy"``  SQLAlchemy's import, which every database command pays;
* ``python -c "import dispatcher.models"``  SQLAlchemy + SQLModel + pydantic + our tables: the
  floor of any command that reads the database through the models (``runs``, ``ledger``).

The commands: ``run show 1`` (a run scheduled for later: its report includes the schedule
model), ``run pause 2`` (another run: paused from the first round on), ``consent revoke PHONE
--brand 1`` and ``consent revoke --file`` (a one-number CSV), and ``--help`` for comparison.  Not
a pass/fail test: the numbers are for reading (tests/unit/test_cli_startup.py guards what each
command imports instead).  Before 2026-12-07 ``run show 1`` and ``run pause 1`` shared run 1, so
from the second round on ``run show`` measured a paused run's report, without the schedule.

Measured 2026-12-07 (2 shared cores, load average 0.8-1.1 (2.2 at the end of the last run);
``--runs 7``; main at fcb2e6b and the branch, three times each, alternating; CPU medians in s,
and the ratio to ``import sqlalchemy`` measured in the same run; this machine's ``import
sqlalchemy`` was 0.32-0.38 s of CPU, the issue's quiet machine 0.26 s):

========================  =====================  =====================
command                   before (main)          after
========================  =====================  =====================
consent revoke            0.932 / 0.959 / 0.960  0.675 / 0.655 / 0.686
  / sqlalchemy            2.49 / 2.52 / 2.55     2.10 / 1.74 / 1.79
consent revoke --file     0.952 / 0.967 / 0.989  0.683 / 0.669 / 0.679
  / sqlalchemy            2.55 / 2.54 / 2.62     2.13 / 1.78 / 1.77
run pause 2               0.610 / 0.627 / 0.615  0.617 / 0.583 / 0.605
  / sqlalchemy            1.63 / 1.65 / 1.63     1.92 / 1.55 / 1.58
run show 1                1.035 / 1.039 / 1.007  0.939 / 0.991 / 0.968
  / sqlalchemy            2.77 / 2.73 / 2.67     2.93 / 2.64 / 2.53
import sqlalchemy         0.374 / 0.381 / 0.377  0.321 / 0.375 / 0.383
import dispatcher.models  0.732 / 0.765 / 0.753  0.671 / 0.753 / 0.759
========================  =====================  =====================

``consent grant|revoke`` (one number or ``--file``) work in SQLAlchemy Core again, through the
one consent service (``dispatcher/consent.py`` on ``dispatcher/tables.py``: the ledger's writer
``consent_events``, the suppression ``outbox_states.suppress_for_contact``): no SQLModel, ORM,
models, ledger or outbox module on their path (the consent-service merge had put them back:
~0.25-0.3 s).  What they add to ``run pause`` (+0.06-0.08 s): phonenumbers (normalising the
number), the service's modules and its queries.  Neither command imports Alembic when the schema
is current (``store.quick_head``: the migration files' head by two regular expressions, ~1 ms,
and one ``SELECT`` of ``alembic_version``); Alembic's runtime comes in only to upgrade a new or
older database (the first command on a new embedded database).

What they pay now (``python -X importtime`` and cProfile of ``run pause``): SQLAlchemy Core ~60 %,
Typer ~25 % (Typer 0.2x coerces every parameter through a pydantic ``TypeAdapter``: pydantic's
import and one adapter per parameter), the settings model ~4 %, the interpreter ~6 %, the SQLite
dialect, the schema check and the work itself the rest; the floor ``import typer._adapters,
sqlalchemy`` alone is ratio ~1.45.  ``run show`` adds the models, SQLModel and the ORM (its report,
``run_report.progress`` and the schedule model over the audience, reads through the ORM; moving
it to Core is what would remain: ratio ~0.8-1.0) and, for a run with a schedule,
``dispatcher.compliance``'s ``__init__``: ``schedule`` needs only ``compliance.quiet_hours``, but
importing it runs the package's ``__init__``, which imports gates, compose, content, template
lint, registration and revocation; skipping that ``__init__`` (a stub package in
``sys.modules``) took ``run show 1`` from 1.146 to 1.039 s CPU (9 runs each, load 0.8), ~9 %: a
lazy ``__init__`` (PEP 562 ``__getattr__``) in dispatcher/compliance/ is the cheap cut left.
Below 0.3 s on every machine needs a command path without SQLAlchemy or without Typer's pydantic
coercion.

Later on 2026-12-07 (load 2.7, 8 alternating runs, CPU medians): the lazy ``__init__`` is in
(``compose`` and ``segments`` stay eager: each is a module and the function it exports); ``run
show 1`` 0.902 -> 0.875 s (-3 %: the report still needs compose, content and evasion for its
segment counts, so the cut is gates, lints, keywords and registration).  ``dispatcher --help``
no longer imports every group to print one line of help each (the lines come from
``cli.app.GROUPS``): 0.87 -> 0.23 s (quiet machine before, load 2.7 after).  The floor of the
three quick commands on this machine, quiet (``/usr/bin/time``, CPU): ``import sqlalchemy``
0.25-0.28 s, ``import psycopg`` 0.17 s, ``import redis`` 0.18 s, interpreter 0.02 s; a
distributed ``run pause`` (PostgreSQL and the Redis halt key) therefore starts at ~0.4 s with the
official clients before any of its own work, so the issue's 0.3 s is below what these libraries
allow; ``dispatcher.models`` alone adds 0.14 s (SQLModel building the table classes).
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
        # run 1 for `run show` (scheduled: its report includes the schedule model), run 2 for
        # `run pause` (paused from the first round on: a paused run's report has no schedule)
        ["run", "launch", "--campaign", "1", "--template", "Hi [name]", "--at", "2099-01-01T10:00"],
        ["run", "launch", "--campaign", "1", "--template", "Hi [name]", "--at", "2099-01-02T10:00"],
    ):
        timed([dispatcher, *args], env)
    (workdir / "phones.csv").write_text(f"phone\n{PHONE}\n")


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
            "run pause 2": [d, "run", "pause", "2"],
            "consent revoke": [d, "consent", "revoke", PHONE, "--brand", "1"],
            "consent revoke --file": [d, "consent", "revoke", "--file", f"{tmp}/phones.csv"]
            + ["--brand", "1"],
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
