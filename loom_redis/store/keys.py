"""Every Redis key name loom-redis uses, and nothing else spells one.

All keys one workflow's transitions touch share the hash tag ``{<ns>:<shard>}``
so that each transition is a single Lua script on a single slot, on standalone
Redis and on Redis Cluster alike. Namespace-wide keys use the tag ``{<ns>}``.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

from ..errors import ConfigurationError, InvalidWorkflowIdError

PREFIX = "loom"
DEFAULT_NAMESPACE = "default"
DEFAULT_SHARDS = 16
# How long a closed workflow is kept, counted from its close, unless the namespace's
# config or its start says otherwise (see retention.py).
DEFAULT_RETENTION_MS = 7 * 24 * 3600 * 1000
# More shards than this is a mistake (a typo, a hand-edited config), not a plan.
MAX_SHARDS = 4096
# Workflow ids, owners and signal names, in bytes of UTF-8.
MAX_NAME_BYTES = 256
# The consumer group every worker of a namespace reads task streams with.
WORKER_GROUP = "workers"

_NAMESPACE_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_QUEUE_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")


def validate_namespace(namespace: str) -> str:
    # fullmatch: `$` would accept a trailing newline.
    if not isinstance(namespace, str) or not _NAMESPACE_RE.fullmatch(namespace):
        raise ConfigurationError(
            f"namespace {namespace!r} is invalid: use 1-64 letters, digits, '_', '.' or '-'"
        )
    return namespace


def key_pattern(namespace: str | None = None) -> str:
    """The glob of every key of `namespace` (None: of every namespace), as a Redis ACL
    key pattern takes it: `loom:{prod[:}]*` matches `loom:{prod}:...` and
    `loom:{prod:N}:...`, not `loom:{prod2}:...` (a namespace name holds no glob
    character: validate_namespace)."""
    if namespace is None:
        return f"{PREFIX}:*"
    return f"{PREFIX}:{{{validate_namespace(namespace)}[:}}]*"


def validate_queue(queue: str) -> str:
    if not isinstance(queue, str) or not _QUEUE_RE.fullmatch(queue):
        raise ConfigurationError(
            f"task queue {queue!r} is invalid: use 1-128 letters, digits, '_', '.', ':' or '-'"
        )
    return queue


# C0 and C1 control characters, DEL, and the Unicode line and paragraph separators:
# printed, they move the cursor, clear the screen or break a row of a listing.
CONTROL_CHARACTERS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _validate_name(value: str, what: str, error: type[Exception] = ConfigurationError) -> str:
    """A name stored in Redis and printed by the CLI and logs (`what` says which): a
    non-empty string of at most MAX_NAME_BYTES of UTF-8, without control characters."""
    if not isinstance(value, str) or not value:
        kind = "" if isinstance(value, str) else f"{type(value).__name__} "
        raise error(f"{what} must be a non-empty string, got {kind}{value!r}")
    try:
        size = len(value.encode())
    except UnicodeEncodeError as exc:
        raise error(
            f"{what} {value[:40]!r} is not valid Unicode text ({exc.reason} at "
            f"position {exc.start}): it is stored as UTF-8"
        ) from None
    if size > MAX_NAME_BYTES:
        raise error(f"{what} {value[:40]!r}... is {size} bytes, over the limit of {MAX_NAME_BYTES}")
    control = CONTROL_CHARACTERS.search(value)
    if control:
        raise error(
            f"{what} {value[:40]!r} holds a control character ({control.group()!r} at "
            f"position {control.start()}): names are printed by `loom` and in logs"
        )
    return value


def validate_workflow_id(workflow_id: str) -> str:
    return _validate_name(workflow_id, "workflow id", InvalidWorkflowIdError)


def validate_owner(owner: str) -> str:
    """An owner names a key (the index of its open workflows) and is printed."""
    return _validate_name(owner, "owner")


def validate_signal_name(name: str) -> str:
    return _validate_name(name, "signal name")


@dataclass(frozen=True)
class Keyspace:
    """Key names of one namespace with a fixed number of shards."""

    namespace: str = DEFAULT_NAMESPACE
    shards: int = DEFAULT_SHARDS

    def shard_of(self, workflow_id: str) -> int:
        return zlib.crc32(workflow_id.encode()) % self.shards

    def _tag(self, shard: int) -> str:
        return f"{PREFIX}:{{{self.namespace}:{shard}}}"

    # Per-workflow keys.
    def history(self, workflow_id: str) -> str:
        return f"{self._tag(self.shard_of(workflow_id))}:wf:{workflow_id}:h"

    def meta(self, workflow_id: str) -> str:
        return f"{self._tag(self.shard_of(workflow_id))}:wf:{workflow_id}:m"

    def close_notice(self, workflow_id: str) -> str:
        """A list a waiting result() blocks on; it exists for a minute after the close
        (every start registers its client as a waiter)."""
        return f"{self._tag(self.shard_of(workflow_id))}:wf:{workflow_id}:c"

    def once_requests(self, workflow_id: str) -> str:
        """A zset of the request ids of the signals delivered to the workflow (at most
        once each), scored by delivery time; bounded (wire.ONCE_KEEP, ONCE_KEEP_MS)."""
        return f"{self._tag(self.shard_of(workflow_id))}:wf:{workflow_id}:o"

    # Per-shard keys. A task queue is two streams: workflow tasks, and activity tasks
    # (so that a commit can take the activity it just scheduled: see take_next).
    def queue(self, shard: int, queue: str) -> str:
        return f"{self._tag(shard)}:q:{queue}"

    def activity_queue(self, shard: int, queue: str) -> str:
        return f"{self._tag(shard)}:qa:{queue}"

    @staticmethod
    def queue_of(stream: str) -> str:
        """The queue name of a task stream key (either kind)."""
        return stream.partition("}:")[2].partition(":")[2]

    def timers(self, shard: int) -> str:
        return f"{self._tag(shard)}:timers"

    def dead(self, shard: int) -> str:
        return f"{self._tag(shard)}:dead"

    def started_index(self, shard: int) -> str:
        return f"{self._tag(shard)}:idx:started"

    def status_index_prefix(self, shard: int) -> str:
        """Scripts append a status (RUNNING, ...) to this prefix to name its index zset."""
        return f"{self._tag(shard)}:idx:status:"

    def status_index(self, shard: int, status: str) -> str:
        return self.status_index_prefix(shard) + status

    def owner_index_prefix(self, shard: int) -> str:
        """Scripts append an owner to this prefix to name the index of its open workflows."""
        return f"{self._tag(shard)}:idx:owner:"

    def owner_index(self, shard: int, owner: str) -> str:
        return self.owner_index_prefix(shard) + owner

    def expiry_index(self, shard: int) -> str:
        """Closed workflow ids scored by the time their retention ends (ms)."""
        return f"{self._tag(shard)}:idx:expiry"

    @staticmethod
    def replication_mark(key: bytes | str) -> str:
        """A small hash in the hash slot of `key` (one of ours: `loom:{<tag>}:...`) that
        each write under durability "replicated" sets, so that its WAIT covers the
        transition even when a repeat of it wrote nothing (see replication.py)."""
        name = key.decode() if isinstance(key, bytes) else key
        tag = name[name.index("{") : name.index("}") + 1]
        return f"{PREFIX}:{tag}:replicated"

    # Namespace-wide keys.
    def config(self) -> str:
        return f"{PREFIX}:{{{self.namespace}}}:config"

    def workers(self) -> str:
        return f"{PREFIX}:{{{self.namespace}}}:workers"

    def definitions(self) -> str:
        return f"{PREFIX}:{{{self.namespace}}}:defs"
