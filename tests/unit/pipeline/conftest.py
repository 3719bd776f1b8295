"""A pipeline on SQLite + fakeredis + the in-process sandbox carrier + a FakeClock, no servers.

``Harness`` seeds a brand and a VERIFIED campaign (the seed 004 registration, as the demo does),
adds contacts with or without consent, launches runs, and records every queue operation
(``enqueue`` from the pipeline, ``enqueue_many`` from the release loop) instead of using a broker.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import fakeredis
import pytest
from sqlmodel import select

from dispatcher import consent, contacts, ledger, registry, runs
from dispatcher.clock import FakeClock
from dispatcher.models import Campaign, OutboxMessage, Run
from dispatcher.release_loop import ReleaseConfig, ReleaseLoop
from dispatcher.runtime import Runtime
from dispatcher.settings import Settings
from tests.procs import wait_for  # noqa: F401 - re-exported (tests import it from here)

TEMPLATE = "Hi [first_name], your maintenance contract [contract] expires on [date]."
SENDER = "+15005550006"
BRAND = "Acme Corporation"
#: 15:00 UTC on a Monday (the FakeClock default): 10:00 in New York, 07:00 in Los Angeles
START = datetime(2026, 1, 5, 15, 0, tzinfo=UTC)
GRANTED_AT = datetime(2025, 12, 1, 12, 0, tzinfo=UTC)


def unheld(p: Any) -> Any:
    """``p`` with carried rows put on the queue as each batch ends (``enqueue_ahead_s`` inf)."""
    return replace(p, config=replace(p.config, enqueue_ahead_s=math.inf))


@dataclass
class Harness:
    rt: Runtime
    clock: FakeClock
    brand_id: int = 0
    campaign_id: int = 0
    campaign_sid: str = ""
    #: every carried row: (row id, delay of its message, booking)
    queued: list[tuple[int, float, dict[str, Any] | None]] = field(default_factory=list)
    #: every delayed message: (its rows, its delay)
    messages: list[tuple[list[int], float]] = field(default_factory=list)
    released: list[int] = field(default_factory=list)
    _n: int = 0

    # ------------------------------------------------------------------ wiring
    def enqueue(self, rows: Sequence[tuple[int, dict[str, Any]]], delay_s: float = 0.0) -> None:
        self.messages.append(([row_id for row_id, _ in rows], delay_s))
        self.queued.extend((row_id, delay_s, booking) for row_id, booking in rows)

    def enqueue_many(self, ids: list[int]) -> None:
        self.released.extend(ids)

    @property
    def db(self) -> Any:
        return self.rt.db

    @property
    def sandbox(self) -> Any:
        return self.rt.sandbox

    def pipeline(self, enqueue: Any = None) -> Any:
        """The runtime's pipeline, putting each batch's carried rows on the queue when the batch
        ends: the FakeClock does not move by itself, so no thread could wait for a stretch to
        come (the holding is tested in tests/unit/delivery/test_carry.py)."""
        return unheld(self.rt.pipeline(enqueue or self.enqueue))

    def release_loop(self, pipeline: Any = None, **cfg: Any) -> ReleaseLoop:
        p = pipeline or self.pipeline()
        return ReleaseLoop(
            self.db,
            self.clock,
            self.enqueue_many,
            resolve=p.resolve,
            config=ReleaseConfig(**cfg),
        )

    # ------------------------------------------------------------------ seeding
    def seed(self, **policy: Any) -> None:
        doc = json.loads(
            resources.files("dispatcher.data").joinpath("usa2p_seed004.json").read_text()
        )
        doc["campaign_status"] = "VERIFIED"
        doc["messaging_service_sid"] = None
        with self.db.session() as s:
            brand = registry.add_brand(s, name=BRAND, tmobile_brand_tier="TOP")
            campaign, _ = registry.import_campaign(
                s, doc, brand=brand, policy={"sender": SENDER, **policy}
            )
            self.brand_id, self.campaign_id, self.campaign_sid = brand.id, campaign.id, campaign.sid

    def set_campaign(self, **values: Any) -> None:
        with self.db.session() as s:
            c = s.get(Campaign, self.campaign_id)
            for k, v in values.items():
                setattr(c, k, v)
            s.add(c)

    def contact(
        self,
        phone: str | None = None,
        *,
        consent: bool = True,
        name: str = "Jane Doe",
        time_zone: str | None = None,
        attributes: dict[str, Any] | None = None,
    ) -> int:
        """A contact (consent granted in the ledger unless ``consent=False``); returns its id."""
        if phone is None:
            self._n += 1
            phone = f"+1212555{self._n:04d}"  # New York: inside 08:00-21:00 at START
        attrs = {"contract": "MC-10001", "date": "2026-03-01"} if attributes is None else attributes
        with self.db.session() as s:
            c, _ = contacts.upsert_contact(
                s, phone, name=name, time_zone=time_zone, attributes=attrs
            )
            if consent:
                ledger.append(
                    s,
                    contact_id=c.id,
                    brand_id=self.brand_id,
                    action="grant",
                    source="web_form",
                    actor="test",
                    evidence_text="Checked 'Text me service reminders'",
                    occurred_at=GRANTED_AT,
                )
            return c.id

    def contacts(self, n: int, *, npa: str | tuple[str, ...] = "212") -> list[int]:
        """``n`` consented contacts in one transaction (numbers +1<npa>55<5 digits>); several
        area codes are taken in turn (interleaved, as a real audience mixes them)."""
        npas = (npa,) if isinstance(npa, str) else npa
        ids = []
        with self.db.session() as s:
            for i in range(n):
                c, _ = contacts.upsert_contact(
                    s,
                    f"+1{npas[i % len(npas)]}55{i:05d}",
                    name=f"Customer{i} Demo",
                    attributes={"contract": f"MC-{i}", "date": "2026-03-01"},
                )
                ledger.append(
                    s,
                    contact_id=c.id,
                    brand_id=self.brand_id,
                    action="grant",
                    source="web_form",
                    actor="test",
                    evidence_text="web form",
                    occurred_at=GRANTED_AT,
                )
                ids.append(c.id)
        return ids

    def stop(self, contact_id: int) -> int:
        """A STOP arrives: the consent service's brand-wide revoke, rows of the brand
        suppressed.  Returns how many."""
        with self.db.session() as s:
            return sum(
                consent.revoke_and_suppress(
                    s,
                    contact_id,
                    consent.Scope(self.brand_id),
                    "keyword",
                    consent.Evidence(text="STOP"),
                    actor="test",
                    halts=self.rt.halts,
                    now=self.clock.now(),
                ).suppressed.values()
            )

    def launch(self, template: str = TEMPLATE, *, fan_out: bool = True, **kw: Any) -> int:
        req = runs.LaunchRequest(
            campaign=self.campaign_sid,
            template=template,
            audience=kw.pop("audience", {"kind": "all"}),
            **kw,
        )
        with self.db.session() as s:
            run, _ = runs.launch(s, req, now=self.clock.now())
            run_id = run.id
        if fan_out:
            with self.db.session() as s:
                runs.fan_out(s, run_id, self.clock.now())
        return run_id

    # ------------------------------------------------------------------ reading
    def rows(self, run_id: int | None = None) -> list[OutboxMessage]:
        with self.db.session() as s:
            q = select(OutboxMessage)
            if run_id is not None:
                q = q.where(OutboxMessage.run_id == run_id)
            return list(s.exec(q.order_by(OutboxMessage.id)).all())

    def row(self, row_id: int) -> OutboxMessage:
        with self.db.session() as s:
            return s.get(OutboxMessage, row_id)

    def run(self, run_id: int) -> Run:
        with self.db.session() as s:
            return s.get(Run, run_id)

    def records(self, to: str | None = None) -> list[dict[str, Any]]:
        recs = self.sandbox.records()
        return [r for r in recs if to is None or r["to"] == to]


@contextmanager
def make_harness(directory: Path) -> Iterator[Harness]:
    """A seeded harness: brand + VERIFIED campaign, no contacts, clock at START."""
    from dispatcher import store

    url = f"sqlite:///{directory}/pipeline.db"
    clock = FakeClock(START)
    rt = Runtime(
        Settings(database_url=url),
        clock=clock,
        redis=fakeredis.FakeRedis(server=fakeredis.FakeServer()),
    )
    rt.gateway  # noqa: B018 - starts the in-process sandbox carrier
    h = Harness(rt=rt, clock=clock)
    try:
        h.seed()
        yield h
    finally:
        rt.close()
        db = store._databases.pop(url, None)
        if db is not None:
            db.dispose()


@pytest.fixture
def harness(tmp_path):
    with make_harness(tmp_path) as h:
        yield h
