"""The worker: reads tasks from Redis Streams, runs workflow tasks and activities.

Everything it runs is a child of one task group: the task reader, the reclaimer
of tasks whose worker died, the timer sweeper, lease renewal of running tasks,
the heartbeat and the metrics endpoint. `stop()` (SIGTERM) drains: reading
stops, in-flight tasks finish within `drain_seconds`, the rest are handed back;
`abort()` (a second SIGTERM) hands them back at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import math
import os
import socket
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import anyio
import anyio.lowlevel
import anyio.to_thread
from anyio.abc import TaskGroup
from redis.exceptions import OutOfMemoryError, RedisError

from ..codec import decode, encode
from ..definitions import (
    NondeterminismPolicy,
    registered_activities,
    registered_activity,
    registered_workflow,
    registered_workflows,
)
from ..engine import Activation, WorkflowInstance, clip, failure_record
from ..errors import (
    ConfigurationError,
    NonDeterministicWorkflowError,
    PayloadError,
    WorkflowExecutionError,
)
from ..events import COMMAND_TYPES, USER_VALUES, Command, Event, EventType, Status
from ..metrics import (
    ACTIVITY_SECONDS,
    CLAIMED,
    COMMIT_CONFLICTS,
    DEAD_LETTERS,
    EAGER_ACTIVITIES,
    LEASE_EXPIRED,
    NAMESPACE_DATA_LOST,
    TASKS,
    TIMERS_FIRED,
    UNREGISTERED_TASKS,
    WORKFLOW_TASK_SECONDS,
    WORKFLOWS_CLOSED,
    counting_load,
    labelled,
    serve_metrics,
)
from ..store import Store, Task, TaskPlan, TimerMember
from ..store.connection import now_ms, redis_errors, retrying, unreachable
from ..store.keys import validate_queue
from ..store.store import (
    HEARTBEAT_MS,
    CommitResult,
    ConsumerGroupMissing,
    registering,
    registrations,
)

logger = logging.getLogger("loom_redis.worker")

T = TypeVar("T")

# A workflow task whose commit keeps losing to other writers gives up after this many
# tries and stays pending, to be retried by the reclaimer.
MAX_COMMIT_TRIES = 20
# A task this worker does not register waits this long, doubling up to the cap, each
# time it is handed back for another worker.
UNREGISTERED_DELAY_SECONDS = 0.25
MAX_UNREGISTERED_DELAY_SECONDS = 10.0
# How long a worker that was idle waits before it reads a shard again after a read that
# brought tasks (see _read_shard).
IDLE_READ_PAUSE_SECONDS = 0.002
# How long a worker that stops at once (see Worker.abort) tries to hand its tasks back.
HAND_BACK_SECONDS = 5.0


@dataclass
class _Cached:
    """A workflow instance that has applied the first `length` history events (the last
    one `last_id`) but the `carried` ones: external events its last commit left to the
    next task (see CommitResult.skipped)."""

    instance: WorkflowInstance
    length: int
    last_id: str
    carried: list[Event] = field(default_factory=list)


@dataclass
class _Loaded:
    """An instance and the history events it is about to apply.

    `completing` is set when the only event is an activity's outcome that this worker
    holds and the commit is to record (`completing_data` encoded): it is in no history
    yet.
    """

    instance: WorkflowInstance
    events: list[Event]
    base_length: int
    base_last_id: str
    completing: Event | None = None
    completing_data: bytes = b""
    # How many of the first events the instance's last commit left to this task: they
    # are counted in `base_length` and come before `base_last_id`.
    carried: int = 0
    # The events are the copy a workflow's first task carries, as of its queueing: what
    # came after them may have come before the task ran, so the code must see it first.
    queued_copy: bool = False

    @property
    def length(self) -> int:
        """The history length once the events are applied: the commit's fencing token
        (an outcome being completed is in no history yet)."""
        return self.base_length + len(self.events) - self.carried - (self.completing is not None)

    @property
    def last_id(self) -> str:
        """The id of the last history entry read (or being completed)."""
        return self.events[-1].id if len(self.events) > self.carried else self.base_last_id

    @property
    def skip_from(self) -> str:
        """The commit's `last_read_id`: "" when events after the last one read must fence
        it out (an outcome being completed is in no history; a queued copy is old)."""
        return "" if self.completing is not None or self.queued_copy else self.last_id


@dataclass(frozen=True)
class _Attempt:
    """What one attempt of an activity came to: an outcome to record (`encoded`: its
    result or error as it is written), or, with attempts left after a failure, the next
    one's due time."""

    number: int
    failed: bool
    encoded: bytes = b""
    retry_due_ms: int | None = None

    def outcome_event(self, seq: int) -> Event:
        """The outcome as the event a replay of the history will apply (decoded from
        what is written), for an instance this worker holds."""
        event_type = EventType.ACTIVITY_FAILED if self.failed else EventType.ACTIVITY_COMPLETED
        return Event("", event_type, seq, now_ms(), decode(self.encoded))


@dataclass
class _Hold:
    """How the scheduling of an activity run at once got written: by a `watchdog` made
    when the eager window ended before the attempt did, which sets `written` once its
    commit came back with `outcome`."""

    attempt_scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    watchdog: asyncio.Task[None] | None = None
    written: asyncio.Event = field(init=False)  # made with the watchdog
    outcome: str = ""

    def watch(self, watchdog: Coroutine[Any, Any, None]) -> None:
        self.written = asyncio.Event()
        self.watchdog = asyncio.ensure_future(watchdog)


