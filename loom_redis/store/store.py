"""The Store: every read and every transition on Redis, each transition one Lua script."""

from __future__ import annotations

import contextlib
import functools
import logging
import secrets
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from importlib import resources
from typing import Any

import msgpack
import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, ResponseError

from ..codec import decode, encode, max_payload_bytes
from ..errors import (
    ConfigurationError,
    PayloadError,
)
from ..events import EXTERNAL_TYPES, USER_VALUES, Command, Event, EventType, Status
from .connection import (
    DirectLane,
    acl_checked,
    connect_redis,
    now_ms,
    permission_error,
    redis_errors,
)
from .keys import MAX_SHARDS, WORKER_GROUP, Keyspace, validate_namespace, validate_queue

logger = logging.getLogger("loom_redis.store")

HISTORY_PAGE = 1000
# At most this many history entries come with a workflow task delivered by a transition.
PRELOAD_PAGE = 100
# A workflow's first task carries its WORKFLOW_STARTED event up to this size (the queue
# entry lives only until the task is done), so the worker need not read the history.
CARRY_BYTES = 16 * 1024
# How long a workflow's close notice (see Store.await_close) outlives its close.
CLOSE_NOTICE_MS = 60_000
# The notice that ends a wait for a workflow that does not exist (see await_close.lua).
NO_WORKFLOW = b"none"
# The most external events a commit leaves to the next task (see commit.lua); a history
# that moved by more since the worker read it is a conflict.
MAX_SKIPPED = 1000
# Workers write a heartbeat this often; one older than LIVE_HEARTBEAT_MS (three missed)
# is not counted as live.
HEARTBEAT_MS = 5000
LIVE_HEARTBEAT_MS = 3 * HEARTBEAT_MS
# A task loom-redis writes has at most a dozen fields. One with more than this, written
# by hand, is cut to this many when it goes to the dead-letter stream, and a timer member
# or dead-lettered entry with more is refused, so that no script passes more values to a
# command than Lua can (about 8,000).
MAX_TASK_FIELDS = 64
# The heartbeat fields that list the workflows and activities a worker registers.
REGISTRATION_FIELDS = {"workflow": "workflows", "activity": "activities"}
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
)


def _plan(value: Any) -> bytes:
    # Lua's cmsgpack reads only the old raw type, so plans go without bin types;
    # Python never reads a plan back.
    packed: bytes = msgpack.packb(value, use_bin_type=False)
    return packed


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    # "replace": a field written by hand with bytes that are not UTF-8 must not crash
    # the worker that reads it; the replacement characters show in its dead-letter reason.
    return value.decode(errors="replace") if isinstance(value, bytes) else value


@dataclass(frozen=True)
class Task:
    """One entry of a task stream, as a worker received it."""

    queue_key: str
    shard: int
    id: str
    fields: dict[str, bytes]
    # For a workflow task delivered with an activity's result: (entry id, the workflow's
    # history entries after it), read in that same round trip.
    preloaded: tuple[str, list[Event]] | None = field(default=None, compare=False)

    # Decoded once: every step of a task's run asks.
    @cached_property
    def kind(self) -> str:
        return _text(self.fields.get("k"))

    @cached_property
    def workflow_id(self) -> str:
        return _text(self.fields.get("wf"))

    @property
    def unregistered_since(self) -> int:
        """Since when (ms) no live worker of its queue has registered the task's workflow
        or activity, as the workers that handed it back saw it; 0 if one had."""
        return int(self.fields.get("unreg_since", b"0"))

    @property
    def handbacks(self) -> int:
        """How many times workers that do not register its name handed it back."""
        return int(self.fields.get("handbacks", b"0"))

    @property
    def lease(self) -> bytes:
        """The timer member standing in for an activity task that was never queued (its
        worker runs it at once: see Store.held_activity_task), b"" for a queued task."""
        return self.fields.get("lease", b"")


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


@dataclass(frozen=True)
class UnreadableEntry:
    """A history entry that does not decode (written by hand, or over this reader's
    payload limit), as a listing shows it."""

    id: str
    problem: str

    def to_dict(self) -> dict[str, Any]:
        """As Event.to_dict, with type UNREADABLE and the problem."""
        return {
            "id": self.id,
            "type": "UNREADABLE",
            "seq": 0,
            "time_ms": 0,
            "data": None,
            "problem": self.problem,
        }


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


@dataclass(frozen=True)
class DeadLetter:
    """A task in a dead-letter stream: its original fields plus why and where from."""

    # Fields the dead-letter script adds to the task's own.
    ANNOTATIONS = ("reason", "queue", "task_id")

    shard: int
    id: str
    fields: dict[str, bytes]

    @property
    def reason(self) -> str:
        return _text(self.fields.get("reason"))

    @property
    def workflow_id(self) -> str:
        return _text(self.fields.get("wf"))

    @property
    def kind(self) -> str:
        if "timer" in self.fields:  # a corrupt timer member, not a task
            return "timer"
        return {"w": "workflow", "a": "activity"}.get(_text(self.fields.get("k")), "unknown")


def _describe(command: Command, workflow_id: str) -> str:
    """How errors name a command's payload."""
    return f"{command.describe()} of workflow {workflow_id!r} in step {command.step!r}"


def _payload(command: Command, workflow_id: str) -> bytes:
    """A command's data as its event (and an activity's task) carries it."""
    return command.encoded or encode(
        command.data,
        what=functools.partial(_describe, command, workflow_id),
        carries=USER_VALUES.get(command.type),
    )


