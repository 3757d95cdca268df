"""The shortest path through the engine: start, one activity, result."""

from __future__ import annotations

import pytest

import loom_redis as loom
from loom_redis.testing import running_worker

pytestmark = pytest.mark.anyio


@loom.activity(name="smoke_double")
async def double(value: int) -> int:
    return value * 2


@loom.workflow(name="SmokeWorkflow")
class SmokeWorkflow(loom.Workflow[dict, dict]):
    @loom.step()
    async def compute(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        await ctx.state.set("doubled", await ctx.activity(double, ctx.input["value"]))


async def test_one_activity_workflow_completes(
    client: loom.Client, redis_url: str, namespace: str
) -> None:
    async with running_worker(redis_url, namespace):
        handle = await SmokeWorkflow.start({"value": 21})
        assert await handle.result(timeout=10) == {"doubled": 42}
        assert await handle.status() == "COMPLETED"
