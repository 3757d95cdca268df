"""`loom worker --wait-for-redis S` started during a Redis outage waits for Redis and
then works, instead of exiting (and crash-looping under Kubernetes)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import IO

import anyio
import anyio.to_thread
import pytest

import loom_redis as loom
from loom_redis.testing import EmbeddedServer, free_port
from tests.e2e.test_smoke import SmokeWorkflow

pytestmark = [pytest.mark.anyio, pytest.mark.standalone]

ROOT = Path(__file__).resolve().parents[2]


def _worker(url: str, wait: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "loom_redis",
            "worker",
            "tests.e2e.test_smoke",
            "--url",
            url,
            "--namespace",
            "waits",
            "--poll-interval",
            "0.2",
            "--wait-for-redis",
            wait,
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _read_until_retried(stderr: IO[bytes], times: int, lines: list[bytes]) -> None:
    """Read the worker's log into `lines` until it has said `times` times that it
    retries (or ended)."""
    while line := stderr.readline():
        lines.append(line)
        if sum(b"retrying in" in seen for seen in lines) >= times:
            return


async def test_worker_waits_for_redis_to_come_up(tmp_path: Path) -> None:
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    worker = _worker(url, "30")
    assert worker.stderr is not None
    logged: list[bytes] = []
    try:
        with anyio.fail_after(30):  # it tried, failed, tried again: retrying, not gone
            await anyio.to_thread.run_sync(
                _read_until_retried, worker.stderr, 2, logged, abandon_on_cancel=True
            )
        assert worker.poll() is None, b"".join(logged).decode(errors="replace")
        with EmbeddedServer(tmp_path, port=port) as server:
            async with loom.Client.connect(server.url, namespace="waits") as client:
                handle = await client.start(SmokeWorkflow, {"value": 4})
                assert await handle.result(timeout=20) == {"doubled": 8}
    finally:
        worker.terminate()
        _, rest = await anyio.to_thread.run_sync(worker.communicate, None, 20)
    stderr = b"".join(logged) + rest
    assert b"cannot reach Redis" in stderr and b"retrying in" in stderr


async def test_without_patience_the_worker_exits_at_once() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    worker = _worker(url, "0")
    _, stderr = await anyio.to_thread.run_sync(worker.communicate, None, 30)
    assert worker.returncode != 0 and b"cannot reach Redis" in stderr
    assert b"Traceback" not in stderr and b"retrying in" not in stderr
