"""A finishing transition hands its worker the queue's next task, and an activity's
outcome is committed with the workflow task it wakes when the worker holds the
workflow's instance; whenever the history moved meanwhile, the plain path takes over."""

from __future__ import annotations

from collections import Counter

import anyio
import pytest

import loom_redis as loom
from loom_redis.events import EventType
from loom_redis.store.keys import WORKER_GROUP
from loom_redis.testing import running_worker
from tests.store_calls import count_worker_calls

from .test_instance_cache import STEPS
from .test_instance_cache import Counter as Chain

pytestmark = pytest.mark.anyio

# Set by a test to hold `follow_gate` until it is released.
gates: dict[str, anyio.Event] = {}
started: dict[str, anyio.Event] = {}


@loom.activity(name="follow_gate")
async def gate(name: str) -> str:
    started[name].set()
    await gates[name].wait()
    return f"{name} passed"


@loom.activity(name="follow_pause")
async def pause(index: int) -> int:
    await anyio.sleep(0.02)
    return index + 1


@loom.workflow(name="FollowLongChain")
class LongChain(loom.Workflow[dict, dict]):
    @loom.step()
    async def run(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        value = 0
        for _ in range(ctx.input["steps"]):
            value = await ctx.activity(pause, value)
        await ctx.state.set("value", value)


@loom.workflow(name="FollowGateThenSignal")
class GateThenSignal(loom.Workflow[dict, dict]):
    @loom.step()
    async def run(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        passed = await ctx.activity(gate, ctx.input["gate"])
        signal = await ctx.wait_for_signal("go")
        await ctx.state.set("result", [passed, signal])


@loom.workflow(name="FollowTwoGates")
class TwoGates(loom.Workflow[dict, dict]):
    @loom.step()
    async def run(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        first = await ctx.activity(gate, ctx.input["first"])
        second = await ctx.activity(gate, ctx.input["second"])
        await ctx.state.set("result", [first, second])


def _gate(name: str) -> None:
    gates[name] = anyio.Event()
    started[name] = anyio.Event()


async def test_a_chain_runs_on_its_worker_with_one_read_and_one_commit_per_step(
    client: loom.Client, redis_url: str, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = count_worker_calls(
        monkeypatch, client, "read_tasks", "read_history", "record_activity_result"
    )
    async with running_worker(redis_url, namespace):
        handle = await client.start(Chain, {})
        assert await handle.result(timeout=20) == {"value": STEPS}
    # The first workflow task is read from the queue with WORKFLOW_STARTED on board;
    # every later task comes with the commit before it, and each activity's outcome is
    # committed together with the workflow task it wakes.
    assert calls == Counter({"read_tasks": 1})
    history = await handle.history()
    completed = [e.seq for e in history if e.type == EventType.ACTIVITY_COMPLETED]
    assert len(completed) == len(set(completed)) == STEPS


async def test_a_signal_during_an_activity_makes_its_outcome_take_the_plain_path(
    client: loom.Client, redis_url: str, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _gate("signal")
    calls = count_worker_calls(monkeypatch, client, "record_activity_result")
    async with running_worker(redis_url, namespace):
        handle = await client.start(GateThenSignal, {"gate": "signal"})
        with anyio.fail_after(10):
            await started["signal"].wait()
            # The worker runs the activity at once and writes its scheduling when it
            # outlasts the eager window.
            while EventType.ACTIVITY_SCHEDULED not in [e.type for e in await handle.history()]:
                await anyio.sleep(0.01)
        # The history moves while the worker holds the instance: the commit of the
        # outcome with the next workflow task is fenced off, the outcome recorded alone.
        await handle.signal("go", "now")
        gates["signal"].set()
        assert await handle.result(timeout=20) == {"result": ["signal passed", "now"]}
    assert calls["record_activity_result"] == 1
    history = await handle.history()
    types = [e.type for e in history]
    assert types.count(EventType.ACTIVITY_COMPLETED) == 1
    assert types.count(EventType.SIGNAL_RECEIVED) == 1


async def test_a_signal_before_the_first_task_is_not_missed(
    client: loom.Client, redis_url: str, namespace: str
) -> None:
    """The first task carries WORKFLOW_STARTED as it was queued; the signal sent
    before any worker ran is in the history only, and the fence makes it count."""
    _gate("early")
    gates["early"].set()
    handle = await client.start(GateThenSignal, {"gate": "early"})
    await handle.signal("go", "early")
    async with running_worker(redis_url, namespace):
        assert await handle.result(timeout=20) == {"result": ["early passed", "early"]}


async def test_a_draining_worker_takes_no_next_task(
    client: loom.Client, redis_url: str, namespace: str
) -> None:
    """A worker told to stop finishes its activity but leaves the workflow's next task
    in the queue for others, at once (not after a lease)."""
    _gate("drain-1")
    _gate("drain-2")
    gates["drain-2"].set()
    async with running_worker(redis_url, namespace, lease_seconds=60) as first:
        handle = await client.start(TwoGates, {"first": "drain-1", "second": "drain-2"})
        with anyio.fail_after(10):
            await started["drain-1"].wait()
        first.stop()
        # Once the cut read is over: a task Redis delivers to a read cut short by the
        # stop is the worker's own and runs in the drain, by design.
        await anyio.sleep(0.3)
        gates["drain-1"].set()
    assert not started["drain-2"].is_set()
    for key in first.store.queue_keys(["default"]):
        pending = await client.store.redis.xpending(key, WORKER_GROUP)
        assert pending["pending"] == 0, (key, pending)
    async with running_worker(redis_url, namespace):
        assert await handle.result(timeout=10) == {"result": ["drain-1 passed", "drain-2 passed"]}


async def test_a_long_chain_does_not_keep_new_work_waiting(
    client: loom.Client, redis_url: str, namespace: str
) -> None:
    """With one executor busy with a chain whose every step hands it the next one, a
    workflow started meanwhile still gets read and run before the chain ends."""
    async with running_worker(redis_url, namespace, concurrency=1, poll_interval=0.2):
        chain = await client.start(LongChain, {"steps": 100})
        with anyio.fail_after(10):
            while not (await chain.describe())["current_step"]:
                await anyio.sleep(0.01)
        short = await client.start(LongChain, {"steps": 1})
        assert await short.result(timeout=20) == {"value": 1}
        assert (await chain.describe())["status"] == "RUNNING"
        assert await chain.result(timeout=60) == {"value": 100}
