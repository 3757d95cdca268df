"""The transitions of a workflow: start, commit, activity outcomes, signals, close waits."""

from __future__ import annotations

import contextlib
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import msgpack

from ..codec import encode
from ..errors import PayloadError
from ..events import USER_VALUES, Command, Event, EventType
from .connection import (
    acl_checked,
    now_ms,
)
from .history import History
from .keys import WORKER_GROUP
from .plans import TaskPlan, command_payload, lua_plan
from .tasks import Task, Tasks, taken_task
from .wire import (
    NO_WORKFLOW,
    MetaField,
    Reply,
    TaskField,
    field_map,
    pack_for_lua,
    text,
)

# At most this many history entries come with a workflow task delivered by a transition.
PRELOAD_PAGE = 100


# A workflow's first task carries its WORKFLOW_STARTED event up to this size (the queue
# entry lives only until the task is done), so the worker need not read the history.
CARRY_BYTES = 16 * 1024


@dataclass(frozen=True)
class CommitResult:
    """What a workflow task commit did: "ok", "conflict" or "closed"."""

    outcome: str
    # The history's length after the commit ("ok") or as found ("conflict").
    length: int
    # Id of the last entry the commit appended, "" if it appended none.
    last_id: str
    # The queue's next task, delivered to the committing worker (see `take_next`).
    next_task: Task | None = None
    # How many external events that arrived while the task ran the commit left to the
    # next task, and those events (None if one of them does not decode).
    skipped: int = 0
    skipped_events: list[Event] | None = field(default_factory=list)


@dataclass(frozen=True)
class ActivityRecorded:
    """What recording an activity's outcome did: "ok", "duplicate" or "dropped", and the
    queue's next task, delivered to the recording worker (see `take_next`)."""

    outcome: str
    next_task: Task | None = None


@dataclass(frozen=True)
class CloseWait:
    """What a wait for a workflow's close found."""

    # "" when there is no such workflow; None when the wait did not read it.
    status: str | None
    closed: bool  # its close notice came
    # The closing event, when the notice holds one that decodes (else read the meta).
    closing: Event | None = None


