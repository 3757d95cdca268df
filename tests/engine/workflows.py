"""The workflows whose recorded histories tests/engine replays (record_histories.py runs
them on a real server; the tests replay what it wrote against this same code)."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import loom_redis as loom

Ctx = loom.WorkflowContext[dict[str, Any], dict[str, Any]]


@loom.activity(name="engine_double")
async def double(n: int) -> int:
    return 2 * n


@loom.activity(name="engine_greet")
async def greet(name: str) -> str:
    return f"hello {name}"


@loom.activity(name="engine_refuse", retry_count=2, retry_backoff_seconds=0.01)
async def refuse(reason: str) -> None:
    raise RuntimeError(reason)


@loom.workflow(name="engine_Sequential")
class Sequential(loom.Workflow[dict[str, Any], dict[str, Any]]):
    """Two activities one after the other, the second fed the first's result."""

    @loom.step(name="double")
    async def double_it(self, ctx: Ctx) -> None:
        await ctx.state.set("doubled", await ctx.activity(double, ctx.input["n"]))

    @loom.step(name="greet")
    async def greet_it(self, ctx: Ctx) -> None:
        await ctx.state.set("greeting", await ctx.activity(greet, str(ctx.state["doubled"])))


@loom.workflow(name="engine_Gather")
class Gather(loom.Workflow[dict[str, Any], dict[str, Any]]):
    """Activities run in parallel (asyncio.gather), then one more."""

    @loom.step(name="fan_out")
    async def fan_out(self, ctx: Ctx) -> None:
        doubled = await asyncio.gather(*(ctx.activity(double, n) for n in ctx.input["values"]))
        await ctx.state.set("doubled", list(doubled))
        await ctx.state.set("total", await ctx.activity(double, sum(doubled)))


@loom.workflow(name="engine_Timers")
class Timers(loom.Workflow[dict[str, Any], dict[str, Any]]):
    """Durable sleeps, one beside an activity; the workflow's clock read after each."""

    # What changed code may change (tests/engine/test_mismatch.py).
    nap_seconds = 0.05
    double = staticmethod(double)

    @loom.step(name="nap")
    async def nap(self, ctx: Ctx) -> None:
        await ctx.sleep(seconds=self.nap_seconds)
        await ctx.state.set("woke", ctx.now().isoformat())

    @loom.step(name="nap_and_work")
    async def nap_and_work(self, ctx: Ctx) -> None:
        nap = ctx.sleep(seconds=self.nap_seconds)
        _, doubled = await asyncio.gather(nap, ctx.activity(self.double, 21))
        await ctx.state.set("doubled", doubled)
        await ctx.state.set("woke_again", ctx.now().isoformat())


@loom.workflow(name="engine_Signals")
class Signals(loom.Workflow[dict[str, Any], dict[str, Any]]):
    """Signals sent before the code waits (buffered), a wait whose timeout fires, and one
    that a signal ends before its timeout (its timer cancelled)."""

    @loom.step(name="collect")
    async def collect(self, ctx: Ctx) -> None:
        approvals = [await ctx.wait_for_signal("approve") for _ in range(2)]
        await ctx.state.set("approvals", approvals)

    @loom.step(name="deadline")
    async def deadline(self, ctx: Ctx) -> None:
        try:
            await ctx.wait_for_signal("late", timeout=0.05)
        except loom.SignalTimeoutError:
            await ctx.state.set("late", "timed out")

    @loom.step(name="in_time")
    async def in_time(self, ctx: Ctx) -> None:
        await ctx.state.set("note", await ctx.wait_for_signal("note", timeout=3600))


@loom.workflow(name="engine_State")
class StateChanges(loom.Workflow[dict[str, Any], dict[str, Any]]):
    """Every way to change state: set, update and a batch, over an initial state."""

    @loom.step(name="change")
    async def change(self, ctx: Ctx) -> None:
        await ctx.state.set("count", 1)
        await ctx.state.update(lambda state: {**state, "count": state["count"] + 1, "tags": []})
        async with ctx.state.batch() as state:
            await state.set("tags", ["a", "b"])
            await state.set("count", 3)


@loom.workflow(name="engine_ActivityFails")
class ActivityFails(loom.Workflow[dict[str, Any], dict[str, Any]]):
    """An activity that fails every attempt (three, with its two retries) fails the
    workflow."""

    @loom.step(name="work")
    async def work(self, ctx: Ctx) -> None:
        await ctx.state.set("started", True)
        await ctx.activity(refuse, ctx.input["reason"])


@loom.workflow(name="engine_Fails")
class Fails(loom.Workflow[dict[str, Any], dict[str, Any]]):
    """Workflow code that raises after an activity."""

    @loom.step(name="check")
    async def check(self, ctx: Ctx) -> None:
        doubled = await ctx.activity(double, ctx.input["n"])
        raise ValueError(f"{doubled} is too large")


@loom.workflow(name="engine_Cancellable")
class Cancellable(loom.Workflow[dict[str, Any], dict[str, Any]]):
    """An activity, then a long sleep that a cancel request ends."""

    @loom.step(name="prepare")
    async def prepare(self, ctx: Ctx) -> None:
        await ctx.state.set("doubled", await ctx.activity(double, 1))

    @loom.step(name="wait")
    async def wait(self, ctx: Ctx) -> None:
        await ctx.sleep(seconds=3600)


@loom.workflow(name="engine_Random")
class Random(loom.Workflow[dict[str, Any], dict[str, Any]]):
    """Random values drawn as workflow code may: from ctx.random(), ctx.uuid4() and the
    random module (which draws from ctx.random() inside workflow code)."""

    @loom.step(name="draw")
    async def draw(self, ctx: Ctx) -> None:
        await ctx.state.set("number", ctx.random().random())
        await ctx.state.set("uuid", str(ctx.uuid4()))
        await ctx.state.set("dice", random.randint(1, 6))
        await ctx.state.set("doubled", await ctx.activity(double, ctx.random().randint(1, 99)))


@loom.workflow(name="engine_Ticks")
class Ticks(loom.Workflow[dict[str, Any], dict[str, Any]]):
    """Records `count` tick signals one after another, echoing every other one through an
    activity (ticks that arrive while a task runs are left to the next: `skip`)."""

    @loom.step(name="count")
    async def count(self, ctx: Ctx) -> None:
        for n in range(int(ctx.input["count"])):
            tick = await ctx.wait_for_signal("tick")
            if n % 2 == 0:
                tick = await ctx.activity(double, tick)
            await ctx.state.set("last", tick)
