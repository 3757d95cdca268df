"""The scaling curve of issue 15: loom-redis on 1, 2, 4 and 8 worker processes, on a
standalone Valkey and on a 3-master Redis Cluster, and what durability="replicated" costs.

    .venv/bin/python -m bench.scaling [--quick] [--workers 1,2,4,8]

Each point of the table gets fresh servers, each keeping an AOF fsynced every second as
bench/run.py's does, its `loom worker` processes and its driver as bench/run.py starts
them (bench/peers/loom_redis.py), one warm-up batch, then:

A: N one-activity workflows started one after another: jobs/s, p50/p99 latency.
B: N workflows of 5 sequential activities: steps/s, p50/p99 latency.

The curve runs A and B on each topology at each worker count. The durability points run
B at 2 workers on a master with one replica (standalone, and the cluster with a replica
per master), with LOOM_DURABILITY=async and then =replicated (WAIT 1 after every
transition), side by side on the same topology.

Over B it also reads, before and after the driver's run:
- Redis CPU per step: INFO cpu used_cpu_user + used_cpu_sys of every server process,
  masters and replicas summed apart, over the steps done;
- the worker processes' CPU per step: user + system time from /proc/<pid>/stat;
- the driver's CPU per step (its starts, its polls, its reads of the close times), as
  its process_time() over the workload;
- transitions: INFO commandstats EVALSHA calls (one per transition script: starts,
  commits, claims, the sweeps) on each master, over B's span (first start to last
  close); per shard, the masters' sum over the namespace's shard count;
- cores busy over B's span: ours, and the whole machine's (/proc/stat sampled every
  50 ms), which shows other work on a shared machine.
Every wait is bounded in time; every process started here is stopped at the end.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from redis.crc import key_slot

from bench.cpu_per_step import cpu_seconds
from bench.peers.loom_redis import NAMESPACE
from bench.run import (
    B_STEPS,
    WARM,
    WORKERS,
    Context,
    Procs,
    Unavailable,
    batch_figures,
    cell,
    commandstats,
    drive,
    log,
    machine,
    standalone_redis,
    system_context,
)
from loom_redis.errors import ConfigurationError
from loom_redis.store.keys import DEFAULT_SHARDS, Keyspace
from loom_redis.store.replication import DURABILITY_ENV
from loom_redis.testing import EmbeddedServer, LocalCluster

FULL = {"A": 4000, "B": 8000}
QUICK = {"A": 200, "B": 100}
CURVE_WORKERS = [1, 2, 4, 8]
CLUSTER_MASTERS = 3
# The durability points' worker count: bench/run.py's.
DURABILITY_WORKERS = WORKERS
REPLICA_SYNC_SECONDS = 30.0


@dataclass(frozen=True)
class Point:
    """One row of the table: a topology, its workers, the durability they write with."""

    topology: str  # "standalone" or "cluster"
    workers: int
    replica: bool = False  # one replica per master
    durability: str = "async"
    workloads: str = "AB"


def points(workers: list[int]) -> list[Point]:
    curve = [Point(topology, n) for topology in ("standalone", "cluster") for n in workers]
    cost = [
        Point(topology, DURABILITY_WORKERS, True, durability, "B")
        for topology in ("standalone", "cluster")
        for durability in ("async", "replicated")
    ]
    return curve + cost


@dataclass(frozen=True)
class Servers:
    """A point's running Redis: its URL, every server process, and how many of the
    namespace's shards each master serves (by its port)."""

    url: str
    nodes: list[EmbeddedServer]
    shards: dict[int, int]


@contextlib.contextmanager
def servers(point: Point, directory: Path) -> Iterator[Servers]:
    """The point's Redis, started; a standalone server keeps its files in `directory`."""
    if point.topology == "cluster":
        with LocalCluster(CLUSTER_MASTERS, int(point.replica), appendonly=True) as cluster:
            yield Servers(cluster.url, cluster.nodes, shards_by_master(cluster))
        return
    with standalone_redis(directory) as master:
        if not point.replica:
            yield Servers(master.url, [master], {master.port: DEFAULT_SHARDS})
            return
        with master.replica() as replica:
            wait_linked(replica)
            yield Servers(master.url, [master, replica], {master.port: DEFAULT_SHARDS})


def shards_by_master(cluster: LocalCluster) -> dict[int, int]:
    """How many shards each master serves: a shard's keys share one hash tag, so one
    of its keys' slots says where all of them are."""
    keys = Keyspace(NAMESPACE)
    masters = (
        cluster.master_of_slot(key_slot(keys.queue(shard, "default").encode()))
        for shard in range(keys.shards)
    )
    return dict(collections.Counter(master.port for master in masters))


