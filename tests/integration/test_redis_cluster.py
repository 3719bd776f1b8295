"""Redis Cluster, for real (issue 21): a three-master cluster of our own on free loopback ports
(``redis-server --cluster-enabled yes`` + ``redis-cli --cluster create``), torn down at the end.

* the throttle's own test suite (tests/unit/throttle/test_reserve.py) runs on it through
  redis-py's ``RedisCluster``: every key of one script call in one slot (the brand hash tag);
* the halt keys (``{halt}``) and the daily repetition records (``{r:<sender>}``) work on it;
* a pipeline run with the broker on a plain Redis and ``DISPATCHER_THROTTLE_REDIS_URL`` on the
  cluster: every message once, every window under its limit, the throttle's keys on the cluster.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.cluster import RedisCluster

from dispatcher import keys
from dispatcher.clock import FakeClock
from dispatcher.halts import Halts
from dispatcher.metrics_daily import DailyRecorder
from tests.harness import check_delivery, check_windows, launch, outbox_rows, seed, wait_run_done
from tests.procs import Proc, free_port, wait_for
from tests.unit.throttle.test_reserve import *  # noqa: F403  (the same cases on the cluster)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        shutil.which("redis-server") is None or shutil.which("redis-cli") is None,
        reason="redis-server / redis-cli not installed",
    ),
]


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class Cluster:
    """Three masters, no replicas, no persistence; ``stop()`` kills them and removes their
    directory."""

    def __init__(self, masters: int = 3) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="dispatcher-cluster-"))
        self.ports: list[int] = []
        self.procs: list[Proc] = []
        for _ in range(masters):
            for attempt in range(5):  # a port (or its bus port) taken meanwhile: another pair
                port, proc = self._start_node()
                try:
                    wait_for(lambda p=port, pr=proc: self._ping(p, pr), 15, f"node {port}")
                    break
                except RuntimeError:
                    proc.stop()
                    if attempt == 4:
                        raise
            self.ports.append(port)
            self.procs.append(proc)
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *(f"127.0.0.1:{p}" for p in self.ports),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        wait_for(self._ok, 30, "cluster_state:ok on every node")

    def _start_node(self) -> tuple[int, Proc]:
        """A cluster node on a free port whose bus port (port + 10000) is free too."""
        port = free_port()
        while port + 10_000 > 65_535 or not _bindable(port + 10_000):
            port = free_port()
        node = self.dir / str(port)
        node.mkdir(exist_ok=True)
        argv = [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(node),
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            "2000",
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        return port, Proc(f"redis-cluster-{port}", argv, dict(os.environ), self.dir, cwd=node)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}"

    @staticmethod
    def _ping(port: int, proc: Proc) -> bool:
        if not proc.alive():
            raise RuntimeError(f"redis-server {port} exited:\n{proc.tail()}")
        r = redis.Redis(port=port, socket_timeout=0.5)
        try:
            return bool(r.ping())
        except redis.RedisError:
            return False
        finally:
            r.close()

    def _ok(self) -> bool:
        for port in self.ports:
            r = redis.Redis(port=port, socket_timeout=1)
            try:
                if r.cluster("info").get("cluster_state") != "ok":
                    return False
            finally:
                r.close()
        return True

    def client(self) -> RedisCluster:
        return RedisCluster.from_url(self.url, socket_timeout=5)

    def stop(self) -> None:
        for p in self.procs:
            p.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    c = Cluster()
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def redis_client(cluster: Cluster) -> Iterator[RedisCluster]:  # overrides the fakeredis one
    r = cluster.client()
    r.flushall()
    yield r
    r.flushall()
    r.close()


def test_the_cluster_spreads_the_brands_over_its_masters(redis_client: RedisCluster) -> None:
    """The brand hash tag keeps one brand's keys in one slot, and different brands land on
    different masters (the cluster is really used, not one node)."""
    nodes = {redis_client.get_node_from_key(keys.bucket_key(b, "c", "x")).port for b in range(30)}
    assert len(nodes) == 3
    for b in range(30):
        slot = redis_client.keyslot(keys.throttle_epoch_key(b))
        assert redis_client.keyslot(keys.bucket_key(b, "sender", "+15005550006")) == slot
        assert redis_client.keyslot(keys.throttle_release_key(b, "r1")) == slot
        assert redis_client.keyslot(keys.throttle_sum_key(keys.bucket_key(b, "c", "y"))) == slot


def test_halt_keys_on_the_cluster(redis_client: RedisCluster) -> None:
    h = Halts(redis_client)
    epoch = h.epoch()
    assert h.clear(epoch, contact_id=1, run_id=2, campaign_id=3)
    h.signal(contacts=[1])
    assert not h.clear(epoch, contact_id=1, run_id=2, campaign_id=3)
    assert h.clear(epoch, contact_id=4, run_id=2, campaign_id=3)
    redis_client.flushall()  # Redis lost its keys: the epoch changes
    assert not h.clear(epoch, contact_id=4, run_id=2, campaign_id=3)


def test_repetition_records_on_the_cluster_survive_a_script_flush(
    redis_client: RedisCluster,
) -> None:
    rec = DailyRecorder(redis_client, FakeClock())
    day = FakeClock().now().strftime("%Y-%m-%d")
    with rec.batch():
        for i in range(20):
            rec.record(f"+1500555{i:04d}", "d1", "brand", 1)
    redis_client.script_flush()  # a node that restarted knows no script: NOSCRIPT, then reload
    with rec.batch():
        for i in range(20):
            rec.record(f"+1500555{i:04d}", "d1", "brand", 1)
    for i in range(20):
        counts: Any = redis_client.hget(keys.repetition_counts_key(f"+1500555{i:04d}", day), "d1")
        assert int(counts) == 2


@pytest.mark.timeout(900)
def test_a_pipeline_run_with_the_throttle_on_the_cluster(dist, cluster, tmp_path):
    """The broker on a plain Redis (Dramatiq's RedisBroker does not speak Cluster), the
    throttle, halt keys and daily records on the cluster (``DISPATCHER_THROTTLE_REDIS_URL``)."""
    stack, db = dist
    c = cluster.client()
    c.flushall()
    seeded = seed(db, tmp_path, consented=150, opted_out=10, window_limit=20, window_seconds=1)
    stack.extra_env["DISPATCHER_THROTTLE_REDIS_URL"] = cluster.url
    stack.up(processes=1, threads=4)
    run_id = launch(db, seeded)
    counts = wait_run_done(db, run_id, timeout=600, stack=stack, stall=60)
    records = stack.carrier.records()
    rep = check_delivery(
        records, outbox_rows(db, [run_id]), expected=seeded.consented, forbidden=seeded.opted_out
    )
    assert rep.ok(), rep.summary()
    assert rep.duplicates == 0 and rep.lost == 0 and counts.get("delivered", 0) == 150
    for w in check_windows(records, seeded):
        assert w.ok(), str(w)
    on_cluster = [k.decode() for k in c.scan_iter("dispatcher:*")]
    assert any(k.startswith("dispatcher:tb:") for k in on_cluster), on_cluster
    assert any(k.startswith("dispatcher:{halt}:") for k in on_cluster), on_cluster
    broker = redis.Redis.from_url(stack.redis_url)
    assert not [k for k in broker.scan_iter("dispatcher:tb:*")]
    assert not [k for k in broker.scan_iter("dispatcher:{halt}:*")]
    c.close()
    broker.close()
