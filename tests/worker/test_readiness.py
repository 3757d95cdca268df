"""/readyz follows whether the worker can reach Redis (issue 11): a probe that said
"ready" while the server was stopped kept traffic on a worker that could do nothing."""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import pytest

from loom_redis.testing import EmbeddedServer, free_port, running_worker
from tests.support import http_get, wait_until

pytestmark = pytest.mark.anyio


async def test_readiness_follows_whether_redis_can_be_reached(tmp_path: Path) -> None:
    port = free_port()

    async def status() -> str:
        try:
            reply = await http_get(port, "/readyz")
        except OSError:  # the endpoint is not listening yet
            return "no answer"
        return reply.split(" ", 2)[1]

    async def ready() -> bool:
        return await status() == "200"

    async def not_ready() -> bool:
        return await status() == "503"

    # With its data kept across the restart (the queues' consumer groups too).
    with EmbeddedServer(
        tmp_path, appendonly=True, binary=os.environ.get("LOOM_TEST_SERVER_BINARY")
    ) as server:
        async with running_worker(server.url, "ready", metrics_port=port):
            await wait_until(ready)
            server.stop()
            await wait_until(not_ready, timeout=15)
            # It stays so for as long as the server is away, not only for a moment.
            for _ in range(30):
                assert await status() == "503"
                await anyio.sleep(0.1)
            server.start()
            await wait_until(ready, timeout=15)
