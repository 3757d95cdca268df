"""The tasks a worker has taken from Redis and not finished, and who runs them next."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Iterator

import anyio

from ..store import Task

# Entry ids are unique per stream only, and the shards' streams often hold the same id.
TaskKey = tuple[str, str]


def key_of(task: Task) -> TaskKey:
    return (task.queue_key, task.id)


class InFlight:
    """The tasks taken and not finished: their leases are renewed, a drain waits for
    them, and `forget_all` hands them over for a stop at once.

    They run on the executors (see Executors), or wait for one: accepted tasks that a
    read brought beyond the free executors, and follow-ups, the tasks a finishing task's
    transition delivered to this worker, which run next on the same executor. The
    activities run at once whose scheduling is written with a lease (see
    EagerActivities) are held here too, by their workflow task, until they end.
    """

    def __init__(self) -> None:
        self._tasks: dict[TaskKey, Task] = {}
        # Those another worker took over while they ran here (see lose).
        self._lost: set[TaskKey] = set()
        # Accepted tasks that wait for an executor, and the executors waiting for one.
        self._queued: deque[tuple[Task, int]] = deque()
        self._idle_executors: deque[asyncio.Event] = deque()
        # By the finishing task.
        self._follow_ups: dict[TaskKey, Task] = {}
        self._holding: dict[TaskKey, Task] = {}
        # Those the heartbeat names: from before their lease is written.
        self._leases: dict[TaskKey, Task] = {}
        self._capacity_freed = anyio.Event()
        # Since when the intake has been waiting for capacity to read new tasks.
        self.capacity_wanted_since: float | None = None
        # Made by a drain, to wait for the last task.
        self._drained: anyio.Event | None = None
        # The sets of taken_meanwhile's blocks under way.
        self._watchers: list[set[TaskKey]] = []

    def __len__(self) -> int:
        return len(self._tasks)

    def __contains__(self, key: TaskKey) -> bool:
        return key in self._tasks

    def tasks(self) -> list[Task]:
        """The tasks taken and not finished, as of now."""
        return list(self._tasks.values())

    @contextlib.contextmanager
    def taken_meanwhile(self) -> Iterator[set[TaskKey]]:
        """The keys of the tasks taken as the block starts and of those taken until it
        ends, finished meanwhile or not: a read of the tasks pending on this worker
        tells by them which it never took."""
        taken = set(self._tasks)
        self._watchers.append(taken)
        try:
            yield taken
        finally:
            # By identity: two blocks' sets can be equal.
            self._watchers = [other for other in self._watchers if other is not taken]

    def to_renew(self) -> list[Task]:
        """The tasks whose leases this worker renews, as of now: those it has not lost."""
        return [task for key, task in self._tasks.items() if key not in self._lost]

    def lose(self, task: Task) -> None:
        """Another worker took `task` over while it ran here (this one was cut off from
        Redis, or stalled past the lease): it keeps the task, whose lease this worker no
        longer renews. The run here goes on; whichever outcome comes second is refused."""
        if key_of(task) in self._tasks:
            self._lost.add(key_of(task))

    @property
    def waiting(self) -> int:
        """How many wait for an executor: those a read brought beyond the free
        executors, and follow-ups that run after the task whose transition delivered
        them."""
        return len(self._queued) + len(self._follow_ups)

    @property
    def running(self) -> int:
        """How many the executors run now."""
        return len(self._tasks) - self.waiting

    def accept(self, task: Task, deliveries: int, *, first: bool = False) -> None:
        """Take a delivered task: its lease is renewed from now on, and it runs when an
        executor is free (before the tasks already waiting, if `first`)."""
        self._take(task)
        self._lost.discard(key_of(task))
        self.queue(task, deliveries, first=first)

    def queue(self, task: Task, deliveries: int, *, first: bool = False) -> None:
        if first:
            self._queued.appendleft((task, deliveries))
        else:
            self._queued.append((task, deliveries))
        if self._idle_executors:
            self._idle_executors.popleft().set()

    async def next_queued(self) -> tuple[Task, int]:
        """The next accepted task for an executor, and how many times it was delivered."""
        while not self._queued:
            woken = asyncio.Event()  # cheaper than anyio's: one per idle spell
            self._idle_executors.append(woken)
            await woken.wait()
        return self._queued.popleft()

    def has_queued(self) -> bool:
        return bool(self._queued)

    def adopt(self, finishing: Task, follow_up: Task | None) -> None:
        """Take the task a transition of `finishing` delivered: it runs next, on the same
        executor."""
        if follow_up is not None:
            self._take(follow_up)
            self._follow_ups[key_of(finishing)] = follow_up

    def _take(self, task: Task) -> None:
        key = key_of(task)
        self._tasks[key] = task
        for taken in self._watchers:
            taken.add(key)

    def pass_follow_up(self, finished: Task, to: Task) -> None:
        """The follow-up of `finished` (which ran inside `to`) runs after `to` instead."""
        follow_up = self._follow_ups.pop(key_of(finished), None)
        if follow_up is not None:
            self._follow_ups[key_of(to)] = follow_up

    def finish(self, task: Task) -> None:
        """`task` has ended: it frees its capacity (and may end a drain)."""
        self._tasks.pop(key_of(task), None)
        self._lost.discard(key_of(task))
        self._capacity_freed.set()
        if not self._tasks and self._drained is not None:
            self._drained.set()

    def follow_up_of(self, task: Task) -> Task | None:
        """The task to run next, which the transition of `task` delivered."""
        return self._follow_ups.pop(key_of(task), None)

    def hold(self, task: Task, activity: Task) -> None:
        """`activity`, run at once for workflow task `task`, has a lease to hand back."""
        self._holding[key_of(task)] = activity

    def name_lease(self, task: Task, activity: Task) -> None:
        """`activity`, run at once for workflow task `task`, is about to have a lease."""
        self._leases[key_of(task)] = activity

    def release(self, task: Task) -> None:
        self._holding.pop(key_of(task), None)
        self._leases.pop(key_of(task), None)

    def leases(self) -> list[Task]:
        """The activities run at once that have (or are about to have) a lease, as of
        now."""
        return list(self._leases.values())

    async def wait_for_capacity(self, concurrency: int) -> int:
        """Wait until fewer than `concurrency` tasks are taken; return how many more
        fit."""
        while concurrency - len(self._tasks) <= 0:
            if self.capacity_wanted_since is None:
                self.capacity_wanted_since = anyio.current_time()
            if self._capacity_freed.is_set():
                self._capacity_freed = anyio.Event()
            await self._capacity_freed.wait()
        self.capacity_wanted_since = None
        return concurrency - len(self._tasks)

    async def wait_until_finished(self) -> None:
        """Wait until no task is left."""
        if self._tasks:
            self._drained = anyio.Event()
            await self._drained.wait()

    def forget_all(self) -> list[Task]:
        """Forget every task (so that nothing renews their leases again) and return
        those to hand back: running, waiting for an executor, and the leases of
        activities run at once."""
        # An activity run at once stands in for its workflow task (committed: nothing to
        # hand back) under the same key.
        unfinished = list({**self._tasks, **self._holding}.values())
        self._tasks.clear()
        self._lost.clear()
        self._holding.clear()
        self._leases.clear()
        self._queued.clear()
        self._follow_ups.clear()
        return unfinished
