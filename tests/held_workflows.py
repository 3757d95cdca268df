"""A workflow whose one activity holds its task until the test opens the gate: a
backlog of running activities, for the tests of what operators watch."""

from __future__ import annotations

import anyio

import loom_redis as loom


class Gate:
    """What the held activities wait for; each test makes a new one (`reset`)."""

    def __init__(self) -> None:
        self.opened = anyio.Event()

    def reset(self) -> None:
        self.opened = anyio.Event()

    def open(self) -> None:
        self.opened.set()


GATE = Gate()


@loom.activity(name="held_activity")
async def held() -> str:
    await GATE.opened.wait()
    return "released"


@loom.workflow(name="held_Held")
class HeldWorkflow(loom.Workflow[dict, dict]):
    @loom.step()
    async def hold(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        await ctx.state.set("said", await ctx.activity(held))
