"""The sandbox carrier's state machine: accepted messages, status schedule, callbacks, faults.

HTTP-agnostic (the Starlette app in :mod:`dispatcher.sandbox.app` is a thin shell around it).
Time comes from a Clock; :meth:`Sandbox.tick` applies every status change that is due, so tests
drive it with a FakeClock and server/embedded mode run :meth:`Sandbox.start` (a ticker thread).
"""

from __future__ import annotations

import builtins
import heapq
import logging
import random
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import urlencode

from dispatcher.clock import Clock, SystemClock
from dispatcher.compliance.segments import segments
from dispatcher.logs import mask_phone
from dispatcher.phones import is_e164
from dispatcher.sandbox import wire
from dispatcher.sandbox.callbacks import (
    Callback,
    CallbackSender,
    RecordingCallbackSender,
    signed_callback,
)
from dispatcher.sandbox.config import MAGIC_FROM_OK, Faults, SandboxConfig, faults_from
from dispatcher.sandbox.wire import ApiError

log = logging.getLogger(__name__)

#: Delivery error codes that end a message ``failed`` (never handed to a carrier).
FAILED_CODES = frozenset({30001, 30034, 30036})
ERROR_MESSAGES = {
    30001: "Queue overflow",
    30003: "Unreachable destination handset",
    30004: "Message blocked",
    30005: "Unknown destination handset",
    30006: "Landline or unreachable carrier",
    30007: "Message filtered",
    30008: "Unknown error",
    30034: "Message from an unregistered number",
    30036: "Validity period expired",
}
_MAGIC_TO = {
    "+15005550001": (21211, "The 'To' number {to} is not a valid phone number."),
    "+15005550002": (21612, "The 'To' phone number {to} is not currently reachable via SMS."),
    "+15005550003": (
        21408,
        "Permission to send an SMS has not been enabled for the region of {to}.",
    ),
    "+15005550004": (21610, "Attempt to send to unsubscribed recipient"),
    "+15005550009": (21614, "'To' number {to} is not a valid mobile number"),
}
_MAGIC_FROM = {
    "+15005550001": (21212, "The 'From' number {frm} is not a valid phone number or sender ID."),
    "+15005550008": (
        21611,
        "This 'From' number has exceeded the maximum number of queued messages.",
    ),
}
_CANCELABLE = frozenset({"queued", "accepted", "scheduled"})
_FINAL = frozenset({"delivered", "undelivered", "failed", "canceled"})


@dataclass(slots=True)
class Message:
    sid: str
    to: str
    from_: str | None
    body: str
    messaging_service_sid: str | None
    status: str
    num_segments: int
    created: float
    updated: float
    status_callback: str | None
    validity_period: int
    plan: list[tuple[float, str, int | None]]  # (due, status, error_code)
    step: int = 0
    error_code: int | None = None
    num_media: int = 0

    def to_json(self, account_sid: str) -> dict[str, Any]:
        uri = f"/2010-04-01/Accounts/{account_sid}/Messages/{self.sid}"
        mg_pending = self.messaging_service_sid and self.status in ("accepted", "queued")
        return {
            "body": self.body,
            "num_segments": "0" if mg_pending else str(self.num_segments),
            "direction": "outbound-api",
            "from": None if mg_pending else self.from_,
            "to": self.to,
            "date_updated": wire.rfc2822(self.updated),
            "price": None,
            "error_message": ERROR_MESSAGES.get(self.error_code, None) if self.error_code else None,
            "uri": uri + ".json",
            "account_sid": account_sid,
            "num_media": str(self.num_media),
            "status": self.status,
            "messaging_service_sid": self.messaging_service_sid,
            "sid": self.sid,
            "date_sent": wire.rfc2822(self.created),
            "date_created": wire.rfc2822(self.created),
            "error_code": self.error_code,
            "price_unit": "USD",
            "api_version": wire.API_VERSION,
            "subresource_uris": {"media": uri + "/Media.json"},
        }

    def record(self) -> dict[str, Any]:
        """What the carrier received (admin view)."""
        return {
            "sid": self.sid,
            "to": self.to,
            "from": self.from_,
            "messaging_service_sid": self.messaging_service_sid,
            "body": self.body,
            "status": self.status,
            "error_code": self.error_code,
            "num_segments": self.num_segments,
            "received_at": self.created,
            "received_at_iso": datetime.fromtimestamp(self.created, UTC).isoformat(),
            "status_callback": self.status_callback,
            "validity_period": self.validity_period,
        }


