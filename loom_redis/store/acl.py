"""Redis ACL users for loom-redis: the commands each role sends, the keys it may touch
(every namespace's, or one namespace's), and a user set on every node of a server.

These lists are the one source of the rules: `loom acl rules` prints them,
`loom acl apply` sets them, and docs/security.md shows what `loom acl rules` prints (a
test compares the two). ACLs are per node: on Redis Cluster a user must be set on each
master and each replica (a replica promoted by a failover serves its clients with its
own ACL), and on a node added later.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from dataclasses import dataclass
from typing import Any, Literal

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from ..errors import ConfigurationError, LoomError
from .connection import RedisClient, connect_redis, redis_errors
from .keys import key_pattern

Role = Literal["worker", "dashboard"]
ROLES: tuple[Role, ...] = ("worker", "dashboard")

# What every connection sends: INFO (the server version), SELECT (a database other than
# 0), PING (a worker asks whether Redis is back after an error); on Redis Cluster,
# redis-py reads the slot map (CLUSTER SLOTS) and the command table (COMMAND), and asks
# a slot being moved of its new node (ASKING).
_CONNECTION = ("+info", "+select", "+ping", "+cluster|slots", "+command", "+asking")
# What a read-only dashboard reads: listings, meta, histories, stats, progress, dead
# letters, the backlog and consumers of the queues, timer due times.
_READS = (
    "+hget",
    "+hmget",
    "+hgetall",
    "+hkeys",
    "+xrange",
    "+xrevrange",
    "+xread",
    "+xlen",
    "+xinfo|groups",
    "+xinfo|consumers",
    "+xpending",
    "+zcard",
    "+zcount",
    "+zrange",
    "+zrevrange",
    "+zscore",
)
# What workers and producers send besides: the transitions (Lua scripts, and the
# commands they run: ACLs apply to those too), the task streams, the close notices,
# and WAIT under durability "replicated".
_WRITES = (
    "+evalsha",
    "+script|load",
    "+hset",
    "+hsetnx",
    "+hdel",
    "+exists",
    "+xadd",
    "+xack",
    "+xdel",
    "+xreadgroup",
    "+xautoclaim",
    "+xclaim",
    "+xgroup|create",
    "+xgroup|delconsumer",
    "+rpush",
    "+ltrim",
    "+lindex",
    "+pexpire",
    "+blmove",
    "+zadd",
    "+zrem",
    "+zrangebyscore",
    "+zremrangebyscore",
    "+zremrangebyrank",
    "+unlink",
    "+wait",
)
COMMANDS: dict[Role, tuple[str, ...]] = {
    "worker": _CONNECTION + _READS + _WRITES,
    "dashboard": _CONNECTION + _READS,
}
# redis-py names itself with CLIENT SETINFO on each connection, and ignores a refusal
# (which fills the server's ACL LOG); Redis 7.0 and 6.2 do not know the subcommand and
# refuse the rule.
CLIENT_SETINFO = "+client|setinfo"
CLIENT_SETINFO_SINCE = (7, 2)  # Valkey says 7.2 too
# Shown in the password's place when none is given.
PASSWORD_PLACEHOLDER = ">PASSWORD"

_USER_NAME = re.compile(r"[A-Za-z0-9_.@:-]{1,128}")


@dataclass(frozen=True)
class AclUser:
    """A Redis user for one role, confined to one namespace's keys (None: to every
    namespace's), with a password (None: PASSWORD_PLACEHOLDER stands for it)."""

    name: str
    role: Role
    namespace: str | None = None
    password: str | None = None

    def __post_init__(self) -> None:
        key_pattern(self.namespace)  # validates the namespace (a user name may hold it)
        if not _USER_NAME.fullmatch(self.name):
            raise ConfigurationError(
                f"user name {self.name!r} is invalid: use 1-128 letters, digits, '_', '.', "
                "'@', ':' or '-'"
            )
        if self.role not in ROLES:
            raise ConfigurationError(f"role {self.role!r} is invalid: one of {', '.join(ROLES)}")
        if self.password == "":
            raise ConfigurationError(f"the password of user {self.name!r} is empty")

    def rules(self, *, client_setinfo: bool = False) -> list[str]:
        """The user's ACL rules, from `reset` on. The password goes in as its SHA-256
        (`#<hex>`), so that printed rules and an ACL file show no password."""
        password = PASSWORD_PLACEHOLDER
        if self.password is not None:
            password = "#" + hashlib.sha256(self.password.encode()).hexdigest()
        setinfo = (CLIENT_SETINFO,) if client_setinfo else ()
        return [
            "reset",
            "on",
            password,
            f"~{key_pattern(self.namespace)}",
            *COMMANDS[self.role],
            *setinfo,
        ]

    def setuser(self, *, client_setinfo: bool = False) -> str:
        """The rules as a command typed at the `redis-cli` prompt."""
        return " ".join(["ACL", "SETUSER", self.name, *self.rules(client_setinfo=client_setinfo)])

    def aclfile_line(self, *, client_setinfo: bool = False) -> str:
        """The rules as a line of an ACL file (the server's `aclfile`)."""
        return " ".join(["user", self.name, *self.rules(client_setinfo=client_setinfo)])


