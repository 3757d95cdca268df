"""How a task ended, as `loom_tasks_total{outcome}` counts it (README, "Metrics")."""

from __future__ import annotations

from enum import StrEnum

from ..store.wire import Reply


class TaskOutcome(StrEnum):
    """A script's reply passed on (`store.wire.Reply`), or one of the worker's own."""

    OK = Reply.OK
    DUPLICATE = Reply.DUPLICATE
    DROPPED = Reply.DROPPED
    CLOSED = Reply.CLOSED
    CONFLICT = Reply.CONFLICT  # lost every commit attempt: retried after the lease
    RETRY = "retry"  # an attempt failed; the next one is due later
    SUSPENDED = "suspended"  # the workflow cannot replay its history and waits
    FAILED = "failed"  # the workflow cannot replay its history and failed
    ERROR = "error"  # see the log; retried after the lease
    HANDED_BACK = "handed_back"  # a name this worker does not register
    DEAD = "dead"  # moved to the dead-letter stream
    # Not counted: a commit refused for a reason only a replay of the whole history can
    # judge; the workflow task runs again from its history.
    RELOAD = "reload"
