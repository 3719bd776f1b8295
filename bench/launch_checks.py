"""The launch checks' audience query on a large audience, against the fan-out of the same run.

    python bench/launch_checks.py [--rows 200000] [--pg postgresql://postgres@127.0.0.1:5432/test]

For SQLite (a temporary file) and PostgreSQL (a throw-away database, dropped at the end): insert
``--rows`` contacts (name; attributes ``plan``, ``date`` for 90 % of them, ``clinic``), import the
seed 004 campaign, create a run with audience ``{"kind": "all"}`` and time, each in its own
transaction:

* **fields** — ``dispatcher.launch.audience_fields`` for ``[first_name] [date] [clinic]``: one
  pass over the audience counting who has each field (what every launch with fields pays);
* **known** — the same with a misspelt field, which adds the distinct attribute names for the
  "did you mean" (what only a refused launch pays);
* **ceiling** — ``dispatcher.runs.fan_out`` of the same run: the INSERT ... SELECT every launch of
  this audience does anyway when it starts.

Prints one JSON document per backend: seconds and the ratios fields / fan-out, known / fan-out.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python bench/launch_checks.py` puts bench/ on the path
    sys.path.insert(0, str(ROOT))
from tests.servers import PG_DSN, throwaway_database  # noqa: E402

SEED = ROOT / "dispatcher" / "data" / "usa2p_seed004.json"
BATCH = 10_000


def seed(db: Any, rows: int) -> int:
    """Brand, campaign, ``rows`` contacts; returns the id of an unstarted 'all' run."""
    from dispatcher import registry, runs
    from dispatcher.models import Contact
    from dispatcher.store import bulk_insert

    now = datetime.now(UTC)
    with db.session() as s:
        brand = registry.add_brand(s, name="Northwind Dental")
        campaign, _ = registry.import_campaign(s, json.loads(SEED.read_text()), brand=brand)
        table = Contact.__table__  # type: ignore[attr-defined]
        for start in range(0, rows, BATCH):
            bulk_insert(
                s.connection(),
                table,
                [
                    {
                        "phone": f"+1{2_000_000_000 + i}",
                        "name": f"Pat{i} Lee",
                        "attributes": {"plan": "gold", "clinic": "Main St"}
                        | ({"date": "May 1"} if i % 10 else {}),
                        "created_at": now,
                        "updated_at": now,
                    }
                    for i in range(start, min(rows, start + BATCH))
                ],
            )
        req = runs.LaunchRequest(campaign.sid, "Hi", {"kind": "all"})
        return runs.create_run(s, req, campaign, now=now).id


def timed(db: Any, step: Callable[[Any], Any]) -> tuple[float, Any]:
    with db.session() as s:
        t0 = time.perf_counter()
        out = step(s)
        return time.perf_counter() - t0, out


def measure(url: str, rows: int) -> dict[str, Any]:
    from dispatcher import runs
    from dispatcher.launch import audience_fields
    from dispatcher.store import Database

    db = Database(url)
    db.upgrade()
    run_id = seed(db, rows)
    timed(db, lambda s: audience_fields(s, runs.get_run(s, run_id), ["plan"]))  # warm up
    fields_s, stats = timed(
        db, lambda s: audience_fields(s, runs.get_run(s, run_id), ["first_name", "date", "clinic"])
    )
    known_s, typo = timed(
        db, lambda s: audience_fields(s, runs.get_run(s, run_id), ["first_name", "dat"])
    )
    fanout_s, created = timed(db, lambda s: runs.fan_out(s, run_id, datetime.now(UTC)))
    db.dispose()
    return {
        "backend": db.engine.dialect.name,
        "rows": rows,
        "holders": dict(stats.holders),
        "known": sorted(typo.known),
        "fields_seconds": round(fields_s, 3),
        "known_seconds": round(known_s, 3),
        "fanout_seconds": round(fanout_s, 3),
        "fanout_rows": created,
        "ratio_fields_to_fanout": round(fields_s / fanout_s, 3),
        "ratio_known_to_fanout": round(known_s / fanout_s, 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--pg", default=PG_DSN)
    ap.add_argument("--no-pg", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        print(json.dumps(measure(f"sqlite:///{d}/bench.db", args.rows)), flush=True)
    if not args.no_pg:
        with throwaway_database(args.pg, prefix="dispatcher_bench_") as url:
            print(json.dumps(measure(url, args.rows)), flush=True)


if __name__ == "__main__":
    main()
