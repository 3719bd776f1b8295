"""Root of the CLI.

Exit status: 0 on success; 1 on a user error — a ``DispatcherError`` or a usage error (a bad
argument, a missing or unknown option, an unknown command) — with one ``error: ...`` line on
stderr; 70 for an internal error (one line too); 130 when interrupted.

Start-up: a command group's module (and what it imports: SQLModel, the services) is imported
only when the group is named, and the ``dispatcher.cli`` entry points (workers/: demo, up,
scheduler) are loaded only for a name that is not ours and for ``--help``.  ``dispatcher run
pause 1`` imports ``dispatcher.cli.run`` and nothing of the other groups (bench/cli_startup.py).
"""

from __future__ import annotations

import errno
import logging
import os
import sys
from typing import Any

import typer
from typer.core import TyperArgument, TyperGroup, TyperOption

from dispatcher.errors import DispatcherError

try:  # Typer >= 0.2x vendors Click; its exceptions are not Click's
    from typer import _click
except ImportError:  # pragma: no cover - older Typer runs on Click itself
    import click as _click  # type: ignore[no-redef]

log = logging.getLogger(__name__)

#: name -> (module whose ``app`` is the group, help), in the order ``--help`` lists them
GROUPS: dict[str, tuple[str, str]] = {
    "brand": ("dispatcher.cli.brand", "Brands (the company named in messages)."),
    "campaign": ("dispatcher.cli.campaign", "Campaigns (Twilio UsAppToPerson)."),
    "contacts": ("dispatcher.cli.contacts", "Contacts and CSV import."),
    "consent": ("dispatcher.cli.consent", "Consent ledger (append-only)."),
    "db": ("dispatcher.cli.db", "Database schema."),
    "message": ("dispatcher.cli.message", "Lint and preview message bodies."),
    "run": ("dispatcher.cli.run", "Launch and control runs."),
    "sandbox": ("dispatcher.cli.sandbox", "The bundled Twilio-compatible sandbox."),
    "api-key": ("dispatcher.cli.apikey", "API keys for the HTTP API."),
}
PLUGINS = "dispatcher.cli"  # entry-point group: register(app: typer.Typer) -> None

_ClickException: type[Exception] = _click.exceptions.ClickException
_UsageError: type[Exception] = _click.exceptions.UsageError
_Exit: tuple[type[BaseException], ...] = tuple(
    {typer.Exit, getattr(_click.exceptions, "Exit", typer.Exit)}
)
_Abort: tuple[type[BaseException], ...] = tuple(
    {typer.Abort, getattr(_click.exceptions, "Abort", typer.Abort)}
)

_LABELS = {"str": "TEXT", "int": "INTEGER", "float": "NUMBER", "Path": "PATH", "bool": "BOOLEAN"}


class _Argument(TyperArgument):
    """An argument shown as Click shows it: ``RUN_ID`` in the usage line, no ``<int>`` label."""

    def display_type_rich(self, ctx: Any) -> str | None:
        return None

    def _usage_display_name(self) -> str:
        name = self.metavar or (self.name or "").upper()
        name = name if self.required else f"[{name}]"
        return name + ("..." if self.nargs != 1 else "")


def _label(param: TyperOption) -> str:
    """TEXT, INTEGER, NUMBER, PATH for an option that takes a value."""
    desc = getattr(param, "type_descriptor", None)
    if desc is None:  # older Typer: Click's own type names
        return str(getattr(getattr(param, "type", None), "name", "text")).upper()
    if getattr(desc, "is_choice", False) and desc.choices:
        return "|".join(str(getattr(c, "value", c)) for c in desc.choices)
    ann = desc.annotation
    args = getattr(ann, "__args__", None)
    if args and getattr(ann, "__origin__", None) in (list, tuple):
        ann = args[0]
    return _LABELS.get(getattr(ann, "__name__", ""), "TEXT")


def _tidy(cmd: Any) -> Any:
    """Clean help for ``cmd`` and its subcommands: ``--json`` (a flag) shows no type, ``--brand
    TEXT`` shows Click's label, not ``<str>``; arguments read ``RUN_ID``.  Usage errors then
    name the argument the same way."""
    for p in cmd.params:
        if isinstance(p, TyperArgument):
            if type(p) is TyperArgument:
                p.__class__ = _Argument
            p.metavar = p.metavar or (p.name or "").upper()
        elif isinstance(p, TyperOption) and p.metavar is None:
            p.metavar = "" if p.is_flag or p.count else _label(p)
    help_option = cmd.get_help_option

    def get_help_option(ctx: Any) -> Any:
        opt = help_option(ctx)
        if opt is not None:
            opt.metavar = ""  # a flag: no <bool>
        return opt

    cmd.get_help_option = get_help_option
    for sub in getattr(cmd, "commands", {}).values():
        _tidy(sub)
    return cmd


def _typer_command(app: typer.Typer, name: str | None, help: str | None) -> Any:
    cmd = typer.main.get_group(app)  # as add_typer() would: no completion options
    if name is not None:
        cmd.name = name
    if help and not cmd.help:
        cmd.help = help
    return _tidy(cmd)


