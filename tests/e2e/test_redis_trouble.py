"""Errors that are not ours: a client rides out a Redis restart and resumes its waits,
workers wait out a full Redis (out of memory is back-pressure, not a lost delivery), a
burst of calls waits for a pool connection, and connection loss, out of memory, a
read-only replica and a missing permission reach users of every public method and CLI
command as LoomErrors with a clear message, never as redis-py's exceptions."""

from __future__ import annotations

import asyncio
import inspect
import os
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis
import redis.asyncio as aioredis
from click.testing import CliRunner

import loom_redis as loom
from loom_redis.cli import main
from loom_redis.store import WorkflowFilter
from loom_redis.testing import EmbeddedServer, free_port, running_worker
from tests.support import acl_rule, create_user, with_credentials

NAMESPACE = "trouble"


def _server(directory: Path | None = None, port: int | None = None) -> EmbeddedServer:
    """A server of this test's own, of the binary the suite runs against."""
    binary = os.environ.get("LOOM_TEST_SERVER_BINARY") or None
    return EmbeddedServer(directory, port=port, appendonly=directory is not None, binary=binary)


@loom.activity(name="trouble_square")
async def square(value: int) -> int:
    await asyncio.sleep(0.05)
    return value * value


@loom.workflow(name="trouble_Quick")
class Quick(loom.Workflow[dict, dict]):
    @loom.step()
    async def compute(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        value = await ctx.activity(square, ctx.input["value"])
        await ctx.state.set("squared", await ctx.activity(square, value))


@loom.workflow(name="trouble_Wait")
class Wait(loom.Workflow[dict, dict]):
    @loom.step()
    async def wait(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        await ctx.state.set("got", await ctx.wait_for_signal("go"))


async def _until(condition: Callable[[], Awaitable[bool]], seconds: float = 20) -> None:
    with anyio.fail_after(seconds):
        while not await condition():
            await anyio.sleep(0.05)


# -- 1. a client rides out a Redis restart -------------------------------------------------


@pytest.mark.anyio
async def test_result_waits_ride_out_a_redis_restart(tmp_path: Path) -> None:
    server = _server(tmp_path).start()
    try:
        async with (
            loom.Client.connect(server.url, namespace=NAMESPACE) as client,
            running_worker(server.url, NAMESPACE, concurrency=8),
        ):
            handles = [await client.start(Quick, {"value": v}) for v in range(20)]
            waits = [asyncio.ensure_future(h.result(timeout=60)) for h in handles]
            await anyio.sleep(0.2)  # the waits block on their close notices
            server.stop()
            await anyio.sleep(3)
            server = _server(tmp_path, port=server.port).start()
            with anyio.fail_after(60):
                results = await asyncio.gather(*waits)
            # A client that was connected before the restart carries on.
            assert (await client.describe(handles[0].workflow_id))["status"] == "COMPLETED"
    finally:
        server.cleanup()
    assert results == [{"squared": v**4} for v in range(20)]


outage_runs: list[int] = []
outage_started: list[asyncio.Event] = []  # one a test, made on its event loop


@loom.activity(name="trouble_through_outage")
async def through_outage(value: int, seconds: float) -> int:
    outage_runs.append(value)
    outage_started[-1].set()
    await asyncio.sleep(seconds)  # Redis goes down meanwhile
    return value + 1


@loom.workflow(name="trouble_Outage")
class Outage(loom.Workflow[dict, dict]):
    @loom.step()
    async def run(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        got = await ctx.activity(through_outage, ctx.input["value"], ctx.input["seconds"])
        await ctx.state.set("got", got)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("eager_seconds", "activity_seconds"),
    [
        # It ends within its eager window, while Redis is down: the commit of the task
        # with its outcome meets the outage.
        (5, 0.5),
        # Its eager window ends while Redis is down: the write of its scheduling (and of
        # the worker's heartbeat naming its lease) meets the outage.
        (0.3, 3),
    ],
    ids=["outcome-commit", "scheduling-write"],
)
async def test_an_eager_activity_whose_writes_meet_an_outage_runs_once(
    tmp_path: Path, eager_seconds: float, activity_seconds: float
) -> None:
    """The activity a workflow task runs at once is under way while Redis is down: its
    writes are retried until Redis is back, the activity is neither cancelled nor run
    again (before, it ran again at each retry of the task, or, its scheduling not
    written, was cancelled and ran again a lease later)."""
    server = _server(tmp_path).start()
    outage_runs.clear()
    outage_started.append(asyncio.Event())
    try:
        async with (
            loom.Client.connect(server.url, namespace=NAMESPACE) as client,
            running_worker(server.url, NAMESPACE, eager_seconds=eager_seconds, lease_seconds=10),
        ):
            handle = await client.start(Outage, {"value": 1, "seconds": activity_seconds})
            with anyio.fail_after(20):
                await outage_started[-1].wait()
            server.stop()
            await anyio.sleep(2)
            server = _server(tmp_path, port=server.port).start()
            assert await handle.result(timeout=60) == {"got": 2}
    finally:
        server.cleanup()
    assert outage_runs == [1]


# -- 2. out of memory is back-pressure -------------------------------------------------------


@pytest.mark.anyio
async def test_workers_wait_out_a_full_redis_and_nothing_is_dead_lettered() -> None:
    with _server() as server:
        admin = aioredis.Redis.from_url(server.url)
        async with (
            loom.Client.connect(server.url, namespace=NAMESPACE, retry_seconds=1) as client,
            # A short lease and few deliveries: a refused write counted as a lost delivery
            # would dead-letter a task within seconds.
            running_worker(server.url, NAMESPACE, concurrency=4, lease_seconds=1, max_deliveries=2),
        ):
            done = await client.start(Quick, {"value": 2})
            assert await done.result(timeout=20) == {"squared": 16}
            handles = [await client.start(Quick, {"value": v}) for v in range(12)]
            await admin.config_set("maxmemory", 1)  # full: every write is refused
            try:
                with pytest.raises(loom.RedisOutOfMemoryError, match="out of memory") as refused:
                    await client.start(Quick, {"value": 100})
                assert "maxmemory" in str(refused.value)
                # Reads still work, and so does the result of a closed workflow.
                assert await done.result(timeout=5) == {"squared": 16}
                # Several leases pass while the workers hold their tasks.
                await anyio.sleep(5)
            finally:
                await admin.config_set("maxmemory", 0)
            with anyio.fail_after(60):
                results = [await h.result() for h in handles]
            assert results == [{"squared": v**4} for v in range(12)]
            assert await client.dead_letters() == []
        await admin.aclose()


# -- 3. a burst of calls waits for a pool connection ----------------------------------------


@pytest.mark.anyio
async def test_a_thousand_concurrent_cancels_on_one_client(client: loom.Client) -> None:
    handle = await client.start(Wait, {})
    with anyio.fail_after(120):
        await asyncio.gather(*(client.cancel(handle.workflow_id, "enough") for _ in range(1000)))
    info = await client.describe(handle.workflow_id)
    assert info["cancel_requested"]
    history = await client.history(handle.workflow_id)
    assert [e.type for e in history].count(loom.EventType.WORKFLOW_CANCEL_REQUESTED) == 1


# -- 4. every public method and command, in every kind of trouble --------------------------


@dataclass
class Seeded:
    """A namespace with a closed workflow, an open one and a dead-lettered task, on a
    primary, its read-only replica, and a user who may only read it."""

    primary: EmbeddedServer
    replica: EmbeddedServer
    reader_url: str
    dead: str


async def _seed(primary: EmbeddedServer) -> tuple[str, str]:
    admin = aioredis.Redis.from_url(primary.url, protocol=2)
    name, password = "trouble-reader", secrets.token_urlsafe(16)
    await create_user(admin, name, password, acl_rule("loom-dashboard"))
    await admin.aclose()
    async with loom.Client.connect(primary.url, namespace=NAMESPACE) as client:
        async with running_worker(primary.url, NAMESPACE):
            done = await client.start(Quick, {"value": 3}, workflow_id="done")
            assert await done.result(timeout=20) == {"squared": 81}
            waiting = await client.start(Wait, {}, workflow_id="waiting", owner="bo")

            async def waits() -> bool:
                return bool((await waiting.describe())["waiting_for"]["signals"])

            await _until(waits)
        await client.start(Quick, {"value": 1}, workflow_id="orphan")
        store = client.store
        tasks = await store.read_tasks(store.queue_keys(["default"]), "seeder", 10, 0)
        [orphan] = [task for task in tasks if task.workflow_id == "orphan"]
        await store.dead_letter(orphan, "seeded for the test")
        [dead] = await client.dead_letters()
    return with_credentials(primary.url, name, password), str(dead["id"])


@pytest.fixture(scope="module")
def seeded() -> Iterator[Seeded]:
    with _server() as primary, _server() as replica:
        reader_url, dead = anyio.run(_seed, primary)
        with redis.Redis.from_url(replica.url) as admin:
            admin.execute_command("REPLICAOF", "127.0.0.1", str(primary.port))
            for _ in range(200):
                if admin.info("replication").get("master_link_status") == "up" and admin.exists(
                    f"loom:{{{NAMESPACE}}}:config"
                ):
                    break
                anyio.run(anyio.sleep, 0.05)
            else:
                raise AssertionError("the replica did not sync")
        yield Seeded(primary, replica, reader_url, dead)


KINDS: dict[str, tuple[type[loom.LoomError], str]] = {
    "unreachable": (loom.RedisUnavailableError, "cannot reach Redis"),
    "out_of_memory": (loom.RedisOutOfMemoryError, "out of memory (maxmemory)"),
    "read_only": (loom.RedisReadOnlyError, "read-only replica"),
    "permission": (loom.RedisPermissionError, "may not"),
}


@pytest.fixture
def out_of_memory(seeded: Seeded) -> Iterator[None]:
    with redis.Redis.from_url(seeded.primary.url) as admin:
        admin.config_set("maxmemory", 1)
        try:
            yield
        finally:
            admin.config_set("maxmemory", 0)


def _url(kind: str, seeded: Seeded, request: pytest.FixtureRequest) -> str:
    """Where a client meets `kind` of trouble (but for connection loss, which comes
    after it connected)."""
    if kind == "out_of_memory":
        request.getfixturevalue("out_of_memory")
        return seeded.primary.url
    if kind == "read_only":
        return seeded.replica.url
    if kind == "permission":
        return seeded.reader_url
    return f"redis://127.0.0.1:{free_port()}/0"


@pytest.fixture(params=list(KINDS))
async def troubled(
    request: pytest.FixtureRequest, seeded: Seeded
) -> AsyncIterator[tuple[str, loom.Client]]:
    """A connected client (with a short retry budget) and the trouble it is in."""
    kind: str = request.param
    if kind != "unreachable":
        async with loom.Client.connect(
            _url(kind, seeded, request), namespace=NAMESPACE, retry_seconds=0.5
        ) as client:
            yield kind, client
        return
    with _server() as going:
        async with loom.Client.connect(going.url, namespace=NAMESPACE, retry_seconds=0.5) as client:
            going.stop()
            yield kind, client


async def _first_progress(client: loom.Client) -> Any:
    updates = client.stream_progress("bo")
    try:
        return await anext(updates)
    finally:
        await updates.aclose()


Operation = Callable[[loom.Client, Seeded], Awaitable[Any]]

# Each public method: whether it writes, and what it does.
OPERATIONS: dict[str, tuple[bool, Operation]] = {
    "start": (True, lambda c, s: c.start(Quick, {"value": 1})),
    "signal": (True, lambda c, s: c.signal("waiting", "go", 1)),
    "cancel": (True, lambda c, s: c.cancel("waiting")),
    "redrive": (True, lambda c, s: c.redrive(s.dead)),
    "handle.signal": (True, lambda c, s: c.get_handle("waiting").signal("go", 1)),
    "handle.cancel": (True, lambda c, s: c.get_handle("waiting").cancel()),
    "describe": (False, lambda c, s: c.describe("done")),
    "history": (False, lambda c, s: c.history("done")),
    "history_entries": (False, lambda c, s: c.history_entries("done")),
    "prune": (False, lambda c, s: c.prune(0, dry_run=True)),
    "list_workflows": (False, lambda c, s: c.list_workflows()),
    "stats": (False, lambda c, s: c.stats()),
    "workers": (False, lambda c, s: c.workers()),
    "live_workers": (False, lambda c, s: c.live_workers()),
    "explain_wait": (False, lambda c, s: c.explain_wait("waiting")),
    "dead_letters": (False, lambda c, s: c.dead_letters()),
    "get_progress": (False, lambda c, s: c.get_progress("bo")),
    "definitions": (False, lambda c, s: c.definitions()),
    "write_refusal": (False, lambda c, s: c.write_refusal()),
    "browse_workflows": (False, lambda c, s: c.browse_workflows(WorkflowFilter())),
    "count_workflows": (False, lambda c, s: c.count_workflows(WorkflowFilter(name="x"))),
    "closed_per_minute": (False, lambda c, s: c.closed_per_minute()),
    "history_page": (False, lambda c, s: c.history_page("done")),
    "queue_details": (False, lambda c, s: c.queue_details()),
    "stream_progress": (False, lambda c, s: _first_progress(c)),
    "handle.describe": (False, lambda c, s: c.get_handle("done").describe()),
    "handle.status": (False, lambda c, s: c.get_handle("done").status()),
    "handle.history": (False, lambda c, s: c.get_handle("done").history()),
    "handle.result": (False, lambda c, s: c.get_handle("done").result(timeout=5)),
}


def test_every_public_method_is_driven_through_trouble() -> None:
    def public_coroutines(cls: type, prefix: str) -> set[str]:
        return {
            prefix + name
            for name, member in vars(cls).items()
            if not name.startswith("_")
            and (inspect.iscoroutinefunction(member) or inspect.isasyncgenfunction(member))
        }

    expected = public_coroutines(loom.Client, "") - {"open", "close"}
    expected |= public_coroutines(loom.WorkflowHandle, "handle.")
    assert expected == set(OPERATIONS)


@pytest.mark.anyio
@pytest.mark.parametrize("operation", list(OPERATIONS))
async def test_every_public_method_raises_a_loom_error_in_trouble(
    operation: str, troubled: tuple[str, loom.Client], seeded: Seeded
) -> None:
    kind, client = troubled
    writes, call = OPERATIONS[operation]
    error, words = KINDS[kind]
    if writes or kind == "unreachable":
        with anyio.fail_after(20), pytest.raises(error, match=re.escape(words)) as raised:
            await call(client, seeded)
        assert type(raised.value) is error
        if kind == "unreachable":
            assert "retried for 0.5s" in str(raised.value)
        return
    # A read works on a full server, a replica, and for a user who may only read.
    with anyio.fail_after(20):
        outcome = await call(client, seeded)
    if operation == "handle.result":
        assert outcome == {"squared": 81}


COMMANDS: dict[str, tuple[bool, list[str]]] = {
    "init": (False, ["init"]),
    "list": (False, ["list"]),
    "inspect": (False, ["inspect", "waiting"]),
    "stats": (False, ["stats"]),
    "workers": (False, ["workers"]),
    "dead list": (False, ["dead", "list"]),
    "history export": (False, ["history", "export", "done"]),
    "prune --dry-run": (False, ["prune", "--older-than", "0", "--dry-run"]),
    "signal": (True, ["signal", "waiting", "go", "1"]),
    "cancel": (True, ["cancel", "waiting"]),
    "dead retry": (True, ["dead", "retry", "DEAD"]),
    "worker": (True, ["worker", "tests.e2e.test_redis_trouble"]),
}


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_exits_with_one_clear_line_in_trouble(
    command: str, kind: str, seeded: Seeded, request: pytest.FixtureRequest
) -> None:
    writes, args = COMMANDS[command]
    args = [seeded.dead if arg == "DEAD" else arg for arg in args]
    url = _url(kind, seeded, request)
    result = CliRunner().invoke(main, [*args, "--url", url, "--namespace", NAMESPACE])
    if not writes and kind != "unreachable":
        assert result.exit_code == 0, (result.output, result.exception)
        return
    assert result.exit_code == 1, (result.output, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception
    message = result.output.strip()
    assert message.startswith("Error: ") and "\n" not in message, message
    assert KINDS[kind][1] in message, message
