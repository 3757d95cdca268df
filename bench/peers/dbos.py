"""DBOS Transact (durable workflows on Postgres): workflows, worker and driver.

Runs in .bench/dbos. Workers (`python -m bench.peers.dbos worker`, two processes)
launch DBOS on the throwaway Postgres of bench/run.py and listen on one queue with
its defaults; the driver enqueues with DBOSClient. A job is a workflow of `steps`
sequential steps. Completion times are DBOS's own `completed_at` (ms) in
dbos.workflow_status; the driver polls that table to know when a run is over.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any

import psycopg
from dbos import DBOS, DBOSClient

from bench.peers.common import (
    D_PAUSE_SECONDS,
    PG_URL_ENV,
    WARM_PREFIX,
    job_key,
    parse_args,
    write_result,
)

QUEUE = "bench"
WORKFLOW = "bench_chain"
CLOSED = ("SUCCESS", "ERROR", "CANCELLED")


def database_url() -> str:
    return os.environ[PG_URL_ENV]


@DBOS.step()
def bench_inc(value: int) -> int:
    return value + 1


@DBOS.workflow(name=WORKFLOW)
def bench_chain(steps: int) -> int:
    value = 0
    for _ in range(steps):
        value = bench_inc(value)
    return value


def worker() -> None:
    # Each process is its own executor, as in any deployment of several workers.
    config: Any = {
        "name": "bench",
        "system_database_url": database_url(),
        "executor_id": f"bench-{os.getpid()}",
    }
    DBOS(config=config)
    DBOS.launch()
    DBOS.register_queue(QUEUE)
    threading.Event().wait()


def closed(conn: psycopg.Connection[Any], ids: list[str]) -> dict[str, tuple[str, int]]:
    rows = conn.execute(
        "SELECT workflow_uuid, status, completed_at FROM dbos.workflow_status "
        "WHERE workflow_uuid = ANY(%s) AND status = ANY(%s)",
        (ids, list(CLOSED)),
    ).fetchall()
    return {row[0]: (row[1], row[2]) for row in rows}


def enqueue(client: DBOSClient, key: str, steps: int, deadline: float) -> None:
    options: Any = {"queue_name": QUEUE, "workflow_name": WORKFLOW, "workflow_id": key}
    while True:
        try:
            client.enqueue(options, steps)
            return
        except Exception:
            # Before the workers registered the queue; only the warm-up meets this.
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def outcome(
    conn: psycopg.Connection[Any], enqueued: dict[str, float]
) -> tuple[dict[str, float], int]:
    found = closed(conn, list(enqueued))
    done = {key: completed / 1000 for key, (_status, completed) in found.items() if completed}
    failed = sum(status != "SUCCESS" for status, _ in found.values())
    return done, failed


def batch(
    client: DBOSClient, conn: psycopg.Connection[Any], prefix: str, args: Any
) -> dict[str, Any]:
    deadline = time.monotonic() + args.timeout
    enqueued: dict[str, float] = {}
    for index in range(args.count):
        key = job_key(prefix, index)
        enqueued[key] = time.time()
        enqueue(client, key, args.steps, deadline)
    ids = list(enqueued)
    while len(closed(conn, ids)) < len(ids) and time.monotonic() < deadline:
        time.sleep(0.1)
    done, failed = outcome(conn, enqueued)
    return {"enqueued": enqueued, "done": done, "extra": {"failed": failed}}


def one_at_a_time(client: DBOSClient, conn: psycopg.Connection[Any], args: Any) -> dict[str, Any]:
    deadline = time.monotonic() + args.timeout
    enqueued: dict[str, float] = {}
    for index in range(args.count):
        if time.monotonic() > deadline:
            break
        key = job_key("D", index)
        enqueued[key] = time.time()
        enqueue(client, key, 1, deadline)
        while not closed(conn, [key]) and time.monotonic() < deadline:
            time.sleep(0.002)
        time.sleep(D_PAUSE_SECONDS)
    done, failed = outcome(conn, enqueued)
    return {"enqueued": enqueued, "done": done, "extra": {"failed": failed}}


def drive(argv: list[str]) -> None:
    args = parse_args(argv)
    if args.command == "worker":
        worker()
        return
    client = DBOSClient(system_database_url=database_url())
    try:
        url = database_url().replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(url, autocommit=True) as conn:
            if args.workload == "D":
                result = one_at_a_time(client, conn, args)
            else:
                prefix = WARM_PREFIX if args.workload == "warm" else args.workload
                result = batch(client, conn, prefix, args)
    finally:
        client.destroy()
    write_result(args.out, **result)


if __name__ == "__main__":
    drive(sys.argv[1:])
