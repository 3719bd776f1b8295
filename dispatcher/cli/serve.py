"""Top-level `dispatcher serve` command: the webhook app (and later the HTTP API) on uvicorn."""

from __future__ import annotations

import typer


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
        setup_logging(settings.log_level)
        web = Runtime(settings).webhook_app
        uvicorn.run(
            web, host=host, port=port, log_level=settings.log_level.lower(), access_log=False
        )
