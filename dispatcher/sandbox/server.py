"""Run the sandbox carrier on uvicorn: in the foreground (CLI) or in a background thread."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from types import TracebackType
from typing import Any

import uvicorn
from starlette.applications import Starlette
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from dispatcher.sandbox.app import create_app
from dispatcher.sandbox.callbacks import HttpCallbackSender
from dispatcher.sandbox.carrier import Sandbox
from dispatcher.sandbox.config import SandboxConfig


def server_app(config: SandboxConfig) -> Starlette:
    """Server-mode app: HTTP callbacks, real-time ticker run by the lifespan."""
    sandbox = Sandbox(config, callbacks=HttpCallbackSender())
    return create_app(sandbox=sandbox, ticker=True)


class _OneWrite:
    """A transport proxy that sends the writes of one event-loop pass in one ``send``.

    uvicorn writes a response's status line and headers, then its body: two system calls, two
    TCP segments, and the client wakes up twice.  The pass's writes are joined and sent when
    it ends (``call_soon``), or at ``close()``; the bytes and their order are unchanged."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(data)

    def _flush(self) -> None:
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            self._transport.write(data)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class _OneWriteProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, each response sent in one write (:class:`_OneWrite`)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_OneWrite(transport, self.loop))  # type: ignore[arg-type]


def _uvicorn_config(app: Starlette, log_level: str) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        http=_OneWriteProtocol,
        log_level=log_level,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=1,
        server_header=False,
        date_header=False,
    )


def serve(config: SandboxConfig, host: str, port: int, *, log_level: str = "warning") -> None:
    """Blocking: serve until interrupted."""
    app = server_app(config)
    sock = tcp_listener(host, port)
    try:
        uvicorn.Server(_uvicorn_config(app, log_level)).run(sockets=[sock])
    finally:
        sock.close()
        app.state.sandbox.callbacks.close()


def tcp_listener(host: str, port: int) -> socket.socket:
    """A bound TCP socket whose accepted connections get TCP_NODELAY.

    proto=IPPROTO_TCP matters: asyncio only sets TCP_NODELAY on accepted sockets whose proto is
    TCP; without it Nagle + delayed ACK add ~40 ms to every answer.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


class BackgroundServer:
    """uvicorn on an ephemeral loopback port in a daemon thread.

    ``with BackgroundServer(app) as srv: srv.url`` -- ready (or raises) within ``ready_timeout``.
    """

    def __init__(
        self,
        app: Starlette,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        ready_timeout: float = 10.0,
        log_level: str = "warning",
    ) -> None:
        self.app = app
        self._sock = tcp_listener(host, port)
        self.host, self.port = self._sock.getsockname()[:2]
        self.url = f"http://{self.host}:{self.port}"
        self._server = uvicorn.Server(_uvicorn_config(app, log_level))
        self._thread = threading.Thread(target=self._run, name="sandbox-uvicorn", daemon=True)
        self._ready_timeout = ready_timeout
        self._error: BaseException | None = None

    def _run(self) -> None:
        try:
            self._server.run(sockets=[self._sock])
        except BaseException as e:  # noqa: BLE001 - reported by start()
            self._error = e

    def start(self) -> BackgroundServer:
        self._thread.start()
        deadline = time.monotonic() + self._ready_timeout
        while not self._server.started:
            if self._error is not None or not self._thread.is_alive():
                raise RuntimeError(f"sandbox server failed to start: {self._error!r}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("sandbox server not ready before the deadline")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
