"""The timer sweep: fires due timers, whichever worker's commit added them."""

from __future__ import annotations

import logging

import anyio

from ..metrics import LEASE_EXPIRED, TIMERS_FIRED, labelled
from ..store import Store, TimerMember
from ..store.connection import RedisError, now_ms
from ..store.wire import Reply
from ._trouble import RedisTrouble

logger = logging.getLogger("loom_redis.worker")


class TimerSweep:
    """Fires due timers, then sleeps until the next one is due.

    Timers this worker's own commits add wake it at once (`wake`); every
    `scan_ms` it also looks for timers whose worker died (any worker may fire any
    timer).
    """

    def __init__(self, store: Store, trouble: RedisTrouble, scan_ms: int) -> None:
        self._store = store
        self._trouble = trouble
        self._scan_ms = scan_ms
        self._wakeup = anyio.Event()

    def wake(self) -> None:
        """A commit added a timer (or a lease): look again at once."""
        self._wakeup.set()

    async def run(self) -> None:
        while True:
            # Made before the scan, so that a timer added during it is not missed.
            self._wakeup = anyio.Event()
            try:
                due, next_due = await self._store.due_timers()
                for member in due:
                    outcome = await self._store.fire_timer(member)
                    if outcome == Reply.OK:
                        labelled(TIMERS_FIRED, member.kind).inc()
                        if member.lease:
                            _lease_expired(member)
            except RedisError as exc:
                await self._trouble.wait_until_reachable("sweeping timers", exc)
                continue
            if due:
                continue
            wait_ms = self._scan_ms
            if next_due is not None:
                wait_ms = min(wait_ms, next_due - now_ms())
            with anyio.move_on_after(max(wait_ms, 1) / 1000):
                await self._wakeup.wait()


def _lease_expired(member: TimerMember) -> None:
    LEASE_EXPIRED.inc()
    logger.info(
        "took over an activity of workflow %s: its lease ran out (its worker died or "
        "handed it back), so it is queued again",
        member.workflow_id,
    )