@dataclass
class Stats:
    created: int = 0
    rejected: int = 0
    faults_429: int = 0
    faults_500: int = 0
    timeouts_after_accept: int = 0
    callbacks: int = 0
    callbacks_dropped: int = 0
    inbound: int = 0
    counts: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CreateResult:
    """``fault`` is None, ``"delay"`` or ``"drop"`` (timeout-after-accept)."""

    message: dict[str, Any]
    fault: str | None = None
    slow_s: float = 0.0


class Sandbox:
    """All sandbox state behind one lock.  Thread-safe."""

    def __init__(
        self,
        config: SandboxConfig | None = None,
        *,
        clock: Clock | None = None,
        callbacks: CallbackSender | None = None,
    ) -> None:
        self.config = config or SandboxConfig()
        self.clock: Clock = clock or SystemClock()
        self.callbacks: CallbackSender = callbacks or RecordingCallbackSender()
        self._lock = threading.Lock()
        self._rng = random.Random(self.config.faults.seed)
        self._messages: dict[str, Message] = {}
        self._order: list[str] = []  # acceptance order
        self._index: dict[str, int] = {}
        self._by_to: dict[str, list[str]] = {}
        self._heap: list[tuple[float, int, str, int]] = []
        self._seq = 0
        self.stats = Stats()
        self.inbound_log: list[dict[str, str]] = []
        self._ticker: threading.Thread | None = None
        self._stop = threading.Event()

    # -- configuration --------------------------------------------------------------------------

    def configure(self, patch: Mapping[str, Any]) -> SandboxConfig:
        with self._lock:
            new = self.config.updated(dict(patch))
            if new.faults.seed != self.config.faults.seed:
                self._rng.seed(new.faults.seed)
            self.config = new
            return new

    def set_faults(self, patch: Mapping[str, Any]) -> Faults:
        with self._lock:
            f = faults_from(dict(patch), self.config.faults)
            if f.seed != self.config.faults.seed:
                self._rng.seed(f.seed)
            self.config.faults = f
            return f

    def reset(self) -> None:
        """Forget every message and reseed the RNG (configuration is kept)."""
        with self._lock:
            self._messages.clear()
            self._order.clear()
            self._index.clear()
            self._by_to.clear()
            self._heap.clear()
            self.inbound_log.clear()
            self.stats = Stats()
            self._rng.seed(self.config.faults.seed)

    # -- auth -----------------------------------------------------------------------------------

    def check_auth(self, user: str | None, password: str | None, path_account: str | None) -> None:
        cfg = self.config
        if user != cfg.account_sid or password != cfg.auth_token:
            raise ApiError(401, 20003, "Authenticate")
        if path_account is not None and path_account != cfg.account_sid:
            raise ApiError(401, 20003, "Authenticate")

    # -- messages -------------------------------------------------------------------------------

    def create(self, form: Mapping[str, str]) -> CreateResult:
        """CreateMessage.  Raises :class:`ApiError` for errors as Twilio returns them."""
        cfg = self.config
        faults = cfg.faults
        with self._lock:
            r = self._rng.random()
            slow = faults.slow_seconds if self._rng.random() < faults.slow_fraction else 0.0
            if r < faults.rate_429:
                self.stats.faults_429 += 1
                raise ApiError(429, 20429, "Too Many Requests")
            if r < faults.rate_429 + faults.rate_500:
                self.stats.faults_500 += 1
                raise ApiError(500, 20500, "Internal Server Error")
            timeout = r < faults.rate_429 + faults.rate_500 + faults.timeout_after_accept
        try:
            validated = self._validate(form)
        except ApiError:
            with self._lock:
                self.stats.rejected += 1
            raise
        to, frm, mg, body, validity, callback = validated
        now = self.clock.time()
        sid = wire.new_sid("SM")
        with self._lock:
            plan = self._plan(now, mg is not None, validity)
            msg = Message(
                sid=sid,
                to=to,
                from_=frm,
                body=body,
                messaging_service_sid=mg,
                status="accepted" if mg else "queued",
                num_segments=segments(body).count,
                created=now,
                updated=now,
                status_callback=callback,
                validity_period=validity,
                plan=plan,
                num_media=len(form.get("__media__", "") and form["__media__"].split("\n")),
            )
            self._messages[sid] = msg
            self._index[sid] = len(self._order)
            self._order.append(sid)
            self._by_to.setdefault(to, []).append(sid)
            self._seq += 1
            heapq.heappush(self._heap, (plan[0][0], self._seq, sid, 0))
            self.stats.created += 1
            fault = None
            if timeout:
                self.stats.timeouts_after_accept += 1
                fault = faults.timeout_mode
            doc = msg.to_json(cfg.account_sid)
        return CreateResult(message=doc, fault=fault, slow_s=slow)

    def _validate(
        self, form: Mapping[str, str]
    ) -> tuple[str, str | None, str | None, str, int, str | None]:
        cfg = self.config
        to = form.get("To", "").strip()
        frm = form.get("From", "").strip() or None
        mg = form.get("MessagingServiceSid", "").strip() or None
        body = form.get("Body", "")
        if not to:
            raise ApiError(400, 21604, "A 'To' phone number is required.")
        if frm is None and mg is None:
            raise ApiError(400, 21603, "A 'From' phone number is required.")
        if mg is not None and not wire.MG_SID.match(mg):
            raise ApiError(400, 21701, f"The Messaging Service Sid {mg} is invalid.")
        if not body and not form.get("__media__") and not form.get("ContentSid"):
            raise ApiError(400, 21602, "Message body is required.")
        if len(body) > 1600:
            raise ApiError(
                400, 21617, "The concatenated message body exceeds the 1600 character limit."
            )
        validity = 36000
        if form.get("ValidityPeriod"):
            try:
                validity = int(form["ValidityPeriod"])
            except ValueError:
                validity = 0
            if not 1 <= validity <= 36000:
                raise ApiError(400, 21624, "Invalid validity period value")
        if frm is None and mg is not None:
            frm = cfg.service_senders.get(mg) or (cfg.senders[0] if cfg.senders else MAGIC_FROM_OK)
        elif frm is not None:
            if frm in _MAGIC_FROM:
                code, text = _MAGIC_FROM[frm]
                raise ApiError(400, code, text.format(frm=frm))
            if cfg.strict_from and frm != MAGIC_FROM_OK and frm not in cfg.senders:
                raise ApiError(
                    400,
                    21606,
                    f"The 'From' phone number provided ({frm}) is not a valid message-capable "
                    "Twilio phone number for this destination/account.",
                )
        if to in _MAGIC_TO:
            code, text = _MAGIC_TO[to]
            raise ApiError(400, code, text.format(to=to))
        if not is_e164(to):
            raise ApiError(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        callback = form.get("StatusCallback") or None
        return to, frm, mg, body, validity, callback

    def _plan(
        self, now: float, via_service: bool, validity: int
    ) -> list[tuple[float, str, int | None]]:
        """Status changes after the initial one (called under the lock: uses the RNG)."""
        s = self.config.schedule
        code: int | None = None
        errors = self.config.delivery_errors
        if errors:
            r = self._rng.random()
            acc = 0.0
            for c in sorted(errors):
                acc += errors[c]
                if r < acc:
                    code = c
                    break
        plan: list[tuple[float, str, int | None]] = []
        if via_service:
            plan.append((now, "queued", None))
        if validity < s.sending_after_s or (code is not None and code in FAILED_CODES):
            due = now + min(s.sending_after_s, float(validity))
            plan.append((due, "failed", code if code is not None else 30036))
            return plan
        plan.append((now + s.sending_after_s, "sending", None))
        plan.append((now + s.sent_after_s, "sent", None))
        if code is None:
            plan.append((now + s.final_after_s, "delivered", None))
        else:
            plan.append((now + s.final_after_s, "undelivered", code))
        return plan

    def get(self, sid: str) -> dict[str, Any]:
        with self._lock:
            msg = self._messages.get(sid)
            if msg is None:
                raise _not_found(self.config.account_sid, sid)
            return msg.to_json(self.config.account_sid)

    def update(self, sid: str, form: Mapping[str, str]) -> dict[str, Any]:
        """POST .../Messages/{Sid}.json: ``Status=canceled`` or ``Body=""`` (redact)."""
        cbs: list[Callback] = []
        with self._lock:
            msg = self._messages.get(sid)
            if msg is None:
                raise _not_found(self.config.account_sid, sid)
            status = form.get("Status")
            if status is not None:
                if status != "canceled":
                    raise ApiError(400, 20001, "Status may only be set to 'canceled'.")
                if msg.status not in _CANCELABLE:
                    raise ApiError(
                        400, 30409, f"Message {sid} cannot be canceled in status {msg.status}."
                    )
                msg.status = "canceled"
                msg.updated = self.clock.time()
                msg.step = len(msg.plan) + 1
                cb = self._status_callback(msg)
                if cb is not None:
                    cbs.append(cb)
            if "Body" in form:
                if form["Body"] != "":
                    raise ApiError(400, 20001, "Body may only be set to an empty string (redact).")
                msg.body = ""
            doc = msg.to_json(self.config.account_sid)
        self._deliver(cbs)
        return doc

    def delete(self, sid: str) -> None:
        with self._lock:
            msg = self._messages.get(sid)
            if msg is None:
                raise _not_found(self.config.account_sid, sid)
            if msg.status not in _FINAL:
                raise ApiError(400, 20009, "Cannot delete a message that is still being sent.")
            del self._messages[sid]
            lst = self._by_to.get(msg.to)
            if lst and sid in lst:
                lst.remove(sid)

    def list(self, query: Mapping[str, str], path: str) -> dict[str, Any]:
        """ListMessage: filters To, From, DateSent, DateSent<, DateSent>; newest first; paging
        with PageSize, Page and PageToken (``PA`` + the last SID of the previous page)."""
        try:
            size = int(query.get("PageSize", "50"))
            page = int(query.get("Page", "0"))
        except ValueError as e:
            raise ApiError(400, 20001, "PageSize and Page must be integers.") from e
        if not 1 <= size <= 1000 or page < 0:
            raise ApiError(400, 20001, "PageSize must be between 1 and 1000.")
        filters: list[tuple[str, date | datetime, bool]] = []
        for key, op in (("DateSent", "="), ("DateSent<", "<"), ("DateSent>", ">")):
            if query.get(key):
                try:
                    value, is_date = wire.parse_date_filter(query[key])
                except (ValueError, TypeError) as e:
                    raise ApiError(400, 20001, f"Invalid {key} value.") from e
                filters.append((op, value, is_date))
        to = query.get("To")
        frm = query.get("From")
        token = query.get("PageToken")
        account = self.config.account_sid
        with self._lock:
            if to:
                candidates = [
                    self._messages[s] for s in self._by_to.get(to, ()) if s in self._messages
                ]
            else:
                candidates = [self._messages[s] for s in self._order if s in self._messages]
            cursor = None
            if token and token.startswith("PA") and token[2:] in self._index:
                cursor = self._index[token[2:]]
            out: list[dict[str, Any]] = []
            more = False
            for msg in reversed(candidates):
                if cursor is not None and self._index[msg.sid] >= cursor:
                    continue
                if frm and msg.from_ != frm:
                    continue
                if filters and not _date_ok(msg.created, filters):
                    continue
                if len(out) == size:
                    more = True
                    break
                out.append(msg.to_json(account))
        base = {k: v for k, v in query.items() if k not in ("Page", "PageToken", "PageSize")}

        def uri(p: int, tok: str | None) -> str:
            q = dict(base)
            q["PageSize"] = str(size)
            q["Page"] = str(p)
            if tok:
                q["PageToken"] = tok
            return path + "?" + urlencode(q)

        start = page * size
        return {
            "messages": out,
            "end": start + max(len(out) - 1, 0),
            "first_page_uri": uri(0, None),
            "next_page_uri": uri(page + 1, "PA" + out[-1]["sid"]) if more and out else None,
            "page": page,
            "page_size": size,
            "previous_page_uri": uri(page - 1, None) if page > 0 else None,
            "start": start,
            "uri": uri(page, token),
        }

    # -- status schedule ------------------------------------------------------------------------

    def tick(self) -> int:
        """Apply every status change due at the clock's time; post their callbacks.  Returns the
        number of changes applied."""
        now = self.clock.time()
        applied = 0
        cbs: list[Callback] = []
        with self._lock:
            heap = self._heap
            while heap and heap[0][0] <= now:
                _, _, sid, step = heapq.heappop(heap)
                msg = self._messages.get(sid)
                if msg is None or msg.step != step or step >= len(msg.plan):
                    continue
                due, status, code = msg.plan[step]
                if status == "sending" and now - msg.created > msg.validity_period:
                    status, code = "failed", 30036
                    msg.plan = msg.plan[: step + 1]
                msg.status = status
                msg.error_code = code
                msg.updated = due
                msg.step = step + 1
                applied += 1
                cnt = self.stats.counts
                cnt[status] = cnt.get(status, 0) + 1
                if msg.step < len(msg.plan) and status not in _FINAL:
                    self._seq += 1
                    heapq.heappush(heap, (msg.plan[msg.step][0], self._seq, sid, msg.step))
                cb = self._status_callback(msg)
                if cb is not None:
                    cbs.append(cb)
        self._deliver(cbs)
        return applied

    def advance(self, seconds: float) -> int:
        """FakeClock only: move time forward and tick."""
        adv = getattr(self.clock, "advance", None)
        if adv is None:
            raise TypeError("advance() needs a clock with advance() (FakeClock)")
        adv(seconds)
        return self.tick()

    def pending(self) -> int:
        """Status changes still scheduled."""
        with self._lock:
            return len(self._heap)

    def _status_callback(self, msg: Message) -> Callback | None:
        """Build the signed callback for ``msg``'s current status (under the lock)."""
        if not msg.status_callback:
            return None
        if (
            self.config.faults.drop_callbacks
            and self._rng.random() < self.config.faults.drop_callbacks
        ):
            self.stats.callbacks_dropped += 1
            return None
        cfg = self.config
        params = {
            "MessageSid": msg.sid,
            "SmsSid": msg.sid,
            "AccountSid": cfg.account_sid,
            "From": msg.from_ or "",
            "To": msg.to,
            "MessageStatus": msg.status,
            "SmsStatus": msg.status,
            "ApiVersion": wire.API_VERSION,
        }
        if msg.messaging_service_sid:
            params["MessagingServiceSid"] = msg.messaging_service_sid
        if msg.error_code is not None:
            params["ErrorCode"] = str(msg.error_code)
        if msg.status in ("delivered", "undelivered"):
            params["RawDlrDoneDate"] = wire.raw_dlr_done_date(msg.updated)
        self.stats.callbacks += 1
        return signed_callback(cfg.auth_token, msg.status_callback, params)

    def _deliver(self, cbs: builtins.list[Callback]) -> None:
        for cb in cbs:
            try:
                self.callbacks.send(cb)
            except Exception:  # noqa: BLE001 - a sender must never take the carrier down
                log.warning("callback sender failed", exc_info=True)

    # -- inbound --------------------------------------------------------------------------------

    def inbound(
        self, from_: str, body: str, *, to: str | None = None, url: str | None = None
    ) -> dict[str, str]:
        """Post a signed inbound-message webhook (as Twilio would) through the callback sender."""
        from dispatcher.sandbox.inbound import inbound_params

        cfg = self.config
        to = to or (cfg.senders[0] if cfg.senders else MAGIC_FROM_OK)
        mg = next((m for m, n in cfg.service_senders.items() if n == to), None)
        params = inbound_params(cfg.account_sid, from_, to, body, messaging_service_sid=mg)
        target = url or cfg.inbound_url
        with self._lock:
            self.stats.inbound += 1
            self.inbound_log.append(dict(params))
        log.info("inbound from %s to %s", mask_phone(from_), target)
        self._deliver([signed_callback(cfg.auth_token, target, params)])
        return params

    # -- records --------------------------------------------------------------------------------

    def records(self) -> builtins.list[dict[str, Any]]:
        """Every accepted message in acceptance order (with receive time, clock seconds)."""
        with self._lock:
            return [self._messages[s].record() for s in self._order if s in self._messages]

    def message_count(self) -> int:
        with self._lock:
            return len(self._messages)

    # -- campaigns ------------------------------------------------------------------------------

    def campaigns(self, service_sid: str) -> builtins.list[dict[str, Any]]:
        return [c for c in self.config.campaigns if c.get("messaging_service_sid") == service_sid]

    def campaign(self, service_sid: str, sid: str) -> dict[str, Any]:
        for c in self.campaigns(service_sid):
            if c.get("sid") == sid:
                return c
        raise ApiError(
            404,
            20404,
            f"The requested resource /v1/Services/{service_sid}/Compliance/Usa2p/{sid} "
            "was not found",
        )

    # -- ticker ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Tick in real time from a daemon thread (server and embedded mode)."""
        if self._ticker is not None and self._ticker.is_alive():
            return
        self._stop.clear()
        self._ticker = threading.Thread(target=self._run_ticker, name="sandbox-ticker", daemon=True)
        self._ticker.start()

    def _run_ticker(self) -> None:
        while not self._stop.wait(self.config.tick_interval_s):
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - keep ticking
                log.exception("sandbox tick failed")

    def stop(self) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(timeout=5)
            self._ticker = None


def _not_found(account_sid: str, sid: str) -> ApiError:
    return ApiError(
        404,
        20404,
        f"The requested resource /2010-04-01/Accounts/{account_sid}/Messages/{sid}.json "
        "was not found",
    )


def _date_ok(ts: float, filters: list[tuple[str, date | datetime, bool]]) -> bool:
    dt = datetime.fromtimestamp(ts, UTC)
    for op, value, is_date in filters:
        left: date | datetime = dt.date() if is_date else dt
        if op == "=" and not (dt.date() == (value if is_date else value.date())):  # type: ignore[union-attr]
            return False
        if op == "<" and not left <= value:
            return False
        if op == ">" and not left >= value:
            return False
    return True
