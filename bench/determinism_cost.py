"""What making workflow code deterministic costs, side by side in one run (no Redis).

1. A workflow task's activation (a one-step workflow of five activities, fed its five
   outcomes one task at a time) as the engine runs it, and with a profile hook that would
   catch `datetime.now()` calls while the code runs (the alternative to refusing them at
   definition, see loom_redis/determinism.py).
2. One call of `random.random()`, `uuid.uuid4()` and `time.time()` outside workflow code,
   original and stand-in (what activities and the worker pay for the stand-ins).

    .venv/bin/python -m bench.determinism_cost
"""

from __future__ import annotations

import datetime
import random
import sys
import time
import timeit
import uuid
from collections.abc import Callable
from types import FrameType
from typing import Any

import loom_redis as loom
from loom_redis.engine import WorkflowInstance
from loom_redis.events import Event, EventType

ROUNDS = 2000


@loom.activity(name="bench_determinism_echo")
async def echo(value: int) -> int:
    return value


@loom.workflow(name="bench_determinism_Five")
class FiveActivities(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step(name="run")
    async def run(self, ctx: loom.WorkflowContext[dict[str, Any], dict[str, Any]]) -> None:
        for n in range(5):
            await ctx.state.set(f"r{n}", await ctx.activity(echo, n))


def _clock_guard(frame: FrameType, event: str, arg: Any) -> None:
    if event == "c_call" and getattr(arg, "__self__", None) in (datetime.datetime, datetime.date):
        raise RuntimeError("workflow code must not read the clock")


def run_workflow() -> None:
    definition = FiveActivities.__loom_workflow__  # type: ignore[attr-defined]
    instance = WorkflowInstance(definition, "bench")  # type: ignore[abstract]
    started = Event("1-0", EventType.WORKFLOW_STARTED, 0, 1000, {"input": {}, "seed": 1})
    activation = instance.apply([started], 1000)
    for n in range(5):
        [seq] = [c.seq for c in activation.commands if c.type == EventType.ACTIVITY_SCHEDULED]
        outcome = Event(f"{n + 2}-0", EventType.ACTIVITY_COMPLETED, seq, 1000, {"result": n})
        activation = instance.apply([outcome], 1000)


def per_activation(guarded: bool) -> float:
    original = WorkflowInstance._run_until_blocked

    def with_guard(self: WorkflowInstance) -> None:
        sys.setprofile(_clock_guard)
        try:
            original(self)
        finally:
            sys.setprofile(None)

    WorkflowInstance._run_until_blocked = with_guard if guarded else original  # type: ignore[method-assign]
    try:
        seconds = min(timeit.repeat(run_workflow, number=ROUNDS // 10, repeat=5))
    finally:
        WorkflowInstance._run_until_blocked = original  # type: ignore[method-assign]
    return seconds / (ROUNDS // 10) / 6 * 1e6


def per_call(fn: Callable[[], object]) -> float:
    return min(timeit.repeat(fn, number=100_000, repeat=5)) / 100_000 * 1e9


def main() -> None:
    plain = per_activation(False)
    guarded = per_activation(True)
    print("workflow task activation (us)   as built   with a clock-call profile hook")
    print(f"                                {plain:8.1f}   {guarded:8.1f} ({guarded / plain:.2f}x)")
    print("one call outside workflow code (ns)   original   stand-in")
    for name, stand_in, original in (
        ("random.random()", random.random, random.random.__wrapped__),  # type: ignore[attr-defined]
        ("uuid.uuid4()", uuid.uuid4, uuid.uuid4.__wrapped__),  # type: ignore[attr-defined]
        ("time.time()", time.time, time.time.__wrapped__),  # type: ignore[attr-defined]
    ):
        print(f"  {name:<34} {per_call(original):8.0f}   {per_call(stand_in):8.0f}")


if __name__ == "__main__":
    main()
