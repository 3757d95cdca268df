"""Hostile text and sizes (issue 11, "Small ones"): URLs whose password would be read as a
host, control characters in stored text the CLI prints, payloads at exactly the limit,
state that outgrows it, payloads kept out of logs above DEBUG."""

from __future__ import annotations

import logging
import os
from typing import Any

import anyio
import msgpack
import pytest

import loom_redis as loom
from loom_redis.codec import MAX_PAYLOAD_BYTES
from loom_redis.store import Store
from loom_redis.testing import EmbeddedServer, running_worker
from tests.support import cli, cli_text, wait_until

pytestmark = pytest.mark.anyio

LIMIT = 64 * 1024


def blob(size: int) -> str:
    """A str whose msgpack encoding is exactly `size` bytes."""
    for header in (1, 2, 3, 5):
        text = "x" * (size - header)
        if len(msgpack.packb(text)) == size:
            return text
    raise AssertionError(size)


# -- URLs ------------------------------------------------------------------------------


@pytest.mark.standalone  # it writes a password into a standalone server's URL
@pytest.mark.parametrize(
    ("password", "pieces"),
    [
        ("Xq7@Zk9/Wv3", ("Xq7", "Zk9", "Wv3")),  # read as host "Zk9" before the fix
        ("4242/Wv3", ("4242", "Wv3")),  # read as port 4242 of host "cat"
        ("Xq7?Wv3", ("Xq7", "Wv3")),
        ("Xq7#Wv3", ("Xq7", "Wv3")),
    ],
)
async def test_a_password_with_unescaped_characters_is_refused_and_never_shown(
    redis_url: str, password: str, pieces: tuple[str, ...]
) -> None:
    url = redis_url.replace("redis://", f"redis://cat:{password}@", 1)
    with pytest.raises(loom.ConfigurationError) as caught:
        await Store.open(url, "hostile")
    result = await cli("list", "--url", url)
    assert result.exit_code == 1, cli_text(result)
    for shown in (str(caught.value), cli_text(result)):
        assert "percent-encode the password" in shown, shown
        assert "redis://cat:***@127.0.0.1:" in shown, shown
        for piece in pieces:
            assert piece not in shown, (piece, shown)
    # Percent-encoded, the same password is taken as it is (and refused by the server,
    # which has no such user: the URL parsed as intended).
    encoded = password.replace("@", "%40").replace("/", "%2F").replace("?", "%3F")
    encoded = encoded.replace("#", "%23")
    with pytest.raises(loom.RedisAuthenticationError):
        await Store.open(redis_url.replace("redis://", f"redis://cat:{encoded}@", 1), "hostile")


# -- control characters in what the CLI prints ----------------------------------------


EVIL = "evil\x1b[2J\nrow\x9b31m\u2028"


