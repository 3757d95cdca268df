"""The backlog a queue reports (the autoscaling signal) is the real one, through every
transition that adds or removes tasks, as loom-redis computes it and as an autoscaler
reading Redis itself sees it: KEDA's redis-streams trigger reads one stream's XLEN
(`streamLength`) or its consumer group's lag (`lagCount`, Redis 7+), and a stream's lag
becomes unknown when an entry past the group's last-delivered id is deleted."""

from __future__ import annotations

import anyio
import pytest

import loom_redis as loom
from loom_redis.definitions import isolated_registry
from loom_redis.store import QueueBacklog, Store
from loom_redis.store.keys import WORKER_GROUP
from loom_redis.store.wire import text
from loom_redis.testing import running_worker
from tests.held_workflows import GATE, HeldWorkflow
from tests.support import server_version

pytestmark = pytest.mark.anyio


async def raw_view(store: Store, queue: str) -> tuple[int, int | None]:
    """What an autoscaler reads of the queue's streams: XLEN and the group lag, summed
    (None if any stream's lag is unknown)."""
    length, lag = 0, 0
    lags_known = True
    for shard in range(store.keys.shards):
        for stream in (store.keys.queue(shard, queue), store.keys.activity_queue(shard, queue)):
            length += await store.redis.xlen(stream)
            (group,) = [
                g for g in await store.redis.xinfo_groups(stream) if text(g["name"]) == WORKER_GROUP
            ]
            if group.get("lag") is None:
                lags_known = False
            else:
                lag += group["lag"]
    return length, lag if lags_known else None


async def expect(store: Store, *, backlog: int, pending: int = 0) -> QueueBacklog:
    """The queue holds `backlog` unfinished tasks, `pending` of them taken: as the store
    reports it and as Redis shows it (the lag where the server reports one)."""
    figures = (await store.backlog(["default"])).queues["default"]
    assert (figures.length, figures.lag, figures.pending) == (
        backlog,
        backlog - pending,
        pending,
    )
    length, lag = await raw_view(store, "default")
    assert length == backlog
    if await server_version(store.redis) >= (7, 0):
        assert lag == backlog - pending, "the lag KEDA's lagCount reads"
    return figures


async def wait_for(store: Store, *, backlog: int, pending: int = 0) -> None:
    with anyio.fail_after(15):
        while True:
            figures = (await store.backlog(["default"])).queues["default"]
            if (figures.length, figures.pending) == (backlog, pending):
                break
            await anyio.sleep(0.02)
    await expect(store, backlog=backlog, pending=pending)


async def test_backlog_is_the_real_one_through_every_transition(
    client: loom.Client, redis_url: str, namespace: str
) -> None:
    GATE.reset()
    store = client.store
    await store.ensure_groups(["default"])
    await expect(store, backlog=0)

    # Starts: one workflow task each.
    handles = [await client.start(HeldWorkflow, {}) for _ in range(3)]
    await expect(store, backlog=3)
    # A cancel request of a workflow whose task waits adds no second task.
    await handles[2].cancel("not needed")
    await expect(store, backlog=3)

    async with running_worker(redis_url, namespace, eager_seconds=0):
        # Two activities run (taken, not finished); the cancelled workflow closed.
        await wait_for(store, backlog=2, pending=2)
        figures = await expect(store, backlog=2, pending=2)
        assert figures.oldest_pending_ms is not None
        GATE.open()
        for handle in handles[:2]:
            assert await handle.result(timeout=10) == {"said": "released"}
        assert await handles[2].status() == "CANCELLED"
        await wait_for(store, backlog=0)

    # Dead-lettering: a workflow task no live worker of the queue can run.
    GATE.open()
    handle = await client.start(HeldWorkflow, {})
    await expect(store, backlog=1)
    with isolated_registry(without=["held_Held"]):
        async with running_worker(
            redis_url, namespace, eager_seconds=0, unregistered_grace_seconds=0
        ):
            with anyio.fail_after(10):
                while not await client.dead_letters():
                    await anyio.sleep(0.02)
            await wait_for(store, backlog=0)
    assert (await store.backlog(["default"])).dead_letters == 1

    # A redrive puts it back (a new entry), and a worker that registers it runs it.
    (dead,) = await client.dead_letters()
    await client.redrive(dead["id"])
    await expect(store, backlog=1)
    assert (await store.backlog(["default"])).dead_letters == 0
    async with running_worker(redis_url, namespace, eager_seconds=0):
        assert await handle.result(timeout=10) == {"said": "released"}
        await wait_for(store, backlog=0)


