"""A worker that loses its Redis connection for 10 s reconnects by itself, finishes its
work, and nothing is committed twice."""

from __future__ import annotations

import asyncio
from collections import Counter

import anyio
import pytest

import loom_redis as loom
from loom_redis.events import COMMAND_TYPES, EventType
from loom_redis.store.keys import WORKER_GROUP
from loom_redis.testing import running_worker
from tests.support import CuttableProxy

pytestmark = [pytest.mark.anyio, pytest.mark.standalone]

OUTAGE_SECONDS = 10


@loom.activity(name="connloss_step")
async def step(value: int) -> int:
    await asyncio.sleep(0.3)
    return value + 1


@loom.workflow(name="ConnectionLossWorkflow")
class Steps(loom.Workflow[dict, dict]):
    @loom.step()
    async def run(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        value = 0
        for _ in range(4):
            value = await ctx.activity(step, value)
        await ctx.sleep(seconds=0.5)
        await ctx.state.set("value", value)


async def test_worker_survives_a_ten_second_partition(
    client: loom.Client, redis_url: str, namespace: str
) -> None:
    proxy = CuttableProxy(int(redis_url.rsplit(":", 1)[1].split("/")[0]))
    await proxy.start()
    try:
        async with running_worker(proxy.url, namespace, concurrency=8) as worker:
            handles = [await Steps.start({}) for _ in range(8)]
            with anyio.fail_after(10):
                while not any(
                    e.type == EventType.ACTIVITY_COMPLETED for e in await handles[0].history()
                ):
                    await anyio.sleep(0.05)
            proxy.cut = True
            proxy.sever()
            # The producer side still reaches Redis: more work arrives during the outage.
            handles += [await Steps.start({}) for _ in range(4)]
            await anyio.sleep(OUTAGE_SECONDS)
            proxy.cut = False
            with anyio.fail_after(60):
                results = [await h.result() for h in handles]
            assert worker.name  # the same worker, never restarted
    finally:
        await proxy.stop()
    assert results == [{"value": 4}] * len(handles)
    for handle in handles:
        history = await handle.history()
        seqs = Counter(e.seq for e in history if e.type in COMMAND_TYPES)
        assert all(count == 1 for count in seqs.values()), seqs
        completions = Counter(e.seq for e in history if e.type == EventType.ACTIVITY_COMPLETED)
        assert sorted(completions.values()) == [1, 1, 1, 1]
        assert [e.type for e in history].count(EventType.TIMER_FIRED) == 1


async def test_tasks_delivered_in_a_reply_lost_with_the_connection_run_once_it_is_back(
    client: loom.Client, redis_url: str, namespace: str
) -> None:
    """Redis can deliver tasks to a worker (a read, a claim, a transition that takes the
    next task) and its reply be lost as the connection is cut: the tasks are pending on
    the worker, which never saw them. Back, it reads them and runs them, instead of
    leaving them until their lease ends (here two minutes)."""
    store = client.store
    await store.ensure_groups(["default"])
    proxy = CuttableProxy(int(redis_url.rsplit(":", 1)[1].split("/")[0]))
    await proxy.start()
    try:
        async with running_worker(
            proxy.url, namespace, name="cut-off", lease_seconds=120
        ) as worker:
            await anyio.sleep(0.3)  # its reads are blocked, waiting for tasks
            proxy.cut = True
            proxy.sever()
            handle = await client.start(Steps, {})
            # What the lost reply delivered: the workflow's first task, to the worker.
            queue = store.keys.queue(store.keys.shard_of(handle.workflow_id), "default")
            delivered = await store.redis.xreadgroup(WORKER_GROUP, worker.name, {queue: ">"})
            assert len(delivered[0][1]) == 1
            proxy.cut = False
            with anyio.fail_after(30):
                assert await handle.result() == {"value": 4}
    finally:
        await proxy.stop()
    history = await handle.history()
    assert [e.type for e in history].count(EventType.ACTIVITY_COMPLETED) == 4
