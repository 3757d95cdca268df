"""A master of a Redis Cluster SIGKILLed while workflows run: what the run sees.

Starts a cluster of 3 masters and 3 replicas on loopback (`LocalCluster`, node timeout
2 s), one worker in this process, and N workflows of `steps` sequential activities, each
activity recording its execution. Once a third of them have completed it SIGKILLs the
master of the shard that holds most open workflows, then waits for every workflow and
prints: the time from the kill to the replica's promotion and to the first completion
after it, how many workflows completed, how many activity executions ran more than
once (an execution whose recorded outcome the failover lost, or whose task was taken
over), and how many workflows replayed an earlier point for it (those with a re-run
activity).

    .venv/bin/python -m bench.cluster_failover [--workflows 300] [--steps 5]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

from redis.crc import key_slot  # noqa: E402

import loom_redis as loom  # noqa: E402
from loom_redis.testing import LocalCluster, running_worker  # noqa: E402

executions: collections.Counter[tuple[str, int]] = collections.Counter()


@loom.activity(name="bench_failover_step")
async def failover_step(key: str, step: int) -> int:
    executions[(key, step)] += 1
    await asyncio.sleep(0.01)
    return step + 1


@loom.workflow(name="bench_FailoverChain")
class FailoverChain(loom.Workflow[dict, dict]):
    @loom.step(name="run")
    async def run(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        step = 0
        for _ in range(int(ctx.input["steps"])):
            step = await ctx.activity(failover_step, ctx.input["key"], step)
        await ctx.state.set("steps", step)


async def _run(cluster: LocalCluster, count: int, steps: int) -> None:
    namespace = "failover"
    done: list[float] = []
    lost: list[str] = []
    third_done = asyncio.Event()
    async with (
        loom.Client.connect(cluster.url, namespace=namespace) as client,
        running_worker(cluster.url, namespace, concurrency=32),
    ):
        handles = [
            await client.start(FailoverChain, {"key": f"w{n}", "steps": steps})
            for n in range(count)
        ]

        async def wait(handle: loom.WorkflowHandle[dict]) -> None:
            try:
                await handle.result(timeout=300)
            except loom.WorkflowNotFoundError:  # its start was lost with the master
                lost.append(handle.workflow_id)
                return
            done.append(time.monotonic())
            if len(done) >= count // 3:
                third_done.set()

        tasks = [asyncio.create_task(wait(h)) for h in handles]
        await third_done.wait()
        shards = collections.Counter(client.store.keys.shard_of(h.workflow_id) for h in handles)
        slot = _busiest_slot(client, shards)
        victim = await asyncio.to_thread(cluster.master_of_slot, slot)
        killed = time.monotonic()
        before = len(done)
        victim.stop(kill=True)
        promoted = None
        while promoted is None:
            try:
                if await asyncio.to_thread(cluster.master_of_slot, slot) is not victim:
                    promoted = time.monotonic()
            except loom.ConfigurationError:
                pass
            await asyncio.sleep(0.1)
        await asyncio.gather(*tasks)
    print(
        f"{count} workflows x {steps} activities on 3 masters + 3 replicas; "
        f"SIGKILL of a master after {before} completed"
    )
    print(f"  replica promoted {promoted - killed:.1f} s after the kill")
    print(f"  completed: {len(done)}/{count}")
    print(f"  lost whole (a start the dead master acknowledged, never replicated): {len(lost)}")
    reruns = sum(n - 1 for n in executions.values() if n > 1)
    replayed = {key for (key, _), n in executions.items() if n > 1}
    print(f"  activity executions run more than once: {reruns}")
    print(f"  workflows with a re-run activity (replayed an earlier point): {len(replayed)}")


def _busiest_slot(client: loom.Client, shards: collections.Counter[int]) -> int:
    """The hash slot of the shard that holds the most of the run's workflows."""
    busiest = shards.most_common(1)[0][0]
    return key_slot(client.store.keys.queue(busiest, "default").encode())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workflows", type=int, default=300)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    with LocalCluster(masters=3, replicas=1) as cluster:
        asyncio.run(_run(cluster, args.workflows, args.steps))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
