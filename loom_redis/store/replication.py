"""Durability: whether a transition counts as written once its master has it, or once
a replica has it too.

Redis replicates asynchronously: a master that dies takes along the writes its replicas
had not received yet, although it acknowledged them (a start a producer was told about,
an activity's result the worker went on from). With `durability="replicated"` every
transition's write ends with `WAIT 1 <timeout>` on the same connection, so it is
acknowledged only once a replica holds it. A WAIT that times out (no replica, or one
too far behind) raises NotReplicatedError: the transition is on the master but not
acknowledged, and the caller retries it as it would a lost connection (every script
recognises its own repeat). Durability is bought with availability: a shard whose
master has no live replica makes no progress until one is back.

A repeat that finds its transition already written writes nothing, and WAIT only
waits for the connection's own last write; so each write also sets the slot's
replication mark (keys.replication_mark), whose offset is past the first write's.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from ..errors import ConfigurationError

logger = logging.getLogger("loom_redis.store")

DURABILITY_ENV = "LOOM_DURABILITY"
DURABILITIES = ("async", "replicated")
# How long one write waits for a replica's acknowledgement before NotReplicatedError;
# the caller's retries (a worker's lease, a client's retry_seconds) bound the rest.
REPLICA_WAIT_MS = 1000


class NotReplicatedError(RedisError):
    """A transition's write reached its master, but no replica acknowledged it in time."""


@dataclass(frozen=True)
class Durability:
    """How many replicas must acknowledge each transition (0: none, asynchronous), and
    how long one write waits for them."""

    replicas: int = 0
    wait_ms: int = REPLICA_WAIT_MS

    @property
    def name(self) -> str:
        return "replicated" if self.replicas else "async"


ASYNC = Durability()
REPLICATED = Durability(replicas=1)


def durability_of(value: str | None) -> Durability:
    """The durability named `value` ("async" or "replicated"), else the one the
    environment variable LOOM_DURABILITY names, else "async"."""
    name = (os.environ.get(DURABILITY_ENV) or "async") if value is None else value
    if name not in DURABILITIES:
        source = f"{DURABILITY_ENV}={name!r}" if value is None else repr(name)
        raise ConfigurationError(
            f"durability {source} is invalid: expected one of {', '.join(DURABILITIES)}"
        )
    return REPLICATED if name == "replicated" else ASYNC


async def check_replicas(redis: Any, durability: Durability, where: str) -> None:
    """Refuse `durability` on a server without any replica (every transition would wait
    in vain), and warn of each master with fewer replicas than it needs now (its
    transitions wait until they connect)."""
    if not durability.replicas:
        return
    if isinstance(redis, RedisCluster):
        masters = redis.get_primaries()
        infos = [await redis.info("replication", target_nodes=node) for node in masters]
        names = [node.name for node in masters]
    else:
        infos = [await redis.info("replication")]
        names = [where]
    connected = [int(info.get("connected_slaves", 0)) for info in infos]
    if not any(connected):
        raise ConfigurationError(
            f"durability 'replicated' needs a replica of every master, and Redis at {where} "
            "has none connected: add replicas (replicaof) or use durability 'async'"
        )
    for name, count in zip(names, connected, strict=True):
        if count < durability.replicas:
            logger.warning(
                "durability 'replicated': the master %s has %d replica(s) connected; its "
                "shards' transitions wait until one is",
                name,
                count,
            )
