"""What every part of the store shares: the connection, the keyspace and the scripts."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from importlib import resources
from typing import Any, NamedTuple

from redis.exceptions import NoScriptError

from .connection import (
    DirectLane,
    RedisClient,
)
from .keys import DEFAULT_RETENTION_MS, Keyspace
from .replication import ASYNC, Durability
from .wire import (
    SCRIPT_NAMES,
    lua_constants,
)


class Script(NamedTuple):
    """A transition's Lua source, and the SHA1 EVALSHA names it by."""

    sha: str
    script: str

    @classmethod
    def of(cls, source: str) -> Script:
        return cls(hashlib.sha1(source.encode()).hexdigest(), source)


class StorePart:
    """The state of one Store that each of its parts (history, tasks, timers, ...) uses:
    the parts are the Store's base classes, each a module named for what it does."""

    def __init__(
        self,
        redis: RedisClient,
        keys: Keyspace,
        url: str = "",
        retention_ms: int = DEFAULT_RETENTION_MS,
        durability: Durability = ASYNC,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.url = url
        # The namespace's retention, which commits that close a workflow write (its
        # config's, read when the store opens and by each sweep round: see retention.py).
        self.retention_ms = retention_ms
        self.durability = durability
        self._lane = DirectLane(redis, durability, Keyspace.replication_mark)
        # Deliveries of tasks to this process that no replica confirmed (see
        # Store.deliveries_in_doubt).
        self._deliveries_unconfirmed = 0
        lib = lua_constants() + _script_source("lib")
        self._scripts = {
            name: Script.of(lib + "\n" + _script_source(name)) for name in SCRIPT_NAMES
        }

    async def load_scripts(self) -> None:
        """Load every Lua script into Redis now, so no transition pays a NOSCRIPT round
        trip later (workers do this when they start)."""
        # Each master of a cluster runs the scripts of its own slots.
        await self._lane.broadcast(*[("SCRIPT", "LOAD", s.script) for s in self._scripts.values()])

    async def _run(
        self,
        name: str,
        keys: Sequence[str],
        args: Sequence[Any],
        *then: Sequence[Any],
        transition: bool = True,
    ) -> Any:
        """Run a script; with `then` (commands sent in the same write), return the replies
        of all. A `transition` is acknowledged as the store's durability says."""
        script = self._scripts[name]
        call = ("EVALSHA", script.sha, len(keys), *keys, *args)
        try:
            replies = await self._lane.execute_chain(call, *then, confirmed=transition)
        except NoScriptError:  # a restarted or flushed server: load them, once
            await self.load_scripts()
            replies = await self._lane.execute_chain(call, *then, confirmed=transition)
        return replies if then else replies[0]

    async def _run_each(
        self, name: str, calls: Sequence[tuple[Sequence[str], Sequence[Any]]]
    ) -> list[Any]:
        """Run a script once per (keys, args), all in one write; the replies in order."""
        if not calls:
            return []
        sha = self._scripts[name].sha
        (keys, args), *rest = calls
        then = [("EVALSHA", sha, len(k), *k, *a) for k, a in rest]
        replies = await self._run(name, keys, args, *then)
        return list(replies) if then else [replies]


def _script_source(name: str) -> str:
    return resources.files(__package__).joinpath("scripts", f"{name}.lua").read_text()
