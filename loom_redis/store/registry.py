"""The workers' registry: heartbeats, what each worker registers, workflow definitions."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from redis.exceptions import ResponseError

from ..codec import decode, encode
from ..errors import PayloadError
from ._part import StorePart
from .connection import (
    answered,
    now_ms,
)
from .keys import WORKER_GROUP
from .unreadable import warn_unreadable
from .wire import (
    text,
)

logger = logging.getLogger("loom_redis.store")


# Workers write a heartbeat this often (and at once when they start holding the lease of
# an activity they run at once, see Timers.make_leases_due).
HEARTBEAT_MS = 2000

# A worker whose heartbeat has not changed for this long, as another worker sees it, is
# dead: three beats missed, and a second's margin. Its tasks are taken over at once.
DEAD_AFTER_MS = 3 * HEARTBEAT_MS + 1000

# A heartbeat older than this (by the clock of whoever reads it) is not counted as live
# (`loom workers`, which worker registers what): generous with clocks that disagree.
LIVE_HEARTBEAT_MS = 15_000


# The heartbeat fields that list the workflows and activities a worker registers.
REGISTRATION_FIELDS = {"workflow": "workflows", "activity": "activities"}


class Registry(StorePart):
    """Heartbeats and definitions that workers publish, and their pruning."""

    async def publish_heartbeat(self, worker: str, info: dict[str, Any]) -> None:
        await self.redis.hset(self.keys.workers(), worker, encode(info))

    async def remove_heartbeat(self, worker: str) -> None:
        await self.redis.hdel(self.keys.workers(), worker)

    async def publish_definitions(self, definitions: dict[str, dict[str, Any]]) -> None:
        """Workflow definitions by name (steps, descriptions), for the CLI and dashboards."""
        if definitions:
            await self.redis.hset(
                self.keys.definitions(),
                mapping={name: encode(described) for name, described in definitions.items()},
            )

    async def read_definitions(self) -> tuple[list[dict[str, Any]], dict[str, str]]:
        """The workflow definitions workers published (name, version, description,
        agent, steps), by name, and why each that cannot be read is unreadable."""
        raw: Any = await self.redis.hgetall(self.keys.definitions())
        found: list[dict[str, Any]] = []
        unreadable: dict[str, str] = {}
        for field_name, value in raw.items():
            name = text(field_name)
            try:
                described = decode(value, what=f"definition {name!r}")
            except PayloadError as exc:
                unreadable[name] = f"field {name!r} of {self.keys.definitions()}: {exc}"
                continue
            if isinstance(described, dict):
                found.append(described)
            else:
                unreadable[name] = f"field {name!r} of {self.keys.definitions()} is no definition"
        return sorted(found, key=lambda d: str(d.get("name"))), unreadable

    async def read_heartbeats(self) -> tuple[list[dict[str, Any]], dict[str, str]]:
        """The workers' last heartbeats by name (name, host, pid, queues, concurrency,
        ...), and why each record that cannot be read is unreadable, by its field."""
        raw: Any = await self.redis.hgetall(self.keys.workers())
        beats: list[dict[str, Any]] = []
        unreadable: dict[str, str] = {}
        for field_name, value in raw.items():
            name = text(field_name)
            beat = _heartbeat(name, value)
            if isinstance(beat, str):
                unreadable[name] = f"field {name!r} of {self.keys.workers()} {beat}"
            else:
                beats.append(beat)
        return sorted(beats, key=lambda b: str(b["name"])), unreadable

    async def worker_heartbeats(self) -> list[dict[str, Any]]:
        """The heartbeats that can be read; the others are skipped with a warning."""
        beats, unreadable = await self.read_heartbeats()
        for problem in unreadable.values():
            warn_unreadable(problem, "skipped")
        return beats

    async def live_workers(self) -> list[dict[str, Any]]:
        """The heartbeats of the workers seen within LIVE_HEARTBEAT_MS."""
        live_since = now_ms() - LIVE_HEARTBEAT_MS
        return [b for b in await self.worker_heartbeats() if b["seen_ms"] >= live_since]

    async def task_consumers(
        self, streams: dict[str, tuple[int, str]]
    ) -> list[tuple[str, str, int, int]]:
        """Every consumer of the task streams: (stream, consumer, tasks pending on it,
        ms since Redis saw it last), streams without a consumer group left out (the
        readers recreate it)."""
        pipe = self.redis.pipeline(transaction=False)
        for key in streams:
            pipe.xinfo_consumers(key, WORKER_GROUP)
        found: list[tuple[str, str, int, int]] = []
        for key, reply in zip(
            streams, answered(await pipe.execute(raise_on_error=False)), strict=True
        ):
            if isinstance(reply, ResponseError):
                # No task was ever queued there, or the group is gone.
                if "no such key" in str(reply) or str(reply).startswith("NOGROUP"):
                    continue
                raise reply
            found.extend((key, text(c["name"]), int(c["pending"]), int(c["idle"])) for c in reply)
        return found

    async def prune_departed(
        self,
        streams: dict[str, tuple[int, str]],
        *,
        heartbeat_older_than_ms: int,
        consumer_idle_ms: int,
        keep: str,
    ) -> tuple[int, int]:
        """Delete stale heartbeats, and consumers idle that long with nothing pending
        (a live worker's blocking reads keep its consumer's idle time short)."""
        cutoff = now_ms() - heartbeat_older_than_ms
        beats, unreadable = await self.read_heartbeats()
        stale = [b["name"] for b in beats if b["seen_ms"] < cutoff and b["name"] != keep]
        # No worker wrote these (a live one rewrites its own every HEARTBEAT_MS).
        for name, problem in unreadable.items():
            if name != keep:
                logger.warning("%s: forgotten, as a departed worker's", problem)
                stale.append(name)
        if stale:
            await self.redis.hdel(self.keys.workers(), *stale)
        removed = 0
        for key, name, pending, idle in await self.task_consumers(streams):
            if name != keep and pending == 0 and idle > consumer_idle_ms:
                removed += 1
                await self.redis.xgroup_delconsumer(key, WORKER_GROUP, name)
        return len(stale), removed


# The heartbeat fields other than `name` and `seen_ms` (which it must have): their types,
# and what a heartbeat without them (an older worker's) stands for.
_HEARTBEAT_DEFAULTS: dict[str, Any] = {
    "host": "",
    "pid": 0,
    "queues": [],
    "concurrency": 0,
    "in_flight": 0,
    "waiting": 0,
    "started_ms": 0,
    "workflows": [],
    "activities": [],
    "lease_ms": 0,
    # The leases of the activities it runs at once (see Timers.lease_reference).
    "holds": [],
}


def _heartbeat(name: str, raw: bytes) -> dict[str, Any] | str:
    """A heartbeat as its worker wrote it (named by its field in the hash), or what makes
    it unreadable."""
    try:
        beat = decode(raw, what="it")
    except PayloadError as exc:
        return str(exc).removeprefix("it ")
    if not isinstance(beat, dict):
        return f"is a msgpack {type(beat).__name__}, not a map"
    seen = beat.get("seen_ms")
    if not _whole_number(seen):
        return f"has seen_ms {seen!r}, not a time in ms"
    for key, default in _HEARTBEAT_DEFAULTS.items():
        value = beat.setdefault(key, default)
        if isinstance(default, list):
            readable = isinstance(value, list) and all(isinstance(v, str) for v in value)
        elif isinstance(default, int):
            readable = _whole_number(value)
        else:
            readable = isinstance(value, str)
        if not readable:
            return f"has {key} {value!r}, not a {type(default).__name__}"
    beat["name"] = name
    return beat


def _whole_number(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def registering(heartbeats: list[dict[str, Any]], queue: str, kind: str, name: str) -> list[str]:
    """The workers of `queue` (by their heartbeats) that register `name`, a workflow or
    an activity by `kind`."""
    listed = REGISTRATION_FIELDS[kind]
    return [
        str(beat["name"])
        for beat in heartbeats
        if queue in beat.get("queues", ()) and name in beat.get(listed, ())
    ]


def registrations(workflows: Iterable[str], activities: Iterable[str]) -> dict[str, list[str]]:
    """The heartbeat fields that list what a worker registers (see `registering`)."""
    return {
        REGISTRATION_FIELDS["workflow"]: sorted(workflows),
        REGISTRATION_FIELDS["activity"]: sorted(activities),
    }
