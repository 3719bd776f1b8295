"""decide() calls per second on one core, against a ceiling measured in the same run.

Ceiling: a loop calling a trivial Python function with the same arguments (the cost of the call
itself).  Scenarios: the same composed body for every recipient (template run, lint cached),
a distinct body per call (personalised templates, given as their parts as the gate gives them:
the template's literal text is linted once, only the values per call, compliance/template_lint.py),
the same given as whole bodies (the whole body linted every time), the same with a non-ASCII
character in each body (a curly apostrophe: the content lint normalises the body against filter
evasion, compliance/evasion.py, and such a body is linted whole), and a quiet-hours defer.  Rates
are per second of the process's CPU time (``seconds-per-scenario`` of it).  The load average is
printed: the machine's other work still slows every figure (shared caches and cores).

    .venv/bin/python bench/decide.py [seconds-per-scenario]
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from dispatcher.compliance import ContactState, OutgoingMessage, compose, decide


@dataclass
class Camp:
    campaign_status: str = "VERIFIED"
    us_app_to_person_usecase: str = "ACCOUNT_NOTIFICATION"
    opt_in_keywords: list[str] = field(default_factory=list)
    opt_out_keywords: list[str] = field(default_factory=list)
    help_keywords: list[str] = field(default_factory=list)
    has_embedded_links: bool = True
    has_embedded_phone: bool = False
    age_gated: bool = False
    direct_lending: bool = False
    quiet_hours_policy: str = "strictest"
    frequency_cap_count: int | None = 5
    frequency_cap_hours: int | None = 24


def trivial(message, contact_state, campaign, *, now):  # noqa: ANN001, ANN202
    return None


def rate(fn, args_list, seconds: float) -> float:
    """Calls per second of this process's CPU time: on a shared machine the wall clock also
    counts the time other processes held the core (at a load of 20 on 2 cores, ten times)."""
    n, calls, t0 = len(args_list), 0, time.process_time()
    deadline = t0 + seconds
    while True:
        for m, c, camp, now in args_list:
            fn(m, c, camp, now=now)
        calls += n
        t = time.process_time()
        if t >= deadline:
            return calls / (t - t0)


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 2.0
    camp = Camp()
    now = datetime(2026, 7, 1, 16, 0, tzinfo=UTC)
    npas = ["212", "305", "405", "410", "808", "907", "787", "671", "415", "312"]
    phones = [f"+1{npas[i % len(npas)]}555{i:04d}" for i in range(1000)]
    sends = (now - timedelta(hours=30), now - timedelta(hours=2))
    body = compose(
        "Your order [id] shipped, track it at www.acme.com/t",
        brand_name="Acme",
        opt_out_language=None,
        first_message=True,
    )
    same = [
        (
            OutgoingMessage(p, body, True, brand_name="Acme"),
            ContactState(True, recent_sends=sends),
            camp,
            now,
        )
        for p in phones
    ]
    head, tail = body.split("[id]")

    def personal(i: int, p: str, head: str = head, tail: str = tail) -> OutgoingMessage:
        value = f"#{10_000 + i}-{p[-7:]}"
        parts = (head, value, tail)
        return OutgoingMessage(p, "".join(parts), True, brand_name="Acme", parts=parts)

    distinct = [
        (personal(i, p), ContactState(True, recent_sends=sends), camp, now)
        for i, p in enumerate(phones * 20)
    ]
    whole = [(replace(m, parts=None), c, cp, n) for m, c, cp, n in distinct]
    curly = [
        (
            personal(i, m.to, head.replace("Your order", "Your order\u2019s parcel")),
            c,
            cp,
            n,
        )
        for i, (m, c, cp, n) in enumerate(distinct)
    ]
    night = [(m, c, camp, now - timedelta(hours=13)) for m, c, camp, _ in same]
    for m, c, cp, n in same[:20] + night[:20] + distinct[:300]:  # warm the caches (the plan)
        decide(m, c, cp, now=n)
    ceiling = rate(trivial, same, seconds)
    print(f"load average (1, 5, 15 min)    : {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"ceiling (trivial call)         : {ceiling:12,.0f} calls/s")
    for name, args in (
        ("same body (cached lint)", same),
        ("distinct bodies", distinct),
        ("distinct, whole body", whole),
        ("distinct, non-ASCII", curly),
        ("quiet hours -> Defer", night),
    ):
        r = rate(decide, args, seconds)
        print(
            f"decide(): {name:21s}: {r:12,.0f} calls/s  ratio {r / ceiling:.3f}"
            f"  goal 50,000/s {'OK' if r >= 50_000 else 'MISSED'}"
        )


if __name__ == "__main__":
    main()
