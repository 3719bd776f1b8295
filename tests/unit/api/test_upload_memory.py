"""An NDJSON upload's duplicate detection keeps memory flat (issue 22 item 7): the phones seen
are in a SQLite table keyed by phone (dispatcher.dedupe), not a Python set."""

from __future__ import annotations

import asyncio
import json
import tracemalloc
from collections.abc import AsyncIterator

from dispatcher import phones
from dispatcher.api import upload
from dispatcher.dedupe import SeenPhones
from dispatcher.errors import InvalidPhoneError


async def _body(n: int, dup_every: int = 1000) -> AsyncIterator[bytes]:
    yield b'{"campaign": "QE1", "template": "hi [name]"}\n'
    chunk: list[bytes] = []
    for i in range(n):
        j = i - 1 if i % dup_every == dup_every - 1 else i  # a duplicate now and then
        chunk.append(json.dumps({"phone": f"+1415{2000000 + j:07d}"}).encode() + b"\n")
        if len(chunk) == 500:
            yield b"".join(chunk)
            chunk = []
    yield b"".join(chunk)


def _peak(n: int, tmp_path) -> tuple[int, upload.Report]:  # noqa: ANN001
    tracemalloc.start()
    try:
        _spec, spooled, report = asyncio.run(upload.spool(_body(n), directory=str(tmp_path)))
        spooled.discard()
        return tracemalloc.get_traced_memory()[1], report
    finally:
        tracemalloc.stop()


def test_upload_memory_does_not_grow_with_the_number_of_lines(tmp_path, monkeypatch):
    # phones.normalize_phone's own cache (65 536 entries, bounded) fills over the first lines:
    # measured without it, what is left is what grows with the upload
    def uncached(raw: str) -> tuple[str | None, str | None]:
        try:
            return phones.normalize_phone.__wrapped__(raw), None
        except InvalidPhoneError as e:
            return None, str(e)

    monkeypatch.setattr(upload, "try_normalize", uncached)
    small, r_small = _peak(10_000, tmp_path)
    big, r_big = _peak(100_000, tmp_path)
    assert r_big.reasons == {"duplicate": 100} and r_big.accepted == 99_900
    assert r_small.reasons == {"duplicate": 10}
    # a set of 100 000 phones alone is ~10 MiB of Python objects
    assert big < small + 1_000_000, (small, big)
    assert big < 4_000_000, big


def test_seen_phones_says_new_once_and_cleans_up(tmp_path):
    with SeenPhones(str(tmp_path)) as seen:
        assert seen.add("+14155550100") and not seen.add("+14155550100")
        assert seen.add("+14155550101")
        path = seen.path
    assert not list(tmp_path.iterdir()) and path
