"""The checks every launch passes before anything is written (issue 18): pure, the time given.

One function, :func:`check_launch`, run by the one launch path (``dispatcher.launch.submit_run``)
for the CLI, the HTTP API and ``notify()``, and by the dry run, which reports the same findings.

Errors (the launch is refused; ``force`` never overrides them):

* ``template_looks_like_path`` — the template is one word that looks like a file name
  (``reminder.txt``, ``templates/reminder``): the CLI reads an existing file, so what arrives
  here is a name that was not found, not a message;
* ``unknown_field`` — a ``[field]`` that is neither a contact column (``name``, ``first_name``)
  nor an attribute / variable of anyone in the audience; the message names the closest known
  name (:func:`difflib.get_close_matches`);
* ``field_missing`` — a known field that no one in the audience has a value for;
* a message-lint error, by its finding code (``prohibited_content``, ``url_shortener``,
  ``undeclared_link``, ``campaign_drift``, ...) or ``message_too_long``: the template as it will
  be composed (brand name and opt-out language added), each ``[field]`` replaced by a neutral
  placeholder;
* ``send_at_in_past`` — a start time earlier than ``now`` minus :data:`SEND_AT_TOLERANCE`;
* ``no_sender`` — the campaign has neither a sender number nor a Messaging Service SID: no
  message could name a ``From`` (the gateway would refuse every send as an input error).

Warnings (a real launch stops on them unless ``force`` accepts them; the dry run lists them):

* ``field_missing`` — a field that some of the audience lack, with the count: their messages
  are suppressed ``template_variable_missing`` as before.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import PurePath
from typing import Any

from dispatcher.clock import as_utc
from dispatcher.errors import InputError, MessageTooLongError
from dispatcher.templates import CONTACT_FIELDS, Template, parse_template

#: A start time this far before "now" (when the request is handled) is taken as "now": an
#: operator typing ``--at 09:00`` at 09:02 or a client whose clock runs a little behind the
#: server's means "start now", and nothing is lost by starting at once.  Five minutes is the
#: clock skew Kerberos tolerates by default (MIT krb5 ``clockskew = 300``), the usual bound for
#: hosts that are meant to be in sync.  Anything earlier is a mistake (a wrong day or year).
SEND_AT_TOLERANCE = timedelta(minutes=5)
#: what a ``[field]`` becomes when the template is linted: short, plain, GSM-7, no link or digit
PLACEHOLDER = "x"
TEMPLATE_SUFFIXES = (".txt", ".tmpl", ".template")
_MAX_PATH = 255
_MAX_LISTED = 8


@dataclass(frozen=True, slots=True)
class Issue:
    """One finding of the launch checks.  ``rule`` is stable; ``field`` is the input at fault
    (``template`` or ``send_at``); ``count`` is how many recipients it concerns, when it does."""

    rule: str
    field: str
    message: str
    count: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        return f"{self.message} [{self.rule}]"


@dataclass(frozen=True, slots=True)
class FieldStats:
    """What the audience knows of the template's fields: ``total`` recipients, ``holders[f]`` of
    them with a value for ``f``, and ``known`` the field names anyone in the audience has
    (needed only when some field has no holder: it names the closest one)."""

    total: int
    holders: Mapping[str, int]
    known: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True, slots=True)
class Checked:
    errors: tuple[Issue, ...]
    warnings: tuple[Issue, ...]


class LaunchRefused(InputError):
    """The launch checks found errors.  ``str()`` is the operator's one line; ``issues`` the
    findings; ``rule`` / ``field`` those of the first."""

    def __init__(self, issues: Sequence[Issue], *, message: str | None = None) -> None:
        self.issues = tuple(issues)
        first = self.issues[0] if self.issues else Issue("launch_refused", "template", "")
        self.rule = first.rule
        super().__init__(message or self._message(), field=first.field)

    def _message(self) -> str:
        return "launch refused: " + "; ".join(i.line() for i in self.issues)


class WarningsNotAccepted(LaunchRefused):
    """A real launch stopped on warnings that were not accepted with ``force``."""

    def __init__(
        self,
        issues: Sequence[Issue],
        *,
        accept: str = "set force to accept them",
        message: str | None = None,
    ) -> None:
        self.accept = accept
        super().__init__(issues, message=message)

    def _message(self) -> str:
        n = len(self.issues)
        listed = "; ".join(i.line() for i in self.issues)
        return f"launch stopped by {n} warning{'s' if n != 1 else ''} ({self.accept}): {listed}"


def looks_like_path(text: str) -> bool:
    """One word that names a file: ends in .txt/.tmpl/.template, or has a ``/`` (not a URL)."""
    t = text.strip()
    if not t or len(t) > _MAX_PATH or any(ch.isspace() for ch in t):
        return False
    if PurePath(t).suffix.lower() in TEMPLATE_SUFFIXES:
        return True
    return "/" in t and "://" not in t


def check_launch(
    template: str,
    *,
    fields: FieldStats | None,
    campaign: Any,
    brand_name: str,
    now: datetime,
    send_at: datetime | None = None,
    zone: tzinfo = UTC,
) -> Checked:
    """Errors and warnings of launching ``template`` (see the module docstring).  ``campaign``
    is anything with Campaign's registration attributes (and ``sid``, ``sender``,
    ``messaging_service_sid``); ``fields`` ``None`` skips the field
    checks; times in messages are shown in ``zone``.  Raises ``InputError`` for a template that
    does not parse."""
    tpl = parse_template(template)
    errors: list[Issue] = []
    warnings: list[Issue] = []
    if not (getattr(campaign, "sender", None) or getattr(campaign, "messaging_service_sid", None)):
        errors.append(
            Issue(
                "no_sender",
                "campaign",
                f"campaign {getattr(campaign, 'sid', '?')} has neither a sender number nor a "
                "Messaging Service SID, so no message can be sent; import it again with "
                "--sender +1XXXXXXXXXX (or with its messaging_service_sid)",
            )
        )
    if looks_like_path(template):
        errors.append(
            Issue(
                "template_looks_like_path",
                "template",
                f"template {template.strip()!r} looks like a file name, not message text",
            )
        )
    if fields is not None:
        field_errors, warnings = _field_issues(_field_order(tpl), fields)
        errors += field_errors
    errors += _lint_issues(tpl, campaign, brand_name)
    if send_at is not None and as_utc(send_at) < as_utc(now) - SEND_AT_TOLERANCE:
        errors.append(
            Issue(
                "send_at_in_past",
                "send_at",
                f"start time {_clock(send_at, zone)} is in the past (now {_clock(now, zone)}); "
                "give a later time, or none to start now",
            )
        )
    return Checked(tuple(errors), tuple(warnings))


def _field_order(tpl: Template) -> list[str]:
    return list(dict.fromkeys(name for is_field, name in tpl.parts if is_field))


def _field_issues(names: Iterable[str], stats: FieldStats) -> tuple[list[Issue], list[Issue]]:
    errors: list[Issue] = []
    warnings: list[Issue] = []
    if stats.total <= 0:
        return errors, warnings  # no one to send to: nothing would be suppressed
    total = stats.total
    for name in names:
        have = stats.holders.get(name, 0)
        lack = total - have
        if have > 0:
            if lack > 0:
                warnings.append(
                    Issue(
                        "field_missing",
                        "template",
                        f"{lack} of {total} recipients have no [{name}]: their messages will "
                        "be suppressed (template_variable_missing)",
                        lack,
                    )
                )
        elif name in stats.known or name in CONTACT_FIELDS:
            errors.append(
                Issue(
                    "field_missing",
                    "template",
                    f"none of the {total} recipients has a value for [{name}]",
                    total,
                )
            )
        else:
            errors.append(
                Issue(
                    "unknown_field",
                    "template",
                    f"template field [{name}] is not a field of anyone in the audience "
                    f"({_suggest(name, stats.known | CONTACT_FIELDS)})",
                    total,
                )
            )
    return errors, warnings


def _suggest(name: str, known: frozenset[str]) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1)
    if close:
        return f"did you mean [{close[0]}]?"
    listed = sorted(known)
    more = ", ..." if len(listed) > _MAX_LISTED else ""
    return f"known fields: {', '.join(listed[:_MAX_LISTED])}{more}"


def _lint_issues(tpl: Template, campaign: Any, brand_name: str) -> list[Issue]:
    from dispatcher import compliance

    body = "".join(PLACEHOLDER if is_field else text for is_field, text in tpl.parts)
    found: dict[str, Issue] = {}
    for first in (True, False):  # a first message gets brand and STOP added; a later one not
        try:
            text = compliance.compose(
                body, brand_name=brand_name, opt_out_language=None, first_message=first
            )
        except MessageTooLongError as e:
            found.setdefault("message_too_long", Issue("message_too_long", "template", str(e)))
            continue
        findings = compliance.lint_message(
            text, campaign, brand_name=brand_name, first_message=first
        )
        for f in findings:
            if f.severity == compliance.ERROR:
                found.setdefault(f.code, Issue(f.code, "template", f.message))
    return list(found.values())


def _clock(t: datetime, zone: tzinfo) -> str:
    return as_utc(t).astimezone(zone).strftime("%Y-%m-%d %H:%M:%S %Z")
