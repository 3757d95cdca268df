"""Celery 5 with Redis as broker and result backend (runs in .bench/celery).

Workers: `celery -A bench.peers.celery:app worker --concurrency 2` (the default prefork
pool, two child processes). A job of workload B is a `celery.chain` of 5 tasks; the
last task of a job records its completion time (bench.peers.common.record_done).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from celery import Celery, chain

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

app = Celery("bench", broker=URL, backend=URL)


@app.task(name="bench_step")
def bench_step(value: int, key: str, last: bool) -> int:
    """One activity; a chain passes each result to the next task as its first argument."""
    if last:
        record_done(key)
    return value + 1


def send(key: str, steps: int) -> None:
    if steps == 1:
        bench_step.apply_async((0, key, True))
        return
    tasks = [bench_step.s(0, key, False)]
    tasks += [bench_step.s(key, i == steps - 1) for i in range(1, steps)]
    chain(*tasks).apply_async()


def batch(prefix: str, count: int, steps: int, timeout: float) -> dict[str, Any]:
    enqueued: dict[str, float] = {}
    for index in range(count):
        key = job_key(prefix, index)
        enqueued[key] = time.time()
        send(key, steps)
    reader = DoneReader()
    reader.wait_for(enqueued, timeout)
    return {"enqueued": enqueued, "done": reader.done}


def one_at_a_time(count: int, timeout: float) -> dict[str, Any]:
    enqueued: dict[str, float] = {}
    reader = DoneReader()
    deadline = time.monotonic() + timeout
    for index in range(count):
        if time.monotonic() > deadline:
            break
        key = job_key("D", index)
        enqueued[key] = time.time()
        send(key, 1)
        while key not in reader.poll() and time.monotonic() < deadline:
            time.sleep(0.001)
        time.sleep(D_PAUSE_SECONDS)
    return {"enqueued": enqueued, "done": reader.done}


def drive(argv: list[str]) -> None:
    args = parse_args(argv)
    if args.workload == "D":
        result = one_at_a_time(args.count, args.timeout)
    else:
        prefix = WARM_PREFIX if args.workload == "warm" else args.workload
        result = batch(prefix, args.count, args.steps, args.timeout)
    write_result(args.out, **result)


if __name__ == "__main__":
    drive(sys.argv[1:])
