"""Fan-out of one run with audience "all" on PostgreSQL: time, rows/s and peak RSS against a bare
``COPY`` of the same rows.

    python bench/fanout.py [--rows 1000000] [--pg postgresql://postgres@127.0.0.1:5432/test]

Creates a throw-away database (dropped at the end), applies the Alembic schema, COPYs ``--rows``
contacts, imports the seed 004 campaign for a brand and launches a run with ``{"kind": "all"}``.
Then:

* **fan-out** — ``dispatcher.runs.fan_out(session, run_id, now)`` plus its commit, in a child
  process (so its ``VmHWM`` is the fan-out's own peak: it must not hold the audience in memory);
* **ceiling** — a bare ``COPY outboxmessage (same 8 columns) FROM STDIN`` of the very rows the
  fan-out wrote (exported first to a temporary file, streamed in 1 MiB chunks) into an empty copy
  of the table (``LIKE ... INCLUDING ALL``: same indexes and unique constraints) with the same
  foreign keys; and, for information, into a copy without the foreign keys.

Prints one JSON document: times, rows/s, peak RSS and ratio fan-out / COPY (goal: <= 2x, RSS
< 300 MB).  A ``CHECKPOINT`` precedes every timed step so one step's dirty pages do not slow the
next.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python bench/fanout.py` puts bench/, not the root, on the path
    sys.path.insert(0, str(ROOT))
from tests.servers import PG_DSN, throwaway_database  # noqa: E402
from tests.servers import conninfo as to_conninfo  # noqa: E402

SEED = ROOT / "dispatcher" / "data" / "usa2p_seed004.json"
COLUMNS = (
    "run_id",
    "campaign_id",
    "contact_id",
    "to_phone",
    "state",
    "due_at",
    "attempts",
    "updated_at",
)
CHUNK = 1 << 20

CHILD = """
import json, sys, time
from datetime import UTC, datetime
from dispatcher import runs
from dispatcher.store import Database

url, run_id = sys.argv[1], int(sys.argv[2])
db = Database(url)
with db.session() as s:  # warm the connection pool and the mappers outside the timed part
    runs.get_run(s, run_id)
t0 = time.perf_counter()
with db.session() as s:
    created = runs.fan_out(s, run_id, datetime.now(UTC))
seconds = time.perf_counter() - t0
with db.session() as s:
    run = runs.get_run(s, run_id)
    state, total = run.state, run.total
db.dispose()
print(json.dumps({"created": created, "seconds": seconds, "state": state, "total": total,
                  "maxrss_kb": int(next(line for line in open("/proc/self/status")
                                        if line.startswith("VmHWM:")).split()[1])}))
