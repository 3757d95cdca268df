"""History cut into the workflow tasks that wrote it (`split_tasks`), on hand-made
histories: the batches each task was fed, and the skip markers a commit writes."""

from __future__ import annotations

from typing import Any

import pytest

from loom_redis.engine.history import Batch, split_tasks
from loom_redis.errors import NonDeterministicWorkflowError
from loom_redis.events import Event, EventType

from .recorded import load

STARTED = EventType.WORKFLOW_STARTED
STEP = EventType.STEP_STARTED
SCHEDULED = EventType.ACTIVITY_SCHEDULED
COMPLETED = EventType.ACTIVITY_COMPLETED
SIGNAL = EventType.SIGNAL_RECEIVED
TASK = EventType.WORKFLOW_TASK_COMPLETED


def history(*entries: tuple[EventType, Any] | EventType) -> list[Event]:
    """Events with ids 1-0, 2-0, ... at times 1000, 2000, ...; an entry is a type or
    (type, data); commands are numbered in order."""
    events, seq = [], 0
    for n, entry in enumerate(entries, start=1):
        event_type, data = entry if isinstance(entry, tuple) else (entry, None)
        if event_type in (STEP, SCHEDULED):
            seq += 1
        events.append(Event(f"{n}-0", event_type, seq, n * 1000, data))
    return events


def shape(batches: list[Batch]) -> list[tuple[list[str], list[str], int | None]]:
    """Each batch as (its externals' ids, its commands' ids, its time)."""
    return [([e.id for e in b.externals], [e.id for e in b.commands], b.time_ms) for b in batches]


def test_no_history_is_one_empty_batch() -> None:
    assert shape(split_tasks([], "w")) == [([], [], None)]


def test_a_history_no_task_has_seen_is_its_last_batch() -> None:
    assert shape(split_tasks(history(STARTED, SIGNAL), "w")) == [(["1-0", "2-0"], [], None)]


def test_each_task_completed_closes_a_batch_at_its_time() -> None:
    events = history(STARTED, STEP, SCHEDULED, TASK, COMPLETED, TASK, SIGNAL)
    assert shape(split_tasks(events, "w")) == [
        (["1-0"], ["2-0", "3-0"], 4000),
        (["5-0"], [], 6000),
        (["7-0"], [], None),
    ]


@pytest.mark.parametrize("data", [None, {}, {"skip": 0}, "not a dict"])
def test_a_task_completed_without_a_skip_skips_nothing(data: Any) -> None:
    events = history(STARTED, SIGNAL, STEP, (TASK, data))
    assert shape(split_tasks(events, "w")) == [(["1-0", "2-0"], ["3-0"], 4000), ([], [], None)]


def test_skipped_events_open_the_next_batch() -> None:
    """Two signals arrived while the first task ran: its commit wrote its commands after
    them and skipped them; the next task gets them, before what came after."""
    events = history(STARTED, SIGNAL, SIGNAL, STEP, (TASK, {"skip": 2}), COMPLETED, TASK)
    assert shape(split_tasks(events, "w")) == [
        (["1-0"], ["4-0"], 5000),
        (["2-0", "3-0", "6-0"], [], 7000),
        ([], [], None),
    ]


def test_every_external_event_of_a_task_may_be_skipped() -> None:
    events = history(STARTED, STEP, TASK, SIGNAL, SIGNAL, (TASK, {"skip": 2}))
    assert shape(split_tasks(events, "w")) == [
        (["1-0"], ["2-0"], 3000),
        ([], [], 6000),
        (["4-0", "5-0"], [], None),
    ]


@pytest.mark.parametrize(
    ("events", "skip"),
    [
        # More than the external events before the task's commands.
        (history(STARTED, STEP, TASK, SIGNAL, (TASK, {"skip": 2})), "2"),
        # WORKFLOW_STARTED is no event that arrives while a task runs.
        (history(STARTED, STEP, (TASK, {"skip": 1})), "1"),
        (history(STARTED, SIGNAL, STEP, (TASK, {"skip": -1})), "-1"),
        (history(STARTED, SIGNAL, STEP, (TASK, {"skip": 1.0})), "1.0"),
        (history(STARTED, SIGNAL, STEP, (TASK, {"skip": "1"})), "'1'"),
    ],
    ids=["beyond", "started", "negative", "float", "string"],
)
def test_an_impossible_skip_is_refused_naming_the_entry(events: list[Event], skip: str) -> None:
    closing = events[-1]
    with pytest.raises(NonDeterministicWorkflowError) as raised:
        split_tasks(events, "w")
    assert str(raised.value) == (
        f"workflow 'w': history entry {closing.id} (WORKFLOW_TASK_COMPLETED) skips {skip} "
        "events, more than the external events its task ends with; the history was written "
        "by something else"
    )


@pytest.mark.parametrize("skip", [True, False])
def test_a_boolean_skip_is_refused(skip: bool) -> None:
    """bool is an int in Python: {"skip": true} must not pass for a skip of 1, nor
    false for 0."""
    with pytest.raises(NonDeterministicWorkflowError, match=f"skips {skip} events"):
        split_tasks(history(STARTED, SIGNAL, STEP, (TASK, {"skip": skip})), "w")


def test_the_recorded_skips_cut_the_tasks_as_they_ran() -> None:
    """In skipped_events.json each task's batch holds what its worker had read: the
    batches split_tasks makes are the ones the recorded run fed its tasks."""
    recorded = load("skipped_events")
    batches = split_tasks(recorded.events, recorded.workflow_id)
    tasks = recorded.tasks()
    assert [(b.externals, b.commands, b.time_ms) for b in batches] == [
        *((t.fed, t.commands, t.closing.time_ms) for t in tasks),
        ([], [], None),
    ]
