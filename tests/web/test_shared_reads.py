"""The live pages' reads are shared by their viewers: five people watching the overview
cost Redis what one does, and a read is shared only with those who ask for the same
view, while it runs or just after."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import httpx
import pytest
from httpx_sse import aconnect_sse

import loom_redis as loom
from loom_redis.web import _data
from loom_redis.web._shared import SharedReads
from tests.support import admin_client, command_calls
from tests.web_workflows import SleeperWorkflow

pytestmark = pytest.mark.anyio

VIEWERS = 5


async def test_five_viewers_of_the_overview_cost_redis_what_one_does(
    client: loom.Client, web: str, redis_url: str
) -> None:
    await client.start(SleeperWorkflow, {"seconds": 60})  # no worker: it stays queued
    admin = admin_client(redis_url)
    try:
        # What one overview costs: HGETALL of the workers' heartbeats (the queues they
        # read, which are live), nothing else reads them here.
        before = await command_calls(admin, "hgetall")
        await _data.overview(client)
        one_overview = await command_calls(admin, "hgetall") - before
        assert one_overview > 0

        seen: list[str] = []

        async def watch(http: httpx.AsyncClient) -> None:
            async with aconnect_sse(http, "GET", "/live/overview") as events:
                async for message in events.aiter_sse():
                    seen.append(message.data)
                    return

        async with httpx.AsyncClient(base_url=web, timeout=30) as http:
            before = await command_calls(admin, "hgetall")
            with anyio.fail_after(20):
                async with anyio.create_task_group() as viewers:
                    for _ in range(VIEWERS):
                        viewers.start_soon(watch, http)
            read = await command_calls(admin, "hgetall") - before
    finally:
        await admin.aclose()
    assert len(seen) == VIEWERS and len(set(seen)) == 1
    assert "PENDING" in seen[0]
    assert read == one_overview, f"{VIEWERS} viewers read the overview {read // one_overview}x"


class Reads:
    """A read to share, counted, that ends when the test lets it (or fails)."""

    def __init__(self) -> None:
        self.count = 0
        self.release = anyio.Event()
        self.failure: Exception | None = None

    async def __call__(self) -> int:
        self.count += 1
        await self.release.wait()
        if self.failure is not None:
            raise self.failure
        return self.count


async def gather(*calls: Callable[[], Awaitable[Any]]) -> list[Any]:
    """The outcomes of the calls, run at once (an exception is an outcome)."""
    outcomes: list[Any] = [None] * len(calls)

    async def run(index: int) -> None:
        try:
            outcomes[index] = await calls[index]()
        except Exception as exc:
            outcomes[index] = exc

    async with anyio.create_task_group() as group:
        for index in range(len(calls)):
            group.start_soon(run, index)
    return outcomes


async def test_a_read_is_shared_while_it_runs_and_just_after_per_key() -> None:
    shared = SharedReads()
    overview, rows = Reads(), Reads()

    async def let_go() -> None:
        await anyio.sleep(0.05)  # the others are waiting for the read by then
        overview.release.set()
        rows.release.set()

    outcomes = await gather(
        lambda: shared.get("overview", overview, 60),
        lambda: shared.get("overview", overview, 60),
        lambda: shared.get(("rows", "RUNNING"), rows, 60),
        let_go,
    )
    assert outcomes[:3] == [1, 1, 1]
    assert (overview.count, rows.count) == (1, 1)
    # Within max_age of its end: served; past it: read again.
    assert await shared.get("overview", overview, 60) == 1
    await anyio.sleep(0.02)
    assert await shared.get("overview", overview, 0.01) == 2


async def test_a_failed_read_fails_its_waiters_and_an_abandoned_one_is_read_again() -> None:
    shared = SharedReads()
    failing = Reads()
    failing.failure = RuntimeError("Redis went away")

    async def let_go() -> None:
        await anyio.sleep(0.05)
        failing.release.set()

    outcomes = await gather(
        lambda: shared.get("overview", failing, 60),
        lambda: shared.get("overview", failing, 60),
        let_go,
    )
    assert [str(o) for o in outcomes[:2]] == ["Redis went away"] * 2
    assert failing.count == 1

    # The viewer whose read it is leaves (its stream closed): one waiting reads itself.
    abandoned = Reads()
    waiter_outcome: list[Any] = []

    async def wait_then_read() -> None:
        await anyio.sleep(0.02)
        waiter_outcome.append(await shared.get("table", abandoned, 60))

    async with anyio.create_task_group() as group:
        with anyio.move_on_after(0.1):
            group.start_soon(wait_then_read)
            await shared.get("table", abandoned, 60)
        await anyio.sleep(0.02)
        assert abandoned.count == 2  # the waiter's own read
        abandoned.release.set()
    assert waiter_outcome == [2]