def wait_linked(replica: EmbeddedServer) -> None:
    client = redis.Redis(port=replica.port, decode_responses=True)
    deadline = time.monotonic() + REPLICA_SYNC_SECONDS
    try:
        while client.info("replication").get("master_link_status") != "up":
            if time.monotonic() > deadline:
                raise Unavailable(f"the replica did not sync in {REPLICA_SYNC_SECONDS:.0f} s")
            time.sleep(0.05)
    finally:
        client.close()


@dataclass(frozen=True)
class NodeSample:
    """What one server process had done when sampled."""

    role: str
    cpu: float  # seconds, user + system
    evalsha: int


def sample(node: EmbeddedServer) -> NodeSample:
    client = redis.Redis(port=node.port, decode_responses=True)
    try:
        cpu = client.info("cpu")
        role = str(client.info("replication")["role"])
        evalsha = commandstats(client).get("evalsha", 0)
    finally:
        client.close()
    return NodeSample(role, float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]), evalsha)


def workers_cpu(ctx: Context) -> float:
    return sum(cpu_seconds(worker.pid) for worker in ctx.workers)


def machine_busy() -> float:
    """CPU seconds this machine's cores have been busy, every process's (/proc/stat)."""
    ticks = [int(field) for field in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = ticks[3] + ticks[4]  # idle, iowait; guest time is in user's already
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class BusySampler:
    """machine_busy() sampled every 50 ms in a thread for the duration of a with-block:
    how many cores were busy over a stretch of it, whatever kept them busy."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []  # time.time(), busy seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> BusySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while True:
            self.samples.append((time.time(), machine_busy()))
            if self._stop.wait(0.05):
                return

    def cores(self, start: float, end: float) -> float:
        inside = [sample for sample in self.samples if start <= sample[0] <= end]
        if len(inside) < 2:
            return float("nan")
        (first, busy_first), (last, busy_last) = inside[0], inside[-1]
        return (busy_last - busy_first) / (last - first)


def measured_b(ctx: Context, deployment: Servers, count: int) -> dict[str, Any]:
    """Workload B's figures, with the CPU each party spent on it and the transitions."""
    before = [sample(node) for node in deployment.nodes]
    workers_before = workers_cpu(ctx)
    with BusySampler() as machine:
        result = drive(ctx, "B", count, B_STEPS, 600)
    workers = workers_cpu(ctx) - workers_before
    after = [sample(node) for node in deployment.nodes]
    figures = batch_figures(result, count, B_STEPS)
    steps = figures["done"] * B_STEPS
    if not steps:
        return figures
    driver = result["extra"]["cpu_seconds"]
    spent = {"workers": workers, "masters": 0.0, "replicas": 0.0, "driver": driver}
    evalsha: list[tuple[int, int]] = []  # per master: calls, shards served
    for node, old, new in zip(deployment.nodes, before, after, strict=True):
        spent["masters" if new.role == "master" else "replicas"] += new.cpu - old.cpu
        if new.role == "master":
            evalsha.append((new.evalsha - old.evalsha, deployment.shards.get(node.port, 0)))
    figures["cpu_us"] = {party: seconds / steps * 1e6 for party, seconds in spent.items()}
    figures["cores"] = sum(spent.values()) / figures["span"]
    began = min(result["enqueued"].values())
    figures["machine_cores"] = machine.cores(began, began + figures["span"])
    figures["transitions"] = [(calls / figures["span"], shards) for calls, shards in evalsha]
    figures["evalsha_per_step"] = sum(calls for calls, _ in evalsha) / steps
    return figures


def run_point(point: Point, counts: dict[str, int], procs: Procs) -> dict[str, Any]:
    durability = {DURABILITY_ENV: point.durability}
    with (
        tempfile.TemporaryDirectory(prefix="bench-scaling-") as directory,
        servers(point, Path(directory)) as deployment,
        system_context(
            "loom-redis", procs, point.workers, url=deployment.url, extra_env=durability
        ) as ctx,
    ):
        drive(ctx, "warm", WARM, 1, 120)
        row: dict[str, Any] = {}
        if "A" in point.workloads:
            row["A"] = batch_figures(drive(ctx, "A", counts["A"], 1, 600), counts["A"], 1)
        row["B"] = measured_b(ctx, deployment, counts["B"])
    return row


# --- the table ------------------------------------------------------------------------


def topology_name(point: Point) -> str:
    if point.topology == "cluster":
        replicas = " + 1 replica each" if point.replica else ""
        return f"cluster, {CLUSTER_MASTERS} masters{replicas}"
    return "standalone" + (" + 1 replica" if point.replica else "")


def cpu_cell(b: dict[str, Any]) -> str:
    cpu = b.get("cpu_us")
    if not cpu:
        return "-"
    redis_cpu = f"{cpu['masters']:,.0f}"
    if cpu["replicas"]:
        redis_cpu += f" (+{cpu['replicas']:,.0f})"
    cores = f"{b['cores']:.2f} of {b['machine_cores']:.2f} cores"
    return f"{cpu['workers']:,.0f} / {redis_cpu} / {cpu['driver']:,.0f}; {cores}"


def transitions_cell(b: dict[str, Any]) -> str:
    per_master = b.get("transitions")
    if not per_master:
        return "-"
    nodes = " / ".join(f"{rate:,.0f} ({shards} shards)" for rate, shards in per_master)
    total = sum(rate for rate, _ in per_master)
    return f"{nodes}; {total / DEFAULT_SHARDS:,.0f}; {b['evalsha_per_step']:.2f}"


def table(rows: list[tuple[Point, Any]], counts: dict[str, int]) -> str:
    lines = [
        f"| topology | workers | durability | A: {counts['A']} x 1 activity "
        f"| B: {counts['B']} x {B_STEPS} activities "
        "| B: CPU per step, us: workers / Redis masters (+replicas) / driver; "
        "cores busy: ours of all "
        "| B: EVALSHA/s per master (its shards); per shard; per step |",
        "|---|---|---|---|---|---|---|",
    ]
    for point, row in rows:
        head = f"| {topology_name(point)} | {point.workers} | {point.durability} | "
        if isinstance(row, str):
            lines.append(head + " | ".join([row, "", "", ""]) + " |")
            continue
        a = cell(row.get("A"), "rate", "jobs/s") if "A" in row else "-"
        b = row["B"]
        cells = [a, cell(b, "rate", "steps/s"), cpu_cell(b), transitions_cell(b)]
        lines.append(head + " | ".join(cells) + " |")
    return "\n".join(lines)


FOOTNOTE = f"""\
CPU per step, over the steps done: the deltas over B's driver run of INFO cpu
(used_cpu_user + used_cpu_sys) of every server process (masters summed; replicas in
brackets) and of the worker processes' /proc/<pid>/stat utime + stime; the driver's
process_time() over the workload (its starts, completion polls, close-time reads).
Cores busy, over B's span (first start to last close): ours is all of the above over
the span (nearly all of it is spent in the span), all is the whole machine's busy time
(/proc/stat sampled every 50 ms: every process's, other work's on this machine too);
this machine has {{cores}} cores.
EVALSHA/s: INFO commandstats evalsha calls on each master over B's span, one per
transition script (starts, commits, claims, sweeps), with the number of the namespace's
{DEFAULT_SHARDS} shards (the default) that master serves (by their hash tags' slots); per
shard: the masters' sum over {DEFAULT_SHARDS}; per step: all masters' calls over the steps."""


def cpu_split(rows: list[tuple[Point, Any]]) -> str:
    """Where the CPU went in each B run, and the steps/s one core of each party would
    carry at that cost per step (what a larger machine's projection starts from)."""
    lines = ["CPU split over B (shares of the CPU spent; steps/s one core carries at it):"]
    for point, row in rows:
        cpu = row["B"].get("cpu_us") if isinstance(row, dict) else None
        if not cpu:
            continue
        total = sum(cpu.values())
        redis_cpu = cpu["masters"] + cpu["replicas"]
        other = max(0.0, row["B"]["machine_cores"] - row["B"]["cores"])
        lines.append(
            f"- {topology_name(point)}, {point.workers} worker(s), {point.durability}: "
            f"workers {cpu['workers'] / total:.0%}, Redis {redis_cpu / total:.0%}, driver "
            f"{cpu['driver'] / total:.0%}, beside {other:.2f} cores of other work; a "
            f"worker core {1e6 / cpu['workers']:,.0f}, a Redis master core "
            f"{1e6 / cpu['masters']:,.0f} steps/s"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"counts {QUICK}")
    parser.add_argument("--workers", default=",".join(map(str, CURVE_WORKERS)), help="the curve's")
    args = parser.parse_args(argv)
    counts = QUICK if args.quick else FULL
    workers = [int(n) for n in args.workers.split(",")]

    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    began = time.monotonic()
    procs = Procs()
    rows: list[tuple[Point, Any]] = []
    try:
        for point in points(workers):
            log(f"{topology_name(point)}, {point.workers} worker(s), {point.durability}")
            try:
                rows.append((point, run_point(point, counts, procs)))
            except (Unavailable, RuntimeError, ConfigurationError, redis.RedisError) as error:
                log(f"failed: {error}")
                rows.append((point, f"n/a: {str(error).splitlines()[0][:160]}"))
    finally:
        procs.stop()
    mode = "--quick" if args.quick else "full"
    print(f"# loom-redis scaling curve, {started}, {time.monotonic() - began:.0f} s")
    print(machine())
    print(f"counts ({mode}): {counts}; Redis appendonly everysec on every node\n")
    print(table(rows, counts))
    print()
    print(FOOTNOTE.format(cores=os.cpu_count()))
    print(cpu_split(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
