"""Form POSTs over keep-alive HTTP/1.1 connections, one set per thread (the sandbox's callbacks).

A lean client on a plain socket: one ``sendall`` per request; the answer's status line and the
headers that frame the body (Content-Length, Transfer-Encoding: chunked, Connection) are read,
the body is drained and dropped.  About a fifth of an httpx client's CPU per request (half of
``http.client``'s, whose header parsing goes through ``email.parser``).

A connection is reused while it stays open.  An idle connection the server has closed (its
keep-alive timeout) is noticed before use; a request that fails on a reused connection before
any answer arrived is retried once on a fresh one (callbacks are idempotent).
"""

from __future__ import annotations

import select
import socket
import ssl
import threading
from functools import lru_cache
from typing import NamedTuple
from urllib.parse import urlencode, urlsplit

MAX_LINE = 65536
MAX_HEADERS = 100


class Closed(ConnectionError):
    """The server closed the connection before answering."""


class Target(NamedTuple):
    scheme: str
    host: str
    port: int
    path: str  # path and query
    host_header: str


@lru_cache(maxsize=64)
def target(url: str) -> Target:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    default = 443 if parts.scheme == "https" else 80
    port = parts.port or default
    host = parts.hostname
    shown = f"[{host}]" if ":" in host else host
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(parts.scheme, host, port, path, shown if port == default else f"{shown}:{port}")


class Answer(NamedTuple):
    status_code: int


class Connection:
    """One HTTP/1.1 connection (not thread-safe: one thread uses it)."""

    def __init__(self, t: Target, timeout: float) -> None:
        sock = socket.create_connection((t.host, t.port), timeout=timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if t.scheme == "https":
                sock = _ssl_context().wrap_socket(sock, server_hostname=t.host)
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        self.rfile = sock.makefile("rb")
        self.open = True

    def close(self) -> None:
        self.open = False
        self.rfile.close()
        self.sock.close()

    def idle_but_readable(self) -> bool:
        """An idle keep-alive socket with something to read has been closed by the server (or
        sent something unsolicited): either way it must not carry the next request."""
        if isinstance(self.sock, ssl.SSLSocket) and self.sock.pending():
            return True
        try:
            if hasattr(select, "poll"):  # no FD_SETSIZE limit
                poller = select.poll()
                poller.register(self.sock, select.POLLIN)
                return bool(poller.poll(0))
            return bool(select.select([self.sock], [], [], 0)[0])
        except (OSError, ValueError):
            return True

    def post(self, t: Target, body: bytes, headers: dict[str, str]) -> int:
        lines = [
            f"POST {t.path} HTTP/1.1",
            f"Host: {t.host_header}",
            f"Content-Length: {len(body)}",
        ]
        for k, v in headers.items():
            if k.lower() in _OWN:
                continue
            if "\r" in k or "\n" in k or "\r" in v or "\n" in v:
                raise ValueError(f"CR or LF inside request header {k!r}")
            lines.append(f"{k}: {v}")
        lines.append("\r\n")
        self.sock.sendall("\r\n".join(lines).encode("latin-1") + body)
        while True:
            status, close = self._read_head()
            if status >= 200:
                break  # 1xx (e.g. an unasked 100 Continue): read the next head
        if close:
            self.close()
        return status

    def _read_head(self) -> tuple[int, bool]:
        line = self.rfile.readline(MAX_LINE + 1)
        if not line:
            raise Closed("connection closed before the answer")
        parts = line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
            raise ConnectionError(f"malformed status line {line[:80]!r}")
        status = int(parts[1])
        close = parts[0] == b"HTTP/1.0"
        length: int | None = None
        chunked = False
        for _ in range(MAX_HEADERS + 1):
            h = self.rfile.readline(MAX_LINE + 1)
            if h in (b"\r\n", b"\n"):
                break
            if not h or len(h) > MAX_LINE:
                raise ConnectionError("truncated or oversized answer headers")
            name, _, value = h.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value.strip())
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                token = value.strip().lower()
                close = token == b"close" or (close and token != b"keep-alive")
        else:
            raise ConnectionError("too many answer headers")
        if status < 200 or status in (204, 304):
            return status, close
        if chunked:
            self._drain_chunked()
        elif length is not None:
            self._drain(length)
        else:  # delimited by the end of the connection
            while self.rfile.read(65536):
                pass
            close = True
        return status, close

    def _drain(self, n: int) -> None:
        while n > 0:
            got = self.rfile.read(min(n, 65536))
            if not got:
                raise Closed("connection closed inside the answer body")
            n -= len(got)

    def _drain_chunked(self) -> None:
        while True:
            line = self.rfile.readline(MAX_LINE + 1)
            if not line:
                raise Closed("connection closed inside a chunked body")
            size = int(line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                while self.rfile.readline(MAX_LINE + 1) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return
            self._drain(size + 2)  # the chunk and its CRLF


_OWN = frozenset({"host", "content-length", "connection", "transfer-encoding"})


@lru_cache(maxsize=1)
def _ssl_context() -> ssl.SSLContext:
    return ssl.create_default_context()


class KeepAliveClient:
    """``post_form(url, params, headers)`` from any thread; each thread keeps its own
    connection per (scheme, host, port).  ``close()`` closes every connection it opened."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._local = threading.local()
        self._lock = threading.Lock()
        self._all: set[Connection] = set()
        self.connects = 0  # connections opened (tests, benchmarks)

    def _conns(self) -> dict[tuple[str, str, int], Connection]:
        conns = getattr(self._local, "conns", None)
        if conns is None:
            conns = self._local.conns = {}
        return conns

    def _open(self, t: Target) -> Connection:
        conn = Connection(t, self.timeout)
        with self._lock:
            self._all.add(conn)
            self.connects += 1
        self._conns()[t[:3]] = conn
        return conn

    def _drop(self, t: Target) -> None:
        conn = self._conns().pop(t[:3], None)
        if conn is not None:
            conn.close()
            with self._lock:
                self._all.discard(conn)

    def post_form(self, url: str, params: dict[str, str], headers: dict[str, str]) -> Answer:
        t = target(url)
        body = urlencode(params).encode("ascii")
        conn = self._conns().get(t[:3])
        if conn is not None and (not conn.open or conn.idle_but_readable()):
            self._drop(t)
            conn = None
        if conn is not None:
            try:
                return Answer(conn.post(t, body, headers))
            except (Closed, ConnectionResetError, BrokenPipeError, ConnectionAbortedError):
                self._drop(t)  # closed under us before any answer: once more on a fresh one
            except BaseException:
                self._drop(t)
                raise
        conn = self._open(t)
        try:
            return Answer(conn.post(t, body, headers))
        except BaseException:
            self._drop(t)
            raise

    def close(self) -> None:
        with self._lock:
            conns, self._all = self._all, set()
        for conn in conns:
            conn.close()
