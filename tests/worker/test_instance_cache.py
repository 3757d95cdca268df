"""Workers keep workflow instances between tasks and replay only newer events."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

import loom_redis as loom
from loom_redis.events import COMMAND_TYPES, EventType
from loom_redis.store import Store
from loom_redis.testing import running_worker

pytestmark = pytest.mark.anyio

STEPS = 20


@loom.activity(name="cache_increment")
async def increment(value: int) -> int:
    return value + 1


@loom.workflow(name="CacheCounter")
class Counter(loom.Workflow[dict, dict]):
    @loom.step()
    async def count(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        value = 0
        for _ in range(STEPS):
            value = await ctx.activity(increment, value)
        await ctx.state.set("value", value)


def _count_events_read(store: Store) -> list[int]:
    """Record how many history events each read of this store returns."""
    sizes: list[int] = []
    read = store.read_history

    async def counting(workflow_id: str, after: str | None = None) -> Any:
        events = await read(workflow_id, after)
        sizes.append(len(events))
        return events

    store.read_history = counting  # type: ignore[method-assign]
    return sizes


async def test_a_cached_instance_reads_only_new_events(
    client: loom.Client, redis_url: str, namespace: str
) -> None:
    async with running_worker(redis_url, namespace) as worker:
        sizes = _count_events_read(worker.store)
        handle = await Counter.start({})
        assert await handle.result(timeout=20) == {"value": STEPS}
    history_length = len(await handle.history())
    # A full replay per task would read about history_length**2 / 2 events.
    assert sum(sizes) < 2 * history_length


async def test_two_workers_taking_turns_agree_with_each_others_commits(
    client: loom.Client, redis_url: str, namespace: str
) -> None:
    """Each worker's cached instance must replay the commits the other one made."""
    async with (
        running_worker(redis_url, namespace, concurrency=2),
        running_worker(redis_url, namespace, concurrency=2),
    ):
        handles = [await Counter.start({}) for _ in range(6)]
        with anyio.fail_after(30):
            results = [await h.result() for h in handles]
    assert results == [{"value": STEPS}] * 6
    for handle in handles:
        history = await handle.history()
        seqs = [e.seq for e in history if e.type in COMMAND_TYPES]
        assert seqs == list(range(1, len(seqs) + 1))
        completed = [e.seq for e in history if e.type == EventType.ACTIVITY_COMPLETED]
        assert len(completed) == len(set(completed)) == STEPS
