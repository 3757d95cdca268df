"""Helpers the tests of several layers share: a proxy whose link can be cut, the CLI
run in-process, HTTP and ACL helpers, worker subprocesses and their side logs."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import anyio
import pytest
import redis.asyncio as aioredis
from anyio.abc import Process
from click.testing import CliRunner, Result
from redis.asyncio.cluster import RedisCluster

import loom_redis as loom
from loom_redis.cli import main
from loom_redis.codec import decode
from loom_redis.store import Store, Task
from loom_redis.testing import free_port
from tests.crash_workflows import LOG_ENV

ROOT = Path(__file__).resolve().parent.parent
SECURITY_DOC = ROOT / "docs" / "security.md"


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


def with_credentials(url: str, user: str, password: str) -> str:
    """`url` (redis://host:port/db) with a user and password."""
    parts = urlsplit(url)
    return parts._replace(netloc=f"{user}:{password}@{parts.hostname}:{parts.port}").geturl()


def invoke(args: list[str], env: dict[str, str] | None = None) -> Result:
    """The CLI in-process; tests call it in a thread (it runs its own event loop)."""
    return CliRunner().invoke(main, args, env=env)


async def cli(*args: str, env: dict[str, str] | None = None) -> Result:
    return await anyio.to_thread.run_sync(invoke, list(args), env)


def cli_text(result: Result) -> str:
    """All the CLI showed, and its exception if one escaped."""
    return result.output + (repr(result.exception) if result.exception else "")


async def wait_until(predicate: Any, timeout: float = 10.0) -> Any:
    """Poll the (async) predicate until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await anyio.sleep(0.05)


async def http_get(port: int, path: str) -> str:
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
        chunks = []
        with anyio.fail_after(10):
            while True:
                try:
                    chunks.append(await stream.receive())
                except anyio.EndOfStream:
                    break
    return b"".join(chunks).decode()


def http_request(
    port: int, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """GET `path` with `headers` (blocking: call it from a thread): status, headers, body."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, dict(reply.headers), reply.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def acl_rule(user: str) -> list[str]:
    """The rule docs/security.md gives for `user` (loom-worker or loom-dashboard), so
    that the tests prove the documented rules, not a copy of them."""
    prefix = f"ACL SETUSER {user} "
    lines = [line for line in SECURITY_DOC.read_text().splitlines() if line.startswith(prefix)]
    assert len(lines) == 1, f"docs/security.md should give one rule for {user}"
    return lines[0][len(prefix) :].split()


async def server_version(admin: aioredis.Redis) -> tuple[int, ...]:
    info = await admin.info("server")
    return tuple(int(p) for p in str(info["redis_version"]).split(".")[:2])


async def create_user(
    admin: aioredis.Redis, name: str, password: str, rule: list[str], *, keys: str = "~loom:*"
) -> None:
    """ACL SETUSER `name` with a documented rule, its password and key pattern put in."""
    args = [f">{password}" if r.startswith(">") else keys if r == "~loom:*" else r for r in rule]
    if await server_version(admin) >= (7, 2):
        args.append("+client|setinfo")  # as the doc says for Redis >= 7.2 and Valkey
    await admin.execute_command("ACL", "SETUSER", name, *args)


async def acl_denials(admin: aioredis.Redis, user: str) -> list[dict[str, Any]]:
    entries: Any = await admin.acl_log()
    return [e for e in entries if str(e.get("username")) == user]


def _open_output(path: Path) -> IO[bytes]:
    return open(path, "ab")  # handed to the child, closed right after


@asynccontextmanager
async def worker_process(
    redis_url: str,
    namespace: str,
    side_log: Path,
    output: Path,
    *options: str,
    module: str = "tests.crash_workflows",
) -> AsyncIterator[Process]:
    """`python -m loom_redis worker <module> ...` run from the repo root; killed on exit
    if the test left it running."""
    env = {**os.environ, LOG_ENV: str(side_log), "PYTHONUNBUFFERED": "1"}
    env.pop("LOOM_REDIS_URL", None)
    env.pop("LOOM_NAMESPACE", None)
    command = [
        sys.executable,
        "-m",
        "loom_redis",
        "worker",
        module,
        "--url",
        redis_url,
        "--namespace",
        namespace,
        "--poll-interval",
        "0.2",
        *options,
    ]
    out = _open_output(output)
    try:
        process = await anyio.open_process(command, cwd=ROOT, env=env, stdout=out, stderr=out)
    finally:
        out.close()
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            with anyio.CancelScope(shield=True):
                await process.wait()


async def wait_until_ready(client: loom.Client, process: Process, output: Path) -> None:
    """Until the worker's heartbeat (written after its SIGTERM handler is installed) shows."""
    with anyio.move_on_after(20):
        while True:
            entries = await client.store.redis.hgetall(client.store.keys.workers())
            if any(decode(v).get("pid") == process.pid for v in entries.values()):
                return
            if process.returncode is not None:
                break
            await anyio.sleep(0.05)
    pytest.fail(f"worker not ready ({process.returncode=}):\n{await file_text(output)}")


async def file_text(path: Path) -> str:
    apath = anyio.Path(path)
    return await apath.read_text() if await apath.exists() else ""


async def side_log_lines(path: Path) -> list[list[str]]:
    """Lines of the side log as [what, activity, workflow_id, pid]."""
    return [line.split() for line in (await file_text(path)).splitlines() if line.strip()]


async def wait_for_lines(path: Path, what: str, count: int, output: Path) -> list[list[str]]:
    with anyio.move_on_after(20):
        while True:
            lines = await side_log_lines(path)
            if sum(1 for line in lines if line[0] == what) >= count:
                return lines
            await anyio.sleep(0.02)
    pytest.fail(
        f"no {count} {what!r} lines in the side log; worker said:\n{await file_text(output)}"
    )


async def namespace_keys(redis: Any, namespace: str) -> list[bytes]:
    # Also the keys of any namespace whose name starts with this test's (rows that try
    # to create "<ns>x" must leave nothing there either).
    found: set[bytes] = set()
    for pattern in (f"loom:{{{namespace}*", f"loom:{{{namespace}}}*"):
        found.update([key async for key in redis.scan_iter(match=pattern)])
    return sorted(found)


async def namespace_dump(redis: Any, namespace: str, only: bytes = b"") -> dict[bytes, Any]:
    """Every key of the namespace (whose name holds `only`) and its DUMP: equal
    snapshots mean nothing was written."""
    keys = [k for k in await namespace_keys(redis, namespace) if only in k]
    return {key: await redis.dump(key) for key in keys}


def admin_client(url: str) -> aioredis.Redis | RedisCluster:
    """A plain redis-py client of the test server (of every node of a cluster), to look
    at keys as an operator would."""
    if url.startswith("redis+cluster://"):
        host, port = url.removeprefix("redis+cluster://").split(",")[0].split(":")
        return RedisCluster(host=host, port=int(port.split("/")[0]))
    return aioredis.Redis.from_url(url)


async def command_calls(redis: aioredis.Redis | RedisCluster, command: str) -> int:
    """How many times the server (every master of a cluster) has run `command`."""
    if isinstance(redis, RedisCluster):
        by_node: Any = await redis.info("commandstats", target_nodes=RedisCluster.PRIMARIES)
        stats = list(by_node.values())
    else:
        stats = [await redis.info("commandstats")]
    return sum(int(s.get(f"cmdstat_{command}", {}).get("calls", 0)) for s in stats)


async def read_every_shard(
    store: Store, consumer: str, count: int, block_ms: int, queue: str = "default"
) -> list[Task]:
    """The new tasks of `queue` delivered to `consumer`, read shard by shard (a read's
    streams must share a hash slot on a cluster), looking again for up to `block_ms`."""
    by_shard: dict[int, dict[str, tuple[int, str]]] = {}
    for stream, (shard, name) in store.queue_keys([queue]).items():
        by_shard.setdefault(shard, {})[stream] = (shard, name)
    with anyio.move_on_after(block_ms / 1000):
        while True:
            for streams in by_shard.values():
                # (A read blocks for at least a tick of the server's clock: 100 ms.)
                tasks = await store.read_tasks(streams, consumer, count, 1)
                if tasks:
                    return tasks
    return []
