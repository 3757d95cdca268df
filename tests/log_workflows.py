"""Workflows a worker SUBPROCESS runs in tests/worker/test_json_logs.py: their code logs,
through the workflow's logger and an activity's own, so the test can read what each
JSON line carries."""

from __future__ import annotations

import logging

import loom_redis as loom

app_logger = logging.getLogger("logs_app")


@loom.activity(name="logs_flaky", retry_count=1, retry_backoff_seconds=0.05)
async def flaky() -> str:
    app_logger.warning("calling the flaky service")
    raise RuntimeError("the flaky service failed")


@loom.activity(name="logs_steady")
async def steady() -> str:
    app_logger.warning("calling the steady service")
    return "steady"


@loom.workflow(name="logs_Greet")
class Greet(loom.Workflow[dict, dict]):
    @loom.step()
    async def first(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        ctx.logger.info("starting to greet")
        await ctx.state.set("steady", await ctx.activity(steady))

    @loom.step()
    async def second(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        ctx.logger.info("greeting again")
        try:
            await ctx.activity(flaky)
        except loom.ActivityFailedError:
            await ctx.state.set("flaky", "failed")
