"""The `loom` command line against a real server: init, list, inspect, stats, signal,
cancel, `python -m loom_redis`, and the errors of a bad module or an unreachable Redis."""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio.from_thread
import pytest
from anyio.from_thread import BlockingPortal
from click.testing import CliRunner, Result

import loom_redis as loom
from loom_redis.cli import main
from loom_redis.store import Keyspace
from loom_redis.testing import free_port, isolated_registry, running_worker
from tests.support import admin_client

ROOT = Path(__file__).resolve().parents[2]


@loom.activity(name="cli_square")
async def square(value: int) -> int:
    return value * value


@loom.workflow(name="cli_Quick")
class QuickWorkflow(loom.Workflow[dict, dict]):
    @loom.step(name="square")
    async def compute(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        await ctx.state.set("squared", await ctx.activity(square, ctx.input["value"]))


@loom.workflow(name="cli_Wait")
class WaitWorkflow(loom.Workflow[dict, dict]):
    @loom.step(name="wait", description="waiting for a signal")
    async def wait(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        await ctx.state.set("got", await ctx.wait_for_signal("name"))


# -- helpers -------------------------------------------------------------------------------


@pytest.fixture
def portal() -> Iterator[BlockingPortal]:
    """An event loop in a thread for the client and worker; the CLI runs its own in this one."""
    with anyio.from_thread.start_blocking_portal("asyncio") as running:
        yield running


class Loom:
    """A client and an in-process worker on the portal's loop, driven from sync tests."""

    def __init__(self, portal: BlockingPortal, url: str, namespace: str) -> None:
        self.portal = portal
        self.url = url
        self.namespace = namespace
        self.client = portal.call(loom.Client(url, namespace).open)

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return self.portal.call(functools.partial(fn, *args, **kwargs))

    def start(self, workflow: type, value: Any, workflow_id: str) -> loom.WorkflowHandle:
        handle: loom.WorkflowHandle = self.call(
            self.client.start, workflow, value, workflow_id=workflow_id
        )
        return handle

    def wait_for(self, handle: loom.WorkflowHandle, event_type: str) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if any(e.type == event_type for e in self.call(handle.history)):
                return
            time.sleep(0.02)
        raise AssertionError(f"{handle.workflow_id} has no {event_type} after 10s")

    def cli(self, *args: str, code: int = 0) -> Result:
        result = CliRunner().invoke(main, [*args, "--url", self.url, "--namespace", self.namespace])
        assert result.exit_code == code, (result.output, result.exception)
        return result


@pytest.fixture
def lm(portal: BlockingPortal, redis_url: str, namespace: str) -> Iterator[Loom]:
    helper = Loom(portal, redis_url, namespace)
    yield helper
    portal.call(helper.client.close)


@pytest.fixture
def worker(lm: Loom) -> Iterator[None]:
    with lm.portal.wrap_async_context_manager(running_worker(lm.url, lm.namespace)):
        yield


def run_module(*args: str, cwd: Path = ROOT, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {
        k: v for k, v in os.environ.items() if k not in ("LOOM_REDIS_URL", "LOOM_NAMESPACE")
    }
    environment.update(env)
    return subprocess.run(
        [sys.executable, "-m", "loom_redis", *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


# -- init ----------------------------------------------------------------------------------


def test_init_creates_the_namespace_once(redis_url: str, namespace: str) -> None:
    def init(*args: str) -> Result:
        return CliRunner().invoke(
            main, ["init", *args, "--url", redis_url, "--namespace", namespace]
        )

    result = init("--shards", "4")
    assert result.exit_code == 0, result.output
    assert f"namespace {namespace!r} ready on {redis_url}" in result.output
    assert "with 4 shards" in result.output
    # Again: the namespace exists and keeps its shard count.
    result = init()
    assert result.exit_code == 0, result.output
    assert "with 4 shards" in result.output
    result = init("--shards", "8")
    assert result.exit_code == 1
    assert "created with 4 shards, not 8" in result.output
    assert "Traceback" not in result.output


def test_init_creates_the_streams_and_groups_of_the_queues_named(
    redis_url: str, namespace: str
) -> None:
    """What the Helm chart's hook runs before any worker (or autoscaler) watches them."""
    result = CliRunner().invoke(
        main,
        [
            "init",
            "--shards",
            "2",
            "-q",
            "orders",
            "--queue",
            "mail",
            "--url",
            redis_url,
            "--namespace",
            namespace,
        ],
    )
    assert result.exit_code == 0, result.output
    assert "and queue(s) orders, mail ready" in result.output
    keys = Keyspace(namespace, 2)

    async def groups_made() -> None:
        admin = admin_client(redis_url)
        try:
            for queue in ("orders", "mail"):
                for shard in range(2):
                    for stream in (keys.queue(shard, queue), keys.activity_queue(shard, queue)):
                        groups = await admin.xinfo_groups(stream)
                        assert [g["name"] for g in groups] == [b"workers"], stream
        finally:
            await admin.aclose()

    anyio.run(groups_made)

    result = CliRunner().invoke(main, ["init", "--queue", "bad queue", "--url", redis_url])
    assert result.exit_code == 2
    assert "--queue" in result.output and "'bad queue'" in result.output


def test_workers_require_live_fails_unless_enough_workers_of_the_queues_are_live(
    lm: Loom,
) -> None:
    result = lm.cli("workers", "--require-live", "1", code=1)
    assert "0 live worker(s); at least 1 required" in result.output
    with lm.portal.wrap_async_context_manager(running_worker(lm.url, lm.namespace)):
        deadline = time.monotonic() + 10  # until its first heartbeat is written
        while lm.cli("workers", "--json").output.strip() == "[]" and time.monotonic() < deadline:
            time.sleep(0.05)
        result = lm.cli("workers", "--require-live", "1", "--queue", "default")
        assert "1 live worker(s) of queue(s) default; at least 1 required" in result.output
        lm.cli("workers", "--require-live", "2", code=1)
        lm.cli("workers", "--require-live", "1", "-q", "elsewhere", code=1)


# -- list, inspect, stats --------------------------------------------------------------------


def test_list_inspect_and_stats(lm: Loom, worker: None) -> None:
    done = [lm.start(QuickWorkflow, {"value": n}, f"quick-{n}") for n in (3, 4)]
    for handle in done:
        assert lm.call(handle.result, 10) is not None
    waiting = lm.start(WaitWorkflow, {}, "waiting-1")
    lm.wait_for(waiting, "WORKFLOW_TASK_COMPLETED")

    table = lm.cli("list").output
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["WORKFLOW", "ID", "NAME"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert set(rows) == {"quick-3", "quick-4", "waiting-1"}
    assert rows["quick-3"][1:4] == ["cli_Quick", "COMPLETED", "1/1"]
    assert rows["waiting-1"][1:4] == ["cli_Wait", "RUNNING", "1/1"]
    assert lines[1].startswith("waiting-1")  # newest first

    completed = json.loads(lm.cli("list", "--status", "COMPLETED", "--json").output)
    assert {row["workflow_id"] for row in completed} == {"quick-3", "quick-4"}
    assert all(row["status"] == "COMPLETED" for row in completed)
    assert {row["workflow_id"]: row["result"] for row in completed} == {
        "quick-3": {"squared": 9},
        "quick-4": {"squared": 16},
    }
    running = json.loads(lm.cli("list", "--status", "running", "--json").output)
    assert [row["workflow_id"] for row in running] == ["waiting-1"]
    assert json.loads(lm.cli("list", "--status", "FAILED", "--json").output) == []
    assert len(json.loads(lm.cli("list", "--limit", "1", "--json").output)) == 1

    shown = lm.cli("inspect", "quick-3", "--events").output
    fields = dict(line.split(None, 1) for line in shown.splitlines() if not line.startswith(" "))
    assert fields["status"].strip() == "COMPLETED"
    assert fields["workflow_name"].strip() == "cli_Quick"
    assert json.loads(fields["result"]) == {"squared": 9}
    assert json.loads(fields["input"]) == {"value": 3}
    event_lines = [line for line in shown.splitlines() if line.startswith("  ")]
    history = lm.call(done[0].history)
    assert len(event_lines) == len(history)
    for line, event in zip(event_lines, history, strict=True):
        assert str(event.type) in line.split()
    for event_type in ("WORKFLOW_STARTED", "ACTIVITY_SCHEDULED", "ACTIVITY_COMPLETED"):
        assert event_type in shown
    # Without --events: no history lines.
    assert not [
        line for line in lm.cli("inspect", "quick-3").output.splitlines() if line.startswith("  ")
    ]

    as_json = json.loads(lm.cli("inspect", "waiting-1", "--events", "--json").output)
    assert as_json["status"] == "RUNNING"
    assert as_json["step_description"] == "waiting for a signal"
    assert [e["type"] for e in as_json["events"]] == [
        "WORKFLOW_STARTED",
        "STEP_STARTED",
        "WORKFLOW_TASK_COMPLETED",
    ]

    missing = lm.cli("inspect", "no-such-workflow", code=1)
    assert "not found" in missing.output
    assert "Traceback" not in missing.output

    counts = {line.split()[0]: int(line.split()[1]) for line in lm.cli("stats").output.splitlines()}
    assert counts["COMPLETED"] == 2
    assert counts["RUNNING"] == 1
    assert counts["FAILED"] == counts["CANCELLED"] == counts["PENDING"] == 0

    # The environment variables work in place of --url/--namespace.
    env = {"LOOM_REDIS_URL": lm.url, "LOOM_NAMESPACE": lm.namespace}
    result = CliRunner().invoke(main, ["stats"], env=env)
    assert result.exit_code == 0, result.output
    assert "COMPLETED  2" in result.output


WHEN = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC")


def test_loom_spellings_stats_json_and_times_with_their_zone(lm: Loom, worker: None) -> None:
    done = [lm.start(QuickWorkflow, {"value": n}, f"spell-{n}") for n in (1, 2)]
    for handle in done:
        lm.call(handle.result, 10)
    cancelled = lm.start(WaitWorkflow, {}, "spell-cancelled")
    lm.call(cancelled.cancel)
    with pytest.raises(loom.WorkflowCancelledError):
        lm.call(cancelled.result, 10)

    def listed(*args: str) -> list[str]:
        return [row["workflow_id"] for row in json.loads(lm.cli("list", *args, "--json").output)]

    # Loom's short flags, and a status in any case or Loom's spelling.
    for spelling in ("completed", "Completed", "COMPLETED"):
        assert listed("-s", spelling) == ["spell-2", "spell-1"]
    assert listed("--status", "completed", "-l", "1") == ["spell-2"]
    for spelling in ("canceled", "CANCELED", "cancelled"):
        assert listed("--status", spelling) == ["spell-cancelled"]
    assert listed("-l", "2") == ["spell-cancelled", "spell-2"]

    counts = json.loads(lm.cli("stats", "--json").output)
    assert counts == {
        "PENDING": 0,
        "RUNNING": 0,
        "SUSPENDED": 0,
        "COMPLETED": 2,
        "FAILED": 0,
        "CANCELLED": 1,
    }

    # Every time printed carries its zone.
    rows = lm.cli("list").output.splitlines()[1:]
    assert len(rows) == 3 and all(WHEN.search(row) and row.endswith(" UTC") for row in rows)
    shown = lm.cli("inspect", "spell-1", "--events").output.splitlines()
    fields = {line.split(None, 1)[0]: line.split(None, 1)[1] for line in shown if line[0] != " "}
    assert WHEN.fullmatch(fields["started"]) and WHEN.fullmatch(fields["closed"])
    events = [line for line in shown if line.startswith("  ")]
    assert events and all(WHEN.match(line.strip()) for line in events)
    assert lm.cli("inspect", "spell-1", "--no-events").output.count("UTC") == 2


def test_version_is_the_package_version() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.output == f"loom-redis, version {loom.__version__}\n"
    assert importlib.metadata.version("loom-redis") == loom.__version__


# -- signal and cancel ---------------------------------------------------------------------


def test_signal_reaches_a_waiting_workflow(lm: Loom, worker: None) -> None:
    handle = lm.start(WaitWorkflow, {}, "signal-me")
    lm.wait_for(handle, "WORKFLOW_TASK_COMPLETED")
    assert lm.call(handle.status) == "RUNNING"

    bad = lm.cli("signal", "signal-me", "name", "{not json", code=2)
    assert "payload is not JSON" in bad.output

    result = lm.cli("signal", "signal-me", "name", '{"a":1}')
    assert "signal 'name' sent to signal-me" in result.output
    assert lm.call(handle.result, 10) == {"got": {"a": 1}}
    received = [e.data for e in lm.call(handle.history) if e.type == "SIGNAL_RECEIVED"]
    assert received == [{"name": "name", "payload": {"a": 1}}]

    # A person is told that nothing was delivered (the handle only logs a warning).
    ended = lm.cli("signal", "signal-me", "name", "1", code=1)
    assert "cannot deliver signal 'name': workflow 'signal-me' has already ended (COMPLETED)" in (
        ended.output
    )
    ended = lm.cli("cancel", "signal-me", code=1)
    assert "cannot deliver cancel: workflow 'signal-me' has already ended (COMPLETED)" in (
        ended.output
    )
    missing = lm.cli("signal", "nobody", "name", code=1)
    assert "not found" in missing.output


def test_cancel_with_a_reason(lm: Loom, worker: None) -> None:
    handle = lm.start(WaitWorkflow, {}, "cancel-me")
    lm.wait_for(handle, "WORKFLOW_TASK_COMPLETED")

    result = lm.cli("cancel", "cancel-me", "--reason", "x")
    assert "cancel requested for cancel-me" in result.output
    with pytest.raises(loom.WorkflowCancelledError) as caught:
        lm.call(handle.result, 10)
    assert caught.value.reason == "x"
    assert lm.call(handle.status) == "CANCELLED"
    types = [str(e.type) for e in lm.call(handle.history)]
    assert types.count("WORKFLOW_CANCEL_REQUESTED") == 1
    assert types.count("WORKFLOW_CANCELLED") == 1
    shown = lm.cli("inspect", "cancel-me").output
    assert "CANCELLED" in shown
    assert "cancelled        x" in shown.splitlines()

    assert "not found" in lm.cli("cancel", "nobody", code=1).output


# -- the process: python -m loom_redis -----------------------------------------------------


def test_python_m_loom_redis_help() -> None:
    result = run_module("--help")
    assert result.returncode == 0, result.stderr
    for command in ("worker", "init", "list", "inspect", "stats", "signal", "cancel"):
        assert command in result.stdout
    result = run_module("worker", "--help")
    assert result.returncode == 0, result.stderr
    for option in ("--concurrency", "--workers", "--queue", "--lease", "--drain", "--url"):
        assert option in result.stdout


def test_worker_with_a_module_that_fails_to_import(tmp_path: Path, redis_url: str) -> None:
    missing = run_module("worker", "tests.no_such_module_here", "--url", redis_url)
    assert missing.returncode != 0
    assert "tests.no_such_module_here" in missing.stderr
    assert "Traceback" not in missing.stderr

    (tmp_path / "broken_flows.py").write_text("raise RuntimeError('boom at import')\n")
    broken = run_module("worker", "broken_flows", "--url", redis_url, cwd=tmp_path)
    assert broken.returncode != 0
    assert "'broken_flows'" in broken.stderr
    assert "boom at import" in broken.stderr
    assert "Traceback" not in broken.stderr


FLOWS = """
import loom_redis as loom


@loom.activity(name="cli_path_double")
async def double(n: int) -> int:
    return 2 * n


@loom.workflow(name="cli_PathFlow")
class PathFlow(loom.Workflow[dict, dict]):
    @loom.step()
    async def run(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        await ctx.state.set("doubled", await ctx.activity(double, ctx.input["n"]))
"""


@pytest.fixture
def flows(tmp_path: Path) -> Iterator[tuple[Path, type]]:
    """FLOWS written to shop/flows.py in a package `shop` under tmp_path, and its
    workflow class loaded in this process (to start it) without registering it here."""
    package = tmp_path / "shop"
    package.mkdir()
    (package / "__init__.py").write_text("")
    path = package / "flows.py"
    path.write_text(FLOWS)
    spec = importlib.util.spec_from_file_location("cli_shop_flows", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    with isolated_registry():
        spec.loader.exec_module(module)
    yield tmp_path, module.PathFlow


@contextmanager
def worker_process(
    lm: Loom, *modules: str, cwd: Path, **env: str
) -> Iterator[subprocess.Popen[str]]:
    """`python -m loom_redis worker MODULES...` in `cwd`, terminated on exit."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("LOOM_")}
    environment.update(env)
    command = [sys.executable, "-m", "loom_redis", "worker", *modules]
    command += ["--url", lm.url, "--namespace", lm.namespace, "--poll-interval", "0.2"]
    process = subprocess.Popen(command, cwd=cwd, env=environment, stderr=subprocess.PIPE, text=True)
    try:
        yield process
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=30)
        assert process.returncode == 0, stderr


@pytest.mark.parametrize(
    ("given", "cwd", "env"),
    [
        ("flows.py", "shop", {}),  # shop is a package: imported as shop.flows
        ("./shop/flows.py", ".", {}),
        ("ABSOLUTE", "/", {}),
        ("", ".", {"LOOM_WORKER_MODULES": "shop.flows, shop"}),
        ("", ".", {"LOOM_WORKER_MODULES": "shop.flows"}),
    ],
)
def test_worker_takes_file_paths_and_modules_from_the_environment(
    lm: Loom, flows: tuple[Path, type], given: str, cwd: str, env: dict[str, str]
) -> None:
    root, workflow = flows
    if given == "ABSOLUTE":
        given = str(root / "shop" / "flows.py")
    modules = [given] if given else []
    with worker_process(lm, *modules, cwd=root / cwd if cwd != "/" else Path("/"), **env):
        handle = lm.start(workflow, {"n": 21}, f"path-{len(given)}-{len(env)}")
        assert lm.call(handle.result, 30) == {"doubled": 42}


def test_worker_with_a_bad_path_suggests_the_module_name(redis_url: str) -> None:
    for given in ("shop/flow.py", "./shop/flow.py", "/srv/app/shop/flow.py"):
        result = CliRunner().invoke(main, ["worker", given, "--url", redis_url])
        assert result.exit_code == 1, result.output
        assert f"cannot import workflow module {given!r}: no such .py file" in result.output
        assert "or a module name, such as '" in result.output
    assert "such as 'shop.flow'" in CliRunner().invoke(main, ["worker", "shop/flow.py"]).output
    assert "such as 'srv.app.shop.flow'" in result.output


def test_worker_without_modules_says_how_to_give_them(redis_url: str) -> None:
    result = CliRunner().invoke(
        main, ["worker", "--url", redis_url], env={"LOOM_WORKER_MODULES": None}
    )
    assert result.exit_code == 2, result.output
    assert "no workflow modules" in result.output
    assert "loom worker myapp.workflows" in result.output
    assert "LOOM_WORKER_MODULES" in result.output


def test_unreachable_url_is_a_clear_error_with_the_password_masked() -> None:
    url = f"redis://admin:s3cr3t-pw@127.0.0.1:{free_port()}/0"
    for args in (
        ["list", "--url", url],
        ["worker", "tests.e2e.test_smoke", "--url", url, "--namespace", "x"],
    ):
        result = run_module(*args)
        output = result.stdout + result.stderr
        assert result.returncode == 1, output
        assert "cannot reach Redis" in output
        # The hint in the words of the command line, after the reason's own words.
        assert "; pass --url or set LOOM_REDIS_URL" in output
        assert "url=" not in output and ".;" not in output
        assert "redis://admin:***@127.0.0.1" in output
        assert "s3cr3t-pw" not in output
        assert "Traceback" not in output
    # Through the environment variable, a password without a user name.
    env_url = f"redis://:s3cr3t-pw@127.0.0.1:{free_port()}/0"
    result = run_module("stats", LOOM_REDIS_URL=env_url)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "s3cr3t-pw" not in output
    assert "***" in output
    assert "Traceback" not in output
    assert "; pass --url or set LOOM_REDIS_URL" in output


def test_invalid_url_is_a_clear_error() -> None:
    result = CliRunner().invoke(main, ["stats", "--url", "http://user:s3cr3t-pw@example"])
    assert result.exit_code == 1, result.output
    assert "invalid Redis URL" in result.output
    assert "s3cr3t-pw" not in result.output


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["list", "--status", "bogus"], "--status"),
        (["list", "-l", "0"], "--limit"),
        (["worker", "--concurrency", "0"], "--concurrency"),
        (["worker", "-w", "-3"], "--workers"),
        (["worker", "--lease", "0"], "--lease"),
        (["worker", "--poll-interval", "-1"], "--poll-interval"),
        (["worker", "--max-deliveries", "0"], "--max-deliveries"),
        (["worker", "--queue", "bad queue"], "--queue"),
    ],
)
def test_bad_option_values_are_refused_before_anything_runs(args: list[str], named: str) -> None:
    # Nothing listens on this URL: the options are refused before any connection.
    url = f"redis://127.0.0.1:{free_port()}/0"
    result = CliRunner().invoke(main, [*args, "--url", url])
    assert result.exit_code == 2, (result.output, result.exception)
    assert "Invalid value" in result.output
    assert named in result.output
