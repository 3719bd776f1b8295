"""Top-level `dispatcher serve` command: the webhook app (and later the HTTP API) on uvicorn."""

from __future__ import annotations

from urllib.parse import urlsplit

import typer

_DEFAULT_PORTS = {"http": 80, "https": 443}


def listen_port_warning(public_base_url: str, port: int) -> str | None:
    """One line when the server listens on a port DISPATCHER_PUBLIC_BASE_URL does not name:
    Twilio signatures are checked against the public URL, so every signed callback and
    `dispatcher sandbox reply` would get 403 (unless a proxy forwards the public port)."""
    parts = urlsplit(public_base_url)
    try:
        public = parts.port or _DEFAULT_PORTS.get(parts.scheme)
    except ValueError:  # a port that is not a number: the URL is wrong whatever we listen on
        public = None
    if public is None or public == port:
        return None
    return (
        f"warning: DISPATCHER_PUBLIC_BASE_URL {public_base_url} names port {public} but this "
        f"server listens on port {port}: signed callbacks and `dispatcher sandbox reply` will get "
        f"403 unless a proxy forwards port {public} to {port} (set the URL or use --port {public})"
    )


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve(
        host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on."),
        port: int = typer.Option(8000, "--port", min=1, max=65535, help="TCP port."),
    ) -> None:
        """Serve the Twilio webhooks, /healthz and /metrics.

        Twilio must reach DISPATCHER_PUBLIC_BASE_URL: signatures are checked against it."""
        import uvicorn

        from dispatcher.logs import setup_logging
        from dispatcher.runtime import Runtime
        from dispatcher.settings import get_settings

        settings = get_settings()
        warning = listen_port_warning(settings.public_base_url, port)
        if warning:
            typer.echo(warning, err=True)
        setup_logging(settings.log_level)
        web = Runtime(settings).webhook_app
        uvicorn.run(
            web, host=host, port=port, log_level=settings.log_level.lower(), access_log=False
        )