def _field_map(flat: list[bytes]) -> dict[bytes, bytes]:
    """A stream entry's fields as a script returns them (k, v, k, v, ...)."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _task(stream: bytes | str, shard: int, entry_id: bytes, fields: dict[bytes, bytes]) -> Task:
    """A task stream entry as a read, a claim or a script returned it."""
    return Task(_text(stream), shard, _text(entry_id), {_text(k): v for k, v in fields.items()})


def _taken(shard: int, taken: Any) -> Task | None:
    """The task a script delivered with `take_next` ({stream, {id, fields}} or nil)."""
    if not taken:
        return None
    stream, (entry_id, flat) = taken
    return _task(stream, shard, entry_id, _field_map(flat))


async def _create_config(redis: aioredis.Redis, key: str, shards: int) -> bytes | str | None:
    """Write a namespace's shard count unless it has one; the count it has now."""
    await redis.hsetnx(key, "shards", shards)
    return await redis.hget(key, "shards")


def _stored_shards(key: str, found: bytes | str | None) -> int:
    """The shard count a namespace's config holds, refused unless it is 1..MAX_SHARDS (a
    hand-edited count would put every workflow on another shard)."""
    text = _text(found)
    if not (text.isascii() and text.isdigit() and 1 <= int(text) <= MAX_SHARDS):
        raise ConfigurationError(
            f"field 'shards' of {key} holds {text!r}, not a shard count 1..{MAX_SHARDS}; "
            "set it back to the count the namespace was created with (16 unless "
            "`loom init --shards` chose another)"
        )
    return int(text)


class ConsumerGroupMissing(ResponseError):
    """A task stream has no consumer group (NOGROUP): the server lost the namespace's
    data, or its keys were deleted. Workers recreate them (`Store.restore_namespace`)."""


@contextlib.contextmanager
def _groups_checked() -> Iterator[None]:
    try:
        yield
    except ResponseError as exc:
        if str(exc).startswith("NOGROUP"):
            raise ConsumerGroupMissing(str(exc)) from None
        raise


def _stream_id_order(entry_id: str) -> tuple[int, int]:
    millis, _, sequence = entry_id.partition("-")
    return int(millis), int(sequence or 0)


@dataclass(frozen=True)
class TimerMember:
    """A decoded member of a timer zset."""

    raw: bytes
    shard: int
    due_ms: int
    kind: str
    workflow_id: str
    queue: str
    # A retry of attempt 1: the lease of an activity its worker ran at once (see
    # held_activity_task), due because that worker stopped renewing it.
    lease: bool = False


