"""The benchmark's workflows, written once against Loom's API: the seed (`loom-core`,
in its own virtualenv) and loom-redis run this same module, which is the drop-in claim
in practice."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the same public API either way: loom-redis's is typed
    import loom_redis as loom
else:
    try:
        import loom  # loom-core: only the seed's virtualenv has it
    except ImportError:
        import loom_redis as loom

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
class ChainWorkflow(loom.Workflow[dict[str, Any], dict[str, Any]]):
    """`steps` sequential activities, then one state key: the job of workloads A, B, D."""

    @loom.step(name="run")
    async def run(self, ctx: loom.WorkflowContext[dict[str, Any], dict[str, Any]]) -> None:
        value = 0
        for _ in range(int(ctx.input["steps"])):
            value = await ctx.activity(bench_inc, value)
        await ctx.state.set("value", value)


@loom.activity(name="bench_probe_step")
async def bench_probe_step(index: int) -> int:
    record_done(f"p{index:06d}-{time.time_ns()}")
    return index + 1


@loom.workflow(name="LongWorkflow", version="1.0.0")
class LongWorkflow(loom.Workflow[dict[str, Any], dict[str, Any]]):
    """Workload C: `count` sequential activities in one workflow; with `pause_at`, it
    waits for the signal "go" before step `pause_at` (loom-redis's paired C)."""

    @loom.step(name="run")
    async def run(self, ctx: loom.WorkflowContext[dict[str, Any], dict[str, Any]]) -> None:
        value = 0
        for index in range(int(ctx.input["count"])):
            if index == ctx.input.get("pause_at"):
                await ctx.wait_for_signal("go")
            value = await ctx.activity(bench_c_step, index)
        await ctx.state.set("value", value)


@loom.workflow(name="ProbeWorkflow", version="1.0.0")
class ProbeWorkflow(loom.Workflow[dict[str, Any], dict[str, Any]]):
    """A new workflow of `count` steps, run beside LongWorkflow's last steps."""

    @loom.step(name="run")
    async def run(self, ctx: loom.WorkflowContext[dict[str, Any], dict[str, Any]]) -> None:
        for index in range(int(ctx.input["count"])):
            await ctx.activity(bench_probe_step, index)
