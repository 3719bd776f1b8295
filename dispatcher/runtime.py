"""The one composition root: settings in, collaborators out.  CLI, workers, scheduler and
webhooks all build a Runtime; tests swap the edges (clock, redis, gateway, metrics).  This is the
only place that builds the adapters behind the delivery ports (``dispatcher/delivery/ports.py``):
the Redis throttle, the Twilio gateway, the halt keys, the metrics.

Embedded mode (no ``DISPATCHER_REDIS_URL``): fakeredis in process (same Lua throttle), SQLite,
and — unless ``DISPATCHER_TWILIO_API_BASE_URL`` is set — the sandbox carrier in process, reached
by the official twilio client through an in-process HTTP transport, calling the webhook app in
process for status callbacks.
"""

from __future__ import annotations

import logging
import threading
from functools import cached_property
from typing import TYPE_CHECKING, Any

from dispatcher.clock import Clock, SystemClock
from dispatcher.settings import Settings

if TYPE_CHECKING:
    from fastapi import FastAPI

    from dispatcher.delivery.pipeline import Pipeline
    from dispatcher.delivery.ports import Enqueue
    from dispatcher.gateway.client import TwilioGateway
    from dispatcher.halts import Halts, NoHaltKeys
    from dispatcher.metrics import Metrics
    from dispatcher.store import Database
    from dispatcher.throttle.redis import RedisThrottle

log = logging.getLogger(__name__)

_fake_servers: dict[str, Any] = {}
_fake_lock = threading.Lock()


def embedded_redis(name: str = "default") -> Any:
    """A fakeredis client on a process-wide server (Lua via lupa), shared by broker + throttle."""
    import fakeredis

    with _fake_lock:
        server = _fake_servers.get(name)
        if server is None:
            server = _fake_servers[name] = fakeredis.FakeServer()
    return fakeredis.FakeRedis(server=server)


