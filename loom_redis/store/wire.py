"""The wire format: every field name and reply the store and its Lua scripts share.

Key names are `keys.py`'s; the names inside the keys are here, once, for the Python side.
The Lua scripts (`scripts/*.lua`) spell the same names as string literals:
tests/store/test_wire.py fails when a script uses a name this module does not define,
or when a reply defined here is returned by no script. The constants the scripts need
from Python are written into their prelude (`LUA_CONSTANTS`).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import msgpack

from ..events import EXTERNAL_TYPES


class _WireName(StrEnum):
    """A name as Redis holds it: shown in messages as that string, not as the member."""

    def __repr__(self) -> str:
        return repr(self.value)


class TaskField(_WireName):
    """Fields of a task stream entry (a workflow task or an activity task)."""

    KIND = "k"  # a TaskKind
    WORKFLOW_ID = "wf"
    # An activity task's: its seq, attempt and arguments (activity workers never read
    # history).
    SEQ = "seq"
    ATTEMPT = "att"
    PAYLOAD = "p"
    # A workflow's first task carries its WORKFLOW_STARTED entry (id, time, data) up to
    # CARRY_BYTES, so the worker that runs it need not read the history.
    STARTED_ID = "started_id"
    STARTED_TIME = "started_t"
    STARTED = "started"
    # Written by workers that hand a task back (they do not register its name).
    UNREGISTERED_SINCE = "unreg_since"
    HANDBACKS = "handbacks"
    # Never stored: the timer member that is the lease of an activity its worker runs at
    # once (Store.held_activity_task).
    LEASE = "lease"


class TaskKind(_WireName):
    WORKFLOW = "w"
    ACTIVITY = "a"


class DeadLetterField(_WireName):
    """Fields a dead-letter entry adds to the task's own."""

    REASON = "reason"
    QUEUE = "queue"
    TASK_ID = "task_id"
    # A corrupt timer member (not a task) stands in this field alone, with its reason.
    TIMER = "timer"


class HistoryField(_WireName):
    """Fields of a history entry."""

    TYPE = "type"  # an EventType
    SEQ = "seq"
    TIME = "t"  # ms
    DATA = "d"  # msgpack


class MetaField(_WireName):
    """Fields of a workflow's meta hash: what a reader sees without reading history."""

    NAME = "name"
    VERSION = "version"
    QUEUE = "queue"
    OWNER = "owner"
    AGENT = "agent"
    INPUT = "input"
    STATUS = "status"  # a Status
    TOTAL_STEPS = "total_steps"
    STEP = "step"  # the index of the step running
    STEP_NAME = "step_name"
    STEP_DESCRIPTION = "step_desc"
    CREATED = "created"  # ms
    UPDATED = "updated"  # ms
    CLOSED = "closed"  # ms
    HISTORY_LENGTH = "hlen"
    RESULT = "result"  # msgpack
    ERROR = "error"  # msgpack
    SUSPENDED = "suspended"  # msgpack: why the workflow is suspended
    SIGNALS = "signals"  # msgpack: the names of the signals its code waits for
    # "1" while a workflow task of it is queued or running: at most one is.
    WORKFLOW_TASK = "wft"
    # "1" once a waiter may block on its close notice (see await_close.lua).
    WAITED = "waited"
    CANCEL_REQUESTED = "cancel_requested"
    # The dead-letter entry of its task, while one keeps it from moving.
    DEAD = "dead"
    # The request id of the start that created it (a retried start finds its own).
    START_REQUEST = "start_request"
    # Its start's retention (ms), which commit.lua prefers to the namespace's at the close.
    RETENTION = "retention"


# Meta fields named by a prefix and a seq: an activity or a timer the code waits for ("1").
ACTIVITY_PREFIX = "a:"
TIMER_PREFIX = "t:"


class TimerKind(_WireName):
    """What a timer member does when it is due (the first element of its msgpack list)."""

    TIMER = "timer"  # fires a durable timer: TIMER_FIRED and a workflow task
    RETRY = "retry"  # queues an activity task (a retry, or a held activity's lease)
    RESUME = "resume"  # queues a workflow task (a suspended workflow tried again)
    REQUEUE = "requeue"  # queues a workflow task handed back by a worker


