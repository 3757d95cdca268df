"""The one module a "partial" worker subprocess imports (tests/worker/test_unregistered_names.py):
a workflow whose activity, called by name, this module does not define."""

from __future__ import annotations

from typing import Any

import loom_redis as loom

REMOTE_ACTIVITY = "partial_remote"


@loom.workflow(name="partial_Split")
class SplitWorkflow(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step(name="call")
    async def call(self, ctx: loom.WorkflowContext[dict[str, Any], dict[str, Any]]) -> None:
        await ctx.state.set("answer", await ctx.activity(REMOTE_ACTIVITY, ctx.input["n"]))
