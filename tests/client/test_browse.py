"""The client's reads for a dashboard: workflows browsed a page at a time and counted,
closes per minute, a long history read in pages, the queues in detail."""

from __future__ import annotations

import asyncio

import pytest

import loom_redis as loom
from loom_redis.events import Status
from loom_redis.store import WorkflowFilter
from loom_redis.testing import running_worker

pytestmark = pytest.mark.anyio


@loom.activity(name="browse_echo")
async def echo(value: int) -> int:
    return value


@loom.workflow(name="browse_Gather")
class Gather(loom.Workflow[dict, dict]):
    """Gathers `count` activities: a history of about twice as many events."""

    @loom.step()
    async def gather(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        results = await asyncio.gather(*[ctx.activity(echo, n) for n in range(ctx.input["count"])])
        await ctx.state.set("total", sum(results))


async def test_a_long_history_reads_in_pages_as_a_whole(
    client: loom.Client, redis_url: str, namespace: str
) -> None:
    async with running_worker(redis_url, namespace):
        handle = await client.start(Gather, {"count": 150})
        assert await handle.result(timeout=30) == {"total": sum(range(150))}
    whole = await client.history_entries(handle.id)
    assert len(whole) > 300
    pages: list[list[dict[str, object]]] = []
    after = None
    while True:
        page, after = await client.history_page(handle.id, after, count=37)
        pages.append(page)
        if after is None:
            break
        assert after == page[-1]["id"]
    assert [entry for page in pages for entry in page] == whole
    assert [len(page) for page in pages[:-1]] == [37] * (len(pages) - 1)
    assert 0 < len(pages[-1]) <= 37
    # A page that ends the history says so, even when it is full.
    assert await client.history_page(handle.id, count=len(whole)) == (whole, None)
    first, after = await client.history_page(handle.id, count=len(whole) - 1)
    assert (first, after) == (whole[:-1], whole[-2]["id"])
    assert await client.history_page(handle.id, after, count=5) == (whole[-1:], None)
    assert await client.history_page(handle.id, whole[-1]["id"]) == ([], None)
    with pytest.raises(loom.WorkflowNotFoundError):
        await client.history_page("no-such-workflow")
    with pytest.raises(ValueError, match="after must be a history entry id"):
        await client.history_page(handle.id, "not-an-id")
    with pytest.raises(ValueError, match="count must be a whole number >= 1"):
        await client.history_page(handle.id, count=0)


async def test_browse_count_closes_and_queues_through_the_client(
    client: loom.Client, redis_url: str, namespace: str
) -> None:
    async with running_worker(redis_url, namespace) as worker:
        handles = [await client.start(Gather, {"count": 1}, owner="ann") for _ in range(5)]
        for handle in handles:
            await handle.result(timeout=10)
        pending = await client.start(Gather, {"count": 1}, queue="idle")
        newest_first = [pending.id] + [h.id for h in reversed(handles)]
        ids, cursor = [], None
        while True:
            page = await client.browse_workflows(WorkflowFilter(), cursor, limit=2)
            ids += [row["workflow_id"] for row in page.workflows]
            if (cursor := page.next_cursor) is None:
                break
        infos = {i: await client.describe(i) for i in ids}
        assert ids == sorted(newest_first, key=lambda i: (infos[i]["started_ms"], i), reverse=True)
        done = WorkflowFilter(statuses=(Status.COMPLETED,), owner="ann")
        page = await client.browse_workflows(done)
        assert {row["workflow_id"] for row in page.workflows} == {h.id for h in handles}
        assert await client.count_workflows(done) == (5, True)
        assert await client.count_workflows(WorkflowFilter(name="browse_Gather")) == (6, True)
        minutes = await client.closed_per_minute(2)
        assert len(minutes) == 2 and sum(m["completed"] for m in minutes) == 5
        queues = await client.queue_details()
        assert [q.queue for q in queues] == ["default"]
        assert [c.name for c in queues[0].consumers()] == [worker.name]
