"""Outcome classification (pure) and every outcome class through the sandbox's faults."""

from __future__ import annotations

import socket
from datetime import timedelta

import pytest
import requests
from urllib3.exceptions import MaxRetryError, NewConnectionError, ProtocolError

from dispatcher.errors import (
    AmbiguousSendError,
    GatewayError,
    InputError,
    RejectedSendError,
    RetryableSendError,
)
from dispatcher.gateway import TwilioGateway, classify_code, classify_transport
from dispatcher.gateway.outcomes import CODE_RULES, Outcome, error
from dispatcher.templates import body_hash
from tests.unit.gateway.conftest import FROM, Env


@pytest.mark.parametrize(
    ("code", "status", "outcome"),
    [
        (21211, 400, "rejected"),
        (21610, 400, "rejected"),
        (21612, 400, "rejected"),
        (21614, 400, "rejected"),
        (21408, 400, "rejected"),
        (21617, 400, "rejected"),
        (30004, None, "rejected"),
        (30005, None, "rejected"),
        (30006, None, "rejected"),
        (30007, None, "rejected"),
        (20429, 429, "retryable"),
        (None, 429, "retryable"),
        (20500, 500, "retryable"),
        (None, 503, "retryable"),
        (21611, 400, "retryable"),
        (20003, 401, "failed"),
        (21606, 400, "failed"),
        (99999, 400, "failed"),
        (None, 400, "failed"),
    ],
)
def test_classify_code(code: int | None, status: int | None, outcome: str) -> None:
    assert classify_code(code, status) == outcome


def test_overrides_win() -> None:
    assert classify_code(30007, None, {30007: "retryable"}) == "retryable"


def test_every_rule_is_a_known_outcome() -> None:
    assert {r.outcome for r in CODE_RULES.values()} <= {"rejected", "retryable", "failed"}


@pytest.mark.parametrize(
    ("outcome", "cls"),
    [
        ("rejected", RejectedSendError),
        ("retryable", RetryableSendError),
        ("ambiguous", AmbiguousSendError),
        ("failed", GatewayError),
    ],
)
def test_each_failed_outcome_raises_its_own_class(outcome: str, cls: type) -> None:
    e = error(Outcome(outcome), "boom", code=1, status=2)
    assert type(e) is cls and isinstance(e, GatewayError) and (e.code, e.status) == (1, 2)
    with pytest.raises(ValueError):
        error(Outcome.SENT, "not an error")


def test_classify_transport() -> None:
    refused = requests.exceptions.ConnectionError(
        MaxRetryError(None, "/", NewConnectionError(None, "refused"))  # type: ignore[arg-type]
    )
    reset = requests.exceptions.ConnectionError(ProtocolError("Connection aborted.", OSError()))
    assert classify_transport(refused) == "retryable"
    assert classify_transport(requests.exceptions.ConnectTimeout()) == "retryable"
    assert classify_transport(requests.exceptions.ReadTimeout()) == "ambiguous"
    assert classify_transport(reset) == "ambiguous"
    assert classify_transport(requests.exceptions.ChunkedEncodingError()) == "ambiguous"


def test_outcome_sent(env: Env) -> None:
    r = env.gateway.send("+14155550100", "hi", from_=FROM)
    assert r.sid.startswith("SM")


def test_outcome_rejected_masks_phone(env: Env) -> None:
    with pytest.raises(RejectedSendError) as ei:
        env.gateway.send("+15005550001", "hi", from_=FROM)
    e = ei.value
    assert (type(e), e.code, e.status) == (RejectedSendError, 21211, 400)
    assert "+15005550001" not in str(e)


@pytest.mark.parametrize(
    ("fault", "status", "code"), [("rate_429", 429, 20429), ("rate_500", 500, 20500)]
)
def test_outcome_retryable_from_faults(env: Env, fault: str, status: int, code: int) -> None:
    env.sandbox.set_faults({fault: 1.0})
    with pytest.raises(RetryableSendError) as ei:
        env.gateway.send("+14155550100", "hi", from_=FROM)
    assert (ei.value.status, ei.value.code) == (status, code)
    assert env.sandbox.records() == []  # never accepted
    env.check_contract()


def test_outcome_retryable_connection_refused() -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    gw = TwilioGateway("AC" + "0" * 32, "tok", f"http://127.0.0.1:{port}", timeout=2)
    try:
        with pytest.raises(RetryableSendError):
            gw.send("+14155550100", "hi", from_=FROM)
    finally:
        gw.close()


@pytest.mark.parametrize("mode", ["delay", "drop"])
def test_outcome_ambiguous_resolved_by_find_sent(env: Env, mode: str) -> None:
    env.sandbox.set_faults(
        {"timeout_after_accept": 1.0, "timeout_mode": mode, "timeout_delay_s": 30}
    )
    env.gateway.client.http_client.timeout = 0.3
    since = env.clock.now()
    body = "Acme: contract renewal. Reply STOP to opt out."
    with pytest.raises(AmbiguousSendError):
        env.gateway.send("+14155550100", body, from_=FROM)
    env.sandbox.set_faults({"timeout_after_accept": 0.0})
    env.gateway.client.http_client.timeout = 5
    found = env.gateway.find_sent("+14155550100", FROM, since, body_hash(body))
    recs = env.sandbox.records()
    assert len(recs) == 1 and found is not None and found.sid == recs[0]["sid"]
    assert env.gateway.find_sent("+14155550100", FROM, since, body_hash("other")) is None
    assert (
        env.gateway.find_sent("+14155550100", FROM, since + timedelta(days=2), body_hash(body))
        is None
    )


def test_slow_responses_still_succeed(env: Env) -> None:
    env.sandbox.set_faults({"slow_fraction": 1.0, "slow_seconds": 0.05})
    assert env.gateway.send("+14155550100", "hi", from_=FROM).status == "queued"


def test_send_needs_a_sender(env: Env) -> None:
    with pytest.raises(InputError):
        env.gateway.send("+14155550100", "hi")


def test_proxy_from_the_environment_is_read_once_at_construction(monkeypatch):
    """requests would re-read os.environ on every send; the gateway reads it once, and a proxy
    set then is still the one used (an absolute-URI request line reaches it)."""
    import threading

    seen: list[bytes] = []
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]

    def proxy() -> None:
        conn, _ = srv.accept()
        with conn:
            seen.append(conn.recv(65536).split(b"\r\n", 1)[0])
            conn.sendall(
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                b"Connection: close\r\n\r\n"
            )

    t = threading.Thread(target=proxy, daemon=True)
    t.start()
    for name in ("http_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{port}")
    gw = TwilioGateway("AC" + "0" * 32, "token", "http://sandbox.invalid:8765", timeout=5)
    monkeypatch.delenv("HTTP_PROXY")  # read once: a later change does not matter
    with pytest.raises(RetryableSendError):
        gw.send("+14155550100", "hi", from_=FROM)
    t.join(10)
    srv.close()
    assert seen and seen[0].startswith(b"POST http://sandbox.invalid:8765/2010-04-01/Accounts/")
