"""A `loom worker` process of one checkout (this one or a baseline), for the benchmarks
that compare two checkouts side by side in one run."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
from anyio.abc import Process


@asynccontextmanager
async def worker_of(checkout: Path, url: str, *arguments: str) -> AsyncIterator[Process]:
    """`loom worker ARGUMENTS` run by the checkout's own .venv against `url`, once its
    heartbeat is in Redis; terminated on exit."""
    import loom_redis as loom

    env = {**os.environ, "LOOM_REDIS_URL": url, "PYTHONPATH": str(checkout)}
    command = [str(checkout / ".venv" / "bin" / "python"), "-m", "loom_redis", "worker"]
    worker = await anyio.open_process(
        [*command, *arguments],
        cwd=checkout,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        async with loom.Client.connect(url) as client:
            for _ in range(400):
                if await client.workers():
                    break
                await asyncio.sleep(0.05)
        yield worker
    finally:
        worker.terminate()
        with anyio.fail_after(30):
            await worker.wait()