async def test_a_queue_no_worker_has_read_yet_has_no_backlog(client: loom.Client) -> None:
    backlog = await client.store.backlog(["never-read"])
    assert backlog.queues["never-read"] == QueueBacklog()
    assert (backlog.timers_due, backlog.oldest_due_ms, backlog.dead_letters) == (0, None, 0)


@loom.workflow(name="backlog_Nap")
class Nap(loom.Workflow[dict, dict]):
    @loom.step()
    async def nap(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        await ctx.sleep(0.3)


async def test_due_timers_nobody_fires_are_reported_with_how_late_they_are(
    client: loom.Client, redis_url: str, namespace: str
) -> None:
    handle = await client.start(Nap, {})
    async with running_worker(redis_url, namespace):
        with anyio.fail_after(10):
            while not (await client.describe(handle.id))["waiting_for"]["timers"]:
                await anyio.sleep(0.02)
    # No worker runs: the timer falls due and stays so.
    await anyio.sleep(0.5)
    backlog = await client.store.backlog(["default"])
    assert backlog.timers_due == 1
    assert backlog.oldest_due_ms is not None and backlog.oldest_due_ms < backlog.at_ms
    async with running_worker(redis_url, namespace):
        assert await handle.result(timeout=10) == {}
    backlog = await client.store.backlog(["default"])
    assert (backlog.timers_due, backlog.oldest_due_ms) == (0, None)


async def test_queue_details_show_each_stream_its_pending_tasks_and_consumers(
    client: loom.Client, redis_url: str, namespace: str
) -> None:
    GATE.reset()
    store = client.store
    shards = store.keys.shards
    handles = [await client.start(HeldWorkflow, {}) for _ in range(2)]
    async with running_worker(redis_url, namespace, eager_seconds=0) as worker:
        # Both activities taken by the worker, held.
        await wait_for(store, backlog=2, pending=2)
        default, unread = await store.queue_details(["never-read"])
        assert (default.queue, unread.queue) == ("default", "never-read")
        assert [(s.shard, s.kind) for s in default.streams] == [
            (shard, kind) for shard in range(shards) for kind in ("workflow", "activity")
        ]
        assert [s.key for s in default.streams] == [
            key
            for shard in range(shards)
            for key in (
                store.keys.queue(shard, "default"),
                store.keys.activity_queue(shard, "default"),
            )
        ]
        holding = [s for s in default.streams if s.pending]
        assert {s.kind for s in holding} == {"activity"}
        assert sum(s.pending for s in holding) == 2
        assert sum(s.length for s in default.streams) == 2
        for stream in default.streams:
            # The worker is the one consumer (Valkey 8 lists it on every stream it reads;
            # Redis 7.0, on some streams it reads, lists none).
            assert [c.name for c in stream.consumers] in ([worker.name], [])
            assert sum(c.pending for c in stream.consumers) == stream.pending
            assert all(c.idle_ms >= 0 for c in stream.consumers)
            if stream.pending:
                assert stream.oldest_pending_age_ms is not None
                assert 0 <= stream.oldest_pending_age_ms < 15_000
            else:
                assert stream.oldest_pending_age_ms is None
            if await server_version(store.redis) >= (7, 0):
                assert stream.lag == 0
        (consumer,) = default.consumers()
        assert (consumer.name, consumer.pending) == (worker.name, 2)
        assert consumer.idle_ms == min(c.idle_ms for s in default.streams for c in s.consumers)
        totals = (await store.backlog(["default"])).queues["default"]
        assert (default.backlog.length, default.backlog.lag, default.backlog.pending) == (
            totals.length,
            totals.lag,
            totals.pending,
        )
        # A queue no worker reads: streams that hold nothing, of no group.
        assert len(unread.streams) == 2 * shards
        assert {(s.length, s.lag, s.pending, s.oldest_pending_age_ms) for s in unread.streams} == {
            (0, None, 0, None)
        }
        assert unread.consumers() == []
        GATE.open()
        for handle in handles:
            assert await handle.result(timeout=10) == {"said": "released"}
        await wait_for(store, backlog=0)
        (default,) = await store.queue_details()
        assert sum(s.length + s.pending for s in default.streams) == 0
