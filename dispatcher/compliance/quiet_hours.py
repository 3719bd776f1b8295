"""Quiet hours: may a proactive message reach this recipient now, and if not, when?

Rules (../shared/compliance.md §4):

* Federal TCPA: telephone solicitations only 08:00–21:00 recipient local time, 47 CFR 64.1200(c)(1)
  [TCPAH].  Whether this binds consented informational texts is litigated [FEDSOC]; (design) we
  apply it to every proactive send.
* Florida FTSA, Fla. Stat. 501.616(6): 08:00–20:00 and ≤ 3 solicitations / 24 h [FL]; Oklahoma OTSA
  (eff. 2022-11-01): 08:00–20:00, ≤ 3 / 24 h [OK]; Maryland Stop the Spam Calls Act (eff.
  2024-01-01): 08:00–20:00, ≤ 3 calls or texts / 24 h [MD].  Other states (holidays, Sundays): not
  sourced, not implemented — add a ``StateRule`` when sourced.
* Local time comes from the contact's time-zone override if any, else from the number: area code →
  zones via ``phonenumbers.timezone.time_zones_for_number``.  A number with several zones (Alaska:
  Anchorage + Adak) is allowed only when **every** zone is inside its window (compliance.md design
  note).  A number whose zone is unknown — phonenumbers has none, or the number is a
  non-geographic NANP number (toll-free, 5XX such as Twilio's +1500 test numbers, 900), for which
  it lists every NANP zone from Guam to Newfoundland — is treated as being in every zone of
  ``policy.fallback_zones`` (all US zones) and under every state rule: it goes only inside the
  intersection of those windows (:func:`fallback_windows`; 18:00–00:00 UTC under the strictest
  policy, all year), otherwise it is deferred — the "unknown → defer" design note, with a way out.
* The state comes from the contact's ``state_code`` if known, else from the area code (``npa.py``;
  OTSA presumes an Oklahoma area code means Oklahoma [OK]).
* Windows are half-open ``[start, end)`` at minute resolution: 20:59 is inside, 21:00 is not.

Policy names (``Campaign.quiet_hours_policy``): ``"strictest"`` (default: federal + state rules),
``"federal"`` (08:00–21:00 only, no state rules or caps), ``"HH:MM-HH:MM"`` (a custom window,
intersected with the state rules), ``"none"`` (no quiet hours: only for traffic that is not a
solicitation, e.g. 2FA; the operator's call).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime, time, timedelta
from functools import lru_cache
from typing import NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from phonenumbers import timezone as pn_timezone

from dispatcher.compliance.npa import state_for_number
from dispatcher.errors import ComplianceError, InputError, InvalidPhoneError
from dispatcher.phones import NANP_E164


@dataclass(frozen=True, slots=True)
class StateRule:
    state: str
    start: time
    end: time
    max_per_window: int | None
    window_hours: int
    source: str


DEFAULT_STATE_RULES: tuple[StateRule, ...] = (
    StateRule("FL", time(8), time(20), 3, 24, "Fla. Stat. 501.616(6) (FTSA) [FL]"),
    StateRule("OK", time(8), time(20), 3, 24, "Oklahoma Telephone Solicitation Act 2022 [OK]"),
    StateRule("MD", time(8), time(20), 3, 24, "Maryland Stop the Spam Calls Act 2023 [MD]"),
)

US_ZONES: tuple[str, ...] = (
    "America/New_York",
    "America/Chicago",
    "America/Denver",
    "America/Phoenix",
    "America/Los_Angeles",
    "America/Anchorage",
    "America/Adak",
    "Pacific/Honolulu",
    "America/Puerto_Rico",
)


@dataclass(frozen=True)
class QuietHoursPolicy:
    """Hashable, so per-number work can be cached per policy."""

    name: str = "strictest"
    start: time = time(8)
    end: time = time(21)
    state_rules: tuple[StateRule, ...] = DEFAULT_STATE_RULES
    fallback_zones: tuple[str, ...] = US_ZONES
    enabled: bool = True
    extra: tuple[tuple[str, str], ...] = field(default=())

    def __post_init__(self) -> None:
        if self.enabled and not self.start < self.end:
            raise InputError(
                f"quiet-hours window {self.start}-{self.end} is empty", field="quiet_hours_policy"
            )

    def __hash__(self) -> int:  # cached: the policy is a cache key on the hot path
        try:
            return self._hash  # type: ignore[attr-defined,no-any-return]
        except AttributeError:
            h = hash(tuple(getattr(self, f.name) for f in fields(self)))
            object.__setattr__(self, "_hash", h)
            return h

    def rule_for(self, state: str | None) -> StateRule | None:
        if state:
            for rule in self.state_rules:
                if rule.state == state:
                    return rule
        return None


_CUSTOM = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


@lru_cache(maxsize=64)
def policy_from_name(name: str | None) -> QuietHoursPolicy:
    """Build the policy named by ``Campaign.quiet_hours_policy`` (see the module docstring)."""
    key = (name or "strictest").strip().lower()
    if key in ("strictest", "default", "strict"):
        return QuietHoursPolicy()
    if key == "federal":
        return QuietHoursPolicy(name="federal", state_rules=())
    if key in ("none", "off", "disabled"):
        return QuietHoursPolicy(name="none", enabled=False, state_rules=())
    m = _CUSTOM.match(key)
    if m:
        h1, m1, h2, m2 = (int(x) for x in m.groups())
        if h1 > 23 or h2 > 24 or m1 > 59 or m2 > 59 or (h2 == 24 and m2):
            raise InputError(f"bad quiet-hours window {name!r}", field="quiet_hours_policy")
        end = time(23, 59) if h2 == 24 else time(h2, m2)
        return replace(QuietHoursPolicy(), name=key, start=time(h1, m1), end=end)
    raise InputError(
        f"unknown quiet_hours_policy {name!r} (strictest, federal, none or HH:MM-HH:MM)",
        field="quiet_hours_policy",
    )


class Resolved(NamedTuple):
    """Per-recipient windows: ``((zone, start_minute, end_minute), ...)``."""

    windows: tuple[tuple[ZoneInfo, int, int], ...]
    state: str | None
    unknown_zone: bool
    cap: tuple[int, int, str] | None  # (max, hours, state) of the state's frequency rule


def _minutes(t: time) -> int:
    return t.hour * 60 + t.minute


@lru_cache(maxsize=4096)
def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as e:
        raise InputError(f"unknown time zone {name!r}", field="time_zone") from e


_prefix_zones: dict[str, tuple[str, ...]] = {}


def number_zones(phone: str) -> tuple[str, ...]:
    """IANA zones phonenumbers gives for ``phone`` (E.164); ``()`` when unknown.

    A run meets each number once, so a per-number cache always misses: well-formed NANP
    numbers are looked up once per NPA-NXX (phonenumbers' zone data is keyed by prefix)."""
    if NANP_E164.match(phone):
        prefix = phone[:8]
        zones = _prefix_zones.get(prefix)
        if zones is None:
            if len(_prefix_zones) > 200_000:
                _prefix_zones.clear()
            zones = _prefix_zones[prefix] = _number_zones(phone)
        return zones
    return _number_zones(phone)


@lru_cache(maxsize=65536)
def _number_zones(phone: str) -> tuple[str, ...]:
    try:
        parsed = phonenumbers.parse(phone, None if phone.startswith("+") else "US")
    except phonenumbers.NumberParseException as e:
        raise InvalidPhoneError(f"not a phone number: {e}") from None
    if not phonenumbers.is_possible_number(parsed):
        raise InvalidPhoneError("not a possible phone number")
    if parsed.country_code == 1 and not phonenumbers.is_number_geographical(parsed):
        # toll-free, 5XX personal (Twilio's magic +1500 numbers), 900: phonenumbers answers
        # "every NANP zone" (Guam to Newfoundland), i.e. it does not know: an unknown zone
        return ()
    zones = pn_timezone.time_zones_for_number(parsed)
    return tuple(z for z in zones if z != pn_timezone.UNKNOWN_TIMEZONE)


@lru_cache(maxsize=65536)
def resolve(
    phone: str,
    policy: QuietHoursPolicy,
    time_zone: str | None = None,
    state_code: str | None = None,
) -> Resolved:
    """Zones, windows and state rule that apply to ``phone`` (cached: the hot path's lookup)."""
    zones = number_zones(phone)  # validates the number even when a zone override is given
    if time_zone:
        zone_names: tuple[str, ...] = (time_zone,)
        unknown = False
    else:
        unknown = not zones
        zone_names = policy.fallback_zones if unknown else zones
    state = state_code.strip().upper() if state_code else state_for_number(phone)
    cap = None
    rule = policy.rule_for(state)
    if rule and rule.max_per_window is not None:
        cap = (rule.max_per_window, rule.window_hours, rule.state)
    if unknown and not state_code:
        return Resolved(fallback_windows(policy), state, unknown, cap)
    return Resolved(_windows(policy, zone_names, (rule,) if rule else ()), state, unknown, cap)


def _windows(
    policy: QuietHoursPolicy, zone_names: tuple[str, ...], rules: tuple[StateRule, ...]
) -> tuple[tuple[ZoneInfo, int, int], ...]:
    start, end = _minutes(policy.start), _minutes(policy.end)
    for rule in rules:
        start, end = max(start, _minutes(rule.start)), min(end, _minutes(rule.end))
    return tuple((_zone(z), start, end) for z in dict.fromkeys(zone_names))


@lru_cache(maxsize=64)
def fallback_windows(policy: QuietHoursPolicy) -> tuple[tuple[ZoneInfo, int, int], ...]:
    """The windows of a number whose zone is unknown: every zone of ``policy.fallback_zones`` (all
    US zones) under the policy's window narrowed by every state rule.  A send is allowed only
    when every one of them is open, i.e. inside their intersection (see
    :func:`allowed_intervals`): 18:00-00:00 UTC every day of the year under the strictest policy
    (08:00 in Honolulu to 20:00 in Puerto Rico)."""
    return _windows(policy, policy.fallback_zones, policy.state_rules)


def _check_aware(at_utc: datetime) -> None:
    if at_utc.tzinfo is None or at_utc.utcoffset() is None:
        raise InputError("time must be timezone-aware (UTC)", field="at_utc")


def _quiet(windows: tuple[tuple[ZoneInfo, int, int], ...], at_utc: datetime) -> bool:
    for zone, start, end in windows:
        local = at_utc.astimezone(zone)
        m = local.hour * 60 + local.minute
        if m < start or m >= end:
            return True
    return False


def is_quiet_hours(
    phone: str,
    at_utc: datetime,
    policy: QuietHoursPolicy | None = None,
    *,
    time_zone: str | None = None,
    state_code: str | None = None,
) -> bool:
    """True when a proactive message must not reach ``phone`` at ``at_utc``."""
    _check_aware(at_utc)
    policy = policy or QuietHoursPolicy()
    if not policy.enabled:
        return False
    return _quiet(resolve(phone, policy, time_zone, state_code).windows, at_utc)


def _openings(windows: tuple[tuple[ZoneInfo, int, int], ...], at_utc: datetime) -> set[datetime]:
    """The instants (UTC) at which a window opens, from the day before ``at_utc``'s local day
    to three days after it, in every zone."""
    starts: set[datetime] = set()
    for zone, start, _end in windows:
        local_day = at_utc.astimezone(zone).date()
        t = time(start // 60, start % 60)
        for k in range(-1, 4):
            instant = datetime.combine(local_day + timedelta(days=k), t, tzinfo=zone)
            starts.add(instant.astimezone(UTC))
    return starts


def _next_allowed(resolved: Resolved, at_utc: datetime) -> datetime:
    if not _quiet(resolved.windows, at_utc):
        return at_utc
    return _first_open(resolved.windows, _openings(resolved.windows, at_utc), at_utc)


def _first_open(
    windows: tuple[tuple[ZoneInfo, int, int], ...], starts: set[datetime], at_utc: datetime
) -> datetime:
    for instant in sorted(s for s in starts if s > at_utc):
        if not _quiet(windows, instant):
            return instant
    raise ComplianceError("no allowed sending time within 4 days for this recipient and policy")


def next_allowed_time(
    phone: str,
    at_utc: datetime,
    policy: QuietHoursPolicy | None = None,
    *,
    time_zone: str | None = None,
    state_code: str | None = None,
) -> datetime:
    """``at_utc`` itself when allowed, else the first instant (UTC) the window opens everywhere."""
    _check_aware(at_utc)
    policy = policy or QuietHoursPolicy()
    if not policy.enabled:
        return at_utc
    return _next_allowed(resolve(phone, policy, time_zone, state_code), at_utc)


def _allowed_until(resolved: Resolved, at_utc: datetime) -> datetime | None:
    """None when quiet, else when the first window closes.  Arithmetic on the local clock is
    exact here: US DST changes happen at 02:00, never inside a 08:00-21:00 window."""
    left = None
    for zone, start, end in resolved.windows:
        local = at_utc.astimezone(zone)
        secs = local.hour * 3600 + local.minute * 60 + local.second
        if secs < start * 60 or secs >= end * 60:
            return None
        rest = end * 60 - secs
        if left is None or rest < left:
            left = rest
    if left is None:
        return None
    return (
        at_utc - timedelta(microseconds=at_utc.microsecond) + timedelta(seconds=left)
    ).astimezone(UTC)


class Verdict(NamedTuple):
    """What the gate asks of quiet hours at an instant: ``_quiet``, ``_allowed_until`` and, when
    quiet, ``_next_allowed`` (``None`` when not quiet)."""

    quiet: bool
    until: datetime | None
    next: datetime | None


_MINUTE = timedelta(minutes=1)
_REST_OF_MINUTE = timedelta(seconds=59, microseconds=999_999)
_Windows = tuple[tuple[ZoneInfo, int, int], ...]


class _Memo(NamedTuple):
    start: datetime  # a whole UTC minute
    end: datetime  # start + 1 minute
    verdicts: dict[_Windows, Verdict | None]  # None: the minute is not uniform for them


_memo = _Memo(datetime.min.replace(tzinfo=UTC), datetime.min.replace(tzinfo=UTC), {})
_MISSING = Verdict(False, None, None)


def verdict(resolved: Resolved, at_utc: datetime) -> Verdict:
    """:class:`Verdict` of ``resolved`` at ``at_utc``, memoised per windows for the current UTC
    minute: a run asks it for every recipient at nearly the same instant, and the recipients
    share a few windows (zones x state rules).

    Every instant of a minute has the minute's verdict when, in every zone, the UTC offset is a
    whole number of minutes and the same from the minute's first to its last microsecond (the
    local clock then reads ``hh:mm:ss`` with the same ``hh:mm``; windows are whole minutes), and
    no window opens strictly inside the minute (openings are compared with the instant).  A
    minute that fails this (a transition inside it, a sub-minute historical offset) is not
    memoised: computed per call, as is an instant not in UTC.  The memo holds one minute (the
    last asked), so it stays small."""
    windows = resolved.windows
    if at_utc.tzinfo is UTC:
        global _memo
        memo = _memo
        if not memo.start <= at_utc < memo.end:
            start = at_utc.replace(second=0, microsecond=0)
            memo = _memo = _Memo(start, start + _MINUTE, {})
        got = memo.verdicts.get(windows, _MISSING)
        if got is _MISSING:
            got = _minute_verdict(windows, memo.start)
            if len(memo.verdicts) >= 4096:
                memo.verdicts.clear()
            memo.verdicts[windows] = got
        if got is not None:
            return got
    quiet = _quiet(windows, at_utc)
    if quiet:
        return Verdict(True, None, _next_allowed(resolved, at_utc))
    return Verdict(False, _allowed_until(resolved, at_utc), None)


def _minute_verdict(windows: _Windows, minute: datetime) -> Verdict | None:
    """The verdict at every instant of ``minute`` (UTC, whole), or None when they may differ."""
    last = minute + _REST_OF_MINUTE
    for zone, _start, _end in windows:
        offset = minute.astimezone(zone).utcoffset()
        if offset is None or offset % _MINUTE or last.astimezone(zone).utcoffset() != offset:
            return None
    resolved = Resolved(windows, None, False, None)
    if not _quiet(windows, minute):
        return Verdict(False, _allowed_until(resolved, minute), None)
    starts = _openings(windows, minute)
    if any(minute < s <= last for s in starts):  # not with the offsets checked above: a guard
        return None
    try:
        return Verdict(True, None, _first_open(windows, starts, minute))
    except ComplianceError:
        return None  # raised per call, from the instant itself


def allowed_until(
    phone: str,
    at_utc: datetime,
    policy: QuietHoursPolicy | None = None,
    *,
    time_zone: str | None = None,
    state_code: str | None = None,
) -> datetime | None:
    """When quiet hours next begin for ``phone`` (UTC), or ``None`` if quiet now / no quiet hours.
    Bound Twilio's ``ValidityPeriod`` with it: a queued message expires instead of landing late."""
    _check_aware(at_utc)
    policy = policy or QuietHoursPolicy()
    if not policy.enabled:
        return None
    return _allowed_until(resolve(phone, policy, time_zone, state_code), at_utc)


def allowed_intervals(
    windows: tuple[tuple[ZoneInfo, int, int], ...], start: datetime, end: datetime
) -> list[tuple[datetime, datetime]]:
    """The half-open UTC intervals inside ``[start, end)`` in which ``windows`` allow a send: the
    intersection of every zone's window, computed with :func:`decide`'s own functions (so a
    schedule built on it agrees with the gate to the second).  ``windows == ()``: always allowed.
    Empty when no allowed time comes within 4 days of a point (an impossible custom policy)."""
    _check_aware(start)
    if not windows:
        return [(start, end)] if start < end else []
    resolved = Resolved(windows, None, False, None)
    out: list[tuple[datetime, datetime]] = []
    t = start
    while t < end:
        try:
            s = _next_allowed(resolved, t)
        except ComplianceError:
            break
        if s >= end:
            break
        e = _allowed_until(resolved, s)
        if e is None or e <= s:  # cannot happen for a window of whole minutes; never loop
            break
        out.append((s, min(e, end)))
        t = e
    return out
