"""Changed workflow code replayed against a recorded history: a change the history cannot
replay raises NonDeterministicWorkflowError naming the workflow, the step, the sequence
number, what history has and what the code did; a change it can replay does not."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest

import loom_redis as loom
from loom_redis.definitions import isolated_registry, workflow_definition
from loom_redis.engine import Activation, WorkflowInstance
from loom_redis.engine.mismatch import VALUE_CAUSE
from loom_redis.errors import NonDeterministicWorkflowError
from loom_redis.events import Event, EventType, Status

from . import workflows
from .recorded import load
from .workflows import Ctx, double, greet

Workflow = type[loom.Workflow[Any, Any]]
CHANGED = "the workflow code changed in a way its history cannot replay"


def replay(workflow: Workflow, name: str, events: list[Event] | None = None) -> Activation:
    """`name`'s recorded history (or `events`) replayed with `workflow`'s code."""
    recorded = load(name)
    definition = workflow_definition(workflow)
    instance = WorkflowInstance(definition, recorded.workflow_id)  # type: ignore[abstract]
    return instance.apply(recorded.events if events is None else events, 0)


def mismatch(workflow: Workflow, name: str, events: list[Event] | None = None) -> str:
    with pytest.raises(NonDeterministicWorkflowError) as raised:
        replay(workflow, name, events)
    return str(raised.value)


@pytest.fixture
def changed() -> Iterator[None]:
    """engine_Sequential's name free for changed code (its history is sequential.json:
    1 STEP_STARTED(double), 2 ACTIVITY_SCHEDULED(engine_double) [21], 3 STATE_SET(doubled),
    4 STEP_STARTED(greet), 5 ACTIVITY_SCHEDULED(engine_greet) ["42"], 6 STATE_SET(greeting),
    7 WORKFLOW_COMPLETED)."""
    with isolated_registry(without=["engine_Sequential"]):
        yield


def calls_another_activity() -> Workflow:
    @loom.workflow(name="engine_Sequential")
    class Sequential(workflows.Sequential):
        async def double_it(self, ctx: Ctx) -> None:
            await ctx.state.set("doubled", await ctx.activity(greet, "21"))

    return Sequential


def passes_another_value() -> Workflow:
    @loom.workflow(name="engine_Sequential")
    class Sequential(workflows.Sequential):
        async def double_it(self, ctx: Ctx) -> None:
            await ctx.state.set("doubled", await ctx.activity(double, ctx.input["n"] + 1))

    return Sequential


def sets_another_value() -> Workflow:
    @loom.workflow(name="engine_Sequential")
    class Sequential(workflows.Sequential):
        async def double_it(self, ctx: Ctx) -> None:
            await ctx.state.set("doubled", await ctx.activity(double, ctx.input["n"]) + 1)

    return Sequential


def no_longer_sets_state() -> Workflow:
    @loom.workflow(name="engine_Sequential")
    class Sequential(workflows.Sequential):
        async def greet_it(self, ctx: Ctx) -> None:
            await ctx.activity(greet, "42")

    return Sequential


def adds_a_step() -> Workflow:
    @loom.workflow(name="engine_Sequential")
    class Sequential(workflows.Sequential):
        @loom.step(name="thank")
        async def thank(self, ctx: Ctx) -> None:
            await ctx.state.set("thanked", True)

    return Sequential


def removes_the_last_step() -> Workflow:
    @loom.workflow(name="engine_Sequential")
    class Sequential(loom.Workflow[dict[str, Any], dict[str, Any]]):
        @loom.step(name="double")
        async def double_it(self, ctx: Ctx) -> None:
            await ctx.state.set("doubled", await ctx.activity(double, ctx.input["n"]))

    return Sequential


def removes_the_first_step() -> Workflow:
    @loom.workflow(name="engine_Sequential")
    class Sequential(loom.Workflow[dict[str, Any], dict[str, Any]]):
        @loom.step(name="greet")
        async def greet_it(self, ctx: Ctx) -> None:
            await ctx.state.set("greeting", await ctx.activity(greet, "42"))

    return Sequential


# Each change to engine_Sequential, and what replaying its history then says after
# "workflow 'engine-sequential' (engine_Sequential): ".
CHANGES = [
    (
        calls_another_activity,
        "step 'double', seq 2: history has ACTIVITY_SCHEDULED(engine_double) but the code "
        f"did ACTIVITY_SCHEDULED(engine_greet); {CHANGED}",
    ),
    (
        passes_another_value,
        "step 'double', seq 2: history has ACTIVITY_SCHEDULED(engine_double) with args [21] "
        f"but the code did ACTIVITY_SCHEDULED(engine_double) with args [22]; {VALUE_CAUSE}",
    ),
    (
        sets_another_value,
        "step 'double', seq 3: history has STATE_SET(doubled) with value 42 but the code did "
        f"STATE_SET(doubled) with value 43; {VALUE_CAUSE}",
    ),
    (
        no_longer_sets_state,
        "step 'greet', seq 6: history has STATE_SET(greeting) but the code did "
        f"WORKFLOW_COMPLETED; {CHANGED}",
    ),
    (
        adds_a_step,
        "step 'thank', seq 7: history has WORKFLOW_COMPLETED but the code did "
        f"STEP_STARTED(thank); {CHANGED}",
    ),
    (
        removes_the_last_step,
        "step 'double', seq 4: history has STEP_STARTED(greet) but the code did "
        f"WORKFLOW_COMPLETED; {CHANGED}",
    ),
    (
        removes_the_first_step,
        "step 'greet', seq 1: history has STEP_STARTED(double) but the code did "
        f"STEP_STARTED(greet); {CHANGED}",
    ),
]


@pytest.mark.parametrize(("change", "says"), CHANGES, ids=[c.__name__ for c, _ in CHANGES])
def test_changed_code_is_named_by_step_seq_history_and_code(
    changed: None, change: Callable[[], Workflow], says: str
) -> None:
    message = mismatch(change(), "sequential")
    assert message == f"workflow 'engine-sequential' (engine_Sequential): {says}"


def test_changed_code_runs_where_its_history_has_not_reached(changed: None) -> None:
    """A change past the end of an open workflow's history is no mismatch: the next task
    runs the new code."""

    @loom.workflow(name="engine_Sequential")
    class Sequential(workflows.Sequential):
        async def greet_it(self, ctx: Ctx) -> None:
            await ctx.state.set("greeting", await ctx.activity(double, 1))

    second = load("sequential").tasks()[1]
    activation = replay(Sequential, "sequential", load("sequential").events[: second.seen])
    assert [c.describe() for c in activation.commands] == [
        "STATE_SET(doubled) (seq 3)",
        "STEP_STARTED(greet) (seq 4)",
        "ACTIVITY_SCHEDULED(engine_double) (seq 5)",
    ]
    assert activation.pending_activities == {5}


def test_a_changed_timer_duration_or_retry_option_replays() -> None:
    """Neither is compared: code may wait longer or retry more from some release on."""
    with isolated_registry(without=["engine_Timers", "engine_double"]):

        @loom.activity(name="engine_double", retry_count=5, timeout_seconds=3)
        async def patient_double(n: int) -> int:
            return 2 * n

        @loom.workflow(name="engine_Timers")
        class Timers(workflows.Timers):
            nap_seconds = 30.0
            double = staticmethod(patient_double)

        assert replay(Timers, "timers").status == Status.COMPLETED


def test_another_seed_draws_other_random_values() -> None:
    """The seed WORKFLOW_STARTED records makes ctx.random() and the random module draw the
    same numbers on replay; a history with another seed replays to other values."""
    recorded = load("random")
    assert replay(recorded.definition.cls, "random").status == Status.COMPLETED
    started = recorded.events[0]
    reseeded = replace(started, data={**started.data, "seed": started.data["seed"] + 1})
    message = mismatch(recorded.definition.cls, "random", [reseeded, *recorded.events[1:]])
    assert message.startswith(
        "workflow 'engine-random' (engine_Random): step 'draw', seq 2: history has "
        "STATE_SET(number) with value "
    )
    assert message.endswith(VALUE_CAUSE)


@pytest.mark.parametrize(
    ("name", "outcome", "says"),
    [
        (
            "timers",
            EventType.TIMER_FIRED,
            "workflow 'engine-timers' (engine_Timers): step 'nap', seq 99: history has "
            "TIMER_FIRED for seq 99 but the code did no such timer",
        ),
        (
            "sequential",
            EventType.ACTIVITY_COMPLETED,
            "workflow 'engine-sequential' (engine_Sequential): step 'double', seq 99: history "
            "has ACTIVITY_COMPLETED for seq 99 but the code did no activity with that seq",
        ),
    ],
)
def test_an_outcome_for_nothing_the_code_started(name: str, outcome: EventType, says: str) -> None:
    """A history edited by hand: its first `outcome` names seq 99, which no command has."""
    recorded = load(name)
    events = list(recorded.events)
    first = next(i for i, e in enumerate(events) if e.type == outcome)
    events[first] = replace(events[first], seq=99)
    assert mismatch(recorded.definition.cls, name, events) == f"{says}; {CHANGED}"


def test_a_history_that_ends_with_commands_no_task_completed() -> None:
    recorded = load("sequential")
    message = mismatch(recorded.definition.cls, "sequential", recorded.events[:-1])
    assert message == (
        "workflow 'engine-sequential': history ends with commands that no workflow task "
        "completed; the history was written by something else"
    )
