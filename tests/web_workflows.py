"""Workflows the dashboard's tests run: one that waits for a signal between two steps
that each run an activity, and one that sleeps."""

from __future__ import annotations

from typing import Any

import loom_redis as loom


@loom.activity(name="web_prepare")
async def prepare(item: str) -> str:
    return f"prepared {item}"


@loom.activity(name="web_ship")
async def ship(item: str) -> str:
    return f"shipped {item}"


@loom.workflow(
    name="web_Approval",
    version="2.0",
    description="Prepare, wait for a go-ahead, ship.",
    agent="Quill",
)
class ApprovalWorkflow(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step(name="prepare", description="getting it ready")
    async def prepare_step(self, ctx: loom.WorkflowContext[dict[str, Any], dict[str, Any]]) -> None:
        await ctx.state.set("prepared", await ctx.activity(prepare, ctx.input["item"]))

    @loom.step(name="await_go", description="waiting for the go-ahead")
    async def wait_step(self, ctx: loom.WorkflowContext[dict[str, Any], dict[str, Any]]) -> None:
        await ctx.state.set("go", await ctx.wait_for_signal("go"))

    @loom.step(name="ship", description="sending it")
    async def ship_step(self, ctx: loom.WorkflowContext[dict[str, Any], dict[str, Any]]) -> None:
        await ctx.state.set("shipped", await ctx.activity(ship, ctx.input["item"]))


@loom.workflow(name="web_Sleeper", description="Sleeps, then ends.")
class SleeperWorkflow(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step(name="nap", description="sleeping")
    async def nap(self, ctx: loom.WorkflowContext[dict[str, Any], dict[str, Any]]) -> None:
        await ctx.sleep(ctx.input["seconds"])
        await ctx.state.set("woke", True)


@loom.workflow(name="web_Chatty", description="Writes its state many times over.")
class ChattyWorkflow(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step(name="count", description="counting")
    async def count(self, ctx: loom.WorkflowContext[dict[str, Any], dict[str, Any]]) -> None:
        for number in range(ctx.input["events"]):
            await ctx.state.set("n", number)
            if number % 5000 == 4999:  # a workflow task writes at most 20,000 commands
                await ctx.sleep(0.01)


@loom.workflow(name="web_Failing", description="Fails in its only step.")
class FailingWorkflow(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step(name="break", description="breaking")
    async def breaks(self, ctx: loom.WorkflowContext[dict[str, Any], dict[str, Any]]) -> None:
        raise ValueError("broken on purpose")


flaky_calls: list[str] = []


@loom.activity(name="web_flaky", retry_count=1, retry_backoff_seconds=0.05)
async def flaky(key: str) -> int:
    """Fails its first call for each key, in this process."""
    flaky_calls.append(key)
    if flaky_calls.count(key) == 1:
        raise RuntimeError("first call fails")
    return flaky_calls.count(key)


@loom.workflow(name="web_Retrying", description="An activity that succeeds on retry.")
class RetryingWorkflow(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step(name="try")
    async def attempt(self, ctx: loom.WorkflowContext[dict[str, Any], dict[str, Any]]) -> None:
        await ctx.state.set("calls", await ctx.activity(flaky, ctx.input["key"]))
