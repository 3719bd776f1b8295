"""A distributed stack on loopback, as real processes, for the integration and fault tests (and
bench/soak.py): the sandbox carrier (server mode), the webhook server, ``python -m dramatiq
workers.actors`` worker pools and ``dispatcher scheduler`` — on a Redis DB of the session's
own redis-server (or one the test starts itself) and a throw-away PostgreSQL database
(tests/servers.py).

Every process is a ``tests.procs.Proc``: in its own process group, stopped by signalling the
group (so the processes Dramatiq forks die with their parent), and killed at the end of the
session whatever happened.  Every wait has a deadline (``wait_for``) and checks that the
stack's processes are still alive; nothing sleeps to "let things settle".

The checks (``check_*``) work on what the *carrier* recorded (``GET /_sandbox/messages``) and on
the outbox: every consented recipient exactly once, nobody else, STOP language on first
messages, every row final and matching the carrier, and every sliding window of the carrier's
receive times within the campaign window and the sender MPS.
"""

from __future__ import annotations

import bisect
import csv
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import httpx

from dispatcher.halts import NoHaltKeys
from dispatcher.settings import SANDBOX_ACCOUNT_SID, SANDBOX_AUTH_TOKEN
from tests.procs import (  # noqa: F401 - RedisServer: imported from here by tests and bench
    Proc,
    RedisServer,
    free_port,
    wait_for,
)

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
DISPATCHER = str(Path(sys.executable).parent / "dispatcher")
SENDER = "+15005550006"
BRAND = "Acme Corporation"
TEMPLATE = "Hi [first_name], your maintenance contract [contract] expires on [date]."
STOP_WORDS = ("STOP",)


def http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1.0).status_code < 500
    except httpx.HTTPError:
        return False


# ------------------------------------------------------------------------------------ carrier
class Carrier:
    """The sandbox carrier's admin API."""

    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self._http = httpx.Client(base_url=self.url + "/_sandbox", timeout=60)

    def close(self) -> None:
        self._http.close()

    def count(self) -> int:
        return int(self._http.get("/health").json()["messages"])

    def records(self) -> list[dict[str, Any]]:
        return list(self._http.get("/messages").json()["messages"])

    def stats(self) -> dict[str, Any]:
        return dict(self._http.get("/messages").json()["stats"])

    def faults(self, **patch: Any) -> dict[str, Any]:
        r = self._http.post("/faults", json=patch)
        r.raise_for_status()
        return dict(r.json())

    def configure(self, **patch: Any) -> dict[str, Any]:
        r = self._http.post("/config", json=patch)
        r.raise_for_status()
        return dict(r.json())

    def reset(self) -> None:
        self._http.post("/reset").raise_for_status()


