"""What a worker does besides running tasks: renew the leases of the tasks it runs,
say it is alive (its heartbeat, with the names it registers), forget workers that
died, and publish the workflows' definitions."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from typing import Any

import anyio

from ..definitions import registered_activities, registered_workflows
from ..store import HEARTBEAT_MS, Store, lease_reference, registrations
from ..store.connection import RedisError, now_ms
from ._in_flight import InFlight
from ._options import Options

logger = logging.getLogger("loom_redis.worker")

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
            if self._in_flight:
                try:
                    await self._store.renew_leases(self._in_flight.tasks(), self._options.name)
                except RedisError as exc:
                    logger.warning("could not renew leases: %s", exc)

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
