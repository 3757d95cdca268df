"""The bad-input catalogue (issue 3): one table of bad inputs across the API, the CLI,
the worker and the data stored in Redis.

Each row does one bad thing and states the error it must produce, the words its message
must hold (what is wrong, where, and what was expected), words it must never hold (a
password), and what must be left unwritten: the whole namespace, the subject workflow's
history, or every workflow's keys; rows whose workflow fails also list the events that
must not appear in its history, which must decode entry by entry (no half-written event).
A row that runs a worker also proves that the worker keeps running: afterwards it
completes a workflow that sleeps and calls an activity, and no task is left pending.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal, NotRequired, TypedDict

import anyio
import anyio.to_thread
import msgpack
import pytest
from click.testing import CliRunner

import loom_redis as loom
from loom_redis.cli import main
from loom_redis.codec import record_limit
from loom_redis.definitions import check_start_arguments, workflow_definition
from loom_redis.events import TERMINAL_TYPES, EventType
from loom_redis.store import Store
from loom_redis.testing import free_port, isolated_registry, running_worker
from loom_redis.worker import Worker
from tests.support import namespace_dump

pytestmark = pytest.mark.anyio

SUBJECT = "cat-subject"
# The payload limit rows that need one set LOOM_MAX_PAYLOAD_BYTES to, and a size over it.
LIMIT = 64 * 1024
BIG = 100_000


class Opaque:
    """A value msgpack cannot encode."""

    def __repr__(self) -> str:
        return "<Opaque>"


# -- workflows and activities the rows use ---------------------------------------------


class _OrderOptional(TypedDict, total=False):
    note: str


class OrderInput(_OrderOptional):
    order_id: str
    amount: int


class OrderState(loom.State):
    paid: bool


@loom.workflow(name="cat_Order")
class OrderWorkflow(loom.Workflow[OrderInput, OrderState]):
    @loom.step()
    async def pay(self, ctx: loom.WorkflowContext[OrderInput, OrderState]) -> None:
        await ctx.state.set("paid", True)


@loom.activity(name="cat_echo")
async def echo(value: Any) -> Any:
    return value


@loom.activity(name="cat_returns_a_set")
async def returns_a_set() -> Any:
    return {"a", "b"}


@loom.activity(name="cat_returns_big")
async def returns_big(size: int) -> str:
    return "x" * size


@loom.activity(name="cat_raises_a_huge_message")
async def raises_a_huge_message(size: int) -> None:
    raise ValueError("y" * size)


@loom.workflow(name="cat_Echo")
class EchoWorkflow(loom.Workflow[dict, dict]):
    """The good workflow: a timer and an activity, to show a worker still works."""

    @loom.step()
    async def run(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        await ctx.sleep(seconds=0.01)
        await ctx.state.set("echo", await ctx.activity(echo, ctx.input["text"]))


@loom.workflow(name="cat_WaitForGo")
class WaitForGo(loom.Workflow[dict, dict]):
    @loom.step()
    async def wait(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        got = await ctx.wait_for_signal("go")
        await ctx.state.set("got", got)


with isolated_registry():

    @loom.workflow(name="cat_Unregistered")
    class Unregistered(loom.Workflow[dict, dict]):
        """Can be started (the class carries its definition); no worker knows its code."""

        @loom.step()
        async def run(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
            pass


Ctx = loom.WorkflowContext[dict, dict]


async def _state_key_not_a_str(ctx: Ctx) -> None:
    await ctx.state.set(1, "one")  # type: ignore[arg-type]


async def _update_returns_a_list(ctx: Ctx) -> None:
    await ctx.state.update(lambda state: ["not", "a", "dict"])  # type: ignore[arg-type,return-value]


async def _state_value_unencodable(ctx: Ctx) -> None:
    await ctx.state.set("thing", Opaque())


async def _sleep_two_arguments(ctx: Ctx) -> None:
    await ctx.sleep(timedelta(seconds=1), seconds=1)


async def _sleep_until_naive(ctx: Ctx) -> None:
    await ctx.sleep(until=datetime(2030, 1, 1, 12, 0))


async def _asyncio_sleep(ctx: Ctx) -> None:
    await asyncio.sleep(1)


async def _activity_argument_unencodable(ctx: Ctx) -> None:
    await ctx.activity(echo, Opaque())


async def _activity_argument_too_big(ctx: Ctx) -> None:
    await ctx.activity(echo, "x" * BIG)


async def _activity_result_unencodable(ctx: Ctx) -> None:
    await ctx.activity(returns_a_set)


async def _activity_result_too_big(ctx: Ctx) -> None:
    await ctx.activity(returns_big, BIG)


async def _activity_error_too_big(ctx: Ctx) -> None:
    await ctx.activity(raises_a_huge_message, BIG)


async def _state_grows_too_big(ctx: Ctx) -> None:
    # Each value fits; the state after the second does not (nor would the result).
    await ctx.state.set("a", "a" * (LIMIT // 2 + 100))
    await ctx.state.set("b", "b" * (LIMIT // 2 + 100))


async def _unknown_activity(ctx: Ctx) -> None:
    await ctx.activity("cat_no_such_activity", 1)


MISBEHAVIOURS: dict[str, Callable[[Ctx], Awaitable[None]]] = {
    f.__name__.lstrip("_"): f
    for f in (
        _state_key_not_a_str,
        _update_returns_a_list,
        _state_value_unencodable,
        _sleep_two_arguments,
        _sleep_until_naive,
        _asyncio_sleep,
        _activity_argument_unencodable,
        _activity_argument_too_big,
        _activity_result_unencodable,
        _activity_result_too_big,
        _activity_error_too_big,
        _state_grows_too_big,
        _unknown_activity,
    )
}


@loom.workflow(name="cat_Misbehaving")
class Misbehaving(loom.Workflow[dict, dict]):
    @loom.step(name="misbehave")
    async def misbehave(self, ctx: Ctx) -> None:
        await MISBEHAVIOURS[ctx.input["how"]](ctx)


# -- the harness -------------------------------------------------------------------------


class DeadLettered(Exception):
    """A worker moved a task (or a timer member) to the dead-letter stream: the reason."""


class CliFailed(Exception):
    """The `loom` command exited non-zero: its exit code and output."""


@dataclass
class Env:
    client: loom.Client
    url: str
    namespace: str
    stack: contextlib.AsyncExitStack
    tmp_path: Path
    monkeypatch: pytest.MonkeyPatch
    # Values the rows' message fragments name as {wf}, {ns}, {entry}, ...
    names: dict[str, str] = field(default_factory=dict)
    # History entries written corrupt on purpose (they are not to decode).
    corrupt: set[str] = field(default_factory=set)
    worker_running: bool = False

    @property
    def redis(self) -> Any:
        return self.client.store.redis

    @property
    def keys(self) -> Any:
        return self.client.store.keys

    async def worker(self) -> None:
        """Run an in-process worker until the row ends (started once)."""
        if not self.worker_running:
            await self.stack.enter_async_context(
                # A name no live worker registers goes to the dead-letter stream at once.
                running_worker(
                    self.url, self.namespace, poll_interval=0.1, unregistered_grace_seconds=0
                )
            )
            self.worker_running = True

    def url_as(self, user: str, password: str) -> str:
        return self.url.replace("redis://", f"redis://{user}:{password}@", 1)


Act = Callable[[Env], Awaitable[Any]]
Watch = Literal["namespace", "history", "workflows"]


@dataclass(frozen=True)
class Case:
    id: str
    act: Act
    # The error the act must raise; None: it must succeed (and write nothing).
    error: type[BaseException] | None
    says: tuple[str, ...] = ()
    never: tuple[str, ...] = ()
    setup: Act | None = None
    # What must be byte-for-byte the same after the act as before it.
    unchanged: Watch | None = "namespace"
    # Events the subject workflow's history must not hold afterwards.
    absent: tuple[EventType, ...] = ()
    environ: dict[str, str] = field(default_factory=dict)
    # It rewrites a standalone server's URL, or makes ACL users on one server.
    standalone: bool = False
    check: Act | None = None


async def until(condition: Callable[[], Awaitable[bool]], timeout: float = 10) -> None:
    with anyio.fail_after(timeout):
        while not await condition():
            await anyio.sleep(0.02)


async def snapshot(env: Env, watch: Watch | None) -> Any:
    if watch is None:
        return None
    if watch == "history":
        return await env.redis.xrange(env.keys.history(SUBJECT))
    return await namespace_dump(env.redis, env.namespace, b":wf:" if watch == "workflows" else b"")


async def raw_history(env: Env, workflow_id: str = SUBJECT) -> list[tuple[str, dict[bytes, bytes]]]:
    entries = await env.redis.xrange(env.keys.history(workflow_id))
    return [(entry_id.decode(), fields) for entry_id, fields in entries]


async def check_history(env: Env, absent: tuple[EventType, ...]) -> None:
    """Every entry decodes (bar those corrupted on purpose), none of `absent` is there,
    and the workflow ended exactly once."""
    types = []
    for entry_id, fields in await raw_history(env):
        if entry_id in env.corrupt:
            continue
        event = Store.decode_event(SUBJECT, entry_id, fields)
        types.append(event.type)
    assert not set(types) & set(absent), types
    assert sum(t in TERMINAL_TYPES for t in types) == 1, types


async def check_worker_alive(env: Env) -> None:
    """The worker still runs timers, activities and workflow tasks; nothing is pending."""
    handle = await env.client.start(EchoWorkflow, {"text": "alive"})
    assert await handle.result(timeout=10) == {"echo": "alive"}
    for shard in range(env.keys.shards):
        queue = env.keys.queue(shard, "default")
        assert (await env.redis.xpending(queue, "workers"))["pending"] == 0, queue


async def dead_letter(env: Env) -> None:
    """Wait for the dead-letter stream to hold an entry; raise DeadLettered(its reason)."""
    await until(lambda: _has_dead_letters(env))
    [dead] = await env.client.dead_letters()
    raise DeadLettered(f"{dead['kind']} task of {dead['workflow_id']}: {dead['reason']}")


async def worker_then_dead_letter(env: Env) -> None:
    await env.worker()
    await dead_letter(env)


async def _has_dead_letters(env: Env) -> bool:
    return bool(await env.client.dead_letters())


async def cli(env: Env, *args: str) -> str:
    """Run `loom ARGS` (in a thread: the CLI runs its own event loop)."""
    result = await anyio.to_thread.run_sync(lambda: CliRunner().invoke(main, list(args)))
    if result.exit_code != 0:
        raise CliFailed(f"exit {result.exit_code}: {result.output}")
    return str(result.output)


async def start(env: Env, workflow: type, workflow_input: Any = None, **options: Any) -> Any:
    options.setdefault("workflow_id", SUBJECT)
    return await env.client.start(workflow, workflow_input, **options)


# -- setups --------------------------------------------------------------------------


async def pending_subject(env: Env) -> None:
    """A workflow started with no worker running: it stays PENDING."""
    await start(env, WaitForGo, {})


async def waiting_subject(env: Env) -> None:
    """A workflow that ran its first task and now waits for a signal, all written."""
    await env.worker()
    await start(env, WaitForGo, {})
    await until(lambda: _idle(env, SUBJECT))


async def _idle(env: Env, workflow_id: str) -> bool:
    meta = await env.client.store.read_meta(workflow_id)
    return meta.get("status") == b"RUNNING" and meta.get("wft") == b"0"


async def finished_subject(env: Env) -> None:
    await env.worker()
    handle = await start(env, EchoWorkflow, {"text": "done"})
    assert await handle.result(timeout=10) == {"echo": "done"}


async def cancelled_once(env: Env) -> None:
    await pending_subject(env)
    await env.client.get_handle(SUBJECT).cancel("first")


def acl_user(*rules: str) -> Act:
    """A Redis ACL user (password 'right-pw') with `rules`, deleted when the row ends."""

    async def setup(env: Env) -> None:
        user = f"cat-{env.namespace}"
        await env.redis.execute_command("ACL", "SETUSER", user, "reset", "on", ">right-pw", *rules)
        env.stack.push_async_callback(env.redis.execute_command, "ACL", "DELUSER", user)
        env.names["user"] = user

    return setup


# -- acts ----------------------------------------------------------------------------


def misbehaves(how: str) -> Act:
    """Run Misbehaving with `how` as the subject, and wait for its result."""
    assert how in MISBEHAVIOURS, how

    async def act(env: Env) -> None:
        await env.worker()
        handle = await start(env, Misbehaving, {"how": how})
        await handle.result(timeout=10)

    return act


def task_entry(fields: dict[str, Any]) -> Act:
    """XADD a task entry by hand to the subject's queue stream; wait for its dead letter."""

    async def act(env: Env) -> None:
        queue = env.keys.queue(env.keys.shard_of(SUBJECT), "default")
        env.names["task"] = (await env.redis.xadd(queue, fields)).decode()
        await dead_letter(env)

    return act


