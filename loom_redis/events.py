"""History events and the commands workflow code emits: the vocabulary shared by
the engine (which produces and replays them) and the store (which persists them)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class EventType(StrEnum):
    WORKFLOW_STARTED = "WORKFLOW_STARTED"
    STEP_STARTED = "STEP_STARTED"
    STATE_SET = "STATE_SET"
    STATE_UPDATE = "STATE_UPDATE"
    ACTIVITY_SCHEDULED = "ACTIVITY_SCHEDULED"
    ACTIVITY_COMPLETED = "ACTIVITY_COMPLETED"
    ACTIVITY_FAILED = "ACTIVITY_FAILED"
    TIMER_STARTED = "TIMER_STARTED"
    TIMER_FIRED = "TIMER_FIRED"
    # A timer the code no longer waits for (a signal came before its timeout).
    TIMER_CANCELLED = "TIMER_CANCELLED"
    SIGNAL_RECEIVED = "SIGNAL_RECEIVED"
    WORKFLOW_CANCEL_REQUESTED = "WORKFLOW_CANCEL_REQUESTED"
    WORKFLOW_COMPLETED = "WORKFLOW_COMPLETED"
    WORKFLOW_FAILED = "WORKFLOW_FAILED"
    WORKFLOW_CANCELLED = "WORKFLOW_CANCELLED"
    # Closes each workflow task: its time is the workflow's "now" for that task,
    # and replay feeds the events before it to the code as one batch, as they were.
    # Its data {"skip": k} says that the last k external events before the task's
    # commands arrived while it ran: they belong to the next batch.
    WORKFLOW_TASK_COMPLETED = "WORKFLOW_TASK_COMPLETED"


# Events the workflow's own code produces; each carries a sequence number.
COMMAND_TYPES = frozenset(
    {
        EventType.STEP_STARTED,
        EventType.STATE_SET,
        EventType.STATE_UPDATE,
        EventType.ACTIVITY_SCHEDULED,
        EventType.TIMER_STARTED,
        EventType.TIMER_CANCELLED,
        EventType.WORKFLOW_COMPLETED,
        EventType.WORKFLOW_FAILED,
        EventType.WORKFLOW_CANCELLED,
    }
)

# Events that come from outside the workflow's code, each written by its own script at
# any time, also while a workflow task runs (whose commit then leaves them to the next
# task: WORKFLOW_TASK_COMPLETED's `skip`).
EXTERNAL_TYPES = frozenset(
    {
        EventType.ACTIVITY_COMPLETED,
        EventType.ACTIVITY_FAILED,
        EventType.TIMER_FIRED,
        EventType.SIGNAL_RECEIVED,
        EventType.WORKFLOW_CANCEL_REQUESTED,
    }
)

# The keys of each event's data that hold users' values: the payload limit applies to
# each of these, not to the record around them (see codec.encode's `carries`).
USER_VALUES: dict[EventType, tuple[str, ...]] = {
    EventType.WORKFLOW_STARTED: ("input", "state"),
    EventType.STATE_SET: ("value",),
    EventType.STATE_UPDATE: ("state",),
    EventType.ACTIVITY_SCHEDULED: ("args", "kwargs"),
    EventType.ACTIVITY_COMPLETED: ("result",),
    EventType.SIGNAL_RECEIVED: ("payload",),
    EventType.WORKFLOW_CANCEL_REQUESTED: ("reason",),
    EventType.WORKFLOW_COMPLETED: ("result",),
}

TERMINAL_TYPES = frozenset(
    {EventType.WORKFLOW_COMPLETED, EventType.WORKFLOW_FAILED, EventType.WORKFLOW_CANCELLED}
)


class Status(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUSPENDED = "SUSPENDED"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def is_terminal(self) -> bool:
        return self in (Status.COMPLETED, Status.FAILED, Status.CANCELLED)


STATUS_OF_TERMINAL_EVENT = {
    EventType.WORKFLOW_COMPLETED: Status.COMPLETED,
    EventType.WORKFLOW_FAILED: Status.FAILED,
    EventType.WORKFLOW_CANCELLED: Status.CANCELLED,
}


@dataclass(frozen=True)
class Event:
    """One entry of a workflow's history stream."""

    id: str
    type: EventType
    seq: int
    time_ms: int
    data: Any

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": str(self.type),
            "seq": self.seq,
            "time_ms": self.time_ms,
            "data": self.data,
        }


@dataclass
class Command:
    """A command emitted by workflow code during a workflow task, to be committed."""

    type: EventType
    seq: int
    data: Any
    step: str | None = None
    # For TIMER_STARTED: when it is due (ms since the epoch).
    due_ms: int = 0
    # The msgpack of `data`, made when the command was created (None during replay).
    encoded: bytes | None = None

    def describe(self) -> str:
        name = describe_command(self.type, self.data)
        return f"{name} (seq {self.seq})"


def describe_command(event_type: EventType, data: Any) -> str:
    """A short human description used in non-determinism errors and `inspect`."""
    detail = ""
    if isinstance(data, dict):
        if event_type in (EventType.STEP_STARTED, EventType.ACTIVITY_SCHEDULED):
            detail = str(data.get("name", ""))
        elif event_type == EventType.STATE_SET:
            detail = str(data.get("key", ""))
    return f"{event_type}({detail})" if detail else str(event_type)
