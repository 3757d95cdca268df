"""loom-redis: the benchmark's workflows and its driver (runs in the project's .venv).

Workers are `python -m loom_redis worker bench.peers.loom_redis --namespace bench`.
A job of workload A or B is one workflow of `steps` sequential activities that sets
its result in state at the end; C is one workflow of `count` activities.

Completion times come from Redis itself: the id of a workflow's last history entry
(the commit that closed it) is the server's clock in ms. Workload D waits for each
workflow as a user would, with `handle.result()` (XREAD BLOCK on its history), and
takes time.time() when it returns, which is later than the commit by one wake-up and
a decode: the figure errs against us.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections import Counter
from typing import Any

import loom_redis as loom
from bench.peers.common import (
    D_PAUSE_SECONDS,
    REDIS_URL_ENV,
    WARM_PREFIX,
    DoneReader,
    job_key,
    parse_args,
    write_result,
)
from bench.peers.loom_workflows import ChainWorkflow, LongWorkflow, ProbeWorkflow
from loom_redis.events import Status
from loom_redis.store.connection import connect_redis

NAMESPACE = "bench"
CLOSING = {b"WORKFLOW_COMPLETED", b"WORKFLOW_FAILED", b"WORKFLOW_CANCELLED"}
PAIRED_WINDOW = 100


class Driver:
    def __init__(self, client: loom.Client, observer: Any) -> None:
        self.client = client
        self.store = client.store
        # The harness watches the run over a connection of its own, as redis-cli would:
        # counts, close times and memory that no loom-redis API reads.
        self.redis = observer
        # Commands this driver sends only to watch the run, subtracted from the costs.
        self.own = Counter[str]()

    async def completed_count(self) -> int:
        keys = self.store.keys
        pipe = self.redis.pipeline(transaction=False)
        for shard in range(keys.shards):
            pipe.zcard(keys.status_index(shard, Status.COMPLETED))
            pipe.zcard(keys.status_index(shard, Status.FAILED))
        self.own["zcard"] += 2 * keys.shards
        return sum(await pipe.execute())

    async def wait_count(self, target: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while await self.completed_count() < target:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    async def close_times(self, ids: list[str]) -> tuple[dict[str, float], int]:
        """When each closed workflow's closing commit landed (server clock, ms), and
        how many of them did not complete."""
        found: dict[str, float] = {}
        failed = 0
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            pipe = self.redis.pipeline(transaction=False)
            for workflow_id in chunk:
                pipe.xrevrange(self.store.keys.history(workflow_id), count=2)
            self.own["xrevrange"] += len(chunk)
            for workflow_id, entries in zip(chunk, await pipe.execute(), strict=True):
                for entry_id, fields in entries:
                    if fields.get(b"type") in CLOSING:
                        found[workflow_id] = int(entry_id.split(b"-")[0]) / 1000
                        failed += fields[b"type"] != b"WORKFLOW_COMPLETED"
        return found, failed

    async def batch(self, prefix: str, count: int, steps: int, timeout: float) -> dict[str, Any]:
        before = await self.completed_count()
        enqueued: dict[str, float] = {}
        for index in range(count):
            key = job_key(prefix, index)
            enqueued[key] = time.time()
            await self.client.start(ChainWorkflow, {"steps": steps}, workflow_id=key)
        await self.wait_count(before + count, timeout)
        done, failed = await self.close_times(list(enqueued))
        return {"enqueued": enqueued, "done": done, "extra": {"failed": failed}}

    async def one_at_a_time(self, count: int, timeout: float) -> dict[str, Any]:
        enqueued: dict[str, float] = {}
        done: dict[str, float] = {}
        failed = 0
        deadline = time.monotonic() + timeout
        for index in range(count):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            key = job_key("D", index)
            enqueued[key] = time.time()
            handle = await self.client.start(ChainWorkflow, {"steps": 1}, workflow_id=key)
            try:
                await handle.result(timeout=left)
            except loom.WorkflowStillRunningError:
                break
            except loom.LoomError:  # it ended, in failure
                failed += 1
            done[key] = time.time()
            await asyncio.sleep(D_PAUSE_SECONDS)
        return {"enqueued": enqueued, "done": done, "extra": {"failed": failed}}

    async def long_workflow(self, count: int, timeout: float) -> dict[str, Any]:
        started = time.time()
        handle = await self.client.start(LongWorkflow, {"count": count}, workflow_id="C")
        reader = DoneReader()
        # Polled every 0.2 s, as the seed's is: a waiting result() would read the meta
        # after each event, a cost of its own.
        deadline = time.monotonic() + timeout
        status = await handle.status()
        while not Status(status).is_terminal and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            status = await handle.status()
        done = reader.poll()
        steps = sorted(t for key, t in done.items() if key.startswith("c"))
        return {"enqueued": {"C": started}, "steps": steps, "extra": {"status": status}}

    async def paired_long_workflow(self, count: int, timeout: float) -> dict[str, Any]:
        """C with its last 100 steps run beside the 100 steps of a new workflow, on the
        same workers at the same time: the two windows differ only by the length of
        their histories (2,000 steps against none), whatever speed the machine is at
        (it changes for seconds at a time, and C's two windows are a second apart)."""
        window = min(PAIRED_WINDOW, count)
        started = time.time()
        deadline = time.monotonic() + timeout
        reader = DoneReader()

        def steps(prefix: str) -> list[float]:
            done = reader.poll()
            return sorted(t for key, t in done.items() if key.startswith(prefix) and t >= started)

        long = await self.client.start(
            LongWorkflow, {"count": count, "pause_at": count - window}, workflow_id="C-paired"
        )
        while time.monotonic() < deadline:  # the driver sees steps in the workers' files
            if len(steps("c")) >= count - window:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)  # its last step's outcome is in: it waits for "go"
        await long.signal("go")
        probe = await self.client.start(ProbeWorkflow, {"count": window}, workflow_id="C-probe")
        for handle in (long, probe):
            await handle.result(timeout=max(deadline - time.monotonic(), 0.001))
        return {"enqueued": {"C": started}, "steps": steps("c"), "probe": steps("p")}

    async def memory(self, ids: list[str]) -> dict[str, Any]:
        """MEMORY USAGE of the meta hash and history stream of a sample of workflows."""
        sample = ids[:: max(1, len(ids) // 50)]
        pipe = self.redis.pipeline(transaction=False)
        for workflow_id in sample:
            pipe.memory_usage(self.store.keys.meta(workflow_id), samples=0)
            pipe.memory_usage(self.store.keys.history(workflow_id), samples=0)
            pipe.xlen(self.store.keys.history(workflow_id))
        self.own["memory|usage"] += 2 * len(sample)
        self.own["xlen"] += len(sample)
        replies = await pipe.execute()
        return {
            "meta_bytes": sum(replies[0::3]) / len(sample),
            "history_bytes": sum(replies[1::3]) / len(sample),
            "events": sum(replies[2::3]) / len(sample),
        }


async def drive(argv: list[str]) -> None:
    args = parse_args(argv)

    url = os.environ[REDIS_URL_ENV]
    async with (
        loom.Client.connect(url, namespace=NAMESPACE) as client,
        # Made as the store makes its own: a standalone server's client, or a cluster's.
        contextlib.aclosing(await connect_redis(url)) as observer,
    ):
        driver = Driver(client, observer)
        # The driver's own CPU over the workload, without its interpreter's start.
        cpu_started = time.process_time()
        if args.workload == "warm":
            result = await driver.batch(WARM_PREFIX, args.count, args.steps, args.timeout)
        elif args.workload == "D":
            result = await driver.one_at_a_time(args.count, args.timeout)
        elif args.workload == "C":
            result = await driver.long_workflow(args.count, args.timeout)
        elif args.workload == "C-paired":
            result = await driver.paired_long_workflow(args.count, args.timeout)
        else:
            result = await driver.batch(args.workload, args.count, args.steps, args.timeout)
            if args.stats:
                result["extra"]["memory"] = await driver.memory(list(result["enqueued"]))
        # What this driver sent only to watch the run: bench/run.py leaves it out of
        # the commands per step (the starts are the workload's own).
        result.setdefault("extra", {})["own_commands"] = dict(driver.own)
        result["extra"]["cpu_seconds"] = time.process_time() - cpu_started
        write_result(args.out, **result)


if __name__ == "__main__":
    asyncio.run(drive(sys.argv[1:]))
