"""The load the cluster benches run (bench/cluster_failover.py, bench/cluster_reshard.py):
workflows of `steps` sequential activities started at a steady pace on one client, each
activity recording its execution, each workflow's result awaited; and what the run saw
at the end (completions, starts lost, final statuses, activity re-runs)."""

from __future__ import annotations

import asyncio
import collections
import time
from typing import Any

from redis.crc import key_slot

import loom_redis as loom

executions: collections.Counter[tuple[str, int]] = collections.Counter()


@loom.activity(name="bench_failover_step")
async def failover_step(key: str, step: int) -> int:
    executions[(key, step)] += 1
    await asyncio.sleep(0.01)
    return step + 1


@loom.workflow(name="bench_FailoverChain")
class FailoverChain(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step(name="run")
    async def run(self, ctx: loom.WorkflowContext[dict[str, Any], dict[str, Any]]) -> None:
        step = 0
        for _ in range(int(ctx.input["steps"])):
            step = await ctx.activity(failover_step, ctx.input["key"], step)
        await ctx.state.set("steps", step)


class Load:
    """`count` workflows started at `rate` per second (`start()`), each result awaited:
    when each completed (`done`), which starts were acknowledged, which results said
    "not found"; `third_done` is set once a third have completed."""

    def __init__(self, client: loom.Client, count: int, steps: int, rate: float) -> None:
        self.client = client
        self.count = count
        self.steps = steps
        self.rate = rate
        self.done: list[float] = []
        self.not_found: list[str] = []
        self.acknowledged: list[str] = []
        self.third_done = asyncio.Event()
        self.began = 0.0
        self._waits: list[asyncio.Task[None]] = []
        self._producer: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.began = time.monotonic()
        self._producer = asyncio.create_task(self._produce())

    async def finish(self) -> None:
        """Wait for the last start and every result."""
        assert self._producer is not None
        await self._producer
        await asyncio.gather(*self._waits)

    async def _produce(self) -> None:
        """Starts at a steady pace, so that some are under way when the cluster moves."""
        for n in range(self.count):
            handle = await self.client.start(FailoverChain, {"key": f"w{n}", "steps": self.steps})
            self.acknowledged.append(handle.workflow_id)
            self._waits.append(asyncio.create_task(self._wait(handle)))
            await asyncio.sleep(1 / self.rate)

    async def _wait(self, handle: loom.WorkflowHandle[dict[str, Any]]) -> None:
        try:
            await handle.result(timeout=300)
        except loom.WorkflowNotFoundError:
            self.not_found.append(handle.workflow_id)
            return
        self.done.append(time.monotonic())
        if len(self.done) >= self.count // 3:
            self.third_done.set()

    def completed_between(self, start: float, end: float) -> int:
        return sum(1 for t in self.done if start <= t < end)

    def busiest_slots(self, count: int) -> list[int]:
        """The hash slots of the `count` shards that hold the most of the run's
        workflows, busiest first."""
        keys = self.client.store.keys
        shards = collections.Counter(keys.shard_of(w) for w in self.acknowledged)
        return [
            key_slot(keys.queue(shard, "default").encode())
            for shard, _ in shards.most_common(count)
        ]

    async def report(self) -> None:
        """Print what the cluster holds in the end, and the activities run twice. A
        workflow whose result() returned may have been lost since (a failover), and a
        "not found" of a workflow that exists is a wrong answer, while one that does
        not exist is an acknowledged start lost."""
        client = self.client
        final = {
            workflow_id: await _status(client, workflow_id) for workflow_id in self.acknowledged
        }
        spurious = [
            workflow_id
            for workflow_id in self.not_found
            if await _exists(client.get_handle(workflow_id))
        ]
        done = self.done
        print(
            f"  completed: {len(done)}/{self.count}, the last "
            f"{max(done, default=self.began) - self.began:.1f} s after the first start"
        )
        print(f"  acknowledged starts lost: {len(self.not_found) - len(spurious)}")
        print(f"  result() said 'not found' of an existing workflow: {len(spurious)}")
        missing = sum(1 for status in final.values() if status is None)
        print(f"  workflows the cluster no longer has at the end (lost whole): {missing}")
        unfinished = sum(1 for status in final.values() if status not in (None, "COMPLETED"))
        print(f"  workflows not COMPLETED at the end: {unfinished}")
        reruns = sum(n - 1 for n in executions.values() if n > 1)
        replayed = {key for (key, _), n in executions.items() if n > 1}
        print(f"  activity executions run more than once: {reruns}")
        print(f"  workflows with a re-run activity (replayed an earlier point): {len(replayed)}")
        for key in sorted(replayed):
            runs = [executions[(key, step)] for step in range(self.steps)]
            print(f"    {key}: executions of its activities, in order: {runs}")


async def _status(client: loom.Client, workflow_id: str) -> str | None:
    try:
        return str((await client.describe(workflow_id))["status"])
    except loom.WorkflowNotFoundError:
        return None


async def _exists(handle: loom.WorkflowHandle[Any]) -> bool:
    try:
        await handle.describe()
    except loom.WorkflowNotFoundError:
        return False
    return True
