"""Fixtures for the webhook tests: a runtime on a test database, a signed-request helper and a
small world (brand, campaigns, contact, run, outbox rows)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from twilio.request_validator import RequestValidator

from dispatcher.clock import FakeClock
from dispatcher.delivery.fakes import MemoryHalts
from dispatcher.metrics import OptOutKind
from dispatcher.models import Brand, Campaign, Contact, OutboxMessage, Run
from dispatcher.settings import Settings
from dispatcher.store import Database
from dispatcher.webhooks import WebhookOptions, create_app
from dispatcher.webhooks.protocol import WebhookMetrics
from tests.procs import wait_for  # noqa: F401 - re-exported (tests import it from here)

TOKEN = "test-auth-token-0123456789abcdef"
BASE = "https://hooks.example.com"
MG = "MG" + "a" * 32
SENDER = "+14155550100"
PHONE = "+14155551234"


class TestClient:
    """Sync client calling the ASGI app in process (httpx ASGITransport, one event loop per
    request, so requests from several threads may run at once).  App exceptions propagate."""

    __test__ = False

    def __init__(self, app: Any, base_url: str = "http://testserver") -> None:
        self.app = app
        self.base_url = base_url

    async def _request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        transport = httpx.ASGITransport(app=self.app)
        async with httpx.AsyncClient(transport=transport, base_url=self.base_url) as c:
            return await c.request(method, path, **kw)

    def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        return asyncio.run(self._request(method, path, **kw))

    def post(self, path: str, **kw: Any) -> httpx.Response:
        return self.request("POST", path, **kw)

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.request("GET", path, **kw)


class RecordingMetrics(WebhookMetrics):
    """Every metric call, in order, as (method, *args)."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def opt_out(self, campaign: str, kind: OptOutKind = "keyword") -> None:
        self.calls.append(("opt_out", campaign, kind))

    def opt_in(self, campaign: str) -> None:
        self.calls.append(("opt_in", campaign))

    def help_request(self, campaign: str) -> None:
        self.calls.append(("help_request", campaign))

    def delivered(self, campaign: str, sender: str) -> None:
        self.calls.append(("delivered", campaign, sender))

    def undelivered(self, campaign: str, sender: str, error_code: int | str | None) -> None:
        self.calls.append(("undelivered", campaign, sender, error_code))

    def failed(self, campaign: str, sender: str, error_code: int | str | None) -> None:
        self.calls.append(("failed", campaign, sender, error_code))

    def suppressed(self, campaign: str, reason: str, n: int = 1) -> None:
        self.calls.append(("suppressed", campaign, reason, n))


@dataclass
class FakeRuntime:
    settings: Settings
    db: Database
    clock: FakeClock
    metrics: Any = None
    redis: Any = None
    halts: MemoryHalts = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.halts is None:  # what STOPs and pauses signal, kept in memory
            self.halts = MemoryHalts(self.clock)


def sign(params: Any, url: str, token: str = TOKEN) -> str:
    return RequestValidator(token).compute_signature(url, params)


@dataclass
class World:
    db: Database
    brand: Brand
    campaign: Campaign
    other_brand: Brand
    other_campaign: Campaign
    contact: Contact
    run: Run
    sibling: Campaign
    rows: list[OutboxMessage] = field(default_factory=list)

    def add_row(
        self,
        state: str,
        *,
        run: Run | None = None,
        campaign: Campaign | None = None,
        contact: Contact | None = None,
        sid: str | None = None,
        body_hash: str | None = None,
        sent_at: Any = None,
    ) -> OutboxMessage:
        campaign = campaign or self.campaign
        run = run or self.new_run(campaign)  # one row per (run, contact)
        contact = contact or self.contact
        with self.db.session() as s:
            row = OutboxMessage(
                run_id=run.id,
                campaign_id=campaign.id,
                contact_id=contact.id,
                to_phone=contact.phone,
                state=state,
                provider_sid=sid,
                body_hash=body_hash,
                sent_at=sent_at,
            )
            s.add(row)
        self.rows.append(row)
        return row

    def new_run(self, campaign: Campaign | None = None, state: str = "running") -> Run:
        with self.db.session() as s:
            run = Run(campaign_id=(campaign or self.campaign).id, template="Hi", state=state)
            s.add(run)
        return run

    def new_contact(self, phone: str) -> Contact:
        with self.db.session() as s:
            c = Contact(phone=phone)
            s.add(c)
        return c


