"""Root of the CLI.  Every ``DispatcherError`` becomes one ``error: ...`` line and exit 1."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import click
import typer
from typer.core import TyperGroup

from dispatcher.errors import DispatcherError

log = logging.getLogger(__name__)
# Typer >= 0.2x vendors Click (``typer._click``): its usage errors are not click.ClickException
# but typer.exceptions.TyperException, and typer.Abort is its own class.  Both pass through (exit
# 2 / 1 with Click's message) instead of being reported as an internal error.
_PASS_THROUGH: tuple[type[BaseException], ...] = tuple(
    {
        typer.Exit,
        click.exceptions.Exit,
        click.exceptions.Abort,
        click.ClickException,
        getattr(typer, "Abort", click.exceptions.Abort),
        getattr(getattr(typer, "exceptions", None), "TyperException", click.ClickException),
    }
)


class DispatcherGroup(TyperGroup):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DispatcherError as e:
            _fail(str(e), 1)
        except _PASS_THROUGH:
            raise
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except BrokenPipeError:  # stdout closed early (`dispatcher ... | head`): not an error
            sys.stderr.close()
            raise typer.Exit(0) from None
        except Exception as e:  # noqa: BLE001 - never a traceback for the operator
            if os.environ.get("DISPATCHER_DEBUG"):
                raise
            log.debug("internal error", exc_info=True)
            _fail(f"internal error: {type(e).__name__}: {e} (DISPATCHER_DEBUG=1 for details)", 70)


def _fail(message: str, code: int) -> None:
    line = " ".join(str(message).split())
    sys.stderr.write(f"error: {line}\n")
    raise typer.Exit(code)


app = typer.Typer(
    cls=DispatcherGroup,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    help="Rate-limited proactive SMS dispatcher for A2P 10DLC campaigns.",
)


def _register() -> None:
    # Each command group lives in its own module; imported here, not at package import.
    from dispatcher.cli import (
        apikey,
        brand,
        campaign,
        consent,
        contacts,
        db,
        message,
        run,
        sandbox,
        serve,
    )

    app.add_typer(brand.app, name="brand", help="Brands (the company named in messages).")
    app.add_typer(campaign.app, name="campaign", help="Campaigns (Twilio UsAppToPerson).")
    app.add_typer(contacts.app, name="contacts", help="Contacts and CSV import.")
    app.add_typer(consent.app, name="consent", help="Consent ledger (append-only).")
    app.add_typer(db.app, name="db", help="Database schema.")
    app.add_typer(message.app, name="message", help="Lint and preview message bodies.")
    app.add_typer(run.app, name="run", help="Launch and control runs.")
    app.add_typer(sandbox.app, name="sandbox", help="The bundled Twilio-compatible sandbox.")
    app.add_typer(apikey.app, name="api-key", help="API keys for the HTTP API.")
    serve.register(app)
    from importlib.metadata import entry_points

    for ep in entry_points(group="dispatcher.cli"):
        ep.load()(app)


_register()


def main() -> None:
    from dispatcher.logs import setup_logging

    setup_logging(os.environ.get("DISPATCHER_LOG_LEVEL", "WARNING"))
    app()


if __name__ == "__main__":
    main()
