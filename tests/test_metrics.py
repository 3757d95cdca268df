"""Worker metrics read at scrape time."""

from __future__ import annotations

import anyio
import pytest
from prometheus_client import REGISTRY

import loom_redis as loom
from loom_redis.testing import running_worker

pytestmark = pytest.mark.anyio

released = anyio.Event()


@loom.activity(name="metrics_wait")
async def wait_for_release() -> str:
    await released.wait()
    return "released"


@loom.workflow(name="metrics_Waiting")
class Waiting(loom.Workflow[dict, dict]):
    @loom.step()
    async def wait(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        await ctx.state.set("said", await ctx.activity(wait_for_release))


def in_flight() -> float | None:
    return REGISTRY.get_sample_value("loom_tasks_in_flight")


async def test_tasks_in_flight_are_counted_at_scrape_time(
    client: loom.Client, redis_url: str, namespace: str
) -> None:
    global released
    released = anyio.Event()
    async with running_worker(redis_url, namespace, eager_seconds=0) as worker:
        assert in_flight() == 0
        handle = await client.start(Waiting, {})
        with anyio.fail_after(10):
            while not worker._in_flight:  # the activity task runs, waiting
                await anyio.sleep(0.01)
        assert in_flight() == len(worker._in_flight) == 1
        released.set()
        assert await handle.result(timeout=10) == {"said": "released"}
        with anyio.fail_after(10):  # the worker finishes the task after the commit
            while in_flight() != 0:
                await anyio.sleep(0.01)
        assert not worker._in_flight
    assert in_flight() == 0  # a stopped worker counts nothing
