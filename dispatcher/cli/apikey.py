"""`dispatcher api-key` commands: keys for the HTTP API (shown once, stored hashed)."""

from __future__ import annotations

from typing import Any

import typer

from dispatcher import apikeys
from dispatcher.cli.common import database
from dispatcher.cli.output import JsonOpt, err, out, report, table

app = typer.Typer(no_args_is_help=True)


@app.command("create")
def create(
    name: str = typer.Argument(..., help="Key name (the actor of its writes: api:NAME)."),
    scope: str = typer.Option(
        ..., "--scope", "-s", help=f"Comma-separated scopes: {', '.join(apikeys.SCOPES)}."
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Create an API key.  The key is printed once; only its hash is stored."""
    with database().session() as s:
        token, key = apikeys.create_key(s, name, scope)
        doc = {**apikeys.key_dict(key), "key": token}

    def render(d: dict[str, Any]) -> None:
        out().print(d["key"], highlight=False)
        err().print(
            f"API key {d['name']!r} created with scopes {', '.join(d['scopes'])}. "
            "Store it now: it is not shown again."
        )

    report(doc, as_json, render)


@app.command("list")
def list_(as_json: bool = JsonOpt) -> None:
    """List API keys (names, scopes, state; never the keys)."""
    with database().session() as s:
        docs = [apikeys.key_dict(k) for k in apikeys.list_keys(s)]
    report(
        {"keys": docs},
        as_json,
        lambda d: table(
            "API keys",
            ["name", "prefix", "scopes", "created", "revoked"],
            [
                (k["name"], k["prefix"], ",".join(k["scopes"]), k["created_at"], k["revoked_at"])
                for k in d["keys"]
            ],
        ),
    )


@app.command("revoke")
def revoke(name: str, as_json: bool = JsonOpt) -> None:
    """Revoke an API key (requests with it get 401 from now on)."""
    with database().session() as s:
        key, changed = apikeys.revoke(s, name)
        doc = {**apikeys.key_dict(key), "changed": changed}
    report(
        doc,
        as_json,
        lambda d: err().print(
            f"API key {d['name']!r} " + ("revoked" if d["changed"] else "was already revoked")
        ),
    )