class Runtime:
    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock | None = None,
        redis: Any = None,
        gateway: TwilioGateway | None = None,
        metrics: Metrics | None = None,
        sandbox_config: Any = None,
    ) -> None:
        self.settings = settings
        self.clock: Clock = clock or SystemClock()
        self._injected = {k for k, v in (("redis", redis), ("gateway", gateway)) if v is not None}
        if redis is not None:
            self.__dict__["redis"] = redis
        if gateway is not None:
            self.__dict__["gateway"] = gateway
        if metrics is not None:
            self.__dict__["metrics"] = metrics
        self._sandbox_config = sandbox_config
        self.sandbox: Any = None  # the in-process sandbox carrier, when there is one

    # --------------------------------------------------------------------------- edges
    @cached_property
    def db(self) -> Database:
        from dispatcher.store import open_database

        return open_database(self.settings.database_url)

    @cached_property
    def halts(self) -> Halts | NoHaltKeys:
        """What a STOP, pause or cancel signals before it commits (``dispatcher/halts.py``), on
        its own client with short timeouts and no retries: a halt signals inside its open
        transaction, and a worker whose check fails asks the database.  Building it makes no
        connection.

        Embedded (no Redis URL, none handed in): Redis is this process's own fakeredis, which
        no other process reads, and the workers of the embedded stack check every row in the
        database: there is nobody to signal, so nothing is (and a CLI command that pauses or
        revokes does not import a Redis client).  PostgreSQL without a shared Redis refuses a
        halt: it would commit unseen by the workers' halt check."""
        from dispatcher.halts import Halts, NoHaltKeys

        if self.settings.redis_url is None:
            if self.shared_redis:
                return Halts(self.redis)
            if not self.settings.is_sqlite:
                return NoHaltKeys(
                    refusal="DISPATCHER_REDIS_URL is not set: a pause, cancel or opt-out "
                    "recorded in this PostgreSQL database would not reach the workers' halt "
                    "check; set it as the workers have it"
                )
            return NoHaltKeys()
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        from dispatcher.halts import Reconnects, client

        url = self.settings.throttle_redis_url or self.settings.redis_url
        if self.throttle_on_cluster:
            # a cluster client has a pool per node: its reconnects are not counted; a failover
            # is seen as a changed epoch only if the promoted replica lacks the epoch key
            return Halts(_cluster(url, socket_timeout=1.0, socket_connect_timeout=1.0))
        count = Reconnects()  # a restart or failover since an epoch was read: not clear
        return Halts(
            client(
                url,
                count,
                socket_timeout=1.0,
                socket_connect_timeout=1.0,
                retry=Retry(NoBackoff(), 0),
            ),
            reconnects=count,
        )

    @property
    def shared_redis(self) -> bool:
        """Every process of the deployment sees this Redis (a server, or one handed in by a
        test); the embedded mode's own fakeredis is seen by this process only."""
        return self.settings.redis_url is not None or "redis" in self._injected

    @cached_property
    def redis(self) -> Any:
        if self.settings.redis_url is None:
            return embedded_redis()
        import redis

        return redis.Redis.from_url(
            self.settings.redis_url, socket_timeout=10, health_check_interval=30
        )

    @cached_property
    def throttle_on_cluster(self) -> bool:
        """``DISPATCHER_THROTTLE_REDIS_URL`` names a Redis Cluster (asked once: INFO cluster)."""
        url = self.settings.throttle_redis_url
        if url is None:
            return False
        import redis

        probe = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        try:
            return bool(probe.info("cluster").get("cluster_enabled"))
        finally:
            probe.close()

    @cached_property
    def throttle_redis(self) -> Any:
        """Where the throttle, the halt keys and the daily records live: the Redis (or Redis
        Cluster) of ``DISPATCHER_THROTTLE_REDIS_URL``, else the broker's."""
        url = self.settings.throttle_redis_url
        if url is None:
            return self.redis
        if self.throttle_on_cluster:
            return _cluster(url, socket_timeout=10)
        import redis

        return redis.Redis.from_url(url, socket_timeout=10, health_check_interval=30)

    @cached_property
    def throttle(self) -> RedisThrottle:
        from dispatcher.throttle.redis import RedisThrottle
        from dispatcher.throttle.seed import OutboxSeeder

        # production: Redis TIME is the one clock of every host; tests inject theirs.  After a
        # loss of Redis, each brand's buckets are re-seeded from the outbox before any slot
        seeder = OutboxSeeder(self.db, min_grace_s=self.settings.throttle_grace_s)
        clock = None if isinstance(self.clock, SystemClock) else self.clock
        return RedisThrottle(self.throttle_redis, clock=clock, seeder=seeder)

    @cached_property
    def metrics(self) -> Metrics:
        from dispatcher.metrics import Metrics, known_campaigns

        # the Redis daily gauges are the deployment's: only the leading scheduler serves them
        # (workers.scheduler.Scheduler calls serve_daily), so no sum counts them twice
        m = Metrics(
            redis=self.throttle_redis,
            clock=self.clock,
            daily_collector=False,
            queue_name=self.settings.queue_name,
        )
        # every campaign's counters exist at 0 before their first event (issue 20.4)
        m.prime_from(lambda: known_campaigns(self.db))
        return m

    @cached_property
    def webhook_app(self) -> FastAPI:
        from dispatcher.webhooks import create_app

        return create_app(self)

    @cached_property
    def gateway(self) -> TwilioGateway:
        from dispatcher.gateway.client import TwilioGateway

        s = self.settings
        if s.twilio_api_base_url or not s.embedded or s.twilio_account_sid:
            return TwilioGateway(s.account_sid, s.auth_token, s.twilio_api_base_url)
        return self._in_process_sandbox_gateway()

    def _in_process_sandbox_gateway(self) -> TwilioGateway:
        from dispatcher.gateway.client import TwilioGateway
        from dispatcher.gateway.transport import AsgiHttpClient
        from dispatcher.sandbox.app import create_app
        from dispatcher.sandbox.callbacks import AsgiCallbackSender
        from dispatcher.sandbox.carrier import Sandbox
        from dispatcher.sandbox.config import SandboxConfig

        s = self.settings
        config = self._sandbox_config or SandboxConfig(
            account_sid=s.account_sid,
            auth_token=s.auth_token,
            inbound_url=s.public_base_url.rstrip("/") + "/twilio/inbound",
        )
        sb = Sandbox(config, clock=self.clock, callbacks=AsgiCallbackSender(self.webhook_app))
        self.sandbox = sb
        gw = TwilioGateway(
            s.account_sid,
            s.auth_token,
            "http://sandbox.invalid",
            http_client=AsgiHttpClient(create_app(sandbox=sb, ticker=False)),
        )
        sb.start()
        return gw

    @property
    def status_callback_url(self) -> str:
        return self.settings.public_base_url.rstrip("/") + "/twilio/status"

    def render_metrics(self) -> tuple[bytes, str]:
        from dispatcher.metrics import render_latest

        return render_latest(self.metrics)

    def pipeline(self, enqueue: Enqueue) -> Pipeline:
        from dispatcher.compliance import template_lint
        from dispatcher.delivery.config import DeliverConfig
        from dispatcher.delivery.pipeline import Pipeline
        from dispatcher.halts import NoHaltKeys

        template_lint.warm()  # its second of CPU now, not in a run's middle (its docstring)
        return Pipeline(
            db=self.db,
            throttle=self.throttle,
            gateway=self.gateway,
            clock=self.clock,
            enqueue=enqueue,
            metrics=self.metrics,
            # a CLI in another process cannot reach the embedded fakeredis: there, every row is
            # checked in the database before its send (SQLite in process: cheap)
            halt_keys=self.halts if self.shared_redis else NoHaltKeys(),
            halts=self.halts,
            status_callback=self.status_callback_url,
            validity_cap_s=self.settings.validity_period_s,
            config=DeliverConfig(min_grace_s=self.settings.throttle_grace_s),
        )

    def close(self) -> None:
        if self.sandbox is not None:
            self.sandbox.stop()
        app = self.__dict__.get("webhook_app")
        if app is not None:  # its background work (status callbacks kept for a retry)
            app.state.webhooks.close()
        gw = self.__dict__.get("gateway")
        if gw is not None:
            gw.close()


def _cluster(url: str, **kwargs: Any) -> Any:
    """A redis-py Redis Cluster client from one node's URL (it discovers the others)."""
    from redis.cluster import RedisCluster

    return RedisCluster.from_url(url, **kwargs)
