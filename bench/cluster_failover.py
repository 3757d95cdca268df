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
import sys
import time
from pathlib import Path
from typing import Literal

ROOT = Path(__file__).resolve().parent.parent

import redis  # noqa: E402

import loom_redis as loom  # noqa: E402
from bench.cluster_load import Load  # noqa: E402
from loom_redis.testing import EmbeddedServer, LocalCluster, running_worker  # noqa: E402


async def _run(
    cluster: LocalCluster,
    count: int,
    steps: int,
    rate: float,
    durability: Literal["async", "replicated"],
    lag: float,
) -> None:
    namespace = "failover"
    async with (
        loom.Client.connect(cluster.url, namespace=namespace, durability=durability) as client,
        running_worker(cluster.url, namespace, durability=durability, concurrency=32),
    ):
        load = Load(client, count, steps, rate)
        load.start()
        await load.third_done.wait()
        [slot] = load.busiest_slots(1)
        victim = await asyncio.to_thread(cluster.master_of_slot, slot)
        # A replica cut off (a network partition, a slow link) while the master goes on
        # acknowledging writes.
        replicas = await asyncio.to_thread(cluster.replicas_of, victim)
        replica_offset = _offset(replicas[0])
        master_offset = await asyncio.to_thread(_cut_off_replicas, victim, lag)
        killed = time.monotonic()
        started_before = len(load.acknowledged)
        before = len(load.done)
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
        await load.finish()
        after_kill = [t for t in load.done if t > killed]
        print(
            f"{count} workflows x {steps} activities on 3 masters + 3 replicas, durability "
            f"{durability!r}; SIGKILL of a master after {before} completed and "
            f"{started_before} started, its replica cut off {lag:g} s before"
        )
        print(f"  replica promoted {promoted - killed:.1f} s after the kill")
        print(
            f"  the promoted master had a replica again {replicated_again - killed:.1f} s after it"
        )
        print(
            f"  replication stream the promoted replica never had: "
            f"{master_offset - replica_offset} bytes"
        )
        if after_kill:
            print(f"  first completion after the kill: {min(after_kill) - killed:.1f} s")
        # What the cluster holds in the end: a workflow whose result() returned before
        # the kill may have been lost with the dead master since.
        await load.report()


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
