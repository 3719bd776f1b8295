"""The schedule model over 200 000 rows, against ceilings measured in the same run.

Ceilings: a bare Python pass over the rows (touching each once), and ``decide()`` for the same
recipients (what a dry run already pays per row: the model rides on it).  Scenarios: grouping
the rows (``run_report.Grouper``: quiet-hour windows per number), then ``schedule.plan`` for a
fast campaign (1 000 per second, 75 MPS: a 45 min run) and for the default 10 per 5 min (a
100-day plan with nights given back).  ``--db`` adds the end-to-end figures on SQLite: the dry
run of a 200 000-contact audience, and ``run show`` (``run_report.progress``) of that run.

    .venv/bin/python bench/schedule.py [--rows N] [--db]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from dispatcher import run_report
from dispatcher import schedule as sched
from dispatcher.compliance import ContactState, OutgoingMessage, compose, decide

NPAS = ("212", "305", "405", "410", "312", "720", "602", "213", "907", "808")
NOW = datetime(2026, 1, 5, 17, 0, tzinfo=UTC)  # 12:00 EST


def campaign(**kw: Any) -> SimpleNamespace:
    base = dict(sid="QE1", brand_id=1, window_limit=10, window_seconds=300,
                messaging_service_sid=None, sender="+15005550006",
                rate_limits={"att": {"mps": 600}}, frequency_cap_count=None,
                frequency_cap_hours=None, quiet_hours_policy="strictest",
                campaign_status="VERIFIED", us_app_to_person_usecase="ACCOUNT_NOTIFICATION",
                has_embedded_links=False, has_embedded_phone=False, age_gated=False)  # fmt: skip
    base.update(kw)
    return SimpleNamespace(**base)


def timed(fn: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def pure(n: int) -> None:
    phones = [f"+1{NPAS[i % len(NPAS)]}55{i % 100_000:05d}" for i in range(n)]
    bare, _ = timed(lambda: [p[:8] for p in phones])
    body = compose("Your contract expires soon.", brand_name="Acme", first_message=True)
    state = ContactState(True)
    camp = campaign()
    msgs = [OutgoingMessage(p, body, True, brand_name="Acme") for p in phones]
    gates, _ = timed(lambda: [decide(m, state, camp, now=NOW) for m in msgs])

    def group() -> tuple[list[sched.Row], list[sched.Group]]:
        g = run_report.Grouper(camp)  # type: ignore[arg-type]
        t = NOW.timestamp()
        return [sched.Row(t, g.group(p, None, None, 1)) for p in phones], g.groups

    grouping, (rows, groups) = timed(group)
    print(f"{n} rows, {len(groups)} groups")
    print(f"  ceiling: bare pass {bare:.3f} s; decide() per row {gates:.2f} s")
    print(f"  grouping      {grouping:6.2f} s  = {grouping / gates:5.2f} x decide")
    for name, c in (
        (
            "fast campaign",
            campaign(window_limit=1000, window_seconds=1, rate_limits={"att": {"mps": 75}}),
        ),  # fmt: skip
        ("10 per 5 min ", campaign()),
    ):
        buckets_of = sched.campaign_buckets(c, brand_id=1, brand_tier="TOP", min_grace_s=2.0)
        took, plan = timed(lambda b=buckets_of: sched.plan(rows, groups, b, now=NOW.timestamp()))
        hours = ((plan.finish or NOW.timestamp()) - NOW.timestamp()) / 3600
        print(
            f"  plan {name} {took:6.2f} s  = {took / gates:5.2f} x decide, {took / bare:6.1f} x "
            f"bare; plan spans {hours:.1f} h, {plan.given_back} slots given back"
        )


def end_to_end(n: int) -> None:
    from sqlalchemy import insert

    from dispatcher import registry, runs
    from dispatcher.models import ConsentEvent, Contact
    from dispatcher.store import Database

    with tempfile.TemporaryDirectory() as d:
        db = Database(f"sqlite:///{Path(d)}/bench.db")
        db.upgrade()
        import json
        from importlib import resources

        doc = json.loads(
            resources.files("dispatcher.data").joinpath("usa2p_seed004.json").read_text()
        )
        doc["campaign_status"] = "VERIFIED"
        with db.session() as s:
            brand = registry.add_brand(s, name="Acme Corporation", tmobile_brand_tier="TOP")
            camp, _ = registry.import_campaign(
                s, doc, brand=brand, policy={"sender": "+15005550006"}
            )
            rows = [
                {"phone": f"+1{NPAS[i % len(NPAS)]}5{i:06d}", "name": f"C{i} Demo",
                 "attributes": {}, "created_at": NOW, "updated_at": NOW}
                for i in range(n)
            ]  # fmt: skip
            s.connection().execute(insert(Contact.__table__), rows)  # type: ignore[attr-defined]
            ids = [r[0] for r in s.connection().execute(Contact.__table__.select())]  # type: ignore[attr-defined]
            s.connection().execute(
                insert(ConsentEvent.__table__),  # type: ignore[attr-defined]
                [
                    {"contact_id": cid, "brand_id": brand.id, "action": "grant",
                     "consent_type": "express", "source": "import", "actor": "bench",
                     "evidence_text": "form", "occurred_at": NOW, "recorded_at": NOW}
                    for cid in ids
                ],
            )  # fmt: skip
            sid = camp.sid
        req = runs.LaunchRequest(campaign=sid, template="Hi [first_name]", audience={"kind": "all"})
        with db.session() as s:
            took, dry = timed(lambda: run_report.dry_run(s, req, now=NOW))
            s.rollback()
        with db.session() as s:
            no_model = time.perf_counter()
            sched_plan = sched.plan
            sched.plan = lambda rows, groups, b, **kw: sched.Plan(0.0, [], [])  # type: ignore[assignment,misc]
            try:
                run_report.dry_run(s, req, now=NOW)
            finally:
                sched.plan = sched_plan  # type: ignore[assignment]
            no_model = time.perf_counter() - no_model
            s.rollback()
        print(
            f"  dry run of {n} contacts: {took:.1f} s (without the model {no_model:.1f} s: the "
            f"model adds {took - no_model:.1f} s); finish {dry['estimated_finish']}"
        )
        with db.session() as s:
            run, _ = runs.launch(s, req, now=NOW)
            run_id = run.id
        with db.session() as s:
            runs.fan_out(s, run_id, NOW)
        with db.session() as s:
            bare, _ = timed(lambda: run_report.progress(s, run_id, NOW, schedule=False))
            took, p = timed(lambda: run_report.progress(s, run_id, NOW))
        print(
            f"  run show of a {n}-row run: {took:.1f} s (counts only: {bare:.2f} s); "
            f"finish {p['eta']}"
        )
        db.dispose()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--db", action="store_true", help="also the end-to-end figures on SQLite")
    a = ap.parse_args()
    pure(a.rows)
    if a.db:
        end_to_end(a.rows)


if __name__ == "__main__":
    main()