class Store:
    """Reads and transitions of one namespace on one Redis."""

    def __init__(self, redis: aioredis.Redis, keys: Keyspace, url: str = "") -> None:
        self.redis = redis
        self.keys = keys
        self.url = url
        self._lane = DirectLane(redis)
        external = ", ".join(f"{t} = true" for t in sorted(EXTERNAL_TYPES))
        lib = (
            f"local CLOSE_NOTICE_MS = {CLOSE_NOTICE_MS}\n"
            f"local NO_WORKFLOW = '{NO_WORKFLOW.decode()}'\n"
            f"local EXTERNAL = {{{external}}}\n"
            f"local MAX_SKIPPED = {MAX_SKIPPED}\n" + _script_source("lib")
        )
        self._scripts: dict[str, AsyncScript] = {
            name: redis.register_script(lib + "\n" + _script_source(name)) for name in SCRIPT_NAMES
        }

    @classmethod
    async def open(cls, url: str, namespace: str, shards: int | None = None) -> Store:
        """Connect and read the namespace's shard count (creating it on first use)."""
        validate_namespace(namespace)
        max_payload_bytes()  # a bad LOOM_MAX_PAYLOAD_BYTES fails here, not at some large payload
        redis = await connect_redis(url)
        try:
            keys = Keyspace(namespace)
            # Only None means the default: 0 is an error, not a request for 16 shards.
            wanted = keys.shards if shards is None else shards
            if not isinstance(wanted, int) or not 1 <= wanted <= MAX_SHARDS:
                raise ConfigurationError(f"shard count must be 1..{MAX_SHARDS}, got {wanted!r}")
            # Read first: a read-only (dashboard) user can open an existing namespace.
            with redis_errors(f"open namespace {namespace!r}", url):
                found = await redis.hget(keys.config(), "shards")
            if found is None:
                with redis_errors(f"create namespace {namespace!r}", url):
                    found = await _create_config(redis, keys.config(), wanted)
            stored = _stored_shards(keys.config(), found)
            if shards is not None and stored != shards:
                raise ConfigurationError(
                    f"namespace {namespace!r} was created with {stored} shards, not {shards}; "
                    "the shard count of a namespace is fixed"
                )
        except BaseException:
            await redis.aclose()
            raise
        return cls(redis, Keyspace(namespace, stored), url)

    async def load_scripts(self) -> None:
        """Load every Lua script into Redis now, so no transition pays a NOSCRIPT round
        trip later (workers do this when they start)."""
        pipe = self.redis.pipeline(transaction=False)
        for script in self._scripts.values():
            pipe.script_load(script.script)
        await pipe.execute()

    async def ping(self) -> None:
        """Raise a RedisError unless Redis answers."""
        await self.redis.ping()

    async def close(self) -> None:
        await self._lane.aclose()
        await self.redis.aclose()

    async def _run(
        self, name: str, keys: Sequence[str], args: Sequence[Any], *then: Sequence[Any]
    ) -> Any:
        """Run a script; with `then` (commands sent in the same write), return the replies
        of all."""
        script = self._scripts[name]
        call = ("EVALSHA", script.sha, len(keys), *keys, *args)
        try:
            replies = await self._lane.execute_chain(call, *then)
        except NoScriptError:  # a restarted or flushed server: load them, once
            await self.load_scripts()
            replies = await self._lane.execute_chain(call, *then)
        return replies if then else replies[0]

    # -- start ---------------------------------------------------------------------

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
    ) -> tuple[bool, str]:
        """Create the workflow; returns (created, status) and never writes a second
        history. A call repeated with the same `request_id` (a client retrying after a
        lost reply) finds its own start: (True, status)."""
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
            "name",
            name,
            "version",
            version,
            "queue",
            queue,
            "owner",
            owner or "",
            "agent",
            agent or "",
            "input",
            encoded_input,
            "total_steps",
            str(total_steps),
            "step",
            "0",
        ]
        script_keys = [
            keys.meta(workflow_id),
            keys.history(workflow_id),
            keys.queue(shard, queue),
            keys.started_index(shard),
        ]
        if owner:
            script_keys.append(keys.owner_index(shard, owner))
        with acl_checked(f"start workflow {workflow_id!r}", self.url):
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
        return _text(reply[0]) == "started", _text(reply[1])

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
        with acl_checked(f"wait for the close of workflow {workflow_id!r}", self.url):
            status: str | None = None
            if registered:
                packed = await self._lane.execute(*block)
                if packed == NO_WORKFLOW:  # left by a wait for the id before its start
                    return await self.await_close(workflow_id, block_seconds)
            else:
                keys = [self.keys.meta(workflow_id), self.keys.history(workflow_id), notice]
                found, packed = await self._run("await_close", keys, [], block)
                status = _text(found)
        if packed is None or status == "":
            return CloseWait(status, closed=False)
        closing = None
        entry = msgpack.unpackb(packed, raw=True)
        if entry:
            entry_id, flat = entry
            with contextlib.suppress(PayloadError):
                closing = self.decode_event(workflow_id, entry_id, _field_map(flat))
        return CloseWait(status, closed=True, closing=closing)

    # -- reads ---------------------------------------------------------------------

    async def read_meta(self, workflow_id: str) -> dict[str, bytes]:
        raw: Any = await self.redis.hgetall(self.keys.meta(workflow_id))
        return {k.decode(): v for k, v in raw.items()}

    async def _history_pages(
        self, workflow_id: str, after: str | None = None
    ) -> AsyncIterator[list[tuple[bytes, dict[bytes, bytes]]]]:
        """A history's raw entries in pages (after stream id `after`, if given)."""
        key = self.keys.history(workflow_id)
        start = f"({after}" if after else "-"
        while True:
            page: Any = await self.redis.xrange(key, min=start, max="+", count=HISTORY_PAGE)
            yield page
            if len(page) < HISTORY_PAGE:
                return
            start = f"({_text(page[-1][0])}"

    async def read_history(self, workflow_id: str, after: str | None = None) -> list[Event]:
        """History events in order (after stream id `after`, if given); raises
        PayloadError at an entry that does not decode."""
        return [
            self.decode_event(workflow_id, entry_id, fields)
            async for page in self._history_pages(workflow_id, after)
            for entry_id, fields in page
        ]

    async def read_history_entries(self, workflow_id: str) -> list[Event | UnreadableEntry]:
        """History events in order, an entry that does not decode standing as an
        UnreadableEntry (to show a history, not to replay it)."""
        entries: list[Event | UnreadableEntry] = []
        async for page in self._history_pages(workflow_id):
            for entry_id, fields in page:
                try:
                    entries.append(self.decode_event(workflow_id, entry_id, fields))
                except PayloadError as exc:
                    entries.append(UnreadableEntry(_text(entry_id), str(exc)))
        return entries

    async def history_summary(self, workflow_id: str) -> tuple[int, int]:
        """(length, highest seq) of a history, read without decoding its entries, so that a
        workflow whose history holds a corrupt entry can still be failed (fenced by length)."""
        length, last_seq = 0, 0
        async for page in self._history_pages(workflow_id):
            length += len(page)
            for _entry_id, fields in page:
                with contextlib.suppress(ValueError, TypeError):
                    last_seq = max(last_seq, int(fields.get(b"seq", b"0")))
        return length, last_seq

    @staticmethod
    def carried_history(task: Task) -> list[Event] | None:
        """The history a workflow's first task carries (its WORKFLOW_STARTED event), as it
        was when the task was queued; None if the task carries none."""
        entry_id = task.fields.get("started_id")
        if entry_id is None:
            return None
        fields = {b"type": b"WORKFLOW_STARTED", b"t": task.fields.get("started_t", b"")}
        fields[b"d"] = task.fields.get("started", b"")
        try:
            return [Store.decode_event(task.workflow_id, entry_id, fields)]
        except PayloadError:  # a copy spoilt in the queue: the history itself may be fine
            return None

    @staticmethod
    def decode_event(workflow_id: str, entry_id: bytes | str, fields: dict[bytes, bytes]) -> Event:
        event_id = _text(entry_id)

        def what() -> str:
            return f"history entry {event_id} of workflow {workflow_id!r}"

        try:
            event_type = EventType(_text(fields[b"type"]))
            seq = int(fields.get(b"seq", b"0"))
            time_ms = int(fields[b"t"])
        except (KeyError, ValueError) as exc:
            raise PayloadError(f"{what()} is malformed ({exc!r})") from None
        return Event(event_id, event_type, seq, time_ms, decode(fields.get(b"d"), what=what))

    # -- workflow task commit ------------------------------------------------------

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
            ],
            [
                workflow_id,
                expected_length,
                task_id,
                keys.status_index_prefix(shard),
                WORKER_GROUP,
                _plan([self._lua_plan(workflow_id, queue, plan) for plan in plans]),
                keys.owner_index_prefix(shard),
                take_next_for,
                last_read_id,
            ],
        )
        outcome = _text(reply[0])
        if outcome == "closed":
            return CommitResult(outcome, 0, "", _taken(shard, reply[2]))
        if outcome == "conflict":
            return CommitResult(outcome, int(reply[1]), "")
        skipped: list[Event] | None
        try:
            skipped = [self.decode_event(workflow_id, i, _field_map(f)) for i, f in reply[4]]
        except PayloadError:
            skipped = None  # the next task reads them itself, and fails the workflow
        return CommitResult(
            outcome,
            int(reply[1]),
            _text(reply[2]),
            _taken(shard, reply[3]),
            skipped=len(reply[4]),
            skipped_events=skipped,
        )

    def _lua_plan(self, workflow_id: str, queue: str, plan: TaskPlan) -> dict[str, Any]:
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
            "signals",
            encode(list(plan.waiting_signals)) if plan.waiting_signals else "",
        ]
        completing = plan.completing
        if completing is not None:
            events.append([str(completing.type), str(completing.seq), plan.completing_data])
            meta_delete.append(f"a:{completing.seq}")
        for command in plan.commands:
            encoded = _payload(command, workflow_id)
            events.append([str(command.type), str(command.seq), encoded])
            if command.type == EventType.ACTIVITY_SCHEDULED:
                meta_fields += [f"a:{command.seq}", "1"]
                if command.seq != plan.held_activity:
                    tasks.append(self.activity_task_fields(workflow_id, command.seq, 1, encoded))
            elif command.type == EventType.TIMER_STARTED:
                meta_fields += [f"t:{command.seq}", "1"]
                member = self.timer_member("timer", workflow_id, queue, command.seq)
                timers.append([str(command.due_ms), member])
            elif command.type == EventType.TIMER_CANCELLED:
                timer_seq = int(command.data["timer_seq"])
                meta_delete.append(f"t:{timer_seq}")
                cancelled.append(self.timer_member("timer", workflow_id, queue, timer_seq))
            elif command.type == EventType.STEP_STARTED:
                meta_fields += [
                    "step",
                    str(command.data["index"]),
                    "step_name",
                    command.data["name"],
                    "step_desc",
                    command.data.get("description") or "",
                ]
            elif command.type == EventType.WORKFLOW_COMPLETED:
                result = command.data.get("result")
                meta_fields += [
                    "result",
                    encode(result, what=functools.partial(_describe, command, workflow_id)),
                    "closed",
                    str(now_ms()),
                ]
            elif command.type in (EventType.WORKFLOW_FAILED, EventType.WORKFLOW_CANCELLED):
                what = functools.partial(_describe, command, workflow_id)
                meta_fields += ["error", encode(command.data, what=what), "closed", str(now_ms())]
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

    @staticmethod
    def activity_task_fields(workflow_id: str, seq: int, attempt: int, payload: bytes) -> list[Any]:
        """An activity task carries its arguments, so activity workers never read history."""
        return ["k", "a", "wf", workflow_id, "seq", str(seq), "att", str(attempt), "p", payload]

    def held_activity_task(self, workflow_id: str, queue: str, command: Command) -> Task:
        """The task of a scheduled activity that its worker runs at once instead of
        queueing it (`TaskPlan.held_activity`). It has no id; its lease is a timer member
        (`Task.lease`) that fires it as a queued task of attempt 1 unless its worker
        records its outcome or keeps renewing the member (a worker that dies does
        neither)."""
        shard = self.keys.shard_of(workflow_id)
        payload = _payload(command, workflow_id)
        fields = self.activity_task_fields(workflow_id, command.seq, 1, payload)
        # As a read returns the fields of a queued activity task.
        task_fields = {
            k: v if isinstance(v, bytes) else v.encode()
            for k, v in zip(fields[::2], fields[1::2], strict=True)
        }
        task_fields["lease"] = self.retry_member(workflow_id, queue, command.seq, 1, payload)
        return Task(self.keys.activity_queue(shard, queue), shard, "", task_fields)

    async def renew_activity_lease(self, task: Task, due_ms: int) -> bool:
        """Move a held activity's lease member to `due_ms`; False if it is gone (it fired:
        the activity is queued for another attempt 1, or its outcome is recorded)."""
        changed = await self.redis.zadd(
            self.keys.timers(task.shard), {task.lease: due_ms}, xx=True, ch=True
        )
        return bool(changed)

    def retry_member(
        self, workflow_id: str, queue: str, seq: int, attempt: int, payload: bytes
    ) -> bytes:
        """The timer member that queues attempt `attempt` of an activity when it is due."""
        fields = self.activity_task_fields(workflow_id, seq, attempt, payload)
        return self.timer_member("retry", workflow_id, queue, seq, fields)

    @staticmethod
    def timer_member(
        kind: str, workflow_id: str, queue: str, seq: int, task: list[Any] | None = None
    ) -> bytes:
        return _plan([kind, workflow_id, queue, str(seq), task or []])

    # -- activities ----------------------------------------------------------------

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
        seq = _text(task.fields.get("seq"))
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
        next_task = _taken(task.shard, reply[1])
        if next_task is not None and reply[2]:
            try:
                events = [self.decode_event(workflow_id, i, _field_map(f)) for i, f in reply[2]]
                if len(events) == PRELOAD_PAGE:
                    events += await self.read_history(workflow_id, after=events[-1].id)
            except PayloadError:
                # The workflow task reads the history itself, and fails the workflow.
                return ActivityRecorded(_text(reply[0]), next_task)
            next_task = replace(next_task, preloaded=(history_after, events))
        return ActivityRecorded(_text(reply[0]), next_task)

    async def schedule_activity_retry(
        self, task: Task, *, queue: str, attempt: int, due_ms: int
    ) -> str:
        workflow_id = task.workflow_id
        seq = int(_text(task.fields.get("seq")))
        member = self.retry_member(workflow_id, queue, seq, attempt, task.fields["p"])
        return _text(
            await self._run(
                "activity_retry",
                [self.keys.meta(workflow_id), task.queue_key, self.keys.timers(task.shard)],
                [str(seq), task.id, WORKER_GROUP, str(due_ms), member, task.lease],
            )
        )

    # -- signals and cancellation --------------------------------------------------

    async def deliver_external(
        self, workflow_id: str, event_type: EventType, data: Any, *, once_field: str = ""
    ) -> tuple[str, str]:
        """Append a signal or cancel request to an open workflow: ('ok'|'missing'|'closed'|
        'duplicate', status).

        `once_field` (a meta field) makes the event happen at most once; by default each
        call gets its own, so that redis-py's retry of a call whose reply was lost does
        not deliver the event twice.
        """
        once_field = once_field or f"once:{uuid.uuid4().hex}"
        queue = await self.redis.hget(self.keys.meta(workflow_id), "queue")
        if queue is None:
            return "missing", ""
        shard = self.keys.shard_of(workflow_id)
        doing = "cancel" if event_type == EventType.WORKFLOW_CANCEL_REQUESTED else "signal"
        with acl_checked(f"{doing} workflow {workflow_id!r}", self.url):
            reply = await self._run(
                "external",
                [
                    self.keys.meta(workflow_id),
                    self.keys.history(workflow_id),
                    self.keys.queue(shard, _text(queue)),
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
                ],
            )
        return _text(reply[0]), _text(reply[1])

    # -- timers --------------------------------------------------------------------

    async def due_timers(self, limit: int = 100) -> tuple[list[TimerMember], int | None]:
        """Due timer members of every shard, and the earliest due time still ahead."""
        now = now_ms()
        pipe: Pipeline = self.redis.pipeline(transaction=False)
        for shard in range(self.keys.shards):
            timers = self.keys.timers(shard)
            pipe.zrangebyscore(timers, "-inf", now, start=0, num=limit, withscores=True)
            pipe.zrangebyscore(timers, f"({now}", "+inf", start=0, num=1, withscores=True)
        replies = await pipe.execute()
        due: list[TimerMember] = []
        ahead = [int(entries[0][1]) for entries in replies[1::2] if entries]
        for shard, entries in enumerate(replies[0::2]):
            for raw, score in entries:
                member = self._timer_member(raw, shard, int(score))
                if isinstance(member, str):
                    reason = f"corrupt member of timers of shard {shard}: {member}"
                    # Not the member itself: a retry's member carries an activity's arguments.
                    logger.error("a timer member goes to the dead-letter stream: %s", reason)
                    await self._run(
                        "dead_timer",
                        [self.keys.timers(shard), self.keys.dead(shard)],
                        [raw, reason],
                    )
                    continue
                due.append(member)
        return due, min(ahead, default=None)

    def _timer_member(self, raw: bytes, shard: int, score: int) -> TimerMember | str:
        """The decoded member, or why it is corrupt (it was not written by `timer_member`)."""
        try:
            value = msgpack.unpackb(raw, raw=True)
        except Exception as exc:  # msgpack raises several unrelated types for bad bytes
            return f"not msgpack ({type(exc).__name__}: {str(exc) or 'malformed data'})"
        expected = "expected [kind, workflow id, queue, seq, task fields]"
        if not (
            isinstance(value, list)
            and len(value) == 5
            and all(isinstance(part, bytes) for part in value[:4])
            and isinstance(value[4], list)
        ):
            return f"{_readable(value)!r:.200} is not the {expected}"
        kind, workflow_id, queue, seq = (_text(part) for part in value[:4])
        if kind not in ("timer", "retry", "resume", "requeue"):
            return f"unknown kind {kind!r} ({expected}, kind timer, retry, resume or requeue)"
        if not workflow_id or self.keys.shard_of(workflow_id) != shard:
            return f"workflow id {workflow_id!r} does not belong to shard {shard}"
        try:
            validate_queue(queue)
        except ConfigurationError as exc:
            return str(exc)
        if not seq.isdigit() or (kind in ("retry", "requeue") and not value[4]):
            return f"{_readable(value)!r:.200} has a bad seq or task ({expected})"
        task_fields = value[4]
        if (
            len(task_fields) % 2
            or len(task_fields) > 2 * MAX_TASK_FIELDS
            or not all(isinstance(part, bytes) for part in task_fields)
        ):
            return (
                f"its task {_readable(task_fields)!r:.200} is not a list of at most "
                f"{MAX_TASK_FIELDS} fields and values"
            )
        task = dict(zip(value[4][::2], value[4][1::2], strict=False))
        # An activity task handed back (defer_task) is no lease, whatever its attempt.
        lease = kind == "retry" and task.get(b"att") == b"1" and b"handbacks" not in task
        return TimerMember(raw, shard, score, kind, workflow_id, queue, lease)

    async def fire_timer(self, member: TimerMember) -> str:
        keys = self.keys
        return _text(
            await self._run(
                "fire_timer",
                [
                    keys.timers(member.shard),
                    keys.meta(member.workflow_id),
                    keys.history(member.workflow_id),
                    # A retry puts an activity task back; the others wake the workflow.
                    (keys.activity_queue if member.kind == "retry" else keys.queue)(
                        member.shard, member.queue
                    ),
                ],
                [member.raw, now_ms()],
            )
        )

    # -- task streams --------------------------------------------------------------

    async def ensure_groups(self, queues: Iterable[str]) -> None:
        """Create the consumer group of every task stream that lacks one. A new group
        reads from the stream's start ("0"), so that tasks queued before it are run."""
        pipe: Pipeline = self.redis.pipeline(transaction=False)
        for stream in self.queue_keys(queues):
            pipe.xgroup_create(stream, WORKER_GROUP, id="0", mkstream=True)
        for reply in await pipe.execute(raise_on_error=False):
            if isinstance(reply, ResponseError) and "BUSYGROUP" not in str(reply):
                doing = "create the consumer groups of the task queues (XGROUP CREATE)"
                raise permission_error(reply, doing, self.url) or reply

    async def restore_namespace(self, queues: Iterable[str]) -> bool:
        """Recreate what a server that lost the namespace's data no longer has: its config
        (with this store's shard count) and the consumer groups of the queues. Whether
        the config was missing.

        Raises ConfigurationError when the config now holds another shard count (a
        client that connected first created the namespace anew, with its count)."""
        key = self.keys.config()
        found = await self.redis.hget(key, "shards")
        missing = found is None
        if missing:
            found = await _create_config(self.redis, key, self.keys.shards)
        stored = _stored_shards(key, found)
        if stored != self.keys.shards:
            raise ConfigurationError(
                f"the Redis server lost the data of namespace {self.keys.namespace!r}, and "
                f"its config was created again with {stored} shards (by a client or worker "
                f"that connected first); this worker has {self.keys.shards}, so it cannot "
                f"serve the namespace: restart it (it then uses {stored} shards), or to "
                f"keep {self.keys.shards}, stop every client and worker, delete {key} and "
                f"run `loom init --shards {self.keys.shards}` before starting them again"
            )
        await self.ensure_groups(queues)
        return missing

    def queue_keys(self, queues: Iterable[str]) -> dict[str, tuple[int, str]]:
        """Task stream key -> (shard, queue name) for every shard of the queues, both
        kinds of stream."""
        return {
            stream(shard, queue): (shard, queue)
            for queue in queues
            for stream in (self.keys.queue, self.keys.activity_queue)
            for shard in range(self.keys.shards)
        }

    async def read_tasks(
        self,
        streams: dict[str, tuple[int, str]],
        consumer: str,
        count: int,
        block_ms: int,
        *,
        start: str = ">",
    ) -> list[Task]:
        """New tasks (blocking up to `block_ms`), or with start="0" the tasks already
        delivered to `consumer` and not acknowledged (no blocking)."""
        # Over the direct lane: this read is sent again each time tasks arrive, while
        # they start, and redis-py would spend longer building it than Redis reading it.
        block = ["BLOCK", block_ms] if start == ">" else []
        with _groups_checked():
            reply: Any = await self._lane.execute(
                "XREADGROUP", "GROUP", WORKER_GROUP, consumer, "COUNT", count, *block,
                "STREAMS", *streams, *[start] * len(streams),
            )  # fmt: skip
        tasks: list[Task] = []
        for stream, entries in reply or []:
            key = _text(stream)
            for entry_id, flat in entries:
                if flat is None:  # an entry deleted while pending (start="0")
                    continue
                tasks.append(_task(key, streams[key][0], entry_id, _field_map(flat)))
        return tasks

    async def claim_stale_tasks(
        self, streams: dict[str, tuple[int, str]], consumer: str, lease_ms: int, count: int
    ) -> list[tuple[Task, int]]:
        """Take over tasks idle longer than the lease (their worker died), with how many
        times each has now been delivered."""
        claimed: list[tuple[Task, int]] = []
        for key, (shard, _queue) in streams.items():
            if len(claimed) >= count:
                break
            with _groups_checked():
                reply = await self.redis.xautoclaim(
                    key,
                    WORKER_GROUP,
                    consumer,
                    lease_ms,
                    start_id="0-0",
                    count=count - len(claimed),
                )
            entries = reply[1]
            deleted = [d for d in (reply[2] if len(reply) > 2 else [])]
            live = []
            for entry_id, fields in entries:
                if fields is None:  # Redis 6.2 reports a deleted entry as a nil message
                    deleted.append(entry_id)
                else:
                    live.append(_task(key, shard, entry_id, fields))
            if deleted:
                await self.redis.xack(key, WORKER_GROUP, *deleted)
            if not live:
                continue
            pending: Any = await self.redis.xpending_range(
                key,
                WORKER_GROUP,
                min=live[0].id,
                max=live[-1].id,
                count=len(live) * 4,
                consumername=consumer,
            )
            deliveries = {_text(p["message_id"]): int(p["times_delivered"]) for p in pending}
            claimed.extend((task, deliveries.get(task.id, 1)) for task in live)
        return claimed

    async def renew_leases(self, tasks: Sequence[Task], consumer: str) -> None:
        """Reset the idle time of tasks still running here (JUSTID: no delivery counted)."""
        by_stream: dict[str, list[Any]] = {}
        for task in tasks:
            by_stream.setdefault(task.queue_key, []).append(task.id)
        pipe: Pipeline = self.redis.pipeline(transaction=False)
        for key, ids in by_stream.items():
            pipe.xclaim(key, WORKER_GROUP, consumer, 0, ids, justid=True)
        await pipe.execute()

    async def hand_back(self, tasks: Sequence[Task], consumer: str, lease_ms: int) -> None:
        """Make unfinished tasks claimable by another worker now (on drain); the lease of
        a held activity (`Task.lease`) falls due now, for any worker's timer sweep."""
        pipe: Pipeline = self.redis.pipeline(transaction=False)
        for task in tasks:
            if task.lease:
                pipe.zadd(self.keys.timers(task.shard), {task.lease: now_ms()}, xx=True)
                continue
            ids: list[Any] = [task.id]
            pipe.xclaim(
                task.queue_key, WORKER_GROUP, consumer, 0, ids, idle=lease_ms + 1, justid=True
            )
        await pipe.execute()

    async def dead_letter(self, task: Task, reason: str) -> None:
        workflow_id = task.workflow_id
        keys = self.keys
        dead = keys.dead(task.shard)
        same_shard = bool(workflow_id) and keys.shard_of(workflow_id) == task.shard
        meta = keys.meta(workflow_id) if same_shard else dead
        fields: list[Any] = []
        for name, value in list(task.fields.items())[:MAX_TASK_FIELDS]:
            fields += [name, value]
        if len(task.fields) > MAX_TASK_FIELDS:
            reason += (
                f" (the task has {len(task.fields)} fields; the first {MAX_TASK_FIELDS} are kept)"
            )
        await self._run(
            "dead_letter",
            [task.queue_key, dead, meta],
            [
                task.id,
                WORKER_GROUP,
                reason,
                task.kind if same_shard else "",
                _text(task.fields.get("seq")),
                *fields,
            ],
        )

    async def defer_task(
        self, task: Task, queue: str, due_ms: int, *, unregistered_since: int
    ) -> str:
        """Hand a task back to its queue at `due_ms`, through the timer zset, for another
        worker (this one does not register its workflow or activity): 'ok', or 'gone'
        when it is no longer pending here. Its delivery count starts again."""
        fields = {
            **task.fields,
            "unreg_since": str(unregistered_since).encode(),
            "handbacks": str(task.handbacks + 1).encode(),
        }
        flat = [part for field in fields.items() for part in field]
        if task.kind == "a":
            seq = int(task.fields["seq"])
            member = self.timer_member("retry", task.workflow_id, queue, seq, flat)
        else:
            member = self.timer_member("requeue", task.workflow_id, queue, 0, flat)
        return _text(
            await self._run(
                "defer_task",
                [task.queue_key, self.keys.timers(task.shard)],
                [task.id, WORKER_GROUP, due_ms, member],
            )
        )

    async def publish_heartbeat(self, worker: str, info: dict[str, Any]) -> None:
        await self.redis.hset(self.keys.workers(), worker, encode(info))

    async def remove_heartbeat(self, worker: str) -> None:
        await self.redis.hdel(self.keys.workers(), worker)

    async def publish_definitions(self, definitions: dict[str, dict[str, Any]]) -> None:
        """Workflow definitions by name (steps, descriptions), for the CLI and dashboards."""
        if definitions:
            await self.redis.hset(
                self.keys.definitions(),
                mapping={name: encode(described) for name, described in definitions.items()},
            )

    async def read_heartbeats(self) -> tuple[list[dict[str, Any]], dict[str, str]]:
        """The workers' last heartbeats by name (name, host, pid, queues, concurrency,
        ...), and why each record that cannot be read is unreadable, by its field."""
        raw: Any = await self.redis.hgetall(self.keys.workers())
        beats: list[dict[str, Any]] = []
        unreadable: dict[str, str] = {}
        for field_name, value in raw.items():
            name = _text(field_name)
            beat = _heartbeat(name, value)
            if isinstance(beat, str):
                unreadable[name] = f"field {name!r} of {self.keys.workers()} {beat}"
            else:
                beats.append(beat)
        return sorted(beats, key=lambda b: str(b["name"])), unreadable

    async def worker_heartbeats(self) -> list[dict[str, Any]]:
        """The heartbeats that can be read; the others are skipped with a warning."""
        beats, unreadable = await self.read_heartbeats()
        for problem in unreadable.values():
            warn_unreadable(problem, "skipped")
        return beats

    async def live_workers(self) -> list[dict[str, Any]]:
        """The heartbeats of the workers seen within LIVE_HEARTBEAT_MS."""
        live_since = now_ms() - LIVE_HEARTBEAT_MS
        return [b for b in await self.worker_heartbeats() if b["seen_ms"] >= live_since]

    async def timer_due(self, workflow_id: str, queue: str, seq: int) -> int | None:
        """When (ms) the workflow's durable timer `seq` is due, None if it is not set."""
        member = self.timer_member("timer", workflow_id, queue, seq)
        due = await self.redis.zscore(self.keys.timers(self.keys.shard_of(workflow_id)), member)
        return None if due is None else int(due)

    async def prune_departed(
        self,
        streams: dict[str, tuple[int, str]],
        *,
        heartbeat_older_than_ms: int,
        consumer_idle_ms: int,
        keep: str,
    ) -> tuple[int, int]:
        """Delete stale heartbeats, and consumers idle that long with nothing pending
        (a live worker's blocking reads keep its consumer's idle time short)."""
        cutoff = now_ms() - heartbeat_older_than_ms
        beats, unreadable = await self.read_heartbeats()
        stale = [b["name"] for b in beats if b["seen_ms"] < cutoff and b["name"] != keep]
        # No worker wrote these (a live one rewrites its own every HEARTBEAT_MS).
        for name, problem in unreadable.items():
            if name != keep:
                logger.warning("%s: forgotten, as a departed worker's", problem)
                stale.append(name)
        if stale:
            await self.redis.hdel(self.keys.workers(), *stale)
        removed = 0
        for key in streams:
            try:
                with _groups_checked():
                    consumers: Any = await self.redis.xinfo_consumers(key, WORKER_GROUP)
            except ConsumerGroupMissing:
                continue  # the readers recreate it
            except ResponseError as exc:
                if "no such key" not in str(exc):
                    raise
                continue  # no task was ever queued there: nothing to prune
            for consumer in consumers:
                name = _text(consumer["name"])
                if (
                    name != keep
                    and consumer["pending"] == 0
                    and consumer["idle"] > consumer_idle_ms
                ):
                    removed += 1
                    await self.redis.xgroup_delconsumer(key, WORKER_GROUP, name)
        return len(stale), removed

    async def dead_letters(self, limit: int = 50) -> list[DeadLetter]:
        """The newest dead-lettered tasks of every shard, newest first."""
        pipe: Pipeline = self.redis.pipeline(transaction=False)
        for shard in range(self.keys.shards):
            pipe.xrevrange(self.keys.dead(shard), count=limit)
        found: list[DeadLetter] = []
        for shard, entries in enumerate(await pipe.execute()):
            for entry_id, raw in entries:
                fields = {_text(k): v for k, v in raw.items()}
                found.append(DeadLetter(shard, _text(entry_id), fields))
        found.sort(key=lambda d: _stream_id_order(d.id), reverse=True)
        return found[:limit]

    async def find_dead_letter(self, entry_id: str) -> DeadLetter | None:
        pipe: Pipeline = self.redis.pipeline(transaction=False)
        for shard in range(self.keys.shards):
            pipe.xrange(self.keys.dead(shard), min=entry_id, max=entry_id)
        for shard, entries in enumerate(await pipe.execute(raise_on_error=False)):
            if isinstance(entries, list) and entries:
                fields = {_text(k): v for k, v in entries[0][1].items()}
                return DeadLetter(shard, entry_id, fields)
        return None

    async def redrive(self, dead: DeadLetter) -> str:
        """Put a dead-lettered task back on its queue: 'ok', 'missing' or 'already-queued'.

        Raises PayloadError for an entry that is not a task of this namespace's queues
        (a corrupt timer member, an entry written by hand)."""
        queue_key = _text(dead.fields.get("queue"))
        prefixes = (self.keys.queue(dead.shard, ""), self.keys.activity_queue(dead.shard, ""))
        problem = ""
        if "timer" in dead.fields:
            problem = "it is a corrupt timer member, not a task"
        elif not queue_key.startswith(prefixes):
            problem = f"its 'queue' field {queue_key!r} is not a task queue of shard {dead.shard}"
        elif _text(dead.fields.get("k")) not in ("w", "a"):
            problem = "its 'k' field is not w (workflow task) or a (activity task)"
        elif len(dead.fields) > MAX_TASK_FIELDS + len(DeadLetter.ANNOTATIONS):
            problem = f"it has {len(dead.fields)} fields, more than a task has ({MAX_TASK_FIELDS})"
        if problem:
            raise PayloadError(f"dead-lettered entry {dead.id} cannot be put back: {problem}")
        task_fields = {k: v for k, v in dead.fields.items() if k not in DeadLetter.ANNOTATIONS}
        workflow_id = _text(task_fields.get("wf"))
        same_shard = bool(workflow_id) and self.keys.shard_of(workflow_id) == dead.shard
        dead_key = self.keys.dead(dead.shard)
        kind = _text(task_fields.get("k")) if same_shard else ""
        flat: list[Any] = []
        for name, value in task_fields.items():
            flat += [name, value]
        with acl_checked(f"re-drive dead-lettered task {dead.id}", self.url):
            return _text(
                await self._run(
                    "redrive",
                    [
                        dead_key,
                        queue_key,
                        self.keys.meta(workflow_id) if same_shard else dead_key,
                    ],
                    [dead.id, kind, *flat],
                )
            )


