"""Workers announce themselves by heartbeat; departed ones are forgotten, without
losing any task still pending on them."""

from __future__ import annotations

import anyio
import anyio.to_thread
import pytest
from click.testing import CliRunner

import loom_redis as loom
from loom_redis.cli import main
from loom_redis.codec import encode
from loom_redis.store.keys import WORKER_GROUP
from loom_redis.testing import running_worker

pytestmark = pytest.mark.anyio


async def test_running_workers_are_listed(
    client: loom.Client, redis_url: str, namespace: str
) -> None:
    async with running_worker(redis_url, namespace, concurrency=3, name="listed-worker"):
        with anyio.fail_after(5):
            while not (workers := await client.workers()):
                await anyio.sleep(0.05)
        [worker] = workers
        assert worker["name"] == "listed-worker"
        assert worker["concurrency"] == 3 and worker["queues"] == ["default"]
        listed = await anyio.to_thread.run_sync(
            lambda: CliRunner().invoke(
                main, ["workers", "--url", redis_url, "--namespace", namespace]
            )
        )
        assert listed.exit_code == 0, listed.output
        assert "listed-worker" in listed.output and "0/3" in listed.output
    assert await client.workers() == []  # a drained worker removes its heartbeat


async def test_departed_workers_are_pruned_but_not_their_pending_tasks(
    client: loom.Client,
) -> None:
    store = client.store
    await store.ensure_groups(["default"])
    streams = store.queue_keys(["default"])
    await store.redis.hset(
        store.keys.workers(),
        "ghost",
        encode(
            {
                "name": "ghost",
                "host": "h",
                "pid": 1,
                "queues": ["default"],
                "concurrency": 1,
                "in_flight": 0,
                "started_ms": 0,
                "seen_ms": 0,
            }
        ),
    )
    queue = next(iter(streams))
    await store.redis.xadd(queue, {"k": "w", "wf": "nobody"})
    # "holder" has a task pending; "idler" has none.
    await store.redis.xreadgroup(WORKER_GROUP, "holder", {queue: ">"}, count=1)
    await store.redis.xgroup_createconsumer(queue, WORKER_GROUP, "idler")
    heartbeats, consumers = await store.prune_departed(
        streams, heartbeat_older_than_ms=60_000, consumer_idle_ms=-1, keep="me"
    )
    assert (heartbeats, consumers) == (1, 1)
    assert await client.workers() == []
    names = {c["name"].decode() for c in await store.redis.xinfo_consumers(queue, WORKER_GROUP)}
    assert names == {"holder"}
    assert (await store.redis.xpending(queue, WORKER_GROUP))["pending"] == 1
