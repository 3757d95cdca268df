"""Activities: gathered ones scheduled together and run in parallel, retries, failures,
timeouts, failures caught by the workflow, plain functions and keyword arguments."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import anyio
import pytest

import loom_redis as loom
from loom_redis.testing import running_worker

pytestmark = pytest.mark.anyio

# (index, start, end) of each run of `act_parallel`, in time.monotonic() seconds.
PARALLEL_RUNS: list[tuple[int, float, float]] = []
# Attempt counters of the flaky activities, by key.
ATTEMPTS: dict[str, int] = {}
# Keys of the attempts of `act_slow` that were cancelled by their timeout.
CANCELLED: list[str] = []


@loom.activity(name="act_parallel")
async def parallel(index: int) -> int:
    start = time.monotonic()
    await anyio.sleep(0.2)
    PARALLEL_RUNS.append((index, start, time.monotonic()))
    return index * index


@loom.activity(name="act_flaky", retry_count=3, retry_backoff_seconds=0.05)
async def flaky(key: str, fail_times: int) -> str:
    ATTEMPTS[key] = ATTEMPTS.get(key, 0) + 1
    if ATTEMPTS[key] <= fail_times:
        raise RuntimeError(f"transient failure {ATTEMPTS[key]}")
    return f"ok after {ATTEMPTS[key]}"


@loom.activity(
    name="act_always_fails", retry_count=2, retry_backoff_seconds=0.02, backoff_multiplier=1.5
)
async def always_fails(key: str) -> None:
    ATTEMPTS[key] = ATTEMPTS.get(key, 0) + 1
    raise ValueError(f"card declined (attempt {ATTEMPTS[key]})")


@loom.activity(name="act_slow", timeout_seconds=0.1)
async def slow(key: str) -> str:
    ATTEMPTS[key] = ATTEMPTS.get(key, 0) + 1
    try:
        await anyio.sleep(5)
    except anyio.get_cancelled_exc_class():
        CANCELLED.append(key)
        raise
    return "never"


@loom.activity(
    name="act_slow_then_fast", timeout_seconds=0.2, retry_count=1, retry_backoff_seconds=0.05
)
async def slow_then_fast(key: str) -> str:
    ATTEMPTS[key] = ATTEMPTS.get(key, 0) + 1
    if ATTEMPTS[key] == 1:
        await anyio.sleep(5)
    return "fast the second time"


@loom.activity(name="act_sync")
def sync_add(a: int, b: int) -> dict[str, Any]:
    # A plain function runs in a worker thread.
    time.sleep(0.01)
    return {"sum": a + b, "thread": "worker"}


@loom.activity(name="act_kwargs")
async def with_kwargs(greeting: str, *, name: str, punctuation: str = ".") -> str:
    return f"{greeting}, {name}{punctuation}"


@loom.workflow(name="act_GatherWorkflow")
class GatherWorkflow(loom.Workflow[dict, dict]):
    @loom.step()
    async def fan_out(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        results = await asyncio.gather(*(ctx.activity(parallel, i) for i in range(10)))
        await ctx.state.set("squares", list(results))


@loom.workflow(name="act_RetryWorkflow")
class RetryWorkflow(loom.Workflow[dict, dict]):
    @loom.step()
    async def call(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        result = await ctx.activity(flaky, ctx.input["key"], ctx.input["fail_times"])
        await ctx.state.set("result", result)


@loom.workflow(name="act_FailingWorkflow")
class FailingWorkflow(loom.Workflow[dict, dict]):
    @loom.step()
    async def charge(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        await ctx.activity(always_fails, ctx.input["key"])
        await ctx.state.set("unreachable", True)


@loom.workflow(name="act_TimeoutWorkflow")
class TimeoutWorkflow(loom.Workflow[dict, dict]):
    @loom.step()
    async def call(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        await ctx.activity(slow, ctx.input["key"])


@loom.workflow(name="act_TimeoutRetryWorkflow")
class TimeoutRetryWorkflow(loom.Workflow[dict, dict]):
    @loom.step()
    async def call(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        await ctx.state.set("result", await ctx.activity(slow_then_fast, ctx.input["key"]))


@loom.workflow(name="act_CatchWorkflow")
class CatchWorkflow(loom.Workflow[dict, dict]):
    @loom.step()
    async def try_charge(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        try:
            await ctx.activity(always_fails, ctx.input["key"])
        except Exception as exc:  # the engine uses no exception for control flow
            await ctx.state.set("caught_type", type(exc).__name__)
            await ctx.state.set("caught_activity", getattr(exc, "activity_name", None))
            await ctx.state.set("caught_message", getattr(exc, "error_message", None))

    @loom.step()
    async def carry_on(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        await ctx.state.set("after", await ctx.activity(with_kwargs, "Hi", name="there"))


@loom.workflow(name="act_SyncKwargsWorkflow")
class SyncKwargsWorkflow(loom.Workflow[dict, dict]):
    @loom.step()
    async def call(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        await ctx.state.set("sync", await ctx.activity(sync_add, 2, b=3))
        await ctx.state.set(
            "kwargs", await ctx.activity(with_kwargs, "Hello", name="Ada", punctuation="!")
        )
        await ctx.state.set("by_name", await ctx.activity("act_kwargs", "Bye", name="Bob"))


def of_type(history: list[loom.Event], event_type: str) -> list[loom.Event]:
    return [e for e in history if e.type == event_type]


async def test_gathered_activities_are_scheduled_together_and_run_in_parallel(
    client: loom.Client, redis_url: str, namespace: str
) -> None:
    PARALLEL_RUNS.clear()
    async with running_worker(redis_url, namespace, concurrency=16):
        handle = await GatherWorkflow.start({})
        result = await handle.result(timeout=10)
    assert result == {"squares": [i * i for i in range(10)]}

    history = await handle.history()
    kinds = [str(e.type) for e in history]
    first_scheduled = kinds.index("ACTIVITY_SCHEDULED")
    # All ten were committed by one workflow task: no task boundary between them.
    block = kinds[first_scheduled : first_scheduled + 11]
    assert block == ["ACTIVITY_SCHEDULED"] * 10 + ["WORKFLOW_TASK_COMPLETED"]
    scheduled = of_type(history, "ACTIVITY_SCHEDULED")
    assert [e.data["args"] for e in scheduled] == [[i] for i in range(10)]
    seqs = [e.seq for e in scheduled]
    assert seqs == list(range(seqs[0], seqs[0] + 10))
    # Each completion carries the seq of its own command, whatever order they finished in.
    completed = {e.seq: e.data["result"] for e in of_type(history, "ACTIVITY_COMPLETED")}
    assert completed == {seq: i * i for i, seq in enumerate(seqs)}

    # They ran at the same time: every run overlaps every other one.
    assert sorted(i for i, _, _ in PARALLEL_RUNS) == list(range(10))
    latest_start = max(start for _, start, _ in PARALLEL_RUNS)
    earliest_end = min(end for _, _, end in PARALLEL_RUNS)
    assert latest_start < earliest_end


async def test_retries_then_success_is_one_command_with_several_attempts(
    client: loom.Client, redis_url: str, namespace: str
) -> None:
    async with running_worker(redis_url, namespace):
        handle = await RetryWorkflow.start({"key": f"{namespace}-retry", "fail_times": 2})
        result = await handle.result(timeout=10)
    assert result == {"result": "ok after 3"}
    assert ATTEMPTS[f"{namespace}-retry"] == 3

    history = await handle.history()
    scheduled = of_type(history, "ACTIVITY_SCHEDULED")
    completed = of_type(history, "ACTIVITY_COMPLETED")
    assert len(scheduled) == 1
    assert len(completed) == 1
    assert of_type(history, "ACTIVITY_FAILED") == []
    assert completed[0].seq == scheduled[0].seq
    assert completed[0].data == {"result": "ok after 3", "attempts": 3}


async def test_retries_exhausted_fails_the_workflow_with_activity_failed_error(
    client: loom.Client, redis_url: str, namespace: str
) -> None:
    key = f"{namespace}-exhausted"
    async with running_worker(redis_url, namespace):
        handle = await FailingWorkflow.start({"key": key})
        with pytest.raises(loom.ActivityFailedError) as caught:
            await handle.result(timeout=10)
    error = caught.value
    assert error.activity_name == "act_always_fails"
    assert error.error_message == "ValueError: card declined (attempt 3)"
    assert error.attempts == 3
    assert ATTEMPTS[key] == 3
    assert await handle.status() == "FAILED"

    history = await handle.history()
    assert len(of_type(history, "ACTIVITY_SCHEDULED")) == 1
    failed = of_type(history, "ACTIVITY_FAILED")
    assert len(failed) == 1
    assert failed[0].data["attempts"] == 3
    assert failed[0].data["error_type"] == "ValueError"
    workflow_failed = of_type(history, "WORKFLOW_FAILED")
    assert len(workflow_failed) == 1
    assert workflow_failed[0].data["activity_name"] == "act_always_fails"
    assert workflow_failed[0].data["step"] == "charge"
    assert "unreachable" not in [e.data.get("key") for e in of_type(history, "STATE_SET")]


async def test_timeout_cancels_the_attempt_and_counts_as_a_failure(
    client: loom.Client, redis_url: str, namespace: str
) -> None:
    key = f"{namespace}-timeout"
    async with running_worker(redis_url, namespace):
        handle = await TimeoutWorkflow.start({"key": key})
        with pytest.raises(loom.ActivityFailedError, match="timed out") as caught:
            await handle.result(timeout=10)
    assert caught.value.activity_name == "act_slow"
    assert "timed out after 0.1s" in caught.value.error_message
    assert ATTEMPTS[key] == 1
    # The attempt was cancelled where it waited, not left running.
    assert key in CANCELLED and len(CANCELLED) == 1
    failed = of_type(await handle.history(), "ACTIVITY_FAILED")
    assert len(failed) == 1 and failed[0].data["attempts"] == 1


async def test_a_timed_out_attempt_is_retried(
    client: loom.Client, redis_url: str, namespace: str
) -> None:
    key = f"{namespace}-timeout-retry"
    async with running_worker(redis_url, namespace):
        handle = await TimeoutRetryWorkflow.start({"key": key})
        assert await handle.result(timeout=10) == {"result": "fast the second time"}
    assert ATTEMPTS[key] == 2
    completed = of_type(await handle.history(), "ACTIVITY_COMPLETED")
    assert len(completed) == 1 and completed[0].data["attempts"] == 2


async def test_activity_failure_caught_in_the_step_lets_the_workflow_complete(
    client: loom.Client, redis_url: str, namespace: str
) -> None:
    async with running_worker(redis_url, namespace):
        handle = await CatchWorkflow.start({"key": f"{namespace}-caught"})
        result = await handle.result(timeout=10)
    assert result == {
        "caught_type": "ActivityFailedError",
        "caught_activity": "act_always_fails",
        "caught_message": "ValueError: card declined (attempt 3)",
        "after": "Hi, there.",
    }
    history = await handle.history()
    assert len(of_type(history, "ACTIVITY_FAILED")) == 1
    assert len(of_type(history, "ACTIVITY_COMPLETED")) == 1
    assert of_type(history, "WORKFLOW_FAILED") == []
    assert len(of_type(history, "WORKFLOW_COMPLETED")) == 1
    assert [e.data["name"] for e in of_type(history, "STEP_STARTED")] == ["try_charge", "carry_on"]


async def test_sync_activity_and_keyword_arguments(
    client: loom.Client, redis_url: str, namespace: str
) -> None:
    async with running_worker(redis_url, namespace):
        handle = await SyncKwargsWorkflow.start({})
        result = await handle.result(timeout=10)
    assert result == {
        "sync": {"sum": 5, "thread": "worker"},
        "kwargs": "Hello, Ada!",
        "by_name": "Bye, Bob.",
    }
    scheduled = of_type(await handle.history(), "ACTIVITY_SCHEDULED")
    assert [(e.data["name"], e.data["args"], e.data["kwargs"]) for e in scheduled] == [
        ("act_sync", [2], {"b": 3}),
        ("act_kwargs", ["Hello"], {"name": "Ada", "punctuation": "!"}),
        ("act_kwargs", ["Bye"], {"name": "Bob"}),
    ]
