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

from dispatcher import consent, contacts, registry, run_report, runs
from dispatcher.halts import NoHaltKeys
from dispatcher.launch import submit_run
from dispatcher.models import pk
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
                consent.revoke_and_suppress(
                    s,
                    c,
                    consent.Scope(pk(brand)),
                    "keyword",
                    consent.Evidence(text="STOP"),
                    actor="demo",
                    halts=NoHaltKeys(),  # seeding: no run exists yet, nothing to halt
                )
        return {
            "campaign": campaign.sid,
            "brand": brand.name,
            "import": rep.as_dict(),
            "plan": plan,
        }


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
    for path in (dbfile, Path(f"{dbfile}-wal"), Path(f"{dbfile}-shm")):
        path.unlink(missing_ok=True)
    settings = Settings(database_url=f"sqlite:///{dbfile}")
    zone, grace = settings.default_timezone, settings.throttle_grace_s
    now = datetime.now(UTC)
    stack = EmbeddedStack(settings)
    with stack:
        db = stack.runtime.db
        seeded = seed(db, workdir, now, realistic=realistic, n=n)
        # the one launch path (launch checks included); the demo's audience lacks [date] for a
        # few contacts on purpose, a warning it accepts as an operator would with --force
        req = runs.LaunchRequest(
            campaign=seeded["campaign"],
            template=TEMPLATE,
            audience={"kind": "all"},
            actor="demo",
            force=True,
        )
        sub = submit_run(db, req, now=now, dry_run=True)
        assert sub.dry_run is not None
        dry, run_id = sub.dry_run, int(sub.run["id"])
        started = time.monotonic()
        if show:
            from dispatcher.cli.output import err

            for line in intro(dry, n, zone):
                err().print(line, markup=False, highlight=False)
        deadline = None if timeout is None else time.monotonic() + timeout
        if show:
            from dispatcher.cli.watch import watch

            remaining = None if deadline is None else max(1.0, deadline - time.monotonic())
            watch(
                db,
                run_id,
                timeout=remaining,
                until=only_waiting_left,
                zone=zone,
                grace_s=grace,
                verdict=False,
            )
        while True:
            with db.session() as s:
                p = run_report.progress(s, run_id, datetime.now(UTC), grace_s=grace)
            settled = p["by_state"].get("sent", 0) == 0 and p["by_state"].get("sending", 0) == 0
            if (p["state"] == runs.COMPLETED or only_waiting_left(p)) and settled:
                break
            if deadline is not None and time.monotonic() > deadline:
                break
            time.sleep(0.2)
        took = time.monotonic() - started
        with db.session() as s:
            handed = handed_to_carrier(s, run_id)
        carrier = stack.runtime.sandbox.records() if stack.runtime.sandbox else []
    end = demo_end(dry["schedule"])
    return {
        "run": p,
        "dry_run": dry,
        "estimated_seconds": (end - dry["schedule"]["start"]).total_seconds() if end else 0.0,
        "seeded": seeded,
        "carrier": carrier,
        "handed": handed,
        "seconds": took,
    }


def intro(dry: dict[str, Any], n: int, zone: str) -> list[str]:
    """What the demo is about to do, from the dry run and its schedule (the model: quiet hours
    and every limit counted)."""
    sch = dry["schedule"]
    lines = [
        f"Demo: {n} contacts, campaign {dry['campaign']} (limit {dry['limits']}): "
        f"{dry['would_send']} to send, {sum(dry['suppressed'].values())} suppressed by the gates.",
        f"First message: {dry['first_message']} ({dry['encoding']}, "
        f"{dry['segments']} segment{'s' if dry['segments'] != 1 else ''})",
        *(f"Accepted warning: {w['message']} [{w['rule']}]" for w in dry.get("warnings", [])),
    ]
    end = demo_end(sch)
    if end is not None:
        lines.append(
            f"Estimated: the recipients awake now are done by {run_report.local_time(end, zone)},"
            f" in {run_report.duration((end - sch['start']).total_seconds())}."
        )
    asleep = [w for w in sch["windows"] if not w["open_at_start"]]
    if asleep:
        first = min(w["first"] for w in asleep if w["first"])
        lines.append(
            f"{sum(w['rows'] for w in asleep)} are in their quiet hours: the first of them goes "
            f"at {run_report.local_time(first, zone)}, the last at "
            f"{run_report.local_time(sch['finish'], zone)}; the demo stops before them."
        )
    return lines


def demo_end(sch: dict[str, Any]) -> datetime | None:
    """When the demo's run should be left with only the recipients in their quiet hours: the
    last send to a window open at the start."""
    ends = [w["last"] for w in sch["windows"] if w["open_at_start"] and w["last"]]
    return max(ends, default=None)


def handed_to_carrier(session: Any, run_id: int) -> int:
    """Rows of the run that the carrier accepted (they have its message SID)."""
    from sqlalchemy import func, select

    t = runs.OB
    return int(
        session.connection()
        .execute(select(func.count()).where(t.c.run_id == run_id, t.c.provider_sid.is_not(None)))
        .scalar_one()
    )


def only_waiting_left(p: dict[str, Any]) -> bool:
    """Everything that can go now went: every row left waits for its recipients' daytime (or
    their frequency caps)."""
    return p.get("substate") in (run_report.WAITING_QUIET, run_report.WAITING_RECIPIENTS)
