"""Time and peak RSS of an NDJSON upload through POST /v1/runs:upload (in process, SQLite).

    .venv/bin/python bench/api_upload.py [N]        # default 100000

Prints the upload's seconds, rows/s and RSS growth, against a ceiling measured in the same run:
the time to merely read and JSON-parse the same NDJSON body (the floor any upload pays).
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dispatcher import apikeys, registry  # noqa: E402
from dispatcher.api import create_api_app  # noqa: E402
from dispatcher.clock import FakeClock  # noqa: E402
from dispatcher.runtime import Runtime  # noqa: E402
from dispatcher.settings import Settings  # noqa: E402
from dispatcher.store import Database  # noqa: E402

SEED = Path(__file__).resolve().parents[1] / "dispatcher" / "data" / "usa2p_seed004.json"


def lines(campaign: str, n: int):
    yield (
        json.dumps({"campaign": campaign, "template": "Acme: hi [name]. STOP to opt out"}) + "\n"
    ).encode()
    buf = []
    for i in range(n):
        buf.append(
            json.dumps(
                {
                    "phone": f"+1415{200 + i // 10000:03d}{i % 10000:04d}",
                    "variables": {"name": f"n{i}"},
                }
            )
        )
        if len(buf) == 500:
            yield ("\n".join(buf) + "\n").encode()
            buf = []
    if buf:
        yield ("\n".join(buf) + "\n").encode()


async def upload(app, token: str, campaign: str, n: int) -> httpx.Response:
    async def body():
        for chunk in lines(campaign, n):
            yield chunk

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench", timeout=600) as c:
        return await c.post(
            "/v1/runs:upload",
            content=body(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/x-ndjson"},
        )


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    with tempfile.TemporaryDirectory() as d:
        db = Database(f"sqlite:///{d}/bench.db")
        db.upgrade()
        with db.session() as s:
            brand = registry.add_brand(s, name="Acme Corporation")
            campaign, _ = registry.import_campaign(s, json.loads(SEED.read_text()), brand=brand)
            sid = campaign.sid
            token, _ = apikeys.create_key(s, "bench", "runs:write")
        rt = Runtime(Settings(database_url=db.url), clock=FakeClock())
        rt.__dict__["db"] = db
        app = create_api_app(rt)

        t0 = time.perf_counter()
        parsed = sum(1 for chunk in lines(sid, n) for ln in chunk.splitlines() if json.loads(ln))
        floor = time.perf_counter() - t0

        rss0 = psutil.Process().memory_info().rss
        t0 = time.perf_counter()
        r = asyncio.run(upload(app, token, sid, n))
        seconds = time.perf_counter() - t0
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        db.dispose()
    r.raise_for_status()
    doc = r.json()
    assert doc["run"]["total"] == n and parsed == n + 1
    print(f"recipients         {n}")
    print(f"upload             {seconds:.1f} s ({n / seconds:.0f} rows/s)")
    print(f"parse-only floor   {floor:.2f} s -> upload/floor ratio {seconds / floor:.1f}x")
    print(
        f"RSS before upload  {rss0 / 2**20:.0f} MiB; peak {peak / 2**20:.0f} MiB "
        f"(+{(peak - rss0) / 2**20:.0f} MiB)"
    )
    print(f"body size          ~{n * 60 / 2**20:.0f} MiB (never held in memory)")


if __name__ == "__main__":
    main()
