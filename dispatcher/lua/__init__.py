"""Every Redis Lua script the product runs: one ``<name>.lua`` file each in this package,
opening with a comment that says what it does, who calls it, its KEYS and ARGV (each built by
dispatcher.keys) and what it returns.  Python code registers them here and nowhere else (a unit
test greps the package): ``register(client, "reserve")`` answers redis-py's ``Script``
(EVALSHA, loading the script on a miss; fakeredis runs them through lupa).

Scripts: ``reserve`` and ``release`` (throttle bookings), ``status`` (a booking's epoch and
Redis time), ``seed`` (a brand's throttle rebuilt from the outbox after a loss),
``record_body`` (daily repetition counts).  redis-py's own ``Lock`` (the scheduler's leader
lock) brings its scripts with it.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

NAMES = ("reserve", "release", "status", "seed", "record_body")


@cache
def source(name: str) -> str:
    """The text of ``<name>.lua``."""
    if name not in NAMES:
        raise ValueError(f"no Lua script {name!r} (known: {', '.join(NAMES)})")
    return resources.files(__package__).joinpath(f"{name}.lua").read_text("utf-8")


def register(client: Any, name: str) -> Any:
    """redis-py's ``Script`` for ``<name>.lua`` on ``client`` (redis-py or fakeredis): call it
    with ``keys=``, ``args=`` and optionally ``client=`` (a pipeline)."""
    return client.register_script(source(name))