@loom.workflow(name="hostile_Waits")
class Waits(loom.Workflow[dict, dict]):
    @loom.step(name="wait")
    async def wait(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        await ctx.wait_for_signal("go")


def assert_clean(output: str) -> None:
    for char in ("\x1b", "\x9b", "\u2028"):
        assert char not in output, repr(output)


async def test_the_cli_escapes_control_characters_in_stored_text(
    client: loom.Client, redis_url: str, namespace: str
) -> None:
    """Text written by older versions, by hand or by users (a cancel reason) cannot clear
    the screen of whoever runs `loom list` or break its rows."""
    handle = await client.start(Waits, {}, workflow_id="hostile-victim")
    async with running_worker(redis_url, namespace):
        await handle.cancel(EVIL)
        with pytest.raises(loom.WorkflowCancelledError):
            await handle.result(timeout=10)
    # A workflow and a heartbeat as an older version (or anyone with write access)
    # could have stored them.
    store = client.store
    keys = store.keys
    shard = keys.shard_of(EVIL)
    await store.redis.zadd(keys.started_index(shard), {EVIL: 1})
    await store.redis.hset(
        keys.meta(EVIL),
        mapping={"name": EVIL, "status": "RUNNING", "owner": EVIL, "queue": "default"},
    )
    heartbeat = {
        "name": EVIL,
        "host": EVIL,
        "pid": 1,
        "queues": [EVIL],
        "concurrency": 1,
        "in_flight": 0,
        "waiting": 0,
        "started_ms": 1,
        "seen_ms": 10**13,
        "workflows": [EVIL],
        "activities": [],
    }
    await store.redis.hset(keys.workers(), EVIL, msgpack.packb(heartbeat))
    common = ["--url", redis_url, "--namespace", namespace]

    listed = await cli("list", *common)
    assert listed.exit_code == 0, cli_text(listed)
    assert_clean(listed.output)
    lines = listed.output.splitlines()
    assert len(lines) == 3, lines  # the header, the victim, the evil one: no broken row
    assert "evil\\x1b[2J\\nrow\\x9b31m\\u2028" in listed.output

    inspected = await cli("inspect", "hostile-victim", "--events", *common)
    assert inspected.exit_code == 0, cli_text(inspected)
    assert_clean(inspected.output)
    [cancelled] = [line for line in inspected.output.splitlines() if line.startswith("cancelled")]
    assert cancelled.endswith("evil\\x1b[2J\\nrow\\x9b31m\\u2028"), cancelled

    workers = await cli("workers", *common)
    assert workers.exit_code == 0, cli_text(workers)
    assert_clean(workers.output)
    assert "evil\\x1b[2J" in workers.output


async def test_the_cli_refuses_a_signal_name_with_control_characters(
    client: loom.Client, redis_url: str, namespace: str
) -> None:
    handle = await client.start(Waits, {})
    result = await cli(
        "signal", handle.workflow_id, "go\x1b[2J", "--url", redis_url, "--namespace", namespace
    )
    assert result.exit_code == 1, cli_text(result)
    assert "signal name 'go\\x1b[2J' holds a control character" in result.output
    assert_clean(result.output)
    assert all(event.type != "SIGNAL_RECEIVED" for event in await handle.history())


# -- the payload limit -------------------------------------------------------------------


@loom.activity(name="hostile_make_blob")
async def make_blob(size: int) -> str:
    return blob(size)


@loom.workflow(name="hostile_Sizes")
class Sizes(loom.Workflow[dict, dict]):
    @loom.step()
    async def run(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        made = await ctx.activity(make_blob, ctx.input["size"])
        signalled = await ctx.wait_for_signal("value")
        sizes = [len(msgpack.packb(v)) for v in (ctx.input, made, signalled)]
        await ctx.state.set("sizes", sizes)


@loom.workflow(name="hostile_Blob")
class Blob(loom.Workflow[str, dict]):
    @loom.step()
    async def run(self, ctx: loom.WorkflowContext[str, dict]) -> None:
        await ctx.state.set("length", len(ctx.input))


async def test_a_value_of_exactly_the_default_limit_is_taken_and_one_byte_more_refused(
    client: loom.Client, redis_url: str, namespace: str
) -> None:
    """The limit is the user's value's size, not that of the record around it, and the
    error reports the value's size."""
    exact = blob(MAX_PAYLOAD_BYTES)
    async with running_worker(redis_url, namespace):
        handle = await client.start(Blob, exact)
        assert await handle.result(timeout=30) == {"length": len(exact)}
    with pytest.raises(loom.PayloadError) as caught:
        await client.start(Blob, exact + "x")
    message = str(caught.value)
    assert f"is {MAX_PAYLOAD_BYTES + 1} bytes encoded, over the limit of {MAX_PAYLOAD_BYTES}" in (
        message
    )


async def test_a_value_of_exactly_a_configured_limit_goes_everywhere_a_value_goes(
    client: loom.Client, redis_url: str, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An input, an activity's result and a signal's payload may each be exactly the
    limit; a payload one byte over is refused, with its own size."""
    monkeypatch.setenv("LOOM_MAX_PAYLOAD_BYTES", str(LIMIT))
    # {"size": LIMIT, "pad": "xx..."}: the pad makes the whole input exactly LIMIT bytes.
    shell = len(msgpack.packb({"size": LIMIT, "pad": ""}))
    workflow_input = {"size": LIMIT, "pad": blob(LIMIT - shell + 1)}
    assert len(msgpack.packb(workflow_input)) == LIMIT
    async with running_worker(redis_url, namespace):
        handle = await client.start(Sizes, workflow_input)
        await handle.signal("value", blob(LIMIT))
        assert await handle.result(timeout=30) == {"sizes": [LIMIT, LIMIT, LIMIT]}
    waiting = await client.start(Sizes, {"size": 1})
    with pytest.raises(loom.PayloadError) as caught:
        await waiting.signal("value", blob(LIMIT + 1))
    assert f"is {LIMIT + 1} bytes encoded, over the limit of {LIMIT} bytes" in str(caught.value)


# -- payloads stay out of logs above DEBUG ------------------------------------------------

SECRET = "SECRET-CARD-4111-1111"
started = anyio.Event()
release = anyio.Event()


@loom.activity(name="hostile_slow_charge")
async def slow_charge(card: str) -> str:
    started.set()
    await release.wait()
    return f"charged {card}"


@loom.workflow(name="hostile_Charge")
class Charge(loom.Workflow[dict, dict]):
    @loom.step()
    async def charge(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        await ctx.state.set("receipt", await ctx.activity(slow_charge, ctx.input["card"]))


async def test_payloads_never_reach_logs_above_debug(
    caplog: pytest.LogCaptureFixture, tmp_path: Any
) -> None:
    """The eager window ends while Redis is down for longer than a lease: the worker
    gives up writing the activity's scheduling and says so, naming the workflow and the
    activity, not the task that carries the card number."""
    global started, release
    started, release = anyio.Event(), anyio.Event()
    caplog.set_level(logging.DEBUG)
    binary = os.environ.get("LOOM_TEST_SERVER_BINARY")
    with EmbeddedServer(tmp_path, appendonly=True, binary=binary) as server:
        async with (
            loom.Client.connect(server.url, namespace="logs") as client,
            running_worker(server.url, "logs", eager_seconds=0.5, lease_seconds=2),
        ):
            handle = await client.start(Charge, {"card": SECRET})
            with anyio.fail_after(10):
                await started.wait()
            server.stop()

            async def refused() -> bool:
                return "could not write the scheduling" in caplog.text

            await wait_until(refused, timeout=15)
            server.start()
            release.set()
            # The attempt was cancelled; a replay schedules the activity again.
            assert await handle.result(timeout=60) == {"receipt": f"charged {SECRET}"}
    loud = [
        f"{record.getMessage()} {record.exc_text or ''}"
        for record in caplog.records
        if record.levelno >= logging.WARNING
    ]
    assert any("could not write the scheduling" in text for text in loud), loud
    for text in loud:
        assert SECRET not in text, text


# -- limits ----------------------------------------------------------------------------


async def test_list_limits_below_one_are_refused(redis_url: str, namespace: str) -> None:
    for args in (["list", "--limit", "-1"], ["list", "-l", "0"], ["dead", "list", "-l", "-5"]):
        result = await cli(*args, "--url", redis_url, "--namespace", namespace)
        assert result.exit_code == 2, cli_text(result)
        assert "x>=1" in result.output


async def test_a_metrics_port_out_of_range_is_refused() -> None:
    result = await cli("worker", "tests.e2e.test_hostile_input", "--metrics-port", "70000")
    assert result.exit_code == 2, cli_text(result)
    assert "--metrics-port" in result.output
