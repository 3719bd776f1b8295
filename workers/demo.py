"""The embedded demo: a real campaign run end to end — queue, throttle, gates, the sandbox
carrier and its status callbacks — in one process, on a fresh SQLite file."""

from __future__ import annotations

import csv
import json
import random
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from dispatcher import contacts, ledger, registry, run_report, runs
from dispatcher.halts import NoHaltKeys
from dispatcher.settings import Settings

ZONES = (
    "America/New_York",
    "America/Chicago",
    "America/Denver",
    "America/Los_Angeles",
    "America/Anchorage",
    "Pacific/Honolulu",
    "America/Puerto_Rico",
    "Pacific/Guam",
    "America/Sao_Paulo",
    "Europe/London",
    "Europe/Berlin",
    "Asia/Dubai",
    "Asia/Kolkata",
    "Asia/Tokyo",
    "Australia/Sydney",
    "Pacific/Auckland",
)
# area codes outside FL/OK/MD (whose 20:00 rules would narrow the window)
NPAS = ("212", "312", "415", "503", "617", "702", "206", "214", "404", "720")
MAGIC_FAIL = ("+15005550001", "+15005550002", "+15005550004", "+15005550009")
TEMPLATE = (
    "Hi [first_name], your maintenance contract [contract] expires on [date]. "
    "Renew at example.com/renew"
)


def zones_where(now: datetime, lo: int, hi: int) -> list[str]:
    return [z for z in ZONES if lo <= now.astimezone(ZoneInfo(z)).hour < hi]


def write_contacts(path: Path, now: datetime, n: int = 200, seed: int = 7) -> dict[str, int]:
    """A CSV of ``n`` contacts: most consented in daytime zones; some opted out later, some
    without consent, some asleep (quiet hours), some missing a template field, some magic
    numbers the carrier rejects.  Returns the planned composition."""
    rng = random.Random(seed)
    day = zones_where(now, 10, 18) or ["Asia/Tokyo"]
    # the zones span the globe with no gap over 3.5 h: both windows always hold one
    night = zones_where(now, 0, 7) or ["Pacific/Honolulu"]
    plan: Counter[str] = Counter()
    header = ["phone", "name", "time_zone", "contract", "date"]
    with (
        path.open("w", newline="") as fh,
        path.with_name("demo_no_consent.csv").open("w", newline="") as fh2,
    ):
        w = csv.writer(fh)
        w.writerow([*header, "consent_source", "consent_evidence", "consented_at"])
        w2 = csv.writer(fh2)  # contacts with no consent on record (gates must suppress them)
        w2.writerow(header)
        for i in range(n):
            npa = NPAS[i % len(NPAS)]
            phone = f"+1{npa}555{1000 + i:04d}"
            tz, date = rng.choice(day), (now + timedelta(days=30 + i % 60)).date().isoformat()
            consent = (
                "web_form",
                "Checked 'Text me service reminders' at example.com/sms "
                "(not a condition of purchase)",
                "2026-01-15T10:00:00Z",
            )
            kind = "ok"
            if i < len(MAGIC_FAIL):
                phone, kind = MAGIC_FAIL[i], "carrier_rejects"
            elif i % 17 == 5:
                consent, kind = ("", "", ""), "no_consent"
            elif i % 13 == 3:
                tz, kind = rng.choice(night), "quiet_hours"
            elif i % 29 == 11:
                date, kind = "", "missing_field"
            elif i % 11 == 7:
                kind = "opted_out"
            plan[kind] += 1
            row = [phone, f"Customer{i} Demo", tz, f"MC-{10000 + i}", date]
            if kind == "no_consent":
                w2.writerow(row)
            else:
                w.writerow([*row, *consent])
    return dict(plan)