def campaign_doc(brand_id: int, n: int, **kw: Any) -> Campaign:
    base = dict(
        sid="QE" + f"{n:032x}",
        brand_id=brand_id,
        description="d" * 40,
        message_flow="f" * 40,
        us_app_to_person_usecase="ACCOUNT_NOTIFICATION",
        campaign_status="VERIFIED",
    )
    base.update(kw)
    return Campaign(**base)


def build_world(db: Database) -> World:
    with db.session() as s:
        brand = Brand(name="Acme Corporation")
        other = Brand(name="Globex Inc")
        s.add(brand)
        s.add(other)
        s.flush()
        campaign = campaign_doc(
            brand.id,
            1,
            messaging_service_sid=MG,
            sender=SENDER,
            opt_out_message="Acme: you are unsubscribed, no more messages. Reply START to rejoin.",
            opt_in_message="Acme: you are subscribed to account alerts. Reply HELP for help, "
            "STOP to opt out.",
            help_message="Acme: help at acme.example/help or 800-555-0100. Reply STOP to opt out.",
        )
        sibling = campaign_doc(brand.id, 2, sender="+14155550101")
        other_campaign = campaign_doc(other.id, 3, sender="+14155550102")
        s.add_all([campaign, sibling, other_campaign])
        contact = Contact(phone=PHONE)
        s.add(contact)
        s.flush()
        run = Run(campaign_id=campaign.id, template="Hi", state="running")
        s.add(run)
    return World(db, brand, campaign, other, other_campaign, contact, run, sibling)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make_client(
    db: Database,
    clock: FakeClock,
    *,
    metrics: Any = None,
    advanced_opt_out: bool = False,
    options: WebhookOptions | None = None,
    redis: Any = None,
) -> TestClient:
    settings = Settings(
        twilio_auth_token=TOKEN,
        public_base_url=BASE,
        advanced_opt_out=advanced_opt_out,
        database_url=db.url,
    )
    rt = FakeRuntime(settings, db, clock, metrics, redis)
    opts = options or WebhookOptions(in_flight_timeout_s=30, in_flight_poll_s=0.01)
    app = create_app(rt, options=opts)
    _apps.append(app)
    return TestClient(app, base_url="http://testserver")


_apps: list[Any] = []


@pytest.fixture(autouse=True)
def _close_apps() -> Any:
    """Stop the background work of every app a test made (e.g. early status callbacks kept for
    SIDs no row has: nothing retries against a database after its test)."""
    yield
    while _apps:
        _apps.pop().state.webhooks.close()


@pytest.fixture
def world(sqlite_db) -> World:
    return build_world(sqlite_db)


@pytest.fixture
def metrics() -> RecordingMetrics:
    return RecordingMetrics()


@pytest.fixture
def client(sqlite_db, clock, metrics) -> TestClient:
    return make_client(sqlite_db, clock, metrics=metrics)


def post(
    client: TestClient,
    path: str,
    params: dict[str, str] | list[tuple[str, str]],
    *,
    token: str = TOKEN,
    url: str | None = None,
    signature: str | None = None,
    headers: dict[str, str] | None = None,
) -> Any:
    """POST a form signed for ``url`` (default: BASE + path) like Twilio does."""
    body = urlencode(params)
    sig_params: Any = params
    if isinstance(params, list):
        from dispatcher.webhooks.forms import Form

        sig_params = Form(params)
    h = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Twilio-Signature": signature
        if signature is not None
        else sign(sig_params, url or BASE + path, token),
    }
    h.update(headers or {})
    return client.post(path, content=body.encode(), headers=h)


def inbound(
    body: str,
    *,
    sid: str = "SM" + "1" * 32,
    frm: str = PHONE,
    to: str = SENDER,
    mg: str | None = MG,
    **extra: str,
) -> dict[str, str]:
    p = {
        "MessageSid": sid,
        "SmsSid": sid,
        "AccountSid": "AC" + "0" * 32,
        "From": frm,
        "To": to,
        "Body": body,
        "NumMedia": "0",
    }
    if mg:
        p["MessagingServiceSid"] = mg
    p.update(extra)
    return p


def status(sid: str, st: str, code: int | None = None) -> dict[str, str]:
    p = {
        "MessageSid": sid,
        "MessageStatus": st,
        "AccountSid": "AC" + "0" * 32,
        "From": SENDER,
        "To": PHONE,
    }
    if code is not None:
        p["ErrorCode"] = str(code)
    return p
