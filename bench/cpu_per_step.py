"""A worker's CPU time per workflow step, this checkout beside another (a baseline).

Throughput on this 2-core VM swings by a quarter from one run to the next (its speed
changes for seconds at a time); the CPU time one worker process spends per step swings
far less, so it is what tells whether a change made the hot path dearer. Each round runs,
for each checkout in turn (alternating, so a slow spell of the machine hits both), a
fresh Valkey (AOF everysec), one `loom worker bench.peers.loom_workflows` process of that
checkout, 20 warm-up workflows, then N workflows of 5 sequential activities started one
after another, and reads the worker's user+system CPU time from /proc.

    .venv/bin/python -m bench.cpu_per_step ../baseline-checkout [--rounds 3] [--count 400]

The baseline checkout needs its own .venv (`make setup` there).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STEPS = 5
WARM = 20


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process, from /proc (to a clock tick)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _measure(checkout: Path, count: int) -> tuple[float, float]:
    """(worker CPU, wall time) per step, in microseconds, for one run."""
    import loom_redis as loom
    from bench.checkouts import worker_of
    from bench.peers.loom_workflows import ChainWorkflow
    from loom_redis.testing import EmbeddedServer

    with EmbeddedServer(appendonly=True) as server:
        arguments = ("bench.peers.loom_workflows", "--poll-interval", "0.2")
        async with (
            worker_of(checkout, server.url, *arguments) as worker,
            loom.Client.connect(server.url) as client,
        ):
            for handle in [
                await client.start(ChainWorkflow, {"steps": STEPS}) for _ in range(WARM)
            ]:
                await handle.result(timeout=60)
            cpu_before, started = cpu_seconds(worker.pid), time.perf_counter()
            handles = [await client.start(ChainWorkflow, {"steps": STEPS}) for _ in range(count)]
            for handle in handles:
                await handle.result(timeout=300)
            cpu, wall = cpu_seconds(worker.pid) - cpu_before, time.perf_counter() - started
    steps = count * STEPS
    return cpu / steps * 1e6, wall / steps * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("baseline", type=Path, help="another checkout, with its own .venv")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--count", type=int, default=400, help="workflows per run")
    args = parser.parse_args()
    checkouts = {"this checkout": ROOT, "baseline": args.baseline.resolve()}
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in checkouts}
    for _ in range(args.rounds):
        for name, checkout in checkouts.items():
            runs[name].append(asyncio.run(_measure(checkout, args.count)))
    print(f"worker CPU / wall time per step (us), {args.rounds} rounds of {args.count} x 5 steps")
    for name, measured in runs.items():
        cpus = ", ".join(f"{cpu:.0f}" for cpu, _ in measured)
        walls = ", ".join(f"{wall:.0f}" for _, wall in measured)
        median = statistics.median(cpu for cpu, _ in measured)
        print(f"  {name:<14} CPU {cpus} (median {median:.0f}); wall {walls}")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