def timer_member(member: bytes) -> Act:
    """ZADD a due member by hand to a timer zset; wait for its dead letter."""

    async def act(env: Env) -> None:
        shard = env.keys.shard_of(SUBJECT)
        env.names["shard"] = str(shard)
        await env.redis.zadd(env.keys.timers(shard), {member: 0})
        await dead_letter(env)

    return act


async def member_removed(env: Env) -> None:
    timers = env.keys.timers(env.keys.shard_of(SUBJECT))
    assert await env.redis.zcard(timers) == 0


async def corrupt_history_entry(env: Env) -> None:
    """Two workflows wait; one gets a garbage history entry; both are signalled."""
    await waiting_subject(env)
    other = await env.client.start(WaitForGo, {}, workflow_id="cat-other")
    await until(lambda: _idle(env, "cat-other"))
    entry = await env.redis.xadd(
        env.keys.history(SUBJECT),
        {"type": "NOT_AN_EVENT", "seq": "x", "t": "later", "d": b"\xc1"},
    )
    env.corrupt.add(entry.decode())
    env.names["entry"] = entry.decode()
    env.names["other"] = other.workflow_id


async def signal_both(env: Env) -> None:
    subject = env.client.get_handle(SUBJECT)
    other = env.client.get_handle(env.names["other"])
    await subject.signal("go", "ok")
    await other.signal("go", "ok")
    assert await other.result(timeout=10) == {"got": "ok"}  # only the corrupt one fails
    await subject.result(timeout=10)


