"""Live resharding of a Redis Cluster while workflows run: a busy shard's hash slot
moved to another master as `--cluster reshard` moves it (the slot held half moved while
its keys go over a few at a time, then given to the target; or moved whole, and back).
Nothing is lost and nothing is done twice: every workflow completes with its result,
every activity runs once, no task is dead-lettered, the worker never finds Redis out
of reach, and the slot's keys are on the target."""

from __future__ import annotations

import collections
import logging
import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import pytest
from redis.crc import key_slot

import loom_redis as loom
from loom_redis.store.connection import DirectLane, connect_redis
from loom_redis.testing import EmbeddedServer, LocalCluster, SlotMove, running_worker

pytestmark = pytest.mark.anyio

# Executions of each (workflow key, step) in this process (the worker runs here).
executions: collections.Counter[tuple[str, int]] = collections.Counter()


@loom.activity(name="reshard_step")
async def reshard_step(key: str, step: int) -> int:
    executions[(key, step)] += 1
    return step + 1


@loom.workflow(name="reshard_Chain")
class ChainWorkflow(loom.Workflow[dict[str, Any], dict[str, Any]]):
    """Activities one after another, with a short timer between each two."""

    @loom.step(name="run")
    async def run(self, ctx: loom.WorkflowContext[dict[str, Any], dict[str, Any]]) -> None:
        step = 0
        for _ in range(int(ctx.input["steps"])):
            step = await ctx.activity(reshard_step, ctx.input["key"], step)
            await ctx.sleep(0.05)
        await ctx.state.set("steps", step)


STEPS = 4


@pytest.fixture
def cluster() -> Iterator[LocalCluster]:
    binary = os.environ.get("LOOM_TEST_SERVER_BINARY") or None
    with LocalCluster(masters=3, binary=binary) as made:
        yield made


@pytest.fixture
async def client(cluster: LocalCluster, namespace: str) -> AsyncIterator[loom.Client]:
    async with loom.Client.connect(cluster.url, namespace=namespace) as connected:
        yield connected


def busy_shard_ids(client: loom.Client, count: int) -> list[str]:
    """Workflow ids of which two thirds fall on shard 0 (the busy shard), the rest
    elsewhere."""
    keys = client.store.keys
    on_zero = (f"busy-{n}" for n in range(10_000) if keys.shard_of(f"busy-{n}") == 0)
    elsewhere = (f"calm-{n}" for n in range(10_000) if keys.shard_of(f"calm-{n}") != 0)
    busy = count * 2 // 3
    return [next(on_zero) for _ in range(busy)] + [next(elsewhere) for _ in range(count - busy)]


def busy_slot(client: loom.Client) -> int:
    return key_slot(client.store.keys.queue(0, "default").encode())


def other_master(cluster: LocalCluster, slot: int) -> EmbeddedServer:
    source = cluster.master_of_slot(slot)
    return next(node for node in cluster.masters() if node is not source)


def keys_in_slot(cluster: LocalCluster, node: EmbeddedServer, slot: int) -> int:
    return int(cluster.command(node, "cluster", "countkeysinslot", str(slot)))


