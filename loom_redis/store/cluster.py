"""Redis Cluster: a cluster's URL, and which hash slot (so which node) each command the
store sends goes to.

A cluster is named by `redis+cluster://[user:password@]host:port[,host:port...][/0]`
(`rediss+cluster://` with TLS, the same query options as a standalone URL). Every key
carries its shard's hash tag (`loom:{ns:3}:...`), so every transition script names
keys of one slot and runs on the node that serves it (see DESIGN.md).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.crc import key_slot

from ..errors import ConfigurationError

CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}


# Set (to anything but "" or "0"), a redis:// or rediss:// URL names a cluster (by one
# or more of its nodes) too: what `loom --cluster` sets.
CLUSTER_ENV = "LOOM_REDIS_CLUSTER"


def is_cluster_url(url: str) -> bool:
    return url.partition("://")[0].lower() in CLUSTER_SCHEMES


def as_cluster_url(url: str) -> str:
    """`url` as a cluster URL when LOOM_REDIS_CLUSTER says the server is a cluster."""
    scheme, sep, rest = url.partition("://")
    if os.environ.get(CLUSTER_ENV, "") in ("", "0") or scheme.lower() not in ("redis", "rediss"):
        return url
    return f"{scheme}+cluster{sep}{rest}"


@dataclass(frozen=True)
class ClusterUrl:
    """A cluster URL taken apart: the URL of its first node (which carries the
    credentials, database and query options every node is reached with), and the
    addresses of all the nodes it names (the startup nodes)."""

    node_url: str
    nodes: tuple[tuple[str, int], ...]


def parse_cluster_url(url: str, masked: str) -> ClusterUrl:
    """Take a cluster URL apart; `masked` (the URL without its password) names it in
    errors."""
    scheme, _, rest = url.partition("://")
    userinfo, at, hosts_and_more = rest.rpartition("@")
    hosts, slash, path_and_query = hosts_and_more.partition("/")
    if not slash:
        hosts, question, query = hosts.partition("?")
        path_and_query = f"?{query}" if question else ""
    nodes = tuple(_address(part, masked) for part in hosts.split(",") if part.strip())
    if not nodes:
        raise ConfigurationError(f"invalid Redis URL {masked!r}: it names no cluster node")
    database = path_and_query.partition("?")[0].strip("/")
    if database not in ("", "0"):
        raise ConfigurationError(
            f"invalid Redis URL {masked!r}: a cluster has database 0 only, not {database!r}"
        )
    host, port = nodes[0]
    shown_host = f"[{host}]" if ":" in host else host
    first = f"{CLUSTER_SCHEMES[scheme.lower()]}://{userinfo}{at}{shown_host}:{port}"
    suffix = "/" + path_and_query if slash else path_and_query
    return ClusterUrl(first + suffix, nodes)


def _address(part: str, masked: str) -> tuple[str, int]:
    host, colon, port = part.strip().rpartition(":")
    if not colon:
        host, port = port, "6379"
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigurationError(
            f"invalid Redis URL {masked!r}: {part.strip()!r} is not a node's host:port"
        )
    return host, int(port)


# Commands about the server or the connection: they name no key.
_KEYLESS = frozenset({"ASKING", "CLIENT", "INFO", "PING", "SCRIPT"})


def command_keys(command: Sequence[Any]) -> list[bytes | str]:
    """The keys a command names, for the commands the store sends on its direct lane:
    a script's KEYS, the streams of XREADGROUP and XREAD, BLMOVE's two lists, none for
    a command about the server or the connection, and the first argument of any other
    command."""
    name = str(command[0]).upper()
    args: list[Any] = list(command[1:])
    if name in _KEYLESS:
        return []
    if name in ("EVALSHA", "EVAL"):
        return list(args[2 : 2 + int(args[1])])
    if name in ("XREADGROUP", "XREAD"):
        upper = [a.upper() if isinstance(a, bytes | str) else a for a in args]
        marker = b"STREAMS" if b"STREAMS" in upper else "STREAMS"
        streams = args[upper.index(marker) + 1 :]
        return list(streams[: len(streams) // 2])
    if name == "BLMOVE":
        return list(args[:2])
    return list(args[:1])


def command_slot(command: Sequence[Any]) -> int | None:
    """The one hash slot a command's keys are in, None for a command without keys;
    raises ValueError for one whose keys span slots (a cluster would refuse it)."""
    keys = command_keys(command)
    slots = {key_slot(key if isinstance(key, bytes) else str(key).encode()) for key in keys}
    if len(slots) > 1:
        raise ValueError(f"{command[0]} names keys of {len(slots)} hash slots: {keys[:4]}")
    return slots.pop() if slots else None
