"""CSV files an operator hands in (contacts, revocations): rows with their line numbers, read
without loading the whole file, the cells every such file has (phone, times), and the rejects
file the operator fixes and feeds back.  What else a row means is the caller's."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Any
from zoneinfo import ZoneInfo

from dispatcher.errors import InputError, InvalidPhoneError
from dispatcher.phones import normalize_phone

Row = tuple[int, dict[str, str]]  # (line number in the file, cells by lower-case column name)


class RowReject(Exception):
    """A row that is written to the rejects file with ``code`` and the message as detail."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code


def default_rejects_path(path: Path) -> Path:
    """Where the rejects of ``path`` go unless the operator names a file."""
    return path.with_name(path.stem + ".rejects.csv")


def cell(raw: dict[str, str], *names: str) -> str:
    """The first non-blank of the named cells, stripped ("" when none)."""
    for n in names:
        v = raw.get(n)
        if v is not None and v.strip():
            return v.strip()
    return ""


def row_phone(raw: dict[str, str]) -> str:
    """The row's ``phone`` in E.164; RowReject for a row with more cells than the header or a
    number that is not valid."""
    if None in raw:  # csv.DictReader puts the extra cells under None
        raise RowReject("malformed_row", "row has more cells than the header")
    try:
        return normalize_phone(cell(raw, "phone"))
    except InvalidPhoneError as e:
        raise RowReject("invalid_phone", str(e)) from e


def parse_time(text: str, column: str, default_tz: ZoneInfo, now: datetime) -> datetime:
    """An ISO 8601 time in UTC (one without an offset is in ``default_tz``), not after
    ``now``; otherwise RowReject ``bad_date``."""
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as e:
        raise RowReject("bad_date", f"{column} {text!r} is not an ISO 8601 date") from e
    if when.tzinfo is None:
        when = when.replace(tzinfo=default_tz)
    when = when.astimezone(UTC)
    if when > now:
        raise RowReject("bad_date", f"{column} {text!r} is in the future")
    return when


class CsvRows:
    """``with CsvRows(path) as rows: for line, raw in rows: ...``.  The header is stripped and
    lower-cased; a file that cannot be opened or decoded, or lacks a ``required`` column, is an
    InputError naming the file (and the row, for a file that breaks half-way)."""

    def __init__(self, path: Path, *, required: tuple[str, ...] = ("phone",)) -> None:
        self.path = path
        try:
            self._fh: IO[str] = path.open(newline="", encoding="utf-8-sig")
        except OSError as e:
            raise InputError(f"cannot read {path}: {e.strerror}") from e
        self._reader = csv.DictReader(self._fh)
        try:
            self.header = [h.strip().lower() for h in (self._reader.fieldnames or [])]
        except (csv.Error, UnicodeDecodeError) as e:
            self._fh.close()
            raise InputError(f"{path}: not a readable CSV file ({e})") from e
        for name in required:
            if name not in self.header:
                self._fh.close()
                raise InputError(f"{path}: the header has no {name!r} column")
        self._reader.fieldnames = self.header

    def __iter__(self) -> Iterator[Row]:
        try:
            for raw in self._reader:
                yield self._reader.line_num, raw
        except (csv.Error, UnicodeDecodeError) as e:
            raise InputError(
                f"{self.path}: unreadable CSV near row {self._reader.line_num}: {e}"
            ) from e

    def batches(self, size: int) -> Iterator[list[Row]]:
        batch: list[Row] = []
        for row in self:
            batch.append(row)
            if len(batch) >= size:
                yield batch
                batch = []
        if batch:
            yield batch

    def __enter__(self) -> CsvRows:
        return self

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self._fh.close()


class Rejects:
    """Rejected rows, each with its row number, reason code and detail, then the original
    cells, so the file can be fixed and handed in again.  Written to ``path`` on the first
    reject; when there is none, a stale file from an earlier run is removed."""

    def __init__(self, path: Path, header: list[str]) -> None:
        self.path = path
        self.header = header
        self.reasons: dict[str, int] = {}
        self._fh: IO[str] | None = None
        self._writer: Any = None

    @property
    def count(self) -> int:
        return sum(self.reasons.values())

    def add(self, line: int, code: str, detail: str, raw: dict[str, str]) -> None:
        self.reasons[code] = self.reasons.get(code, 0) + 1
        if self._writer is None:
            self._fh = self.path.open("w", newline="", encoding="utf-8")
            self._writer = csv.writer(self._fh)
            self._writer.writerow(["row", "reason", "detail", *self.header])
        self._writer.writerow([line, code, detail, *[raw.get(h, "") or "" for h in self.header]])

    @property
    def written(self) -> str | None:
        """The rejects file's path, if any row was rejected."""
        return str(self.path) if self._writer is not None else None

    def __enter__(self) -> Rejects:
        return self

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        if self._fh is not None:
            self._fh.close()
        elif self.path.exists():
            self.path.unlink()  # from an earlier run of the same file
