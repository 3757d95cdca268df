"""taskiq + taskiq-redis: the benchmark's tasks and its driver (runs in .bench/taskiq).

The setup of taskiq-redis's README: a RedisStreamBroker with a RedisAsyncResultBackend,
workers started as `taskiq worker bench.peers.taskiq:broker --workers 2`. A job of
workload B is a chain of 5 tasks, each enqueueing the next one; the last task of a
job records its completion time (bench.peers.common.record_done).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import Any

from taskiq_redis import RedisAsyncResultBackend, RedisStreamBroker

from bench.peers.common import (
    D_PAUSE_SECONDS,
    REDIS_URL_ENV,
    WARM_PREFIX,
    DoneReader,
    job_key,
    parse_args,
    record_done,
    write_result,
)

URL = os.environ.get(REDIS_URL_ENV, "redis://127.0.0.1:6379/0")

broker = RedisStreamBroker(url=URL).with_result_backend(RedisAsyncResultBackend(redis_url=URL))


@broker.task(task_name="bench_step")
async def bench_step(key: str, value: int, remaining: int) -> int:
    """One activity: the next one of the chain is a new task, the last one records."""
    value += 1
    if remaining > 1:
        await bench_step.kiq(key, value, remaining - 1)
    else:
        record_done(key)
    return value


async def batch(prefix: str, count: int, steps: int, timeout: float) -> dict[str, Any]:
    enqueued: dict[str, float] = {}
    for index in range(count):
        key = job_key(prefix, index)
        enqueued[key] = time.time()
        await bench_step.kiq(key, 0, steps)
    reader = DoneReader()
    await asyncio.to_thread(reader.wait_for, enqueued, timeout)
    return {"enqueued": enqueued, "done": reader.done}


async def one_at_a_time(count: int, timeout: float) -> dict[str, Any]:
    enqueued: dict[str, float] = {}
    reader = DoneReader()
    deadline = time.monotonic() + timeout
    for index in range(count):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        key = job_key("D", index)
        enqueued[key] = time.time()
        await bench_step.kiq(key, 0, 1)
        await asyncio.to_thread(reader.wait_for, [key], left, 0.001)
        await asyncio.sleep(D_PAUSE_SECONDS)
    return {"enqueued": enqueued, "done": reader.done}


async def drive(argv: list[str]) -> None:
    args = parse_args(argv)
    await broker.startup()
    try:
        if args.workload == "D":
            result = await one_at_a_time(args.count, args.timeout)
        else:
            prefix = WARM_PREFIX if args.workload == "warm" else args.workload
            result = await batch(prefix, args.count, args.steps, args.timeout)
    finally:
        await broker.shutdown()
    write_result(args.out, **result)


if __name__ == "__main__":
    asyncio.run(drive(sys.argv[1:]))
