"""Producer-side API: connect, start workflows, query, signal, cancel, follow progress."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import logging
import os
import uuid
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Concatenate, Generic, Literal, ParamSpec, TypeVar

from .codec import encode
from .definitions import (
    IdReusePolicy,
    InputT,
    StateT,
    check_start_arguments,
    workflow_definition,
)
from .errors import (
    ConfigurationError,
    PayloadError,
    RedisOutOfMemoryError,
    RedisPermissionError,
    RedisReadOnlyError,
    WorkflowAlreadyStartedError,
    WorkflowCancelledError,
    WorkflowExecutionError,
    WorkflowNotFoundError,
    WorkflowStillRunningError,
    error_from_record,
)
from .events import STATUS_OF_TERMINAL_EVENT, TERMINAL_TYPES, Event, EventType, Status
from .store import (
    CLOSE_NOTICE_MS,
    QueueDetail,
    Store,
    UnreadableEntry,
    WorkflowFilter,
    WorkflowPage,
    registering,
    warn_unreadable,
)
from .store.connection import now_ms, retried_call
from .store.keys import (
    DEFAULT_NAMESPACE,
    validate_owner,
    validate_queue,
    validate_signal_name,
    validate_workflow_id,
)
from .store.retention import checked_retention
from .store.wire import MetaField, Reply

if TYPE_CHECKING:
    from .api import Workflow

logger = logging.getLogger("loom_redis.client")

P = ParamSpec("P")
T = TypeVar("T")

DEFAULT_URL = "redis://127.0.0.1:6379/0"
DEFAULT_QUEUE = "default"
# How long a client retries an operation while Redis cannot be reached (a restart, a
# failover): a worker's default lease, as long as a worker's task rides out an outage.
DEFAULT_RETRY_SECONDS = 30.0
ACTIVE_STATUSES = (Status.PENDING, Status.RUNNING, Status.SUSPENDED)

_settings: dict[str, str | None] = {"url": None, "namespace": None}


def configure(url: str | None = None, namespace: str | None = None) -> None:
    """Set where `Workflow.start`, `get_handle` and `get_progress` connect by default."""
    _settings["url"] = url
    _settings["namespace"] = namespace
    _default_clients.clear()


def default_url() -> str:
    return _settings["url"] or os.environ.get("LOOM_REDIS_URL") or DEFAULT_URL


def default_namespace() -> str:
    return _settings["namespace"] or os.environ.get("LOOM_NAMESPACE") or DEFAULT_NAMESPACE


@dataclass(frozen=True)
class WaitExplained:
    """Why an open workflow has not ended (`Client.explain_wait`)."""

    status: str
    # What is known, in words ("" if nothing).
    reason: str
    # Nothing will move it until someone acts: its task is dead-lettered, or no live
    # worker of its queue runs it.
    stuck: bool


_ClientMethod = Callable[Concatenate["Client", P], Awaitable[T]]


def _reads(doing: str) -> Callable[[_ClientMethod[P, T]], _ClientMethod[P, T]]:
    """A Client method that only reads: run through `Client._call` (`doing` says what it
    does), so that it is made again while Redis cannot be reached."""

    def decorate(method: _ClientMethod[P, T]) -> _ClientMethod[P, T]:
        async def call(self: Client, /, *args: P.args, **kwargs: P.kwargs) -> T:
            return await self._call(doing, lambda _store: method(self, *args, **kwargs))

        functools.update_wrapper(call, method)
        return call

    return decorate


class Client:
    """A connection to a loom-redis namespace.

    >>> async with loom.Client.connect("redis://127.0.0.1:6379/0") as client:
    ...     handle = await client.start(OrderWorkflow, {"order_id": "A1"})

    An operation that finds Redis unreachable once connected (a restart, a failover) is
    retried for up to `retry_seconds`, then raises RedisUnavailableError; no error of
    redis-py reaches the caller, each is a LoomError that names it.
    """

    def __init__(
        self,
        url: str | None = None,
        namespace: str | None = None,
        *,
        retry_seconds: float = DEFAULT_RETRY_SECONDS,
        durability: Literal["async", "replicated"] | None = None,
    ) -> None:
        self.url = url or default_url()
        # Only None means the default: an empty namespace is an error, not "default".
        self.namespace = default_namespace() if namespace is None else namespace
        if not retry_seconds >= 0:
            raise ConfigurationError(f"retry_seconds must be >= 0, got {retry_seconds!r}")
        self.retry_seconds = float(retry_seconds)
        # When a start, signal or cancel counts as made (default LOOM_DURABILITY, else
        # "async"): "replicated" waits for a replica to hold it (see the README).
        self.durability = durability
        self._store: Store | None = None
        # Set when Redis refused result()'s close notice (a read-only ACL user, a replica).
        self._reads_only = False

    @classmethod
    def connect(
        cls,
        url: str | None = None,
        *,
        namespace: str | None = None,
        retry_seconds: float = DEFAULT_RETRY_SECONDS,
        durability: Literal["async", "replicated"] | None = None,
    ) -> Client:
        """A client for `url` (default LOOM_REDIS_URL); use `async with` or `await .open()`."""
        return cls(url, namespace, retry_seconds=retry_seconds, durability=durability)

    async def open(self) -> Client:
        if self._store is None:
            self._store = await Store.open(self.url, self.namespace, durability=self.durability)
        return self

    async def close(self) -> None:
        if self._store is not None:
            await self._store.close()
            self._store = None

    async def __aenter__(self) -> Client:
        return await self.open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __await__(self) -> Any:
        return self.open().__await__()

    @property
    def store(self) -> Store:
        if self._store is None:
            raise ConfigurationError("client is not connected: use `async with` or `await open()`")
        return self._store

    async def _connected(self) -> Store:
        await self.open()
        return self.store

    async def _call(
        self,
        doing: str,
        call: Callable[Concatenate[Store, P], Awaitable[T]],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """`call(store, *args, **kwargs)`, made again while Redis cannot be reached, for
        up to `retry_seconds`; an error of redis-py comes out as the LoomError that names
        it (`doing` says what failed). `call` must be safe to repeat."""
        store = await self._connected()
        return await retried_call(
            lambda: call(store, *args, **kwargs),
            doing=doing,
            url=self.url,
            retry_seconds=self.retry_seconds,
            log=logger,
            namespace=self.namespace,
        )

    # -- workflows ---------------------------------------------------------------

    async def start(
        self,
        workflow: type[Workflow[InputT, StateT]],
        # A dict literal given for a TypedDict here makes mypy fail to infer InputT
        # (python/mypy#19201): such a dict is accepted, and its keys are checked at start.
        input: InputT | dict[str, Any],
        initial_state: StateT | dict[str, Any] | None = None,
        *,
        workflow_id: str | None = None,
        owner: str | None = None,
        queue: str | None = None,
        id_reuse: IdReusePolicy = "reject",
        retention: dt.timedelta | float | None = None,
    ) -> WorkflowHandle[StateT]:
        """Start `workflow` (a `@loom.workflow` class) with `input`; returns its handle.

        `initial_state` (a dict) is the state the first step sees.

        A second start with the same `workflow_id` raises WorkflowAlreadyStartedError,
        or returns the existing workflow's handle with `id_reuse="return_existing"`.

        `retention` (a timedelta or seconds) is how long the workflow is kept after it
        closes, in place of the namespace's (`loom init --retention`, 7 days by default).
        """
        definition = workflow_definition(workflow)
        if initial_state is not None and not isinstance(initial_state, dict):
            raise TypeError(
                f"initial state of workflow {definition.name!r} must be a dict, "
                f"got {type(initial_state).__name__}"
            )
        if id_reuse not in ("reject", "return_existing"):
            raise ConfigurationError(
                f"id_reuse must be 'reject' or 'return_existing', got {id_reuse!r}"
            )
        check_start_arguments(definition, input, initial_state)
        # Only None means "make one up": an empty id is an error, not a request for a new one.
        workflow_id = validate_workflow_id(uuid.uuid4().hex if workflow_id is None else workflow_id)
        # Likewise only None means the default queue, and no owner.
        queue = validate_queue(DEFAULT_QUEUE if queue is None else queue)
        owner = None if owner is None else validate_owner(owner)
        retention_ms = None
        if retention is not None:
            retention_ms = checked_retention(
                retention, f"retention of workflow {workflow_id!r} ({definition.name})"
            )
        # The same for each try: a start whose reply was lost recognises itself.
        request_id = uuid.uuid4().hex
        created, status = await self._call(
            f"start workflow {workflow_id!r}",
            lambda store: store.start_workflow(
                workflow_id,
                name=definition.name,
                version=definition.version,
                queue=queue,
                owner=owner,
                agent=definition.agent,
                total_steps=len(definition.steps),
                workflow_input=input,
                initial_state=initial_state,
                request_id=request_id,
                retention_ms=retention_ms,
            ),
        )
        if not created:
            if id_reuse != "return_existing":
                raise WorkflowAlreadyStartedError(workflow_id, status)
            return WorkflowHandle(self, workflow_id)
        return WorkflowHandle(self, workflow_id, started_at=asyncio.get_running_loop().time())

    def get_handle(self, workflow_id: str) -> WorkflowHandle[Any]:
        """The handle of an existing workflow (its methods raise WorkflowNotFoundError if
        there is none); its `result()` is typed `Any`, as the workflow is not known here."""
        return WorkflowHandle(self, validate_workflow_id(workflow_id))

    async def signal(self, workflow_id: str, name: str, payload: Any = None) -> None:
        """Send signal `name` with `payload` to a workflow. Unlike `handle.signal`, raises
        WorkflowExecutionError if the workflow has already ended."""
        ended = await self.get_handle(workflow_id)._deliver_signal(name, payload)
        _raise_ended(workflow_id, ended, f"signal {name!r}")

    async def cancel(self, workflow_id: str, reason: str | None = None) -> None:
        """Request cancellation of a workflow (a repeated request is ignored). Unlike
        `handle.cancel`, raises WorkflowExecutionError if the workflow has already ended
        otherwise than cancelled."""
        ended = await self.get_handle(workflow_id)._deliver_cancel(reason)
        _raise_ended(workflow_id, ended, "cancel")

    @_reads("describe a workflow")
    async def describe(self, workflow_id: str) -> dict[str, Any]:
        """The workflow's meta: name, status, queue, owner, step, timestamps, result/error."""
        store = await self._connected()
        info = await store.describe(workflow_id)
        if info is None:
            raise WorkflowNotFoundError(workflow_id)
        return info

    @_reads("read a workflow's history")
    async def history(self, workflow_id: str) -> list[Event]:
        """The workflow's history; raises PayloadError at an entry that does not decode
        (`history_entries` shows the others)."""
        store = await self._connected()
        events = await store.read_history(workflow_id)
        if not events:
            raise WorkflowNotFoundError(workflow_id)
        return events

    @_reads("read a workflow's history")
    async def history_entries(self, workflow_id: str) -> list[dict[str, Any]]:
        """The workflow's history as dicts (`Event.to_dict`); an entry that does not
        decode is `{"id", "type": "UNREADABLE", "problem", ...}`, with a warning."""
        store = await self._connected()
        entries = await store.read_history_entries(workflow_id)
        if not entries:
            raise WorkflowNotFoundError(workflow_id)
        return _entry_dicts(entries)

    @_reads("read a workflow's history")
    async def history_page(
        self, workflow_id: str, after: str | None = None, count: int = 100
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Up to `count` entries of the workflow's history after entry id `after` (from
        the first if None), oldest first, as `history_entries` gives them; and the
        `after` of the next page (None: this page ends the history)."""
        store = await self._connected()
        entries, next_after = await store.history_page(workflow_id, after=after, count=count)
        if not entries and after is None:
            raise WorkflowNotFoundError(workflow_id)
        return _entry_dicts(entries), next_after

    @_reads("list workflows")
    async def list_workflows(
        self, *, status: str | None = None, limit: int = 50
    ) -> list[dict[str, Any]]:
        """The most recently started workflows (of one status, if given), newest first."""
        _check_limit(limit)
        store = await self._connected()
        return await store.list_workflows(Status(status.upper()) if status else None, limit)

    @_reads("list workflows")
    async def browse_workflows(
        self, filter: WorkflowFilter, cursor: str | None = None, limit: int = 50
    ) -> WorkflowPage:
        """A page of the workflows that match `filter`, newest first; its `next_cursor`,
        passed back as `cursor`, gives the next. A page may stop short of `limit` when
        few match (`complete` is then False: see `WorkflowPage`). Raises ValueError for
        a cursor this filter's listing did not make."""
        store = await self._connected()
        return await store.list_page(filter, cursor=cursor, limit=limit)

    @_reads("count workflows")
    async def count_workflows(self, filter: WorkflowFilter) -> tuple[int, bool]:
        """How many workflows match `filter`, and whether the count is exact (a filter
        the indexes do not answer alone is counted over at most 100,000 workflows)."""
        store = await self._connected()
        return await store.count_matching(filter)

    @_reads("count closed workflows")
    async def closed_per_minute(self, minutes: int = 60) -> list[dict[str, int]]:
        """Workflows completed, failed and cancelled in each of the last `minutes`
        minutes, oldest first (the last is the minute in progress): `{"minute_ms",
        "completed", "failed", "cancelled"}`."""
        store = await self._connected()
        return await store.closed_per_minute(minutes)

    async def prune(
        self,
        older_than: dt.timedelta | float,
        *,
        status: str | None = None,
        dry_run: bool = False,
    ) -> list[tuple[str, str]]:
        """Delete the closed workflows (of `status`, if given) that closed more than
        `older_than` (a timedelta or seconds) ago, as their retention would; open ones
        are never deleted. With `dry_run`, only list them. Returns the (workflow id,
        status) of each deleted (or listed)."""
        cutoff = now_ms() - checked_retention(older_than, "older_than")
        closed = status.upper() if isinstance(status, str) else status
        return await self._call(
            "prune workflows",
            lambda store: store.prune(cutoff, closed, dry_run=dry_run),
        )

    @_reads("count workflows")
    async def stats(self) -> dict[str, int]:
        """How many workflows of each status the namespace holds."""
        store = await self._connected()
        return await store.count_by_status()

    @_reads("list workers")
    async def workers(self) -> list[dict[str, Any]]:
        """The running workers as their heartbeats describe them (refreshed every 5 s),
        by name; a heartbeat that cannot be read is `{"name", "unreadable": why}`."""
        store = await self._connected()
        beats, unreadable = await store.read_heartbeats()
        for problem in unreadable.values():
            warn_unreadable(problem, "shown as unreadable")
        return beats + [{"name": n, "unreadable": why} for n, why in sorted(unreadable.items())]

    @_reads("list live workers")
    async def live_workers(self, queues: Iterable[str] = ()) -> list[dict[str, Any]]:
        """The workers whose heartbeat is fresh (three beats), of any of `queues` if
        given."""
        store = await self._connected()
        wanted = set(queues)
        return [
            beat
            for beat in await store.live_workers()
            if not wanted or wanted & set(beat.get("queues", ()))
        ]

    @_reads("list workflow definitions")
    async def definitions(self) -> list[dict[str, Any]]:
        """The workflow definitions workers published (name, version, description, agent,
        steps), by name; one that cannot be read is `{"name", "unreadable": why}`."""
        store = await self._connected()
        found, unreadable = await store.read_definitions()
        for problem in unreadable.values():
            warn_unreadable(problem, "shown as unreadable")
        return found + [{"name": n, "unreadable": why} for n, why in sorted(unreadable.items())]

    @_reads("check what this client may do")
    async def write_refusal(self) -> str | None:
        """Why this client's Redis user may not start, signal, cancel or re-drive (a
        read-only ACL user, such as docs/security.md's loom-dashboard), None if it may."""
        store = await self._connected()
        refusal = await store.write_refusal("signal, cancel or re-drive workflows")
        return None if refusal is None else str(refusal)

    @_reads("explain a workflow's wait")
    async def explain_wait(self, workflow_id: str) -> WaitExplained:
        """Why an open workflow has not ended, as far as Redis tells: its task in the
        dead-letter stream, no live worker of its queue (or none that registers it), and
        what its code waits for (activities, a timer, signals)."""
        store = await self._connected()
        info = await self.describe(workflow_id)
        if info["status"] is None:
            return WaitExplained("unreadable", info["unreadable"]["status"], stuck=False)
        status, queue, name = str(info["status"]), str(info["queue"]), info["workflow_name"]
        if Status(status).is_terminal:
            return WaitExplained(status, f"it has ended ({status})", stuck=False)
        stuck: list[str] = []
        if info["dead_letter"] and (dead := await store.find_dead_letter(info["dead_letter"])):
            stuck.append(
                f"its {dead.kind} task is in the dead-letter stream: {dead.reason} "
                f"(`loom dead retry {dead.id}` puts it back once the cause is fixed)"
            )
        live = [beat for beat in await store.live_workers() if queue in beat.get("queues", ())]
        if not live:
            stuck.append(
                f"no live worker reads its queue {queue!r} (`loom workers` lists the live "
                f"ones; start one with `loom worker MODULES --queue {queue}`)"
            )
        elif not registering(live, queue, "workflow", name):
            stuck.append(
                f"none of the {len(live)} live worker(s) of queue {queue!r} registers "
                f"workflow {name!r} (`loom workers` shows what each registers)"
            )
        waits = await self._waits(info)
        return WaitExplained(status, "; ".join(stuck + waits), stuck=bool(stuck))

    async def _waits(self, info: dict[str, Any]) -> list[str]:
        """What an open workflow's code waits for, in words."""
        store = await self._connected()
        waiting = info["waiting_for"]
        if info["status"] == Status.SUSPENDED:
            error = info["error"] or {}
            return [f"it is suspended: {error.get('message', 'its code cannot replay')}"]
        if info["status"] == Status.PENDING:
            return ["its first workflow task waits for a worker"]
        waits = []
        if waiting["signals"]:
            names = ", ".join(repr(name) for name in waiting["signals"])
            waits.append(f"its code waits for signal {names}")
        for seq in waiting["timers"]:
            due = await store.timer_due(info["workflow_id"], info["queue"], seq)
            if due is not None:
                waits.append(f"its code waits for a timer (seq {seq}) due at {format_time(due)}")
        if waiting["activities"]:
            seqs = ", ".join(map(str, waiting["activities"]))
            waits.append(f"its code waits for the activities of seq {seqs}")
        if info["task_queued"]:
            waits.append("a workflow task of it waits for a worker or runs")
        return waits

    @_reads("read the task queues")
    async def queue_details(self) -> list[QueueDetail]:
        """Each task queue a worker's heartbeat lists: its streams shard by shard
        (length, lag, pending, the oldest pending task's age) and their consumers."""
        store = await self._connected()
        return await store.queue_details()

    # -- dead letters ------------------------------------------------------------

    @_reads("list dead letters")
    async def dead_letters(self, limit: int = 50) -> list[dict[str, Any]]:
        """Tasks moved to the dead-letter streams, newest first, with their reasons."""
        _check_limit(limit)
        store = await self._connected()
        return [
            {"id": d.id, "kind": d.kind, "workflow_id": d.workflow_id or None, "reason": d.reason}
            for d in await store.dead_letters(limit)
        ]

    async def redrive(self, entry_id: str) -> str:
        """Put dead-lettered task `entry_id` back on its queue (after fixing its cause).

        Returns 'ok', or 'already-queued' when the workflow already has a task queued
        (the dead entry is then simply removed); raises LookupError for an unknown id.
        """
        doing = f"re-drive dead-lettered task {entry_id}"
        dead = await self._call(doing, lambda store: store.find_dead_letter(entry_id))
        if dead is None:
            raise LookupError(f"no dead-lettered task with id {entry_id!r}")
        return await self._call(doing, lambda store: store.redrive(dead))

    # -- progress ----------------------------------------------------------------

    @_reads("read progress")
    async def get_progress(self, owner: str) -> dict[str, Any]:
        """Progress of the owner's active workflows, in the shape of Loom's get_progress."""
        validate_owner(owner)
        store = await self._connected()
        workflows = [
            progress_entry(info)
            for info in await store.owner_workflows(owner)
            if info["status"] in ACTIVE_STATUSES
        ]
        workflows.sort(key=lambda w: (w["started_ms"] or 0, w["workflow_id"]))
        for entry in workflows:
            del entry["started_ms"]
        return {"owner": owner, "workflows": workflows}

    async def stream_progress(
        self, owner: str, *, idle_seconds: float = 1.0
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Yield the owner's progress list each time it changes.

        Wakes on new history events of the owner's workflows (XREAD BLOCK); looks for
        newly started workflows at least every `idle_seconds`.
        """
        last: list[dict[str, Any]] | None = None
        while True:
            current = (await self.get_progress(owner))["workflows"]
            if current != last:
                last = current
                yield current
            if current:
                await self._call(
                    "follow progress",
                    Store.wait_for_history,
                    {w["workflow_id"]: "$" for w in current},
                    int(idle_seconds * 1000),
                    1,
                )
            else:
                await asyncio.sleep(idle_seconds)


class _Deadline:
    """The end of a wait of `timeout` seconds (None: no end), cut into blocks of at
    most 5 s: a connection that breaks while it blocks (a Redis restart, a failover)
    costs no more."""

    BLOCK_SECONDS = 5.0

    def __init__(self, timeout: float | None) -> None:
        self.timeout = timeout
        self._loop = asyncio.get_running_loop()
        self._at = None if timeout is None else self._loop.time() + timeout

    def block_seconds(self) -> float:
        if self._at is None:
            return self.BLOCK_SECONDS
        return max(min(self._at - self._loop.time(), self.BLOCK_SECONDS), 0.0)

    def passed(self) -> bool:
        return self._at is not None and self._loop.time() >= self._at

    def now(self) -> float:
        return self._loop.time()


class WorkflowHandle(Generic[StateT]):
    """Control and observe one workflow; `StateT` is its state type (what `result()` returns)."""

    # A handle whose client started the workflow this long ago or less counts on the
    # waiter its start registered (the close notice outlives the close by
    # CLOSE_NOTICE_MS; the margin is for the two clocks).
    REGISTERED_SECONDS = CLOSE_NOTICE_MS / 1000 - 10

    def __init__(
        self, client: Client | None, workflow_id: str, *, started_at: float | None = None
    ) -> None:
        self._client = client
        self.workflow_id = workflow_id
        # When this handle's client started the workflow (event loop time).
        self._started_at = started_at

    async def _get_client(self) -> Client:
        """This handle's client, or the default one of the running loop."""
        return self._client if self._client is not None else await default_client()

    @property
    def id(self) -> str:
        return self.workflow_id

    def __repr__(self) -> str:
        return f"WorkflowHandle({self.workflow_id!r})"

    async def describe(self) -> dict[str, Any]:
        return await (await self._get_client()).describe(self.workflow_id)

    async def status(self) -> str:
        """PENDING, RUNNING, SUSPENDED, COMPLETED, FAILED or CANCELLED.

        A workflow whose task is in the dead-letter stream keeps its status (it moves
        again once the task is put back): that is logged as a warning."""
        info = await self.describe()
        if info["status"] is None:
            raise PayloadError(
                f"the status of workflow {self.workflow_id!r} cannot be read: "
                f"{info['unreadable']['status']}"
            )
        if info["dead_letter"]:
            logger.warning(
                "workflow %r is %s, but its task is in the dead-letter stream (entry %s): "
                "`loom dead list` says why, `loom dead retry %s` puts it back",
                self.workflow_id,
                info["status"],
                info["dead_letter"],
                info["dead_letter"],
            )
        return str(info["status"])

    async def history(self) -> list[Event]:
        return await (await self._get_client()).history(self.workflow_id)

    async def result(self, timeout: float | None = None) -> StateT:
        """Wait for the workflow to end and return its final state.

        Raises the workflow's error (ActivityFailedError, WorkflowExecutionError,
        NonDeterministicWorkflowError, WorkflowCancelledError), or
        WorkflowStillRunningError when `timeout` seconds pass first.
        """
        client = await self._get_client()
        deadline = _Deadline(timeout)
        if client._reads_only:
            return await self._result_from_history(client, deadline)
        warned = False
        doing = f"wait for the result of workflow {self.workflow_id!r}"
        while True:
            started_at = self._started_at
            registered = (
                started_at is not None and deadline.now() - started_at < self.REGISTERED_SECONDS
            )
            block = deadline.block_seconds()
            try:
                # A connection lost meanwhile costs a new wait from here, not the result.
                wait = await client._call(
                    doing,
                    Store.await_close,
                    self.workflow_id,
                    block,
                    registered=registered,
                )
            except (RedisPermissionError, RedisReadOnlyError):
                # A user who may only read (the dashboard's), a replica: wake at each
                # history event.
                client._reads_only = True
                return await self._result_from_history(client, deadline)
            except RedisOutOfMemoryError:
                # The wait writes (its waiter, the notice): until memory is freed, reads.
                return await self._result_from_history(client, deadline)
            if wait.status == "":
                raise WorkflowNotFoundError(self.workflow_id)
            if wait.closed:
                return self._outcome(await self._closing_record(wait.closing))
            if deadline.passed():
                raise await self._still_running(client, timeout)
            if not warned:
                # One look after the first block (5 s at most): a wait nothing can end
                # is said once, not left silent.
                warned = True
                explained = await client.explain_wait(self.workflow_id)
                if explained.stuck:
                    logger.warning(
                        "waiting for the result of workflow %r (%s): %s",
                        self.workflow_id,
                        explained.status,
                        explained.reason,
                    )

    async def _still_running(
        self, client: Client, timeout: float | None
    ) -> WorkflowStillRunningError:
        explained = await client.explain_wait(self.workflow_id)
        return WorkflowStillRunningError(
            self.workflow_id, explained.status, timeout, explained.reason
        )

    async def _result_from_history(self, client: Client, deadline: _Deadline) -> StateT:
        """result() by reads only: XREAD BLOCK on the history until its closing event."""
        store = await client._connected()
        doing = f"wait for the result of workflow {self.workflow_id!r}"
        # A closed workflow's history ends with its closing event and the
        # WORKFLOW_TASK_COMPLETED after it.
        entries = await client._call(doing, Store.history_tail, self.workflow_id, 2)
        if not entries:
            await self.describe()  # no such workflow: raises WorkflowNotFoundError
        last_id = entries[-1].id if entries else "0-0"
        while True:
            for entry in entries:
                last_id = entry.id
                if entry.type in TERMINAL_TYPES:
                    closing = None
                    with contextlib.suppress(PayloadError):
                        closing = store.decode_event(self.workflow_id, entry.id, entry.fields)
                    return self._outcome(await self._closing_record(closing))
            if deadline.passed():
                raise await self._still_running(client, deadline.timeout)
            block_ms = max(int(deadline.block_seconds() * 1000), 1)
            entries = await client._call(
                doing, Store.wait_for_history, {self.workflow_id: last_id}, block_ms, 1000
            )

    async def _closing_record(self, closing: Event | None) -> dict[str, Any]:
        """The status and result or error of a closed workflow, from its closing event
        (from its meta if there is no such event that decodes)."""
        if closing is None:
            return await self.describe()
        if closing.type == EventType.WORKFLOW_COMPLETED:
            return {"status": Status.COMPLETED, "result": (closing.data or {}).get("result")}
        return {"status": STATUS_OF_TERMINAL_EVENT[closing.type], "error": closing.data}

    def _outcome(self, info: dict[str, Any]) -> StateT:
        status = info["status"]
        if status == Status.COMPLETED:
            state: StateT = info["result"]
            return state
        error = info.get("error") or {}
        if status == Status.CANCELLED:
            raise WorkflowCancelledError(self.workflow_id, error.get("reason"))
        raise error_from_record(self.workflow_id, error)

    async def signal(self, name: str, payload: Any = None) -> None:
        """Send signal `name` with `payload`; `wait_for_signal(name)` in the workflow gets it.

        On a workflow that has already ended it logs a warning and returns, as Loom's
        handle does (`Client.signal` and `loom signal` raise there instead).
        """
        ended = await self._deliver_signal(name, payload)
        if ended is not None:
            _warn_ended(self.workflow_id, ended, f"signal {name!r}")

    async def cancel(self, reason: str | None = None) -> None:
        """Request cancellation: the workflow's code gets asyncio.CancelledError where it
        waits, and the workflow ends CANCELLED. A second request is ignored.

        On a workflow that has already ended otherwise it logs a warning and returns, as
        Loom's handle does (`Client.cancel` and `loom cancel` raise there instead).
        """
        ended = await self._deliver_cancel(reason)
        if ended is not None:
            _warn_ended(self.workflow_id, ended, "cancel")

    async def _deliver_signal(self, name: str, payload: Any) -> str | None:
        """Deliver a signal; the status of the workflow if it has already ended, else None."""
        # Refused here, naming the signal, before anything is read or written.
        validate_signal_name(name)
        encode(payload, what=f"payload of signal {name!r} to workflow {self.workflow_id!r}")
        # The same for each try: a signal whose reply was lost is not delivered twice.
        request_id = uuid.uuid4().hex
        outcome, status = await (await self._get_client())._call(
            f"signal workflow {self.workflow_id!r}",
            lambda store: store.deliver_external(
                self.workflow_id,
                EventType.SIGNAL_RECEIVED,
                {"name": name, "payload": payload},
                request_id=request_id,
            ),
        )
        return self._ended(outcome, status)

    async def _deliver_cancel(self, reason: str | None) -> str | None:
        """Request cancellation; the status of the workflow if it has already ended
        otherwise than cancelled, else None."""
        outcome, status = await (await self._get_client())._call(
            f"cancel workflow {self.workflow_id!r}",
            lambda store: store.deliver_external(
                self.workflow_id,
                EventType.WORKFLOW_CANCEL_REQUESTED,
                {"reason": reason},
                once_field=MetaField.CANCEL_REQUESTED,
            ),
        )
        # A repeated cancel is harmless, also once the first one has taken effect.
        if outcome == Reply.DUPLICATE or (outcome == Reply.CLOSED and status == Status.CANCELLED):
            return None
        return self._ended(outcome, status)

    def _ended(self, outcome: str, status: str) -> str | None:
        if outcome == Reply.MISSING:
            raise WorkflowNotFoundError(self.workflow_id)
        return status if outcome == Reply.CLOSED else None


def _entry_dicts(entries: list[Event | UnreadableEntry]) -> list[dict[str, Any]]:
    """History entries as dicts (`Event.to_dict`), warning of each unreadable one."""
    for entry in entries:
        if isinstance(entry, UnreadableEntry):
            warn_unreadable(entry.problem, "shown as unreadable")
    return [entry.to_dict() for entry in entries]


def _check_limit(limit: int) -> None:
    # Redis reads a negative end of a range as counted from the end: -1 lists everything.
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise ConfigurationError(f"limit must be a whole number >= 1, got {limit!r}")


def _ended_message(workflow_id: str, status: str, what: str) -> str:
    return f"cannot deliver {what}: workflow {workflow_id!r} has already ended ({status})"


def _warn_ended(workflow_id: str, status: str, what: str) -> None:
    logger.warning("%s; nothing was sent", _ended_message(workflow_id, status, what))


def _raise_ended(workflow_id: str, status: str | None, what: str) -> None:
    if status is not None:
        raise WorkflowExecutionError(_ended_message(workflow_id, status, what), workflow_id)


def format_time(ms: int) -> str:
    """A time (ms since the epoch) as loom-redis prints it: UTC, saying so."""
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def progress_entry(info: dict[str, Any]) -> dict[str, Any]:
    """One workflow's progress in the shape of Loom's `get_progress`."""
    agent = info["agent"]
    doing = info["step_description"] or info["step_name"]
    if doing is None:
        message = f"{agent or info['workflow_name']} is starting"
    elif agent:
        message = f"{agent} is {doing}"
    else:
        message = f"{info['workflow_name']}: {doing}"
    return {
        "workflow_id": info["workflow_id"],
        "workflow_name": info["workflow_name"],
        "agent": agent,
        "message": message,
        "current_step": info["current_step"],
        "total_steps": info["total_steps"],
        "status": info["status"],
        "started_ms": info["started_ms"],
    }


# One default client per event loop: a redis.asyncio connection belongs to its loop.
_default_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Client] = (
    weakref.WeakKeyDictionary()
)


async def default_client() -> Client:
    loop = asyncio.get_running_loop()
    client = _default_clients.get(loop)
    if client is None:
        client = await Client(default_url(), default_namespace()).open()
        _default_clients[loop] = client
    return client


def get_handle(workflow_id: str) -> WorkflowHandle[Any]:
    """The handle of an existing workflow, through the default client."""
    return WorkflowHandle(None, validate_workflow_id(workflow_id))


async def get_progress(owner: str) -> dict[str, Any]:
    """Progress of the owner's active workflows (Loom's `loom.get_progress`)."""
    return await (await default_client()).get_progress(owner)


async def stream_progress(owner: str) -> AsyncIterator[list[dict[str, Any]]]:
    """Yield the owner's progress each time it changes (Loom's `loom.stream_progress`)."""
    client = await default_client()
    async for update in client.stream_progress(owner):
        yield update
