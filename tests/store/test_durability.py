"""durability="replicated": a transition is acknowledged once a replica holds it too
(WAIT in the same write), on a real master and replica. A replica that cannot
acknowledge (here: stopped with SIGSTOP) makes the transition fail as an unreachable
Redis does, retried, never reported as done."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
import redis
import redis.asyncio as aioredis

import loom_redis as loom
from loom_redis.errors import ConfigurationError, RedisUnavailableError
from loom_redis.store import Store
from loom_redis.testing import EmbeddedServer, running_worker
from tests.support import acl_rule, create_user, with_credentials
from tests.web_workflows import SleeperWorkflow

pytestmark = pytest.mark.anyio


def _linked(replica: EmbeddedServer, master: EmbeddedServer) -> None:
    """Wait until the replica has synced with the master."""
    client = redis.Redis(port=replica.port)
    deadline = time.monotonic() + 15
    try:
        while client.info("replication").get("master_link_status") != "up":
            assert time.monotonic() < deadline, "the replica did not sync"
            time.sleep(0.05)
    finally:
        client.close()


RUNS: Counter[str] = Counter()


@loom.activity(name="durability_once")
async def once(key: str) -> str:
    RUNS[key] += 1
    return key


@loom.workflow(name="durability_Once")
class OnceWorkflow(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step()
    async def run(self, ctx: loom.WorkflowContext[dict[str, Any], dict[str, Any]]) -> None:
        await ctx.state.set("done", await ctx.activity(once, ctx.workflow_id))


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[EmbeddedServer, EmbeddedServer]]:
    binary = os.environ.get("LOOM_TEST_SERVER_BINARY") or None
    with EmbeddedServer(binary=binary) as master, master.replica() as replica:
        _linked(replica, master)
        yield master, replica


@pytest.fixture
def paused_replica(servers: tuple[EmbeddedServer, EmbeddedServer]) -> Iterator[EmbeddedServer]:
    """The replica, stopped (SIGSTOP) for the test: it stays connected but acknowledges
    nothing."""
    replica = servers[1]
    assert replica.process is not None
    replica.process.send_signal(signal.SIGSTOP)
    try:
        yield replica
    finally:
        replica.process.send_signal(signal.SIGCONT)


async def test_a_replicated_start_is_on_the_replica_when_it_returns(
    servers: tuple[EmbeddedServer, EmbeddedServer], namespace: str
) -> None:
    master, replica = servers
    async with loom.Client.connect(
        master.url, namespace=namespace, durability="replicated"
    ) as client:
        handles = [await client.start(SleeperWorkflow, {"seconds": n}) for n in range(20)]
        meta_keys = [client.store.keys.meta(h.workflow_id) for h in handles]
    # Read at once, without waiting: each start returned only once the replica had it.
    on_replica = redis.Redis(port=replica.port)
    try:
        assert [on_replica.hget(key, "status") for key in meta_keys] == [b"PENDING"] * 20
    finally:
        on_replica.close()


async def test_a_start_no_replica_acknowledges_is_not_reported_as_made(
    servers: tuple[EmbeddedServer, EmbeddedServer],
    paused_replica: EmbeddedServer,
    namespace: str,
) -> None:
    master = servers[0]
    async with loom.Client.connect(
        master.url, namespace=namespace, durability="replicated", retry_seconds=1.5
    ) as client:
        with pytest.raises(RedisUnavailableError, match="no replica acknowledged the write"):
            await client.start(SleeperWorkflow, {"seconds": 1}, workflow_id="unconfirmed")
    # A repeat that finds the start already made (a fresh client: fresh connections,
    # which wrote nothing yet) is not acknowledged either: the replication mark
    # makes its WAIT cover the first write.
    async with loom.Client.connect(
        master.url, namespace=namespace, durability="replicated", retry_seconds=0
    ) as again:
        with pytest.raises(RedisUnavailableError, match="no replica acknowledged the write"):
            await again.start(
                SleeperWorkflow,
                {"seconds": 1},
                workflow_id="unconfirmed",
                id_reuse="return_existing",
            )
    # Asynchronous durability goes on without the replica.
    async with loom.Client.connect(master.url, namespace=namespace) as client:
        handle = await client.start(SleeperWorkflow, {"seconds": 1})
        assert await handle.status() == "PENDING"


async def test_the_documented_worker_user_may_make_replicated_transitions(
    servers: tuple[EmbeddedServer, EmbeddedServer], namespace: str
) -> None:
    master = servers[0]
    admin = aioredis.Redis.from_url(master.url)
    try:
        await create_user(admin, "durable-worker", "pw", acl_rule("loom-worker"))
    finally:
        await admin.aclose()
    url = with_credentials(master.url, "durable-worker", "pw")
    async with loom.Client.connect(url, namespace=namespace, durability="replicated") as client:
        handle = await client.start(SleeperWorkflow, {"seconds": 0})
        await handle.signal("ignored", {})
        assert await handle.status() == "PENDING"


async def test_replicated_durability_on_a_server_without_replicas_is_refused(
    redis_url: str, namespace: str
) -> None:
    if "cluster" in redis_url:
        pytest.skip("the suite's cluster has no replicas either, but is tested apart")
    with pytest.raises(ConfigurationError, match="durability 'replicated' needs a replica"):
        await Store.open(redis_url, namespace, durability="replicated")


async def test_durability_is_checked_by_name(
    redis_url: str, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConfigurationError, match="durability 'sync' is invalid"):
        await Store.open(redis_url, namespace, durability="sync")
    monkeypatch.setenv("LOOM_DURABILITY", "always")
    with pytest.raises(ConfigurationError, match="LOOM_DURABILITY='always' is invalid"):
        await Store.open(redis_url, namespace)


async def test_a_task_whose_delivery_no_replica_confirms_is_not_run_until_one_does(
    servers: tuple[EmbeddedServer, EmbeddedServer], namespace: str
) -> None:
    """Under durability "replicated" a worker runs no task whose delivery to it (its
    pending entry) is on the master only: after a failover the promoted replica would
    deliver it again to another worker, and its activity would run twice. The worker
    waits until a replica confirms the delivery, then runs it."""
    master, replica = servers
    assert replica.process is not None
    async with loom.Client.connect(
        master.url, namespace=namespace, durability="replicated"
    ) as client:
        handle = await client.start(OnceWorkflow, {})
        replica.process.send_signal(signal.SIGSTOP)
        try:
            async with running_worker(master.url, namespace, durability="replicated"):
                await anyio.sleep(2.5)  # it has read the task, and holds it
                assert RUNS[handle.workflow_id] == 0
                assert len(await handle.history()) == 1
                replica.process.send_signal(signal.SIGCONT)
                assert await handle.result(timeout=30) == {"done": handle.workflow_id}
        finally:
            replica.process.send_signal(signal.SIGCONT)
    assert RUNS[handle.workflow_id] == 1