@dataclass(frozen=True)
class NodeOutcome:
    """What setting a user did on one node: its address, `master`, `replica`, `server`
    (standalone) or `cluster node` (which did not say), its version, whether the rules
    took +client|setinfo, and the error that stopped it (None: set)."""

    address: str
    kind: str
    version: str = ""
    client_setinfo: bool = False
    error: str | None = None


def takes_client_setinfo(version: str) -> bool:
    numbers = tuple(int(part) for part in version.split(".")[:2] if part.isdigit())
    return numbers >= CLIENT_SETINFO_SINCE


async def apply_user(admin_url: str, user: AclUser) -> list[NodeOutcome]:
    """Set `user` (it has a password) on every node of the server `admin_url` names, as
    that URL's user: the one server, or each master and replica of a cluster (found with
    CLUSTER NODES, so also a node that serves no slot yet). A node's error ends as its
    outcome's, not the others'."""
    if user.password is None:
        raise ConfigurationError(f"user {user.name!r} has no password to set")
    redis = await connect_redis(admin_url)
    try:
        nodes = await _nodes(redis, admin_url)
        return list(await asyncio.gather(*(_set_on(node, user) for node in nodes)))
    finally:
        await redis.aclose()


@dataclass(frozen=True)
class _Node:
    address: str
    in_cluster: bool
    client: aioredis.Redis


async def _nodes(redis: RedisClient, admin_url: str) -> list[_Node]:
    connection_class: Any
    if isinstance(redis, RedisCluster):
        known = redis.get_default_node()
        connection_class, options = known.connection_class, known.connection_kwargs
        target: dict[str, Any] = {"target_nodes": known}
    else:
        pool = redis.connection_pool
        connection_class, options = pool.connection_class, pool.connection_kwargs
        target = {}
    with redis_errors("read INFO cluster", admin_url):
        enabled = (await redis.info("cluster", **target)).get("cluster_enabled")
        if not enabled:
            address = f"{options['host']}:{options['port']}" if "host" in options else "server"
            return [_Node(address, False, _client(connection_class, options))]
        listed = await redis.execute_command("CLUSTER", "NODES", **target)
    return [
        _Node(
            f"{host}:{port}",
            True,
            _client(connection_class, {**options, "host": host, "port": port}),
        )
        for host, port in _cluster_nodes(listed.decode() if isinstance(listed, bytes) else listed)
    ]


def _cluster_nodes(listed: str) -> list[tuple[str, int]]:
    """The host and port of each node CLUSTER NODES lists (lines of
    `<id> <host:port@bus[,hostname]> <flags> ...`), but a node without an address yet
    (`noaddr`, `handshake`); one marked failing is kept, for its error to be seen."""
    nodes = []
    for line in listed.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        flags = fields[2].split(",")
        if "noaddr" in flags or "handshake" in flags:
            continue
        host, _, port = fields[1].split("@")[0].rpartition(":")
        nodes.append((host.strip("[]"), int(port)))
    return sorted(nodes)


def _client(connection_class: Any, options: dict[str, Any]) -> aioredis.Redis:
    pool = aioredis.ConnectionPool(connection_class=connection_class, **options)
    return aioredis.Redis(connection_pool=pool)


async def _set_on(node: _Node, user: AclUser) -> NodeOutcome:
    # Asked of the node itself: another node's view of its role may lag behind.
    kind, version = "cluster node" if node.in_cluster else "server", ""
    try:
        with redis_errors(f"set the ACL user {user.name!r} on {node.address}", node.address):
            if node.in_cluster:
                role = (await node.client.info("replication")).get("role")
                kind = "master" if role == "master" else "replica"
            info = await node.client.info("server")
            version = str(info.get("redis_version", ""))
            setinfo = takes_client_setinfo(version)
            await node.client.execute_command(  # type: ignore[no-untyped-call]
                "ACL", "SETUSER", user.name, *user.rules(client_setinfo=setinfo)
            )
        return NodeOutcome(node.address, kind, version, setinfo)
    except LoomError as exc:  # the node's outcome: the others go on
        return NodeOutcome(node.address, kind, version, error=str(exc))
    finally:
        await node.client.aclose()