# ------------------------------------------------------------------------------------ the stack
@dataclass
class Stack:
    """Processes of one distributed deployment.  ``close()`` kills them all (process groups)."""

    redis_url: str
    database_url: str
    log_dir: Path
    sandbox_port: int = field(default_factory=free_port)
    webhook_port: int = field(default_factory=free_port)
    extra_env: dict[str, str] = field(default_factory=dict)
    procs: dict[str, Proc] = field(default_factory=dict)
    carrier: Carrier | None = None

    @property
    def env(self) -> dict[str, str]:
        base = {
            k: v
            for k, v in os.environ.items()
            if not (k.startswith("DISPATCHER_") and not k.startswith("DISPATCHER_TEST_"))
        }
        return {
            **base,
            "PYTHONPATH": str(ROOT),
            "DISPATCHER_REDIS_URL": self.redis_url,
            "DISPATCHER_DATABASE_URL": self.database_url,
            "TWILIO_ACCOUNT_SID": SANDBOX_ACCOUNT_SID,
            "TWILIO_AUTH_TOKEN": SANDBOX_AUTH_TOKEN,
            "DISPATCHER_TWILIO_API_BASE_URL": f"http://127.0.0.1:{self.sandbox_port}",
            "DISPATCHER_PUBLIC_BASE_URL": f"http://127.0.0.1:{self.webhook_port}",
            "DISPATCHER_LOG_LEVEL": "WARNING",
            # Dramatiq's idle poll (default 1 s) bounds how late a delayed queue message (a
            # booked throttle slot) wakes up; it must stay well under the slot's 1 s grace
            "dramatiq_worker_timeout": "100",
            **self.extra_env,
        }

    @property
    def webhook_url(self) -> str:
        return f"http://127.0.0.1:{self.webhook_port}"

    def start(self, name: str, argv: Sequence[str], env: dict[str, str] | None = None) -> Proc:
        old = self.procs.get(name)
        if old is not None and old.alive():
            raise RuntimeError(f"{name} is already running")
        p = Proc(name, argv, {**self.env, **(env or {})}, self.log_dir)
        self.procs[name] = p
        return p

    def check_alive(self, *names: str) -> None:
        for name in names or tuple(self.procs):
            p = self.procs.get(name)
            if p is not None and not p.alive():
                raise RuntimeError(f"{name} exited ({p.popen.returncode}):\n{p.tail()}")

    def close(self) -> None:
        for p in reversed(list(self.procs.values())):
            p.stop()
        if self.carrier is not None:
            self.carrier.close()

    # ---------------------------------------------------------------------- pieces
    def start_sandbox(self, *extra: str, timeout: float = 30) -> Carrier:
        p = self.start(
            "sandbox",
            [
                DISPATCHER,
                "sandbox",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.sandbox_port),
                *extra,
            ],
        )
        self._wait_http(p, f"http://127.0.0.1:{self.sandbox_port}/_sandbox/health", timeout)
        self.carrier = Carrier(self.sandbox_port)
        return self.carrier

    def start_webhooks(self, timeout: float = 30) -> Proc:
        p = self.start(
            "webhooks",
            [DISPATCHER, "serve", "--host", "127.0.0.1", "--port", str(self.webhook_port)],
        )
        self._wait_http(p, f"{self.webhook_url}/healthz", timeout)
        return p

    def start_workers(
        self,
        name: str = "workers",
        processes: int = 2,
        threads: int = 4,
        env: dict[str, str] | None = None,
    ) -> Proc:
        """``python -m dramatiq workers.actors``.  Ready when its worker processes exist (the
        queue then drains; the run's completion is what tests wait on)."""
        p = self.start(
            name,
            [
                PYTHON,
                "-m",
                "dramatiq",
                "workers.actors",
                "--processes",
                str(processes),
                "--threads",
                str(threads),
            ],
            env,
        )
        wait_for(
            lambda: len(p.children()) >= processes,
            30,
            f"{name} worker processes",
            check=lambda: self.check_alive(name),
        )
        return p

    def start_scheduler(
        self,
        name: str = "scheduler",
        *,
        tick: float = 0.5,
        leader_ttl: float = 5.0,
        reconcile: float = 2.0,
        lost_after: float = 20.0,
        sending_lease: float = 15.0,
        status_after: float = 5.0,
    ) -> Proc:
        return self.start(
            name,
            [
                DISPATCHER,
                "scheduler",
                "--tick",
                str(tick),
                "--leader-ttl",
                str(leader_ttl),
                "--reconcile",
                str(reconcile),
                "--lost-after",
                str(lost_after),
                "--sending-lease",
                str(sending_lease),
                "--status-after",
                str(status_after),
            ],
        )

    def start_scheduler_defaults(self, name: str = "scheduler") -> Proc:
        """``dispatcher scheduler`` with no option: the shipped defaults (tick, leader TTL,
        reconcile, lost-after, sending lease, status refresh), as a deployment that sets none."""
        return self.start(name, [DISPATCHER, "scheduler"])

    def _wait_http(self, p: Proc, url: str, timeout: float) -> None:
        def up() -> bool:
            if not p.alive():
                raise RuntimeError(f"{p.name} exited ({p.popen.returncode}):\n{p.tail()}")
            return http_ok(url)

        wait_for(up, timeout, f"{p.name} at {url}")

    def up(
        self, *sandbox_args: str, processes: int = 2, threads: int = 4, **scheduler: Any
    ) -> Stack:
        """The whole deployment: sandbox, webhooks, workers, scheduler."""
        self.start_sandbox(*sandbox_args)
        self.start_webhooks()
        self.start_workers(processes=processes, threads=threads)
        self.start_scheduler(**scheduler)
        return self


def flush_redis(url: str) -> None:
    import redis

    r = redis.Redis.from_url(url)
    try:
        r.flushdb()
    finally:
        r.close()


def open_db(url: str) -> Any:
    from dispatcher.store import Database

    return Database(url)


# ------------------------------------------------------------------------------------ seeding
def phone(i: int, npa: str = "646") -> str:
    return f"+1{npa}{2_000_000 + i:07d}"


@dataclass
class Seeded:
    campaign_sid: str
    campaign_id: int
    brand_id: int
    brand: str
    window_limit: int
    window_seconds: float
    mps: float
    consented: list[str]
    opted_out: list[str]
    no_consent: list[str]

    @property
    def everyone(self) -> list[str]:
        return self.consented + self.opted_out + self.no_consent


