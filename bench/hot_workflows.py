"""The workflows of bench/hot_history.py: histories that move while their tasks run."""

from __future__ import annotations

import asyncio
from typing import Any

import loom_redis as loom


@loom.activity(name="bench_hot_echo")
async def echo(value: int) -> int:
    return value


@loom.workflow(name="bench_hot_Signals")
class Signals(loom.Workflow[dict[str, Any], dict[str, Any]]):
    """Waits for `count` signals named tick, one after another."""

    @loom.step(name="receive")
    async def receive(self, ctx: loom.WorkflowContext[dict[str, Any], dict[str, Any]]) -> None:
        received = 0
        for _ in range(int(ctx.input["count"])):
            await ctx.wait_for_signal("tick")
            received += 1
        await ctx.state.set("received", received)


@loom.workflow(name="bench_hot_Gather")
class Gather(loom.Workflow[dict[str, Any], dict[str, Any]]):
    """One step that gathers `count` activities."""

    @loom.step(name="gather")
    async def gather(self, ctx: loom.WorkflowContext[dict[str, Any], dict[str, Any]]) -> None:
        count = int(ctx.input["count"])
        results = await asyncio.gather(*[ctx.activity(echo, n) for n in range(count)])
        await ctx.state.set("total", sum(results))
