"""Area codes (NPAs) of the states with stricter telephone-solicitation rules (compliance.md §4).

Sources: NANPA area-code assignments (nationalnanpa.com, "NPA Database": FL, OK, MD entries), cross-
checked against ``phonenumbers.geocoder.description_for_number`` 9.0.x (every NPA 200–999, several
exchanges each).  Overlays added in 2022–2024 (FL 324, 448, 645, 656, 728; OK 572; MD 227) included.
Area code ≠ location (number portability, mobile users: [AC]); Oklahoma's OTSA presumes a call to an
Oklahoma area code reaches a person in Oklahoma [OK].  Keep this table in sync when NANPA adds
overlays (``tests/unit/compliance`` checks it against phonenumbers' geocoder).
"""

from __future__ import annotations

STATE_NPAS: dict[str, frozenset[str]] = {
    "FL": frozenset(
        "239 305 321 324 352 386 407 448 561 645 656 689 727 728 754 772 786 813 850 863 904 "
        "941 954".split()
    ),
    "OK": frozenset("405 539 572 580 918".split()),
    "MD": frozenset("227 240 301 410 443 667".split()),
}

NPA_STATE: dict[str, str] = {npa: st for st, npas in STATE_NPAS.items() for npa in npas}


def npa_of(e164: str) -> str | None:
    """The area code of a +1 (NANP) number in E.164, else ``None``."""
    if len(e164) == 12 and e164.startswith("+1"):
        return e164[2:5]
    return None


def state_for_number(e164: str) -> str | None:
    npa = npa_of(e164)
    return NPA_STATE.get(npa) if npa else None