def seed(
    db: Any,
    workdir: Path,
    *,
    consented: int,
    opted_out: int = 0,
    no_consent: int = 0,
    window_limit: int = 200,
    window_seconds: int = 1,
    mps: float = 600.0,
    brand: str = BRAND,
    campaign_sid: str | None = None,
    npa: str = "646",
    offset: int = 0,
) -> Seeded:
    """A brand, the seed-004 campaign (VERIFIED, our sender, quiet hours off so the result
    does not depend on the hour the test runs) and contacts imported the way an operator does:
    a CSV with consent evidence (``contacts.import_csv``), later STOPs as ledger revocations,
    and a CSV of contacts without consent."""
    from dispatcher import contacts, ledger, registry

    doc = json.loads(resources.files("dispatcher.data").joinpath("usa2p_seed004.json").read_text())
    doc["campaign_status"] = "VERIFIED"
    doc["messaging_service_sid"] = None
    if campaign_sid:
        doc["sid"] = campaign_sid
    policy = {
        "sender": SENDER,
        "window_limit": window_limit,
        "window_seconds": window_seconds,
        "quiet_hours_policy": "none",
        "campaign_status": "VERIFIED",
        "rate_limits": {"att": {"mps": mps, "msg_class": "A"}, "tmobile": {"brand_tier": "TOP"}},
    }
    n_all = consented + opted_out + no_consent
    phones = [phone(offset + i, npa) for i in range(n_all)]
    ok = phones[: consented + opted_out]
    stop = phones[consented : consented + opted_out]
    none = phones[consented + opted_out :]
    workdir.mkdir(parents=True, exist_ok=True)
    f_ok = workdir / f"contacts_{npa}_{offset}.csv"
    f_none = workdir / f"noconsent_{npa}_{offset}.csv"
    header = ["phone", "name", "contract", "date"]
    with f_ok.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow([*header, "consent_source", "consent_evidence", "consented_at"])
        for i, p in enumerate(ok):
            w.writerow(
                [
                    p,
                    f"Customer{i} Test",
                    f"MC-{10000 + i}",
                    "2026-03-01",
                    "web_form",
                    "Checked 'Text me service reminders' at example.com/sms",
                    "2026-01-15T10:00:00Z",
                ]
            )
    with f_none.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        for i, p in enumerate(none):
            w.writerow([p, f"Nobody{i} Test", f"MC-{90000 + i}", "2026-03-01"])
    with db.session() as s:
        try:
            b = registry.get_brand(s, brand)
        except Exception:  # noqa: BLE001 - first campaign of this brand
            b = registry.add_brand(s, name=brand, tmobile_brand_tier="TOP")
        campaign, _ = registry.import_campaign(s, doc, brand=b, policy=policy)
        contacts.import_csv(s, f_ok, brand=b, actor="test")
        if none:
            contacts.import_csv(s, f_none, brand=None, actor="test")
        for p in stop:
            c = contacts.get_contact(s, p)
            ledger.append(
                s,
                contact_id=c.id,
                brand_id=b.id,
                action="revoke",
                source="keyword",
                actor="test",
                evidence_text="STOP",
                halts=NoHaltKeys(),  # seeding: no run exists yet, nothing to halt
            )
        out = Seeded(
            campaign.sid,
            campaign.id,
            b.id,
            b.name,
            window_limit,
            float(window_seconds),
            mps,
            ok[:consented],
            stop,
            none,
        )
    return out


def launch(
    db: Any,
    seeded: Seeded,
    *,
    template: str = TEMPLATE,
    audience: dict[str, Any] | None = None,
    send_at: datetime | None = None,
) -> int:
    from dispatcher import runs

    recipients = None
    if audience is None:  # the seeded people as a recipient list (staged at launch)
        audience = {"kind": "list"}
        recipients = [{"phone": p} for p in seeded.everyone]
    req = runs.LaunchRequest(
        campaign=seeded.campaign_sid,
        template=template,
        audience=audience,
        recipients=recipients,
        send_at=send_at,
        actor="test",
    )
    with db.session() as s:
        run, _ = runs.launch(s, req, now=datetime.now(UTC))
        return int(run.id)


# ------------------------------------------------------------------------------------ runs
PENDING = ("queued", "sending", "unknown", "sent")


def run_counts(db: Any, run_id: int) -> tuple[str, dict[str, int]]:
    from dispatcher import run_report, runs

    with db.session() as s:
        return runs.get_run(s, run_id).state, run_report.counts(s, run_id)


