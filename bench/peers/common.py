"""What every peer's driver shares: the command line, completion records and results.

Standard library only (it runs in every peer's virtualenv, Python 3.11 or 3.12).

A driver (`python -m bench.peers.<name> drive --workload A ...`) enqueues the jobs of
one workload, waits until they are done and writes a JSON file for bench/run.py:
`{"enqueued": {key: t}, "done": {key: t}, "steps": [t, ...], "extra": {...}}`, all
times from time.time() on this machine. Jobs of the task queues record their own
completion: the last task of a job appends `<key> <time.time()>` to a file of its
process in $BENCH_DONE_DIR (one write(2), no Redis command). The workflow engines'
drivers read completion times from the engine's own store instead.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

DONE_DIR_ENV = "BENCH_DONE_DIR"
REDIS_URL_ENV = "BENCH_REDIS_URL"
PG_URL_ENV = "BENCH_PG_URL"

# Keys of the warm-up jobs: they never count in a workload's figures.
WARM_PREFIX = "warm"
# Workload D pauses this long between two jobs, the same for every system, so that each
# job meets an idle system.
D_PAUSE_SECONDS = 0.01


def job_key(workload: str, index: int) -> str:
    return f"{workload}{index:06d}"


def record_done(key: str) -> None:
    """Append `<key> <time.time()>` to this process's completion file."""
    directory = os.environ.get(DONE_DIR_ENV)
    if not directory:
        return
    line = f"{key} {time.time():.6f}\n".encode()
    fd = os.open(
        os.path.join(directory, f"done-{os.getpid()}.log"),
        os.O_WRONLY | os.O_APPEND | os.O_CREAT,
        0o644,
    )
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


class DoneReader:
    """Follows the completion files of $BENCH_DONE_DIR, reading only what is new."""

    def __init__(self, directory: str | None = None) -> None:
        self.directory = Path(directory or os.environ[DONE_DIR_ENV])
        self.offsets: dict[Path, int] = {}
        self.done: dict[str, float] = {}

    def poll(self) -> dict[str, float]:
        for path in sorted(self.directory.glob("done-*.log")):
            offset = self.offsets.get(path, 0)
            with open(path, "rb") as handle:
                handle.seek(offset)
                chunk = handle.read()
            end = chunk.rfind(b"\n") + 1  # a line being written is read next time
            self.offsets[path] = offset + end
            for line in chunk[:end].decode().splitlines():
                key, stamp = line.split()
                # A task run twice (a redelivery) counts by its first completion.
                self.done.setdefault(key, float(stamp))
        return self.done

    def wait_for(self, keys: Iterable[str], timeout: float, interval: float = 0.05) -> bool:
        """Poll until every key is done; False when `timeout` seconds pass first."""
        wanted = set(keys)
        deadline = time.monotonic() + timeout
        while True:
            if wanted <= self.poll().keys():
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(interval)


def wait_until(check: Callable[[], bool], timeout: float, interval: float) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="one workload of bench/run.py")
    sub = parser.add_subparsers(dest="command", required=True)
    drive = sub.add_parser("drive", help="enqueue a workload, wait for it, write timings")
    drive.add_argument(
        "--workload", required=True, choices=["warm", "A", "B", "C", "C-paired", "D"]
    )
    drive.add_argument("--count", type=int, required=True, help="jobs (C: activities)")
    drive.add_argument("--steps", type=int, default=1, help="activities per job")
    drive.add_argument("--timeout", type=float, default=600.0)
    drive.add_argument("--out", required=True)
    drive.add_argument("--stats", action="store_true", help="measure Redis costs too")
    sub.add_parser("worker", help="run a worker (peers without a worker command of their own)")
    return parser.parse_args(argv)


def write_result(
    path: str,
    *,
    enqueued: dict[str, float] | None = None,
    done: dict[str, float] | None = None,
    steps: list[float] | None = None,
    probe: list[float] | None = None,
    extra: dict[str, Any] | None = None,
) -> None:
    result = {
        "enqueued": enqueued or {},
        "done": done or {},
        "steps": steps or [],
        "probe": probe or [],
        "extra": extra or {},
    }
    tmp = f"{path}.tmp"
    with open(tmp, "w") as handle:
        json.dump(result, handle)
    os.replace(tmp, path)
