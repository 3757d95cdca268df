"""redis-py resends a command whose reply was lost on the way back; a start or a signal
resent that way still happens once."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import pytest

import loom_redis as loom
from loom_redis.events import EventType
from loom_redis.testing import free_port

pytestmark = [pytest.mark.anyio, pytest.mark.standalone]


class ReplyDroppingProxy:
    """Forwards to Redis, but once the command holding `needle` has reached the server,
    cuts the client's connection instead of passing the reply back."""

    def __init__(self, target_port: int, needle: bytes) -> None:
        self.target_port = target_port
        self.needle = needle
        self.port = free_port()
        self.dropped = 0
        self._armed = False

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", self.target_port)

        async def upstream() -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await client_r.read(65536):
                    if self.needle in data and not self.dropped:
                        self._armed = True
                    server_w.write(data)
                    await server_w.drain()
            server_w.transport.abort()

        async def downstream() -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await server_r.read(65536):
                    if self._armed:
                        self._armed = False
                        self.dropped += 1
                        break
                    client_w.write(data)
                    await client_w.drain()
            client_w.transport.abort()
            server_w.transport.abort()

        await asyncio.gather(upstream(), downstream())


@contextlib.asynccontextmanager
async def client_losing_one_reply(
    redis_url: str, namespace: str, needle: str
) -> AsyncIterator[tuple[loom.Client, ReplyDroppingProxy]]:
    proxy = ReplyDroppingProxy(int(redis_url.rsplit(":", 1)[1].split("/")[0]), needle.encode())
    # Loaded scripts: the reply lost is the script's own, not a NOSCRIPT answer.
    async with loom.Client.connect(redis_url, namespace=namespace) as direct:
        await direct.store.load_scripts()
    server = await asyncio.start_server(proxy._serve, "127.0.0.1", proxy.port)
    async with (
        server,
        loom.Client.connect(f"redis://127.0.0.1:{proxy.port}/0", namespace=namespace) as client,
    ):
        yield client, proxy


@loom.workflow(name="LostRepliesWorkflow")
class WaitsForASignal(loom.Workflow[dict, dict]):
    @loom.step()
    async def wait(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        await ctx.state.set("got", await ctx.wait_for_signal("go"))


async def test_a_resent_start_is_recognised_as_its_own(
    client: loom.Client, redis_url: str, namespace: str
) -> None:
    workflow_id = f"lost-reply-{uuid.uuid4().hex}"
    async with client_losing_one_reply(redis_url, namespace, workflow_id) as (lossy, proxy):
        handle = await lossy.start(WaitsForASignal, {}, workflow_id=workflow_id)
    assert proxy.dropped == 1
    history = await client.get_handle(handle.workflow_id).history()
    assert [e.type for e in history] == [EventType.WORKFLOW_STARTED]
    with pytest.raises(loom.WorkflowAlreadyStartedError):  # another request still is refused
        await client.start(WaitsForASignal, {}, workflow_id=workflow_id)


async def test_a_resent_signal_is_delivered_once(
    client: loom.Client, redis_url: str, namespace: str
) -> None:
    handle = await client.start(WaitsForASignal, {})
    payload = f"payload-{uuid.uuid4().hex}"
    async with client_losing_one_reply(redis_url, namespace, payload) as (lossy, proxy):
        await lossy.get_handle(handle.workflow_id).signal("go", payload)
    assert proxy.dropped == 1
    signals = [e for e in await handle.history() if e.type == EventType.SIGNAL_RECEIVED]
    assert [e.data["payload"] for e in signals] == [payload]
