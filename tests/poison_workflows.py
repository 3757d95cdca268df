"""Workflows for the poison-task test: one activity kills its worker process every time."""

from __future__ import annotations

import os

import loom_redis as loom


@loom.activity(name="poison_kill_my_process")
async def kill_my_process() -> None:
    os._exit(17)  # what a segfaulting C extension or the OOM killer does to a worker


@loom.activity(name="poison_harmless")
async def harmless(value: int) -> int:
    return value * 10


@loom.workflow(name="PoisonWorkflow")
class Poisoned(loom.Workflow[dict, dict]):
    @loom.step()
    async def die(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        await ctx.activity(kill_my_process)


@loom.workflow(name="PoisonBystander")
class Bystander(loom.Workflow[dict, dict]):
    @loom.step()
    async def work(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        await ctx.state.set("value", await ctx.activity(harmless, ctx.input["value"]))
