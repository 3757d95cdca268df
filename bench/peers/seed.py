"""The seed, `loom-core` (SQLite): the benchmark's workflows and its driver.

Runs in .bench/seed (Python 3.12, `pip install loom-core`) with the working directory
holding the seed's database (.loom/LOG) and the repository root on PYTHONPATH, so that
workers (`loom worker -w 4`) import this module by the name the producer recorded.

The seed records no completion time finer than a second, so the driver polls the
database (SQLite in WAL mode, read-only here) for closed workflows: every 50 ms for
workloads A and B (latencies of seconds), every 2 ms for D. Workload C's activity
records its own time, as loom-redis's does.
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import time
from typing import Any

from bench.peers.common import (
    D_PAUSE_SECONDS,
    WARM_PREFIX,
    DoneReader,
    job_key,
    parse_args,
    write_result,
)
from bench.peers.loom_workflows import ChainWorkflow, LongWorkflow

DATABASE = ".loom/LOG"
CLOSED = ("COMPLETED", "FAILED", "CANCELLED")


def closed_ids() -> dict[str, str]:
    with sqlite3.connect(f"file:{DATABASE}?mode=ro", uri=True, timeout=5) as conn:
        marks = ",".join("?" * len(CLOSED))
        query = f"SELECT id, status FROM workflows WHERE status IN ({marks})"
        return dict(conn.execute(query, CLOSED).fetchall())


def status_of(workflow_id: str) -> str | None:
    with sqlite3.connect(f"file:{DATABASE}?mode=ro", uri=True, timeout=5) as conn:
        row = conn.execute("SELECT status FROM workflows WHERE id = ?", (workflow_id,)).fetchone()
        return row[0] if row else None


async def start_all(prefix: str, count: int, steps: int) -> tuple[dict[str, float], dict[str, str]]:
    enqueued: dict[str, float] = {}
    ids: dict[str, str] = {}
    for index in range(count):
        key = job_key(prefix, index)
        enqueued[key] = time.time()
        handle = await ChainWorkflow.start({"steps": steps})
        ids[handle.id] = key
    return enqueued, ids


async def wait_closed(
    ids: dict[str, str], timeout: float, interval: float
) -> tuple[dict[str, float], int]:
    """When each workflow was first seen closed, and how many of them did not complete."""
    done: dict[str, float] = {}
    failed: set[str] = set()
    deadline = time.monotonic() + timeout
    while len(done) < len(ids) and time.monotonic() < deadline:
        now = time.time()
        for workflow_id, status in closed_ids().items():
            key = ids.get(workflow_id)
            if key is not None and key not in done:
                done[key] = now
                if status != "COMPLETED":
                    failed.add(key)
        await asyncio.sleep(interval)
    return done, len(failed)


async def one_at_a_time(count: int, timeout: float) -> dict[str, Any]:
    enqueued: dict[str, float] = {}
    done: dict[str, float] = {}
    failed = 0
    deadline = time.monotonic() + timeout
    for index in range(count):
        if time.monotonic() > deadline:
            break
        key = job_key("D", index)
        enqueued[key] = time.time()
        handle = await ChainWorkflow.start({"steps": 1})
        while time.monotonic() < deadline:
            status = status_of(handle.id)
            if status in CLOSED:
                done[key] = time.time()
                failed += status != "COMPLETED"
                break
            await asyncio.sleep(0.002)
        await asyncio.sleep(D_PAUSE_SECONDS)
    return {"enqueued": enqueued, "done": done, "extra": {"failed": failed}}


async def long_workflow(count: int, timeout: float) -> dict[str, Any]:
    started = time.time()
    handle = await LongWorkflow.start({"count": count})
    deadline = time.monotonic() + timeout
    status = None
    while time.monotonic() < deadline:
        status = status_of(handle.id)
        if status in CLOSED:
            break
        await asyncio.sleep(0.2)
    done = DoneReader().poll()
    steps = sorted(t for key, t in done.items() if key.startswith("c"))
    return {"enqueued": {"C": started}, "steps": steps, "extra": {"status": status}}


async def drive(argv: list[str]) -> None:
    args = parse_args(argv)
    if args.workload == "D":
        result = await one_at_a_time(args.count, args.timeout)
    elif args.workload == "C":
        result = await long_workflow(args.count, args.timeout)
    else:
        prefix = WARM_PREFIX if args.workload == "warm" else args.workload
        enqueued, ids = await start_all(prefix, args.count, args.steps)
        done, failed = await wait_closed(ids, args.timeout, 0.05)
        result = {"enqueued": enqueued, "done": done, "extra": {"failed": failed}}
    write_result(args.out, **result)


if __name__ == "__main__":
    # The seed records each workflow's and activity's module by name and its workers
    # import it: run the code of `bench.peers.seed`, not of `__main__`.
    from bench.peers import seed

    asyncio.run(seed.drive(sys.argv[1:]))
