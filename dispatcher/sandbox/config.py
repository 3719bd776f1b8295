"""Configuration of the sandbox carrier (plain dataclasses; JSON-friendly for /_sandbox/config)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from dispatcher.errors import InputError
from dispatcher.settings import SANDBOX_ACCOUNT_SID, SANDBOX_AUTH_TOKEN

#: Test-credential "From" that always passes (compliance.md section 8).
MAGIC_FROM_OK = "+15005550006"
DEFAULT_SERVICE_SID = "MG" + "0" * 31 + "1"
DEFAULT_CAMPAIGN_SID = "QE" + "0" * 31 + "1"


@dataclass
class Faults:
    """Fault injection on CreateMessage, drawn from a seeded RNG (fractions in 0..1)."""

    rate_429: float = 0.0  #: answer 429 with code 20429; nothing recorded
    rate_500: float = 0.0  #: answer 500 with code 20500; nothing recorded
    slow_fraction: float = 0.0  #: fraction of creates delayed by ``slow_seconds`` before handling
    slow_seconds: float = 0.5
    timeout_after_accept: float = 0.0  #: message recorded, then no usable answer
    timeout_mode: str = "delay"  #: "delay" (answer after ``timeout_delay_s``) or "drop" (reset)
    timeout_delay_s: float = 30.0
    drop_callbacks: float = 0.0  #: fraction of status callbacks never sent
    seed: int = 1234


@dataclass
class Schedule:
    """Seconds after creation at which each status is reached (clock time)."""

    sending_after_s: float = 0.05
    sent_after_s: float = 0.1
    final_after_s: float = 0.5


@dataclass
class SandboxConfig:
    account_sid: str = SANDBOX_ACCOUNT_SID
    auth_token: str = SANDBOX_AUTH_TOKEN
    #: When on, only ``senders`` (plus the magic +15005550006) may be ``From``; others get 21606.
    strict_from: bool = False
    senders: list[str] = field(default_factory=lambda: [MAGIC_FROM_OK])
    #: Messaging Service SID -> the number it sends from (default: the first of ``senders``).
    service_senders: dict[str, str] = field(default_factory=dict)
    schedule: Schedule = field(default_factory=Schedule)
    #: Delivery error code -> fraction of messages ending with it (e.g. {30007: 0.02}).
    #: 30001/30034/30036 end ``failed``; every other code ends ``undelivered``.
    delivery_errors: dict[int, float] = field(default_factory=dict)
    faults: Faults = field(default_factory=Faults)
    #: UsAppToPerson resources served at /v1/Services/{MG}/Compliance/Usa2p (snake_case dicts).
    campaigns: list[dict[str, Any]] = field(default_factory=list)
    #: Where ``reply``/``/_sandbox/inbound`` post inbound webhooks.
    inbound_url: str = "http://127.0.0.1:8000/twilio/inbound"
    #: Background ticker period in server mode (seconds).
    tick_interval_s: float = 0.02

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("auth_token")
        d["delivery_errors"] = {str(k): v for k, v in self.delivery_errors.items()}
        return d

    def updated(self, patch: dict[str, Any]) -> SandboxConfig:
        """A copy with ``patch`` applied (nested ``faults``/``schedule`` merge key by key)."""
        known = {f.name for f in fields(self)}
        unknown = set(patch) - known
        if unknown:
            raise InputError(f"unknown sandbox config keys: {', '.join(sorted(unknown))}")
        changes: dict[str, Any] = {}
        for k, v in patch.items():
            if k == "faults":
                changes[k] = faults_from(v, self.faults)
            elif k == "schedule":
                changes[k] = _merge(Schedule, self.schedule, v)
            elif k == "delivery_errors":
                changes[k] = {int(c): float(f) for c, f in dict(v).items()}
            else:
                changes[k] = v
        return replace(self, **changes)


def faults_from(patch: dict[str, Any], base: Faults | None = None) -> Faults:
    f: Faults = _merge(Faults, base or Faults(), patch)
    for name in ("rate_429", "rate_500", "slow_fraction", "timeout_after_accept", "drop_callbacks"):
        if not 0.0 <= float(getattr(f, name)) <= 1.0:
            raise InputError(f"fault {name} must be a fraction between 0 and 1")
    if f.rate_429 + f.rate_500 + f.timeout_after_accept > 1.0:
        raise InputError("fault fractions rate_429 + rate_500 + timeout_after_accept exceed 1")
    if f.timeout_mode not in ("delay", "drop"):
        raise InputError("fault timeout_mode must be 'delay' or 'drop'")
    return f


def _merge(cls: type, base: Any, patch: dict[str, Any]) -> Any:
    names = {f.name for f in fields(cls)}
    unknown = set(patch) - names
    if unknown:
        raise InputError(f"unknown {cls.__name__.lower()} keys: {', '.join(sorted(unknown))}")
    return replace(base, **patch)


def default_campaign(
    service_sid: str = DEFAULT_SERVICE_SID,
    campaign_sid: str = DEFAULT_CAMPAIGN_SID,
    *,
    account_sid: str = SANDBOX_ACCOUNT_SID,
    **overrides: Any,
) -> dict[str, Any]:
    """A complete, verified UsAppToPerson resource (all 28 fields of the spec) for the sandbox."""
    doc: dict[str, Any] = {
        "sid": campaign_sid,
        "account_sid": account_sid,
        "brand_registration_sid": "BN" + "0" * 31 + "1",
        "messaging_service_sid": service_sid,
        "description": (
            "Service notifications about maintenance contracts sent to opted-in customers."
        ),
        "message_samples": [
            "Acme: your maintenance contract expires on 2026-03-01. Reply STOP to opt out.",
            "Acme: your technician visit is on Monday. Reply HELP for help, STOP to stop.",
        ],
        "us_app_to_person_usecase": "CUSTOMER_CARE",
        "has_embedded_links": False,
        "has_embedded_phone": False,
        "subscriber_opt_in": True,
        "age_gated": False,
        "direct_lending": False,
        "campaign_status": "VERIFIED",
        "campaign_id": "CSANDBOX",
        "is_externally_registered": False,
        "rate_limits": {"att": {"mps": 600, "msg_class": "A"}, "tmobile": {"brand_tier": "TOP"}},
        "message_flow": "Customers opt in on the signed service contract and on the web portal.",
        "opt_in_message": "Acme: you are subscribed to alerts. Reply HELP for help, STOP to end.",
        "opt_out_message": "Acme: you are unsubscribed and will receive no more messages.",
        "help_message": "Acme support: call 800-555-0100 or email help@example.com. STOP to end.",
        "opt_in_keywords": ["START"],
        "opt_out_keywords": ["STOP", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"],
        "help_keywords": ["HELP", "INFO"],
        "date_created": "2026-01-05T15:00:00Z",
        "date_updated": "2026-01-05T15:00:00Z",
        "url": f"https://messaging.twilio.com/v1/Services/{service_sid}/Compliance/Usa2p/{campaign_sid}",
        "mock": True,
        "errors": [],
    }
    unknown = set(overrides) - set(doc)
    if unknown:
        raise InputError(f"unknown UsAppToPerson fields: {', '.join(sorted(unknown))}")
    doc.update(overrides)
    return doc
