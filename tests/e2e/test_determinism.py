"""Workflow code that computes a value differently on replay: random numbers, ids and the
clock replay as they ran, a value that still differs fails the workflow with a
NonDeterministicWorkflowError naming it, and a clock read through datetime is refused
when the workflow is defined."""

from __future__ import annotations

import datetime as dt
import itertools
import random
import time
import uuid
from typing import Any

import anyio
import pytest

import loom_redis as loom
from loom_redis.testing import isolated_registry, running_worker

pytestmark = pytest.mark.anyio

# A source the engine cannot make deterministic: each run of the code draws anew.
DRAWS = itertools.count()


@loom.workflow(name="determinism_Counter")
class CounterWorkflow(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step(name="draw")
    async def draw(self, ctx: loom.WorkflowContext[dict[str, Any], dict[str, Any]]) -> None:
        value = next(DRAWS)
        await ctx.state.set("r", value)
        await ctx.sleep(seconds=0.3)
        await ctx.state.set("r2", value)


@loom.activity(name="determinism_clock")
async def read_clock() -> dict[str, float]:
    await anyio.sleep(0.2)
    return {"time": time.time(), "random": random.random()}


@loom.workflow(name="determinism_Sources")
class SourcesWorkflow(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step(name="draw")
    async def draw(self, ctx: loom.WorkflowContext[dict[str, Any], dict[str, Any]]) -> None:
        drawn = {
            "random": random.random(),
            "randint": random.randint(1, 10**9),
            "choice": random.choice("abcdefghij"),
            "uuid": str(uuid.uuid4()),
            "time": time.time(),
            "time_ns": time.time_ns(),
            "ctx_random": ctx.random().random(),
            "ctx_uuid": str(ctx.uuid4()),
            "now": ctx.now().timestamp(),
        }
        await ctx.state.set("first", drawn)
        await ctx.sleep(seconds=0.3)
        await ctx.state.set("again", drawn)
        await ctx.state.set("activity", await ctx.activity(read_clock))


async def history_has_key(handle: loom.WorkflowHandle, key: str) -> None:
    with anyio.fail_after(10):
        while not any(
            e.type == "STATE_SET" and e.data["key"] == key for e in await handle.history()
        ):
            await anyio.sleep(0.02)


async def test_a_state_value_computed_differently_on_replay_fails_the_workflow(
    client: loom.Client, redis_url: str, namespace: str
) -> None:
    """The issue's case: the worker that set "r" stops during the sleep, and the one that
    replays the history draws another value: not a silent divergence but an error that
    names the step, the key, the seq and both values."""
    async with running_worker(redis_url, namespace):
        handle = await CounterWorkflow.start({}, workflow_id="determinism-counter")
        await history_has_key(handle, "r")
    recorded = next(e for e in await handle.history() if e.type == "STATE_SET")
    next(DRAWS)  # what a fresh process would not have drawn the same either

    async with running_worker(redis_url, namespace):
        with pytest.raises(loom.NonDeterministicWorkflowError) as caught:
            await handle.result(timeout=10)
    message = str(caught.value)
    assert "'determinism-counter'" in message
    assert "step 'draw'" in message
    assert f"seq {recorded.seq}" in message
    assert f"history has STATE_SET(r) with value {recorded.data['value']!r}" in message
    assert "the code did STATE_SET(r) with value " in message
    assert "ctx.random()" in message
    assert await handle.status() == "FAILED"
    assert [e.data["key"] for e in await handle.history() if e.type == "STATE_SET"] == ["r"]


async def test_random_uuid_and_time_in_workflow_code_replay_as_they_ran(
    client: loom.Client, redis_url: str, namespace: str
) -> None:
    async with running_worker(redis_url, namespace):
        first = await SourcesWorkflow.start({}, workflow_id="determinism-sources-1")
        other = await SourcesWorkflow.start({}, workflow_id="determinism-sources-2")
        await history_has_key(first, "first")
    # A worker with none of these instances replays their histories.
    async with running_worker(redis_url, namespace):
        result = await first.result(timeout=10)
        other_result = await other.result(timeout=10)

    recorded = next(
        e.data["value"]
        for e in await first.history()
        if e.type == "STATE_SET" and e.data["key"] == "first"
    )
    assert result["first"] == recorded
    assert result["again"] == recorded
    drawn = result["first"]
    # The clock inside workflow code is the workflow's time.
    assert drawn["time"] == drawn["now"]
    assert drawn["time_ns"] == round(drawn["now"] * 1e9)
    assert uuid.UUID(drawn["uuid"]).version == 4
    assert uuid.UUID(drawn["ctx_uuid"]).version == 4
    # Each workflow has its own seed.
    for key in ("random", "randint", "uuid", "ctx_random", "ctx_uuid"):
        assert other_result["first"][key] != drawn[key], key
    # An activity reads the real clock: it ran after the workflow task, and slept first.
    assert result["activity"]["time"] >= drawn["now"] + 0.2


async def test_the_stand_ins_are_the_originals_outside_workflow_code() -> None:
    random.seed(1234)
    expected = random.random()
    random.seed(1234)
    assert random.random() == expected
    before = dt.datetime.now(dt.UTC).timestamp()
    assert before - 1 <= time.time() <= before + 60
    assert uuid.uuid4() != uuid.uuid4()


def define_workflow_reading(clock: str) -> None:
    """Define a workflow whose step calls one of datetime's clock reads."""
    namespace: dict[str, Any] = {
        "__name__": "clock_module",
        "loom": loom,
        "dt": dt,
        "datetime": dt.datetime,
    }
    source = f"""
@loom.activity(name="determinism_fine_{clock}")
async def fine() -> float:  # an activity may read the clock
    return datetime.now(dt.UTC).timestamp()

def helper() -> object:
    return {clock}

@loom.workflow(name="determinism_Clock_{clock}")
class ClockWorkflow(loom.Workflow[dict, dict]):
    @loom.step(name="stamp")
    async def stamp(self, ctx) -> None:
        await ctx.activity(fine)
        await ctx.state.set("at", str(helper()))
"""
    with isolated_registry():
        exec(compile(source, f"clock_{clock}.py", "exec"), namespace)


@pytest.mark.parametrize(
    "clock, call",
    [
        ("datetime.now(dt.UTC)", "datetime.now"),
        ("dt.datetime.utcnow()", "datetime.utcnow"),
        ("dt.date.today()", "date.today"),
        ("[datetime.now() for _ in range(2)]", "datetime.now"),
    ],
)
def test_a_clock_read_in_workflow_code_is_refused_at_definition(clock: str, call: str) -> None:
    with pytest.raises(loom.WorkflowDefinitionError) as caught:
        define_workflow_reading(clock)
    message = str(caught.value)
    assert f"step 'stamp' calls {call}() (through helper()) at clock_" in message
    assert "use ctx.now()" in message


def test_workflow_code_that_uses_ctx_now_is_accepted() -> None:
    define_workflow_reading("0")
