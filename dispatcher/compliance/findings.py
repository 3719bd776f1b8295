"""Lint findings: one rule broken (or worth a look) in a message body or a registration field."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Literal

ERROR: Literal["error"] = "error"
WARNING: Literal["warning"] = "warning"

Severity = Literal["error", "warning"]


@dataclass(frozen=True, slots=True)
class Finding:
    """``code``: stable rule id; ``field``: UsAppToPerson field name or ``"body"``."""

    code: str
    field: str
    severity: Severity
    message: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def has_errors(findings: Iterable[Finding]) -> bool:
    return any(f.severity == ERROR for f in findings)


def findings_to_dict(findings: Iterable[Finding]) -> dict[str, list[dict[str, str]]]:
    """The ``--json`` document of the lint commands: ``{"findings": [...]}``."""
    return {"findings": [f.to_dict() for f in findings]}
