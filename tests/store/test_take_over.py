"""Tasks.take_over moves only the tasks pending on the dead worker's consumer, counts a
delivery each, drops those deleted meanwhile, and deletes the consumer once it is empty."""

from __future__ import annotations

import anyio
import pytest

import loom_redis as loom
from loom_redis.store import Store, Task
from loom_redis.store.keys import WORKER_GROUP

pytestmark = pytest.mark.anyio


async def delivered(store: Store, *counts: tuple[str, int]) -> tuple[str, list[bytes]]:
    """Shard 0's stream of queue default, with a task per count queued and delivered to
    the consumers named, in order; the stream and the task ids."""
    await store.ensure_groups(["default"])
    stream = store.keys.queue(0, "default")
    ids = [await store.redis.xadd(stream, {"n": str(n)}) for n in range(sum(c for _, c in counts))]
    for consumer, count in counts:
        await store.redis.xreadgroup(WORKER_GROUP, consumer, {stream: ">"}, count=count)
    return stream, ids


async def test_take_over_moves_the_dead_consumers_tasks_only(client: loom.Client) -> None:
    store = client.store
    stream, ids = await delivered(store, ("dead", 3), ("live", 2))
    await store.redis.xdel(stream, ids[2])  # deleted while pending on the dead consumer

    taken = await store.take_over(stream, 0, "dead", "me", 10)

    assert [(task.id, task.fields, deliveries) for task, deliveries in taken] == [
        (ids[0].decode(), {"n": b"0"}, 2),
        (ids[1].decode(), {"n": b"1"}, 2),
    ]
    consumers = {
        c["name"].decode(): c["pending"]
        for c in await store.redis.xinfo_consumers(stream, WORKER_GROUP)
    }
    assert consumers == {"live": 2, "me": 2}
    assert await store.take_over(stream, 0, "live-but-idle", "me", 10) == []


async def test_renewing_leases_leaves_tasks_another_worker_took_over(
    client: loom.Client,
) -> None:
    """A worker cut off from Redis comes back still running tasks another worker took
    over meanwhile: its renewal resets the idle time of its own tasks and leaves the
    others with their taker, and says which those are. A task pending on no one (its
    transition went through, and the reply was lost with the connection) is not one of
    them."""
    store = client.store
    await store.ensure_groups(["default"])
    tasks = []
    for shard in (0, 1):
        stream = store.keys.queue(shard, "default")
        ids = [await store.redis.xadd(stream, {"n": str(n)}) for n in range(2)]
        await store.redis.xreadgroup(WORKER_GROUP, "returning", {stream: ">"})
        tasks += [Task(stream, shard, entry_id.decode(), {}) for entry_id in ids]
    taken_over = tasks[1]
    await store.redis.xclaim(
        taken_over.queue_key, WORKER_GROUP, "taker", 0, [taken_over.id], justid=True
    )
    finished = tasks[2]
    await store.redis.xack(finished.queue_key, WORKER_GROUP, finished.id)
    await anyio.sleep(0.05)

    lost = await store.renew_leases(tasks, "returning")

    assert lost == [taken_over]
    for task in tasks:
        if task is finished:
            continue
        [entry] = await store.redis.xpending_range(
            task.queue_key, WORKER_GROUP, min=task.id, max=task.id, count=1
        )
        owner = "taker" if task is taken_over else "returning"
        assert (entry["consumer"].decode(), entry["times_delivered"]) == (owner, 1)
        if task is not taken_over:
            assert entry["time_since_delivered"] < 50


async def test_the_tasks_pending_on_a_worker_are_read_without_counting_a_delivery(
    client: loom.Client,
) -> None:
    """What a worker reads back of its own pending tasks (after a lost reply, at a stop)
    is read without touching them: a read of its history (XREADGROUP from 0) would count
    a delivery of each, running ones included, and reset their idle time, undoing a
    hand-back; repeated, it would send them to the dead-letter stream."""
    store = client.store
    stream, ids = await delivered(store, ("mine", 2), ("other", 1))
    await store.redis.xdel(stream, ids[1])  # deleted while pending: nothing to run
    await anyio.sleep(0.05)

    for _ in range(3):
        pending = await store.pending_tasks({stream: (0, "default")}, "mine", 10)
        assert [(task.id, task.fields) for task in pending] == [(ids[0].decode(), {"n": b"0"})]

    entries = await store.redis.xpending_range(
        stream, WORKER_GROUP, min="-", max="+", count=10, consumername="mine"
    )
    assert [e["times_delivered"] for e in entries] == [1, 1]
    assert min(e["time_since_delivered"] for e in entries) >= 50