def seed(db: Any, workdir: Path, now: datetime, *, realistic: bool, n: int) -> dict[str, Any]:
    doc = json.loads(resources.files("dispatcher.data").joinpath("usa2p_seed004.json").read_text())
    doc["campaign_status"] = "VERIFIED"
    policy = {"sender": "+15005550006"} | (
        {} if realistic else {"window_limit": 30, "window_seconds": 10}
    )
    f = workdir / "demo_contacts.csv"
    plan = write_contacts(f, now, n)
    with db.session() as s:
        brand = registry.add_brand(s, name="Acme Corporation", tmobile_brand_tier="TOP")
        doc["messaging_service_sid"] = None
        campaign, _ = registry.import_campaign(s, doc, brand=brand, policy=policy)
        rep = contacts.import_csv(s, f, brand=brand, actor="demo")
        contacts.import_csv(s, f.with_name("demo_no_consent.csv"), brand=None, actor="demo")
        # some customers later replied STOP: the ledger records the revocation
        for c in contacts.list_contacts(s, limit=n + 10):
            i = int(c.name.split()[0][8:]) if c.name and c.name.startswith("Customer") else -1
            if (
                i >= len(MAGIC_FAIL)
                and i % 11 == 7
                and i % 17 != 5
                and i % 13 != 3
                and i % 29 != 11
            ):
                ledger.append(
                    s,
                    contact_id=c.id,
                    brand_id=brand.id,
                    action="revoke",
                    source="keyword",
                    actor="demo",
                    evidence_text="STOP",
                    halts=NoHaltKeys(),  # seeding: no run exists yet, nothing to halt
                )
        return {
            "campaign": campaign.sid,
            "brand": brand.name,
            "import": rep.as_dict(),
            "plan": plan,
        }


def summary(db: Any, run_id: int) -> dict[str, Any]:
    with db.session() as s:
        p = run_report.progress(s, run_id, datetime.now(UTC))
    return p


def run_demo(
    *,
    realistic: bool = False,
    n: int = 200,
    workdir: Path | None = None,
    show: bool = True,
    timeout: float | None = None,
) -> dict[str, Any]:
    from workers.embedded import EmbeddedStack

    workdir = workdir or Path(".dispatcher")
    workdir.mkdir(parents=True, exist_ok=True)
    dbfile = workdir / "demo.db"
    for p in (dbfile, Path(f"{dbfile}-wal"), Path(f"{dbfile}-shm")):
        p.unlink(missing_ok=True)
    settings = Settings(database_url=f"sqlite:///{dbfile}")
    now = datetime.now(UTC)
    stack = EmbeddedStack(settings)
    with stack:
        db = stack.runtime.db
        seeded = seed(db, workdir, now, realistic=realistic, n=n)
        req = runs.LaunchRequest(
            campaign=seeded["campaign"], template=TEMPLATE, audience={"kind": "all"}, actor="demo"
        )
        with db.session() as s:
            dry = run_report.dry_run(s, req, now=now)
            s.rollback()
        with db.session() as s:
            run, _ = runs.launch(s, req, now=now)
            run_id = run.id
        if show:
            from dispatcher.cli.output import err

            err().print(
                f"[bold]Demo[/bold]: {n} contacts, campaign {seeded['campaign']} "
                f"(limit {dry['limits']}), estimated {dry['estimated_seconds']} s."
            )
            err().print(
                f"First message: [italic]{dry['first_message']}[/italic] "
                f"({dry['encoding']}, {dry['segments']} segment)"
            )
        deadline = None if timeout is None else time.monotonic() + timeout
        if show:
            from dispatcher.cli.watch import watch

            remaining = None if deadline is None else max(1.0, deadline - time.monotonic())
            watch(db, run_id, timeout=remaining, until=_only_deferred_left)
        while True:
            with db.session() as s:
                p = run_report.progress(s, run_id, datetime.now(UTC))
            settled = p["by_state"].get("sent", 0) == 0 and p["by_state"].get("sending", 0) == 0
            if (p["state"] == runs.COMPLETED or _only_deferred_left(p)) and settled:
                break
            if deadline is not None and time.monotonic() > deadline:
                break
            time.sleep(0.2)
        carrier = stack.runtime.sandbox.records() if stack.runtime.sandbox else []
    return {"run": p, "dry_run": dry, "seeded": seeded, "carrier": carrier}


WAITING_FOR_DAYTIME = (
    "quiet_hours",
    "quiet_hours_unknown_zone",
    "frequency_cap",
    "state_frequency_cap",
)


def _only_deferred_left(p: dict[str, Any]) -> bool:
    """Everything that can go now went: what is left waits for its recipients' daytime."""
    c = p["by_state"]
    waiting = sum(n for r, n in p["deferred_by_reason"].items() if r in WAITING_FOR_DAYTIME)
    return (
        waiting > 0
        and c.get("queued", 0) == waiting
        and c.get("sending", 0) == 0
        and c.get("unknown", 0) == 0
    )