async def run_while(
    client: loom.Client,
    cluster: LocalCluster,
    namespace: str,
    ids: list[str],
    reshard: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Start the workflows (half before `reshard()` begins, half while it runs), wait
    for every one, and check that each completed with its result, each activity ran
    once, nothing was dead-lettered and the worker saw no Redis trouble."""
    executions.clear()
    half = len(ids) // 2
    caplog.set_level(logging.WARNING, logger="loom_redis")
    async with running_worker(cluster.url, namespace, concurrency=16):
        handles = [
            await client.start(ChainWorkflow, {"key": wid, "steps": STEPS}, workflow_id=wid)
            for wid in ids[:half]
        ]
        async with anyio.create_task_group() as group:
            group.start_soon(anyio.to_thread.run_sync, reshard)
            for wid in ids[half:]:
                handles.append(
                    await client.start(ChainWorkflow, {"key": wid, "steps": STEPS}, workflow_id=wid)
                )
                await anyio.sleep(0.02)
        results = [await handle.result(timeout=60) for handle in handles]
    assert results == [{"steps": STEPS}] * len(ids)
    assert executions == {(wid, step): 1 for wid in ids for step in range(STEPS)}
    assert await client.dead_letters() == []
    # Left to the worker's housekeeping (the takeover of dead workers' tasks, the
    # reclaim), which waits a second and looks again: redis-py's cluster client may
    # not follow ASK (it sends ASKING on one pooled connection and the command on
    # another), and gives up ("TTL exhausted") until the slot's move ends.
    warned = [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING and "TTL exhausted" not in r.getMessage()
    ]
    assert warned == [], "\n".join(warned)


async def test_a_busy_shard_s_slot_held_half_moved_then_given_to_another_master(
    client: loom.Client, cluster: LocalCluster, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The slot stays half moved for a while (its keys go over two at a time): commands
    on its keys meet ASK (a key moved), TRYAGAIN (a command over keys on both sides),
    a blocked read whose stream moved away, a script whose key was moved under it."""
    slot = busy_slot(client)
    source = await anyio.to_thread.run_sync(cluster.master_of_slot, slot)
    target = await anyio.to_thread.run_sync(other_master, cluster, slot)
    ids = busy_shard_ids(client, 24)

    def reshard() -> None:
        move = cluster.begin_slot_move(slot, target)
        anyio.from_thread.run(anyio.sleep, 0.3)
        while move.migrate_some(2):
            anyio.from_thread.run(anyio.sleep, 0.05)
        move.finish()

    await run_while(client, cluster, namespace, ids, reshard, caplog)
    assert await anyio.to_thread.run_sync(cluster.master_of_slot, slot) is target
    assert await anyio.to_thread.run_sync(keys_in_slot, cluster, target, slot) > 0
    assert await anyio.to_thread.run_sync(keys_in_slot, cluster, source, slot) == 0


async def test_a_busy_shard_s_slot_moved_whole_and_back(
    client: loom.Client, cluster: LocalCluster, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The slot moved to another master and back while workflows run: commands that
    went to its old master meet MOVED."""
    slot = busy_slot(client)
    source = await anyio.to_thread.run_sync(cluster.master_of_slot, slot)
    target = await anyio.to_thread.run_sync(other_master, cluster, slot)
    ids = busy_shard_ids(client, 24)

    def reshard() -> None:
        anyio.from_thread.run(anyio.sleep, 0.3)
        cluster.move_slot(slot, target)
        anyio.from_thread.run(anyio.sleep, 0.5)
        cluster.move_slot(slot, source)

    await run_while(client, cluster, namespace, ids, reshard, caplog)
    assert await anyio.to_thread.run_sync(keys_in_slot, cluster, source, slot) > 0
    assert await anyio.to_thread.run_sync(keys_in_slot, cluster, target, slot) == 0


@pytest.fixture
async def lane(cluster: LocalCluster) -> AsyncIterator[DirectLane]:
    redis = await connect_redis(cluster.url)
    made = DirectLane(redis)
    try:
        yield made
    finally:
        await made.aclose()
        await redis.aclose()


def slot_move_of(cluster: LocalCluster, key: str) -> SlotMove:
    slot = key_slot(key.encode())
    return cluster.begin_slot_move(slot, other_master(cluster, slot))


async def test_a_script_stopped_by_a_key_moved_from_under_it_is_sent_again(
    cluster: LocalCluster, lane: DirectLane
) -> None:
    """A script that empties a key of a slot being moved and then writes it again is
    stopped at the write ("non local key": the key is no longer on the source); sent
    again, it runs on the target (ASK), where the key now goes."""
    key = "{reshard-script}:k"
    await lane.execute("SET", key, "old")
    move = await anyio.to_thread.run_sync(slot_move_of, cluster, key)
    script = "redis.call('DEL', KEYS[1]); redis.call('SET', KEYS[1], ARGV[1]); return 1"
    assert await lane.execute("EVAL", script, 1, key, "new") == 1
    await anyio.to_thread.run_sync(move.finish)
    assert await lane.execute("GET", key) == b"new"
    assert await anyio.to_thread.run_sync(keys_in_slot, cluster, move.target, move.slot) == 1


async def test_a_command_over_keys_on_both_sides_of_a_move_waits_for_its_end(
    cluster: LocalCluster, lane: DirectLane
) -> None:
    """A command over keys of which one has moved and one not answers TRYAGAIN for as
    long as the slot's keys take to go over (here 4 s): it is sent again until then."""
    moved, left = "{reshard-tryagain}:a", "{reshard-tryagain}:b"
    await lane.execute_chain(("SET", moved, "1"), ("SET", left, "2"))
    move = await anyio.to_thread.run_sync(slot_move_of, cluster, moved)
    await anyio.to_thread.run_sync(
        cluster.command, move.source, "migrate", "127.0.0.1", str(move.target.port), "", "0",
        "5000", "keys", moved,
    )  # fmt: skip

    async def finish_later() -> None:
        await anyio.sleep(4)
        await anyio.to_thread.run_sync(move.finish)

    async with anyio.create_task_group() as group:
        group.start_soon(finish_later)
        assert await lane.execute("MGET", moved, left) == [b"1", b"2"]


async def test_a_blocked_read_whose_streams_move_away_ends_empty_and_the_next_follows(
    client: loom.Client, cluster: LocalCluster
) -> None:
    """A worker's blocked read of a shard whose streams move to another master ends
    with no tasks (Redis 7.0 answers it "UNBLOCKED the stream key no longer exists"),
    and the next read goes to the new master."""
    store = client.store
    await store.ensure_groups(["default"])
    streams = {key: at for key, at in store.queue_keys(["default"]).items() if at[0] == 0}
    slot = busy_slot(client)
    target = await anyio.to_thread.run_sync(other_master, cluster, slot)

    async def move_soon() -> None:
        await anyio.sleep(0.3)
        await anyio.to_thread.run_sync(cluster.move_slot, slot, target)

    async with anyio.create_task_group() as group:
        group.start_soon(move_soon)
        assert await store.read_tasks(streams, "w1", 10, 2000) == []
    queue = store.keys.queue(0, "default")
    await store.redis.xadd(queue, {"kind": "workflow", "workflow_id": "busy-0"})
    [task] = await store.read_tasks(streams, "w1", 10, 2000)
    assert task.queue_key == queue
    assert await anyio.to_thread.run_sync(cluster.master_of_slot, slot) is target
