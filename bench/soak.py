"""Reliability soak (issues 10 and 21; not in CI): every fault of issue 21 at once, for
``--minutes`` (10 for the figures in docs/reliability.md), on the distributed stack of
tests/harness.py (sandbox carrier as a server, webhooks, a dramatiq pool of ``--processes``
worker processes, ``dispatcher scheduler``) against a redis-server of its own and a throw-away
PostgreSQL database — with the SHIPPED DEFAULTS: the scheduler is started with no option (tick
1 s, leader TTL 10 s, reconcile 10 s, lost-after 60 s, sending lease 90 s, status-after 300 s,
quick-status-after 10 s), the workers with the settings' defaults (throttle grace 2 s, batch 20)
and ``dramatiq_worker_timeout=100`` as the Dockerfile sets it.

Traffic (one brand, one sender, four campaigns):

* ``fast`` (window 1000/1 s: never binds): a run of 150 every ``--every`` s (two at most active);
* ``slow`` (10/1 s: always binding; the campaign whose recovery "to full rate" is measured): a
  run of 60 every ``--every`` s (two at most active);
* ``guarded`` (3/1 s, the reputation guard at its defaults): one run spanning the soak;
* ``unknown-zone`` (custom quiet hours 00:00-24:00): one run to 30 Chicago numbers and 15
  non-geographic (+1 500) numbers, whose zone is unknown: they may go only inside every US
  zone's window (18:00-00:00 UTC), else they wait, deferred.

Faults, all at once (times as fractions of the soak, so a shorter ``--minutes`` keeps them):

* carrier: 5 % 500, 3 % 429, 3 % accepted-then-dropped (connection reset), 10 % answered
  0.5 s late, 5 % of status callbacks never sent, 1 % of messages undelivered 30007;
* worker kill -9 every 1/24 of the soak (but not within 8 s of another fault), alternately one
  worker process and the whole pool (restarted at once);
* Redis FLUSHALL at 15 %, 42 % and 72 %;
* ``pg_terminate_backend`` on every connection of the database at 25 % and 62 %;
* the scheduler killed -9 at 33 % (started again 5 s later: it waits out the leader TTL);
* the webhooks server killed -9 at 50 % (started again 20 s later);
* a 30007 spike (30 %) at 58 % (once the webhooks are up: the guard judges on callbacks)
  until the guard pauses the ``guarded`` run (240 s at most); an "operator" answers every
  guard pause 3 s later with ``dispatcher run resume ID --acknowledge ...``;
* a signed STOP every 4 s (while the webhooks are up) from a recipient of an active ``fast`` or
  ``slow`` run, half of them with their message still queued.

The verdict is computed from the carrier's log (``GET /_sandbox/messages``) and the outbox: 0
duplicates; 0 lost (every consented recipient who did not STOP got a message, every outbox row
final or legitimately deferred: queued for quiet hours that are in force); nobody texted after
their STOP was answered (carrier ``received_at`` vs the 200's time, same host clock); the
sliding windows over any limit (campaign windows, sender MPS) with when they started relative to
the last FLUSHALL; time to the first send and to full rate (a window of period + grace holding
the limit) of the ``slow`` campaign after each flush and crash; the time from the carrier's
receipt to the final status of every row; the guard's pauses and acknowledgements; the load
average. Printed as JSON (also written to ``--json``) and a short table; exit 1 when any of
duplicates, lost, after-STOP, windows over or unknown-zone sends inside quiet hours is not 0.

    .venv/bin/python bench/soak.py --minutes 10 [--json soak.json]
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.harness import (  # noqa: E402 - after the path tweak (a script, not a package)
    DISPATCHER,
    FINAL,
    SENDER,
    Seeded,
    Stack,
    check_delivery,
    deployment,
    launch,
    outbox_rows,
    run_counts,
    seed,
    wait_for,
)

FAULTS = (
    *("--fault-500", "0.05", "--fault-429", "0.03"),
    *("--fault-timeout", "0.03", "--fault-timeout-mode", "drop"),
    *("--fault-slow", "0.10", "--fault-slow-seconds", "0.5"),
    *("--fault-drop-callbacks", "0.05", "--filter-30007", "0.01"),
    *("--seed", "11"),
)
BASE_30007, SPIKE_30007 = 0.01, 0.30
SPIKE_MAX_S = 240.0  # the spike lasts until the guard pauses the guarded run, at most this
#: campaigns other than ``guarded`` keep the guard on, loose enough that the soak's own faults
#: (STOPs, the 30007 spike) do not pause them
LOOSE_GUARD = {"filtering_rate": 0.5, "failure_rate": 0.5, "opt_out_rate": 0.5}
MPS = 600.0


@dataclass(frozen=True)
class Camp:
    sid: str
    npa: str
    limit: int
    period: int
    per_run: int  # recipients per run (0: one run, sized by the soak's length)
    guard: dict[str, Any] | None = None
    quiet_hours: str | None = None  # None: seed()'s "none"


CAMPAIGNS = {
    "fast": Camp("QE2c6890da8086d771620e9b13fadeba0b", "646", 1000, 1, 150, LOOSE_GUARD),
    "slow": Camp("QE2c6890da8086d771620e9b13fadeba0c", "212", 10, 1, 60, LOOSE_GUARD),
    "guarded": Camp("QE2c6890da8086d771620e9b13fadeba0d", "415", 3, 1, 0, {}),
    "unknown-zone": Camp(
        "QE2c6890da8086d771620e9b13fadeba0e", "312", 1000, 1, 0, LOOSE_GUARD, "00:00-24:00"
    ),
}
UNKNOWN_NPA = "500"  # non-geographic NANP: phonenumbers knows no zone
EVENTS = (  # (fraction of the soak, event)
    (0.15, "flushall"),
    (0.25, "pg_terminate"),
    (0.33, "kill_scheduler"),
    (0.42, "flushall"),
    (0.50, "kill_webhooks"),
    (0.58, "spike_30007"),
    (0.62, "pg_terminate"),
    (0.72, "flushall"),
)
RESTART_AFTER = {"scheduler": 5.0, "webhooks": 20.0}
KILLS = 24  # worker kill slots per soak (those within 8 s of another fault are skipped)


def ts(v: Any) -> float:
    if isinstance(v, str):  # a replayed row (--replay)
        v = datetime.fromisoformat(v)
    if isinstance(v, datetime):
        return (v if v.tzinfo else v.replace(tzinfo=UTC)).timestamp()
    return float(v)


def pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def rss_mb(pid: int) -> float:
    import psutil

    try:
        p = psutil.Process(pid)
        total = p.memory_info().rss
        for c in p.children(recursive=True):
            try:
                total += c.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return round(total / 2**20, 1)
    except psutil.NoSuchProcess:
        return float("nan")


def windows_over(
    times: list[float], period: float, limit: int, costs: list[int] | None = None
) -> list[dict[str, float]]:
    """Episodes of sliding windows ``[t, t + period)`` whose total cost exceeds ``limit``
    (overlapping over-limit windows merged): start, end and the worst count of each."""
    order = sorted(range(len(times)), key=lambda i: times[i])
    tt = [times[i] for i in order]
    cs = [(costs[i] if costs else 1) for i in order]
    prefix = [0]
    for c in cs:
        prefix.append(prefix[-1] + c)
    out: list[dict[str, float]] = []
    for i, t in enumerate(tt):
        n = prefix[bisect.bisect_left(tt, t + period, lo=i)] - prefix[i]
        if n <= limit:
            continue
        if out and t < out[-1]["end"]:
            out[-1]["end"] = t + period
            out[-1]["worst"] = max(out[-1]["worst"], n)
        else:
            out.append({"start": t, "end": t + period, "worst": n})
    return out


def terminate_backends(database_url: str) -> int:
    import psycopg

    from tests.servers import PG_DSN

    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        return len(
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (database_url.rsplit("/", 1)[1],),
            ).fetchall()
        )


@dataclass
class Soak:
    """The soak's state: the stack, what was seeded and launched, what was done to it."""

    stack: Stack
    db: Any
    redis_url: str
    work: Path
    seconds: float
    every: float
    processes: int
    threads: int
    rng: random.Random
    t0: float = 0.0
    seeded: dict[str, list[Seeded]] = field(default_factory=dict)
    runs: dict[str, list[int]] = field(default_factory=dict)
    offsets: dict[str, int] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    stops: dict[str, float] = field(default_factory=dict)  # number -> time the 200 came
    stops_tried: set[str] = field(default_factory=set)  # posted, answered or not
    stop_failures: int = 0
    down: dict[str, float] = field(default_factory=dict)  # process -> when to start it again
    paused_seen: dict[int, float] = field(default_factory=dict)  # run -> when seen paused
    acks: list[dict[str, Any]] = field(default_factory=list)
    spike: dict[str, Any] = field(default_factory=dict)
    load: list[tuple[float, float]] = field(default_factory=list)
    rss0: dict[str, float] = field(default_factory=dict)

    # ----------------------------------------------------------------------- setup, traffic
    def note(self, kind: str, **detail: Any) -> None:
        if kind.startswith(("kill_", "flushall")):  # the slow campaign's rows still to send
            detail["slow_backlog"] = self.to_send(self.runs.get("slow", []))
        self.events.append({"t": time.time(), "kind": kind, **detail})
        print(f"  {time.time() - self.t0:6.1f} s  {kind} {detail or ''}", flush=True)

    def seed_campaign(self, name: str, n: int, npa: str | None = None) -> Seeded:
        from dispatcher import registry

        c = CAMPAIGNS[name]
        npa = npa or c.npa
        off = self.offsets.get(npa, 0)
        self.offsets[npa] = off + n + 4
        s = seed(
            self.db,
            self.work / name,
            consented=n,
            opted_out=2,
            no_consent=2,
            window_limit=c.limit,
            window_seconds=c.period,
            mps=MPS,
            campaign_sid=c.sid,
            npa=npa,
            offset=off,
        )
        with self.db.session() as ses:  # the campaign's own policy (seed() sets "none")
            camp = registry.get_campaign(ses, c.sid)
            if c.quiet_hours:
                camp.quiet_hours_policy = c.quiet_hours
            if c.guard is not None:
                camp.guard = c.guard
            ses.add(camp)
        return s

    def launch(self, name: str, s: Seeded) -> None:
        self.seeded.setdefault(name, []).append(s)
        self.runs.setdefault(name, []).append(launch(self.db, s))

    def launch_long_runs(self, minutes: float) -> None:
        self.launch("guarded", self.seed_campaign("guarded", max(60, int(45 * minutes))))
        geo = self.seed_campaign("unknown-zone", 30)
        unk = self.seed_campaign("unknown-zone", 15, UNKNOWN_NPA)
        both = replace(
            geo,
            consented=geo.consented + unk.consented,
            opted_out=geo.opted_out + unk.opted_out,
            no_consent=geo.no_consent + unk.no_consent,
        )
        self.launch("unknown-zone", both)

    def launch_due(self) -> None:
        """A new fast/slow run while fewer than two of that campaign's runs have rows to send
        (a run's last rows may wait minutes for a status: it does not hold the launches)."""
        for name in ("fast", "slow"):
            active = sum(1 for r in self.runs.get(name, []) if self.to_send([r]))
            if active < 2:
                self.launch(name, self.seed_campaign(name, CAMPAIGNS[name].per_run))

    def to_send(self, run_ids: list[int]) -> int:
        """Rows of these runs not handed to the carrier yet (queued, sending, unknown)."""
        from sqlalchemy import func, select

        from dispatcher.outbox import T

        if not run_ids:
            return 0
        q = select(func.count()).where(
            T.c.run_id.in_(run_ids), T.c.state.in_(("queued", "sending", "unknown"))
        )
        with self.db.session() as s:
            return int(s.connection().execute(q).scalar_one())

    def post_stop(self) -> None:
        """A signed STOP (as Twilio posts it) from a recipient of an active fast/slow run, half
        of the time one whose message is still queued (the race), never twice the same."""
        from sqlalchemy import select

        from dispatcher.outbox import T
        from dispatcher.sandbox.inbound import post_inbound
        from dispatcher.settings import SANDBOX_ACCOUNT_SID, SANDBOX_AUTH_TOKEN

        active = [r for n in ("fast", "slow") for r in self.runs.get(n, [])[-2:]]
        q = select(T.c.to_phone).where(T.c.run_id.in_(active))
        if self.rng.random() < 0.5:
            q = q.where(T.c.state == "queued")
        with self.db.session() as s:
            phones = [
                p for (p,) in s.connection().execute(q.limit(200)) if p not in self.stops_tried
            ]
        if not phones:
            return
        p = self.rng.choice(phones)
        self.stops_tried.add(p)
        try:
            r = post_inbound(
                self.stack.webhook_url + "/twilio/inbound",
                account_sid=SANDBOX_ACCOUNT_SID,
                auth_token=SANDBOX_AUTH_TOKEN,
                from_=p,
                to=SENDER,
                body="STOP",
            )
        except Exception:  # noqa: BLE001 - webhooks unreachable: no answer, no STOP counted
            self.stop_failures += 1
            return
        if r.status_code == 200:
            self.stops[p] = time.time()  # the carrier's received_at uses this host's clock
        else:
            self.stop_failures += 1

    # ----------------------------------------------------------------------- faults
    def kill_worker(self, whole_pool: bool) -> None:
        w = self.stack.procs["workers"]
        if whole_pool:
            w.kill9()  # a host dies
        else:
            os.kill(self.rng.choice(w.children()), signal.SIGKILL)  # one worker process
            w.stop(grace=2.0)  # the pool's master stops its sibling and exits
        self.note("kill_pool" if whole_pool else "kill_worker_process")
        self.stack.start_workers(processes=self.processes, threads=self.threads)

    def fault(self, kind: str) -> None:
        import redis

        if kind == "flushall":
            r = redis.Redis.from_url(self.redis_url)
            r.flushall()
            r.close()
            self.note(kind)
        elif kind == "pg_terminate":
            backlog = self.to_send(self.runs.get("slow", []))
            n = terminate_backends(self.stack.database_url)
            self.note(kind, backends=n, slow_backlog=backlog)
        elif kind in ("kill_scheduler", "kill_webhooks"):
            name = kind.split("_", 1)[1]
            self.stack.procs[name].kill9()
            self.down[name] = time.time() + RESTART_AFTER[name]
            self.note(kind)
        elif kind == "spike_30007":
            assert self.stack.carrier is not None
            self.stack.carrier.configure(delivery_errors={"30007": SPIKE_30007})
            self.spike = {"on": time.time()}
            self.note(kind, fraction=SPIKE_30007)

    def restart_due(self) -> None:
        for name, at in list(self.down.items()):
            if time.time() < at:
                continue
            del self.down[name]
            if name == "scheduler":
                self.stack.start_scheduler_defaults()
            else:
                self.stack.start_webhooks()
            self.note(f"start_{name}")

    def end_spike(self, guard_paused: bool) -> None:
        if "on" in self.spike and "off" not in self.spike:
            if guard_paused or time.time() - self.spike["on"] > SPIKE_MAX_S:
                assert self.stack.carrier is not None
                self.stack.carrier.configure(delivery_errors={"30007": BASE_30007})
                self.spike["off"] = time.time()
                self.note("spike_30007_off", guard_paused=guard_paused)

    def operator(self) -> None:
        """Answer every guard pause 3 s after seeing it: ``run resume --acknowledge``."""
        from dispatcher.models import Run

        ids = [r for rs in self.runs.values() for r in rs]
        with self.db.session() as s:
            paused = {
                r.id: r.pause_reason or ""
                for r in (s.get(Run, i) for i in ids)
                if r is not None and r.state == "paused"
            }
        guarded = set(self.runs.get("guarded", []))
        self.end_spike(bool(guarded & set(paused)))
        for run_id, reason in paused.items():
            seen = self.paused_seen.setdefault(run_id, time.time())
            if time.time() - seen < 3.0:
                continue
            why = "soak operator: looked at the 30007 spike, carrier says it is over"
            p = subprocess.run(  # noqa: S603 - our CLI, our arguments
                [DISPATCHER, "run", "resume", str(run_id), "--acknowledge", why, "--actor", "soak"],
                env=self.stack.env,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            del self.paused_seen[run_id]
            self.acks.append({"run": run_id, "reason": reason, "rc": p.returncode})
            self.note("resume_acknowledge", run=run_id, rc=p.returncode, paused=reason[:60])

    def sample_load(self) -> None:
        if not self.load or time.time() - self.load[-1][0] >= 10:
            self.load.append((time.time(), os.getloadavg()[0]))

    def check_alive(self) -> None:
        self.stack.check_alive(*(n for n in self.stack.procs if n not in self.down))

    # ----------------------------------------------------------------------- the soak
    def run(self, minutes: float) -> None:
        self.t0 = time.time()
        end = self.t0 + self.seconds
        plan = sorted(
            [(self.t0 + f * self.seconds, k) for f, k in EVENTS]
            + [
                (self.t0 + (i + 0.5) * self.seconds / KILLS, "kill_pool" if i % 2 else "kill_one")
                for i in range(KILLS - 1)
            ]
        )
        others = [at for at, k in plan if not k.startswith("kill_")]
        self.launch_long_runs(minutes)
        next_launch = next_stop = self.t0
        while time.time() < end:
            now = time.time()
            if now >= next_launch:
                self.launch_due()
                next_launch = now + self.every
            while plan and plan[0][0] <= now:
                at, kind = plan.pop(0)
                if kind in ("kill_one", "kill_pool"):
                    if all(abs(at - o) > 8 for o in others):  # recoveries told apart
                        self.kill_worker(kind == "kill_pool")
                elif kind == "spike_30007" and "webhooks" in self.down:
                    bisect.insort(plan, (now + 1.0, kind))  # once the webhooks are back
                else:
                    self.fault(kind)
            if now >= next_stop and "webhooks" not in self.down:
                self.post_stop()
                next_stop = now + 4.0
            self.restart_due()
            self.operator()
            self.sample_load()
            assert self.stack.carrier is not None
            if not self.rss0 and self.stack.carrier.count() >= 50:
                self.rss0 = {n: rss_mb(p.pid) for n, p in self.stack.procs.items()}
            self.check_alive()
            time.sleep(0.5)
        self.note("launching_ended")

    def drained(self) -> bool:
        """Every run completed with every row final, except rows deferred by quiet hours."""
        self.restart_due()
        self.operator()
        self.sample_load()
        for name, rs in self.runs.items():
            for r in rs:
                state, c = run_counts(self.db, r)
                live = sum(c.get(k, 0) for k in ("sending", "unknown", "sent"))
                if name == "unknown-zone":
                    if live or self._due_queued(r):
                        return False
                elif state != "completed" or live or c.get("queued", 0):
                    return False
        return True

    def _due_queued(self, run_id: int) -> int:
        from sqlalchemy import func, select

        from dispatcher.outbox import T

        with self.db.session() as s:
            return int(
                s.connection()
                .execute(
                    select(func.count()).where(
                        T.c.run_id == run_id,
                        T.c.state == "queued",
                        T.c.due_at <= datetime.now(UTC),
                    )
                )
                .scalar_one()
            )


# --------------------------------------------------------------------------- the verdict
def recovery(times: list[float], at: float, limit: int, span: float) -> dict[str, Any]:
    """The ``slow`` campaign after an event: its first send, and the first window of
    ``span`` (period + grace) starting at or after the event that holds ``limit`` sends."""
    after = [t for t in times if t >= at]
    first = after[0] - at if after else None
    full = None
    for i, t in enumerate(after):
        if t - at > 180:
            break
        if bisect.bisect_left(after, t + span, lo=i) - i >= limit:
            full = t - at
            break
    return {
        "first_send_s": None if first is None else round(first, 1),
        "full_rate_s": None if full is None else round(full, 1),
    }


def deferred_ok(row: dict[str, Any], now: datetime) -> bool:
    """A queued row legitimately waiting: deferred for quiet hours that are in force now."""
    from dispatcher.compliance.quiet_hours import is_quiet_hours, policy_from_name

    if row["state"] != "queued" or row["defer_reason"] not in (
        "quiet_hours",
        "quiet_hours_unknown_zone",
    ):
        return False
    policy = policy_from_name(CAMPAIGNS["unknown-zone"].quiet_hours)
    return ts(row["due_at"]) > now.timestamp() and is_quiet_hours(row["to_phone"], now, policy)


def verdict(
    soak: Any, records: list[dict[str, Any]], rows: list[dict[str, Any]], extra: dict[str, Any]
) -> dict[str, Any]:
    """The figures, from data only (``extra``: carrier stats, the unknown-zone run's progress,
    the guard's events, read while the stack was up), so a saved soak can be replayed."""
    from dispatcher.compliance.quiet_hours import is_quiet_hours, policy_from_name
    from dispatcher.settings import Settings
    from dispatcher.throttle.policy import mps_bucket_shape

    now = datetime.fromtimestamp(extra["now"], UTC)
    grace = Settings().throttle_grace_s
    per_to = Counter(m["to"] for m in records)
    recv = {m["to"]: float(m["received_at"]) for m in records}
    consented = {p for ss in soak.seeded.values() for s in ss for p in s.consented}
    forbidden = {p for ss in soak.seeded.values() for s in ss for p in s.opted_out + s.no_consent}
    waiting = [r for r in rows if deferred_ok(r, now)]
    deferred = {r["to_phone"] for r in waiting}
    not_final = [r for r in rows if r["state"] not in FINAL and r["to_phone"] not in deferred]
    # a STOP whose answer never came (a 10 s timeout on a loaded box) may still have been
    # recorded: its recipient's row suppressed as opted out is not lost
    stopped_late = {
        r["to_phone"]
        for r in rows
        if r["to_phone"] in soak.stops_tried - set(soak.stops)
        and r["state"] == "suppressed"
        and r["suppress_reason"] == "opted_out"
    }
    lost = sorted(consented - set(soak.stops) - stopped_late - deferred - set(per_to))
    after_stop = [
        (p, round(recv[p] - t, 2)) for p, t in soak.stops.items() if p in recv and recv[p] > t
    ]
    rep = check_delivery(
        records,
        rows,
        expected=(consented - set(soak.stops) - stopped_late - deferred)
        | (set(per_to) & consented),
        forbidden=forbidden,
        require_final=False,
    )
    flushes = [e["t"] for e in soak.events if e["kind"] == "flushall"]

    def since_flush(t: float) -> float | None:
        before = [f for f in flushes if f <= t]
        return round(t - before[-1], 1) if before else None

    windows: dict[str, Any] = {}
    for name, ss in soak.seeded.items():
        phones = {p for s in ss for p in s.everyone}
        times = [float(m["received_at"]) for m in records if m["to"] in phones]
        c = CAMPAIGNS[name]
        over = windows_over(times, c.period, c.limit)
        windows[f"campaign {name}"] = {"limit": f"{c.limit}/{c.period}s", "over": over}
    mps_limit, mps_period = mps_bucket_shape(MPS)
    over = windows_over(
        [float(m["received_at"]) for m in records],
        mps_period,
        mps_limit,
        [int(m.get("num_segments") or 1) for m in records],
    )
    windows["sender MPS"] = {"limit": f"{mps_limit}/{mps_period:g}s", "over": over}
    over_total = 0
    for w in windows.values():
        w["over"] = [
            {
                "at_s": round(o["start"] - soak.t0, 1),
                "worst": o["worst"],
                "after_flush_s": since_flush(o["start"]),
            }
            for o in w["over"]
        ]
        over_total += len(w["over"])

    slow = CAMPAIGNS["slow"]
    slow_phones = {p for s in soak.seeded["slow"] for p in s.everyone}
    slow_times = sorted(float(m["received_at"]) for m in records if m["to"] in slow_phones)
    kinds = ("flushall", "kill_pool", "kill_worker_process", "kill_scheduler", "kill_webhooks")
    recov = [
        {
            "event": e["kind"],
            "at_s": round(e["t"] - soak.t0, 1),
            "slow_backlog": e.get("slow_backlog", 0),
        }
        | recovery(slow_times, e["t"], slow.limit, slow.period + grace)
        for e in soak.events
        if e["kind"] in kinds + ("pg_terminate",)
    ]
    starts = sorted(r["at_s"] for r in recov)
    for r in recov:  # a full window needs a backlog: without one, no recovery to measure
        if r["slow_backlog"] < slow.limit:
            r["full_rate_s"] = None
        nxt = [t for t in starts if t > r["at_s"]]
        r["next_fault_s"] = round(nxt[0] - r["at_s"], 1) if nxt else None
        r["interrupted"] = r["next_fault_s"] is not None and (
            r["full_rate_s"] is None or r["full_rate_s"] > r["next_fault_s"]
        )

    # send -> final status, from the carrier's receipt; a row whose worker died after the
    # carrier accepted it is marked sent only when resolved (after the sending lease): counted
    # apart (its sent_at is the resolution, well after the carrier's receipt)
    wh = [e["t"] for e in soak.events if e["kind"] in ("kill_webhooks", "start_webhooks")]
    finals: dict[str, list[float]] = {"handed": [], "worker_lost": [], "webhooks_down": []}
    for r in rows:
        if r["state"] not in ("delivered", "undelivered", "failed") or r["status_at"] is None:
            continue
        got = recv.get(r["to_phone"])
        if got is None:
            continue
        took = ts(r["status_at"]) - got
        lost_worker = r["sent_at"] is not None and ts(r["sent_at"]) - got > 10
        finals["worker_lost" if lost_worker else "handed"].append(took)
        if len(wh) == 2 and wh[0] <= got < wh[1] and not lost_worker:
            finals["webhooks_down"].append(took)
    to_final = finals["handed"] + finals["worker_lost"]

    unk_policy = policy_from_name(CAMPAIGNS["unknown-zone"].quiet_hours)
    unk_phones = {
        p for s in soak.seeded["unknown-zone"] for p in s.consented if p[2:5] == UNKNOWN_NPA
    }
    unk_quiet = [
        p
        for p in unk_phones
        if p in recv and is_quiet_hours(p, datetime.fromtimestamp(recv[p], UTC), unk_policy)
    ]
    unk_progress = extra["unknown_zone_run"]
    guard = extra["guard"]

    fast_runs = set(soak.runs["fast"])
    by_sid = {m["sid"]: m for m in records}
    lat = [
        float(by_sid[r["provider_sid"]]["received_at"]) - ts(r["enqueued_at"])
        for r in rows
        if r["run_id"] in fast_runs
        and r.get("provider_sid") in by_sid
        and r.get("enqueued_at") is not None
        and r["attempts"] <= 1
    ]
    recv_all = [float(m["received_at"]) for m in records]
    span = (max(recv_all) - min(recv_all)) if recv_all else 0.0
    loads = [x for _, x in soak.load]
    return {
        "ok": not (rep.duplicates or lost or not_final or after_stop or over_total or unk_quiet),
        "duplicates": rep.duplicates,
        "lost": len(lost),
        "lost_examples": lost[:5],
        "not_final": len(not_final),
        "not_final_states": dict(Counter(r["state"] for r in not_final)),
        "deferred_legitimately": len(waiting),
        "unexpected": rep.unexpected,
        "mismatched": rep.mismatched,
        "stops_answered": len(soak.stops),
        "stops_unanswered": soak.stop_failures,
        "stops_unanswered_but_recorded": len(stopped_late),
        "stops_that_got_a_message_before": sum(1 for p in soak.stops if p in recv),
        "texted_after_stop": len(after_stop),
        "texted_after_stop_examples": after_stop[:5],
        "windows_over": over_total,
        "windows": windows,
        "recovery": recov,
        "send_to_final_s": {
            "n": len(to_final),
            "p50": round(pct(to_final, 0.5) or 0, 1),
            "p99": round(pct(to_final, 0.99) or 0, 1),
            "max": round(max(to_final, default=0), 1),
        }
        | {
            f"{k}_{q}": v
            for k, xs in finals.items()
            for q, v in (("n", len(xs)), ("max", round(max(xs, default=0), 1)))
        },
        "unknown_zone": {
            "numbers": len(unk_phones),
            "sent": sum(1 for p in unk_phones if p in recv),
            "sent_inside_quiet_hours": len(unk_quiet),
            "deferred": sum(1 for p in unk_phones if p in deferred),
            "run_state": unk_progress["state"],
            "run_substate": unk_progress["substate"],
        },
        "guard": guard,
        "operator_acknowledgements": soak.acks,
        "carrier": {
            "messages": len(records),
            "sends_per_s": round(len(records) / span, 1) if span else 0,
            "stats": extra["carrier_stats"],
        },
        "fast_latency_ms": {
            "n": len(lat),
            "p50": round((pct(lat, 0.5) or 0) * 1000),
            "p99": round((pct(lat, 0.99) or 0) * 1000),
            "mean": round(statistics.fmean(lat) * 1000) if lat else None,
        },
        "runs": {k: len(v) for k, v in soak.runs.items()},
        "faults_done": dict(Counter(e["kind"] for e in soak.events)),
        "events": [
            {"at_s": round(e["t"] - soak.t0, 1)} | {k: v for k, v in e.items() if k != "t"}
            for e in soak.events
        ],
        "loadavg_1m": {
            "min": min(loads, default=None),
            "mean": round(statistics.fmean(loads), 2) if loads else None,
            "max": max(loads, default=None),
        },
    }


def collect(soak: Soak, carrier: Any) -> dict[str, Any]:
    """What the verdict needs from the live stack besides the carrier's log and the outbox."""
    from dispatcher import run_report

    now = datetime.now(UTC)
    with soak.db.session() as s:
        unk = run_report.progress(s, soak.runs["unknown-zone"][0], now, schedule=False)
        guard = guard_events(s, [r for rs in soak.runs.values() for r in rs])
    return {
        "now": now.timestamp(),
        "carrier_stats": carrier.stats(),
        "unknown_zone_run": {"state": unk["state"], "substate": unk["substate"]},
        "guard": guard,
    }


RAW_FIELDS = ("t0", "runs", "events", "stops", "acks", "load", "rss0")


def save_raw(path: Path, soak: Soak, records: Any, rows: Any, extra: Any) -> None:
    """Everything the verdict reads, for ``--replay`` (the database is dropped at the end)."""
    doc = {k: getattr(soak, k) for k in RAW_FIELDS}
    doc["stops_tried"] = sorted(soak.stops_tried)
    doc["stop_failures"] = soak.stop_failures
    doc["seeded"] = {k: [vars(x) for x in v] for k, v in soak.seeded.items()}
    doc |= {"records": records, "rows": rows, "extra": extra}
    path.write_text(json.dumps(doc, default=str))
    print(f"raw data: {path}", flush=True)


def replay(path: Path) -> tuple[Any, Any, Any, Any]:
    from types import SimpleNamespace

    doc = json.loads(path.read_text())
    soak = SimpleNamespace(**{k: doc[k] for k in RAW_FIELDS})
    soak.runs = {k: list(v) for k, v in doc["runs"].items()}
    soak.stops_tried = set(doc["stops_tried"])
    soak.stop_failures = doc["stop_failures"]
    soak.seeded = {k: [Seeded(**x) for x in v] for k, v in doc["seeded"].items()}
    return soak, doc["records"], doc["rows"], doc["extra"]


def guard_events(session: Any, run_ids: list[int]) -> list[dict[str, Any]]:
    from sqlmodel import col, select

    from dispatcher.models import GuardEvent

    evs = session.exec(
        select(GuardEvent).where(col(GuardEvent.run_id).in_(run_ids)).order_by(col(GuardEvent.id))
    ).all()
    return [
        {"run": e.run_id, "kind": e.kind, "actor": e.actor, "at": ts(e.at), "reason": e.reason}
        for e in evs
    ]


def table(v: dict[str, Any], t0: float) -> str:
    f = v["send_to_final_s"]
    rec = v["recovery"]

    def worst(key: str) -> str:  # over the recoveries no other fault interrupted
        xs = [r[key] for r in rec if r[key] is not None and not r["interrupted"]]
        return f"{max(xs):.1f} s" if xs else "n/a"

    lines = [
        ("verdict", "OK" if v["ok"] else "FAILED"),
        ("duplicates (carrier log)", v["duplicates"]),
        (
            "lost",
            f"{v['lost']} (rows not final {v['not_final']}, "
            f"deferred for quiet hours {v['deferred_legitimately']})",
        ),
        (
            "texted after STOP answered",
            f"{v['texted_after_stop']} "
            f"({v['stops_answered']} STOPs answered, {v['stops_that_got_a_message_before']} "
            f"had their message before)",
        ),
        ("windows over a limit", v["windows_over"]),
        ("unknown-zone sent in quiet hours", v["unknown_zone"]["sent_inside_quiet_hours"]),
        (
            "time to full rate, worst",
            f"{worst('full_rate_s')} (first send {worst('first_send_s')}; "
            f"{sum(1 for r in rec if r['interrupted'])} of {len(rec)} interrupted by the next "
            "fault)",
        ),
        ("send -> final status", f"p50 {f['p50']} s, p99 {f['p99']} s, max {f['max']} s"),
        ("  handed over by a live worker", f"{f['handed_n']} rows, max {f['handed_max']} s"),
        ("  sent, webhooks down", f"{f['webhooks_down_n']}, max {f['webhooks_down_max']} s"),
        ("  worker died, carrier had it", f"{f['worker_lost_n']}, max {f['worker_lost_max']} s"),
        (
            "guard pauses / acknowledged",
            f"{sum(1 for g in v['guard'] if g['kind'] == 'pause')} / "
            f"{sum(1 for g in v['guard'] if g['kind'] == 'acknowledge')}",
        ),
        ("carrier", f"{v['carrier']['messages']} messages, {v['carrier']['sends_per_s']}/s"),
        ("faults done", ", ".join(f"{k} {n}" for k, n in v["faults_done"].items())),
        ("load average (1 min)", f"{v['loadavg_1m']}"),
    ]
    out = [f"{k:<34} {val}" for k, val in lines]
    out.append("recovery of the slow campaign (10/1 s) after each event:")
    out += [
        f"  {r['at_s']:7.1f} s  {r['event']:<20} backlog {r['slow_backlog']:4}, first send "
        f"{r['first_send_s']} s, full rate {r['full_rate_s']} s"
        + (f" (next fault after {r['next_fault_s']} s)" if r["interrupted"] else "")
        for r in rec
    ]
    for name, w in v["windows"].items():
        for o in w["over"]:
            out.append(
                f"  OVER {name} ({w['limit']}): {o['worst']} at {o['at_s']} s, "
                f"{o['after_flush_s']} s after a FLUSHALL"
            )
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--every", type=float, default=15.0, help="seconds between launches")
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--drain", type=float, default=900.0, help="max seconds to drain")
    ap.add_argument("--seed", type=int, default=21)
    ap.add_argument("--json", type=Path, default=None, help="also write the verdict here")
    ap.add_argument("--replay", type=Path, default=None, help="the verdict of a saved raw.json")
    args = ap.parse_args()
    if args.replay:
        soak, records, rows, extra = replay(args.replay)
        v = verdict(soak, records, rows, extra)
        print(json.dumps(v, indent=1, default=str) + "\n\n" + table(v, soak.t0))
        return 0 if v["ok"] else 1

    from tests.servers import PG_DSN, redis_or_own, throwaway_database

    work = Path(tempfile.mkdtemp(prefix="soak-"))
    with (
        throwaway_database(PG_DSN) as pg,
        redis_or_own(None) as redis_url,
        deployment(redis_url, pg, work / "logs") as (stack, db),
    ):
        print(f"soak: {args.minutes:g} min, shipped defaults, logs in {work}/logs", flush=True)
        stack.start_sandbox(*FAULTS)
        stack.start_webhooks()
        stack.start_workers(processes=args.processes, threads=args.threads)
        stack.start_scheduler_defaults()
        soak = Soak(
            stack,
            db,
            redis_url,
            work,
            args.minutes * 60,
            args.every,
            args.processes,
            args.threads,
            random.Random(args.seed),
        )
        soak.run(args.minutes)
        t_launch_end = time.time()
        wait_for(soak.drained, args.drain, "every run to drain", every=2.0, check=soak.check_alive)
        soak.note("drained", after_s=round(time.time() - t_launch_end, 1))
        rss1 = {n: rss_mb(p.pid) for n, p in stack.procs.items()}
        assert stack.carrier is not None
        records = stack.carrier.records()
        rows = outbox_rows(db, [r for rs in soak.runs.values() for r in rs])
        extra = collect(soak, stack.carrier)
        save_raw(work / "raw.json", soak, records, rows, extra)
        v = verdict(soak, records, rows, extra)
    v["minutes"] = args.minutes
    v["drain_s"] = next(e["after_s"] for e in v["events"] if e["kind"] == "drained")
    v["rss_mb"] = {n: [soak.rss0.get(n), rss1[n]] for n in rss1}
    v["commit"] = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],  # noqa: S607
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    v["date"] = datetime.now(UTC).isoformat(timespec="seconds")
    print(json.dumps(v, indent=1, default=str))
    if args.json:
        args.json.write_text(json.dumps(v, indent=1, default=str))
    print("\n" + table(v, soak.t0))
    return 0 if v["ok"] else 1


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
