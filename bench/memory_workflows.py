"""The workflows of bench/memory.py: histories of a chosen length, closed or left open."""

from __future__ import annotations

from typing import Any

import loom_redis as loom


@loom.activity(name="bench_mem_inc")
async def inc(value: int) -> int:
    return value + 1


@loom.workflow(name="bench_mem_Chain")
class Chain(loom.Workflow[dict[str, Any], dict[str, Any]]):
    """`activities` sequential activities, then (with `wait`) a wait for the signal "go",
    then one state key."""

    @loom.step(name="run")
    async def run(self, ctx: loom.WorkflowContext[dict[str, Any], dict[str, Any]]) -> None:
        value = 0
        for _ in range(int(ctx.input["activities"])):
            value = await ctx.activity(inc, value)
        if ctx.input.get("wait"):
            await ctx.wait_for_signal("go")
        await ctx.state.set("value", value)