async def open_store(url: str, namespace: str, shards: int | None) -> None:
    store = await Store.open(url, namespace, shards)
    await store.close()


async def with_client(
    url: str, namespace: str, use: Callable[[loom.Client], Awaitable[Any]]
) -> None:
    async with loom.Client.connect(url, namespace=namespace) as other:
        await use(other)


async def redrive_corrupt_dead_entry(env: Env) -> None:
    dead = env.keys.dead(0)
    entry = await env.redis.xadd(dead, {"reason": "written by hand", "k": "w"})
    env.names["entry"] = entry.decode()


async def stats(client: loom.Client) -> Any:
    return await client.stats()


def new_worker(**options: Any) -> Act:
    async def act(env: Env) -> None:
        Worker(env.client.store, **options)

    return act


def define(make: Callable[[], Any]) -> Act:
    async def act(env: Env) -> None:
        make()

    return act


def make_workflow_with_a_sync_step() -> Any:
    class SyncStep(loom.Workflow[dict, dict]):
        @loom.step()
        def run(self, ctx: Ctx) -> None:  # type: ignore[type-var]
            pass

    return SyncStep


def broken_module(env: Env) -> Awaitable[str]:
    (env.tmp_path / "cat_broken_flows.py").write_text("raise RuntimeError('boom at import')\n")
    env.monkeypatch.syspath_prepend(str(env.tmp_path))
    return cli(env, "worker", "cat_broken_flows", "--url", env.url, "--namespace", env.namespace)


def _fn() -> None:
    pass


# -- malformed records: skipped or shown as unreadable, the rest works -------------------


def config_shards(value: str) -> Act:
    async def setup(env: Env) -> None:
        await env.redis.hset(env.keys.config(), "shards", value)

    return setup


def heartbeat(value: Any) -> Act:
    """A heartbeat written by hand as a field of the workers hash, by default 'evil'
    (bytes as they are, anything else as msgpack)."""

    async def setup(env: Env) -> None:
        raw = value if isinstance(value, bytes) else msgpack.packb(value)
        name = value["name"] if isinstance(value, dict) and "name" in value else "evil"
        await env.redis.hset(env.keys.workers(), name, raw)

    return setup


async def workers_listed(env: Env) -> None:
    """`loom workers` lists the good heartbeat and says 'evil' is unreadable, naming the
    key; then a worker starts, and prunes 'evil' (see evil_heartbeat_pruned)."""
    await heartbeat({"name": "good", "seen_ms": 1, "queues": ["default"]})(env)
    out = await cli(env, "workers", "--url", env.url, "--namespace", env.namespace)
    assert "good" in out and "evil" in out and "unreadable" in out, out
    assert env.keys.workers() in out, out
    assert [row["name"] for row in await env.client.store.worker_heartbeats()] == ["good"]
    await env.worker()


async def evil_heartbeat_pruned(env: Env) -> None:
    await until(lambda: _no_evil_heartbeat(env))


async def _no_evil_heartbeat(env: Env) -> bool:
    return not await env.redis.hexists(env.keys.workers(), "evil")


def meta_field(name: str, value: bytes) -> Act:
    """Two workflows of one owner wait; the subject's meta field `name` is spoilt."""

    async def setup(env: Env) -> None:
        await start(env, WaitForGo, {}, owner="cat-owner")
        other = await env.client.start(WaitForGo, {}, workflow_id="cat-other", owner="cat-owner")
        env.names["other"] = other.workflow_id
        env.names["field"] = name
        await env.redis.hset(env.keys.meta(SUBJECT), name, value)

    return setup


async def listed_with_an_unreadable_field(env: Env) -> None:
    """`loom list`, `loom inspect`, list_workflows and get_progress all work; the spoilt
    field shows as unreadable, naming the key and the field."""
    field_name, meta_key = env.names["field"], env.keys.meta(SUBJECT)
    rows = await env.client.list_workflows()
    assert {row["workflow_id"] for row in rows} == {SUBJECT, "cat-other"}, rows
    [subject] = [row for row in rows if row["workflow_id"] == SUBJECT]
    assert meta_key in subject["unreadable"][field_name], subject
    progress = await env.client.get_progress("cat-owner")
    assert "cat-other" in [w["workflow_id"] for w in progress["workflows"]], progress
    listed = await cli(env, "list", "--url", env.url, "--namespace", env.namespace)
    assert SUBJECT in listed and "cat-other" in listed and "unreadable" in listed, listed
    shown = await cli(env, "inspect", SUBJECT, "--url", env.url, "--namespace", env.namespace)
    assert "unreadable" in shown and meta_key in shown and f"'{field_name}'" in shown, shown


async def spoilt_history_entry(env: Env) -> None:
    await pending_subject(env)
    entry = await env.redis.xadd(
        env.keys.history(SUBJECT), {"type": "NOT_AN_EVENT", "t": "later", "d": b"\xc1"}
    )
    env.names["entry"] = entry.decode()


async def events_shown_around_the_bad_one(env: Env) -> None:
    shown = await cli(
        env, "inspect", SUBJECT, "--events", "--url", env.url, "--namespace", env.namespace
    )
    assert "WORKFLOW_STARTED" in shown, shown
    assert "unreadable" in shown and env.names["entry"] in shown and "NOT_AN_EVENT" in shown, shown


