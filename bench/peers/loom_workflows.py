"""The benchmark's workflows, written once against Loom's API: the seed (`loom-core`,
in its own virtualenv) and loom-redis run this same module, which is the drop-in claim
in practice."""

from __future__ import annotations

import time

try:
    import loom  # loom-core: only the seed's virtualenv has it
except ImportError:
    import loom_redis as loom  # type: ignore[no-redef]

from bench.peers.common import record_done


@loom.activity(name="bench_inc")
async def bench_inc(value: int) -> int:
    return value + 1


@loom.activity(name="bench_c_step")
async def bench_c_step(index: int) -> int:
    # Keyed by the time too: the seed runs every repeated call with the first one's
    # arguments (it finds an activity's arguments by name), so the index may repeat.
    record_done(f"c{index:06d}-{time.time_ns()}")
    return index + 1


# The seed finds a workflow class by its name in the module: name == class name.
@loom.workflow(name="ChainWorkflow", version="1.0.0")
class ChainWorkflow(loom.Workflow[dict, dict]):
    """`steps` sequential activities, then one state key: the job of workloads A, B, D."""

    @loom.step(name="run")
    async def run(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        value = 0
        for _ in range(int(ctx.input["steps"])):
            value = await ctx.activity(bench_inc, value)
        await ctx.state.set("value", value)


@loom.workflow(name="LongWorkflow", version="1.0.0")
class LongWorkflow(loom.Workflow[dict, dict]):
    """Workload C: `count` sequential activities in one workflow."""

    @loom.step(name="run")
    async def run(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        value = 0
        for index in range(int(ctx.input["count"])):
            value = await ctx.activity(bench_c_step, index)
        await ctx.state.set("value", value)
