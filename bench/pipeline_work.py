"""Work per message of the worker's path, counted rather than timed: Python function calls,
SQL statements and Redis commands per message.  Counts do not move with the machine's load, so
two trees (before/after a change) can be compared exactly on a busy machine, where
bench/pipeline.py's ratios move by +-10 % from run to run.

    python bench/pipeline_work.py [--n 300] [--tree DIR] [--json]

``--tree`` measures another checkout of the project (run it with that checkout's own Python,
e.g. ``/path/old/.venv/bin/python bench/pipeline_work.py --tree /path/old``).  The setup is
bench/pipeline.py's: real Redis (a server of its own) + a throw-away PostgreSQL database, the
sandbox carrier as a server (status callbacks dropped), limits lifted, the scheduler as a child
process with the CLI's defaults.  The workers are not child processes: this process takes the
scheduler's queue messages from the Redis broker one at a time and runs the real actor on each
under cProfile, so every Python call of the worker's path is counted (a warm-up run first).
Redis commands are the server's ``INFO commandstats`` over the measured run (the scheduler's
included); SQL statements are the worker's own (SQLAlchemy engine events).

Measured 2026-12-07, load average 14-33 (other sessions), 300 messages, four runs per tree,
old = main at 88e8895 (before issue 19's merges), new = main at its merge:

================================  ===========  ===========
per message                       88e8895      after
================================  ===========  ===========
Python calls (worker)             3 760-3 809  3 727-3 805
SQL statements (worker)           0.37-0.41    0.36-0.41 (the same statements, same counts)
Redis commands (all processes)    29.4-36.0    30.0-36.6 (MULTI/EXEC +0.2: repetition metric)
scheduler CPU while idle          6.6 %        6.6 % of a core (both at once, 40 s)
================================  ===========  ===========

The Redis count includes the scheduler's ticks during the run, so it moves with the run's length.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--tree", type=Path, default=Path(__file__).resolve().parents[1])
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    tree = a.tree.resolve()
    sys.path.insert(0, str(tree))
    os.chdir(tree)
    doc = measure(tree, a.n)
    if a.json:
        print(json.dumps(doc, indent=2))
        return
    print(f"{tree}  n={a.n}  load average {doc['load_average']}")
    print(f"  python calls per message (worker): {doc['python_calls_per_msg']:.1f}")
    print(f"  SQL statements per message (worker): {doc['sql_per_msg']:.3f}")
    print(f"  Redis commands per message (all):   {doc['redis_per_msg']:.2f}")
    for k, v in doc["redis_by_command"].items():
        print(f"    {k:24} {v:6.2f}")
    for k, v in doc["sql_by_statement"].items():
        print(f"    {v:6.3f}  {k}")


def measure(tree: Path, n: int) -> dict[str, Any]:
    import bench.pipeline as bp
    from tests.harness import Stack
    from tests.servers import redis_or_own, throwaway_database

    with (
        redis_or_own(None) as redis_url,
        throwaway_database() as db,
        tempfile.TemporaryDirectory() as logs,
    ):
        stack = Stack(redis_url=redis_url, database_url=db, log_dir=Path(logs))
        try:
            carrier = stack.start_sandbox()
            carrier.faults(drop_callbacks=1.0)
            sid = bp.seed(db, n, ["g"])
            os.environ.update(stack.env)  # the actors' settings: this stack's servers
            stack.start_scheduler(**bp.SCHEDULER)
            return _counted_run(stack, carrier, db, sid, n)
        finally:
            stack.close()


def _counted_run(stack: Any, carrier: Any, db: str, sid: str, n: int) -> dict[str, Any]:
    import redis
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    import bench.pipeline as bp
    from workers import actors
    from workers import broker as broker_module

    broker = broker_module.broker
    queue = getattr(actors, "QUEUE", "deliver")

    def drain(target: int, prof: cProfile.Profile | None) -> None:
        consumer = broker.consume(queue, prefetch=1, timeout=200)
        deadline = time.monotonic() + 300
        while carrier.count() < target:
            if time.monotonic() > deadline:
                raise SystemExit(f"timed out: the carrier holds {carrier.count()} of {target}")
            stack.check_alive()
            msg = next(consumer)
            if msg is None:
                continue
            fn = broker.get_actor(msg.actor_name).fn
            if prof is not None:
                prof.enable()
            fn(*msg.args, **msg.kwargs)
            if prof is not None:
                prof.disable()
            consumer.ack(msg)
        consumer.close()

    bp.launch(db, sid, "warm")
    drain(bp.WARM, None)
    carrier.reset()

    statements: Counter[str] = Counter()
    counting = [False]

    def on_execute(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if counting[0]:
            statements[" ".join(statement.split()[:4])[:60]] += 1

    event.listen(Engine, "before_cursor_execute", on_execute)
    client = redis.Redis.from_url(stack.redis_url)

    def commands() -> dict[str, int]:
        return {k: v["calls"] for k, v in client.info("commandstats").items()}

    prof = cProfile.Profile()
    counting[0] = True
    before = commands()
    bp.launch(db, sid, "g")
    drain(n, prof)
    after = commands()
    counting[0] = False
    by_command = {
        k.removeprefix("cmdstat_"): (after[k] - before.get(k, 0)) / n
        for k in sorted(after)
        if after[k] - before.get(k, 0) and k != "cmdstat_info"
    }
    return {
        "n": n,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python_calls_per_msg": pstats.Stats(prof).total_calls / n,  # type: ignore[attr-defined]
        "sql_per_msg": sum(statements.values()) / n,
        "sql_by_statement": {k: v / n for k, v in statements.most_common()},
        "redis_per_msg": sum(by_command.values()),
        "redis_by_command": by_command,
    }


if __name__ == "__main__":
    main()
