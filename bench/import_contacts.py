"""Import rate and peak RSS of `dispatcher contacts import` on N rows (SQLite or PostgreSQL).

    python bench/import_contacts.py [--rows 100000] [--database-url URL]

Runs the real CLI in a child process (its own VmHWM is the import's peak) and prints rows/s,
peak RSS, and the ratio to a ceiling measured in the same run: reading and parsing the same CSV
with the csv module alone (the floor cost of touching every row).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = """
import sys
from dispatcher.cli.app import app
try:
    app(sys.argv[1:], standalone_mode=False)
finally:
    # VmHWM, not ru_maxrss: Linux carries the parent's high-water mark across fork/exec into
    # ru_maxrss, so a child of a big pytest process would report the parent's peak
    hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
    sys.stderr.write("MAXRSS_KB=%d\\n" % int(hwm.split()[1]))
"""


def write_csv(path: Path, rows: int, bad_every: int = 100) -> int:
    """Write ``rows`` rows, one in ``bad_every`` bad; return the number of bad rows."""
    bad = 0
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["phone", "name", "consent_source", "consent_evidence", "consented_at", "plan"])
        for i in range(rows):
            phone = f"+1212{2000000 + i:07d}"
            evidence, when = "Checked the box at example.com/signup v3", "2025-03-01T10:00:00Z"
            if i % bad_every == 7:
                phone, bad = "555-12", bad + 1
            elif i % bad_every == 42:
                evidence, bad = "", bad + 1
            w.writerow([phone, f"Name {i}", "web_form", evidence, when, "gold"])
    return bad


def run_cli(args: list[str], env: dict[str, str]) -> tuple[dict, int, float]:
    t0 = time.perf_counter()
    r = subprocess.run(
        [sys.executable, "-c", CHILD, *args], env=env, capture_output=True, text=True, timeout=900
    )
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"import failed: {r.stderr[-2000:]}")
    kb = int(next(x for x in r.stderr.splitlines() if x.startswith("MAXRSS_KB=")).split("=")[1])
    return json.loads(r.stdout), kb, dt


def measure(database_url: str, rows: int, workdir: Path) -> dict:
    f = workdir / "contacts.csv"
    bad = write_csv(f, rows)
    env = {**os.environ, "DISPATCHER_DATABASE_URL": database_url}
    base_env = env.copy()
    run_cli(["db", "upgrade", "--json"], base_env)
    run_cli(["brand", "add", "Acme Corporation", "--json"], base_env)
    t0 = time.perf_counter()
    with f.open(newline="") as fh:
        n = sum(1 for _ in csv.DictReader(fh))
    ceiling_s = time.perf_counter() - t0
    doc, kb, wall = run_cli(
        ["contacts", "import", str(f), "--brand", "Acme Corporation", "--json"], env
    )
    again, _, wall2 = run_cli(
        ["contacts", "import", str(f), "--brand", "Acme Corporation", "--json"], env
    )
    return {
        "rows": rows,
        "bad_rows": bad,
        "parsed": n,
        "report": doc,
        "reimport": again,
        "wall_s": round(wall, 2),
        "reimport_wall_s": round(wall2, 2),
        "rows_per_s": round(rows / doc["seconds"]),
        "peak_rss_mb": round(kb / 1024, 1),
        "csv_parse_only_s": round(ceiling_s, 3),
        "ratio_to_parse_only": round(ceiling_s / doc["seconds"], 4),
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--database-url", default=None)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        url = a.database_url or f"sqlite:///{d}/bench.db"
        res = measure(url, a.rows, Path(d))
    res.pop("report")
    res.pop("reimport")
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
