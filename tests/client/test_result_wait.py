"""result() waits on the workflow's close notice: it wakes once, at the close, with the
outcome, however many events the workflow appends first; several waiters all wake, and a
waiter that comes after the close (its notice gone) is answered at once. The client that
started a workflow waits with one BLMOVE: the start registered its wait."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
import redis.asyncio as aioredis

import loom_redis as loom
from loom_redis.testing import running_worker
from tests.support import admin_client, command_calls

pytestmark = pytest.mark.anyio

STEPS = 12


@loom.activity(name="result_wait_step")
async def step(value: int) -> int:
    return value + 1


@loom.workflow(name="result_wait_Counter")
class Counter(loom.Workflow[dict, dict]):
    """Counts to ctx.input["to"] with one activity per step, after a signal."""

    @loom.step()
    async def count(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        await ctx.wait_for_signal("go")
        value = 0
        for _ in range(ctx.input["to"]):
            value = await ctx.activity(step, value)
        await ctx.state.set("value", value)


@loom.workflow(name="result_wait_Refuser")
class Refuser(loom.Workflow[dict, dict]):
    @loom.step()
    async def refuse(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        await ctx.wait_for_signal("go")
        raise ValueError(f"refused order {ctx.input['order']}")


@pytest.fixture
async def admin(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A plain connection, to look at the keys."""
    redis = admin_client(redis_url)
    yield redis
    await redis.aclose()


async def test_result_wakes_once_at_the_close_not_at_each_event(
    client: loom.Client, admin: aioredis.Redis, redis_url: str, namespace: str
) -> None:
    async with running_worker(redis_url, namespace):
        handle = await client.start(Counter, {"to": STEPS}, workflow_id="rw-once")
        waiters = [client.get_handle("rw-once") for _ in range(3)]
        outcomes: list[Any] = []
        blocked_before = await command_calls(admin, "blmove")
        async with anyio.create_task_group() as group:
            for waiter in waiters:
                group.start_soon(lambda w=waiter: _collect(w, outcomes))
            await anyio.sleep(0.3)  # the three are blocked before the workflow moves
            await handle.signal("go")
        # Each waiter blocked once and woke at the close; the workflow appended more
        # than 2 * STEPS events meanwhile, each of which woke an XREAD waiter before.
        assert await command_calls(admin, "blmove") - blocked_before == len(waiters)
        assert len(await handle.history()) > 2 * STEPS
    assert outcomes == [{"value": STEPS}] * len(waiters)
    # The notice expires by itself: nobody deletes it, nothing keeps it.
    notice = client.store.keys.close_notice("rw-once")
    assert 0 < await admin.pttl(notice) <= 60_000


async def _collect(handle: loom.WorkflowHandle, outcomes: list[Any]) -> None:
    outcomes.append(await handle.result(timeout=30))


async def test_a_waiter_after_the_close_gets_the_outcome_at_once(
    client: loom.Client, admin: aioredis.Redis, redis_url: str, namespace: str
) -> None:
    async with running_worker(redis_url, namespace):
        done = await client.start(Counter, {"to": 1}, workflow_id="rw-late")
        await done.signal("go")
        failing = await client.start(Refuser, {"order": 7}, workflow_id="rw-late-fail")
        await failing.signal("go")
        with anyio.fail_after(30):
            while (await client.stats()).get("COMPLETED", 0) + (await client.stats()).get(
                "FAILED", 0
            ) < 2:
                await anyio.sleep(0.05)
    # Their starts registered a waiter: the closes pushed notices, which expire.
    assert 0 < await admin.pttl(client.store.keys.close_notice("rw-late")) <= 60_000
    with anyio.fail_after(1):  # well under result()'s 5 s block
        assert await client.get_handle("rw-late").result() == {"value": 1}
        with pytest.raises(loom.WorkflowExecutionError, match="refused order 7"):
            await client.get_handle("rw-late-fail").result()
    # A notice that expired (or was deleted) is made again for the next waiter.
    await admin.delete(client.store.keys.close_notice("rw-late"))
    with anyio.fail_after(1):
        assert await client.get_handle("rw-late").result(timeout=0) == {"value": 1}


async def test_timeout_and_unknown_workflow(client: loom.Client, admin: aioredis.Redis) -> None:
    handle = await client.start(Counter, {"to": 1}, workflow_id="rw-open")  # no worker
    with pytest.raises(loom.WorkflowStillRunningError, match="PENDING"):
        await handle.result(timeout=0.2)
    with pytest.raises(loom.WorkflowStillRunningError):
        await handle.result(timeout=0)
    with pytest.raises(loom.WorkflowNotFoundError):
        await client.get_handle("rw-nobody").result(timeout=1)
    # The timed-out waits left the workflow as it was: one event, no notice.
    assert not await admin.exists(client.store.keys.close_notice("rw-open"))
    assert [str(e.type) for e in await handle.history()] == ["WORKFLOW_STARTED"]


async def test_the_starting_client_waits_with_one_blmove_and_no_script(
    client: loom.Client, admin: aioredis.Redis, redis_url: str, namespace: str
) -> None:
    async with running_worker(redis_url, namespace):
        handle = await client.start(Counter, {"to": 2}, workflow_id="rw-fresh")
        scripts_before = await command_calls(admin, "evalsha")
        blocked_before = await command_calls(admin, "blmove")
        outcomes: list[Any] = []
        async with anyio.create_task_group() as group:
            group.start_soon(_collect, handle, outcomes)
            await anyio.sleep(0.3)  # blocked; the workflow waits for its signal
            assert await command_calls(admin, "evalsha") == scripts_before
            await handle.signal("go")
        assert outcomes == [{"value": 2}]
        assert await command_calls(admin, "blmove") - blocked_before == 1


async def test_a_wait_for_an_id_before_its_start_does_not_end_a_later_wait(
    client: loom.Client, redis_url: str, namespace: str
) -> None:
    with pytest.raises(loom.WorkflowNotFoundError):
        await client.get_handle("rw-early").result(timeout=1)
    # Its "no such workflow" notice lives a second: the starting client's wait meets it.
    async with running_worker(redis_url, namespace):
        handle = await client.start(Counter, {"to": 1}, workflow_id="rw-early")
        await handle.signal("go")
        assert await handle.result(timeout=30) == {"value": 1}


async def test_a_handle_started_long_ago_registers_its_wait_again(
    client: loom.Client, admin: aioredis.Redis, redis_url: str, namespace: str
) -> None:
    async with running_worker(redis_url, namespace):
        handle = await client.start(Counter, {"to": 1}, workflow_id="rw-old")
        await handle.signal("go")
        assert await handle.result(timeout=30) == {"value": 1}
    # Its notice expired (here: deleted); a handle that did not start the workflow (or
    # started it longer ago than the notice lives) does not count on it: the wait
    # registers again and gets a new notice at once.
    await admin.delete(client.store.keys.close_notice("rw-old"))
    handle = client.get_handle("rw-old")
    with anyio.fail_after(1):  # well under result()'s 5 s block
        assert await handle.result() == {"value": 1}
