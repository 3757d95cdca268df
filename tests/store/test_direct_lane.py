"""The direct lane that carries the Lua transitions: connections of its own, made like
the client's, that survive a dropped connection and an error reply."""

from __future__ import annotations

import anyio
import pytest
from redis.exceptions import ResponseError

from loom_redis.store.connection import DirectLane, connect_redis

pytestmark = [pytest.mark.anyio, pytest.mark.standalone]


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


async def test_an_error_reply_before_a_blocking_command_drops_the_connection(
    redis_url: str,
) -> None:
    client = await connect_redis(redis_url)
    lane = DirectLane(client)
    try:
        await lane.execute("SET", "lane:text", "not a number")
        before = await lane.execute("CLIENT", "ID")
        with anyio.fail_after(2):  # the BLPOP's reply is not waited for
            with pytest.raises(ResponseError, match="not an integer"):
                await lane.execute_chain(("INCR", "lane:text"), ("BLPOP", "lane:none", "5"))
        assert await lane.execute("CLIENT", "ID") != before  # a new connection
    finally:
        await lane.aclose()
        await client.delete("lane:text")
        await client.aclose()


async def test_a_cancelled_wait_closes_its_connection(redis_url: str) -> None:
    client = await connect_redis(redis_url)
    lane = DirectLane(client)
    try:
        with anyio.move_on_after(0.2):
            await lane.execute("BLPOP", "lane:empty", "30")
        # Its reply may still come: the connection is closed, not kept for the next one.
        with anyio.fail_after(5):
            while b"cmd=blpop" in await client.execute_command("CLIENT", "LIST"):
                await anyio.sleep(0.05)
        assert await lane.execute("PING") == b"PONG"
    finally:
        await lane.aclose()
        await client.aclose()
