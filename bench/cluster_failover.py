"""A master of a Redis Cluster SIGKILLed while workflows run: what the run sees.

Starts a cluster of 3 masters and 3 replicas on loopback (`LocalCluster`, node timeout
2 s), one worker in this process, and N workflows of `steps` sequential activities,
started at a steady pace, each activity recording its execution. Once a third of them
have completed it cuts the master of the shard that holds most workflows off from its
replica for `--replica-lag` seconds (a partition, a slow link: the master goes on
acknowledging writes), SIGKILLs it, restarts the node once its replica is promoted (it
comes back as the new master's replica, as a restarted pod would), then waits for every
workflow and prints: the times from the kill to the promotion, to a replica again and
to the first completion after it; the replication stream the promoted replica never
had; how many workflows completed; acknowledged starts lost; workflows the cluster no
longer has at the end (a result returned before the kill does not make it durable);
activity executions that ran more than once (an outcome the failover lost, or a task
delivered again), and the workflows that replayed an earlier point for it.
`--durability replicated` runs the same with every transition acknowledged by a
replica (README, "Durability").

    .venv/bin/python -m bench.cluster_failover [--workflows 300] [--steps 5]\
        [--start-rate 40] [--durability async|replicated] [--replica-lag 1]
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

import redis  # noqa: E402
from redis.crc import key_slot  # noqa: E402

import loom_redis as loom  # noqa: E402
from loom_redis.testing import EmbeddedServer, LocalCluster, running_worker  # noqa: E402

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


async def _run(
    cluster: LocalCluster, count: int, steps: int, rate: float, durability: str, lag: float
) -> None:
    namespace = "failover"
    done: list[float] = []
    not_found: list[str] = []
    acknowledged: list[str] = []
    third_done = asyncio.Event()
    async with (
        loom.Client.connect(cluster.url, namespace=namespace, durability=durability) as client,
        running_worker(cluster.url, namespace, durability=durability, concurrency=32),
    ):

        async def wait(handle: loom.WorkflowHandle[dict]) -> None:
            try:
                await handle.result(timeout=300)
            except loom.WorkflowNotFoundError:
                not_found.append(handle.workflow_id)
                return
            done.append(time.monotonic())
            if len(done) >= count // 3:
                third_done.set()

        async def produce() -> None:
            """Starts at a steady pace, so that some are under way at the kill."""
            for n in range(count):
                handle = await client.start(FailoverChain, {"key": f"w{n}", "steps": steps})
                acknowledged.append(handle.workflow_id)
                tasks.append(asyncio.create_task(wait(handle)))
                await asyncio.sleep(1 / rate)

        tasks: list[asyncio.Task[None]] = []
        began = time.monotonic()
        producer = asyncio.create_task(produce())
        await third_done.wait()
        shards = collections.Counter(
            client.store.keys.shard_of(workflow_id) for workflow_id in acknowledged
        )
        slot = _busiest_slot(client, shards)
        victim = await asyncio.to_thread(cluster.master_of_slot, slot)
        # A replica cut off (a network partition, a slow link) while the master goes on
        # acknowledging writes.
        replicas = await asyncio.to_thread(cluster.replicas_of, victim)
        replica_offset = _offset(replicas[0])
        master_offset = await asyncio.to_thread(_cut_off_replicas, victim, lag)
        killed = time.monotonic()
        started_before = len(acknowledged)
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
        # As an orchestrator would: the killed node comes back, as the new master's
        # replica (its nodes.conf says which cluster it belongs to).
        await asyncio.to_thread(victim.start)
        promoted_node = await asyncio.to_thread(cluster.master_of_slot, slot)
        await asyncio.to_thread(_wait_for_a_replica, cluster, promoted_node)
        replicated_again = time.monotonic()
        await producer
        await asyncio.gather(*tasks)
        # What the cluster holds in the end: a workflow whose result() returned before
        # the kill may have been lost with the dead master since.
        final = {workflow_id: await _status(client, workflow_id) for workflow_id in acknowledged}
        after_kill = [t for t in done if t > killed]
        # A "not found" of a workflow that exists is a wrong answer; one that does not
        # exist is a start acknowledged by the dead master and lost with it.
        spurious = [
            workflow_id
            for workflow_id in not_found
            if await _exists(client.get_handle(workflow_id))
        ]
    print(
        f"{count} workflows x {steps} activities on 3 masters + 3 replicas, durability "
        f"{durability!r}; SIGKILL of a master after {before} completed and "
        f"{started_before} started, its replica cut off {lag:g} s before"
    )
    print(f"  replica promoted {promoted - killed:.1f} s after the kill")
    print(f"  the promoted master had a replica again {replicated_again - killed:.1f} s after it")
    print(
        f"  replication stream the promoted replica never had: "
        f"{master_offset - replica_offset} bytes"
    )
    if after_kill:
        print(f"  first completion after the kill: {min(after_kill) - killed:.1f} s")
    print(
        f"  completed: {len(done)}/{count}, the last {max(done) - began:.1f} s after "
        "the first start"
    )
    print(f"  acknowledged starts lost with the dead master: {len(not_found) - len(spurious)}")
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
        runs = [executions[(key, step)] for step in range(steps)]
        print(f"    {key}: executions of its activities, in order: {runs}")


def _cut_off_replicas(master: EmbeddedServer, seconds: float) -> int:
    """Cut `master` off from its replicas for `seconds`: no new connection is accepted
    (maxclients is set to those it has), then its replicas' links are closed, so that
    they cannot reconnect and catch up, while its clients go on writing. Returns the
    master's replication offset at the end."""
    admin = redis.Redis(port=master.port)
    try:
        connected = int(admin.info("clients")["connected_clients"])
        admin.config_set("maxclients", connected)
        admin.client_kill_filter(_type="replica")
        time.sleep(seconds)
        return int(admin.info("replication")["master_repl_offset"])
    finally:
        admin.close()


def _offset(replica: EmbeddedServer) -> int:
    """How much of its master's replication stream a replica has processed."""
    admin = redis.Redis(port=replica.port)
    try:
        return int(admin.info("replication")["slave_repl_offset"])
    finally:
        admin.close()


def _wait_for_a_replica(cluster: LocalCluster, master: EmbeddedServer) -> None:
    while not cluster.replicas_of(master):
        time.sleep(0.1)


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


def _busiest_slot(client: loom.Client, shards: collections.Counter[int]) -> int:
    """The hash slot of the shard that holds the most of the run's workflows."""
    busiest = shards.most_common(1)[0][0]
    return key_slot(client.store.keys.queue(busiest, "default").encode())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workflows", type=int, default=300)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--start-rate", type=float, default=40.0, help="starts per second")
    parser.add_argument("--durability", choices=["async", "replicated"], default="async")
    parser.add_argument(
        "--replica-lag",
        type=float,
        default=1.0,
        help="seconds the dead master's replicas are cut off before the kill",
    )
    args = parser.parse_args()
    with LocalCluster(masters=3, replicas=1) as cluster:
        asyncio.run(
            _run(
                cluster,
                args.workflows,
                args.steps,
                args.start_rate,
                args.durability,
                args.replica_lag,
            )
        )


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
