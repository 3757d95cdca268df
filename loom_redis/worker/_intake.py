"""Intake: how a worker takes tasks, new ones from each shard of its queues and those
of workers that died, as far as its capacity goes."""

from __future__ import annotations

import logging

import anyio
import anyio.lowlevel

from ..metrics import CLAIMED
from ..store import ConsumerGroupMissing, Store, Task
from ..store.connection import RedisError
from ._in_flight import InFlight, key_of
from ._options import Options
from ._takeover import Takeover
from ._trouble import RedisTrouble

logger = logging.getLogger("loom_redis.worker")

# How long a worker that was idle waits before it reads a shard again after a read that
# brought tasks (see _read_shard).
IDLE_READ_PAUSE_SECONDS = 0.002


class Intake:
    """Reads new tasks and claims stale ones into the in-flight registry, from the
    worker's start until `stop()`."""

    def __init__(
        self,
        store: Store,
        options: Options,
        streams: dict[str, tuple[int, str]],
        in_flight: InFlight,
        trouble: RedisTrouble,
        takeover: Takeover,
    ) -> None:
        self._store = store
        self._options = options
        self._streams = streams
        shards: dict[int, dict[str, tuple[int, str]]] = {}
        for stream, (shard, queue) in streams.items():
            shards.setdefault(shard, {})[stream] = (shard, queue)
        self._shard_streams = list(shards.values())
        self._in_flight = in_flight
        self._trouble = trouble
        self._takeover = takeover
        self._scope: anyio.CancelScope | None = None
        self._stopping = False

    def open(self) -> anyio.CancelScope:
        """The scope the intake reads in, until `stop()` cancels it (at once if it came
        first)."""
        self._scope = anyio.CancelScope()
        if self._stopping:
            self._scope.cancel()
        return self._scope

    def stop(self) -> None:
        self._stopping = True
        if self._scope is not None:
            self._scope.cancel()

    def take_next_for(self) -> str:
        """The consumer name a finishing transition may deliver the queue's next task to
        (it replaces the finishing task in flight), or "": while draining, and once the
        intake has waited a poll interval for capacity, so that the follow-ups of
        running workflows do not keep new tasks waiting in Redis for ever."""
        if self._scope is None or self._scope.cancel_called:
            return ""
        wanted = self._in_flight.capacity_wanted_since
        if wanted is not None and anyio.current_time() - wanted > self._options.poll_ms / 1000:
            return ""
        return self._options.name

    async def take_tasks(self) -> None:
        """Take over stale tasks and read new ones until stop() cancels the intake.

        New tasks come by one blocking read per shard: its streams share the shard's
        slot, as Redis Cluster wants of one command, and a task added to a stream wakes
        only the reads of its shard (Redis runs a woken read again over all of its
        streams, so one read over every shard would cost it that much per task). Each
        read asks for its share of the free capacity.
        """
        async with anyio.create_task_group() as intake:
            intake.start_soon(self._take_over_stale_tasks)
            intake.start_soon(self._takeover.run, self._accept_claimed)
            for streams in self._shard_streams:
                intake.start_soon(self._read_shard, streams)

    async def _read_shard(self, streams: dict[str, tuple[int, str]]) -> None:
        in_flight = self._in_flight
        # The deliveries in doubt (see Store.deliveries_in_doubt) after which this shard's
        # tasks pending on this worker were read back.
        read_back = self._store.deliveries_in_doubt
        while True:
            free = await in_flight.wait_for_capacity(self._options.concurrency)
            # So that the reads bring fewer than free + shards tasks, not free * shards.
            count = -(-free // len(self._shard_streams))
            restorations = self._trouble.restorations
            in_doubt = self._store.deliveries_in_doubt
            try:
                if in_doubt != read_back:
                    self._take_pending(
                        await self._pending_not_taken([streams]),
                        "the reply that brought it was lost, or no replica confirmed it",
                    )
                    read_back = in_doubt
                tasks = await self._store.read_tasks(
                    streams, self._options.name, count, self._options.poll_ms
                )
            except ConsumerGroupMissing:
                await self._trouble.restore_namespace(restorations)
                continue
            except RedisError as exc:
                await self._trouble.wait_until_reachable("reading tasks", exc)
                continue
            # A read can bring more tasks than fit: they are ours now, and wait for an
            # executor.
            for task in tasks:
                in_flight.accept(task, 1)
            if not tasks:
                continue
            if len(in_flight) > len(tasks):
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
        """Claim tasks whose lease ended as this one starts (a task handed back is taken
        at once) and then every half lease, busy or not (the backstop: a dead worker's
        tasks are taken over sooner, by its heartbeat, see Takeover), up to
        `concurrency` at a time (and again at once while a claim comes back full and
        capacity is left); they go to the front of the local queue. So a claimed task
        starts as soon as an executor is free: it waits neither behind new tasks nor
        behind the follow-ups of running workflows (a takeover would take that long),
        and a worker holds at most `concurrency` claimed tasks it has not started
        (should it die too, each costs a delivery)."""
        interval = max(self._options.lease_ms / 2000, 0.05)
        while True:
            while await self._claim_stale_tasks():
                pass
            await anyio.sleep(interval)

    async def _claim_stale_tasks(self) -> bool:
        """One claim; whether to claim again at once (it came back full, and capacity
        is left)."""
        concurrency = self._options.concurrency
        free = concurrency - len(self._in_flight)
        restorations = self._trouble.restorations
        try:
            claimed = await self._store.claim_stale_tasks(
                self._streams, self._options.name, self._options.lease_ms, concurrency
            )
        except ConsumerGroupMissing:
            await self._trouble.restore_namespace(restorations)
            return False
        except RedisError as exc:
            await self._trouble.wait_until_reachable("taking over tasks", exc)
            return False
        self._accept_claimed(claimed)
        if claimed:
            await anyio.lowlevel.checkpoint()
        return len(claimed) == concurrency and free > len(claimed)

    def _accept_claimed(self, claimed: list[tuple[Task, int]]) -> None:
        """Take tasks claimed from another worker: they run first."""
        CLAIMED.inc(len(claimed))
        for task, deliveries in reversed(claimed):
            logger.info(
                "took over task %s (%s) of workflow %s, delivery %d",
                task.id,
                task.kind,
                task.workflow_id,
                deliveries,
            )
            self._in_flight.accept(task, deliveries, first=True)

    async def run_own_pending(self) -> None:
        """Run, as part of the drain, tasks delivered to this worker that it never started.

        A stop that cuts a read (or a reclaim) short, after Redis delivered its tasks to
        this consumer, would leave them pending on it until the lease ends.
        """
        pending: list[Task] = []
        try:
            with anyio.move_on_after(self._options.drain_seconds):
                pending = await self._pending_not_taken(self._shard_streams)
        except RedisError as exc:
            logger.warning("could not read the tasks pending on this worker: %s", exc)
            return
        # The drain waits for them, or its deadline hands them back.
        self._take_pending(pending, "the stop cut its read short")

    async def _pending_not_taken(
        self, shard_streams: list[dict[str, tuple[int, str]]]
    ) -> list[Task]:
        """The tasks of `shard_streams` delivered to this worker that it never took: the
        reply that brought them was lost (a connection cut after Redis sent it, a read
        cancelled by a stop), and they would wait, pending on this worker, until their
        lease ended."""
        pending: list[Task] = []
        with self._in_flight.taken_meanwhile() as taken:
            # A read per shard: a command's keys must share a slot (Redis Cluster).
            for streams in shard_streams:
                pending += await self._store.pending_tasks(streams, self._options.name, 1000)
        return [task for task in pending if key_of(task) not in taken]

    def _take_pending(self, pending: list[Task], why: str) -> None:
        for task in pending:
            logger.info(
                "took task %s (%s) of workflow %s, delivered to this worker before: %s",
                task.id,
                task.kind,
                task.workflow_id,
                why,
            )
            self._in_flight.accept(task, 1)
