"""Creates per second from the official twilio client: sandbox carrier vs a bare stdlib stub.

The stub (``http.server``, HTTP/1.1 keep-alive, one fixed 201 body) is the ceiling: the same client
cannot go faster against any server.  Both servers run in their own process.  Prints creates/s for
1 and 8 client threads and the ratio sandbox/stub (goal: >= 0.70).  Rounds alternate between the
two servers and the best rate of each is kept, so background load on a shared machine skews less.

    .venv/bin/python bench/gateway.py [--seconds 2] [--rounds 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ACCOUNT = "AC" + "0" * 31 + "1"
TOKEN = "sandbox-auth-token-0000000000000"
FIXED = json.dumps(
    {
        "body": "hi",
        "num_segments": "1",
        "direction": "outbound-api",
        "from": "+15005550006",
        "to": "+14155550100",
        "date_updated": "Thu, 24 Aug 2023 05:01:45 +0000",
        "price": None,
        "error_message": None,
        "uri": f"/2010-04-01/Accounts/{ACCOUNT}/Messages/SM{'a' * 32}.json",
        "account_sid": ACCOUNT,
        "num_media": "0",
        "status": "queued",
        "messaging_service_sid": None,
        "sid": "SM" + "a" * 32,
        "date_sent": "Thu, 24 Aug 2023 05:01:45 +0000",
        "date_created": "Thu, 24 Aug 2023 05:01:45 +0000",
        "error_code": None,
        "price_unit": "USD",
        "api_version": "2010-04-01",
        "subresource_uris": {"media": "/x/Media.json"},
    }
).encode()


RAW = (
    b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n"
    + f"Content-Length: {len(FIXED)}\r\n\r\n".encode()
    + FIXED
)


class StubHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.wfile.write(RAW)  # one write: no Nagle / delayed-ACK stall

    def log_message(self, *args: object) -> None:
        pass


def serve_stub(port: int) -> None:
    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer(("127.0.0.1", port), StubHandler).serve_forever()


def serve_sandbox(port: int) -> None:
    from dispatcher.sandbox.config import SandboxConfig
    from dispatcher.sandbox.server import serve

    serve(SandboxConfig(account_sid=ACCOUNT, auth_token=TOKEN), "127.0.0.1", port)


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start(kind: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, __file__, f"--serve-{kind}", str(port)])
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise SystemExit(f"{kind} server did not start") from None
            time.sleep(0.05)
    return proc, f"http://127.0.0.1:{port}"


def measure(url: str, threads: int, seconds: float) -> float:
    from dispatcher.gateway import TwilioGateway

    counts = [0] * threads
    errors: list[BaseException] = []
    stop = threading.Event()

    def worker(i: int) -> None:
        gw = TwilioGateway(ACCOUNT, TOKEN, url, timeout=10)
        try:
            gw.send("+14155550100", "warm up", from_="+15005550006")
            barrier.wait()
            n = 0
            while not stop.is_set():
                gw.send(
                    f"+1415555{i:02d}{n % 100:02d}",
                    "Acme: hello. STOP to opt out",
                    from_="+15005550006",
                )
                n += 1
            counts[i] = n
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)
            barrier.abort()
        finally:
            gw.close()

    barrier = threading.Barrier(threads + 1)
    ts = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for t in ts:
        t.join()
    elapsed = time.perf_counter() - t0
    if errors:
        raise SystemExit(f"benchmark failed: {errors[0]!r}")
    return sum(counts) / elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds; best of each kept")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--serve-stub", type=int)
    ap.add_argument("--serve-sandbox", type=int)
    args = ap.parse_args()
    if args.serve_stub:
        return serve_stub(args.serve_stub)
    if args.serve_sandbox:
        return serve_sandbox(args.serve_sandbox)

    # Both servers stay up; rounds alternate stub/sandbox so background load hits both alike.
    results: dict[str, dict[str, float]] = {"stub": {}, "sandbox": {}}
    servers = {kind: start(kind) for kind in ("stub", "sandbox")}
    try:
        for _ in range(args.rounds):
            for n in ("1", "8"):
                for kind, (_, url) in servers.items():
                    rate = measure(url, int(n), args.seconds)
                    results[kind][n] = max(results[kind].get(n, 0.0), rate)
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(timeout=10)
    ratios = {n: results["sandbox"][n] / results["stub"][n] for n in ("1", "8")}
    if args.json:
        print(json.dumps({"creates_per_s": results, "ratio": ratios, "goal": 0.70}))
        return
    print("creates/s from twilio.rest.Client (same client, same machine)")
    for n in ("1", "8"):
        print(
            f"  {n} thread(s): stub {results['stub'][n]:8.0f}/s"
            f"   sandbox {results['sandbox'][n]:8.0f}/s   ratio {ratios[n]:.2f} (goal >= 0.70)"
        )


if __name__ == "__main__":
    main()