class Worker:
    """Runs the workflows and activities registered in this process.

    It keeps up to `cache_size` workflow instances between their tasks, so that a
    task replays only the events newer than the instance it holds.
    """

    def __init__(
        self,
        store: Store,
        *,
        queues: tuple[str, ...] = ("default",),
        concurrency: int = 16,
        lease_seconds: float = 30.0,
        max_deliveries: int = 5,
        poll_interval: float = 1.0,
        on_nondeterminism: NondeterminismPolicy = "fail",
        suspend_retry_seconds: float = 30.0,
        drain_seconds: float = 30.0,
        metrics_host: str = "127.0.0.1",
        metrics_port: int | None = None,
        name: str | None = None,
        cache_size: int = 512,
        timer_scan_seconds: float = 5.0,
        eager_seconds: float = 0.05,
        unregistered_grace_seconds: float = 300.0,
    ) -> None:
        _check_options(
            queues,
            concurrency,
            lease_seconds,
            max_deliveries,
            poll_interval,
            eager_seconds,
            unregistered_grace_seconds,
        )
        self.store = store
        self.queues = queues
        self.concurrency = concurrency
        self.lease_ms = int(lease_seconds * 1000)
        self.max_deliveries = max_deliveries
        self.poll_ms = max(int(poll_interval * 1000), 10)
        self.on_nondeterminism = on_nondeterminism
        self.suspend_retry_ms = int(suspend_retry_seconds * 1000)
        self.drain_seconds = drain_seconds
        self.metrics_host = metrics_host
        self.metrics_port = metrics_port
        self.name = name or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._streams = store.queue_keys(queues)
        shards: dict[int, dict[str, tuple[int, str]]] = {}
        for stream, (shard, queue) in self._streams.items():
            shards.setdefault(shard, {})[stream] = (shard, queue)
        self._shard_streams = list(shards.values())
        # Accepted tasks that wait for one of the `concurrency` executors, and the
        # executors waiting for one.
        self._queued: deque[tuple[Task, int]] = deque()
        self._idle_executors: deque[asyncio.Event] = deque()
        # Since when the intake has been waiting for capacity to read new tasks.
        self._capacity_wanted_since: float | None = None
        # Keyed by (stream, id): entry ids are unique per stream only, and the shards'
        # streams often hold the same id.
        self._in_flight: dict[tuple[str, str], Task] = {}
        # Activities run at once whose scheduling is written with a lease (see
        # _run_eager), by their workflow task (keyed like `_in_flight`).
        self._holding: dict[tuple[str, str], Task] = {}
        # Tasks that a finishing task's transition delivered to this worker (keyed like
        # `_in_flight`, by the finishing task): each runs next, on the same executor.
        self._follow_ups: dict[tuple[str, str], Task] = {}
        self.cache_size = cache_size
        self.timer_scan_ms = max(int(timer_scan_seconds * 1000), 10)
        # How long a workflow task waits for the activity it runs at once (0: never).
        self.eager_ms = int(eager_seconds * 1000)
        # How long a task whose name no live worker of its queue registers is handed back
        # before it goes to the dead-letter stream.
        self.unregistered_grace_ms = int(unregistered_grace_seconds * 1000)
        # The workers' heartbeats as last read (when, what), for tasks this worker does
        # not register.
        self._heartbeats: tuple[float, list[dict[str, Any]]] | None = None
        self._instances: OrderedDict[str, _Cached] = OrderedDict()
        self._intake: anyio.CancelScope | None = None
        self._stopping = False
        self._executors: TaskGroup | None = None
        self._aborting = False
        self._timer_wakeup = anyio.Event()
        self._capacity_freed = anyio.Event()
        # Made by the drain, to wait for the last in-flight task.
        self._drained: anyio.Event | None = None
        self._started = anyio.Event()
        # Reading its queues (from its start until its drain), and Redis answering: the
        # readiness probe needs both.
        self._ready = False
        # How many times the namespace was restored (see _restore_namespace), and the
        # restoration under way, if any: the readers that all find the groups gone at
        # once restore them once.
        self._restorations = 0
        self._restoring: anyio.Event | None = None
        # Redis refused a write for want of memory, and none has succeeded since.
        self._paused_for_memory = False
        self._reachable = True
        # Set while one task checks that Redis answers again; the others wait for it.
        self._reconnected: anyio.Event | None = None

    # -- lifecycle -----------------------------------------------------------------

    async def run(self) -> None:
        """Run until `stop()` is called (or the task is cancelled)."""
        with redis_errors("start a worker", self.store.url):
            await self.store.ensure_groups(self.queues)
            await self.store.load_scripts()
            await self._publish_definitions()
        self._intake = anyio.CancelScope()
        if self._stopping:  # stop() came while it was starting
            self._intake.cancel()
        with counting_load(self):
            await self._run_until_stopped(self._intake)
        await self._remove_heartbeat()
        logger.info("worker %s stopped", self.name)

    async def _run_until_stopped(self, intake: anyio.CancelScope) -> None:
        async with anyio.create_task_group() as background:
            background.start_soon(self._sweep_timers)
            background.start_soon(self._renew_leases)
            background.start_soon(self._heartbeat)
            background.start_soon(self._prune_departed_workers)
            if self.metrics_port is not None:
                background.start_soon(
                    serve_metrics,
                    self.metrics_host,
                    self.metrics_port,
                    lambda: self._ready and self._reachable,
                )
            async with anyio.create_task_group() as executors:
                self._executors = executors
                for _ in range(self.concurrency):
                    executors.start_soon(self._executor)
                with intake:
                    self._ready = True
                    self._started.set()
                    logger.info(
                        "worker %s reading queues %s (%d shards, concurrency %d)",
                        self.name,
                        ",".join(self.queues),
                        self.store.keys.shards,
                        self.concurrency,
                    )
                    await self._take_tasks()
                self._ready = False
                await self._run_own_pending()
                executors.start_soon(self._drain_deadline)
            background.cancel_scope.cancel()

    def stop(self) -> None:
        """Stop reading new tasks; in-flight ones finish (or are handed back) and run() returns."""
        self._stopping = True
        if self._intake is not None:
            self._intake.cancel()

    async def abort(self) -> None:
        """Stop at once: hand back every task this worker has not finished (running,
        waiting for an executor, and the leases of activities it runs at once), so that
        other workers take them over now rather than when their lease ends, and end
        run(). What the drain does at its deadline, and a second SIGTERM (or Ctrl-C).

        Best effort, for at most HAND_BACK_SECONDS: what cannot be handed back (Redis is
        unreachable) is taken over when its lease ends. The log says which.
        """
        if self._aborting:
            return
        self._aborting = True
        self.stop()
        # An activity run at once stands in for its workflow task (committed: nothing to
        # hand back) under the same key.
        unfinished = list({**self._in_flight, **self._holding}.values())
        # Forgotten before the executors end, so that nothing renews their leases again.
        self._in_flight.clear()
        self._holding.clear()
        self._queued.clear()
        self._follow_ups.clear()
        if self._executors is not None:
            self._executors.cancel_scope.cancel()
        if unfinished:
            await self._hand_back(unfinished)

    async def _hand_back(self, tasks: list[Task]) -> None:
        what = f"{len(tasks)} task(s) of workflow(s) {_listing(t.workflow_id for t in tasks)}"
        failure = f"{HAND_BACK_SECONDS:g}s passed"
        # Shielded: the drain deadline runs among the executors it has just cancelled.
        with anyio.move_on_after(HAND_BACK_SECONDS, shield=True):
            try:
                await self.store.hand_back(tasks, self.name, self.lease_ms)
                logger.warning("handed back %s: other workers take them over now", what)
                return
            except RedisError as exc:
                failure = str(exc)
        logger.error(
            "could not hand back %s (%s): they are taken over when their lease (%gs) ends",
            what,
            failure,
            self.lease_ms / 1000,
        )

    @property
    def tasks_running(self) -> int:
        """How many tasks the executors run now (at most `concurrency`)."""
        return len(self._in_flight) - self.tasks_waiting

    @property
    def tasks_waiting(self) -> int:
        """How many tasks this worker took from Redis wait for an executor: those a read
        brought beyond the free executors, and follow-ups that run after the task whose
        transition delivered them."""
        return len(self._queued) + len(self._follow_ups)

    async def wait_started(self) -> None:
        await self._started.wait()

    async def _drain_deadline(self) -> None:
        with anyio.move_on_after(self.drain_seconds):
            if self._in_flight:
                self._drained = anyio.Event()
                await self._drained.wait()
            if self._executors is not None:
                self._executors.cancel_scope.cancel()
            return
        logger.warning("drain: tasks still unfinished after %gs", self.drain_seconds)
        await self.abort()

    # -- intake ----------------------------------------------------------------------

    async def _take_tasks(self) -> None:
        """Take over stale tasks and read new ones until stop() cancels the intake.

        New tasks come by one blocking read per shard: its streams share the shard's
        slot, as Redis Cluster wants of one command, and a task added to a stream wakes
        only the reads of its shard (Redis runs a woken read again over all of its
        streams, so one read over every shard would cost it that much per task). Each
        read asks for its share of the free capacity.
        """
        async with anyio.create_task_group() as intake:
            intake.start_soon(self._take_over_stale_tasks)
            for streams in self._shard_streams:
                intake.start_soon(self._read_shard, streams)

    async def _read_shard(self, streams: dict[str, tuple[int, str]]) -> None:
        while True:
            free = await self._wait_for_capacity()
            # So that the reads bring fewer than free + shards tasks, not free * shards.
            count = -(-free // len(self._shard_streams))
            restorations = self._restorations
            try:
                tasks = await self.store.read_tasks(streams, self.name, count, self.poll_ms)
            except ConsumerGroupMissing:
                await self._restore_namespace(restorations)
                continue
            except RedisError as exc:
                await self._redis_trouble("reading tasks", exc)
                continue
            # A read can bring more tasks than fit: they are ours now, and wait for an
            # executor.
            for task in tasks:
                self._accept(task, 1)
            if not tasks:
                continue
            if len(self._in_flight) > len(tasks):
                # A busy worker: the tasks start (up to their first round trip) before
                # the next read is sent, which would delay each of them by its cost.
                await anyio.lowlevel.checkpoint()
            else:
                # A worker that was idle: what a user waits for is its tasks' commits and
                # the wake-up of whoever waits on them, and on a machine with few cores
                # the next read, sent meanwhile, takes the core that Redis needs for the
                # commit (the kernel tends to wake Redis on the sender's core). This
                # shard's tasks do not wait for the read: the commits take the next one
                # (see take_next), and other workers' reads of the shard stay armed.
                await anyio.sleep(IDLE_READ_PAUSE_SECONDS)

    async def _take_over_stale_tasks(self) -> None:
        """Claim a dead worker's tasks as this one starts (a task handed back is taken at
        once) and then every half lease, busy or not, up to `concurrency` at a time (and
        again at once while a claim comes back full and capacity is left); they go to
        the front of the local queue. So a claimed task starts as soon as an executor is
        free: it waits neither behind new tasks nor behind the follow-ups of running
        workflows (a takeover would take that long), and a worker holds at most
        `concurrency` claimed tasks it has not started (should it die too, each costs a
        delivery)."""
        interval = max(self.lease_ms / 2000, 0.05)
        while True:
            while await self._claim_stale_tasks():
                pass
            await anyio.sleep(interval)

    async def _claim_stale_tasks(self) -> bool:
        """One claim; whether to claim again at once (it came back full, and capacity
        is left)."""
        free = self.concurrency - len(self._in_flight)
        restorations = self._restorations
        try:
            claimed = await self.store.claim_stale_tasks(
                self._streams, self.name, self.lease_ms, self.concurrency
            )
        except ConsumerGroupMissing:
            await self._restore_namespace(restorations)
            return False
        except RedisError as exc:
            await self._redis_trouble("taking over tasks", exc)
            return False
        CLAIMED.inc(len(claimed))
        for task, deliveries in reversed(claimed):
            logger.info(
                "took over task %s (%s) of workflow %s, delivery %d",
                task.id,
                task.kind,
                task.workflow_id,
                deliveries,
            )
            self._accept(task, deliveries, first=True)
        if claimed:
            await anyio.lowlevel.checkpoint()
        return len(claimed) == self.concurrency and free > len(claimed)

    async def _wait_for_capacity(self) -> int:
        """Wait until fewer tasks than `concurrency` are accepted; return how many more
        fit."""
        while self.concurrency - len(self._in_flight) <= 0:
            if self._capacity_wanted_since is None:
                self._capacity_wanted_since = anyio.current_time()
            if self._capacity_freed.is_set():
                self._capacity_freed = anyio.Event()
            await self._capacity_freed.wait()
        self._capacity_wanted_since = None
        return self.concurrency - len(self._in_flight)

    async def _run_own_pending(self) -> None:
        """Run, as part of the drain, tasks delivered to this worker that it never started.

        A stop that cuts a read (or a reclaim) short, after Redis delivered its tasks to
        this consumer, would leave them pending on it until the lease ends.
        """
        started = set(self._in_flight)  # these may finish while we read: not to run again
        pending: list[Task] = []
        try:
            with anyio.move_on_after(self.drain_seconds):
                pending = await self.store.read_tasks(self._streams, self.name, 1000, 0, start="0")
        except RedisError as exc:
            logger.warning("could not read the tasks pending on this worker: %s", exc)
            return
        for task in pending:
            key = (task.queue_key, task.id)
            if key in started or key in self._in_flight or not task.fields:
                continue
            # The drain waits for it, or its deadline hands it back.
            self._accept(task, 1)

    def _accept(self, task: Task, deliveries: int, *, first: bool = False) -> None:
        """Take a delivered task: its lease is renewed from now on, and it runs when an
        executor is free (before the tasks already waiting, if `first`)."""
        self._in_flight[(task.queue_key, task.id)] = task
        self._queue(task, deliveries, first=first)

    def _queue(self, task: Task, deliveries: int, *, first: bool = False) -> None:
        if first:
            self._queued.appendleft((task, deliveries))
        else:
            self._queued.append((task, deliveries))
        if self._idle_executors:
            self._idle_executors.popleft().set()

    async def _executor(self) -> None:
        """Run accepted tasks one at a time; `concurrency` of these run."""
        while True:
            while not self._queued:
                woken = asyncio.Event()  # cheaper than anyio's: one per idle spell
                self._idle_executors.append(woken)
                await woken.wait()
            task, deliveries = self._queued.popleft()
            follow_up = await self._execute(task, deliveries)
            # A follow-up runs here at once, unless accepted tasks wait for an executor:
            # then it waits behind them (it is already counted in flight).
            while follow_up is not None and not self._queued:
                follow_up = await self._execute(follow_up, 1)
            if follow_up is not None:
                self._queue(follow_up, 1)

    def _take_next_for(self) -> str:
        """The consumer name a finishing transition may deliver the queue's next task to
        (it replaces the finishing task in flight), or "": while draining, and once the
        intake has waited a poll interval for capacity, so that the follow-ups of
        running workflows do not keep new tasks waiting in Redis for ever."""
        if self._intake is None or self._intake.cancel_called:
            return ""
        wanted = self._capacity_wanted_since
        if wanted is not None and anyio.current_time() - wanted > self.poll_ms / 1000:
            return ""
        return self.name

    def _adopt(self, finishing: Task, follow_up: Task | None) -> None:
        """Take the task a transition of `finishing` delivered: it runs next, on the same
        executor."""
        if follow_up is not None:
            self._in_flight[(follow_up.queue_key, follow_up.id)] = follow_up
            self._follow_ups[(finishing.queue_key, finishing.id)] = follow_up

    async def _restore_namespace(self, restorations: int) -> None:
        """Recreate the consumer groups (and the namespace's config) that a read found
        gone, once for all the readers that find it: those that read before the last
        restoration (`restorations` is the count they saw) just read again.

        Raises ConfigurationError when the recreated config holds another shard count."""
        if self._restoring is not None:
            await self._restoring.wait()
            return
        if restorations != self._restorations:
            return
        self._restoring = anyio.Event()
        try:
            config_missing = await self.store.restore_namespace(self.queues)
            await self._publish_definitions()
        except RedisError as exc:
            await self._redis_trouble("recreating the consumer groups", exc)
            return
        finally:
            self._restoring.set()
            self._restoring = None
        self._restorations += 1
        NAMESPACE_DATA_LOST.inc()
        logger.error(
            "the Redis server lost the data of namespace %r: the consumer groups of its "
            "task streams were gone%s (a server restarted without its AOF, a FLUSHALL, a "
            "failover to a replica that lagged, or keys deleted by hand). The histories, "
            "queued tasks and timers written before are gone: workflows started before "
            "cannot complete and are no longer found. Recreated the consumer groups%s; "
            "new workflows run.",
            self.store.keys.namespace,
            ", and its config" if config_missing else "",
            f" and the config ({self.store.keys.shards} shards)" if config_missing else "",
        )

    async def _redis_trouble(self, doing: str, exc: Exception) -> None:
        """After a failed read: not ready until Redis answers again (checked every
        second, by one task for all the readers that failed)."""
        if isinstance(exc, OutOfMemoryError):
            self._out_of_memory(exc)
        elif self._reachable:  # said once, not by every shard's reader
            logger.warning("Redis error while %s: %s; retrying every 1s", doing, exc)
        self._reachable = False
        if self._reconnected is not None:
            await self._reconnected.wait()
            return
        self._reconnected = anyio.Event()
        try:
            while True:
                await anyio.sleep(1)
                try:
                    await self.store.ping()
                except RedisError:
                    continue
                break
            logger.info("Redis answers again")
            self._reachable = True
        finally:
            self._reconnected.set()
            self._reconnected = None

    def _out_of_memory(self, exc: RedisError) -> None:
        """Say once that Redis refuses writes for want of memory (until one succeeds)."""
        if not self._paused_for_memory:
            self._paused_for_memory = True
            logger.warning(
                "Redis is out of memory (maxmemory): %s; tasks pause and retry their writes "
                "until memory is freed, without counting a delivery",
                exc,
            )

    def _memory_back(self) -> None:
        if self._paused_for_memory:
            self._paused_for_memory = False
            logger.info("Redis accepts writes again: paused tasks carry on")

    # -- execution -------------------------------------------------------------------

    async def _execute(self, task: Task, deliveries: int) -> Task | None:
        """Run one task; returns the task its transition delivered to run next, if any."""
        queue = self._streams[task.queue_key][1]
        outcome = "error"
        try:
            if deliveries > self.max_deliveries:
                outcome = "dead"
                await self._dead_letter(
                    task,
                    f"delivered {deliveries} times, over the limit of {self.max_deliveries} "
                    "(each worker that took it died or lost its lease)",
                )
            elif (problem := _malformed(task)) is not None:
                outcome = "dead"
                await self._dead_letter(task, problem)
            elif task.kind == "w":
                # Its first delivery may run an activity at once; a task taken over
                # from a worker that died leaves its activities queued, so that one
                # that kills workers ends in the dead-letter stream as itself.
                eager = deliveries == 1
                outcome = await self._while_unreachable(
                    task, lambda: self._run_workflow_task(task, queue, eager=eager)
                )
            elif task.kind == "a":
                outcome = await self._run_activity_task(task, queue)
            else:
                outcome = "dead"
                await self._dead_letter(task, f"unknown task kind {task.kind!r}")
        except PayloadError as exc:
            outcome = "dead"
            await self._dead_letter(task, f"bad payload: {exc}")
        except RedisError as exc:
            # Left pending: the reclaimer (here or elsewhere) retries it after the lease.
            logger.warning(
                "Redis error on task %s of workflow %s: %s", task.id, task.workflow_id, exc
            )
        except Exception:
            logger.exception(
                "task %s of workflow %s failed unexpectedly; it stays pending "
                "and is retried after the lease",
                task.id,
                task.workflow_id,
            )
        finally:
            self._in_flight.pop((task.queue_key, task.id), None)
            self._capacity_freed.set()
            if not self._in_flight and self._drained is not None:
                self._drained.set()
            labelled(TASKS, queue, _kind_label(task), outcome).inc()
        return self._follow_ups.pop((task.queue_key, task.id), None)

    async def _while_unreachable(self, task: Task, call: Callable[[], Awaitable[T]]) -> T:
        """`call()`, retried while Redis cannot be reached, for at most one lease, and
        while it is out of memory, until memory is freed.

        A task that only lost its connection (a Redis restart, a failover) carries on
        here once Redis is back: left pending, it would wait a whole lease, run again
        elsewhere (an activity a second time), and spend one of its deliveries although
        no worker died. Out of memory is back-pressure: the task keeps its lease (XCLAIM
        is allowed then) and waits here, however long. `call` must be safe to repeat:
        every transition is fenced or deduplicated by its script.
        """

        def patience(exc: RedisError) -> float | None:
            if isinstance(exc, OutOfMemoryError):
                return math.inf
            return self.lease_ms / 1000 if unreachable(exc) else None

        def on_retry(exc: RedisError, delay: float) -> None:
            if isinstance(exc, OutOfMemoryError):
                self._out_of_memory(exc)
                return
            logger.warning(
                "Redis unreachable on task %s of workflow %s: %s; retrying in %.1fs",
                task.id,
                task.workflow_id,
                exc,
                delay,
            )

        result = await retrying(call, patience, on_retry)
        self._memory_back()
        return result

    async def _unregistered(self, task: Task, kind: str, name: str) -> str:
        """A task whose workflow or activity (`kind`) this worker does not register (a
        rolling deploy, workers split by team): handed back to the queue for another
        worker (in 0.25 s while a live worker of the queue registers the name, else
        waiting longer each time) until none has for `unregistered_grace_seconds`; then
        dead-lettered."""
        queue = self._streams[task.queue_key][1]
        what = f"{kind} {name!r}"
        mine = sorted(registered_workflows() if kind == "workflow" else registered_activities())
        others = await self._workers_registering(queue, kind, name)
        now = now_ms()
        since = 0 if others else task.unregistered_since or now
        if since and now - since >= self.unregistered_grace_ms:
            labelled(UNREGISTERED_TASKS, kind, name, "dead").inc()
            await self._dead_letter(
                task,
                f"no live worker of queue {queue!r} has registered {what} (workflow "
                f"{task.workflow_id!r}) for {(now - since) / 1000:.0f}s: start a worker with "
                f"the module that defines it, then `loom dead retry`; this worker registers "
                f"{', '.join(mine) or 'no ' + kind}",
            )
            return "dead"
        # The back-off spares Redis while no worker can run the task. While one can, it
        # would only delay the task: each hand-back may come back to this worker (a
        # blocked read is served in the order the readers blocked), so it stays short.
        delay = min(
            UNREGISTERED_DELAY_SECONDS * 2 ** min(0 if others else task.handbacks, 16),
            MAX_UNREGISTERED_DELAY_SECONDS,
        )
        labelled(UNREGISTERED_TASKS, kind, name, "handed_back").inc()
        if others:
            who = f"worker(s) {', '.join(others)} register it"
        else:
            left = (self.unregistered_grace_ms - (now - since)) / 1000
            who = f"no live worker of the queue registers it: dead-lettered in {left:.0f}s"
        logger.warning(
            "task %s of workflow %s: this worker does not register %s (it registers %s); "
            "handed back to queue %r for another worker in %.2gs (%s)",
            task.id,
            task.workflow_id,
            what,
            ", ".join(mine) or f"no {kind}",
            queue,
            delay,
            who,
        )
        await self.store.defer_task(task, queue, now + int(delay * 1000), unregistered_since=since)
        self._timer_wakeup.set()
        return "handed_back"

    async def _workers_registering(self, queue: str, kind: str, name: str) -> list[str]:
        """The live workers of `queue` whose heartbeat says they register `name` (a
        workflow or activity, by `kind`); heartbeats are read at most once a second."""
        now = anyio.current_time()
        if self._heartbeats is None or now - self._heartbeats[0] > 1.0:
            self._heartbeats = (now, await self.store.live_workers())
        return registering(self._heartbeats[1], queue, kind, name)

    async def _dead_letter(self, task: Task, reason: str) -> None:
        logger.error(
            "task %s of workflow %r goes to the dead-letter stream: %s",
            task.id,
            task.workflow_id,
            reason,
        )
        labelled(DEAD_LETTERS, _kind_label(task)).inc()
        await self.store.dead_letter(task, reason)

    # -- workflow tasks --------------------------------------------------------------

    async def _run_workflow_task(self, task: Task, queue: str, *, eager: bool) -> str:
        workflow_id = task.workflow_id
        for attempt in range(MAX_COMMIT_TRIES):
            try:
                # What the task carries was the history when it was queued: good for a
                # first try only, as a conflict means the history has moved since.
                loaded = await self._load(task, use_carried=attempt == 0)
            except PayloadError as exc:  # a history entry that does not decode
                outcome = await self._fail_unreadable(task, queue, exc)
                if outcome != "conflict":
                    return outcome
                COMMIT_CONFLICTS.inc()
                continue
            if isinstance(loaded, str):
                return loaded
            outcome = await self._replay_and_commit(task, queue, loaded, eager=eager)
            if outcome == "conflict":
                COMMIT_CONFLICTS.inc()
            elif outcome != "reload":
                return outcome
        logger.warning(
            "workflow task %s of %s lost %d commits in a row; retrying later",
            task.id,
            workflow_id,
            MAX_COMMIT_TRIES,
        )
        return "conflict"

    async def _load(self, task: Task, *, use_carried: bool) -> _Loaded | str:
        """The workflow's instance and the history events it has not applied yet.

        A cached instance (still running this worker's code) needs only the events
        after the last one it applied; otherwise the whole history is replayed. Events
        the task brings along (`use_carried`) save reading them; the commit's fence
        catches any that came after.
        Returns the task's outcome instead when it cannot run here (it went to the
        dead-letter stream, or back to the queue for a worker that registers its workflow).
        """
        workflow_id = task.workflow_id
        cached = self._instances.pop(workflow_id, None)
        if cached is not None:
            definition = cached.instance.definition
            if registered_workflow(definition.name) is definition:
                preloaded = task.preloaded if use_carried else None
                if preloaded is not None and preloaded[0] == cached.last_id:
                    events = preloaded[1]
                else:
                    events = await self.store.read_history(workflow_id, after=cached.last_id)
                return _Loaded(
                    cached.instance,
                    cached.carried + events,
                    cached.length,
                    cached.last_id,
                    carried=len(cached.carried),
                )
        queued_copy = self.store.carried_history(task) if use_carried else None
        history = queued_copy or await self.store.read_history(workflow_id)
        if not history or history[0].type != EventType.WORKFLOW_STARTED:
            await self._dead_letter(task, f"workflow {workflow_id!r} has no history")
            return "dead"
        name = str((history[0].data or {}).get("name", ""))
        found = registered_workflow(name)
        if found is None:
            return await self._unregistered(task, "workflow", name)
        instance = WorkflowInstance(found, workflow_id)  # type: ignore[abstract]
        return _Loaded(instance, history, 0, "", queued_copy=bool(queued_copy))

    async def _replay_and_commit(
        self, task: Task, queue: str, loaded: _Loaded, *, eager: bool = False
    ) -> str:
        """Apply the events to the instance and commit what its code did; with `eager`,
        the first activity it schedules may run at once (see _run_eager)."""
        started = time.perf_counter()
        try:
            return await self._replay_and_commit_timed(task, queue, loaded, eager)
        finally:
            name = loaded.instance.definition.name
            labelled(WORKFLOW_TASK_SECONDS, name).observe(time.perf_counter() - started)

    async def _replay_and_commit_timed(
        self, task: Task, queue: str, loaded: _Loaded, eager: bool
    ) -> str:
        workflow_id = task.workflow_id
        instance = loaded.instance
        definition = instance.definition
        completing = loaded.completing
        try:
            task_time = completing.time_ms if completing is not None else now_ms()
            activation = instance.apply(loaded.events, task_time)
        except (NonDeterministicWorkflowError, PayloadError) as exc:
            if loaded.base_length:
                return "reload"  # judge it on a replay of the whole history
            if isinstance(exc, PayloadError):
                return await self._fail(task, queue, loaded.events, exc)
            policy = definition.on_nondeterminism or self.on_nondeterminism
            return await self._nondeterministic(task, queue, loaded.events, exc, policy)
        take_next_for = self._take_next_for()
        held = self._eager_candidate(activation, loaded, take_next_for) if eager else None
        plan = _plan_of(
            activation,
            task_time,
            completing,
            loaded.completing_data,
            # The outcome of an activity this worker held: its lease goes.
            timers_delete=[task.lease] if task.lease else (),
            held_activity=held[0].seq if held is not None else None,
        )
        if held is not None:
            return await self._run_eager(task, queue, loaded, plan, *held)
        result = await self.store.commit_workflow_task(
            workflow_id,
            queue=queue,
            task_id=task.id,
            expected_length=loaded.length,
            plans=[plan],
            take_next_for=take_next_for,
            task_stream=task.queue_key,
            last_read_id=loaded.skip_from,
        )
        return self._committed(task, instance, [plan], result, loaded.last_id)

    def _committed(
        self,
        task: Task,
        instance: WorkflowInstance,
        plans: list[TaskPlan],
        result: CommitResult,
        last_id: str,
        *,
        keep: bool = True,
    ) -> str:
        """After a commit: take the task it delivered, wake the timer sweep for new timers,
        and keep the instance (`keep`) if the workflow goes on."""
        self._adopt(task, result.next_task)
        if result.outcome == "ok":
            commands = [command for plan in plans for command in plan.commands]
            if any(c.type == EventType.TIMER_STARTED for c in commands):
                self._timer_wakeup.set()
            status = plans[-1].status
            if status.is_terminal:
                labelled(WORKFLOWS_CLOSED, instance.definition.name, str(status)).inc()
            elif keep and result.skipped_events is not None:
                self._keep(
                    task.workflow_id,
                    instance,
                    result.length,
                    result.last_id or last_id,
                    result.skipped_events,
                )
        return result.outcome

    # -- eager activities ----------------------------------------------------------

    def _eager_candidate(
        self, activation: Activation, loaded: _Loaded, take_next_for: str
    ) -> tuple[Command, Any] | None:
        """The first activity a workflow task schedules, with its function, if this worker
        runs it at once (see _run_eager)."""
        if (
            self.eager_ms <= 0
            or not take_next_for  # draining, or new tasks wait for capacity
            or loaded.completing is not None
            or activation.status.is_terminal
        ):
            return None
        for command in activation.commands:
            if command.type == EventType.ACTIVITY_SCHEDULED:
                definition = registered_activity(str((command.data or {}).get("name")))
                return None if definition is None else (command, definition.fn)
        return None

    async def _run_eager(
        self, task: Task, queue: str, loaded: _Loaded, plan: TaskPlan, command: Command, fn: Any
    ) -> str:
        """Run the first activity the workflow task scheduled at once, on this worker,
        before its scheduling is written (a crash before the commit loses only work that a
        replay redoes: activities run at least once).

        If its attempt ends within the eager window, one commit writes the workflow task,
        the activity's outcome and what the code did next (or the retry of its next
        attempt): the history is the one the queued way writes, one round trip and two
        hops shorter. Otherwise a watchdog writes the scheduling at the window's end, with
        a timer member in place of the task (its lease, renewed while the attempt runs,
        that queues the activity again if this worker dies), and the outcome is recorded
        when it comes.
        """
        held = self.store.held_activity_task(task.workflow_id, queue, command)
        hold = _Hold()
        # The attempt runs here, before anything else this worker has to do (such as its
        # next read) gets a turn: no task is made for it, nor for the watchdog unless the
        # window ends first.
        loop = asyncio.get_running_loop()
        window = loop.call_later(
            self.eager_ms / 1000,
            lambda: hold.watch(self._hold_slow_attempt(task, queue, loaded, plan, held, hold)),
        )
        try:
            with hold.attempt_scope:
                attempt = await self._attempt(held, dict(command.data or {}), fn)
            window.cancel()
            if hold.watchdog is not None:
                await hold.written.wait()
        finally:
            window.cancel()
            if hold.watchdog is not None:
                hold.watchdog.cancel()
            # Until here, a drain hands its lease back (see _drain_deadline).
            self._holding.pop((task.queue_key, task.id), None)
        if hold.attempt_scope.cancelled_caught:  # its scheduling could not be written
            return hold.outcome
        if hold.watchdog is None:
            merged = await self._commit_with_outcome(task, queue, loaded, plan, held, attempt)
            if merged is not None:
                labelled(EAGER_ACTIVITIES, "with_outcome").inc()
                return merged
            # The instance refused the outcome and is ahead of the history: not kept.
            hold.outcome = await self._hold(task, queue, loaded, plan, held, keep=False)
            if hold.outcome != "ok":
                return hold.outcome
        await self._settle(held, queue, attempt)
        # A task the outcome's commit delivered runs after this workflow task.
        follow_up = self._follow_ups.pop((held.queue_key, held.id), None)
        if follow_up is not None:
            self._follow_ups[(task.queue_key, task.id)] = follow_up
        return hold.outcome

    async def _hold_slow_attempt(
        self, task: Task, queue: str, loaded: _Loaded, plan: TaskPlan, held: Task, hold: _Hold
    ) -> None:
        """At the eager window's end, write the scheduling of the activity still running,
        then renew its lease until cancelled; if the scheduling cannot be written (the
        history moved, Redis failed), cancel the attempt: a replay schedules it again."""
        try:
            hold.outcome = await self._hold(task, queue, loaded, plan, held, keep=True)
        except Exception as exc:  # the attempt waits for an outcome, whatever happened
            log = logger.warning if isinstance(exc, RedisError) else logger.exception
            # Named by workflow and seq: the task carries the activity's arguments.
            log(
                "could not write the scheduling of activity seq %s of workflow %s: %s",
                int(held.fields["seq"]),
                held.workflow_id,
                exc,
            )
            hold.outcome = "error"
        finally:
            hold.written.set()
        if hold.outcome != "ok":
            hold.attempt_scope.cancel()
            return
        self._holding[(task.queue_key, task.id)] = held  # a drain hands its lease back
        while True:
            await anyio.sleep(self.lease_ms / 3000)
            try:
                await self.store.renew_activity_lease(held, now_ms() + self.lease_ms)
            except RedisError as exc:
                logger.warning(
                    "could not renew the lease of activity seq %s of workflow %s: %s",
                    int(held.fields["seq"]),
                    held.workflow_id,
                    exc,
                )

    async def _hold(
        self, task: Task, queue: str, loaded: _Loaded, plan: TaskPlan, held: Task, *, keep: bool
    ) -> str:
        """Commit the workflow task with its eager activity's lease in place of its task."""
        labelled(EAGER_ACTIVITIES, "before_outcome").inc()
        lease = (now_ms() + self.lease_ms, held.lease)
        result = await self.store.commit_workflow_task(
            task.workflow_id,
            queue=queue,
            task_id=task.id,
            expected_length=loaded.length,
            plans=[replace(plan, extra_timers=[lease])],
            task_stream=task.queue_key,
            last_read_id=loaded.skip_from,
        )
        self._timer_wakeup.set()  # the sweep learns when the lease is due
        return self._committed(task, loaded.instance, [plan], result, loaded.last_id, keep=keep)

    async def _commit_with_outcome(
        self,
        task: Task,
        queue: str,
        loaded: _Loaded,
        plan: TaskPlan,
        held: Task,
        attempt: _Attempt,
    ) -> str | None:
        """The workflow task and its eager activity's attempt in one commit: with the
        retry of the next attempt, or with the outcome and the code's next activation.
        None if the instance refused the outcome (the caller writes them apart)."""
        seq = int(held.fields["seq"])
        workflow_id = task.workflow_id
        if attempt.retry_due_ms is not None:
            retry = self.store.retry_member(workflow_id, queue, seq, 2, held.fields["p"])
            plans = [replace(plan, extra_timers=[(attempt.retry_due_ms, retry)])]
            self._timer_wakeup.set()
        else:
            event = attempt.outcome_event(seq)
            try:
                activation = loaded.instance.apply([event], event.time_ms)
            except (NonDeterministicWorkflowError, PayloadError):
                return None
            plans = [plan, _plan_of(activation, event.time_ms, event, attempt.encoded)]
        result = await self.store.commit_workflow_task(
            workflow_id,
            queue=queue,
            task_id=task.id,
            expected_length=loaded.length,
            plans=plans,
            take_next_for=self._take_next_for(),
            task_stream=task.queue_key,
            last_read_id=loaded.skip_from,
        )
        return self._committed(task, loaded.instance, plans, result, loaded.last_id)

    def _keep(
        self,
        workflow_id: str,
        instance: WorkflowInstance,
        length: int,
        last_id: str,
        carried: list[Event],
    ) -> None:
        """Cache an instance that matches the history (but the `carried` events), evicting
        the least recent."""
        self._instances[workflow_id] = _Cached(instance, length, last_id, carried)
        while len(self._instances) > self.cache_size:
            self._instances.popitem(last=False)

    async def _nondeterministic(
        self,
        task: Task,
        queue: str,
        history: list[Event],
        error: NonDeterministicWorkflowError,
        policy: NondeterminismPolicy,
    ) -> str:
        # The error quotes the values that differ (users' data): in full only at DEBUG.
        logger.debug("%s", error)
        if policy == "fail":
            logger.error(
                "workflow %s cannot replay its history (NonDeterministicWorkflowError): it "
                "fails; `loom inspect %s` shows where and what differs",
                task.workflow_id,
                task.workflow_id,
            )
            return await self._fail(task, queue, history, error)
        due = now_ms() + self.suspend_retry_ms
        logger.error(
            "workflow %s cannot replay its history (NonDeterministicWorkflowError): "
            "suspended, retried at %s; `loom inspect %s` shows where and what differs",
            task.workflow_id,
            time.ctime(due / 1000),
            task.workflow_id,
        )
        member = self.store.timer_member("resume", task.workflow_id, queue, 0)
        result = await self.store.commit_workflow_task(
            task.workflow_id,
            queue=queue,
            task_id=task.id,
            expected_length=len(history),
            plans=[
                TaskPlan(
                    [],
                    Status.SUSPENDED,
                    meta={"suspended": encode(failure_record(error, None))},
                    extra_timers=[(due, member)],
                    keep_task_flag=True,
                )
            ],
        )
        self._timer_wakeup.set()
        return "suspended" if result.outcome == "ok" else result.outcome

    async def _fail_unreadable(self, task: Task, queue: str, error: PayloadError) -> str:
        """Fail a workflow whose history holds an entry that does not decode: it can never
        be replayed again. Only that workflow fails; the task does not go to the
        dead-letter stream. The commit is fenced by the history's length (XLEN)."""
        workflow_id = task.workflow_id
        self._instances.pop(workflow_id, None)
        length, last_seq = await self.store.history_summary(workflow_id)
        failure = WorkflowExecutionError(
            f"{error}; the workflow cannot be replayed, so it fails", workflow_id
        )
        logger.error("workflow %s: %s", workflow_id, failure)
        command = Command(EventType.WORKFLOW_FAILED, last_seq + 1, failure_record(failure, None))
        result = await self.store.commit_workflow_task(
            workflow_id,
            queue=queue,
            task_id=task.id,
            expected_length=length,
            plans=[TaskPlan([command], Status.FAILED)],
        )
        return "failed" if result.outcome == "ok" else result.outcome

    async def _fail(self, task: Task, queue: str, history: list[Event], error: Exception) -> str:
        """Fail the workflow with `error`, whatever its code would do (it cannot run)."""
        seq = max((e.seq for e in history if e.type in COMMAND_TYPES), default=0) + 1
        command = Command(EventType.WORKFLOW_FAILED, seq, failure_record(error, None))
        result = await self.store.commit_workflow_task(
            task.workflow_id,
            queue=queue,
            task_id=task.id,
            expected_length=len(history),
            plans=[TaskPlan([command], Status.FAILED)],
        )
        return "failed" if result.outcome == "ok" else result.outcome

    # -- activity tasks --------------------------------------------------------------

    async def _run_activity_task(self, task: Task, queue: str) -> str:
        scheduled = _scheduled_activity(task)
        definition = registered_activity(str(scheduled["name"]))
        if definition is None:
            return await self._unregistered(task, "activity", str(scheduled["name"]))
        attempt = await self._attempt(task, scheduled, definition.fn)
        return await self._settle(task, queue, attempt)

    async def _attempt(self, task: Task, scheduled: dict[str, Any], fn: Any) -> _Attempt:
        """Run one attempt of the activity and say what is to be written."""
        name = str(scheduled["name"])
        attempt = int(task.fields.get("att", b"1"))
        timeout = scheduled.get("timeout_seconds")
        started = time.perf_counter()
        try:
            call = _call(fn, scheduled.get("args") or [], scheduled.get("kwargs") or {})
            if timeout is None:
                result = await call
            else:
                with anyio.fail_after(timeout):
                    result = await call
            # The whole record, as it will be written: a result that cannot be written fails
            # the activity here, with a clear error, instead of leaving its task in limbo.
            data = {"result": result, "attempts": attempt}
            encoded = encode(
                data,
                what=f"result of activity {name!r}",
                carries=USER_VALUES[EventType.ACTIVITY_COMPLETED],
            )
        except Exception as exc:
            labelled(ACTIVITY_SECONDS, name, "failed").observe(time.perf_counter() - started)
            if isinstance(exc, TimeoutError) and timeout is not None:
                message = f"timed out after {timeout:g}s"
            else:
                message = clip(f"{type(exc).__name__}: {exc}")
            return self._failed_attempt(task, scheduled, attempt, exc, message)
        labelled(ACTIVITY_SECONDS, name, "completed").observe(time.perf_counter() - started)
        return _Attempt(attempt, failed=False, encoded=encoded)

    async def _settle(self, task: Task, queue: str, attempt: _Attempt) -> str:
        """Write what an attempt came to: its outcome, or its next attempt's retry."""
        if attempt.retry_due_ms is None:
            return await self._record_activity(task, attempt)
        due_ms = attempt.retry_due_ms
        outcome = await self._while_unreachable(
            task,
            lambda: self.store.schedule_activity_retry(
                task, queue=queue, attempt=attempt.number + 1, due_ms=due_ms
            ),
        )
        self._timer_wakeup.set()
        return "retry" if outcome == "ok" else outcome

    async def _record_activity(self, task: Task, attempt: _Attempt) -> str:
        """Record the activity's outcome, once whatever the retries (a repeat finds it
        recorded: "duplicate").

        When this worker holds the workflow's instance, the outcome and the workflow
        task it wakes are one commit. Otherwise (or if that commit finds the history
        moved), the outcome alone is recorded and the queue's next task taken: with no
        backlog, the workflow task it requested, with the history this worker's
        instance lacks.
        """
        outcome = await self._while_unreachable(
            task, lambda: self._complete_in_place(task, attempt)
        )
        if outcome is not None:
            return outcome
        cached = self._instances.get(task.workflow_id)

        async def record() -> str:
            recorded = await self.store.record_activity_result(
                task,
                failed=attempt.failed,
                record=attempt.encoded,
                take_next_for=self._take_next_for(),
                history_after=cached.last_id if cached is not None else "",
            )
            self._adopt(task, recorded.next_task)
            return recorded.outcome

        return await self._while_unreachable(task, record)

    async def _complete_in_place(self, task: Task, attempt: _Attempt) -> str | None:
        """Feed the activity's outcome to the cached instance of its workflow and commit
        both in one transition; None when there is no such instance or the commit could
        not be made (the history moved, a workflow task is queued, replay disagreed)."""
        workflow_id = task.workflow_id
        cached = self._instances.get(workflow_id)
        # With carried events, a workflow task is queued: the outcome waits for it.
        if cached is None or cached.carried:
            return None
        del self._instances[workflow_id]
        definition = cached.instance.definition
        if registered_workflow(definition.name) is not definition:
            return None
        event = attempt.outcome_event(int(task.fields["seq"]))
        loaded = _Loaded(
            cached.instance, [event], cached.length, cached.last_id, event, attempt.encoded
        )
        queue = self._streams[task.queue_key][1]
        outcome = await self._replay_and_commit(task, queue, loaded)
        if outcome in ("conflict", "reload"):
            return None
        # The commit acknowledged the activity task: "closed" dropped its outcome.
        return "dropped" if outcome == "closed" else outcome

    def _failed_attempt(
        self,
        task: Task,
        scheduled: dict[str, Any],
        attempt: int,
        error: Exception,
        message: str,
    ) -> _Attempt:
        name = scheduled["name"]
        max_attempts = int(scheduled.get("retry_count") or 0) + 1
        if attempt < max_attempts:
            delay = float(scheduled.get("retry_backoff_seconds", 1.0)) * float(
                scheduled.get("backoff_multiplier", 2.0)
            ) ** (attempt - 1)
            delay = min(delay, float(scheduled.get("max_backoff_seconds", 60.0)))
            logger.warning(
                "activity %s (workflow %s) attempt %d/%d failed: %s; retry in %.2gs",
                name,
                task.workflow_id,
                attempt,
                max_attempts,
                message,
                delay,
            )
            return _Attempt(attempt, failed=True, retry_due_ms=now_ms() + int(delay * 1000))
        logger.error(
            "activity %s (workflow %s) failed after %d attempt(s): %s",
            name,
            task.workflow_id,
            attempt,
            message,
        )
        data = {"error_type": type(error).__name__, "message": message, "attempts": attempt}
        return _Attempt(attempt, failed=True, encoded=encode(data))

    # -- background ------------------------------------------------------------------

    async def _sweep_timers(self) -> None:
        """Fire due timers, then sleep until the next one is due.

        Timers this worker's own commits add wake it at once; every `timer_scan_seconds`
        it also looks for timers whose worker died (any worker may fire any timer).
        """
        while True:
            # Made before the scan, so that a timer added during it is not missed.
            self._timer_wakeup = anyio.Event()
            try:
                due, next_due = await self.store.due_timers()
                for member in due:
                    outcome = await self.store.fire_timer(member)
                    if outcome == "ok":
                        labelled(TIMERS_FIRED, member.kind).inc()
                        if member.lease:
                            self._lease_expired(member)
            except RedisError as exc:
                await self._redis_trouble("sweeping timers", exc)
                continue
            if due:
                continue
            wait_ms = self.timer_scan_ms
            if next_due is not None:
                wait_ms = min(wait_ms, next_due - now_ms())
            with anyio.move_on_after(max(wait_ms, 1) / 1000):
                await self._timer_wakeup.wait()

    def _lease_expired(self, member: TimerMember) -> None:
        LEASE_EXPIRED.inc()
        logger.info(
            "took over an activity of workflow %s: its lease ran out (its worker died or "
            "handed it back), so it is queued again",
            member.workflow_id,
        )

    async def _renew_leases(self) -> None:
        while True:
            await anyio.sleep(self.lease_ms / 3000)
            if self._in_flight:
                try:
                    await self.store.renew_leases(list(self._in_flight.values()), self.name)
                except RedisError as exc:
                    logger.warning("could not renew leases: %s", exc)

    async def _heartbeat(self) -> None:
        started = now_ms()
        while True:
            info = {
                "name": self.name,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "queues": list(self.queues),
                "concurrency": self.concurrency,
                "in_flight": self.tasks_running,
                "waiting": self.tasks_waiting,
                "started_ms": started,
                "seen_ms": now_ms(),
                # What other workers look up for a task they do not register.
                **registrations(registered_workflows(), registered_activities()),
            }
            try:
                await self.store.publish_heartbeat(self.name, info)
            except RedisError as exc:
                logger.warning("heartbeat failed: %s", exc)
            await anyio.sleep(HEARTBEAT_MS / 1000)

    async def _prune_departed_workers(self) -> None:
        """Forget workers that died without saying goodbye: their heartbeats, and their
        consumers once nothing is pending on them (the reclaimer took their tasks)."""
        while True:
            try:
                heartbeats, consumers = await self.store.prune_departed(
                    self._streams,
                    heartbeat_older_than_ms=HEARTBEAT_MS * 6,
                    consumer_idle_ms=max(self.lease_ms * 4, 3_600_000),
                    keep=self.name,
                )
                if heartbeats or consumers:
                    logger.info(
                        "forgot %d departed worker heartbeat(s) and %d idle consumer(s)",
                        heartbeats,
                        consumers,
                    )
            except RedisError as exc:
                logger.warning("could not prune departed workers: %s", exc)
            await anyio.sleep(60)

    async def _remove_heartbeat(self) -> None:
        with (
            anyio.CancelScope(shield=True),
            anyio.move_on_after(2),
            contextlib.suppress(RedisError),
        ):
            await self.store.remove_heartbeat(self.name)

    async def _publish_definitions(self) -> None:
        await self.store.publish_definitions(
            {name: d.describe() for name, d in registered_workflows().items()}
        )


_KIND_LABELS = {"w": "workflow", "a": "activity"}


def _kind_label(task: Task) -> str:
    """The task's kind as a metrics label: never a garbage value from a hand-written entry."""
    return _KIND_LABELS.get(task.kind, "unknown")


def _listing(names: Iterable[str], shown: int = 10) -> str:
    """The distinct names, sorted, the first `shown` of them spelled out."""
    distinct = sorted(set(names))
    more = f" and {len(distinct) - shown} more" if len(distinct) > shown else ""
    return ", ".join(distinct[:shown]) + more


def _malformed(task: Task) -> str | None:
    """Why a task entry cannot be run (an unknown kind, a field missing or not a number),
    or None. Such an entry was not written by loom-redis: it goes to the dead-letter stream."""

    def fields() -> str:  # made only for a reason: most tasks are sound
        return ", ".join(sorted(repr(name) for name in task.fields)) or "none"

    if task.kind not in ("w", "a"):
        return (
            f"task {task.id} has unknown kind {task.kind!r} (field 'k'): expected k=w (a "
            f"workflow task) or k=a (an activity task); its fields: {fields()}"
        )
    what = f"{'workflow' if task.kind == 'w' else 'activity'} task {task.id}"
    if not task.workflow_id:
        return f"{what} has no 'wf' field (the id of its workflow); its fields: {fields()}"
    if task.kind == "a":
        what = f"{what} of workflow {task.workflow_id!r}"
        for name, required in (("seq", True), ("att", False), ("p", True)):
            value = task.fields.get(name)
            if value is None:
                if required:
                    return f"{what}: field {name!r} is missing; its fields: {fields()}"
            elif name != "p" and not (value.isdigit() and int(value) >= 1):
                return f"{what}: field {name!r} must be a whole number >= 1, got {value!r}"
    return None


def _check_options(
    queues: Any,
    concurrency: int,
    lease_seconds: float,
    max_deliveries: int,
    poll_interval: float,
    eager_seconds: float,
    unregistered_grace_seconds: float,
) -> None:
    """Refuse worker settings that cannot work, naming the setting and the value."""
    if isinstance(queues, str):
        raise ConfigurationError(
            f"queues must be a tuple of queue names, got the string {queues!r} "
            f"(write queues=({queues!r},))"
        )
    for queue in queues:
        validate_queue(queue)
    if not queues:
        raise ConfigurationError("queues must name at least one task queue")
    for setting, value, least in (
        ("concurrency", concurrency, 1),
        ("max_deliveries", max_deliveries, 1),
    ):
        if not isinstance(value, int) or value < least:
            raise ConfigurationError(f"{setting} must be >= {least}, got {value!r}")
    for setting, number in (("lease_seconds", lease_seconds), ("poll_interval", poll_interval)):
        if not number > 0:
            raise ConfigurationError(f"{setting} must be > 0, got {number!r}")
    for setting, number in (
        ("eager_seconds", eager_seconds),
        ("unregistered_grace_seconds", unregistered_grace_seconds),
    ):
        if not number >= 0:
            raise ConfigurationError(f"{setting} must be >= 0, got {number!r}")


def _plan_of(
    activation: Activation,
    time_ms: int,
    completing: Event | None = None,
    data: bytes = b"",
    *,
    timers_delete: Sequence[bytes] = (),
    held_activity: int | None = None,
) -> TaskPlan:
    """What a workflow task whose code ran `activation` at `time_ms` writes."""
    meta_delete: list[str] = []
    if activation.status.is_terminal:
        meta_delete += [f"a:{s}" for s in activation.pending_activities]
        meta_delete += [f"t:{s}" for s in activation.pending_timers]
    return TaskPlan(
        activation.commands,
        activation.status,
        time_ms=time_ms,
        meta_delete=meta_delete,
        consumed_events=activation.ran,
        completing=completing,
        completing_data=data,
        timers_delete=timers_delete,
        held_activity=held_activity,
        waiting_signals=activation.waiting_signals,
    )


def _scheduled_activity(task: Task) -> dict[str, Any]:
    """What an activity task asks for (name, args, kwargs, timeout, retry policy)."""
    scheduled = decode(task.fields.get("p"), what=f"activity task {task.id}")
    if not isinstance(scheduled, dict) or "name" not in scheduled:
        raise PayloadError(f"activity task {task.id} of workflow {task.workflow_id!r} has no name")
    return scheduled


async def _call(fn: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
    if inspect.iscoroutinefunction(fn):
        return await fn(*args, **kwargs)
    return await anyio.to_thread.run_sync(
        functools.partial(fn, *args, **kwargs), abandon_on_cancel=True
    )
