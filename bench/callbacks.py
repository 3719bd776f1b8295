"""Status-callback CPU cost, end to end: the sandbox's HttpCallbackSender -> ``dispatcher serve``.

    .venv/bin/python bench/callbacks.py [--n 2000] [--workers 4] [--pg postgresql://...]
                                        [--redis redis://HOST:PORT/DB] [--profile DIR]
                                        [--clients urllib3,httpx]
                                        [--statuses queued,sent,delivered]

Seeds a throw-away PostgreSQL database with N outbox rows in ``sent`` that carry provider
SIDs (one brand, one Messaging Service campaign, one run: what the worker records from the
create response; until 2026-12-07 they were seeded in ``sending``, a state no row with a SID is
ever in, so the queued/sent callbacks moved them), starts ``dispatcher serve`` the way
the integration tests do (tests/harness.py), then posts 3 signed callbacks per row (queued, sent,
delivered — what Twilio posts for a Messaging Service send) through the sandbox carrier's
``HttpCallbackSender`` from this process.  A warm-up round (--warm rows) is not measured.

``--statuses`` picks the callbacks per row (e.g. ``queued,sending,sent``: only those the server
acknowledges without a transaction).  With ``--clients a,b`` each sender gets its own rows and
rounds on the same server, one after the other (a comparison in one run).  Prints one JSON
document: per client, callbacks/s, and CPU ms per callback of the sender (this process, the
signed callbacks are built before the clock starts), the webhook server and the PostgreSQL
backends of the bench database; checks every row ended ``delivered`` (``sent`` without a
final status in ``--statuses``) and no callback failed.
``--profile DIR`` records the server with py-spy (``--gil``) during the measured round into
``DIR/serve.txt`` (collapsed stacks).  Without ``--redis`` the server's Redis (only pinged by
``/healthz``) is a redis-server of the bench's own.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python bench/callbacks.py` puts bench/, not the root, on the path
    sys.path.insert(0, str(ROOT))

from bench._procs import cpu_times  # noqa: E402
from tests.harness import Stack, wait_for  # noqa: E402
from tests.servers import PG_DSN, redis_or_own, throwaway_database  # noqa: E402

SEED = ROOT / "dispatcher" / "data" / "usa2p_seed004.json"
SERVICE_SID = "MG" + "0" * 31 + "1"
SENDER = "+15005550006"
STATUSES = ("queued", "sent", "delivered")


def sid_of(i: int) -> str:
    return "SM" + f"{i:032x}"


def phone(i: int) -> str:
    return f"+1646{2_000_000 + i:07d}"


def seed(url: str, n: int) -> None:
    """Brand, campaign (Messaging Service), run, N contacts and N outbox rows in ``sent``."""
    from dispatcher import registry
    from dispatcher.models import Contact, OutboxMessage, Run
    from dispatcher.store import Database, bulk_insert

    db = Database(url)
    db.upgrade()
    doc = json.loads(SEED.read_text())
    doc.update(campaign_status="VERIFIED", messaging_service_sid=SERVICE_SID)
    with db.session() as s:
        brand = registry.add_brand(s, name="Acme Corporation", tmobile_brand_tier="TOP")
        campaign, _ = registry.import_campaign(
            s,
            doc,
            brand=brand,
            policy={"sender": SENDER, "quiet_hours_policy": "none", "campaign_status": "VERIFIED"},
        )
        run = Run(campaign_id=campaign.id, template="Hi", state="running", total=n)
        s.add(run)
        s.flush()
        campaign_id, run_id = campaign.id, run.id
    now = datetime.now(UTC)
    with db.connect() as conn:
        bulk_insert(
            conn,
            Contact.__table__,
            [  # type: ignore[attr-defined]
                {"phone": phone(i), "attributes": {}, "created_at": now, "updated_at": now}
                for i in range(n)
            ],
        )
        ids = dict(conn.exec_driver_sql("SELECT phone, id FROM contact").all())
        bulk_insert(
            conn,
            OutboxMessage.__table__,
            [  # type: ignore[attr-defined]
                {
                    "run_id": run_id,
                    "campaign_id": campaign_id,
                    "contact_id": ids[phone(i)],
                    "to_phone": phone(i),
                    "variables": {},
                    "state": "sent",
                    "attempts": 1,
                    "provider_sid": sid_of(i),
                    "provider_status": "accepted",
                    "due_at": now,
                    "sent_at": now,
                    "updated_at": now,
                }
                for i in range(n)
            ],
        )
        conn.commit()
    db.dispose()


def callbacks(url: str, rows: range, statuses: tuple[str, ...] = STATUSES) -> list[Any]:
    """Signed callbacks exactly as the sandbox carrier builds them, status by status."""
    from dispatcher.sandbox import wire
    from dispatcher.sandbox.callbacks import signed_callback
    from dispatcher.settings import SANDBOX_ACCOUNT_SID, SANDBOX_AUTH_TOKEN

    out = []
    for st in statuses:
        for i in rows:
            params = {
                "MessageSid": sid_of(i),
                "SmsSid": sid_of(i),
                "AccountSid": SANDBOX_ACCOUNT_SID,
                "From": "",
                "To": phone(i),
                "MessageStatus": st,
                "SmsStatus": st,
                "ApiVersion": wire.API_VERSION,
                "MessagingServiceSid": SERVICE_SID,
            }
            if st == "delivered":
                params["RawDlrDoneDate"] = wire.raw_dlr_done_date(time.time())
            out.append(signed_callback(SANDBOX_AUTH_TOKEN, url, params))
    return out


def post_all(sender: Any, cbs: list[Any], timeout: float) -> float:
    """Send every callback; wait until each got an answer.  Returns the elapsed seconds."""
    stats = sender.stats
    target = stats.sent + stats.failed + len(cbs)
    t0 = time.perf_counter()
    for cb in cbs:
        sender.send(cb)
    wait_for(
        lambda: stats.sent + stats.failed >= target, timeout, "every callback answered", every=0.01
    )
    return time.perf_counter() - t0


def states(url: str) -> dict[str, int]:
    from dispatcher.store import Database

    db = Database(url)
    try:
        with db.connect() as conn:
            return dict(
                conn.exec_driver_sql(
                    "SELECT state, count(*) FROM outboxmessage GROUP BY state"
                ).all()
            )
    finally:
        db.dispose()


def pg_backends(url: str) -> list[int]:
    import psycopg

    name = url.rsplit("/", 1)[1]
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        return [
            r[0]
            for r in conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", (name,))
        ]


def ms(user: float, system: float, n: int) -> dict[str, float]:
    return {
        "total": round(1000 * (user + system) / n, 3),
        "user": round(1000 * user / n, 3),
        "system": round(1000 * system / n, 3),
    }


def senders() -> dict[str, Callable[[int], Any]]:
    """The HTTP clients a run can compare, by name: the sandbox's own (urllib3) and, as a
    baseline, the same sender on one shared ``httpx.Client``."""
    import httpx

    from dispatcher.sandbox.callbacks import Callback, HttpCallbackSender

    class HttpxSender(HttpCallbackSender):
        def __init__(self, *, workers: int) -> None:
            super().__init__(workers=workers)
            self._httpx = httpx.Client(
                timeout=5.0, limits=httpx.Limits(max_keepalive_connections=workers)
            )

        def post(self, cb: Callback) -> int:
            return self._httpx.post(cb.url, data=cb.params, headers=cb.headers).status_code

        def close(self) -> None:
            super().close()
            self._httpx.close()

    return {
        "urllib3": lambda w: HttpCallbackSender(workers=w),
        "httpx": lambda w: HttpxSender(workers=w),
    }


def measure(
    args: argparse.Namespace,
    make: Callable[[int], Any],
    hook: str,
    first: int,
    url: str,
    serve: Any,
) -> dict[str, Any]:
    """Warm-up round, then the measured round, for one sender on rows ``first`` onwards."""
    warm = range(first + args.n, first + args.n + args.warm)
    sender = make(args.workers)
    try:
        post_all(sender, callbacks(hook, warm, args.statuses), args.timeout)
        cbs = callbacks(hook, range(first, first + args.n), args.statuses)
        spy = None
        if args.profile:
            args.profile.mkdir(parents=True, exist_ok=True)
            spy = subprocess.Popen(
                [  # noqa: S603 - our venv's py-spy
                    str(Path(sys.executable).parent / "py-spy"),
                    "record",
                    "-p",
                    str(serve.pid),
                    "-o",
                    str(args.profile / "serve.txt"),
                    "-f",
                    "raw",
                    "-r",
                    "200",
                    "--gil",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(1.0)  # py-spy attaches (a start-up wait, not a settle-down)
        pids = pg_backends(url)
        c0, s0, p0 = os.times(), cpu_times([serve.pid]), cpu_times(pids)
        elapsed = post_all(sender, cbs, args.timeout)
        c1, s1, p1 = os.times(), cpu_times([serve.pid]), cpu_times(pids)
        if spy is not None:
            spy.send_signal(2)
            spy.wait(60)
        failed = sender.stats.failed
    finally:
        sender.close()
    n = len(cbs)
    return {
        "callbacks": n,
        "seconds": round(elapsed, 2),
        "callbacks_per_s": round(n / elapsed, 1),
        "cpu_ms_per_callback": {
            "sender": ms(c1.user - c0.user, c1.system - c0.system, n),
            "server": ms(s1[0] - s0[0], s1[1] - s0[1], n),
            "postgres_backends": ms(p1[0] - p0[0], p1[1] - p0[1], n),
        },
        "failed": failed,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    available = senders()
    names = args.clients.split(",")
    unknown = [c for c in names if c not in available]
    if unknown:
        raise SystemExit(f"error: unknown client(s) {unknown}; known: {sorted(available)}")
    per = args.n + args.warm
    log_dir = Path(tempfile.mkdtemp(prefix="bench-callbacks-"))
    with throwaway_database(args.pg) as url, redis_or_own(args.redis) as redis_url:
        seed(url, per * len(names))
        stack = Stack(redis_url=redis_url, database_url=url, log_dir=log_dir)
        try:
            serve = stack.start_webhooks()
            hook = stack.webhook_url + "/twilio/status"
            results = {
                f"{name} #{k + 1}" if names.count(name) > 1 else name: measure(
                    args, available[name], hook, k * per, url, serve
                )
                for k, name in enumerate(names)
            }
            got = states(url)
        finally:
            stack.close()
    shutil.rmtree(log_dir, ignore_errors=True)
    failed = sum(r["failed"] for r in results.values())
    return {
        "workers": args.workers,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "clients": results,
        "outbox_states": got,
        "statuses": list(args.statuses),
        "ok": failed == 0
        and got == {"delivered" if "delivered" in args.statuses else "sent": per * len(names)},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=2000, help="outbox rows (3 callbacks each)")
    p.add_argument("--warm", type=int, default=200, help="rows of the unmeasured warm-up")
    p.add_argument("--workers", type=int, default=4, help="sender threads (the sandbox's 4)")
    p.add_argument(
        "--redis",
        default=None,
        help="only pinged by /healthz (nothing is written); default: a redis-server of its own",
    )
    p.add_argument("--pg", default=PG_DSN)
    p.add_argument("--timeout", type=float, default=300.0)
    p.add_argument("--profile", type=Path, default=None, help="py-spy the server into DIR")
    p.add_argument(
        "--clients",
        default="urllib3",
        help="comma-separated senders measured one after the other in this run: urllib3, httpx",
    )
    p.add_argument(
        "--statuses",
        type=lambda v: tuple(v.split(",")),
        default=STATUSES,
        help="the callbacks posted per row, in this order (default queued,sent,delivered; "
        "e.g. queued,sending,sent: only callbacks acknowledged without a transaction)",
    )
    out = run(p.parse_args())
    print(json.dumps(out, indent=2))
    sys.exit(0 if out["ok"] else 1)


if __name__ == "__main__":
    main()
