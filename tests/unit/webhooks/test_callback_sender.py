"""The sandbox's HttpCallbackSender (keep-alive connections from urllib3's pool)
against a stdlib HTTP/1.1 server: what arrives is a signed Twilio form POST, connections are
reused, a connection the server closed is replaced, failures are counted and never raised."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

import pytest
import urllib3.connectionpool
from twilio.request_validator import RequestValidator

from dispatcher.models import OutboxMessage
from dispatcher.sandbox.callbacks import AsgiCallbackSender, HttpCallbackSender, signed_callback
from tests.procs import wait_for
from tests.unit.webhooks.conftest import BASE, build_world, make_client, status
from tests.unit.webhooks.conftest import TOKEN as HOOK_TOKEN

TOKEN = "sandbox-token-0123456789abcdef0123"


@dataclass
class Stub:
    """How the server answers: ``mode`` is one of length | chunked | close | http10 |
    drop_idle (answer, then close without saying so, like a keep-alive timeout) | error."""

    mode: str = "length"
    requests: list[dict[str, Any]] = field(default_factory=list)
    connections: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def _handler(stub: Stub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        wbufsize = -1  # one write per answer (no Nagle / delayed-ACK stalls)

        def setup(self) -> None:
            super().setup()
            with stub.lock:
                stub.connections += 1

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            body = self.rfile.read(int(self.headers["Content-Length"]))
            with stub.lock:
                stub.requests.append(
                    {"path": self.path, "headers": dict(self.headers), "body": body}
                )
            answer = b'<?xml version="1.0" encoding="UTF-8"?><Response/>'
            if stub.mode == "http10":
                self.protocol_version = "HTTP/1.0"
            self.send_response(500 if stub.mode == "error" else 200)
            self.send_header("Content-Type", "text/xml")
            if stub.mode == "chunked":
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for part in (answer[:10], answer[10:]):
                    self.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
                self.wfile.write(b"0\r\n\r\n")
                return
            if stub.mode == "close":
                self.send_header("Connection", "close")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)
            if stub.mode in ("drop_idle", "close", "http10"):
                self.close_connection = True

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def server() -> Iterator[tuple[Stub, str]]:
    stub = Stub()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(stub))
    httpd.daemon_threads = True
    t = threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True)
    t.start()
    try:
        yield stub, f"http://127.0.0.1:{httpd.server_address[1]}/twilio/status?tenant=a"
    finally:
        httpd.shutdown()
        httpd.server_close()
        t.join(10)


def params(n: int) -> dict[str, str]:
    sid = "SM" + f"{n:032x}"
    return {
        "MessageSid": sid,
        "SmsSid": sid,
        "AccountSid": "AC" + "0" * 32,
        "From": "",
        "To": "+14155551234",
        "MessageStatus": "delivered",
        "SmsStatus": "delivered",
        "ApiVersion": "2010-04-01",
        "Note": "a b&c=d é",
    }


def send(sender: HttpCallbackSender, url: str, ns: range) -> None:
    for n in ns:
        sender.send(signed_callback(TOKEN, url, params(n)))
    want = len(ns)
    wait_for(lambda: sender.stats.sent + sender.stats.failed >= want)


def test_a_signed_form_post_arrives(server):
    stub, url = server
    sender = HttpCallbackSender(workers=1)
    try:
        send(sender, url, range(1))
    finally:
        sender.close()
    assert (sender.stats.sent, sender.stats.failed) == (1, 0)
    [req] = stub.requests
    h = req["headers"]
    form = dict(parse_qsl(req["body"].decode("ascii"), keep_blank_values=True))
    assert req["path"] == "/twilio/status?tenant=a" and form == params(0)
    assert h["Content-Type"] == "application/x-www-form-urlencoded"
    assert h["User-Agent"] == "TwilioProxy/1.1" and h["I-Twilio-Idempotency-Token"]
    assert h["Host"] == url.split("/")[2]
    assert RequestValidator(TOKEN).validate(url, form, h["X-Twilio-Signature"])


@pytest.mark.parametrize("mode", ["length", "chunked"])
def test_one_connection_per_thread_is_kept_alive(server, mode):
    stub, url = server
    stub.mode = mode
    sender = HttpCallbackSender(workers=1)
    try:
        for k in range(3):  # one after the other: every request reuses the connection
            send(sender, url, range(10 * k, 10 * k + 10))
    finally:
        sender.close()
    assert (sender.stats.sent, sender.stats.failed) == (30, 0)
    assert stub.connections == 1 and len(stub.requests) == 30


@pytest.mark.parametrize("mode", ["close", "http10", "drop_idle"])
def test_a_connection_the_server_closes_is_replaced(server, mode):
    stub, url = server
    stub.mode = mode
    sender = HttpCallbackSender(workers=2)
    try:
        for n in range(8):
            send(sender, url, range(n, n + 1))
    finally:
        sender.close()
    assert (sender.stats.sent, sender.stats.failed) == (8, 0)
    assert len(stub.requests) == 8 and stub.connections == 8


def test_a_stale_reused_connection_is_retried_once_on_a_fresh_one(server, monkeypatch):
    stub, url = server
    sender = HttpCallbackSender(workers=1)
    try:
        assert sender.post(signed_callback(TOKEN, url, params(1))) == 200
        # miss the close before reuse: the request itself fails on the dead connection
        monkeypatch.setattr(urllib3.connectionpool, "is_connection_dropped", lambda conn: False)
        stub.mode = "drop_idle"
        assert sender.post(signed_callback(TOKEN, url, params(2))) == 200  # closes after
        assert sender.post(signed_callback(TOKEN, url, params(3))) == 200
    finally:
        sender.close()
    assert stub.connections == 2 and len(stub.requests) == 3


def test_an_answer_is_not_retried(server):
    stub, url = server
    stub.mode = "error"
    sender = HttpCallbackSender(workers=1)
    try:
        assert sender.post(signed_callback(TOKEN, url, params(1))) == 500
    finally:
        sender.close()
    assert len(stub.requests) == 1


def test_failures_are_counted_never_raised(server):
    stub, url = server
    stub.mode = "error"
    sender = HttpCallbackSender(workers=2, timeout=2)
    try:
        send(sender, url, range(3))
        sender.send(signed_callback(TOKEN, "http://127.0.0.1:1/refused", params(9)))
        sender.send(signed_callback(TOKEN, "ftp://nowhere/x", params(10)))
        wait_for(lambda: sender.stats.failed >= 5)
    finally:
        sender.close()
    assert (sender.stats.sent, sender.stats.failed) == (0, 5)


def test_header_injection_is_refused(server):
    stub, url = server
    sender = HttpCallbackSender(workers=1)
    cb = signed_callback(TOKEN, url, params(1))
    cb.headers["X-Evil"] = "a\r\nInjected: 1"
    try:
        with pytest.raises(ValueError):
            sender.post(cb)
    finally:
        sender.close()
    assert stub.requests == []


def test_embedded_asgi_sender_reaches_the_group_committed_route(sqlite_db, clock):
    world = build_world(sqlite_db)
    rows = [world.add_row("sent", sid="SM" + f"{n:032x}") for n in range(5)]
    app = make_client(sqlite_db, clock).app
    sender = AsgiCallbackSender(app)
    try:
        for row in rows:
            sender.send(
                signed_callback(
                    HOOK_TOKEN, BASE + "/twilio/status", status(row.provider_sid, "delivered")
                )
            )
    finally:
        sender.close()
    assert (sender.stats.sent, sender.stats.failed) == (5, 0)
    with sqlite_db.session() as s:
        assert {s.get(OutboxMessage, r.id).state for r in rows} == {"delivered"}
