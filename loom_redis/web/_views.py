"""What the pages show, shaped from what the client reads: pure functions, no I/O.

A workflow's page folds its history into a `WorkflowView` (its steps as a graph, each
step's activities with attempts and durations, its timers and signals, its state),
event by event, so that a live page applies only the events it has not seen.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from ..events import EventType, Status

# How much of a payload a table cell shows before "...".
PREVIEW_CHARS = 120

OPEN_STATUSES = frozenset({Status.PENDING, Status.RUNNING, Status.SUSPENDED})


def format_ms(ms: int | None) -> str:
    """A time (ms since the epoch) as UTC, to the second; "" for none."""
    if not ms:
        return ""
    moment = dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def format_duration(ms: int | None) -> str:
    """A duration in the two largest units that matter: 850ms, 4.2s, 3m 20s, 2h 5m, 3d 4h."""
    if ms is None:
        return ""
    if ms < 1000:
        return f"{ms}ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, second = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {second}s"
    hours, minute = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minute}m"
    days, hour = divmod(hours, 24)
    return f"{days}d {hour}h"


def to_json(value: Any, *, indent: int | None = 2) -> str:
    """A payload as JSON text for a page (values JSON cannot hold shown as their repr)."""
    return json.dumps(value, indent=indent, default=repr, ensure_ascii=False, sort_keys=True)


def preview(value: Any) -> str:
    """A payload on one line, cut to PREVIEW_CHARS."""
    if value is None:
        return ""
    flat = to_json(value, indent=None)
    return flat if len(flat) <= PREVIEW_CHARS else flat[: PREVIEW_CHARS - 1] + "\u2026"


def waits_on(info: dict[str, Any]) -> list[str]:
    """What an open workflow's code waits for, as the table's filter names it."""
    waiting = info.get("waiting_for") or {}
    kinds = []
    if waiting.get("activities"):
        kinds.append("activity")
    if waiting.get("timers"):
        kinds.append("timer")
    if waiting.get("signals"):
        kinds.append("signal")
    return kinds


def step_text(info: dict[str, Any]) -> str:
    """ "n of m" (and the step's name) for a workflow's current step."""
    current, total = info.get("current_step"), info.get("total_steps")
    if not current:
        return ""
    counted = f"{current} of {total}" if total else str(current)
    name = info.get("step_name")
    return f"{counted}: {name}" if name else counted


def workflow_row(info: dict[str, Any], now_ms: int) -> dict[str, Any]:
    """A workflow as a table row (and as the JSON API lists it)."""
    started, closed = info.get("started_ms"), info.get("closed_ms")
    end = closed or (now_ms if info.get("status") in OPEN_STATUSES else info.get("updated_ms"))
    return {
        "workflow_id": info["workflow_id"],
        "workflow_name": info.get("workflow_name"),
        "status": str(info["status"]) if info.get("status") else None,
        "owner": info.get("owner"),
        "step": step_text(info),
        "current_step": info.get("current_step"),
        "total_steps": info.get("total_steps"),
        "waits_on": waits_on(info),
        "started_ms": started,
        "updated_ms": info.get("updated_ms"),
        "closed_ms": closed,
        "duration_ms": (end - started) if started and end else None,
        "dead_letter": info.get("dead_letter"),
    }


# -- a workflow's history folded into what its page shows ------------------------------


@dataclass
class ActivityView:
    seq: int
    name: str
    scheduled_ms: int
    status: str = "running"  # running, completed, failed
    attempts: int = 0
    ended_ms: int | None = None
    error: str | None = None

    @property
    def duration_ms(self) -> int | None:
        return None if self.ended_ms is None else self.ended_ms - self.scheduled_ms


@dataclass
class TimerView:
    seq: int
    started_ms: int
    due_ms: int | None
    status: str = "waiting"  # waiting, fired, cancelled


@dataclass
class StepView:
    index: int
    name: str
    description: str | None = None
    # done, running, waiting (on a timer or a signal), failed, pending (not reached yet)
    status: str = "pending"
    started_ms: int | None = None
    ended_ms: int | None = None
    activities: list[ActivityView] = field(default_factory=list)
    timers: list[TimerView] = field(default_factory=list)

    @property
    def duration_ms(self) -> int | None:
        if self.started_ms is None or self.ended_ms is None:
            return None
        return self.ended_ms - self.started_ms

    def to_dict(self) -> dict[str, Any]:
        """The step as the API and the pages show it, durations included."""
        return {
            **asdict(self),
            "duration_ms": self.duration_ms,
            "activities": [
                {**asdict(activity), "duration_ms": activity.duration_ms}
                for activity in self.activities
            ],
        }


@dataclass
class WorkflowView:
    """A workflow's history, folded: apply() its events in order, as many at a time as
    arrive."""

    steps: list[StepView] = field(default_factory=list)
    state: Any = None
    signals: list[dict[str, Any]] = field(default_factory=list)
    closed: str | None = None
    last_id: str | None = None
    events: int = 0
    _activities: dict[int, ActivityView] = field(default_factory=dict)
    # The step the code runs (the last one started), None before the first.
    _step: StepView | None = None
    _timers: dict[int, TimerView] = field(default_factory=dict)

    @classmethod
    def of(cls, definition: dict[str, Any] | None) -> WorkflowView:
        """A view whose graph shows every step of the definition workers published, the
        ones not reached yet as pending."""
        view = cls()
        for step in (definition or {}).get("steps") or []:
            if isinstance(step, dict) and isinstance(step.get("index"), int):
                view.steps.append(
                    StepView(step["index"], str(step.get("name")), step.get("description"))
                )
        return view

    def apply(self, entries: list[dict[str, Any]]) -> None:
        """Fold history entries (`Client.history_entries`'s dicts) in, oldest first."""
        for entry in entries:
            self.events += 1
            self.last_id = entry.get("id", self.last_id)
            seq = entry.get("seq")
            self._apply(
                str(entry.get("type", "")),
                seq if isinstance(seq, int) else 0,
                entry.get("time_ms") or 0,
                entry.get("data"),
            )

    def _apply(self, kind: str, seq: int, time_ms: int, data: Any) -> None:
        data = data if isinstance(data, dict) else {}
        if kind == EventType.WORKFLOW_STARTED:
            self.state = data.get("state")
        elif kind == EventType.STEP_STARTED:
            self._start_step(data, time_ms)
        elif kind == EventType.ACTIVITY_SCHEDULED:
            activity = ActivityView(seq, str(data.get("name")), time_ms)
            self._activities[activity.seq] = activity
            self._current().activities.append(activity)
        elif kind in (EventType.ACTIVITY_COMPLETED, EventType.ACTIVITY_FAILED):
            self._end_activity(kind, seq, time_ms, data)
        elif kind == EventType.TIMER_STARTED:
            timer = TimerView(seq, time_ms, data.get("due_ms"))
            self._timers[timer.seq] = timer
            self._current().timers.append(timer)
        elif kind == EventType.TIMER_FIRED:
            self._end_timer(data.get("timer_seq", seq), "fired")
        elif kind == EventType.TIMER_CANCELLED:
            self._end_timer(data.get("timer_seq"), "cancelled")
        elif kind == EventType.SIGNAL_RECEIVED:
            self.signals.append({"name": data.get("name"), "time_ms": time_ms})
        elif kind == EventType.STATE_SET and isinstance(self.state, dict):
            self.state[str(data.get("key"))] = data.get("value")
        elif kind == EventType.STATE_SET:
            self.state = {str(data.get("key")): data.get("value")}
        elif kind == EventType.STATE_UPDATE:
            self.state = data.get("state", self.state)
        elif kind in _CLOSING:
            self._close(_CLOSING[kind], time_ms)
        self._settle()

    def _start_step(self, data: dict[str, Any], time_ms: int) -> None:
        index = data.get("index")
        step = next((s for s in self.steps if s.index == index), None)
        if step is None:
            step = StepView(index if isinstance(index, int) else len(self.steps) + 1, "")
            self.steps.append(step)
            self.steps.sort(key=lambda s: s.index)
        step.name = str(data.get("name") or step.name)
        step.description = data.get("description") or step.description
        for earlier in self.steps:
            if earlier.status == "running" or earlier.status == "waiting":
                earlier.status, earlier.ended_ms = "done", time_ms
        step.status, step.started_ms = "running", time_ms
        self._step = step

    def _current(self) -> StepView:
        if self._step is None:
            # Activities and timers before the first step: a step of their own.
            self._step = StepView(0, "(before the first step)", status="running")
            self.steps.insert(0, self._step)
        return self._step

    def _end_activity(self, kind: str, seq: int, time_ms: int, data: dict[str, Any]) -> None:
        activity = self._activities.get(seq)
        if activity is None:
            return
        activity.ended_ms = time_ms
        activity.attempts = int(data.get("attempts") or 1)
        if kind == EventType.ACTIVITY_COMPLETED:
            activity.status = "completed"
        else:
            activity.status = "failed"
            activity.error = str(data.get("message") or data.get("error_type") or "")

    def _end_timer(self, seq: Any, status: str) -> None:
        timer = self._timers.get(seq) if isinstance(seq, int) else None
        if timer is not None:
            timer.status = status

    def _close(self, status: str, time_ms: int) -> None:
        self.closed = status
        for step in self.steps:
            if step.status in ("running", "waiting"):
                step.status = "done" if status == Status.COMPLETED else "failed"
                step.ended_ms = time_ms

    def _settle(self, signals: bool = False) -> None:
        """A running step none of whose activities runs is waiting, when it has a timer
        left or its code waits for a signal."""
        for step in self.steps:
            if step.status not in ("running", "waiting"):
                continue
            busy = any(a.status == "running" for a in step.activities)
            timed = any(t.status == "waiting" for t in step.timers)
            step.status = "waiting" if (timed or signals) and not busy else "running"

    def waiting_for(self, waiting: dict[str, Any]) -> None:
        """Take in what the workflow's meta says its code waits for (signals leave no
        event in the history until one comes)."""
        self._settle(signals=bool(waiting.get("signals")))


_CLOSING: dict[str, str] = {
    EventType.WORKFLOW_COMPLETED: str(Status.COMPLETED),
    EventType.WORKFLOW_FAILED: str(Status.FAILED),
    EventType.WORKFLOW_CANCELLED: str(Status.CANCELLED),
}
