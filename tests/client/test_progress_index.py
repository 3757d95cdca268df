"""Progress reads only an owner's open workflows: a workflow leaves the owner's index
when it ends, whatever way it ends."""

from __future__ import annotations

import pytest

import loom_redis as loom
from loom_redis.testing import running_worker

pytestmark = pytest.mark.anyio


@loom.activity(name="progidx_work")
async def work(fail: bool) -> str:
    if fail:
        raise RuntimeError("asked to fail")
    return "done"


@loom.workflow(name="ProgressIndexWorkflow", agent="Iris")
class Job(loom.Workflow[dict, dict]):
    @loom.step(description="working")
    async def run(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        if ctx.input.get("wait"):
            await ctx.wait_for_signal("go")
        await ctx.state.set("outcome", await ctx.activity(work, ctx.input.get("fail", False)))


async def _indexed(client: loom.Client, owner: str) -> set[str]:
    store = client.store
    members: set[str] = set()
    for shard in range(store.keys.shards):
        members |= {
            m.decode()
            for m in await store.redis.zrange(store.keys.owner_index(shard, owner), 0, -1)
        }
    return members


async def test_ended_workflows_leave_the_owner_index(
    client: loom.Client, redis_url: str, namespace: str
) -> None:
    async with running_worker(redis_url, namespace):
        done = await Job.start({}, owner="olga")
        failed = await Job.start({"fail": True}, owner="olga")
        cancelled = await Job.start({"wait": True}, owner="olga")
        waiting = await Job.start({"wait": True}, owner="olga")
        assert await done.result(timeout=10) == {"outcome": "done"}
        with pytest.raises(loom.ActivityFailedError):
            await failed.result(timeout=10)
        await cancelled.cancel("no longer needed")
        with pytest.raises(loom.WorkflowCancelledError):
            await cancelled.result(timeout=10)
        assert await _indexed(client, "olga") == {waiting.workflow_id}
        progress = await client.get_progress("olga")
        assert [w["workflow_id"] for w in progress["workflows"]] == [waiting.workflow_id]
        assert progress["workflows"][0]["message"] == "Iris is working"
        await waiting.signal("go")
        await waiting.result(timeout=10)
    assert await _indexed(client, "olga") == set()
    assert (await client.get_progress("olga"))["workflows"] == []
