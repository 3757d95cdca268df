"""`loom worker --wait-for-redis S` started during a Redis outage waits for Redis and
then works, instead of exiting (and crash-looping under Kubernetes)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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


async def test_worker_waits_for_redis_to_come_up(tmp_path: Path) -> None:
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    worker = _worker(url, "30")
    try:
        await anyio.sleep(1.5)  # the worker is retrying, not gone
        assert worker.poll() is None
        with EmbeddedServer(tmp_path, port=port) as server:
            async with loom.Client.connect(server.url, namespace="waits") as client:
                handle = await client.start(SmokeWorkflow, {"value": 4})
                assert await handle.result(timeout=20) == {"doubled": 8}
    finally:
        worker.terminate()
        _, stderr = await anyio.to_thread.run_sync(worker.communicate, None, 20)
    assert b"cannot reach Redis" in stderr and b"retrying in" in stderr


async def test_without_patience_the_worker_exits_at_once() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    worker = _worker(url, "0")
    _, stderr = await anyio.to_thread.run_sync(worker.communicate, None, 30)
    assert worker.returncode != 0 and b"cannot reach Redis" in stderr
    assert b"Traceback" not in stderr and b"retrying in" not in stderr
