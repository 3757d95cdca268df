"""The Worker: its settings, the collaborators it is made of, and its lifecycle."""

from __future__ import annotations

import logging
from collections.abc import Iterable

import anyio
from anyio.abc import TaskGroup, TaskStatus

from ..definitions import NondeterminismPolicy
from ..metrics import counting_load, serve_metrics
from ..store import Store, Task
from ..store.connection import RedisError, redis_errors
from ._activity_tasks import ActivityTasks
from ._eager import EagerActivities
from ._executors import Executors
from ._housekeeping import Housekeeping, publish_definitions
from ._in_flight import InFlight
from ._instances import InstanceCache
from ._intake import Intake
from ._options import Options
from ._takeover import Takeover
from ._timers import TimerSweep
from ._trouble import RedisTrouble
from ._unrunnable import Unrunnable
from ._workflow_commits import WorkflowCommits
from ._workflow_tasks import WorkflowTasks

logger = logging.getLogger("loom_redis.worker")

# How long a worker that stops at once (see Worker.abort) tries to hand its tasks back.
HAND_BACK_SECONDS = 5.0


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
        backlog_interval_seconds: float = 15.0,
    ) -> None:
        self.options = options = Options.checked(
            queues=queues,
            concurrency=concurrency,
            lease_seconds=lease_seconds,
            max_deliveries=max_deliveries,
            poll_interval=poll_interval,
            on_nondeterminism=on_nondeterminism,
            suspend_retry_seconds=suspend_retry_seconds,
            drain_seconds=drain_seconds,
            metrics_host=metrics_host,
            metrics_port=metrics_port,
            name=name,
            cache_size=cache_size,
            timer_scan_seconds=timer_scan_seconds,
            eager_seconds=eager_seconds,
            unregistered_grace_seconds=unregistered_grace_seconds,
            backlog_interval_seconds=backlog_interval_seconds,
        )
        self.store = store
        self.name = options.name
        self.queues = options.queues
        self.concurrency = options.concurrency
        streams = store.queue_keys(queues)
        self._in_flight = in_flight = InFlight()
        instances = InstanceCache(options.cache_size)
        self._trouble = trouble = RedisTrouble(store, options.queues, options.lease_ms)
        self._timers = timers = TimerSweep(store, trouble, options.timer_scan_ms)
        takeover = Takeover(store, options, streams, trouble, timers)
        self._intake = intake = Intake(store, options, streams, in_flight, trouble, takeover)
        unrunnable = Unrunnable(store, timers, options.unregistered_grace_ms)
        commits = WorkflowCommits(store, options, in_flight, instances, intake, timers, trouble)
        activity_tasks = ActivityTasks(
            store, in_flight, instances, intake, timers, trouble, commits, unrunnable
        )
        self._housekeeping = housekeeping = Housekeeping(store, options, streams, in_flight)
        self._eager = eager = EagerActivities(
            store,
            options.eager_ms,
            options.lease_ms,
            in_flight,
            intake,
            timers,
            commits,
            activity_tasks,
            trouble,
            housekeeping.beat,
        )
        workflow_tasks = WorkflowTasks(store, instances, commits, eager, unrunnable)
        self._executors = Executors(
            options.max_deliveries,
            streams,
            in_flight,
            trouble,
            workflow_tasks,
            activity_tasks,
            unrunnable,
        )
        self._executor_group: TaskGroup | None = None
        self._aborting = False
        # Reading its queues (from its start until its drain), and Redis answering: the
        # readiness probe needs both.
        self._ready = False

    # -- lifecycle -----------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run until `stop()` is called (or the task is cancelled).

        Started with `await task_group.start(worker.run)`, it returns once the worker
        reads its queues (and raises if it cannot start)."""
        with redis_errors("start a worker", self.store.url, self.store.keys.namespace):
            await self.store.ensure_groups(self.queues)
            await self.store.load_scripts()
            await publish_definitions(self.store)
            # Before any task is read: a worker with tasks has a heartbeat to watch.
            await self._housekeeping.beat()
        intake = self._intake.open()
        with counting_load(self):
            await self._run_until_stopped(intake, task_status)
        await self._housekeeping.remove_heartbeat()
        logger.info("worker %s stopped", self.name)

    async def _run_until_stopped(
        self, intake: anyio.CancelScope, task_status: TaskStatus[None]
    ) -> None:
        options = self.options
        async with anyio.create_task_group() as background:
            background.start_soon(self._timers.run)
            background.start_soon(self._housekeeping.renew_leases)
            background.start_soon(self._housekeeping.heartbeat)
            background.start_soon(self._housekeeping.prune_departed_workers)
            background.start_soon(self._housekeeping.report_backlog)
            background.start_soon(self._housekeeping.sweep_expired)
            if options.metrics_port is not None:
                background.start_soon(
                    serve_metrics,
                    options.metrics_host,
                    options.metrics_port,
                    lambda: self._ready and self._trouble.reachable,
                )
            async with anyio.create_task_group() as executors:
                self._executor_group = executors
                executors.start_soon(self._eager.watchdog)
                for _ in range(self.concurrency):
                    executors.start_soon(self._executors.run)
                with intake:
                    self._ready = True
                    task_status.started()
                    logger.info(
                        "worker %s reading queues %s (%d shards, concurrency %d)",
                        self.name,
                        ",".join(self.queues),
                        self.store.keys.shards,
                        self.concurrency,
                    )
                    await self._intake.take_tasks()
                self._ready = False
                await self._intake.run_own_pending()
                executors.start_soon(self._drain_deadline)
            background.cancel_scope.cancel()

    def stop(self) -> None:
        """Stop reading new tasks; in-flight ones finish (or are handed back) and run() returns."""
        self._intake.stop()

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
        # Forgotten before the executors end, so that nothing renews their leases again.
        unfinished = self._in_flight.forget_all()
        if self._executor_group is not None:
            self._executor_group.cancel_scope.cancel()
        if unfinished:
            await self._hand_back(unfinished)

    async def _hand_back(self, tasks: list[Task]) -> None:
        what = f"{len(tasks)} task(s) of workflow(s) {_listing(t.workflow_id for t in tasks)}"
        failure = f"{HAND_BACK_SECONDS:g}s passed"
        # Shielded: the drain deadline runs among the executors it has just cancelled.
        with anyio.move_on_after(HAND_BACK_SECONDS, shield=True):
            try:
                await self.store.hand_back(tasks, self.name, self.options.lease_ms)
                logger.warning("handed back %s: other workers take them over now", what)
                return
            except RedisError as exc:
                failure = str(exc)
        logger.error(
            "could not hand back %s (%s): they are taken over when their lease (%gs) ends",
            what,
            failure,
            self.options.lease_ms / 1000,
        )

    @property
    def tasks_running(self) -> int:
        """How many tasks the executors run now (at most `concurrency`)."""
        return self._in_flight.running

    @property
    def tasks_in_flight(self) -> list[Task]:
        """The tasks this worker took from Redis and has not finished (running or
        waiting for an executor), as of now: their leases are renewed."""
        return self._in_flight.tasks()

    @property
    def tasks_waiting(self) -> int:
        """How many tasks this worker took from Redis wait for an executor: those a read
        brought beyond the free executors, and follow-ups that run after the task whose
        transition delivered them."""
        return self._in_flight.waiting

    async def _drain_deadline(self) -> None:
        with anyio.move_on_after(self.options.drain_seconds):
            await self._in_flight.wait_until_finished()
            if self._executor_group is not None:
                self._executor_group.cancel_scope.cancel()
            return
        logger.warning("drain: tasks still unfinished after %gs", self.options.drain_seconds)
        await self.abort()


def _listing(names: Iterable[str], shown: int = 10) -> str:
    """The distinct names, sorted, the first `shown` of them spelled out."""
    distinct = sorted(set(names))
    more = f" and {len(distinct) - shown} more" if len(distinct) > shown else ""
    return ", ".join(distinct[:shown]) + more
