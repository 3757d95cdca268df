"""Workflows of the chaos harness (bench/chaos.py), run by worker SUBPROCESSES.

Each workflow runs K sequential activities, a short durable timer and waits for a
signal the harness sends. Every activity execution appends a "begin" line when it
starts and an "end" line when it has run to its end to the side log named by
$LOOM_CHAOS_LOG, so the harness can count executions against recorded completions.
"""

from __future__ import annotations

import os
import time
from typing import Any

import anyio

import loom_redis as loom

LOG_ENV = "LOOM_CHAOS_LOG"
WORKFLOW_NAME = "chaos_Workflow"
SIGNAL = "go"


def log_line(kind: str, workflow_id: str, index: int) -> None:
    """One side-log line `<unix time> <kind> <workflow id> <activity index> <pid>`.

    A single write on an O_APPEND descriptor: lines of concurrent processes never mix.
    """
    path = os.environ.get(LOG_ENV)
    if not path:
        return
    line = f"{time.time():.6f} {kind} {workflow_id} {index} {os.getpid()}\n".encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def step_value(value: int, index: int) -> int:
    """What activity `index` computes from the previous value (the workflow's input n)."""
    return (value * 31 + index + 7) % 1_000_003


def signal_payload(workflow_id: str) -> str:
    return f"go:{workflow_id}"


def expected_result(workflow_id: str, n: int, activities: int) -> dict[str, Any]:
    """The final state (the workflow's result) of workflow `workflow_id` with input n."""
    state: dict[str, Any] = {}
    value = n
    for index in range(activities):
        value = step_value(value, index)
        state[f"a{index}"] = value
    state["slept"] = True
    state["signal"] = signal_payload(workflow_id)
    return state


@loom.activity(name="chaos_step")
async def chaos_step(workflow_id: str, index: int, value: int, seconds: float) -> int:
    log_line("begin", workflow_id, index)
    await anyio.sleep(seconds)
    log_line("end", workflow_id, index)
    return step_value(value, index)


@loom.workflow(name=WORKFLOW_NAME)
class ChaosWorkflow(loom.Workflow[dict[str, Any], dict[str, Any]]):
    """K activities (one STATE_SET each), a timer (one STATE_UPDATE), a signal (STATE_SET).

    Input: {"n": int, "activities": K, "seconds": activity duration, "sleep": timer}.
    """

    @loom.step()
    async def work(self, ctx: loom.WorkflowContext[dict[str, Any], dict[str, Any]]) -> None:
        value = int(ctx.input["n"])
        for index in range(int(ctx.input["activities"])):
            value = await ctx.activity(
                chaos_step, ctx.workflow_id, index, value, ctx.input["seconds"]
            )
            await ctx.state.set(f"a{index}", value)

    @loom.step()
    async def pause(self, ctx: loom.WorkflowContext[dict[str, Any], dict[str, Any]]) -> None:
        await ctx.sleep(seconds=ctx.input["sleep"])
        await ctx.state.update(lambda state: {**state, "slept": True})

    @loom.step()
    async def wait(self, ctx: loom.WorkflowContext[dict[str, Any], dict[str, Any]]) -> None:
        await ctx.state.set("signal", await ctx.wait_for_signal(SIGNAL))


# The step index (1-based, as the meta's `step` field holds it) of the signal wait.
WAIT_STEP = 3
