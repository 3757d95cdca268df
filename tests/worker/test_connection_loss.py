"""A worker that loses its Redis connection for 10 s reconnects by itself, finishes its
work, and nothing is committed twice."""

from __future__ import annotations

import asyncio
from collections import Counter

import anyio
import pytest

import loom_redis as loom
from loom_redis.events import COMMAND_TYPES, EventType
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
