"""A Redis server that comes back empty (restarted without its AOF, a FLUSHALL, a
failover to a replica that lagged): running workers recreate the namespace's consumer
groups and config, say once, loudly, that the data is gone, and run new workflows."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import anyio
import pytest
from prometheus_client import REGISTRY

import loom_redis as loom
from loom_redis.store import Store
from loom_redis.testing import EmbeddedServer, running_worker

# A timer and an activity: the timer sweep, both task streams and a commit.
from tests.e2e.test_bad_input_catalogue import EchoWorkflow
from tests.support import CuttableProxy

pytestmark = [pytest.mark.anyio, pytest.mark.standalone]

NAMESPACE = "lost"


def _server(directory: Path) -> EmbeddedServer:
    """Without AOF: started again, it is empty. The binary the suite runs against."""
    return EmbeddedServer(directory, binary=os.environ.get("LOOM_TEST_SERVER_BINARY") or None)


def _data_lost_count() -> float:
    return REGISTRY.get_sample_value("loom_namespace_data_lost_total") or 0.0


async def _lose_the_data(server: EmbeddedServer, proxy: CuttableProxy) -> None:
    """SIGKILL the server and start it again, empty, while the worker cannot reach it."""
    proxy.cut = True
    proxy.sever()
    server.stop(kill=True)
    await anyio.to_thread.run_sync(server.start)


async def _run(client: loom.Client, text: str) -> dict:
    handle = await client.start(EchoWorkflow, {"text": text})
    return await handle.result(timeout=20)


async def test_workers_recreate_what_a_server_that_came_back_empty_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with _server(tmp_path) as server:
        proxy = CuttableProxy(server.port)
        await proxy.start()
        try:
            async with (
                running_worker(proxy.url, NAMESPACE, poll_interval=0.1, lease_seconds=2),
                loom.Client.connect(server.url, namespace=NAMESPACE) as before,
            ):
                assert await _run(before, "before") == {"echo": "before"}
                lost_before = _data_lost_count()
                await _lose_the_data(server, proxy)
                caplog.set_level(logging.INFO)
                async with loom.Client.connect(server.url, namespace=NAMESPACE) as after:
                    # Started while no worker can see the server: its task is in a
                    # stream that has no consumer group yet.
                    waiting = await after.start(EchoWorkflow, {"text": "waiting"})
                    proxy.cut = False
                    assert await waiting.result(timeout=20) == {"echo": "waiting"}
                    assert await _run(after, "after") == {"echo": "after"}
                    stored = await after.store.redis.hget(after.store.keys.config(), "shards")
                    assert stored == b"16"
        finally:
            await proxy.stop()
    # (The proxy's own teardown may log to asyncio's logger.)
    said = [r for r in caplog.records if r.levelno >= logging.ERROR and r.name != "asyncio"]
    assert len(said) == 1, [r.getMessage() for r in said]
    message = said[0].getMessage()
    said_words = ("lost the data of namespace 'lost'", "histories", "queued tasks", "new workflows")
    for words in said_words:
        assert words in message, message
    assert not [r for r in caplog.records if "NOGROUP" in r.getMessage()]
    assert _data_lost_count() == lost_before + 1


async def test_a_worker_whose_shard_count_the_recreated_config_contradicts_stops(
    tmp_path: Path,
) -> None:
    """A client that connected first recreated the namespace with the default 16
    shards: the worker, created with 4, cannot serve it and stops, saying why."""
    with _server(tmp_path) as server:
        store = await Store.open(server.url, NAMESPACE, 4)
        await store.close()
        proxy = CuttableProxy(server.port)
        await proxy.start()
        try:
            with pytest.raises(BaseExceptionGroup) as raised:
                async with running_worker(proxy.url, NAMESPACE, poll_interval=0.1):
                    await _lose_the_data(server, proxy)
                    async with loom.Client.connect(server.url, namespace=NAMESPACE) as client:
                        assert client.store.keys.shards == 16
                        proxy.cut = False
                        await anyio.sleep(30)  # the worker stops long before
        finally:
            await proxy.stop()
    matched, _ = raised.value.split(loom.ConfigurationError)
    assert matched is not None, raised.value
    error: BaseException = matched
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    message = str(error)
    for words in ("namespace 'lost'", "16 shards", "this worker has 4", "restart"):
        assert words in message, message
