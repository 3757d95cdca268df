"""What a worker does when Redis fails it: unreachable, out of memory, or the
namespace's data lost."""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio

from ..metrics import NAMESPACE_DATA_LOST
from ..store import Store, Task
from ..store.connection import OutOfMemoryError, RedisError, retrying, unreachable
from ._housekeeping import publish_definitions

logger = logging.getLogger("loom_redis.worker")

T = TypeVar("T")


class RedisTrouble:
    """Whether Redis answers (with the readiness probe), and the waits and retries of
    the tasks and readers it failed: one task checks that Redis answers again, one
    restores a namespace found gone, for all the others."""

    def __init__(self, store: Store, queues: tuple[str, ...], lease_ms: int) -> None:
        self._store = store
        self._queues = queues
        self._lease_ms = lease_ms
        self.reachable = True
        # Set while one task checks that Redis answers again; the others wait for it.
        self._reconnected: anyio.Event | None = None
        # Redis refused a write for want of memory, and none has succeeded since.
        self._paused_for_memory = False
        # How many times the namespace was restored (see restore_namespace), and the
        # restoration under way, if any: the readers that all find the groups gone at
        # once restore them once.
        self.restorations = 0
        self._restoring: anyio.Event | None = None

    async def restore_namespace(self, restorations: int) -> None:
        """Recreate the consumer groups (and the namespace's config) that a read found
        gone, once for all the readers that find it: those that read before the last
        restoration (`restorations` is the count they saw) just read again.

        Raises ConfigurationError when the recreated config holds another shard count."""
        if self._restoring is not None:
            await self._restoring.wait()
            return
        if restorations != self.restorations:
            return
        self._restoring = anyio.Event()
        try:
            config_missing = await self._store.restore_namespace(self._queues)
            await publish_definitions(self._store)
        except RedisError as exc:
            await self.wait_until_reachable("recreating the consumer groups", exc)
            return
        finally:
            self._restoring.set()
            self._restoring = None
        self.restorations += 1
        NAMESPACE_DATA_LOST.inc()
        logger.error(
            "the Redis server lost the data of namespace %r: the consumer groups of its "
            "task streams were gone%s (a server restarted without its AOF, a FLUSHALL, a "
            "failover to a replica that lagged, or keys deleted by hand). The histories, "
            "queued tasks and timers written before are gone: workflows started before "
            "cannot complete and are no longer found. Recreated the consumer groups%s; "
            "new workflows run.",
            self._store.keys.namespace,
            ", and its config" if config_missing else "",
            f" and the config ({self._store.keys.shards} shards)" if config_missing else "",
        )

    async def wait_until_reachable(self, doing: str, exc: Exception) -> None:
        """After a failed read: not ready until Redis answers again (checked every
        second, by one task for all the readers that failed)."""
        if isinstance(exc, OutOfMemoryError):
            self._out_of_memory(exc)
        elif self.reachable:  # said once, not by every shard's reader
            logger.warning("Redis error while %s: %s; retrying every 1s", doing, exc)
        self.reachable = False
        if self._reconnected is not None:
            await self._reconnected.wait()
            return
        self._reconnected = anyio.Event()
        try:
            while True:
                await anyio.sleep(1)
                try:
                    await self._store.ping()
                except RedisError:
                    continue
                break
            logger.info("Redis answers again")
            self.reachable = True
        finally:
            self._reconnected.set()
            self._reconnected = None

    async def while_unreachable(self, task: Task, call: Callable[[], Awaitable[T]]) -> T:
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
            return self._lease_ms / 1000 if unreachable(exc) else None

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
