"""A worker that loses its Redis connection for 10 s reconnects by itself, finishes its
work, and nothing is committed twice."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter

import anyio
import pytest

import loom_redis as loom
from loom_redis.events import COMMAND_TYPES, EventType
from loom_redis.testing import free_port, running_worker

pytestmark = pytest.mark.anyio

OUTAGE_SECONDS = 10


class CuttableProxy:
    """A TCP proxy to Redis whose link can be cut: open connections are dropped and new
    ones refused until it is restored, as a network partition does to a worker."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.cut = False
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def stop(self) -> None:
        self.sever()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def sever(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        if self.cut:
            client_w.transport.abort()
            return
        server_r, server_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers |= {client_w, server_w}

        async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            writer.transport.abort()

        await asyncio.gather(pump(client_r, server_w), pump(server_r, client_w))


@loom.activity(name="connloss_step")
async def step(value: int) -> int:
    await asyncio.sleep(0.3)
    return value + 1


@loom.workflow(name="ConnectionLossWorkflow")
class Steps(loom.Workflow[dict, dict]):
    @loom.step()
    async def run(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        value = 0
        for _ in range(4):
            value = await ctx.activity(step, value)
        await ctx.sleep(seconds=0.5)
        await ctx.state.set("value", value)


async def test_worker_survives_a_ten_second_partition(
    client: loom.Client, redis_url: str, namespace: str
) -> None:
    proxy = CuttableProxy(int(redis_url.rsplit(":", 1)[1].split("/")[0]))
    await proxy.start()
    try:
        async with running_worker(proxy.url, namespace, concurrency=8) as worker:
            handles = [await Steps.start({}) for _ in range(8)]
            with anyio.fail_after(10):
                while not any(
                    e.type == EventType.ACTIVITY_COMPLETED for e in await handles[0].history()
                ):
                    await anyio.sleep(0.05)
            proxy.cut = True
            proxy.sever()
            # The producer side still reaches Redis: more work arrives during the outage.
            handles += [await Steps.start({}) for _ in range(4)]
            await anyio.sleep(OUTAGE_SECONDS)
            proxy.cut = False
            with anyio.fail_after(60):
                results = [await h.result() for h in handles]
            assert worker.name  # the same worker, never restarted
    finally:
        await proxy.stop()
    assert results == [{"value": 4}] * len(handles)
    for handle in handles:
        history = await handle.history()
        seqs = Counter(e.seq for e in history if e.type in COMMAND_TYPES)
        assert all(count == 1 for count in seqs.values()), seqs
        completions = Counter(e.seq for e in history if e.type == EventType.ACTIVITY_COMPLETED)
        assert sorted(completions.values()) == [1, 1, 1, 1]
        assert [e.type for e in history].count(EventType.TIMER_FIRED) == 1
