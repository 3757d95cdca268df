"""Live resharding of a Redis Cluster while workflows run: what the run sees.

Starts a cluster of 3 masters on loopback (`LocalCluster`), one worker in this process,
and N workflows of `steps` sequential activities started at a steady pace (the load of
bench/cluster_load.py). Once a third of them have completed, it moves the hash slots of
the `--slots` busiest shards, one after the other, each to another master, as
`--cluster reshard` does: the slot is set importing on the target and migrating on its
master, its keys go over `--batch` at a time (MIGRATE ... KEYS), with `--batch-pause`
seconds between two batches (a big slot over a slow link holds the slot half moved that
long), then the slot is given to the target. Then it waits for every workflow and
prints: each slot's keys and move time; the redirections and retries the worker and the
client met on the direct lane (ASK, TRYAGAIN, MOVED, a script stopped by a key moved
from under it, a blocked read whose stream moved away); completions per second in the
moves and in as long a window before them; the outcome (bench/cluster_load.py: starts
lost, workflows not COMPLETED, activity re-runs).

    .venv/bin/python -m bench.cluster_reshard [--workflows 300] [--steps 5]\\
        [--start-rate 40] [--slots 2] [--batch 10] [--batch-pause 0.05]\\
        [--server-binary /usr/bin/redis-server]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

from redis.exceptions import AskError, MovedError, TryAgainError  # noqa: E402

import loom_redis as loom  # noqa: E402
from bench.cluster_load import Load  # noqa: E402
from loom_redis.store import connection  # noqa: E402
from loom_redis.testing import LocalCluster, running_worker  # noqa: E402

# Error replies the direct lane met (and followed or retried), by kind.
lane_errors: collections.Counter[str] = collections.Counter()


def _count_lane_errors() -> None:
    """Count the error replies of every write of the direct lane (the transitions, the
    workers' reads, the timer sweep), by kind."""
    send = connection._Node.send

    async def counted(self: Any, packed: bytes, count: int) -> list[Any]:
        try:
            return await send(self, packed, count)
        except connection.RedisError as exc:
            lane_errors[_kind(exc)] += 1
            raise

    connection._Node.send = counted  # type: ignore[method-assign]


def _kind(exc: BaseException) -> str:
    text = str(exc)
    if isinstance(exc, MovedError):
        return "MOVED"
    if isinstance(exc, AskError):
        return "ASK"
    if isinstance(exc, TryAgainError):
        return "TRYAGAIN"
    if connection.read_cut_short(exc):
        return "UNBLOCKED (a blocked read's stream moved away)"
    if connection.slot_in_motion(exc):
        return "script stopped by a key moved away"
    return f"other: {type(exc).__name__}: {text[:60]}"


async def _run(
    cluster: LocalCluster, count: int, steps: int, rate: float, slots: int, batch: int,
    pause: float,
) -> None:  # fmt: skip
    namespace = "reshard"
    async with (
        loom.Client.connect(cluster.url, namespace=namespace) as client,
        running_worker(cluster.url, namespace, concurrency=32),
    ):
        load = Load(client, count, steps, rate)
        load.start()
        await load.third_done.wait()
        before_errors = sum(lane_errors.values())
        began = time.monotonic()
        moves = []
        for slot in load.busiest_slots(slots):
            source = await asyncio.to_thread(cluster.master_of_slot, slot)
            target = next(n for n in cluster.masters() if n is not source)
            moves.append(await _move(cluster, slot, target, batch, pause))
        ended = time.monotonic()
        started_at_end = len(load.acknowledged)
        await load.finish()
        window = ended - began
        during = load.completed_between(began, ended)
        before = load.completed_between(began - window, began)
        print(
            f"{count} workflows x {steps} activities on 3 masters, {rate:g} starts/s; "
            f"{len(moves)} slots of the busiest shards moved, {batch} keys a MIGRATE, "
            f"{pause:g} s between two"
        )
        for slot, keys, seconds in moves:
            print(f"  slot {slot}: {keys} keys moved in {seconds:.2f} s")
        print(f"  moves: {window:.2f} s in all, {started_at_end} starts acknowledged by their end")
        print(
            f"  completions/s: {during / window:.1f} during the moves, "
            f"{before / window:.1f} in as long before them"
        )
        print(f"  lane error replies before the moves: {before_errors}")
        for kind, n in lane_errors.most_common():
            print(f"  lane error replies met, {kind}: {n}")
        await load.report()


async def _move(
    cluster: LocalCluster, slot: int, target: Any, batch: int, pause: float
) -> tuple[int, int, float]:
    """Move `slot` to `target` (see the module's docstring); (slot, keys, seconds)."""
    began = time.monotonic()
    move = await asyncio.to_thread(cluster.begin_slot_move, slot, target)
    while await asyncio.to_thread(move.migrate_some, batch):
        if pause:
            await asyncio.sleep(pause)
    await asyncio.to_thread(move.finish)
    return slot, move.moved, time.monotonic() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workflows", type=int, default=300)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--start-rate", type=float, default=40.0, help="starts per second")
    parser.add_argument("--slots", type=int, default=2, help="busiest shards' slots to move")
    parser.add_argument("--batch", type=int, default=10, help="keys a MIGRATE")
    parser.add_argument(
        "--batch-pause", type=float, default=0.05, help="seconds between two MIGRATEs"
    )
    parser.add_argument("--server-binary", default=None, help="default: the embedded Valkey")
    args = parser.parse_args()
    _count_lane_errors()
    with LocalCluster(masters=3, binary=args.server_binary) as cluster:
        asyncio.run(
            _run(
                cluster, args.workflows, args.steps, args.start_rate, args.slots, args.batch,
                args.batch_pause,
            )
        )  # fmt: skip


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
