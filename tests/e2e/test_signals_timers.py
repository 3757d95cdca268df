"""Signals (buffered, waited for, with and without timeouts), durable timers, workflow
time that replays, cancellation, and the errors of signalling a closed or unknown workflow."""

from __future__ import annotations

import itertools
import logging
import time
from datetime import UTC, datetime, timedelta

import anyio
import pytest

import loom_redis as loom
from loom_redis.testing import running_worker

pytestmark = pytest.mark.anyio


@loom.activity(name="sigtim_noop")
async def noop(value: str) -> str:
    return value


@loom.workflow(name="sigtim_WaitWorkflow")
class WaitWorkflow(loom.Workflow[dict, dict]):
    """Waits for "approve" (no timeout), records the payload."""

    @loom.step()
    async def wait(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        await ctx.state.set("waiting", True)
        payload = await ctx.wait_for_signal("approve")
        await ctx.state.set("approved_by", payload["by"])


@loom.workflow(name="sigtim_BufferedWorkflow")
class BufferedWorkflow(loom.Workflow[dict, dict]):
    """Runs an activity first, then waits for two signals sent long before."""

    @loom.step()
    async def busy(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        await ctx.activity(noop, "busy")

    @loom.step()
    async def wait(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        first = await ctx.wait_for_signal("item")
        second = await ctx.wait_until_signal("item")
        await ctx.state.set("items", [first, second])


@loom.workflow(name="sigtim_TimeoutWorkflow")
class TimeoutWorkflow(loom.Workflow[dict, dict]):
    """Waits for "go" with a timeout; a timeout is caught in the step."""

    @loom.step()
    async def wait(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        try:
            payload = await ctx.wait_for_signal("go", timeout=ctx.input["timeout"])
        except loom.SignalTimeoutError as exc:
            await ctx.state.set("timed_out", str(exc))
            await ctx.state.set("is_timeout_error", isinstance(exc, TimeoutError))
        else:
            await ctx.state.set("payload", payload)


@loom.workflow(name="sigtim_LateSignalWorkflow")
class LateSignalWorkflow(loom.Workflow[dict, dict]):
    """After a timeout it waits on without a timeout: that task commands nothing."""

    @loom.step()
    async def wait(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        late = False
        try:
            payload = await ctx.wait_for_signal("go", timeout=0.05)
        except loom.SignalTimeoutError:
            late = True
            payload = await ctx.wait_for_signal("go")
        await ctx.state.set("late", late)
        await ctx.state.set("payload", payload)


@loom.workflow(name="sigtim_UncaughtTimeoutWorkflow")
class UncaughtTimeoutWorkflow(loom.Workflow[dict, dict]):
    @loom.step()
    async def wait(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        await ctx.wait_until_signal("never", timeout=timedelta(seconds=0.1))


@loom.workflow(name="sigtim_SleepWorkflow")
class SleepWorkflow(loom.Workflow[dict, dict]):
    """Sleeps three ways; records ctx.now() before, between and after."""

    @loom.step()
    async def record_start(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        await ctx.state.set("t0", ctx.now().isoformat())

    @loom.step()
    async def sleep_seconds(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        await ctx.sleep(seconds=0.1)
        await ctx.state.set("t1", ctx.now().isoformat())

    @loom.step()
    async def sleep_delta(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        await ctx.sleep(delta=timedelta(milliseconds=100))
        await ctx.state.set("t2", ctx.now().isoformat())

    @loom.step()
    async def sleep_until(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        await ctx.sleep(until=ctx.now() + timedelta(milliseconds=100))
        await ctx.state.set("t3", ctx.now().isoformat())


@loom.workflow(name="sigtim_NowWorkflow")
class NowWorkflow(loom.Workflow[dict, dict]):
    """Keeps the first ctx.now() in a local; replays after the activity must agree."""

    @loom.step()
    async def first(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        # Slow (but deterministic) workflow code: the task's commit happens a few
        # milliseconds after the code read ctx.now().
        time.sleep(0.02)  # noqa: ASYNC251 (blocking on purpose: slow workflow code)
        await ctx.state.set("now_1", ctx.now().isoformat())
        await ctx.state.set("tz", str(ctx.now().tzinfo))

    @loom.step()
    async def second(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        recorded = ctx.state["now_1"]
        await ctx.activity(noop, "tick")
        # This replay re-ran step 1: its now() must be the one step 1 first saw.
        await ctx.state.set("now_1_on_replay", recorded)
        await ctx.state.set("now_2", ctx.now().isoformat())


@loom.workflow(name="sigtim_LongSleepWorkflow")
class LongSleepWorkflow(loom.Workflow[dict, dict]):
    @loom.step()
    async def nap(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        await ctx.state.set("sleeping", True)
        await ctx.sleep(seconds=3600)
        await ctx.state.set("woke", True)


def of_type(history: list[loom.Event], event_type: str) -> list[loom.Event]:
    return [e for e in history if e.type == event_type]


async def wait_for_event(handle: loom.WorkflowHandle, event_type: str) -> list[loom.Event]:
    """Poll history until it holds `event_type` (fails after 5 s)."""
    with anyio.fail_after(5):
        while True:
            history = await handle.history()
            if of_type(history, event_type):
                return history
            await anyio.sleep(0.02)


async def test_signal_sent_before_the_workflow_waits_is_buffered(
    client: loom.Client, redis_url: str, namespace: str
) -> None:
    # Signals sent before any worker ran the workflow: both are kept, in order.
    handle = await BufferedWorkflow.start({})
    await handle.signal("item", {"n": 1})
    await handle.signal("item", {"n": 2})
    history = await handle.history()
    assert [str(e.type) for e in history] == [
        "WORKFLOW_STARTED",
        "SIGNAL_RECEIVED",
        "SIGNAL_RECEIVED",
    ]
    async with running_worker(redis_url, namespace):
        assert await handle.result(timeout=10) == {"items": [{"n": 1}, {"n": 2}]}
    signals = of_type(await handle.history(), "SIGNAL_RECEIVED")
    assert [s.data for s in signals] == [
        {"name": "item", "payload": {"n": 1}},
        {"name": "item", "payload": {"n": 2}},
    ]


async def test_wait_for_signal_without_timeout(
    client: loom.Client, redis_url: str, namespace: str
) -> None:
    async with running_worker(redis_url, namespace):
        handle = await WaitWorkflow.start({})
        await wait_for_event(handle, "STATE_SET")
        # Waiting without a timeout starts no timer, and the workflow stays open.
        history = await handle.history()
        assert of_type(history, "TIMER_STARTED") == []
        assert await handle.status() == "RUNNING"
        await handle.signal("approve", {"by": "admin"})
        assert await handle.result(timeout=10) == {"waiting": True, "approved_by": "admin"}
    history = await handle.history()
    assert len(of_type(history, "SIGNAL_RECEIVED")) == 1
    assert str(history[-1].type) in ("WORKFLOW_COMPLETED", "WORKFLOW_TASK_COMPLETED")
    assert len(of_type(history, "WORKFLOW_COMPLETED")) == 1


async def test_wait_for_signal_with_timeout_signal_arrives_in_time(
    client: loom.Client, redis_url: str, namespace: str
) -> None:
    async with running_worker(redis_url, namespace):
        handle = await TimeoutWorkflow.start({"timeout": 30})
        await wait_for_event(handle, "TIMER_STARTED")
        await handle.signal("go", "payload-1")
        assert await handle.result(timeout=10) == {"payload": "payload-1"}
    history = await handle.history()
    timers = of_type(history, "TIMER_STARTED")
    assert len(timers) == 1
    assert timers[0].data["seconds"] == 30
    # The timeout timer never fired.
    assert of_type(history, "TIMER_FIRED") == []


async def test_wait_for_signal_timeout_expires_and_is_catchable(
    client: loom.Client, redis_url: str, namespace: str
) -> None:
    async with running_worker(redis_url, namespace):
        handle = await TimeoutWorkflow.start({"timeout": 0.1})
        result = await handle.result(timeout=10)
    assert result == {
        "timed_out": "no signal 'go' arrived within 0.1s",
        "is_timeout_error": True,
    }
    history = await handle.history()
    timer = of_type(history, "TIMER_STARTED")
    fired = of_type(history, "TIMER_FIRED")
    assert len(timer) == 1 and len(fired) == 1
    assert fired[0].seq == timer[0].seq
    assert of_type(history, "SIGNAL_RECEIVED") == []


async def test_a_timeout_the_code_saw_stays_seen_after_a_later_signal(
    client: loom.Client, redis_url: str, namespace: str
) -> None:
    async with running_worker(redis_url, namespace):
        handle = await LateSignalWorkflow.start({})
        # The task that ran on TIMER_FIRED produced no command; it still closes its batch,
        # so replay feeds the timeout to the code before (not with) the later signal.
        with anyio.fail_after(5):
            while True:
                kinds = [str(e.type) for e in await handle.history()]
                if kinds[-2:] == ["TIMER_FIRED", "WORKFLOW_TASK_COMPLETED"]:
                    break
                await anyio.sleep(0.02)
        await handle.signal("go", "late payload")
        assert await handle.result(timeout=10) == {"late": True, "payload": "late payload"}
    kinds = [str(e.type) for e in await handle.history()]
    fired = kinds.index("TIMER_FIRED")
    assert kinds[fired + 1] == "WORKFLOW_TASK_COMPLETED"
    assert kinds.index("SIGNAL_RECEIVED") > fired + 1


async def test_uncaught_signal_timeout_fails_the_workflow(
    client: loom.Client, redis_url: str, namespace: str
) -> None:
    async with running_worker(redis_url, namespace):
        handle = await UncaughtTimeoutWorkflow.start({})
        with pytest.raises(loom.WorkflowExecutionError, match="no signal 'never' arrived"):
            await handle.result(timeout=10)
    assert await handle.status() == "FAILED"
    failed = of_type(await handle.history(), "WORKFLOW_FAILED")
    assert len(failed) == 1
    assert failed[0].data["type"] == "SignalTimeoutError"
    assert failed[0].data["step"] == "wait"


async def test_sleep_seconds_delta_and_until(
    client: loom.Client, redis_url: str, namespace: str
) -> None:
    async with running_worker(redis_url, namespace):
        handle = await SleepWorkflow.start({})
        result = await handle.result(timeout=10)
    times = [datetime.fromisoformat(result[k]) for k in ("t0", "t1", "t2", "t3")]
    # Workflow time moves forward at least by each sleep.
    for earlier, later in itertools.pairwise(times):
        assert later - earlier >= timedelta(milliseconds=100)
    assert all(t.tzinfo is not None for t in times)

    history = await handle.history()
    started = of_type(history, "TIMER_STARTED")
    fired = of_type(history, "TIMER_FIRED")
    assert [t.data["seconds"] for t in started] == [0.1, 0.1, pytest.approx(0.1, abs=0.001)]
    assert [f.seq for f in fired] == [t.seq for t in started]
    # Each timer is due `seconds` after the workflow time of the task that started it.
    t0_ms = round(times[0].timestamp() * 1000)
    assert started[0].data["due_ms"] == t0_ms + 100
    # sleep(until=now + 100ms) asks for exactly 100ms of the workflow's own time.
    t2_ms = round(times[2].timestamp() * 1000)
    assert started[2].data["due_ms"] == t2_ms + 100
    # No timer fired before it was due.
    for timer, fire in zip(started, fired, strict=True):
        assert fire.time_ms >= timer.data["due_ms"]


async def test_now_is_the_same_on_every_replay(
    client: loom.Client, redis_url: str, namespace: str
) -> None:
    async with running_worker(redis_url, namespace):
        handle = await NowWorkflow.start({})
        result = await handle.result(timeout=10)
    assert result["tz"] == "UTC"
    history = await handle.history()
    sets = {e.data["key"]: e.data["value"] for e in of_type(history, "STATE_SET")}
    # The value step 1 recorded when it first ran (in history) is the value every later
    # replay computed again (in the final state), and the one step 2 read from state.
    assert sets["now_1"] == result["now_1"] == result["now_1_on_replay"]
    assert sets["now_2"] == result["now_2"]
    # ctx.now() of each task is the time its WORKFLOW_TASK_COMPLETED recorded.
    task_times = [
        datetime.fromtimestamp(e.time_ms / 1000, tz=UTC).isoformat()
        for e in of_type(history, "WORKFLOW_TASK_COMPLETED")
    ]
    assert result["now_1"] == task_times[0]
    assert result["now_2"] in task_times[1:]
    assert datetime.fromisoformat(result["now_2"]) >= datetime.fromisoformat(result["now_1"])


async def test_cancel_a_sleeping_workflow(
    client: loom.Client, redis_url: str, namespace: str
) -> None:
    async with running_worker(redis_url, namespace):
        handle = await LongSleepWorkflow.start({})
        await wait_for_event(handle, "TIMER_STARTED")
        await handle.cancel(reason="user asked")
        with pytest.raises(loom.WorkflowCancelledError, match="user asked") as caught:
            await handle.result(timeout=10)
        assert caught.value.reason == "user asked"
        assert await handle.status() == "CANCELLED"
        # A second cancel is harmless: no error, no second request in history.
        await handle.cancel(reason="again")
        assert await handle.status() == "CANCELLED"
    history = await handle.history()
    requested = of_type(history, "WORKFLOW_CANCEL_REQUESTED")
    cancelled = of_type(history, "WORKFLOW_CANCELLED")
    assert len(requested) == 1 and requested[0].data == {"reason": "user asked"}
    assert len(cancelled) == 1 and cancelled[0].data == {"reason": "user asked"}
    assert of_type(history, "TIMER_FIRED") == []
    # The code after the sleep never ran.
    assert [e.data["key"] for e in of_type(history, "STATE_SET")] == ["sleeping"]
    info = await handle.describe()
    assert info["cancel_requested"] is True


async def test_cancel_twice_while_running_records_one_request(
    client: loom.Client, redis_url: str, namespace: str
) -> None:
    handle = await LongSleepWorkflow.start({})
    # No worker yet: both requests arrive while the workflow is open.
    await handle.cancel(reason="first")
    await handle.cancel(reason="second")
    async with running_worker(redis_url, namespace):
        with pytest.raises(loom.WorkflowCancelledError, match="first"):
            await handle.result(timeout=10)
    history = await handle.history()
    assert len(of_type(history, "WORKFLOW_CANCEL_REQUESTED")) == 1
    assert len(of_type(history, "WORKFLOW_CANCELLED")) == 1
    # It was cancelled before its first step ran.
    assert of_type(history, "TIMER_STARTED") == []


async def test_signal_and_cancel_of_a_finished_workflow_warn_on_the_handle(
    client: loom.Client, redis_url: str, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_worker(redis_url, namespace):
        handle = await WaitWorkflow.start({})
        await handle.signal("approve", {"by": "x"})
        await handle.result(timeout=10)
    before = await handle.history()
    wid = handle.workflow_id
    # As Loom's handle: no error, a warning that names the workflow and its status.
    with caplog.at_level(logging.WARNING, logger="loom_redis.client"):
        await handle.signal("approve", {"by": "late"})
        await handle.cancel(reason="too late")
    assert [r.getMessage() for r in caplog.records] == [
        f"cannot deliver signal 'approve': workflow {wid!r} has already ended (COMPLETED); "
        "nothing was sent",
        f"cannot deliver cancel: workflow {wid!r} has already ended (COMPLETED); nothing was sent",
    ]
    # The client's own methods raise.
    with pytest.raises(loom.WorkflowExecutionError, match="already ended \\(COMPLETED\\)"):
        await client.signal(wid, "approve", {"by": "late"})
    with pytest.raises(loom.WorkflowExecutionError, match="cannot deliver cancel"):
        await client.cancel(wid)
    # Nothing was written.
    assert await handle.history() == before


async def test_signal_and_cancel_of_unknown_workflow(client: loom.Client) -> None:
    handle = client.get_handle("sigtim-no-such-workflow")
    with pytest.raises(loom.WorkflowNotFoundError, match="sigtim-no-such-workflow"):
        await handle.signal("approve", {})
    with pytest.raises(loom.WorkflowNotFoundError):
        await handle.cancel()
    with pytest.raises(loom.WorkflowNotFoundError):
        await loom.get_handle("sigtim-other-missing").signal("x")
    # Nothing was created by the attempts.
    keys = [k async for k in client.store.redis.scan_iter(match="*sigtim-no-such-workflow*")]
    assert keys == []
