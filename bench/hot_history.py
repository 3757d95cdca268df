"""A workflow whose history keeps moving, this checkout beside another (a baseline).

Issue 11 §2: events that arrive while a workflow task runs (signals, activity outcomes)
used to make its commit lose the race again and again. Two workloads, each on a fresh
Valkey (AOF everysec) with one `loom worker` process of the checkout:

- signals: a workflow waits for N signals one after another; the client sends them as
  fast as it can (50 at a time). Reported: how long the sending took, and how long after
  the last signal the workflow completed.
- gather: one step gathers M activities. Reported: start to result, and the longest
  script Redis ran meanwhile (its slow log: how long a commit of M commands blocks it).

    .venv/bin/python -m bench.hot_history ../baseline-checkout [--signals 5000] [--gather 2000]

The baseline checkout needs its own .venv (`make setup` there). Both run the workflows
of bench/hot_workflows.py (a file path, so the baseline needs no copy of it).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import anyio

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / "bench" / "hot_workflows.py"
SENDERS = 50
# Long enough that a workflow stuck behind a lost lease shows as such, not as a crash.
PATIENCE = 300


async def _signals(url: str, count: int) -> tuple[float, float]:
    import loom_redis as loom
    from bench.hot_workflows import Signals

    async with loom.Client.connect(url) as client:
        handle = await client.start(Signals, {"count": count})
        pending = iter(range(count))

        async def sender() -> None:
            for n in pending:
                await client.signal(handle.workflow_id, "tick", n)

        started = time.perf_counter()
        async with anyio.create_task_group() as senders:
            for _ in range(SENDERS):
                senders.start_soon(sender)
        sent = time.perf_counter()
        result = await handle.result(timeout=PATIENCE)
        done = time.perf_counter()
    assert result["received"] == count, result
    return sent - started, done - sent


async def _gather(url: str, count: int) -> tuple[float, float]:
    """(start to result, the longest script meanwhile), in seconds."""
    import redis.asyncio as aioredis

    import loom_redis as loom
    from bench.hot_workflows import Gather

    redis = aioredis.Redis.from_url(url)
    await redis.config_set("slowlog-log-slower-than", 1000)
    await redis.config_set("slowlog-max-len", 10000)
    await redis.slowlog_reset()
    async with loom.Client.connect(url) as client:
        started = time.perf_counter()
        handle = await client.start(Gather, {"count": count})
        result = await handle.result(timeout=PATIENCE)
        done = time.perf_counter()
    assert result["total"] == sum(range(count)), result
    slowest = max((e["duration"] for e in await redis.slowlog_get(10000)), default=0)
    await redis.aclose()
    return done - started, slowest / 1e6


async def _measure(checkout: Path, signals: int, gather: int) -> tuple[float, float, float, float]:
    from bench.checkouts import worker_of
    from loom_redis.testing import EmbeddedServer

    with EmbeddedServer(appendonly=True) as server:
        async with worker_of(checkout, server.url, str(WORKFLOWS)):
            sending, after_last = await _signals(server.url, signals)
            gathered, slowest = await _gather(server.url, gather)
    return sending, after_last, gathered, slowest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("baseline", type=Path, help="another checkout, with its own .venv")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--signals", type=int, default=5000)
    parser.add_argument("--gather", type=int, default=2000)
    args = parser.parse_args()
    checkouts = {"this checkout": ROOT, "baseline": args.baseline.resolve()}
    runs: dict[str, list[tuple[float, float, float, float]]] = {name: [] for name in checkouts}
    for _ in range(args.rounds):
        for name, checkout in checkouts.items():
            runs[name].append(asyncio.run(_measure(checkout, args.signals, args.gather)))
    print(
        f"{args.signals} signals to one workflow (sent {SENDERS} at a time), and a gather "
        f"of {args.gather} activities; {args.rounds} rounds, seconds"
    )
    for name, measured in runs.items():
        print(f"  {name}")
        print("    signals sent in:         " + ", ".join(f"{m[0]:.2f}" for m in measured))
        print("    done after the last one: " + ", ".join(f"{m[1]:.2f}" for m in measured))
        print("    gather, start to result: " + ", ".join(f"{m[2]:.2f}" for m in measured))
        print("    gather, longest script:  " + ", ".join(f"{m[3]:.3f}" for m in measured))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