# The heartbeat fields other than `name` and `seen_ms` (which it must have): their types,
# and what a heartbeat without them (an older worker's) stands for.
_HEARTBEAT_DEFAULTS: dict[str, Any] = {
    "host": "",
    "pid": 0,
    "queues": [],
    "concurrency": 0,
    "in_flight": 0,
    "waiting": 0,
    "started_ms": 0,
    "workflows": [],
    "activities": [],
}


def _heartbeat(name: str, raw: bytes) -> dict[str, Any] | str:
    """A heartbeat as its worker wrote it (named by its field in the hash), or what makes
    it unreadable."""
    try:
        beat = decode(raw, what="it")
    except PayloadError as exc:
        return str(exc).removeprefix("it ")
    if not isinstance(beat, dict):
        return f"is a msgpack {type(beat).__name__}, not a map"
    seen = beat.get("seen_ms")
    if not _whole_number(seen):
        return f"has seen_ms {seen!r}, not a time in ms"
    for key, default in _HEARTBEAT_DEFAULTS.items():
        value = beat.setdefault(key, default)
        if isinstance(default, list):
            readable = isinstance(value, list) and all(isinstance(v, str) for v in value)
        elif isinstance(default, int):
            readable = _whole_number(value)
        else:
            readable = isinstance(value, str)
        if not readable:
            return f"has {key} {value!r}, not a {type(default).__name__}"
    beat["name"] = name
    return beat