class Reply(_WireName):
    """What a transition script says it did (its reply, or the first element of it)."""

    OK = "ok"
    # The history moved since the task read it (another worker's commit), or a
    # workflow task is queued while the plan records an activity's outcome.
    CONFLICT = "conflict"
    CLOSED = "closed"  # the workflow has ended
    DROPPED = "dropped"  # the workflow has ended: the outcome or timer is dropped
    DUPLICATE = "duplicate"  # done before (a retry whose first reply was lost)
    MISSING = "missing"  # no such workflow (or dead-letter entry)
    GONE = "gone"  # the task or timer member is no longer there (another worker took it)
    ALREADY_QUEUED = "already-queued"  # re-driven, but a workflow task was queued already
    STARTED = "started"  # start.lua: created (or found its own earlier start)
    EXISTS = "exists"  # start.lua: another start created the workflow
    DELETED = "deleted"  # delete_closed.lua: the workflow's keys and index entries are gone
    OPEN = "open"  # delete_closed.lua: the workflow is open, never deleted
    KEPT = "kept"  # delete_closed.lua: closed, but not by the deadline (or of the status) given


class DeleteWhen(_WireName):
    """What delete_closed.lua checks against its deadline before it deletes a workflow."""

    EXPIRED = "expired"  # its retention ended (its score in the expiry index)
    CLOSED_BEFORE = "closed-before"  # it closed (its score in its status index)


# The transitions, one Lua script each (scripts/<name>.lua, after scripts/lib.lua).
SCRIPT_NAMES = (
    "start",
    "await_close",
    "commit",
    "external",
    "activity_result",
    "activity_retry",
    "fire_timer",
    "dead_letter",
    "redrive",
    "dead_timer",
    "defer_task",
    "delete_closed",
    "take_over",
    "renew_leases",
)

# How long a workflow's close notice (see Store.await_close) outlives its close.
CLOSE_NOTICE_MS = 60_000
# The notice that ends a wait for a workflow that does not exist (see await_close.lua).
NO_WORKFLOW = b"none"
# The most external events a commit leaves to the next task (see commit.lua); a history
# that moved by more since the worker read it is a conflict.
MAX_SKIPPED = 1000
# A task loom-redis writes has at most a dozen fields. One with more than this, written
# by hand, is cut to this many when it goes to the dead-letter stream, and a timer member
# or dead-lettered entry with more is refused, so that no script passes more values to a
# command than Lua can (about 8,000).
MAX_TASK_FIELDS = 64
# The request ids of the signals delivered to one open workflow that external.lua keeps to
# drop a repeat (a client retrying after a lost reply): at most this many, for at most
# this long; a workflow's deletion removes them all.
ONCE_KEEP = 1000
ONCE_KEEP_MS = 24 * 3600 * 1000


def lua_constants() -> str:
    """The Lua prelude of every script: the constants above that the scripts read."""
    external = ", ".join(f"{t} = true" for t in sorted(EXTERNAL_TYPES))
    return (
        f"local CLOSE_NOTICE_MS = {CLOSE_NOTICE_MS}\n"
        f"local NO_WORKFLOW = '{NO_WORKFLOW.decode()}'\n"
        f"local EXTERNAL = {{{external}}}\n"
        f"local MAX_SKIPPED = {MAX_SKIPPED}\n"
        f"local ONCE_KEEP = {ONCE_KEEP}\n"
        f"local ONCE_KEEP_MS = {ONCE_KEEP_MS}\n"
    )


def text(value: bytes | str | None) -> str:
    """A field read from Redis, as text."""
    if value is None:
        return ""
    # "replace": a field written by hand with bytes that are not UTF-8 must not crash
    # the worker that reads it; the replacement characters show in its dead-letter reason.
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def field_map(flat: list[bytes]) -> dict[bytes, bytes]:
    """A stream entry's fields as a script returns them (k, v, k, v, ...)."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


def pack_for_lua(value: Any) -> bytes:
    """msgpack that Lua's cmsgpack reads: it knows only the old raw type, so no bin
    types (timer members are read back with raw=True)."""
    packed: bytes = msgpack.packb(value, use_bin_type=False)
    return packed


def activity_task_fields(workflow_id: str, seq: int, attempt: int, payload: bytes) -> list[Any]:
    """An activity task's fields: it carries its arguments, so activity workers never
    read history."""
    return [
        TaskField.KIND,
        TaskKind.ACTIVITY,
        TaskField.WORKFLOW_ID,
        workflow_id,
        TaskField.SEQ,
        str(seq),
        TaskField.ATTEMPT,
        str(attempt),
        TaskField.PAYLOAD,
        payload,
    ]


def timer_member(
    kind: TimerKind, workflow_id: str, queue: str, seq: int, task: list[Any] | None = None
) -> bytes:
    """A member of a timer zset: [kind, workflow id, queue, seq, task fields]."""
    return pack_for_lua([kind, workflow_id, queue, str(seq), task or []])


def retry_member(workflow_id: str, queue: str, seq: int, attempt: int, payload: bytes) -> bytes:
    """The timer member that queues attempt `attempt` of an activity when it is due."""
    fields = activity_task_fields(workflow_id, seq, attempt, payload)
    return timer_member(TimerKind.RETRY, workflow_id, queue, seq, fields)
