"""Recorded histories replay with no server: the engine makes the commands and reaches
the status each workflow task recorded, whether it replays a history from the start or
runs task after task on one instance, as a worker's cache does."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from loom_redis.codec import decode
from loom_redis.engine import Activation, WorkflowInstance
from loom_redis.events import (
    COMMAND_TYPES,
    STATUS_OF_TERMINAL_EVENT,
    Command,
    Event,
    EventType,
    Status,
)

from .recorded import Recorded, RecordedTask, load, names


@pytest.fixture(params=names())
def recorded(request: pytest.FixtureRequest) -> Recorded:
    return load(request.param)


def instance_for(recorded: Recorded) -> WorkflowInstance:
    return WorkflowInstance(recorded.definition, recorded.workflow_id)  # type: ignore[abstract]


def written(command: Command) -> tuple[EventType, int, Any]:
    """A command as its commit writes it (as its event would read back)."""
    assert command.encoded is not None, f"{command.describe()} was not encoded"
    return comparable(command.type, command.seq, decode(command.encoded))


def recorded_as(event: Event) -> tuple[EventType, int, Any]:
    return comparable(event.type, event.seq, event.data)


def comparable(event_type: EventType, seq: int, data: Any) -> tuple[EventType, int, Any]:
    # A failure's traceback names the files and lines of the run that wrote it.
    if event_type == EventType.WORKFLOW_FAILED:
        data = {key: value for key, value in data.items() if key != "traceback"}
    return event_type, seq, data


def status_after(task: RecordedTask) -> Status:
    last = task.commands[-1].type if task.commands else None
    return STATUS_OF_TERMINAL_EVENT.get(last, Status.RUNNING)  # type: ignore[arg-type]


def check_task(activation: Activation, task: RecordedTask) -> None:
    assert [written(c) for c in activation.commands] == [recorded_as(e) for e in task.commands]
    assert activation.status == status_after(task)
    assert activation.ran


def waiting_after(recorded: Recorded, index: int) -> tuple[set[int], set[int]]:
    """The activities and timers task `index` left waiting, read from history: scheduled
    or started by it or before, and no outcome fed to a task by then (nor cancelled)."""
    task = recorded.tasks()[index]
    written_by_then = [
        e for e in recorded.events[: recorded.events.index(task.closing)] if e.type in COMMAND_TYPES
    ]
    fed = recorded.events[: task.seen]
    activities = {e.seq for e in written_by_then if e.type == EventType.ACTIVITY_SCHEDULED}
    timers = {e.seq for e in written_by_then if e.type == EventType.TIMER_STARTED}
    cancelled = {
        e.data["timer_seq"] for e in written_by_then if e.type == EventType.TIMER_CANCELLED
    }
    outcomes = {EventType.ACTIVITY_COMPLETED, EventType.ACTIVITY_FAILED}
    activities -= {e.seq for e in fed if e.type in outcomes}
    timers -= {e.seq for e in fed if e.type == EventType.TIMER_FIRED} | cancelled
    return activities, timers


def test_every_event_type_occurs_in_a_recorded_history() -> None:
    seen = {event.type for name in names() for event in load(name).events}
    assert seen == set(EventType)
    skips = {
        e.data.get("skip")
        for e in load("skipped_events").events
        if e.type == EventType.WORKFLOW_TASK_COMPLETED and isinstance(e.data, dict)
    }
    assert skips == {1, 2}


def test_a_whole_history_replays_to_its_recorded_end(recorded: Recorded) -> None:
    activation = instance_for(recorded).apply(recorded.events, recorded.events[-1].time_ms)
    assert activation.status == status_after(recorded.tasks()[-1])
    assert activation.status.is_terminal
    assert (activation.commands, activation.ran) == ([], False)
    assert (activation.pending_activities, activation.pending_timers) == (set(), set())
    assert activation.waiting_signals == []


def test_each_task_replayed_from_its_history_makes_the_recorded_commands(
    recorded: Recorded,
) -> None:
    """A fresh instance given the history a task's worker read replays the tasks before
    it and makes that task's commands, leaving the activities and timers it left."""
    for index, task in enumerate(recorded.tasks()):
        instance = instance_for(recorded)
        activation = instance.apply(recorded.events[: task.seen], task.closing.time_ms)
        check_task(activation, task)
        if not activation.status.is_terminal:
            waiting = (activation.pending_activities, activation.pending_timers)
            assert waiting == waiting_after(recorded, index), f"after task {index}"


