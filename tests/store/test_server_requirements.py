"""Connecting: a server too old or out of reach gets a clear error with the URL masked."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

import loom_redis as loom
from loom_redis.testing import free_port

pytestmark = pytest.mark.anyio


async def _answer_as_old_redis(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Speak just enough RESP to claim to be Redis 6.0: INFO answers, all else is OK."""
    while line := await reader.readline():
        if not line.startswith(b"*"):
            continue
        parts = []
        for _ in range(int(line[1:])):
            await reader.readline()  # the $<length> line
            parts.append((await reader.readline()).strip().upper())
        if parts and parts[0] == b"INFO":
            body = b"# Server\r\nredis_version:6.0.9\r\n"
            writer.write(b"$%d\r\n%s\r\n" % (len(body), body))
        else:
            writer.write(b"+OK\r\n")
        await writer.drain()


@pytest.fixture
async def old_redis_url() -> AsyncIterator[str]:
    port = free_port()
    writers: list[asyncio.StreamWriter] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        await _answer_as_old_redis(reader, writer)

    server = await asyncio.start_server(answer, "127.0.0.1", port)
    async with server:
        yield f"redis://admin:hunter2@127.0.0.1:{port}/0"
        # Python >= 3.12's wait_closed (on leaving the block) waits for every connection.
        for writer in writers:
            writer.transport.abort()


async def test_redis_older_than_6_2_is_refused_by_name(old_redis_url: str) -> None:
    with pytest.raises(loom.RedisUnavailableError) as caught:
        await loom.Client.connect(old_redis_url).open()
    message = str(caught.value)
    assert "6.0.9" in message and "6.2" in message
    assert "hunter2" not in message and "admin:***@" in message


async def test_unreachable_redis_names_the_masked_url() -> None:
    url = f"redis://admin:hunter2@127.0.0.1:{free_port()}/0"
    with pytest.raises(loom.RedisUnavailableError) as caught:
        await loom.Client.connect(url).open()
    assert "cannot reach Redis" in str(caught.value)
    assert "hunter2" not in str(caught.value)


async def test_namespace_shard_count_is_fixed(redis_url: str, namespace: str) -> None:
    from loom_redis.store import Store

    store = await Store.open(redis_url, namespace, shards=4)
    await store.close()
    with pytest.raises(loom.ConfigurationError, match="created with 4 shards"):
        await Store.open(redis_url, namespace, shards=8)
    reopened = await Store.open(redis_url, namespace)
    assert reopened.keys.shards == 4
    await reopened.close()