"""


def phone(i: int) -> str:
    return f"+1{2_000_000_000 + i}"  # +12000000000 .. : valid NANP-shaped, unique


def copy_contacts(conninfo: str, rows: int) -> float:
    """COPY ``rows`` contacts in text format; returns seconds."""
    now = datetime.now(UTC).isoformat()
    t0 = time.perf_counter()
    with psycopg.connect(conninfo) as conn, conn.cursor() as cur:
        with cur.copy(
            "COPY contact (phone, name, attributes, created_at, updated_at) FROM STDIN"
        ) as cp:
            step = 50_000
            for start in range(0, rows, step):
                cp.write(
                    "".join(
                        f"{phone(i)}\tName {i}\t{{}}\t{now}\t{now}\n"
                        for i in range(start, min(rows, start + step))
                    )
                )
        conn.commit()
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE contact")
    return time.perf_counter() - t0


def seed_run(url: str) -> tuple[int, int]:
    """Brand + the seed 004 campaign + a run with audience 'all'; returns (run id, campaign id)."""
    from dispatcher import registry, runs
    from dispatcher.store import Database

    db = Database(url)
    try:
        with db.session() as s:
            brand = registry.add_brand(s, name="Acme Corporation", tmobile_brand_tier="TOP")
            doc = registry.load_campaign_file(SEED)
            campaign, _ = registry.import_campaign(
                s, doc, brand=brand, policy={"campaign_status": "VERIFIED"}
            )
            run, _ = runs.launch(
                s,
                runs.LaunchRequest(
                    campaign=campaign.sid,
                    template="Your order has shipped.",
                    audience={"kind": "all"},
                ),
                now=datetime.now(UTC),
            )
            return int(run.id), int(campaign.id)  # type: ignore[arg-type]
    finally:
        db.dispose()


def checkpoint(conninfo: str) -> None:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("CHECKPOINT")


# --------------------------------------------------------------------------------- measures
def fan_out_in_child(url: str, run_id: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    r = subprocess.run(
        [sys.executable, "-c", CHILD, url, str(run_id)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"fan-out child failed: {r.stderr[-3000:]}")
    doc = json.loads(r.stdout.strip().splitlines()[-1])
    doc["wall_s"] = wall
    return doc


def export_rows(conninfo: str, run_id: int, path: Path) -> int:
    cols = ", ".join(COLUMNS)
    n = 0
    with psycopg.connect(conninfo) as conn, conn.cursor() as cur, path.open("wb") as fh:
        with cur.copy(
            f"COPY (SELECT {cols} FROM outboxmessage WHERE run_id = {int(run_id)} "
            f"ORDER BY id) TO STDOUT"
        ) as cp:
            for data in cp:
                fh.write(data)
        n = cur.rowcount
    return n


def make_copy_table(conninfo: str, name: str, *, foreign_keys: bool) -> None:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {name}")
        conn.execute(f"CREATE TABLE {name} (LIKE outboxmessage INCLUDING ALL)")
        if foreign_keys:
            for col, ref in (
                ("run_id", "run"),
                ("campaign_id", "campaign"),
                ("contact_id", "contact"),
            ):
                conn.execute(f"ALTER TABLE {name} ADD FOREIGN KEY ({col}) REFERENCES {ref} (id)")


def copy_in(conninfo: str, table: str, path: Path) -> tuple[float, int]:
    """Bare COPY FROM STDIN of the exported rows (streamed from the file) + commit."""
    cols = ", ".join(COLUMNS)
    with psycopg.connect(conninfo) as conn:
        conn.execute("SELECT 1")
        t0 = time.perf_counter()
        with conn.cursor() as cur:
            with cur.copy(f"COPY {table} ({cols}) FROM STDIN") as cp, path.open("rb") as fh:
                while data := fh.read(CHUNK):
                    cp.write(data)
            n = cur.rowcount
        conn.commit()
        return time.perf_counter() - t0, n


def measure(dsn: str, rows: int) -> dict:
    from dispatcher.store import Database

    with throwaway_database(dsn, "dispatcher_bench_") as url, tempfile.TemporaryDirectory() as d:
        conninfo = to_conninfo(url)
        db = Database(url)
        db.upgrade()
        db.dispose()
        contacts_s = copy_contacts(conninfo, rows)
        run_id, _ = seed_run(url)

        checkpoint(conninfo)
        fan = fan_out_in_child(url, run_id)
        # fan_out() returns the INSERT's rowcount, which SQLAlchemy 2.1 + psycopg report as -1
        # unless the statement sets preserve_rowcount: check the run's total (a COUNT) instead
        if fan["state"] != "running" or fan["total"] != rows:
            raise RuntimeError(
                f"fan-out left state {fan['state']}, total {fan['total']}; expected running, {rows}"
            )

        dump = Path(d) / "outbox.copy"
        exported = export_rows(conninfo, run_id, dump)
        make_copy_table(conninfo, "outbox_ceiling", foreign_keys=True)
        make_copy_table(conninfo, "outbox_ceiling_nofk", foreign_keys=False)
        checkpoint(conninfo)
        copy_s, copied = copy_in(conninfo, "outbox_ceiling", dump)
        checkpoint(conninfo)
        copy_nofk_s, _ = copy_in(conninfo, "outbox_ceiling_nofk", dump)
        if copied != exported or copied != rows:
            raise RuntimeError(f"COPY wrote {copied} of {exported} exported rows")
        rss_mb = fan["maxrss_kb"] / 1024
        return {
            "rows": rows,
            "contacts_copy_s": round(contacts_s, 2),
            "fan_out_returned": fan["created"],
            "fan_out_s": round(fan["seconds"], 3),
            "fan_out_rows_per_s": round(rows / fan["seconds"]),
            "fan_out_child_wall_s": round(fan["wall_s"], 2),
            "fan_out_peak_rss_mb": round(rss_mb, 1),
            "ceiling_copy_s": round(copy_s, 3),
            "ceiling_copy_rows_per_s": round(rows / copy_s),
            "ceiling_copy_no_fk_s": round(copy_nofk_s, 3),
            "ratio_fan_out_to_copy": round(fan["seconds"] / copy_s, 3),
            "ratio_fan_out_to_copy_no_fk": round(fan["seconds"] / copy_nofk_s, 3),
            "goal_ratio_le_2": fan["seconds"] / copy_s <= 2.0,
            "goal_rss_lt_300mb": rss_mb < 300,
        }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--pg", default=PG_DSN, help="maintenance database DSN (trust auth)")
    a = p.parse_args()
    print(json.dumps(measure(a.pg, a.rows), indent=2))


if __name__ == "__main__":
    main()