def _whole_number(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# How many unreadable records a process remembers having warned of.
_WARNED_LIMIT = 1000
_warned: set[str] = set()


def warn_unreadable(problem: str, done: str) -> None:
    """Log a warning that a record read from Redis is unreadable (what `done` with it),
    once per process for each problem: listings read the same records again and again."""
    if problem in _warned:
        return
    if len(_warned) >= _WARNED_LIMIT:
        _warned.clear()
    _warned.add(problem)
    logger.warning("%s: %s", problem, done)


def registering(heartbeats: list[dict[str, Any]], queue: str, kind: str, name: str) -> list[str]:
    """The workers of `queue` (by their heartbeats) that register `name`, a workflow or
    an activity by `kind`."""
    listed = REGISTRATION_FIELDS[kind]
    return [
        str(beat["name"])
        for beat in heartbeats
        if queue in beat.get("queues", ()) and name in beat.get(listed, ())
    ]


def registrations(workflows: Iterable[str], activities: Iterable[str]) -> dict[str, list[str]]:
    """The heartbeat fields that list what a worker registers (see `registering`)."""
    return {
        REGISTRATION_FIELDS["workflow"]: sorted(workflows),
        REGISTRATION_FIELDS["activity"]: sorted(activities),
    }


def _readable(value: Any) -> Any:
    """A decoded msgpack value with its byte strings shown as text, for messages."""
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, list | tuple):
        return [_readable(part) for part in value]
    return value


def _script_source(name: str) -> str:
    return resources.files(__package__).joinpath("scripts", f"{name}.lua").read_text()