def wait_run_done(
    db: Any,
    run_id: int,
    timeout: float,
    stack: Stack | None = None,
    *,
    final: bool = True,
    check_names: Sequence[str] = (),
    stall: float | None = None,
) -> dict[str, int]:
    """Until the run is completed and (``final``) every row is in a final state (``sent`` rows
    waited for their delivery callback).  ``stall``: also fail as soon as no row has changed
    state for that many seconds (a run that keeps moving on a slow, shared machine may then
    have a generous ``timeout``)."""
    seen: list[Any] = [None, time.monotonic()]  # last (state, counts), when they last changed

    def done() -> dict[str, int] | None:
        state, c = run_counts(db, run_id)
        now = time.monotonic()
        if (state, c) != seen[0]:
            seen[:] = [(state, c), now]
        elif stall is not None and now - seen[1] > stall:
            raise TimeoutError(f"run {run_id} made no progress for {stall:g} s")
        if state != "completed":
            return None
        if final and any(c.get(k, 0) for k in PENDING):
            return None
        return c

    def check() -> None:
        if stack is not None:
            stack.check_alive(*check_names)

    try:
        return wait_for(done, timeout, f"run {run_id} to finish", every=0.2, check=check)
    except TimeoutError as e:
        state, c = run_counts(db, run_id)
        raise TimeoutError(f"{e}: run {state}, rows {c}") from None


def outbox_rows(db: Any, run_ids: Iterable[int] | None = None) -> list[dict[str, Any]]:
    from sqlalchemy import select

    from dispatcher.outbox import T

    q = select(T)
    if run_ids is not None:
        q = q.where(T.c.run_id.in_(list(run_ids)))
    with db.session() as s:
        return [dict(r._mapping) for r in s.connection().execute(q)]


# ------------------------------------------------------------------------------------ checks
@dataclass
class Report:
    received: int = 0
    duplicates: int = 0  # extra messages to a recipient beyond the first
    lost: int = 0  # consented recipients with no message
    unexpected: int = 0  # messages to someone who must get none
    not_final: int = 0
    mismatched: int = 0
    problems: list[str] = field(default_factory=list)

    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        return (
            f"received={self.received} duplicates={self.duplicates} lost={self.lost} "
            f"unexpected={self.unexpected} not_final={self.not_final} "
            f"mismatched={self.mismatched}\n" + "\n".join(self.problems[:20])
        )


FINAL = ("delivered", "undelivered", "failed", "suppressed", "cancelled")


def check_delivery(
    records: list[dict[str, Any]],
    rows: list[dict[str, Any]],
    *,
    expected: Iterable[str],
    forbidden: Iterable[str] = (),
    brand: str | None = BRAND,
    require_final: bool = True,
) -> Report:
    """Exactly once to every ``expected`` number, nothing to anyone else, first messages with
    the brand and STOP language, every outbox row final and matching the carrier."""
    rep = Report(received=len(records))
    expected = set(expected)
    forbidden = set(forbidden)
    per_to = Counter(m["to"] for m in records)
    rep.duplicates = sum(n - 1 for n in per_to.values() if n > 1)
    lost = sorted(expected - set(per_to))
    rep.lost = len(lost)
    extra = sorted(set(per_to) - expected)
    rep.unexpected = sum(per_to[p] for p in extra)
    if rep.duplicates:
        rep.problems.append(
            f"{rep.duplicates} duplicates, e.g. {[p for p, n in per_to.items() if n > 1][:3]}"
        )
    if lost:
        rep.problems.append(f"{len(lost)} consented recipients never received: {lost[:5]}")
    if extra:
        bad = [p for p in extra if p in forbidden]
        rep.problems.append(
            f"{rep.unexpected} messages to {len(extra)} numbers that must get "
            f"none ({len(bad)} opted out/no consent): {extra[:5]}"
        )
    for m in records:
        body = m["body"] or ""
        if brand and not body.startswith(brand):
            rep.problems.append(f"message {m['sid']} does not name the brand: {body[:60]!r}")
            break
        if "STOP" not in body.upper():
            rep.problems.append(f"first message {m['sid']} has no STOP language: {body[:80]!r}")
            break
    by_sid = {m["sid"]: m for m in records}
    matched: set[str] = set()
    for r in rows:
        if require_final and r["state"] not in FINAL:
            rep.not_final += 1
        sid = r.get("provider_sid")
        if sid:
            m = by_sid.get(sid)
            if m is None or m["to"] != r["to_phone"] or (r["body"] and m["body"] != r["body"]):
                rep.mismatched += 1
                continue
            matched.add(sid)
            if r["state"] in ("delivered", "undelivered", "failed") and m["status"] not in (
                r["state"],
                r.get("provider_status"),
            ):
                rep.mismatched += 1
        elif r["state"] in ("sent", "delivered", "undelivered"):
            rep.mismatched += 1
        elif r["state"] in ("suppressed", "cancelled") and r["to_phone"] in per_to:
            rep.mismatched += 1
    unmatched = [s for s in by_sid if s not in matched]
    rep.mismatched += len(unmatched)
    if rep.not_final:
        states = Counter(r["state"] for r in rows if r["state"] not in FINAL)
        rep.problems.append(f"{rep.not_final} outbox rows not final: {dict(states)}")
    if rep.mismatched:
        rep.problems.append(
            f"{rep.mismatched} outbox rows/carrier messages do not match "
            f"({len(unmatched)} carrier messages without their row)"
        )
    return rep