# -- the catalogue -------------------------------------------------------------------

TOO_BIG = {"blob": "x" * (2 * 1024 * 1024)}  # 2 MiB of text, plus msgpack's framing
LIMITED = {"LOOM_MAX_PAYLOAD_BYTES": str(LIMIT)}

CASES = [
    # --- start(): input, state, payload size --------------------------------------------
    Case(
        "start-input-unencodable",
        lambda env: start(env, EchoWorkflow, {"text": "a", "tags": {1, 2}}),
        loom.PayloadError,
        ("input of workflow '{wf}' (cat_Echo)", "cannot be encoded as msgpack", "set"),
    ),
    Case(
        "start-initial-state-unencodable",
        lambda env: start(env, EchoWorkflow, {"text": "a"}, initial_state={"x": Opaque()}),
        loom.PayloadError,
        ("initial state of workflow '{wf}' (cat_Echo)", "cannot be encoded", "Opaque"),
    ),
    Case(
        "start-initial-state-not-a-dict",
        lambda env: start(env, EchoWorkflow, {"text": "a"}, initial_state=["a"]),
        TypeError,
        ("initial state of workflow 'cat_Echo' must be a dict", "got list"),
    ),
    Case(
        "start-input-over-the-default-2MiB-limit",
        lambda env: start(env, EchoWorkflow, TOO_BIG),
        loom.PayloadError,
        ("input of workflow '{wf}'", "over the limit of 2097152 bytes", "LOOM_MAX_PAYLOAD_BYTES"),
    ),
    Case(
        "start-input-over-a-configured-limit",
        lambda env: start(env, EchoWorkflow, {"text": "x" * (LIMIT + 1)}),
        loom.PayloadError,
        ("input of workflow '{wf}'", f"over the limit of {LIMIT} bytes"),
        environ=LIMITED,
    ),
    Case(
        "payload-limit-setting-invalid",
        # Checked when a client (or worker) connects, not at the first large payload.
        lambda env: with_client(
            env.url, env.namespace, lambda other: other.start(EchoWorkflow, {"text": "a"})
        ),
        loom.ConfigurationError,
        ("LOOM_MAX_PAYLOAD_BYTES='two megs'", "whole number of bytes >= 1024"),
        environ={"LOOM_MAX_PAYLOAD_BYTES": "two megs"},
    ),
    Case(
        "typeddict-input-missing-key",
        lambda env: start(env, OrderWorkflow, {"order_id": "A1"}),
        loom.WorkflowInputError,
        ("input of workflow 'cat_Order'", "OrderInput", "missing required key(s) 'amount'"),
    ),
    Case(
        "typeddict-input-unknown-key",
        lambda env: start(env, OrderWorkflow, {"order_id": "A1", "amount": 3, "colour": "red"}),
        loom.WorkflowInputError,
        ("input of workflow 'cat_Order'", "unknown key(s) 'colour'", "'amount', 'note'"),
    ),
    Case(
        "typeddict-input-not-a-dict",
        lambda env: start(env, OrderWorkflow, "A1"),
        loom.WorkflowInputError,
        ("input of workflow 'cat_Order' must be a dict", "OrderInput", "got str 'A1'"),
    ),
    Case(
        "typeddict-initial-state-unknown-key",
        lambda env: start(
            env, OrderWorkflow, {"order_id": "A1", "amount": 3}, initial_state={"payed": True}
        ),
        loom.WorkflowInputError,
        ("initial state of workflow 'cat_Order'", "OrderState", "unknown key(s) 'payed'"),
    ),
    # --- ids, queues, policies --------------------------------------------------------
    Case(
        "id-empty",
        lambda env: start(env, EchoWorkflow, {"text": "a"}, workflow_id=""),
        loom.InvalidWorkflowIdError,
        ("workflow id must be a non-empty string, got ''",),
    ),
    Case(
        "id-too-long",
        lambda env: start(env, EchoWorkflow, {"text": "a"}, workflow_id="i" * 257),
        loom.InvalidWorkflowIdError,
        ("is 257 bytes, over the limit of 256",),
    ),
    Case(
        "id-not-a-str",
        lambda env: start(env, EchoWorkflow, {"text": "a"}, workflow_id=123),
        loom.InvalidWorkflowIdError,
        ("workflow id must be a non-empty string, got int 123",),
    ),
    Case(
        "id-not-valid-unicode",
        lambda env: start(env, EchoWorkflow, {"text": "a"}, workflow_id="order-\ud800"),
        loom.InvalidWorkflowIdError,
        ("workflow id 'order-\\ud800' is not valid Unicode", "position 6", "UTF-8"),
    ),
    Case(
        "get-handle-id-none",
        define(lambda: loom.get_handle(None)),  # type: ignore[arg-type]
        loom.InvalidWorkflowIdError,
        ("non-empty string, got NoneType None",),
    ),
    Case(
        "queue-name-with-a-space",
        lambda env: start(env, EchoWorkflow, {"text": "a"}, queue="high priority"),
        loom.ConfigurationError,
        ("task queue 'high priority' is invalid", "letters, digits"),
    ),
    Case(
        "queue-name-empty",
        lambda env: start(env, EchoWorkflow, {"text": "a"}, queue=""),
        loom.ConfigurationError,
        ("task queue '' is invalid", "1-128"),
    ),
    Case(
        "queue-name-trailing-newline",
        lambda env: start(env, EchoWorkflow, {"text": "a"}, queue="default\n"),
        loom.ConfigurationError,
        ("task queue 'default\\n' is invalid",),
    ),
    Case(
        "queue-name-not-a-str",
        lambda env: start(env, EchoWorkflow, {"text": "a"}, queue=7),
        loom.ConfigurationError,
        ("task queue 7 is invalid",),
    ),
    Case(
        "id-with-an-escape-sequence",
        lambda env: start(env, EchoWorkflow, {"text": "a"}, workflow_id="evil\x1b[2J"),
        loom.InvalidWorkflowIdError,
        ("workflow id 'evil\\x1b[2J' holds a control character", "position 4"),
    ),
    Case(
        "id-with-a-newline",
        lambda env: start(env, EchoWorkflow, {"text": "a"}, workflow_id="row\nbreak"),
        loom.InvalidWorkflowIdError,
        ("workflow id 'row\\nbreak' holds a control character",),
    ),
    Case(
        "owner-not-a-str",
        lambda env: start(env, EchoWorkflow, {"text": "a"}, owner=7),
        loom.ConfigurationError,
        ("owner must be a non-empty string, got int 7",),
        never=("input of workflow",),
    ),
    Case(
        "owner-with-a-control-character",
        lambda env: start(env, EchoWorkflow, {"text": "a"}, owner="ada\x9b"),
        loom.ConfigurationError,
        ("owner 'ada\\x9b' holds a control character",),
    ),
    Case(
        "owner-too-long",
        lambda env: start(env, EchoWorkflow, {"text": "a"}, owner="o" * 257),
        loom.ConfigurationError,
        ("owner 'ooo", "is 257 bytes, over the limit of 256"),
    ),
    Case(
        "progress-owner-not-a-str",
        lambda env: env.client.get_progress(None),  # type: ignore[arg-type]
        loom.ConfigurationError,
        ("owner must be a non-empty string, got NoneType None",),
    ),
    Case(
        "id-reuse-policy-unknown",
        lambda env: start(env, EchoWorkflow, {"text": "a"}, id_reuse="replace"),
        loom.ConfigurationError,
        ("id_reuse must be 'reject' or 'return_existing', got 'replace'",),
    ),
    Case(
        "start-same-id-twice",
        lambda env: start(env, WaitForGo, {}),
        loom.WorkflowAlreadyStartedError,
        ("workflow '{wf}' already exists (status PENDING)", "id_reuse='return_existing'"),
        setup=pending_subject,
        unchanged="history",
    ),
    # --- namespaces, shards, connections -------------------------------------------------
    Case(
        "namespace-invalid-characters",
        lambda env: with_client(env.url, "my namespace", stats),
        loom.ConfigurationError,
        ("namespace 'my namespace' is invalid", "1-64 letters"),
    ),
    Case(
        "namespace-too-long",
        lambda env: with_client(env.url, env.namespace + "n" * 60, stats),
        loom.ConfigurationError,
        ("namespace '{ns}nnn", "is invalid", "1-64"),
    ),
    Case(
        "namespace-empty",
        lambda env: with_client(env.url, "", stats),
        loom.ConfigurationError,
        ("namespace '' is invalid",),
    ),
    Case(
        "namespace-shard-count-disagrees",
        lambda env: open_store(env.url, env.namespace, 8),
        loom.ConfigurationError,
        ("namespace '{ns}' was created with 16 shards, not 8", "fixed"),
    ),
    Case(
        "namespace-new-with-zero-shards",
        lambda env: open_store(env.url, env.namespace + "x", 0),
        loom.ConfigurationError,
        ("shard count must be 1..4096, got 0",),
    ),
    Case(
        "redis-unreachable",
        lambda env: with_client(f"redis://127.0.0.1:{free_port()}/0", env.namespace, stats),
        loom.RedisUnavailableError,
        ("cannot reach Redis at redis://127.0.0.1:", "LOOM_REDIS_URL"),
    ),
    Case(
        "redis-url-not-redis",
        lambda env: with_client("http://127.0.0.1:8080/", env.namespace, stats),
        loom.ConfigurationError,
        ("invalid Redis URL 'http://127.0.0.1:8080/'",),
    ),
    Case(
        "redis-url-password-with-unescaped-at-and-slash",
        lambda env: with_client(
            env.url.replace("redis://", "redis://cat:Xq7@Zk9/Wv3@", 1), env.namespace, stats
        ),
        loom.ConfigurationError,
        ("redis://cat:***@127.0.0.1:", "percent-encode", "%40", "%2F"),
        never=("Xq7", "Zk9", "Wv3"),
        standalone=True,
    ),
    Case(
        "redis-url-password-with-unescaped-slash-and-digits",
        # Parsed as it stands, the host would be "cat" and the port "4242".
        lambda env: with_client(
            env.url.replace("redis://", "redis://cat:4242/Wv3@", 1), env.namespace, stats
        ),
        loom.ConfigurationError,
        ("redis://cat:***@127.0.0.1:", "percent-encode"),
        never=("4242", "Wv3"),
        standalone=True,
    ),
    Case(
        "redis-wrong-password",
        lambda env: with_client(env.url_as(env.names["user"], "wrong-pw"), env.namespace, stats),
        loom.RedisAuthenticationError,
        ("refused the credentials", "{user}:***@", "check the user name and password"),
        never=("wrong-pw", "right-pw"),
        setup=acl_user("~loom:*", "+@all"),
        standalone=True,
    ),
    Case(
        "redis-acl-user-missing-a-permission",
        lambda env: with_client(
            env.url_as(env.names["user"], "right-pw"),
            env.namespace,
            lambda c: c.start(EchoWorkflow, {"text": "a"}, workflow_id=SUBJECT),
        ),
        loom.RedisPermissionError,
        ("may not start workflow '{wf}'", "EVALSHA"),
        never=("right-pw",),
        setup=acl_user("~loom:*", "+@all", "-evalsha", "-eval"),
        standalone=True,
    ),
    # --- definitions -----------------------------------------------------------------
    Case(
        "step-not-async",
        define(make_workflow_with_a_sync_step),
        loom.WorkflowDefinitionError,
        ("step 'make_workflow_with_a_sync_step.<locals>.SyncStep.run'", "async def"),
    ),
    Case(
        "workflow-without-steps",
        define(lambda: loom.workflow(name="cat_NoSteps")(type("NoSteps", (loom.Workflow,), {}))),
        loom.WorkflowDefinitionError,
        ("workflow 'NoSteps' has no steps", "@loom.step"),
    ),
    Case(
        "workflow-not-a-loom-workflow-subclass",
        define(lambda: loom.workflow(name="cat_Plain")(Opaque)),
        loom.WorkflowDefinitionError,
        ("subclass of loom.Workflow", "Opaque"),
    ),
    Case(
        "activity-negative-retry-count",
        define(lambda: loom.activity(retry_count=-1)(_fn)),
        loom.WorkflowDefinitionError,
        ("activity '_fn'", "retry_count must be a whole number >= 0, got -1"),
    ),
    Case(
        "activity-zero-timeout",
        define(lambda: loom.activity(name="cat_zero_timeout", timeout_seconds=0)(_fn)),
        loom.WorkflowDefinitionError,
        ("activity 'cat_zero_timeout'", "timeout_seconds must be > 0", "got 0"),
    ),
    Case(
        "activity-negative-backoff",
        define(lambda: loom.activity(name="cat_backoff", retry_backoff_seconds=-1)(_fn)),
        loom.WorkflowDefinitionError,
        ("activity 'cat_backoff'", "retry_backoff_seconds must be >= 0, got -1"),
    ),
    Case(
        "worker-queues-given-as-one-string",
        new_worker(queues="default"),
        loom.ConfigurationError,
        ("queues must be a tuple of queue names", "got the string 'default'"),
    ),
    Case(
        "worker-queue-name-invalid",
        new_worker(queues=("default", "bad queue")),
        loom.ConfigurationError,
        ("task queue 'bad queue' is invalid",),
    ),
    Case(
        "worker-zero-max-deliveries",
        new_worker(max_deliveries=0),
        loom.ConfigurationError,
        ("max_deliveries must be >= 1, got 0",),
    ),
    Case(
        "worker-negative-eager-window",
        new_worker(eager_seconds=-1),
        loom.ConfigurationError,
        ("eager_seconds must be >= 0, got -1",),
    ),
    # --- handles: signals, cancel, result ------------------------------------------------
    Case(
        "signal-unknown-workflow",
        lambda env: env.client.get_handle("cat-nobody").signal("go"),
        loom.WorkflowNotFoundError,
        ("workflow 'cat-nobody' not found",),
    ),
    Case(
        "signal-finished-workflow",
        lambda env: env.client.signal(SUBJECT, "go", 1),
        loom.WorkflowExecutionError,
        ("cannot deliver signal 'go'", "workflow '{wf}' has already ended (COMPLETED)"),
        setup=finished_subject,
        unchanged="history",
    ),
    Case(
        "signal-payload-unencodable",
        lambda env: env.client.get_handle(SUBJECT).signal("go", {"x": Opaque()}),
        loom.PayloadError,
        ("payload of signal 'go' to workflow '{wf}'", "cannot be encoded", "Opaque"),
        setup=pending_subject,
        unchanged="history",
    ),
    Case(
        "signal-name-with-a-control-character",
        lambda env: env.client.get_handle(SUBJECT).signal("go\x1b[2J"),
        loom.ConfigurationError,
        ("signal name 'go\\x1b[2J' holds a control character",),
        setup=pending_subject,
        unchanged="history",
    ),
    Case(
        "signal-name-not-a-str",
        lambda env: env.client.signal(SUBJECT, 5, "x"),  # type: ignore[arg-type]
        loom.ConfigurationError,
        ("signal name must be a non-empty string, got int 5",),
        setup=pending_subject,
        unchanged="history",
    ),
    Case(
        "signal-name-too-long",
        lambda env: env.client.signal(SUBJECT, "s" * 300),
        loom.ConfigurationError,
        ("signal name 'sss", "is 300 bytes, over the limit of 256"),
        setup=pending_subject,
        unchanged="history",
    ),
    Case(
        "cancel-unknown-workflow",
        lambda env: env.client.get_handle("cat-nobody").cancel(),
        loom.WorkflowNotFoundError,
        ("workflow 'cat-nobody' not found",),
    ),
    Case(
        "cancel-finished-workflow",
        lambda env: env.client.cancel(SUBJECT, "too late"),
        loom.WorkflowExecutionError,
        ("cannot deliver cancel", "workflow '{wf}' has already ended (COMPLETED)"),
        setup=finished_subject,
        unchanged="history",
    ),
    Case(
        "cancel-twice",  # harmless: the second request is ignored, and writes nothing
        lambda env: env.client.get_handle(SUBJECT).cancel("second"),
        None,
        setup=cancelled_once,
        unchanged="history",
    ),
    Case(
        "list-limit-below-one",
        lambda env: env.client.list_workflows(limit=-1),
        loom.ConfigurationError,
        ("limit must be a whole number >= 1, got -1",),
    ),
    Case(
        "dead-letters-limit-below-one",
        lambda env: env.client.dead_letters(0),
        loom.ConfigurationError,
        ("limit must be a whole number >= 1, got 0",),
    ),
    Case(
        "result-timeout-expires",
        lambda env: env.client.get_handle(SUBJECT).result(timeout=0.2),
        loom.WorkflowStillRunningError,
        ("workflow '{wf}' is still PENDING after waiting 0.2s",),
        setup=pending_subject,
        unchanged="history",
    ),
    Case(
        "status-of-unknown-workflow",
        lambda env: env.client.get_handle("cat-nobody").status(),
        loom.WorkflowNotFoundError,
        ("workflow 'cat-nobody' not found",),
    ),
    # --- workflow code: the workflow fails, naming the line's problem -------------------
    Case(
        "state-set-key-not-a-str",
        misbehaves("state_key_not_a_str"),
        loom.WorkflowExecutionError,
        ("workflow '{wf}' failed", "state keys are strings, got 1"),
        unchanged=None,
        absent=(EventType.STATE_SET,),
    ),
    Case(
        "state-update-returns-a-list",
        misbehaves("update_returns_a_list"),
        loom.WorkflowExecutionError,
        ("workflow '{wf}' failed", "must return the complete new state as a dict, got list"),
        unchanged=None,
        absent=(EventType.STATE_UPDATE,),
    ),
    Case(
        "state-set-value-unencodable",
        misbehaves("state_value_unencodable"),
        loom.WorkflowExecutionError,
        ("workflow '{wf}' failed", "STATE_SET(thing)", "in step 'misbehave'", "Opaque"),
        unchanged=None,
        absent=(EventType.STATE_SET,),
    ),
    Case(
        "sleep-with-two-arguments",
        misbehaves("sleep_two_arguments"),
        loom.WorkflowExecutionError,
        (
            "exactly one of delta, seconds or until",
            "delta=datetime.timedelta(seconds=1)",
            "seconds=1",
        ),
        unchanged=None,
        absent=(EventType.TIMER_STARTED,),
    ),
    Case(
        "sleep-until-naive-datetime",
        misbehaves("sleep_until_naive"),
        loom.WorkflowExecutionError,
        ("timezone-aware datetime", "datetime.datetime(2030, 1, 1, 12, 0)"),
        unchanged=None,
        absent=(EventType.TIMER_STARTED,),
    ),
    Case(
        "asyncio-sleep-in-a-workflow",
        misbehaves("asyncio_sleep"),
        loom.WorkflowExecutionError,
        ("workflow '{wf}' failed", "asyncio.sleep", "await ctx.sleep(...)"),
        unchanged=None,
        absent=(EventType.TIMER_STARTED,),
    ),
    Case(
        "activity-argument-unencodable",
        misbehaves("activity_argument_unencodable"),
        loom.WorkflowExecutionError,
        ("workflow '{wf}' failed", "ACTIVITY_SCHEDULED(cat_echo)", "cannot be encoded", "Opaque"),
        unchanged=None,
        absent=(EventType.ACTIVITY_SCHEDULED,),
        check=lambda env: traceback_shows(env, "await ctx.activity(echo, Opaque())"),
    ),
    Case(
        "activity-argument-over-the-limit",
        misbehaves("activity_argument_too_big"),
        loom.WorkflowExecutionError,
        ("ACTIVITY_SCHEDULED(cat_echo)", "of workflow '{wf}'", f"over the limit of {LIMIT} bytes"),
        unchanged=None,
        absent=(EventType.ACTIVITY_SCHEDULED,),
        environ=LIMITED,
    ),
    Case(
        "activity-result-unencodable",
        misbehaves("activity_result_unencodable"),
        loom.ActivityFailedError,
        ("activity 'cat_returns_a_set' failed after 1 attempt(s)", "cannot be encoded", "set"),
        unchanged=None,
        absent=(EventType.ACTIVITY_COMPLETED,),
    ),
    Case(
        "activity-result-over-the-limit",
        misbehaves("activity_result_too_big"),
        loom.ActivityFailedError,
        ("activity 'cat_returns_big' failed", f"over the limit of {LIMIT} bytes"),
        unchanged=None,
        absent=(EventType.ACTIVITY_COMPLETED,),
        environ=LIMITED,
    ),
    Case(
        "activity-error-message-over-the-limit",
        misbehaves("activity_error_too_big"),
        loom.ActivityFailedError,
        ("activity 'cat_raises_a_huge_message' failed", "ValueError: yyyy", "characters cut"),
        unchanged=None,
        absent=(EventType.ACTIVITY_COMPLETED,),
        environ=LIMITED,
    ),
    Case(
        "state-over-the-limit-at-the-set-that-grows-it",
        misbehaves("state_grows_too_big"),
        loom.WorkflowExecutionError,
        (
            "workflow '{wf}' failed",
            "the state after STATE_SET(b)",
            "in step 'misbehave'",
            f"over the limit of {LIMIT} bytes",
        ),
        unchanged=None,
        absent=(EventType.WORKFLOW_COMPLETED,),
        environ=LIMITED,
        check=lambda env: traceback_shows(
            env, 'await ctx.state.set("b", "b" * (LIMIT // 2 + 100))'
        ),
    ),
    # --- the worker: names it does not know --------------------------------------------
    Case(
        "unknown-workflow-name",
        worker_then_dead_letter,
        DeadLettered,
        (
            "workflow task of {wf}",
            "no live worker of queue 'default' has registered workflow 'cat_Unregistered'",
            "cat_Echo",
        ),
        setup=lambda env: start(env, Unregistered, {}),
        unchanged="history",
    ),
    Case(
        "unknown-activity-name",
        dead_letter,
        DeadLettered,
        (
            "activity task of {wf}",
            "no live worker of queue 'default' has registered activity 'cat_no_such_activity'",
        ),
        setup=lambda env: scheduled_unknown_activity(env),
        unchanged="history",
    ),
    # --- stored data written by hand ----------------------------------------------------
    Case(
        "task-entry-garbage-bytes",
        task_entry({b"k": b"\xff\xfe", b"\x00junk": b"\xc1\x00\xff"}),
        DeadLettered,
        ("task {task}", "unknown kind '\ufffd\ufffd'", "k=w", "k=a"),
        setup=waiting_subject,
        unchanged="workflows",
    ),
    Case(
        "task-entry-unknown-kind",
        task_entry({"k": "z", "wf": SUBJECT}),
        DeadLettered,
        ("task {task}", "unknown kind 'z'"),
        setup=waiting_subject,
        unchanged="workflows",
    ),
    Case(
        "task-entry-without-workflow-id",
        task_entry({"k": "w"}),
        DeadLettered,
        ("workflow task {task}", "no 'wf' field"),
        setup=waiting_subject,
        unchanged="workflows",
    ),
    Case(
        "activity-task-without-seq",
        task_entry({"k": "a", "wf": SUBJECT, "att": "1", "p": msgpack.packb({"name": "cat_echo"})}),
        DeadLettered,
        ("activity task {task} of workflow '{wf}'", "'seq'", "missing"),
        setup=waiting_subject,
        unchanged="workflows",
    ),
    Case(
        "activity-task-with-garbage-payload",
        task_entry({"k": "a", "wf": SUBJECT, "seq": "1", "att": "1", "p": b"\xc1\xc1"}),
        DeadLettered,
        ("bad payload", "activity task {task}", "not valid msgpack"),
        setup=waiting_subject,
        unchanged="workflows",
    ),
    Case(
        "corrupt-history-entry",
        signal_both,
        loom.WorkflowExecutionError,
        ("workflow '{wf}' failed", "history entry {entry}", "NOT_AN_EVENT", "cannot be replayed"),
        setup=corrupt_history_entry,
        unchanged=None,
        absent=(EventType.STATE_SET,),
    ),
    Case(
        "timer-member-garbage-bytes",
        timer_member(b"\xc1 not msgpack"),
        DeadLettered,
        ("timer task", "corrupt member of timers of shard {shard}", "not msgpack", "malformed"),
        setup=waiting_subject,
        unchanged="workflows",
        check=member_removed,
    ),
    Case(
        "timer-member-wrong-shape",
        timer_member(msgpack.packb([1, SUBJECT])),
        DeadLettered,
        ("corrupt member of timers of shard {shard}", "[1, '{wf}']", "expected"),
        setup=waiting_subject,
        unchanged="workflows",
        check=member_removed,
    ),
    Case(
        "redrive-of-a-corrupt-dead-entry",
        lambda env: env.client.redrive(env.names["entry"]),
        loom.PayloadError,
        ("dead-lettered entry {entry}", "'queue'"),
        setup=redrive_corrupt_dead_entry,
    ),
    # --- stored records written by hand: skipped or shown as unreadable -------------------
    *[
        Case(
            f"config-shard-count-{label}",
            lambda env: open_store(env.url, env.namespace, None),
            loom.ConfigurationError,
            ("field 'shards' of loom:{{{ns}}}:config", f"holds {value!r}", "1..4096"),
            setup=config_shards(value),
        )
        for label, value in (
            ("not-a-number", "abc"),
            ("zero", "0"),
            ("negative", "-1"),
            ("too-big", "999999"),
        )
    ],
    *[
        Case(
            f"heartbeat-{label}",
            workers_listed,
            None,
            setup=heartbeat(value),
            unchanged=None,
            check=evil_heartbeat_pruned,
        )
        for label, value in (
            ("not-msgpack", b"\xc1 not msgpack"),
            ("not-a-map", ["evil", 1]),
            ("seen-ms-not-a-number", {"host": "h", "seen_ms": "yesterday"}),
            ("queues-not-a-list", {"seen_ms": 1, "queues": 7}),
        )
    ],
    *[
        Case(
            f"meta-{label}",
            listed_with_an_unreadable_field,
            None,
            setup=meta_field(name, value),
        )
        for label, name, value in (
            ("step-not-a-number", "step", b"abc"),
            ("name-not-utf8", "name", b"\xff\xfeOrder"),
            ("status-unknown", "status", b"SLEEPING"),
            ("input-not-msgpack", "input", b"\xc1"),
            ("waiting-activity-not-a-number", "a:x", b"1"),
        )
    ],
    Case(
        "meta-input-over-the-limit-of-this-reader",
        listed_with_an_unreadable_field,
        None,
        # A record over what a reader with this limit accepts (a value of twice the limit,
        # plus room for the record's own fields): written by a client with a higher one.
        setup=meta_field("input", msgpack.packb("x" * (record_limit(LIMIT) + 1))),
        environ=LIMITED,
    ),
    Case(
        "inspect-events-with-a-spoilt-entry",
        events_shown_around_the_bad_one,
        None,
        setup=spoilt_history_entry,
        unchanged="history",
    ),
    # --- the CLI ------------------------------------------------------------------------
    Case(
        "cli-worker-module-fails-to-import",
        broken_module,
        CliFailed,
        ("exit 1", "cannot import workflow module 'cat_broken_flows'", "boom at import"),
    ),
    Case(
        "cli-init-shard-count-disagrees",
        lambda env: cli(
            env, "init", "--url", env.url, "--namespace", env.namespace, "--shards", "8"
        ),
        CliFailed,
        ("exit 1", "namespace '{ns}' was created with 16 shards, not 8"),
    ),
    Case(
        "cli-init-zero-shards",
        lambda env: cli(
            env, "init", "--url", env.url, "--namespace", env.namespace + "x", "--shards", "0"
        ),
        CliFailed,
        ("exit 1", "shard count must be 1..4096, got 0"),
    ),
    Case(
        "cli-signal-payload-not-json",
        lambda env: cli(
            env,
            "signal",
            SUBJECT,
            "go",
            "{not json",
            "--url",
            env.url,
            "--namespace",
            env.namespace,
        ),
        CliFailed,
        ("exit 2", "payload is not JSON"),
        setup=pending_subject,
    ),
    Case(
        "cli-inspect-unknown-workflow",
        lambda env: cli(
            env, "inspect", "cat-nobody", "--url", env.url, "--namespace", env.namespace
        ),
        CliFailed,
        ("exit 1", "workflow 'cat-nobody' not found"),
    ),
    Case(
        "cli-namespace-invalid",
        lambda env: cli(env, "stats", "--url", env.url, "--namespace", "my namespace"),
        CliFailed,
        ("exit 1", "namespace 'my namespace' is invalid"),
    ),
    Case(
        "cli-wrong-password",
        lambda env: cli(
            env,
            "stats",
            "--url",
            env.url_as(env.names["user"], "wrong-pw"),
            "--namespace",
            env.namespace,
        ),
        CliFailed,
        ("exit 1", "refused the credentials", "{user}:***@"),
        never=("wrong-pw", "right-pw"),
        setup=acl_user("~loom:*", "+@all"),
        standalone=True,
    ),
]


