"""Configuration from the environment (prefix ``DISPATCHER_``).  Nothing is read at import time:
call :func:`get_settings` (cached) or build ``Settings(...)`` explicitly in tests.

``Settings()`` reads what pydantic-settings' ``BaseSettings`` read for these fields, with the
same precedence: a value given to the constructor, else the environment variable
``DISPATCHER_<FIELD>`` (any case; a field's ``validation_alias`` names replace it), else the
default; an empty variable counts as unset.  It is a plain pydantic model because every CLI
command builds it: ``import pydantic_settings`` brought argparse, asyncio and python-dotenv and
cost ~0.04-0.08 s of CPU per command, a fifth of a quick command's start-up (measured with
``python -X importtime`` and bench/cli_startup.py, whose docstring has the numbers).  Every field
is a scalar, so no value needs the JSON decoding pydantic-settings did for complex fields."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator

from dispatcher.errors import ConfigError

ENV_PREFIX = "DISPATCHER_"

EMBEDDED_DIR = Path(".dispatcher")
#: Credentials the embedded sandbox carrier accepts when no Twilio credentials are configured.
SANDBOX_ACCOUNT_SID = "AC" + "0" * 31 + "1"
SANDBOX_AUTH_TOKEN = "sandbox-auth-token-0000000000000"


class Settings(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    database_url: str = Field(
        default=f"sqlite:///{EMBEDDED_DIR}/dispatcher.db",
        description="SQLAlchemy URL; default is the embedded SQLite file.",
    )
    redis_url: str | None = Field(
        default=None, description="Redis for broker + throttle; unset = embedded (fakeredis)."
    )
    throttle_redis_url: str | None = Field(
        default=None,
        description="Redis (or Redis Cluster: detected) for the throttle, the halt keys and the "
        "daily repetition/volume records; unset = DISPATCHER_REDIS_URL.  The broker stays on "
        "DISPATCHER_REDIS_URL (Dramatiq's RedisBroker does not speak Cluster).",
    )
    twilio_account_sid: str | None = Field(
        default=None,
        validation_alias=AliasChoices("TWILIO_ACCOUNT_SID", "DISPATCHER_TWILIO_ACCOUNT_SID"),
        description="Twilio Account SID (unset in embedded mode = the sandbox's).",
    )
    twilio_auth_token: str | None = Field(
        default=None,
        validation_alias=AliasChoices("TWILIO_AUTH_TOKEN", "DISPATCHER_TWILIO_AUTH_TOKEN"),
        description="Twilio Auth Token; also the key for webhook signatures.",
    )
    twilio_api_base_url: str | None = Field(
        default=None,
        description="Twilio API base URL; unset = api.twilio.com, set = e.g. the sandbox carrier.",
    )
    default_timezone: str = Field(
        default="America/New_York",
        description="Zone for operator-facing times (--at without an offset).",
    )
    public_base_url: str = Field(
        default="http://127.0.0.1:8000",
        description="URL at which Twilio reaches the webhooks (signatures are checked against it).",
    )
    queue_name: str = Field(default="deliver", description="Dramatiq queue for deliveries.")
    metrics_port: int = Field(
        default=9108,
        ge=1,
        le=65535,
        description="Port of a worker host's metrics exporter (the sum of its worker processes).",
    )
    validity_period_s: int = Field(
        default=36000, description="Upper bound for Twilio ValidityPeriod (1..36000 s)."
    )
    throttle_grace_s: float = Field(
        default=0.5,
        ge=0.0,
        le=60.0,
        description="The least throttle grace: how late after its booked slot a send may still "
        "go (a bucket's own grace is 1 % of its period, at most 1 s); windows are spaced by "
        "period + grace (docs/throttle.md).",
    )
    deliver_batch: int = Field(
        default=20,
        ge=1,
        le=500,
        description="Outbox rows per released queue message: loaded, gated and claimed "
        "together, then checked, throttled and sent one at a time.",
    )
    log_level: str = Field(default="WARNING", description="Log level (logs go to stderr).")
    advanced_opt_out: bool = Field(
        default=False,
        description="Twilio Advanced Opt-Out answers STOP/START/HELP itself: webhooks stay silent.",
    )

    @classmethod
    def env_names(cls, name: str) -> tuple[str, ...]:
        """The environment variables a field is read from, first found wins (upper case)."""
        alias = cls.model_fields[name].validation_alias
        if alias is None:
            return ((ENV_PREFIX + name).upper(),)
        if isinstance(alias, str):
            return (alias.upper(),)
        assert isinstance(alias, AliasChoices)
        return tuple(str(c).upper() for c in alias.choices)

    @model_validator(mode="before")
    @classmethod
    def _from_environment(cls, data: Any) -> Any:
        """Fields the constructor was not given come from the environment."""
        if not isinstance(data, dict):
            return data
        env = {k.upper(): v for k, v in os.environ.items() if v != ""}
        given = {k.upper() for k in data}
        found: dict[str, Any] = {}
        for name in cls.model_fields:
            names = cls.env_names(name)
            if name.upper() in given or given.intersection(names):
                continue
            value = next((env[n] for n in names if n in env), None)
            if value is not None:
                found[name] = value
        return {**found, **data}

    @field_validator("database_url")
    @classmethod
    def _normalise_db_url(cls, v: str) -> str:
        if v.startswith("postgres://"):
            v = "postgresql://" + v[len("postgres://") :]
        if v.startswith("postgresql://"):
            v = "postgresql+psycopg://" + v[len("postgresql://") :]
        return v

    @field_validator("default_timezone")
    @classmethod
    def _check_tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as e:
            raise ValueError(f"unknown time zone {v!r}") from e
        return v

    @field_validator("validity_period_s")
    @classmethod
    def _check_validity(cls, v: int) -> int:
        if not 1 <= v <= 36000:
            raise ValueError("must be between 1 and 36000 seconds")
        return v

    @property
    def embedded(self) -> bool:
        """No Redis configured: broker and throttle run in process on fakeredis."""
        return self.redis_url is None

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def account_sid(self) -> str:
        return self.twilio_account_sid or SANDBOX_ACCOUNT_SID

    @property
    def auth_token(self) -> str:
        return self.twilio_auth_token or SANDBOX_AUTH_TOKEN


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    try:
        return Settings()
    except ValueError as e:  # pydantic.ValidationError is a ValueError
        first = str(e).splitlines()
        raise ConfigError("invalid settings: " + " ".join(x.strip() for x in first[1:3])) from e