def test_one_instance_run_task_after_task_makes_the_recorded_commands(
    recorded: Recorded,
) -> None:
    """As a worker that keeps the instance between tasks: each task hands it only the
    external events new to it, and the code runs on, never replaying."""
    instance = instance_for(recorded)
    for task in recorded.tasks():
        check_task(instance.apply(task.fed, task.closing.time_ms), task)


def test_a_history_that_ends_at_a_completed_task_runs_nothing_new(recorded: Recorded) -> None:
    """A task that finds no event after the last one completed (a redundant task) makes
    no command; one whose last commit skipped events runs the code on them."""
    for task in recorded.tasks()[:-1]:
        end = recorded.events.index(task.closing) + 1
        activation = instance_for(recorded).apply(recorded.events[:end], task.closing.time_ms)
        skipped = bool(isinstance(task.closing.data, dict) and task.closing.data.get("skip"))
        assert activation.ran is skipped
        if not skipped:
            assert (activation.commands, activation.status) == ([], Status.RUNNING)


def test_an_empty_history_is_a_workflow_not_started() -> None:
    recorded = load("sequential")
    activation = instance_for(recorded).apply([], 0)
    assert (activation.status, activation.commands, activation.ran) == (Status.PENDING, [], False)


# What the code waits for after task N of a history, as the scenario's workflow says.
WAITING_SIGNALS = [
    # Two approvals were buffered before the first task; "deadline" then waits for "late".
    ("signals", 0, ["late"]),
    # The wait for "late" timed out (its timer fired); "in_time" waits for "note".
    ("signals", 1, ["note"]),
    # The first tick came with the task; the second was left to the next.
    ("skipped_events", 0, []),
    ("sequential", 0, []),
]


@pytest.mark.parametrize(("name", "index", "signals"), WAITING_SIGNALS)
def test_a_prefix_leaves_the_code_waiting_for_its_signals(
    name: str, index: int, signals: list[str]
) -> None:
    recorded = load(name)
    task = recorded.tasks()[index]
    activation = instance_for(recorded).apply(recorded.events[: task.seen], task.closing.time_ms)
    assert activation.waiting_signals == signals


def test_a_signal_in_time_cancels_its_timeout() -> None:
    recorded = load("signals")
    last = recorded.tasks()[-1]
    assert [e.type for e in recorded.events[last.seen - 1 : last.seen]] == [
        EventType.SIGNAL_RECEIVED
    ]
    activation = instance_for(recorded).apply(recorded.events[: last.seen], 0)
    cancel = activation.commands[0]
    assert (cancel.type, cancel.data) == (EventType.TIMER_CANCELLED, {"timer_seq": 7})
    assert activation.pending_timers == set()


def test_time_comes_from_history_not_from_the_clock() -> None:
    """`ctx.now()` is the time of the task that reads it: on replay the recorded time (a
    replay long after the run compares the values the code wrote, so a clock read would
    be a mismatch), in a live task the time it is given, never earlier than the last."""
    recorded = load("timers")
    replayed = instance_for(recorded).apply(recorded.events, 10**13)
    assert replayed.status == Status.COMPLETED
    woke = recorded.tasks()[1]
    before = woke.seen
    later = instance_for(recorded).apply(recorded.events[:before], 1_800_000_000_000)
    assert later.commands[0].data == {"key": "woke", "value": "2027-01-15T08:00:00+00:00"}
    earlier = instance_for(recorded).apply(recorded.events[:before], 1_700_000_000_000)
    previous = recorded.tasks()[0].closing.time_ms
    assert (
        earlier.commands[0].data["value"]
        == datetime.fromtimestamp(previous / 1000, UTC).isoformat()
    )


def test_a_cancel_request_ends_the_sleep_and_the_workflow() -> None:
    recorded = load("cancelled")
    last = recorded.tasks()[-1]
    activation = instance_for(recorded).apply(recorded.events[: last.seen], 0)
    [cancelled] = activation.commands
    assert (cancelled.type, cancelled.data) == (
        EventType.WORKFLOW_CANCELLED,
        {"reason": "customer left"},
    )
    assert activation.status == Status.CANCELLED
