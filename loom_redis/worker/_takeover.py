"""Takeover: a worker whose heartbeat has stopped is dead, and its tasks run again on
the workers that see it, at once rather than when their lease ends."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio

from ..store import DEAD_AFTER_MS, HEARTBEAT_MS, ConsumerGroupMissing, Store, Task
from ..store.connection import RedisError, now_ms
from ._options import Options
from ._timers import TimerSweep
from ._trouble import RedisTrouble

logger = logging.getLogger("loom_redis.worker")

# How often a worker looks for dead ones.
SCAN_SECONDS = 1.0
# Beyond a lease, the clock skew allowed between the dead worker and this one when its
# activities' leases are looked for (see Timers.make_leases_due).
LEASE_SKEW_MS = 60_000


@dataclass
class _Watch:
    """A worker's heartbeat as this worker last saw it change."""

    seen_ms: int
    since: float  # this worker's clock (anyio.current_time) when it saw it change
    # Whether the leases of the activities it ran at once were made due (once dead).
    leases_due: bool = False


class Takeover:
    """Watches the other workers' heartbeats; takes over the tasks of those whose
    heartbeat has not changed for DEAD_AFTER_MS, as this worker sees it.

    It judges by its own clock, never by the time a heartbeat holds (the pods' clocks
    may disagree), and only while it reads them every SCAN_SECONDS: after a failed or
    late read it watches every heartbeat afresh, so an outage or a stall of Redis
    itself, which stops every heartbeat at once, makes no worker look dead. A worker
    cut off from Redis for longer does: its tasks run elsewhere, and what it writes
    when it comes back is refused (every transition is fenced). A consumer with tasks
    pending and no heartbeat (forgotten, or unreadable) is dead once Redis has seen it
    idle for longer than a live worker leaves it.
    """

    def __init__(
        self,
        store: Store,
        options: Options,
        streams: dict[str, tuple[int, str]],
        trouble: RedisTrouble,
        timers: TimerSweep,
    ) -> None:
        self._store = store
        self._options = options
        self._streams = streams
        self._trouble = trouble
        self._timers = timers
        self._watched: dict[str, _Watch] = {}
        # When (this worker's clock) its last read of the heartbeats came back.
        self._read_at: float | None = None

    async def run(self, accept: Callable[[list[tuple[Task, int]]], None]) -> None:
        """Take over dead workers' tasks every SCAN_SECONDS until cancelled; `accept`
        takes those claimed."""
        while True:
            restorations = self._trouble.restorations
            try:
                await self._take_over(accept)
            except ConsumerGroupMissing:
                await self._trouble.restore_namespace(restorations)
            except RedisError as exc:
                self._read_at = None
                await self._trouble.wait_until_reachable("taking over dead workers", exc)
            await anyio.sleep(SCAN_SECONDS)

    async def _take_over(self, accept: Callable[[list[tuple[Task, int]]], None]) -> None:
        beats, _ = await self._store.read_heartbeats()
        read_at = anyio.current_time()
        if self._read_at is None or read_at - self._read_at > SCAN_SECONDS + HEARTBEAT_MS / 1000:
            # It has not watched all along (Redis stalled, or this worker did): the
            # heartbeats written meanwhile may still be on their way.
            self._watched.clear()
        self._read_at = read_at
        dead = self._dead({str(b["name"]): b for b in beats})
        me = self._options.name
        room = self._options.concurrency
        # A live worker busy with long tasks touches its consumers only when it renews
        # their leases, every third of a lease: one without a heartbeat (it was forgotten,
        # or cannot be read) is dead once Redis has seen it idle longer than that.
        forgotten_idle_ms = DEAD_AFTER_MS + self._options.lease_ms // 3
        left = dict.fromkeys(dead, 0)  # tasks still pending on each dead worker
        taken: dict[str, tuple[int, int]] = {}  # tasks taken from each, and its idle ms
        for key, name, pending, idle in await self._store.task_consumers(self._streams):
            forgotten = name not in self._watched and pending and idle >= forgotten_idle_ms
            if name == me or not (name in dead or forgotten):
                continue
            if pending and not room:
                left[name] = left.get(name, 0) + pending
                continue
            # With nothing pending, this deletes the dead worker's consumer.
            claimed = await self._store.take_over(key, self._streams[key][0], name, me, room or 1)
            room -= len(claimed)
            left[name] = left.get(name, 0) + max(pending - len(claimed), 0)
            if claimed:
                taken[name] = (taken.get(name, (0, 0))[0] + len(claimed), idle)
                accept(claimed)
        for name, (count, idle) in taken.items():
            logger.warning(
                "took over %d task(s) of dead worker %s (%s)", count, name, self._why(name, idle)
            )
        for name, beat in dead.items():
            watch = self._watched[name]
            if not watch.leases_due:
                await self._make_leases_due(name, beat)
                watch.leases_due = True
            if not left[name]:
                # Nothing of it is left: forget it (were it alive after all, cut off from
                # Redis, it writes its heartbeat again and is watched afresh).
                await self._store.remove_heartbeat(name)

    def _dead(self, beats: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        now = anyio.current_time()
        watched = {}
        for name, beat in beats.items():
            watch = self._watched.get(name)
            if watch is None or watch.seen_ms != beat["seen_ms"]:
                watch = _Watch(beat["seen_ms"], now)
            watched[name] = watch
        self._watched = watched
        return {
            name: beats[name]
            for name, watch in watched.items()
            if name != self._options.name and now - watch.since >= DEAD_AFTER_MS / 1000
        }

    def _why(self, name: str, idle: int) -> str:
        watch = self._watched.get(name)
        if watch is None:
            return f"no heartbeat, idle {idle / 1000:.1f}s"
        return f"heartbeat unchanged for {anyio.current_time() - watch.since:.1f}s"

    async def _make_leases_due(self, name: str, beat: dict[str, Any]) -> None:
        holds = beat["holds"]
        if not holds:
            return
        lease_ms = beat["lease_ms"] or self._options.lease_ms
        made = await self._store.make_leases_due(holds, now_ms() + lease_ms + LEASE_SKEW_MS)
        if made:
            logger.warning(
                "dead worker %s (%s): the leases of %d activit%s it ran at once are due now",
                name,
                self._why(name, 0),
                made,
                "y" if made == 1 else "ies",
            )
            self._timers.wake()
