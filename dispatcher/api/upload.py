"""Streaming NDJSON upload of a run's recipients (``POST /v1/runs:upload``).

Body (``Content-Type: application/x-ndjson``)::

    {"campaign": "QE...", "template": "Hi [name], ...", "send_at": null}    <- line 1: RunSpec
    {"phone": "+14155550100", "variables": {"name": "Ann"}}                <- one per recipient
    ...

The body is read chunk by chunk (``request.stream()``); each recipient line is checked (JSON
object, phone normalised to E.164, variables flat with [field] names, no duplicate) and the good
ones are appended, normalised, to a temporary spool file.  Rejected lines go to a report (line
number, reason, detail) as the CLI import does; they do not fail the upload.  Memory holds one
chunk and the first :data:`MAX_LISTED_REJECTS` rejects — never the body; the phones seen (for
duplicates) are in a temporary SQLite table keyed by phone (``dedupe.SeenPhones``), so memory
stays flat for any size.  The spool is then staged into the outbox by
:func:`dispatcher.launch.submit_run` (kind ``list``) in batches, inside the request's one
transaction, and deleted.

Idempotency: the run's fingerprint covers the spec and the SHA-256 of the accepted recipients, so
re-sending the same upload with the same key returns the same run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

from dispatcher.dedupe import SeenPhones
from dispatcher.errors import InputError
from dispatcher.phones import try_normalize
from dispatcher.runs import LaunchRequest

MAX_LINE = 64 * 1024
MAX_ROWS = 1_000_000
MAX_LISTED_REJECTS = 1000
BATCH = 2000
DRY_RUN_SAMPLE = 10_000  # the dry run of a larger upload covers its first recipients
_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]{0,63}$")


class UploadTooLarge(InputError):
    """More recipient lines than :data:`MAX_ROWS` (HTTP 413)."""


@dataclass
class Report:
    rows: int = 0
    accepted: int = 0
    rejected: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    rejects: list[dict[str, Any]] = field(default_factory=list)
    rejects_truncated: bool = False
    sha256: str = ""

    def reject(self, line: int, reason: str, detail: str) -> None:
        self.rejected += 1
        self.reasons[reason] = self.reasons.get(reason, 0) + 1
        if len(self.rejects) < MAX_LISTED_REJECTS:
            self.rejects.append({"line": line, "reason": reason, "detail": detail[:300]})
        else:
            self.rejects_truncated = True

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "reasons": self.reasons,
            "rejects": self.rejects,
            "rejects_truncated": self.rejects_truncated,
            "sha256": self.sha256,
        }


class SpooledRecipients:
    """The accepted recipients on disk: re-iterable ({"phone", "variables"} dicts), sized."""

    def __init__(self, path: str, count: int) -> None:
        self.path = path
        self.count = count

    def __iter__(self) -> Iterator[dict[str, Any]]:
        with open(self.path, encoding="utf-8") as fh:
            for line in fh:
                yield json.loads(line)

    def __len__(self) -> int:
        return self.count

    def __bool__(self) -> bool:
        return True  # "no recipients" is an empty file, not a missing list

    def discard(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


class UploadRequest(LaunchRequest):
    """A LaunchRequest whose recipients live in a spool file; fingerprinted by their digest."""

    def fingerprint(self) -> str:
        doc = {
            "campaign": self.campaign,
            "template": self.template,
            "audience": self.audience,
            "send_at": self.send_at.isoformat() if self.send_at else None,
            "recipients": "spool",
            "options": self.options,
        }
        return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


async def lines(chunks: AsyncIterator[bytes]) -> AsyncIterator[tuple[int, bytes | None]]:
    """(line number, bytes) per line of a chunked body; ``None`` for a line over MAX_LINE."""
    buf = b""
    n = 0
    skipping = False  # inside a line already known to be too long
    async for chunk in chunks:
        if skipping:
            i = chunk.find(b"\n")
            if i < 0:
                continue
            n += 1
            yield n, None
            skipping = False
            chunk = chunk[i + 1 :]
        parts = (buf + chunk).split(b"\n")
        buf = parts.pop()
        for part in parts:
            n += 1
            yield n, (part if len(part) <= MAX_LINE else None)
        if len(buf) > MAX_LINE:
            skipping, buf = True, b""
    if skipping or buf:
        n += 1
        yield n, (None if skipping else buf)


def _check_row(raw: bytes, seen: SeenPhones) -> tuple[str, dict[str, Any]]:
    """(e164, variables) or raises _Reject."""
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise _Reject("malformed_json", f"not JSON: {e}") from None
    if not isinstance(doc, dict):
        raise _Reject("not_an_object", "a recipient line must be a JSON object")
    extra = set(doc) - {"phone", "variables"}
    if extra:
        raise _Reject("unknown_field", f"unknown field {sorted(extra)[0]!r}")
    phone = doc.get("phone")
    if not isinstance(phone, str):
        raise _Reject("invalid_phone", "phone must be a string")
    e164, why = try_normalize(phone)
    if e164 is None:
        raise _Reject("invalid_phone", why or "invalid phone number")
    variables = doc.get("variables") or {}
    if not isinstance(variables, dict):
        raise _Reject("bad_variables", "variables must be an object")
    for k, v in variables.items():
        if not _FIELD.match(k):
            raise _Reject("bad_variables", f"variable name {k[:40]!r} is not a [field] name")
        if not (v is None or isinstance(v, str | int | float | bool)):
            raise _Reject("bad_variables", f"variable {k!r} must be a string, number or boolean")
        if isinstance(v, str) and ("\x00" in v or len(v) > 2000):
            raise _Reject("bad_variables", f"variable {k!r} is too long or contains NUL")
    if not seen.add(e164):
        raise _Reject("duplicate", f"phone {e164[:-4]}**** appears earlier in the upload")
    return e164, variables


class _Reject(Exception):
    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code


async def spool(
    chunks: AsyncIterator[bytes], *, directory: str | None = None
) -> tuple[bytes, SpooledRecipients, Report]:
    """Read an NDJSON upload: (spec line, spooled accepted recipients, report)."""
    report = Report()
    digest = hashlib.sha256()
    spec: bytes | None = None
    fd, path = tempfile.mkstemp(prefix="dispatcher-upload-", suffix=".ndjson", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out, SeenPhones(directory) as seen:
            async for n, raw in lines(chunks):
                if raw is not None and not raw.strip():
                    continue
                if spec is None:
                    if raw is None:
                        raise InputError(
                            f"line {n}: the run spec is longer than {MAX_LINE} bytes", field="spec"
                        )
                    spec = raw
                    continue
                report.rows += 1
                if report.rows > MAX_ROWS:
                    raise UploadTooLarge(
                        f"more than {MAX_ROWS} recipients in one upload; "
                        "split it into several runs",
                        field="recipients",
                    )
                if raw is None:
                    report.reject(n, "line_too_long", f"line is longer than {MAX_LINE} bytes")
                    continue
                try:
                    e164, variables = _check_row(raw, seen)
                except _Reject as r:
                    report.reject(n, r.code, str(r))
                    continue
                line = json.dumps(
                    {"phone": e164, "variables": variables},
                    separators=(",", ":"),
                    sort_keys=True,
                    ensure_ascii=False,
                )
                out.write(line + "\n")
                digest.update(line.encode() + b"\n")
                report.accepted += 1
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        raise
    if spec is None:
        os.unlink(path)
        raise InputError("the upload is empty: line 1 must be the run spec", field="spec")
    report.sha256 = digest.hexdigest()
    return spec, SpooledRecipients(path, report.accepted), report
