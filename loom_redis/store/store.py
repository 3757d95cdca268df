"""`Store`: the only code that talks to Redis, one namespace on one Redis."""

from __future__ import annotations

from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import NoScriptError, ResponseError

from ..codec import max_payload_bytes
from ..errors import ConfigurationError, RedisPermissionError
from .backlog import Backlog
from .connection import (
    connect_redis,
    mask_url,
    permission_error,
    redis_errors,
)
from .dead_letters import DeadLetters
from .keys import MAX_SHARDS, Keyspace, validate_namespace
from .listing import Listing
from .queries import Queries
from .registry import Registry
from .replication import check_replicas, durability_of
from .retention import RETENTION_FIELD, Retention, stored_retention
from .tasks import create_config, stored_shards
from .workflows import Workflows

# The SHA1 of no script (a SHA1 of forty zeros has no known preimage).
_NO_SUCH_SCRIPT = "0" * 40


class Store(Workflows, Queries, Listing, DeadLetters, Backlog, Registry, Retention):
    """Reads and transitions of one namespace on one Redis."""

    @classmethod
    async def open(
        cls,
        url: str,
        namespace: str,
        shards: int | None = None,
        *,
        durability: str | None = None,
    ) -> Store:
        """Connect and read the namespace's shard count and retention (creating it on
        first use). `durability` ("async", "replicated"; default LOOM_DURABILITY, else
        "async") says when a transition counts as written: see replication.py."""
        validate_namespace(namespace)
        acknowledged = durability_of(durability)
        max_payload_bytes()  # a bad LOOM_MAX_PAYLOAD_BYTES fails here, not at some large payload
        redis = await connect_redis(url)
        try:
            keys = Keyspace(namespace)
            # Only None means the default: 0 is an error, not a request for 16 shards.
            wanted = keys.shards if shards is None else shards
            if not isinstance(wanted, int) or not 1 <= wanted <= MAX_SHARDS:
                raise ConfigurationError(f"shard count must be 1..{MAX_SHARDS}, got {wanted!r}")
            # Read first: a read-only (dashboard) user can open an existing namespace.
            with redis_errors(f"open namespace {namespace!r}", url, namespace):
                found, retention = await redis.hmget(keys.config(), ["shards", RETENTION_FIELD])
            if found is None:
                with redis_errors(f"create namespace {namespace!r}", url, namespace):
                    found = await create_config(redis, keys.config(), wanted)
            stored = stored_shards(keys.config(), found)
            if shards is not None and stored != shards:
                raise ConfigurationError(
                    f"namespace {namespace!r} was created with {stored} shards, not {shards}; "
                    "the shard count of a namespace is fixed"
                )
            retention_ms = stored_retention(keys.config(), retention)
            with redis_errors("read the replicas (INFO replication)", url):
                await check_replicas(redis, acknowledged, mask_url(url))
        except BaseException:
            await redis.aclose()
            raise
        return cls(redis, Keyspace(namespace, stored), url, retention_ms, acknowledged)

    async def write_refusal(self, doing: str) -> RedisPermissionError | None:
        """Why this connection's Redis user may not `doing` (every transition is a
        script), or None if it may. Asks Redis to run a script that cannot exist: an ACL
        that denies scripts refuses it before Redis looks for it."""
        try:
            await self.redis.evalsha(_NO_SUCH_SCRIPT, 0)
        except NoScriptError:
            return None
        except ResponseError as exc:
            return permission_error(exc, doing, self.url, self.keys.namespace)
        return None

    def shards_per_master(self) -> dict[str, int]:
        """How many of the namespace's shards each master serves, by the hash slots of
        their tags (a cluster's masters as host:port, every one listed; a standalone
        server as its URL): each master does its shards' share of the work."""
        if not isinstance(self.redis, RedisCluster):
            return {mask_url(self.url): self.keys.shards}
        spread = {node.name: 0 for node in self.redis.get_primaries()}
        nodes = self.redis.nodes_manager
        for shard in range(self.keys.shards):
            slot = key_slot(self.keys.timers(shard).encode())
            name = nodes.get_node_from_slot(slot).name
            spread[name] = spread.get(name, 0) + 1
        return spread

    @property
    def deliveries_in_doubt(self) -> int:
        """How many times tasks may have been delivered to this process without its
        taking them (see Intake): a connection of the transitions, task reads and claims
        broke with commands sent on it (each may have run, its reply lost), or, under
        durability "replicated", a read or claim delivered tasks that no replica
        confirmed (they are not run until one does)."""
        return self._lane.broken + self._deliveries_unconfirmed

    async def ping(self) -> None:
        """Raise a RedisError unless Redis answers."""
        await self.redis.ping()

    async def close(self) -> None:
        await self._lane.aclose()
        await self.redis.aclose()
