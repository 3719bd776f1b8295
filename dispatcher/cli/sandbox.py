"""`dispatcher sandbox` commands: serve the Twilio-compatible sandbox carrier, post replies."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from dispatcher.cli.output import JsonOpt, err, report
from dispatcher.errors import ConfigError, InputError

app = typer.Typer(no_args_is_help=True)


@app.command("serve")
def serve(
    host: str = typer.Option("127.0.0.1", help="Interface to bind."),
    port: int = typer.Option(8765, help="TCP port."),
    account_sid: str | None = typer.Option(None, help="Account SID to accept (default: settings)."),
    auth_token: str | None = typer.Option(None, help="Auth token to accept (default: settings)."),
    config_file: Path | None = typer.Option(
        None, "--config", help="JSON file with SandboxConfig fields (faults, schedule, campaigns)."
    ),
    strict_from: bool = typer.Option(False, help="Reject From numbers not in --sender (21606)."),
    sender: list[str] = typer.Option([], help="Sender numbers owned by the account (repeat)."),
    fault_429: float = typer.Option(0.0, help="Fraction of creates answered 429 (20429)."),
    fault_500: float = typer.Option(0.0, help="Fraction of creates answered 500."),
    fault_slow: float = typer.Option(0.0, help="Fraction of creates answered slowly."),
    fault_slow_seconds: float = typer.Option(0.5, help="Delay of a slow answer."),
    fault_timeout: float = typer.Option(0.0, help="Fraction of creates accepted, then no answer."),
    fault_timeout_mode: str = typer.Option("delay", help="'delay' or 'drop' (reset connection)."),
    fault_drop_callbacks: float = typer.Option(0.0, help="Fraction of status callbacks dropped."),
    filter_30007: float = typer.Option(0.0, help="Fraction of messages ending undelivered 30007."),
    seed: int = typer.Option(1234, help="Seed of the fault RNG."),
    final_after: float = typer.Option(0.5, help="Seconds from create to delivered/undelivered."),
    inbound_url: str | None = typer.Option(
        None, help="Where /_sandbox/inbound posts (default: public_base_url + /twilio/inbound)."
    ),
    log_level: str = typer.Option("warning", help="uvicorn log level."),
) -> None:
    """Serve the sandbox carrier (Twilio REST subset + /_sandbox/ admin) on uvicorn."""
    from dispatcher.sandbox.config import SandboxConfig
    from dispatcher.sandbox.server import serve as run
    from dispatcher.settings import get_settings

    settings = get_settings()
    cfg = SandboxConfig(
        account_sid=account_sid or settings.account_sid,
        auth_token=auth_token or settings.auth_token,
        inbound_url=inbound_url or settings.public_base_url.rstrip("/") + "/twilio/inbound",
    )
    patch: dict[str, object] = {}
    if config_file is not None:
        try:
            patch.update(json.loads(config_file.read_text()))
        except (OSError, ValueError) as e:
            raise InputError(f"cannot read sandbox config {config_file}: {e}") from e
    patch["strict_from"] = strict_from or bool(patch.get("strict_from"))
    if sender:
        patch["senders"] = list(sender)
    faults = dict(patch.get("faults") or {})  # type: ignore[call-overload]
    for key, value, default in (
        ("rate_429", fault_429, 0.0),
        ("rate_500", fault_500, 0.0),
        ("slow_fraction", fault_slow, 0.0),
        ("slow_seconds", fault_slow_seconds, 0.5),
        ("timeout_after_accept", fault_timeout, 0.0),
        ("timeout_mode", fault_timeout_mode, "delay"),
        ("drop_callbacks", fault_drop_callbacks, 0.0),
        ("seed", seed, 1234),
    ):
        if value != default or key not in faults:
            faults[key] = value
    patch["faults"] = faults
    if filter_30007:
        errors = dict(patch.get("delivery_errors") or {})  # type: ignore[call-overload]
        errors[30007] = filter_30007
        patch["delivery_errors"] = errors
    if final_after != 0.5:
        sched = dict(patch.get("schedule") or {})  # type: ignore[call-overload]
        sched["final_after_s"] = final_after
        patch["schedule"] = sched
    try:
        cfg = cfg.updated(patch)
    except TypeError as e:
        raise ConfigError(f"invalid sandbox config: {e}") from e
    err().print(f"sandbox carrier on http://{host}:{port} (account {cfg.account_sid})")
    run(cfg, host, port, log_level=log_level)


@app.command("reply")
def reply(
    phone: str = typer.Argument(..., help="Who replies (inbound From): a US number."),
    body: str = typer.Argument(..., help="Text of the reply, e.g. STOP."),
    to: str = typer.Option("+15005550006", "--to", help="Our number that receives the reply."),
    url: str | None = typer.Option(
        None, "--url", help="Webhook URL (default: public_base_url + /twilio/inbound)."
    ),
    messaging_service_sid: str | None = typer.Option(None, help="MessagingServiceSid to include."),
    as_json: bool = JsonOpt,
) -> None:
    """Post a signed inbound-message webhook to the product, as Twilio would."""
    import httpx

    from dispatcher.phones import normalize_phone
    from dispatcher.sandbox.inbound import post_inbound
    from dispatcher.settings import get_settings

    phone = normalize_phone(phone)  # the From the product would accept (InvalidPhoneError)
    settings = get_settings()
    target = url or settings.public_base_url.rstrip("/") + "/twilio/inbound"
    try:
        resp = post_inbound(
            target,
            account_sid=settings.account_sid,
            auth_token=settings.auth_token,
            from_=phone,
            to=to,
            body=body,
            messaging_service_sid=messaging_service_sid,
        )
    except httpx.HTTPError as e:
        raise InputError(f"cannot reach {target}: {type(e).__name__}") from e
    doc = {"url": target, "status": resp.status_code, "response": resp.text[:2000]}
    report(doc, as_json)
    if resp.status_code >= 400:
        raise InputError(f"webhook answered HTTP {resp.status_code}")