class Workflows(History, Tasks):
    """Each transition of a workflow is one Lua script: atomic, fenced, retry-safe."""

    async def start_workflow(
        self,
        workflow_id: str,
        *,
        name: str,
        version: str,
        queue: str,
        owner: str | None,
        agent: str | None,
        total_steps: int,
        workflow_input: Any,
        initial_state: dict[str, Any] | None = None,
        request_id: str,
        retention_ms: int | None = None,
    ) -> tuple[bool, str]:
        """Create the workflow; returns (created, status) and never writes a second
        history. A call repeated with the same `request_id` (a client retrying after a
        lost reply) finds its own start: (True, status). `retention_ms` overrides the
        namespace's retention at its close."""
        keys = self.keys
        shard = keys.shard_of(workflow_id)
        what = f"input of workflow {workflow_id!r} ({name})"
        encoded_input = encode(workflow_input, what=what)
        if initial_state is not None:
            encode(initial_state, what=f"initial state of workflow {workflow_id!r} ({name})")
        started = encode(
            {
                "input": workflow_input,
                "state": initial_state,
                "name": name,
                "version": version,
                "owner": owner,
                "queue": queue,
                # Seeds the workflow's random generator (ctx.random()), so that a replay
                # draws what the first run drew, and no two workflows draw alike.
                "seed": secrets.randbits(64),
            },
            what=what,
            carries=USER_VALUES[EventType.WORKFLOW_STARTED],
        )
        meta = [
            MetaField.NAME,
            name,
            MetaField.VERSION,
            version,
            MetaField.QUEUE,
            queue,
            MetaField.OWNER,
            owner or "",
            MetaField.AGENT,
            agent or "",
            MetaField.INPUT,
            encoded_input,
            MetaField.TOTAL_STEPS,
            str(total_steps),
            MetaField.STEP,
            "0",
        ]
        if retention_ms is not None:
            meta += [MetaField.RETENTION, str(retention_ms)]
        script_keys = [
            keys.meta(workflow_id),
            keys.history(workflow_id),
            keys.queue(shard, queue),
            keys.started_index(shard),
        ]
        if owner:
            script_keys.append(keys.owner_index(shard, owner))
        with acl_checked(f"start workflow {workflow_id!r}", self.url, self.keys.namespace):
            reply = await self._run(
                "start",
                script_keys,
                [
                    workflow_id,
                    now_ms(),
                    keys.status_index_prefix(shard),
                    started,
                    request_id,
                    "1" if len(started) <= CARRY_BYTES else "0",
                    *meta,
                ],
            )
        return text(reply[0]) == Reply.STARTED, text(reply[1])

    async def await_close(
        self, workflow_id: str, block_seconds: float, *, registered: bool = False
    ) -> CloseWait:
        """Wait up to `block_seconds` for the workflow to close, blocked on its close
        notice, so that the waiter wakes once, at the close, with the closing event.

        Its start registered a waiter, so the notice is pushed at the close and stays
        CLOSE_NOTICE_MS: a client that started the workflow less long ago than that may
        say `registered`, and the wait is one BLMOVE. Otherwise one round trip registers
        the wait (await_close.lua: the status, and a notice at once for a closed or an
        unknown workflow) and blocks.
        """
        notice = self.keys.close_notice(workflow_id)
        # BLMOVE's 0 would block for ever.
        block = ("BLMOVE", notice, notice, "RIGHT", "LEFT", f"{max(block_seconds, 0.001):.3f}")
        with acl_checked(
            f"wait for the close of workflow {workflow_id!r}", self.url, self.keys.namespace
        ):
            status: str | None = None
            if registered:
                packed = await self._lane.execute(*block)
                if packed == NO_WORKFLOW:  # left by a wait for the id before its start
                    return await self.await_close(workflow_id, block_seconds)
            else:
                keys = [self.keys.meta(workflow_id), self.keys.history(workflow_id), notice]
                # Only registers a waiter: no transition to make durable.
                found, packed = await self._run("await_close", keys, [], block, transition=False)
                status = text(found)
        if packed is None or status == "":
            return CloseWait(status, closed=False)
        closing = None
        entry = msgpack.unpackb(packed, raw=True)
        if entry:
            entry_id, flat = entry
            with contextlib.suppress(PayloadError):
                closing = self.decode_event(workflow_id, entry_id, field_map(flat))
        return CloseWait(status, closed=True, closing=closing)

    async def commit_workflow_task(
        self,
        workflow_id: str,
        *,
        queue: str,
        task_id: str,
        expected_length: int,
        plans: Sequence[TaskPlan],
        take_next_for: str = "",
        task_stream: str = "",
        last_read_id: str = "",
    ) -> CommitResult:
        """Write the plans of a workflow task, in order, fenced by `expected_length`.

        With `last_read_id` (the id of the last history entry the task read, which must
        be entry number `expected_length`), external events that arrived after it do not
        fence a one-plan commit out: they are left to the next task, which the commit
        requests (`CommitResult.skipped`, see commit.lua).

        `task_id` is acknowledged: the workflow task, or the activity task whose outcome
        the first plan records (`TaskPlan.completing`), in `task_stream` (by default the
        queue's workflow task stream). With `take_next_for` (a consumer), the queue's
        next task is delivered to it in the same round trip (`CommitResult.next_task`).

        The outcome is "ok", "conflict" when the history moved since it was read, a
        workflow task is queued while the first plan records an activity's outcome, or
        that outcome is already recorded (nothing is written), or "closed" when the
        workflow has ended.
        """
        keys = self.keys
        shard = keys.shard_of(workflow_id)
        workflow_stream = keys.queue(shard, queue)
        reply = await self._run(
            "commit",
            [
                keys.meta(workflow_id),
                keys.history(workflow_id),
                task_stream or workflow_stream,
                keys.timers(shard),
                keys.activity_queue(shard, queue),
                workflow_stream,
                keys.close_notice(workflow_id),
                keys.expiry_index(shard),
            ],
            [
                workflow_id,
                expected_length,
                task_id,
                keys.status_index_prefix(shard),
                WORKER_GROUP,
                pack_for_lua([lua_plan(workflow_id, queue, plan) for plan in plans]),
                keys.owner_index_prefix(shard),
                take_next_for,
                last_read_id,
                self.retention_ms,
            ],
        )
        outcome = text(reply[0])
        if outcome == Reply.CLOSED:
            return CommitResult(outcome, 0, "", taken_task(shard, reply[2]))
        if outcome == Reply.CONFLICT:
            return CommitResult(outcome, int(reply[1]), "")
        skipped: list[Event] | None
        try:
            skipped = [self.decode_event(workflow_id, i, field_map(f)) for i, f in reply[4]]
        except PayloadError:
            skipped = None  # the next task reads them itself, and fails the workflow
        return CommitResult(
            outcome,
            int(reply[1]),
            text(reply[2]),
            taken_task(shard, reply[3]),
            skipped=len(reply[4]),
            skipped_events=skipped,
        )

    async def record_activity_result(
        self,
        task: Task,
        *,
        failed: bool,
        record: bytes,
        take_next_for: str = "",
        history_after: str = "",
    ) -> ActivityRecorded:
        """ACTIVITY_COMPLETED (or, when `failed`, ACTIVITY_FAILED) once, with `record`
        (the result or error, encoded as the worker checked it could be written).

        With `take_next_for` (a consumer), the queue's next task is delivered to it in
        the same round trip; when that is this workflow's task and `history_after` (the
        last entry id of the instance the worker holds) is given, the task comes with
        the history entries after it (`Task.preloaded`).
        """
        workflow_id = task.workflow_id
        seq = text(task.fields.get(TaskField.SEQ))
        event_type = EventType.ACTIVITY_FAILED if failed else EventType.ACTIVITY_COMPLETED
        queue = self.keys.queue_of(task.queue_key)
        reply = await self._run(
            "activity_result",
            [
                self.keys.meta(workflow_id),
                self.keys.history(workflow_id),
                task.queue_key,
                self.keys.activity_queue(task.shard, queue),
                self.keys.queue(task.shard, queue),
                self.keys.timers(task.shard),
            ],
            [
                workflow_id,
                seq,
                task.id,
                now_ms(),
                str(event_type),
                record,
                WORKER_GROUP,
                take_next_for,
                history_after,
                PRELOAD_PAGE,
                task.lease,
            ],
        )
        next_task = taken_task(task.shard, reply[1])
        if next_task is not None and reply[2]:
            try:
                events = [self.decode_event(workflow_id, i, field_map(f)) for i, f in reply[2]]
                if len(events) == PRELOAD_PAGE:
                    events += await self.read_history(workflow_id, after=events[-1].id)
            except PayloadError:
                # The workflow task reads the history itself, and fails the workflow.
                return ActivityRecorded(text(reply[0]), next_task)
            next_task = replace(next_task, preloaded=(history_after, events))
        return ActivityRecorded(text(reply[0]), next_task)

    async def schedule_activity_retry(
        self, task: Task, *, queue: str, attempt: int, due_ms: int
    ) -> str:
        workflow_id = task.workflow_id
        seq = int(text(task.fields.get(TaskField.SEQ)))
        member = self.retry_member(workflow_id, queue, seq, attempt, task.fields[TaskField.PAYLOAD])
        return text(
            await self._run(
                "activity_retry",
                [self.keys.meta(workflow_id), task.queue_key, self.keys.timers(task.shard)],
                [str(seq), task.id, WORKER_GROUP, str(due_ms), member, task.lease],
            )
        )

    async def deliver_external(
        self,
        workflow_id: str,
        event_type: EventType,
        data: Any,
        *,
        once_field: str = "",
        request_id: str = "",
    ) -> tuple[str, str]:
        """Append a signal or cancel request to an open workflow: ('ok'|'missing'|'closed'|
        'duplicate', status).

        `once_field` (a meta field, such as the cancel request's) makes the event happen at
        most once in the workflow's life; `request_id` makes it happen at most once among
        the last ONCE_KEEP requests of the last ONCE_KEEP_MS. Without either, each call
        gets a request id of its own, so that redis-py's retry of a call whose reply was
        lost does not deliver the event twice.
        """
        if not once_field and not request_id:
            request_id = uuid.uuid4().hex
        queue = await self.redis.hget(self.keys.meta(workflow_id), MetaField.QUEUE)
        if queue is None:
            return Reply.MISSING, ""
        shard = self.keys.shard_of(workflow_id)
        doing = "cancel" if event_type == EventType.WORKFLOW_CANCEL_REQUESTED else "signal"
        with acl_checked(f"{doing} workflow {workflow_id!r}", self.url, self.keys.namespace):
            reply = await self._run(
                "external",
                [
                    self.keys.meta(workflow_id),
                    self.keys.history(workflow_id),
                    self.keys.queue(shard, text(queue)),
                    self.keys.once_requests(workflow_id),
                ],
                [
                    workflow_id,
                    now_ms(),
                    str(event_type),
                    encode(
                        data,
                        what=f"{event_type} for workflow {workflow_id!r}",
                        carries=USER_VALUES.get(event_type),
                    ),
                    once_field,
                    request_id,
                ],
            )
        return text(reply[0]), text(reply[1])

    def held_activity_task(self, workflow_id: str, queue: str, command: Command) -> Task:
        """The task of a scheduled activity that its worker runs at once instead of
        queueing it (`TaskPlan.held_activity`). It has no id; its lease is a timer member
        (`Task.lease`) that fires it as a queued task of attempt 1 unless its worker
        records its outcome or keeps renewing the member (a worker that dies does
        neither)."""
        shard = self.keys.shard_of(workflow_id)
        payload = command_payload(command, workflow_id)
        fields = self.activity_task_fields(workflow_id, command.seq, 1, payload)
        # As a read returns the fields of a queued activity task.
        task_fields = {
            k: v if isinstance(v, bytes) else v.encode()
            for k, v in zip(fields[::2], fields[1::2], strict=True)
        }
        task_fields[TaskField.LEASE] = self.retry_member(
            workflow_id, queue, command.seq, 1, payload
        )
        return Task(self.keys.activity_queue(shard, queue), shard, "", task_fields)
