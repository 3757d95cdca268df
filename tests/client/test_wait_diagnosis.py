"""A wait for a result that does not come says why: no live worker of the queue, the
task in the dead-letter stream, or what the code waits for (a signal, a timer)."""

from __future__ import annotations

import logging
from typing import Any

import anyio
import anyio.to_thread
import pytest
from click.testing import CliRunner

import loom_redis as loom
from loom_redis import client as client_module
from loom_redis.cli import main
from loom_redis.testing import isolated_registry, running_worker

pytestmark = pytest.mark.anyio

MISSING_ACTIVITY = "diagnosis_missing_activity"


@loom.workflow(name="diagnosis_Waits")
class WaitsWorkflow(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step(name="wait")
    async def wait(self, ctx: loom.WorkflowContext[dict[str, Any], dict[str, Any]]) -> None:
        if ctx.input.get("sleep"):
            await ctx.sleep(seconds=ctx.input["sleep"])
        else:
            await ctx.state.set("approved", await ctx.wait_for_signal("approve"))


@loom.workflow(name="diagnosis_CallsMissing")
class CallsMissingWorkflow(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step(name="call")
    async def call(self, ctx: loom.WorkflowContext[dict[str, Any], dict[str, Any]]) -> None:
        await ctx.state.set("answer", await ctx.activity(MISSING_ACTIVITY))


async def wait_for_status(handle: loom.WorkflowHandle, status: str) -> None:
    with anyio.fail_after(10):
        while await handle.status() != status:
            await anyio.sleep(0.02)


async def test_with_no_worker_the_timeout_says_so_and_a_long_wait_warns_once(
    client: loom.Client, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    handle = await WaitsWorkflow.start({}, workflow_id="diagnosis-no-worker")
    with pytest.raises(loom.WorkflowStillRunningError) as caught:
        await handle.result(timeout=0.2)
    message = str(caught.value)
    assert "workflow 'diagnosis-no-worker' is still PENDING after waiting 0.2s: " in message
    assert "no live worker reads its queue 'default'" in message
    assert "loom worker MODULES --queue default" in message
    assert "its first workflow task waits for a worker" in message
    assert caught.value.reason in message

    # A wait without a timeout says it once, after its first block (5 s, shortened here).
    monkeypatch.setattr(client_module._Deadline, "BLOCK_SECONDS", 0.2)
    with (
        caplog.at_level(logging.WARNING, logger="loom_redis.client"),
        pytest.raises(loom.WorkflowStillRunningError),
    ):
        await handle.result(timeout=1.5)
    warnings = [r.getMessage() for r in caplog.records if r.name == "loom_redis.client"]
    assert len(warnings) == 1, warnings
    assert "waiting for the result of workflow 'diagnosis-no-worker' (PENDING)" in warnings[0]
    assert "no live worker reads its queue 'default'" in warnings[0]


async def test_the_timeout_says_what_the_code_waits_for(
    client: loom.Client, redis_url: str, namespace: str
) -> None:
    async with running_worker(redis_url, namespace):
        signalled = await WaitsWorkflow.start({})
        sleeping = await WaitsWorkflow.start({"sleep": 600})
        await wait_for_status(signalled, "RUNNING")
        await wait_for_status(sleeping, "RUNNING")
        with pytest.raises(loom.WorkflowStillRunningError) as caught:
            await signalled.result(timeout=0.3)
        assert str(caught.value).endswith(": its code waits for signal 'approve'")
        with anyio.fail_after(5):
            while not (await sleeping.describe())["waiting_for"]["timers"]:
                await anyio.sleep(0.02)
        with pytest.raises(loom.WorkflowStillRunningError) as caught:
            await sleeping.result(timeout=0.3)
        assert "its code waits for a timer (seq 2) due at 20" in str(caught.value)
        assert str(caught.value).endswith(" UTC")
        await signalled.signal("approve", "yes")
        assert await signalled.result(timeout=10) == {"approved": "yes"}


async def test_a_dead_lettered_task_shows_in_the_timeout_status_and_inspect(
    client: loom.Client,
    redis_url: str,
    namespace: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with running_worker(redis_url, namespace, unregistered_grace_seconds=0):
        handle = await CallsMissingWorkflow.start({}, workflow_id="diagnosis-dead")
        with anyio.fail_after(10):
            while not (dead := await client.dead_letters()):
                await anyio.sleep(0.02)
        [entry] = dead
        with pytest.raises(loom.WorkflowStillRunningError) as caught:
            await handle.result(timeout=0.2)
        message = str(caught.value)
        assert "its activity task is in the dead-letter stream: no live worker" in message
        assert f"`loom dead retry {entry['id']}`" in message
        assert "its code waits for the activities of seq 2" in message

        with caplog.at_level(logging.WARNING, logger="loom_redis.client"):
            assert await handle.status() == "RUNNING"
        assert f"its task is in the dead-letter stream (entry {entry['id']})" in caplog.text

        inspected = await anyio.to_thread.run_sync(
            lambda: CliRunner().invoke(
                main, ["inspect", "diagnosis-dead", "--url", redis_url, "--namespace", namespace]
            )
        )
        assert inspected.exit_code == 0, inspected.output
        [waiting] = [line for line in inspected.output.splitlines() if line.startswith("waiting")]
        assert "dead-letter stream" in waiting and str(entry["id"]) in waiting

        with isolated_registry():  # the fix, deployed for this test only

            @loom.activity(name=MISSING_ACTIVITY)
            async def missing() -> int:
                return 42

            assert await client.redrive(str(entry["id"])) == "ok"
            assert (await handle.describe())["dead_letter"] is None
            assert await handle.result(timeout=10) == {"answer": 42}
