"""What a worker does besides running tasks: renew the leases of the tasks it runs,
say it is alive (its heartbeat, with the names it registers), forget workers that
died, publish the workflows' definitions, read the backlog the gauges report, and
delete closed workflows whose retention has ended."""

from __future__ import annotations

import contextlib
import logging
import os
import random
import socket
from typing import Any

import anyio

from ..definitions import registered_activities, registered_workflows
from ..errors import ConfigurationError
from ..metrics import (
    DEAD_LETTER_ENTRIES,
    QUEUE_BACKLOG,
    QUEUE_LAG,
    QUEUE_OLDEST_PENDING,
    QUEUE_PENDING,
    TASKS_LOST,
    TIMERS_DUE,
    TIMERS_OVERDUE,
    WORKERS_LIVE,
    labelled,
)
from ..store import HEARTBEAT_MS, NamespaceBacklog, Store, lease_reference, registrations
from ..store.connection import RedisError, now_ms
from ._in_flight import InFlight
from ._options import Options

logger = logging.getLogger("loom_redis.worker")

# How often (on average) each worker sweeps closed workflows whose retention has ended.
SWEEP_SECONDS = 30.0

# A heartbeat older than this (by the clock of the worker that prunes) is forgotten; a
# dead worker's is forgotten sooner, once its tasks are taken over (see Takeover).
FORGET_HEARTBEAT_MS = 60_000


class Housekeeping:
    """The worker's background chores, each a loop run in its task group until the
    worker stops."""

    def __init__(
        self,
        store: Store,
        options: Options,
        streams: dict[str, tuple[int, str]],
        in_flight: InFlight,
    ) -> None:
        self._store = store
        self._options = options
        self._streams = streams
        self._in_flight = in_flight
        self._started = now_ms()
        # One beat at a time, so that the last one written is the last one made.
        self._beating = anyio.Lock()

    async def renew_leases(self) -> None:
        while True:
            await anyio.sleep(self._options.lease_ms / 3000)
            held = self._in_flight.to_renew()
            if not held:
                continue
            try:
                taken = await self._store.renew_leases(held, self._options.name)
            except RedisError as exc:
                logger.warning("could not renew leases: %s", exc)
                continue
            for task in taken:
                self._in_flight.lose(task)
                TASKS_LOST.inc()
                logger.warning(
                    "%s task %s of workflow %s was taken over by another worker while this "
                    "one was cut off from Redis or stalled; whichever commits second is "
                    "refused",
                    task.kind,
                    task.id,
                    task.workflow_id,
                )

    async def beat(self) -> None:
        """Write this worker's heartbeat: other workers take its tasks over once it
        stops changing (see Takeover)."""
        async with self._beating:
            await self._store.publish_heartbeat(self._options.name, self._heartbeat())

    def _heartbeat(self) -> dict[str, Any]:
        options = self._options
        return {
            "name": options.name,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "queues": list(options.queues),
            "concurrency": options.concurrency,
            "in_flight": self._in_flight.running,
            "waiting": self._in_flight.waiting,
            "started_ms": self._started,
            "seen_ms": now_ms(),
            "lease_ms": options.lease_ms,
            "holds": [lease_reference(t.shard, t.lease) for t in self._in_flight.leases()],
            # What other workers look up for a task they do not register.
            **registrations(registered_workflows(), registered_activities()),
        }

    async def heartbeat(self) -> None:
        """Beat every HEARTBEAT_MS (the first beat is written as the worker starts, and
        one each time an activity run at once starts holding a lease)."""
        while True:
            await anyio.sleep(HEARTBEAT_MS / 1000)
            try:
                await self.beat()
            except RedisError as exc:
                logger.warning("heartbeat failed: %s", exc)

    async def prune_departed_workers(self) -> None:
        """Forget workers that died without saying goodbye: their heartbeats, and their
        consumers once nothing is pending on them (the reclaimer took their tasks)."""
        while True:
            try:
                heartbeats, consumers = await self._store.prune_departed(
                    self._streams,
                    heartbeat_older_than_ms=FORGET_HEARTBEAT_MS,
                    consumer_idle_ms=max(self._options.lease_ms * 4, 3_600_000),
                    keep=self._options.name,
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

    async def report_backlog(self) -> None:
        """Read the backlog of this worker's queues, the namespace's due timers and dead
        letters, and the live workers, into the gauges Prometheus scrapes."""
        namespace = self._store.keys.namespace
        while True:
            try:
                backlog = await self._store.backlog(self._options.queues)
                live = await self._store.live_workers()
            except RedisError as exc:
                logger.warning("could not read the backlog for the metrics: %s", exc)
            else:
                _report(namespace, backlog, live)
            await anyio.sleep(self._options.backlog_interval_ms / 1000)

    async def sweep_expired(self) -> None:
        """Delete closed workflows whose retention has ended, one script each (so any
        number of workers may sweep at once): every SWEEP_SECONDS, jittered so that
        workers spread their rounds, the shards in a random order, a bounded page of
        workflows per shard and round. Each round reads the namespace's retention
        again, for the commits that close workflows."""
        store = self._store
        while True:
            await anyio.sleep(SWEEP_SECONDS * random.uniform(0.5, 1.5))
            try:
                await store.refresh_retention()
                deleted = 0
                for shard in random.sample(range(store.keys.shards), store.keys.shards):
                    deleted += await store.sweep_expired(shard)
                if deleted:
                    logger.info("deleted %d closed workflow(s) whose retention ended", deleted)
            except (RedisError, ConfigurationError) as exc:
                logger.warning("could not sweep closed workflows: %s", exc)

    async def remove_heartbeat(self) -> None:
        with (
            anyio.CancelScope(shield=True),
            anyio.move_on_after(2),
            contextlib.suppress(RedisError),
        ):
            await self._store.remove_heartbeat(self._options.name)


async def publish_definitions(store: Store) -> None:
    """Publish the definitions of the workflows this process registers."""
    await store.publish_definitions(
        {name: d.describe() for name, d in registered_workflows().items()}
    )


def _report(namespace: str, backlog: NamespaceBacklog, live: list[dict[str, Any]]) -> None:
    at = backlog.at_ms
    for queue, figures in backlog.queues.items():
        labelled(QUEUE_BACKLOG, namespace, queue).set(figures.length)
        labelled(QUEUE_LAG, namespace, queue).set(figures.lag)
        labelled(QUEUE_PENDING, namespace, queue).set(figures.pending)
        oldest = figures.oldest_pending_ms
        labelled(QUEUE_OLDEST_PENDING, namespace, queue).set(_seconds_since(oldest, at))
        workers = sum(1 for beat in live if queue in beat.get("queues", ()))
        labelled(WORKERS_LIVE, namespace, queue).set(workers)
    labelled(TIMERS_DUE, namespace).set(backlog.timers_due)
    labelled(TIMERS_OVERDUE, namespace).set(_seconds_since(backlog.oldest_due_ms, at))
    labelled(DEAD_LETTER_ENTRIES, namespace).set(backlog.dead_letters)


def _seconds_since(ms: int | None, now_ms: int) -> float:
    return 0.0 if ms is None else max(now_ms - ms, 0) / 1000