def worst_window(
    times: Sequence[float], period: float, costs: Sequence[int] | None = None
) -> tuple[int, float | None]:
    """The largest total cost in any half-open window ``[x, x + period)`` (and its start)."""
    order = sorted(range(len(times)), key=lambda i: times[i])
    ts = [times[i] for i in order]
    cs = [(costs[i] if costs else 1) for i in order]
    prefix = [0]
    for c in cs:
        prefix.append(prefix[-1] + c)
    best, at = 0, None
    for i, t in enumerate(ts):  # a maximal window can always start at a message
        j = bisect.bisect_left(ts, t + period, lo=i)
        if prefix[j] - prefix[i] > best:
            best, at = prefix[j] - prefix[i], t
    return best, at


@dataclass
class WindowReport:
    bucket: str
    worst: int
    limit: int
    period: float

    def ok(self, allowance: int = 0) -> bool:
        return self.worst <= self.limit + allowance

    def __str__(self) -> str:
        return f"{self.bucket}: worst {self.worst} / limit {self.limit} per {self.period:g} s"


def check_windows(
    records: list[dict[str, Any]],
    seeded: Seeded,
    *,
    since: float | None = None,
    until: float | None = None,
) -> list[WindowReport]:
    """Worst sliding window of the carrier's receive times for the campaign window (messages)
    and the sender MPS bucket (segments, metered as the throttle does)."""
    from dispatcher.throttle.policy import mps_bucket_shape

    recs = [
        m
        for m in records
        if (since is None or m["received_at"] >= since)
        and (until is None or m["received_at"] < until)
    ]
    times = [float(m["received_at"]) for m in recs]
    out = [
        WindowReport(
            "campaign",
            worst_window(times, seeded.window_seconds)[0],
            seeded.window_limit,
            seeded.window_seconds,
        )
    ]
    limit, period = mps_bucket_shape(seeded.mps)
    segs = [int(m.get("num_segments") or 1) for m in recs]
    out.append(WindowReport("sender_mps", worst_window(times, period, segs)[0], limit, period))
    return out


# ------------------------------------------------------------------------------------ fixtures
@contextmanager
def deployment(redis_url: str, database_url: str, log_dir: Path) -> Iterator[tuple[Stack, Any]]:
    """A Stack on ``redis_url`` (flushed first and last) and ``database_url`` (schema
    upgraded); every process is killed on the way out, whatever happened."""
    log_dir.mkdir(parents=True, exist_ok=True)
    flush_redis(redis_url)
    db = open_db(database_url)
    db.upgrade()
    stack = Stack(redis_url, database_url, log_dir)
    try:
        yield stack, db
    finally:
        stack.close()
        db.dispose()
        try:
            flush_redis(redis_url)
        except Exception:  # noqa: BLE001 - a Redis the test stopped itself
            pass


def finish_and_check(
    stack: Stack,
    db: Any,
    seeded: Seeded,
    run_id: int,
    *,
    timeout: float,
    check_names: Sequence[str] = (),
) -> tuple[Report, list[dict[str, Any]], list[dict[str, Any]]]:
    """Wait for the run to finish, then check the carrier's record against the seeded people."""
    wait_run_done(db, run_id, timeout, stack, check_names=check_names)
    assert stack.carrier is not None
    records = stack.carrier.records()
    rows = outbox_rows(db, [run_id])
    rep = check_delivery(
        records,
        rows,
        expected=seeded.consented,
        forbidden=seeded.opted_out + seeded.no_consent,
        brand=seeded.brand,
    )
    return rep, records, rows
