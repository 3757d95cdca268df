"""Workflows run by a worker SUBPROCESS in tests/worker/test_crash_recovery.py.

Every activity appends one line to the side log named by $LOOM_CRASH_LOG each time
it runs to the end (so the test can count executions against recorded completions),
and a "begin" line as it starts.
"""

from __future__ import annotations

import os

import anyio

import loom_redis as loom

LOG_ENV = "LOOM_CRASH_LOG"


def log_line(line: str) -> None:
    path = os.environ.get(LOG_ENV)
    if path:
        # O_APPEND: one small write per line, so lines of concurrent processes never mix.
        with open(path, "a", encoding="utf-8") as log:
            log.write(line + "\n")


async def _run(name: str, workflow_id: str, seconds: float) -> None:
    log_line(f"begin {name} {workflow_id} {os.getpid()}")
    await anyio.sleep(seconds)
    log_line(f"end {name} {workflow_id} {os.getpid()}")


@loom.activity(name="crash_add_one")
async def add_one(workflow_id: str, value: int, seconds: float) -> int:
    await _run("crash_add_one", workflow_id, seconds)
    return value + 1


@loom.activity(name="crash_double")
async def double(workflow_id: str, value: int, seconds: float) -> int:
    await _run("crash_double", workflow_id, seconds)
    return value * 2


@loom.activity(name="crash_minus_three")
async def minus_three(workflow_id: str, value: int, seconds: float) -> int:
    await _run("crash_minus_three", workflow_id, seconds)
    return value - 3


def expected_result(n: int) -> dict[str, int]:
    a = n + 1
    b = a * 2
    return {"a": a, "b": b, "c": b - 3}


@loom.workflow(name="crash_Pipeline")
class PipelineWorkflow(loom.Workflow[dict, dict]):
    """Three sequential activities, each sleeping `seconds`."""

    @loom.step()
    async def first(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        value = await ctx.activity(add_one, ctx.workflow_id, ctx.input["n"], ctx.input["seconds"])
        await ctx.state.set("a", value)

    @loom.step()
    async def second(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        value = await ctx.activity(double, ctx.workflow_id, ctx.state["a"], ctx.input["seconds"])
        await ctx.state.set("b", value)

    @loom.step()
    async def third(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        value = await ctx.activity(
            minus_three, ctx.workflow_id, ctx.state["b"], ctx.input["seconds"]
        )
        await ctx.state.set("c", value)


@loom.activity(name="crash_long")
async def long_activity(workflow_id: str, seconds: float) -> str:
    await _run("crash_long", workflow_id, seconds)
    return "done"


@loom.workflow(name="crash_Long")
class LongWorkflow(loom.Workflow[dict, dict]):
    """One long activity: SIGTERM while it runs must let it finish and be recorded."""

    @loom.step()
    async def run(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        await ctx.state.set(
            "outcome", await ctx.activity(long_activity, ctx.workflow_id, ctx.input["seconds"])
        )