def _plugin_commands() -> dict[str, Any]:
    """Commands that other packages add through the ``dispatcher.cli`` entry points."""
    from importlib.metadata import entry_points

    extra = typer.Typer()
    for ep in entry_points(group=PLUGINS):
        ep.load()(extra)
    return dict(_typer_command(extra, None, None).commands)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _fail(message: str, code: int) -> None:
    sys.stderr.write(f"error: {_one_line(message)}\n")
    raise typer.Exit(code)


def _internal(e: Exception) -> None:
    """An error that is ours, not the operator's: one line (a traceback with DISPATCHER_DEBUG)."""
    if os.environ.get("DISPATCHER_DEBUG"):
        raise e
    log.debug("internal error", exc_info=True)
    _fail(f"internal error: {type(e).__name__}: {e} (DISPATCHER_DEBUG=1 for details)", 70)


def _usage_message(e: Exception) -> str:
    """Click's reason for a usage error, with the value it refused and where to read more."""
    msg = e.format_message()  # type: ignore[attr-defined]
    param = getattr(e, "param", None)
    errors = getattr(e.__cause__, "errors", None)  # Typer >= 0.2x coerces with pydantic
    if param is not None and callable(errors):
        first = (errors() or [{}])[0]
        name = " / ".join(param.opts) if param.param_type_name == "option" else param.metavar
        msg = f"invalid value {first.get('input')!r} for {name}: {first.get('msg', msg)}"
    ctx = getattr(e, "ctx", None)
    if ctx is not None and ctx.command.get_help_option(ctx) is not None:
        msg = f"{msg.rstrip('.')} (see: {ctx.command_path} --help)"
    return str(msg[:1].lower() + msg[1:])


def _usage(e: Exception) -> None:
    """A usage error as one ``error:`` line (exit 1).  A group named without a command shows
    its help (exit 0): that is a request for help, not a mistake."""
    if type(e).__name__ == "NoArgsIsHelpError":
        text = e.format_message().strip()  # type: ignore[attr-defined]
        if text:  # the Rich help printed itself while the error was made
            sys.stdout.write(text + "\n")
        raise typer.Exit(0)
    _fail(_usage_message(e), 1)


class DispatcherGroup(TyperGroup):
    """The root group: loads command groups lazily and reports every error as one line."""

    _loaded_all = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        _tidy(self)

    def _load(self, name: str) -> Any:
        module, help = GROUPS[name]
        from importlib import import_module

        cmd = _typer_command(import_module(module).app, name, help)
        self.commands[name] = cmd
        return cmd

    _listing = False  # while the root's --help lists the groups

    def _load_plugins(self) -> None:
        if self._loaded_all:
            return
        self._loaded_all = True
        for name, cmd in _plugin_commands().items():
            self.commands.setdefault(name, cmd)

    def _load_all(self) -> None:
        for name in GROUPS:
            if name not in self.commands:
                self._load(name)
        self._load_plugins()

    def get_command(self, ctx: Any, name: str) -> Any:
        cmd = self.commands.get(name)
        if cmd is None and name in GROUPS:
            if self._listing:  # a name and a line of help: not worth importing the group
                return TyperGroup(name=name, help=GROUPS[name][1])
            cmd = self._load(name)
        if cmd is None:  # a plugin's command, or a typo (the suggestions need every name)
            self._load_all()
            cmd = self.commands.get(name)
        return cmd

    def format_help(self, ctx: Any, formatter: Any) -> None:
        """``dispatcher --help`` lists the groups from ``GROUPS`` without importing them (each
        group's module brings its services, SQLModel included: 0.87 -> ~0.3 s)."""
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False

    def list_commands(self, ctx: Any) -> list[str]:
        self._load_plugins()
        order = list(GROUPS)
        names = {*self.commands, *GROUPS}
        return sorted(names, key=lambda n: order.index(n) if n in order else len(order))

    def make_context(  # type: ignore[override]  # Click types args as list[str] | None
        self, info_name: str | None, args: list[str], **extra: Any
    ) -> Any:
        try:
            return super().make_context(info_name, args, **extra)
        except _UsageError as e:  # the root's own options (`dispatcher --nope`)
            _usage(e)

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except DispatcherError as e:
            _fail(str(e), 1)
        except _UsageError as e:
            _usage(e)
        except (*_Exit, *_Abort):
            raise
        except _ClickException as e:  # Click's other errors (a file it cannot open...)
            _fail(e.format_message(), 1)  # type: ignore[attr-defined]
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except BrokenPipeError:  # stdout closed early (`dispatcher ... | head`): not an error
            sys.stderr.close()
            raise typer.Exit(0) from None
        except OSError as e:
            if e.errno != errno.EADDRINUSE:
                _internal(e)
            # a server command whose port another process holds: the operator's to fix
            _fail(f"cannot listen: the address is already in use ({e.strerror})", 1)
        except Exception as e:  # noqa: BLE001 - never a traceback for the operator
            _internal(e)


app = typer.Typer(
    cls=DispatcherGroup,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    help="Rate-limited proactive SMS dispatcher for A2P 10DLC campaigns.",
)


@app.callback()
def _root() -> None:
    """Rate-limited proactive SMS dispatcher for A2P 10DLC campaigns."""


def _register() -> None:
    from dispatcher.cli import serve

    serve.register(app)


_register()


def main() -> None:
    from dispatcher.logs import setup_logging

    setup_logging(os.environ.get("DISPATCHER_LOG_LEVEL", "WARNING"))
    app()


if __name__ == "__main__":
    main()
