"""The direct lane that carries the Lua transitions: connections of its own, made like
the client's, that survive a dropped connection and an error reply."""

from __future__ import annotations

import pytest
from redis.exceptions import ResponseError

from loom_redis.store.connection import DirectLane, connect_redis

pytestmark = pytest.mark.anyio


async def test_a_killed_connection_is_replaced_and_the_command_sent_again(redis_url: str) -> None:
    client = await connect_redis(redis_url)
    lane = DirectLane(client)
    try:
        await lane.execute("CLIENT", "SETNAME", "loom-lane-test")
        assert await lane.execute("SET", "lane:key", "1") == b"OK"
        killed = await client.execute_command("CLIENT", "KILL", "SKIPME", "yes", "TYPE", "normal")
        assert killed >= 1
        # The idle connection is dead: the next command notices and goes again.
        assert await lane.execute("INCR", "lane:key") == 2
    finally:
        await lane.aclose()
        await client.delete("lane:key")
        await client.aclose()


async def test_an_error_reply_is_raised_and_the_connection_kept(redis_url: str) -> None:
    client = await connect_redis(redis_url)
    lane = DirectLane(client)
    try:
        await lane.execute("SET", "lane:text", "not a number")
        with pytest.raises(ResponseError, match="not an integer"):
            await lane.execute("INCR", "lane:text")
        name = await lane.execute("CLIENT", "ID")
        assert await lane.execute("CLIENT", "ID") == name  # the same connection
    finally:
        await lane.aclose()
        await client.delete("lane:text")
        await client.aclose()
