"""How a workflow task's plan (what its code did) becomes what commit.lua writes."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..codec import encode
from ..events import USER_VALUES, Command, Event, EventType, Status
from .connection import (
    now_ms,
)
from .wire import (
    ACTIVITY_PREFIX,
    TIMER_PREFIX,
    MetaField,
    TimerKind,
    activity_task_fields,
    timer_member,
)


@dataclass(frozen=True)
class TaskPlan:
    """What one run of a workflow's code writes: the events of its commands (after the
    activity outcome it records, if any), meta, timers, the activity tasks it queues,
    and the workflow's new status. A commit writes one plan, or two for a workflow task
    that ran the first activity it scheduled at once (see Worker's eager activities)."""

    commands: Sequence[Command]
    status: Status
    # The time the code ran at (its ctx.now()): WORKFLOW_TASK_COMPLETED records it, so
    # that replay sees the same time.
    time_ms: int | None = None
    meta: dict[str, str | bytes] = field(default_factory=dict)
    meta_delete: Sequence[str] = ()
    extra_timers: Sequence[tuple[int, bytes]] = ()
    timers_delete: Sequence[bytes] = ()
    # Keep the workflow's queued-task flag (a suspended workflow's retry holds it).
    keep_task_flag: bool = False
    # The code consumed new events: WORKFLOW_TASK_COMPLETED closes their batch even if
    # the code produced no command.
    consumed_events: bool = False
    # An activity's outcome (ACTIVITY_COMPLETED or ACTIVITY_FAILED, `completing_data`
    # encoded), appended first: the outcome and the workflow task it wakes in one write.
    completing: Event | None = None
    completing_data: bytes = b""
    # The seq of a scheduled activity whose task is not queued: this worker runs it.
    held_activity: int | None = None
    # The signals the code waits for once the plan is written (meta "signals").
    waiting_signals: Sequence[str] = ()


def _describe(command: Command, workflow_id: str) -> str:
    """How errors name a command's payload."""
    return f"{command.describe()} of workflow {workflow_id!r} in step {command.step!r}"


def command_payload(command: Command, workflow_id: str) -> bytes:
    """A command's data as its event (and an activity's task) carries it."""
    return command.encoded or encode(
        command.data,
        what=functools.partial(_describe, command, workflow_id),
        carries=USER_VALUES.get(command.type),
    )


def lua_plan(workflow_id: str, queue: str, plan: TaskPlan) -> dict[str, Any]:
    """A plan as commit.lua reads it."""
    events: list[list[Any]] = []
    timers: list[list[Any]] = [[str(due), member] for due, member in plan.extra_timers]
    cancelled: list[bytes] = list(plan.timers_delete)
    tasks: list[list[Any]] = []
    meta_fields: list[Any] = []
    meta_delete = list(plan.meta_delete)
    for key, value in plan.meta.items():
        meta_fields += [key, value]
    meta_fields += [
        MetaField.SIGNALS,
        encode(list(plan.waiting_signals)) if plan.waiting_signals else "",
    ]
    completing = plan.completing
    if completing is not None:
        events.append([str(completing.type), str(completing.seq), plan.completing_data])
        meta_delete.append(f"{ACTIVITY_PREFIX}{completing.seq}")
    for command in plan.commands:
        encoded = command_payload(command, workflow_id)
        events.append([str(command.type), str(command.seq), encoded])
        if command.type == EventType.ACTIVITY_SCHEDULED:
            meta_fields += [f"{ACTIVITY_PREFIX}{command.seq}", "1"]
            if command.seq != plan.held_activity:
                tasks.append(activity_task_fields(workflow_id, command.seq, 1, encoded))
        elif command.type == EventType.TIMER_STARTED:
            meta_fields += [f"{TIMER_PREFIX}{command.seq}", "1"]
            member = timer_member(TimerKind.TIMER, workflow_id, queue, command.seq)
            timers.append([str(command.due_ms), member])
        elif command.type == EventType.TIMER_CANCELLED:
            timer_seq = int(command.data["timer_seq"])
            meta_delete.append(f"{TIMER_PREFIX}{timer_seq}")
            cancelled.append(timer_member(TimerKind.TIMER, workflow_id, queue, timer_seq))
        elif command.type == EventType.STEP_STARTED:
            meta_fields += [
                MetaField.STEP,
                str(command.data["index"]),
                MetaField.STEP_NAME,
                command.data["name"],
                MetaField.STEP_DESCRIPTION,
                command.data.get("description") or "",
            ]
        elif command.type == EventType.WORKFLOW_COMPLETED:
            result = command.data.get("result")
            meta_fields += [
                MetaField.RESULT,
                encode(result, what=functools.partial(_describe, command, workflow_id)),
                MetaField.CLOSED,
                str(now_ms()),
            ]
        elif command.type in (EventType.WORKFLOW_FAILED, EventType.WORKFLOW_CANCELLED):
            what = functools.partial(_describe, command, workflow_id)
            meta_fields += [
                MetaField.ERROR,
                encode(command.data, what=what),
                MetaField.CLOSED,
                str(now_ms()),
            ]
    # A task that consumed new events closes its batch even when the code produced no
    # command: replay must feed the code those events apart from later ones, as it ran.
    if events or plan.consumed_events:
        events.append([str(EventType.WORKFLOW_TASK_COMPLETED), "0", b""])
    lua_plan: dict[str, Any] = {
        "t": str(plan.time_ms if plan.time_ms is not None else now_ms()),
        "events": events,
        "meta": meta_fields,
        "meta_del": meta_delete,
        "timers": timers,
        "timers_del": cancelled,
        "tasks": tasks,
        "status": str(plan.status),
        "wft": "1" if plan.keep_task_flag else "0",
    }
    if completing is not None:
        lua_plan["activity"] = str(completing.seq)
    return lua_plan