async def scheduled_unknown_activity(env: Env) -> None:
    """The subject scheduled an activity no worker registers (committed, all written)."""
    await env.worker()
    await start(env, Misbehaving, {"how": "unknown_activity"})
    await until(lambda: _idle(env, SUBJECT))


async def traceback_shows(env: Env, line: str) -> None:
    """The stored failure's traceback points at the workflow code's own line."""
    error = (await env.client.describe(SUBJECT))["error"]
    assert line in error["traceback"], error["traceback"]


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(case, id=case.id, marks=[pytest.mark.standalone] if case.standalone else [])
        for case in CASES
    ],
)
async def test_bad_input(
    case: Case,
    client: loom.Client,
    redis_url: str,
    namespace: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in case.environ.items():
        monkeypatch.setenv(name, value)
    # The stack (and so the worker's task group) is entered and left by this task.
    async with contextlib.AsyncExitStack() as stack:
        env = Env(client, redis_url, namespace, stack, tmp_path, monkeypatch)
        env.names.update(wf=SUBJECT, ns=namespace)
        if case.setup is not None:
            await case.setup(env)
        before = await snapshot(env, case.unchanged)

        error: Exception | None = None
        try:
            await case.act(env)
        except Exception as exc:
            error = exc

        if case.error is None:
            assert error is None, f"expected no error, got {error!r}"
        else:
            assert isinstance(error, case.error), f"expected {case.error.__name__}, got {error!r}"
            message = str(error)
            for fragment in case.says:
                assert fragment.format(**env.names) in message, (fragment, message)
            for secret in case.never:
                assert secret not in message, (secret, message)
        assert await snapshot(env, case.unchanged) == before, "something was written"
        if case.absent:
            await check_history(env, case.absent)
        if case.check is not None:
            await case.check(env)
        if env.worker_running:
            await check_worker_alive(env)


def test_the_catalogue_is_big_enough() -> None:
    assert len(CASES) >= 40
    assert len({case.id for case in CASES}) == len(CASES)


async def test_typeddict_input_that_matches_is_accepted(client: loom.Client) -> None:
    """The shape check refuses only what is wrong: optional keys may be left out, and
    NotRequired written as a string annotation (`from __future__ import annotations`)
    counts as optional."""
    await client.start(OrderWorkflow, {"order_id": "A1", "amount": 3})
    await client.start(OrderWorkflow, {"order_id": "A2", "amount": 3, "note": "gift"})
    await client.start(
        OrderWorkflow, {"order_id": "A3", "amount": 3}, initial_state={"paid": False}
    )
    future = workflow_definition(FutureWorkflow)
    check_start_arguments(future, {"order_id": "A4"}, None)
    with pytest.raises(loom.WorkflowInputError, match="missing required key"):
        check_start_arguments(future, {"note": "no id"}, None)


class FutureInput(TypedDict):
    order_id: str
    note: NotRequired[str]


@loom.workflow(name="bad_FutureWorkflow")
class FutureWorkflow(loom.Workflow[FutureInput, dict[str, Any]]):
    @loom.step
    async def only(self, ctx: loom.WorkflowContext[FutureInput, dict[str, Any]]) -> None:
        return None
