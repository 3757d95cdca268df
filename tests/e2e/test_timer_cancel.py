"""A signal that arrives before wait_for_signal's timeout cancels the timeout's timer:
it never fires into history, and leaves nothing in the timer set."""

from __future__ import annotations

import anyio
import pytest

import loom_redis as loom
from loom_redis.events import EventType
from loom_redis.testing import running_worker

pytestmark = pytest.mark.anyio

TIMEOUT = 0.4


@loom.workflow(name="TimerCancelWorkflow")
class Approval(loom.Workflow[dict, dict]):
    @loom.step()
    async def approve(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        await ctx.state.set("first", await ctx.wait_for_signal("first", timeout=TIMEOUT))
        # Wait past the first timeout's due time: a timer left behind would fire now.
        await ctx.state.set("second", await ctx.wait_for_signal("second"))


async def _wait_for_event(handle: loom.WorkflowHandle, event_type: EventType) -> None:
    with anyio.fail_after(10):
        while event_type not in [e.type for e in await handle.history()]:
            await anyio.sleep(0.02)


async def test_a_signal_in_time_cancels_the_timeout_timer(
    client: loom.Client, redis_url: str, namespace: str
) -> None:
    async with running_worker(redis_url, namespace):
        handle = await Approval.start({})
        await _wait_for_event(handle, EventType.TIMER_STARTED)  # else the signal is buffered
        await handle.signal("first", 1)
        await _wait_for_event(handle, EventType.TIMER_CANCELLED)
        await anyio.sleep(TIMEOUT * 2)
        await handle.signal("second", 2)
        assert await handle.result(timeout=10) == {"first": 1, "second": 2}
    history = await handle.history()
    types = [e.type for e in history]
    assert types.count(EventType.TIMER_STARTED) == 1
    assert EventType.TIMER_FIRED not in types
    [cancel] = [e for e in history if e.type == EventType.TIMER_CANCELLED]
    [started] = [e for e in history if e.type == EventType.TIMER_STARTED]
    assert cancel.data == {"timer_seq": started.seq}
    store = client.store
    shard = store.keys.shard_of(handle.workflow_id)
    assert await store.redis.zcard(store.keys.timers(shard)) == 0
