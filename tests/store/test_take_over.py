"""Tasks.take_over moves only the tasks pending on the dead worker's consumer, counts a
delivery each, drops those deleted meanwhile, and deletes the consumer once it is empty."""

from __future__ import annotations

import pytest

import loom_redis as loom
from loom_redis.store.keys import WORKER_GROUP

pytestmark = pytest.mark.anyio


async def test_take_over_moves_the_dead_consumers_tasks_only(client: loom.Client) -> None:
    store = client.store
    await store.ensure_groups(["default"])
    stream = store.keys.queue(0, "default")
    ids = [await store.redis.xadd(stream, {"n": str(n)}) for n in range(5)]
    await store.redis.xreadgroup(WORKER_GROUP, "dead", {stream: ">"}, count=3)
    await store.redis.xreadgroup(WORKER_GROUP, "live", {stream: ">"}, count=2)
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
