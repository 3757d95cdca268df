"""Connecting to Redis: version check, retries, TLS files, credentials kept out of
every message, and ACL refusals turned into errors that name the missing permission."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import hiredis
import redis.asyncio as aioredis
from redis._parsers.base import BaseParser
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterNode, ClusterPipeline, RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import (
    AskError,
    AuthenticationError,
    ClusterDownError,
    ClusterError,
    InvalidResponse,
    MovedError,
    NoPermissionError,
    ReadOnlyError,
    RedisClusterException,
    ResponseError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError

# The errors of Redis or of the link to it that a Store call raises (redis-py's classes),
# given from here so that code outside the store imports nothing from redis.
from redis.exceptions import OutOfMemoryError as OutOfMemoryError
from redis.exceptions import RedisError as RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..errors import (
    ConfigurationError,
    LoomError,
    RedisAuthenticationError,
    RedisOutOfMemoryError,
    RedisPermissionError,
    RedisReadOnlyError,
    RedisUnavailableError,
)
from .cluster import (
    as_cluster_url,
    command_keys,
    command_slot,
    is_cluster_url,
    parse_cluster_url,
)
from .keys import key_pattern
from .replication import ASYNC, Durability, NotReplicatedError

T = TypeVar("T")

MIN_REDIS_VERSION = (6, 2)
COMMAND_RETRIES = 3
# Between the tries of a command whose connection broke (redis-py's and the lane's).
RETRY_BACKOFF = ExponentialWithJitterBackoff(base=0.05, cap=1.0)
# The connections of a client's pool, and how long a command waits for one of them to
# come free when all are in use; the URL's `max_connections` and `timeout` override them.
MAX_CONNECTIONS = 100
POOL_TIMEOUT_SECONDS = 30.0
# How often a cluster command follows a slot that moved (or waits out a failover)
# before it gives up.
CLUSTER_MOVES = 8
# A slot being moved answers TRYAGAIN to a command over keys of which some have gone
# over and some not (or not yet exist), until the last of them is moved: a command tries
# again every TRYAGAIN_PAUSE_SECONDS, for as long as a move of a slot's keys may take.
TRYAGAIN_PAUSE_SECONDS = 0.05
TRYAGAIN_SECONDS = 5.0

# A standalone server's client, or a cluster's, and their pipelines.
RedisClient = aioredis.Redis | RedisCluster
RedisPipeline = Pipeline | ClusterPipeline


def now_ms() -> int:
    return int(time.time() * 1000)


# Query parameters redis-py turns into connection options that are secrets
# (`password`, `ssl_password`, ...).
_SECRET_QUERY = re.compile(r"([?&][^=&#]*password=)[^&#]*", re.IGNORECASE)


def mask_url(url: str) -> str:
    """The URL with its password (and any `*password=` query value) replaced by '***',
    for messages and logs.

    It works on the text, not on a parse of it, so that a URL that does not parse (a
    bad port, a password with an unescaped '/', '?' or '@', no scheme) is masked all the
    same: whatever stands between the scheme and the last '@' is user info, and what
    follows its first ':' is the password.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    userinfo, at, host = rest.rpartition("@")
    if at and ":" in userinfo:
        rest = f"{userinfo.partition(':')[0]}:***@{host}"
    return _SECRET_QUERY.sub(r"\1***", scheme + sep + rest)


# How Redis words a missing ACL permission: NOPERM replies to a command, and the errors
# of a script whose commands (or keys) the user may not use (Redis 7.2+ / Valkey, 7.0).
_ACL_SCRIPT_ERRORS = (
    "ACL failure in script",
    "can't run this command or subcommand",
    "can't access at least one of the keys",
)
_DENIED_COMMAND = re.compile(r"permissions to run the '([^']+)' command")


def permission_error(
    exc: RedisError, doing: str, url: str, namespace: str | None = None
) -> RedisPermissionError | None:
    """A RedisPermissionError naming what the user lacks, if `exc` is an ACL refusal
    (`namespace`: the one whose keys it was to touch, if known)."""
    message = str(exc)
    if not isinstance(exc, NoPermissionError) and not (
        isinstance(exc, ResponseError) and any(m in message for m in _ACL_SCRIPT_ERRORS)
    ):
        return None
    command = _DENIED_COMMAND.search(message)
    if command:
        name = command.group(1)
        missing = f"the command {name.upper().replace('|', ' ')} (ACL rule +{name})"
    elif "key" in message and namespace is not None:
        missing = (
            f"access to the keys of namespace {namespace!r} (ACL key pattern "
            f"~{key_pattern(namespace)} or ~{key_pattern()})"
        )
    elif "key" in message:
        missing = f"access to its keys (ACL key pattern ~{key_pattern()})"
    else:
        missing = "a command one of loom-redis's scripts runs"
    return RedisPermissionError(
        f"the Redis user of {mask_url(url)} may not {doing}: it lacks {missing}. "
        f"Redis said: {message.strip()}. docs/security.md gives the ACL rules loom-redis needs"
    )


@contextlib.contextmanager
def acl_checked(doing: str, url: str, namespace: str | None = None) -> Iterator[None]:
    """Turn an ACL refusal by Redis inside the block into a RedisPermissionError."""
    try:
        yield
    except ResponseError as exc:
        denied = permission_error(exc, doing, url, namespace)
        if denied is None:
            raise
        raise denied from None


# What a node answers a script that touches a key of a slot being moved which is not
# (or no longer) on that node: the script stops there, its writes up to that point kept.
_NON_LOCAL_KEY = "Script attempted to access a non local key"
# What redis-py's cluster client raises when a command's redirections do not settle
# (a slot being moved: ASK, TRYAGAIN, again and again).
_REDIRECTIONS_EXHAUSTED = "TTL exhausted"


# What Redis 7.0 answers a blocking read (XREADGROUP, XREAD) whose stream was deleted
# while it waited, as a MIGRATE moving the stream to another master deletes it.
_UNBLOCKED = "UNBLOCKED"


def read_cut_short(exc: BaseException) -> bool:
    """Whether `exc` ended a blocking read because its stream went away while it waited
    (moved to another master by a slot's move): the read found nothing, and the next
    one follows the stream (ASK, MOVED)."""
    return isinstance(exc, ResponseError) and str(exc).startswith(_UNBLOCKED)


def slot_in_motion(exc: BaseException) -> bool:
    """Whether `exc` says the command met a hash slot being moved to another master:
    TRYAGAIN (its keys are on both sides), or a script stopped by a key moved away."""
    return isinstance(exc, TryAgainError) or (
        isinstance(exc, ResponseError) and str(exc).startswith(_NON_LOCAL_KEY)
    )


def unreachable(exc: BaseException) -> bool:
    """Whether `exc` says Redis could not be reached: a lost or refused connection, a
    timeout, a server still loading its data (not refused credentials), a cluster in
    the middle of a failover or of a slot's move."""
    if isinstance(exc, (*_CLUSTER_IN_MOTION, SlotNotCoveredError)) or slot_in_motion(exc):
        return True  # a cluster between a master's death and its replica's promotion
    if isinstance(exc, ClusterError) and _REDIRECTIONS_EXHAUSTED in str(exc):
        return True  # a slot being moved (redis-py's cluster client gave up following it)
    if isinstance(exc, NotReplicatedError):
        return True  # a replica down or far behind: as a master that cannot be reached
    return isinstance(exc, (RedisConnectionError, RedisTimeoutError)) and not isinstance(
        exc, AuthenticationError
    )


def answered(replies: list[Any]) -> list[Any]:
    """The replies of a pipeline run with raise_on_error=False, in which an error reply
    (a missing key or group) is the caller's to read; an error that is no reply (a lost
    connection: a cluster's master failing over) is raised, rather than read as an
    empty answer."""
    for reply in replies:
        if isinstance(reply, Exception) and not isinstance(reply, ResponseError):
            raise reply
    return replies


def loom_error(
    exc: RedisError, doing: str, url: str, *, retried: float = 0.0, namespace: str | None = None
) -> LoomError:
    """The LoomError that says what `exc`, an error of redis-py while it was to `doing`
    (in `namespace`, if known), means; `retried` is how long the operation was retried,
    if it was."""
    where = mask_url(url)
    detail = str(exc).strip().rstrip(".")
    denied = permission_error(exc, doing, url, namespace)
    if denied is not None:
        return denied
    if isinstance(exc, OutOfMemoryError):
        return RedisOutOfMemoryError(
            f"the Redis server at {where} is out of memory (maxmemory), so it refused to "
            f"{doing}; it accepts writes again once memory is freed or maxmemory raised. "
            f"Redis said: OOM {detail}"
        )
    if isinstance(exc, ReadOnlyError):
        return RedisReadOnlyError(
            f"Redis at {where} is a read-only replica, so it refused to {doing}; point "
            f"the URL at the primary. Redis said: READONLY {detail}"
        )
    if isinstance(exc, AuthenticationError):
        return RedisAuthenticationError(f"Redis at {where} refused the credentials: {detail}")
    if unreachable(exc):
        tried = f" (retried for {retried:g}s)" if retried else ""
        return RedisUnavailableError(f"cannot reach Redis at {where} to {doing}{tried}: {detail}")
    return RedisUnavailableError(f"Redis at {where} refused to {doing}: {detail}")


@contextlib.contextmanager
def redis_errors(doing: str, url: str, namespace: str | None = None) -> Iterator[None]:
    """Turn an error of redis-py inside the block into the LoomError that names it."""
    try:
        yield
    except RedisError as exc:
        raise loom_error(exc, doing, url, namespace=namespace) from None


async def retrying(
    call: Callable[[], Awaitable[T]],
    patience: Callable[[RedisError], float | None],
    on_retry: Callable[[RedisError, float], None],
) -> T:
    """`call()`, made again after a pause (0.1 s, doubling up to 2 s) while it fails with
    an error of redis-py for which `patience` gives how long, counted from the first
    failure, to keep trying (None: the error is raised at once). `on_retry(error, pause)`
    hears of each retry. `call` must be safe to repeat."""
    loop = asyncio.get_running_loop()
    first_failure: float | None = None
    delay = 0.1
    while True:
        try:
            return await call()
        except RedisError as exc:
            seconds = patience(exc)
            if first_failure is None:
                first_failure = loop.time()
            if seconds is None or loop.time() + delay - first_failure > seconds:
                raise
            on_retry(exc, delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 2.0)


async def retried_call(
    call: Callable[[], Awaitable[T]],
    *,
    doing: str,
    url: str,
    retry_seconds: float,
    log: logging.Logger,
    namespace: str | None = None,
) -> T:
    """`call()`, made again while Redis cannot be reached, for up to `retry_seconds`
    (`log` warns once that it retries); an error of redis-py comes out as the LoomError
    that names it (`doing` says what failed). `call` must be safe to repeat."""
    retries: list[float] = []

    def patience(exc: RedisError) -> float | None:
        return retry_seconds if unreachable(exc) else None

    def on_retry(exc: RedisError, pause: float) -> None:
        if not retries:  # said once a call, not at each try
            log.warning(
                "Redis cannot be reached to %s: %s; retrying for up to %gs",
                doing,
                exc,
                retry_seconds,
            )
        retries.append(pause)

    try:
        return await retrying(call, patience, on_retry)
    except RedisError as exc:
        retried = retry_seconds if retries else 0.0
        raise loom_error(exc, doing, url, retried=retried, namespace=namespace) from None


# URL query parameters of redis-py that name files for TLS.
_TLS_FILE_OPTIONS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_ca_path")


def _check_tls_files(url: str) -> None:
    """Name a missing CA, certificate or key file (the SSL error would not say which)."""
    try:
        query = parse_qs(urlsplit(url).query)
    except ValueError:
        return
    for option in _TLS_FILE_OPTIONS:
        for path in query.get(option, []):
            if not os.path.exists(path):
                raise ConfigurationError(
                    f"invalid Redis URL {mask_url(url)!r}: {option} {path!r} does not exist"
                )


def _check_userinfo(url: str) -> None:
    """Refuse a URL whose user name or password holds an unescaped '@', '/', '?' or '#':
    a URL parser ends the host part at the first '/', '?' or '#', so a piece of the
    password would be taken for the host, the port or the path (and shown in errors as
    such), and an '@' leaves it unclear where the password ends."""
    rest = url.partition("://")[2] or url
    userinfo, at, _ = rest.rpartition("@")
    if at and any(char in userinfo for char in "@/?#"):
        raise ConfigurationError(
            f"invalid Redis URL {mask_url(url)!r}: its user name or password holds an "
            "unescaped '@', '/', '?' or '#'; percent-encode the password (and user name): "
            "%40 for '@', %2F for '/', %3F for '?', %23 for '#'"
        )


# How every connection is made. RESP2 everywhere: reply shapes stay the same across
# redis-py versions and servers. No socket timeout: blocking reads wait longer than
# redis-py's default of 5 s. A command whose connection broke is sent again (a blip
# costs no error): every script recognises its own repeat (fencing, request ids,
# once-fields). Options in the URL's query string still override these.
def _connection_options() -> dict[str, Any]:
    return {
        "max_connections": MAX_CONNECTIONS,
        "decode_responses": False,
        "protocol": 2,
        "socket_timeout": None,
        "socket_connect_timeout": 10,
        "retry": Retry(RETRY_BACKOFF, COMMAND_RETRIES),
        "retry_on_error": [RedisConnectionError, RedisTimeoutError],
    }


def _client(url: str) -> RedisClient:
    url = as_cluster_url(url)
    if is_cluster_url(url):
        parsed = parse_cluster_url(url, mask_url(url))
        return RedisCluster.from_url(
            parsed.node_url,
            startup_nodes=[ClusterNode(host, port) for host, port in parsed.nodes],
            **_connection_options(),
        )
    # A command finding every connection of the pool in use waits for one.
    pool = aioredis.BlockingConnectionPool.from_url(
        url, timeout=POOL_TIMEOUT_SECONDS, **_connection_options()
    )
    return aioredis.Redis.from_pool(pool)


async def _server_info(client: RedisClient) -> dict[str, Any]:
    if isinstance(client, RedisCluster):
        try:
            await client.initialize()  # reads the slots: every master must answer
        except RedisClusterException as exc:
            raise _innermost(exc) from None
        info: Any = await client.info("server", target_nodes=client.get_random_node())
    else:
        info = await client.info("server")
    return dict(info)


def _innermost(exc: BaseException) -> BaseException:
    """The error a node answered, which redis-py's cluster client wraps in errors of its
    own (a refused password, or an ACL refusal of CLUSTER SLOTS, becomes "Cluster mode is
    not enabled on this node"); `exc` itself if it wraps none."""
    inner = exc.__cause__ or exc.__context__
    while inner is not None:
        if isinstance(inner, RedisError):
            return inner
        inner = inner.__cause__ or inner.__context__
    return exc


async def connect_redis(url: str) -> RedisClient:
    """A client for `url` (a standalone server, or a cluster: see cluster.py), checked
    to answer and to be Redis >= 6.2 (or Valkey)."""
    _check_userinfo(url)
    try:
        client = _client(url)
    except ValueError as exc:
        detail = str(exc)
        if "Port could not be cast" in detail:
            detail = "its port is not a number"  # redis-py quotes what it found there
        raise ConfigurationError(f"invalid Redis URL {mask_url(url)!r}: {detail}") from None
    try:
        _check_tls_files(url)
        info = await _server_info(client)
    except ConfigurationError:
        await client.aclose()
        raise
    except TypeError as exc:  # an option (query parameter) the connection does not take
        await client.aclose()
        hint = "; TLS options (ssl_*) need a rediss:// URL" if "ssl_" in str(exc) else ""
        raise ConfigurationError(f"invalid Redis URL {mask_url(url)!r}: {exc}{hint}") from None
    except AuthenticationError as exc:
        await client.aclose()
        raise RedisAuthenticationError(
            f"Redis at {mask_url(url)} refused the credentials: {exc}; check the user name "
            "and password of the URL (redis://USER:PASSWORD@HOST:PORT/DB)"
        ) from None
    except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
        await client.aclose()
        # redis-py's message ends with a full stop ("... Connection refused.").
        detail = str(exc).rstrip(". ")
        raise RedisUnavailableError(
            f"cannot reach Redis at {mask_url(url)}: {detail}", names_url=True
        ) from None
    except RedisError as exc:
        await client.aclose()
        doing = "run INFO (loom-redis checks the server version)"
        if isinstance(client, RedisCluster):
            doing = "read the cluster's slots (CLUSTER SLOTS) and command table (COMMAND)"
        denied = permission_error(exc, doing, url)
        if denied is not None:
            raise denied from None
        raise RedisUnavailableError(f"Redis at {mask_url(url)} refused: {exc}") from None
    except RedisClusterException as exc:  # not a cluster, or not a whole one
        await client.aclose()
        raise RedisUnavailableError(f"Redis at {mask_url(url)} refused: {exc}") from None
    version = str(info.get("redis_version", "0"))
    numbers = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
    if numbers < MIN_REDIS_VERSION:
        await client.aclose()
        raise RedisUnavailableError(
            f"Redis at {mask_url(url)} is version {version}; loom-redis needs Redis >= 6.2 "
            "or Valkey >= 7.2"
        )
    return client


class _LaneConnection(asyncio.Protocol):
    """One connection of the direct lane, once redis-py has opened it (TLS, credentials,
    database): hiredis parses the replies as they arrive, straight into the futures of
    the commands that wait for them, with no stream reader or parser layer between."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        # Kept: a stream writer that is collected closes its transport.
        self._writer = writer
        transport: asyncio.Transport = writer.transport  # type: ignore[assignment]
        self._transport = transport
        self._parser = hiredis.Reader(
            protocolError=InvalidResponse, replyError=BaseParser.parse_error
        )
        self._waiting: deque[asyncio.Future[Any]] = deque()
        self.lost: Exception | None = None
        transport.set_protocol(self)

    @classmethod
    async def open(cls, connection: AbstractConnection) -> _LaneConnection:
        """Take over `connection` (redis-py's, not yet connected): its handshake (TLS,
        credentials, database) done, the stream it used."""
        await connection.connect()  # type: ignore[no-untyped-call]  # redis-py's
        # The stream the handshake used, taken over: redis-py's object lets go of it.
        writer: asyncio.StreamWriter = connection._writer  # type: ignore[assignment]
        connection._writer = connection._reader = None
        return cls(writer)

    def data_received(self, data: bytes) -> None:
        self._parser.feed(data)
        while self._waiting:
            reply = self._parser.gets()
            if reply is False:
                return
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        lost = RedisConnectionError(
            "Redis closed the connection" if exc is None else f"connection lost: {exc}"
        )
        if self._waiting and self.lost is None:  # the reply being waited for
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_exception(lost)
        self.lost = lost
        self.close()

    async def send(self, packed: bytes, count: int) -> list[Any]:
        """Write `packed` (`count` commands) and return their replies; an error reply is
        raised, with the connection closed when later replies are due."""
        if self.lost is not None:
            raise self.lost
        loop = asyncio.get_running_loop()
        waiters = [loop.create_future() for _ in range(count)]
        self._waiting.extend(waiters)
        self._transport.write(packed)
        replies: list[Any] = []
        try:
            for waiter in waiters:
                reply = await waiter
                if isinstance(reply, RedisError):
                    # An error reply. LOADING (BusyLoadingError) is a ConnectionError:
                    # retried, as a lost connection is.
                    if len(replies) + 1 < count:
                        self.close()
                    raise reply
                replies.append(reply)
        except (RedisConnectionError, asyncio.CancelledError):
            self.close()  # a reply may still be on its way: of no further use
            raise
        return replies

    def close(self) -> None:
        if self.lost is None:
            self.lost = RedisConnectionError("connection closed")
        while self._waiting:  # replies nobody will read
            self._waiting.popleft().cancel()
        self._transport.close()


class _Node:
    """The direct lane's connections to one server."""

    # Idle connections kept for the next command; a burst opens more, closed after use.
    KEEP = 64

    def __init__(self, connection_class: Any, connection_kwargs: dict[str, Any]) -> None:
        self._connection_class = connection_class
        self._connection_kwargs = connection_kwargs
        self._idle: list[_LaneConnection] = []

    async def send(self, packed: bytes, count: int) -> list[Any]:
        idle = self._idle
        while idle and idle[-1].lost is not None:
            idle.pop()
        try:
            connection = idle.pop() if idle else await self._open()
        except OSError as exc:
            raise RedisConnectionError(f"cannot connect: {exc}") from exc
        try:
            replies = await connection.send(packed, count)
        except ResponseError:
            self._keep(connection)
            raise
        self._keep(connection)
        return replies

    async def _open(self) -> _LaneConnection:
        return await _LaneConnection.open(self._connection_class(**self._connection_kwargs))

    def _keep(self, connection: _LaneConnection) -> None:
        if connection.lost is not None:
            return
        if len(self._idle) < self.KEEP:
            self._idle.append(connection)
        else:
            connection.close()

    def close(self) -> None:
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()


def _same(node: _Node) -> _Node:
    return node


async def _all(sends: Iterable[Awaitable[Any]]) -> None:
    """Await every send at once; then raise the first error, if any (each send ends on
    its own, so that no reply is left unread on a connection kept for reuse)."""
    outcomes = await asyncio.gather(*sends, return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome


# Errors of a cluster in motion, answered by waiting, reading its slots again and
# sending again: a failover under way, a slot that moved, or one being moved.
_CLUSTER_IN_MOTION = (ClusterDownError, MovedError)


class DirectLane:
    """Sends commands on connections of its own, opened like the client's (URL, TLS,
    credentials, RESP2), without redis-py's per-command layers (pool lock, observability
    hooks, response callbacks, pure-Python packing, stream reader): for the Lua
    transitions, every step of every workflow. A command whose connection broke is sent
    again, with the client's retry policy; every script recognises its own repeat.

    On Redis Cluster each command goes to the node that serves its keys' hash slot (its
    keys must share one: see cluster.py); a chain is cut into one write per slot, sent
    at once, and its replies put back in order. A slot that moved (MOVED) is looked up
    again, one being moved (ASK) is asked of its new node.
    """

    def __init__(
        self,
        client: RedisClient,
        durability: Durability = ASYNC,
        mark: Callable[[bytes | str], str] | None = None,
    ) -> None:
        self._cluster = client if isinstance(client, RedisCluster) else None
        # Under durability "replicated", `mark(key)` names the replication mark of
        # key's slot (see replication.py).
        self._durability = durability
        self._mark = mark
        self._nodes: dict[str, _Node] = {}
        # How many times a connection broke (or could not be opened) with commands sent
        # on it: each may have run, its reply lost (see Store.deliveries_in_doubt).
        self.broken = 0
        if not isinstance(client, RedisCluster):
            pool = client.connection_pool
            self._single: _Node | None = _Node(pool.connection_class, pool.connection_kwargs)
        else:
            self._single = None

    async def execute(self, *args: Any) -> Any:
        replies = await self.execute_chain(args)
        return replies[0]

    async def execute_chain(self, *commands: Sequence[Any], confirmed: bool = False) -> list[Any]:
        """Send the commands and return their replies, in order: in one write on a
        standalone server, in one write per hash slot on a cluster. An error reply ends
        the commands of its write: it is raised, and the connection dropped when later
        replies are due (one may be a blocking command's, which would wait for nothing).

        `confirmed` (transitions) under durability "replicated": each write ends with
        the mark of its slot and a WAIT for replicas, and NotReplicatedError is raised
        if too few acknowledge it in time."""
        single = self._single
        if single is not None:
            node = functools.partial(_same, single)
            if confirmed and self._durability.replicas:
                return self._confirmed(await self._send_retried(node, self._confirming(commands)))
            return await self._send_retried(node, commands)
        by_slot: dict[int | None, list[int]] = {}
        for index, command in enumerate(commands):
            by_slot.setdefault(command_slot(command), []).append(index)
        replies: list[Any] = [None] * len(commands)

        confirming = confirmed and bool(self._durability.replicas)

        async def send_slot(slot: int | None, indexes: list[int]) -> None:
            sent = [commands[i] for i in indexes]
            got = await self._send_to_slot(slot, sent, confirming and slot is not None)
            for index, reply in zip(indexes, got, strict=True):
                replies[index] = reply

        if len(by_slot) == 1:
            [(slot, indexes)] = by_slot.items()
            await send_slot(slot, indexes)
        else:
            await _all(send_slot(slot, indexes) for slot, indexes in by_slot.items())
        return replies

    async def broadcast(self, *commands: Sequence[Any]) -> None:
        """Send the commands to every server the lane reaches (every master of a
        cluster): what each must hold, such as the scripts."""
        if self._cluster is None:
            await self.execute_chain(*commands)
            return
        masters = self._cluster.get_primaries()
        await _all(
            self._send_retried(functools.partial(self._node, node), commands) for node in masters
        )

    async def _send_to_slot(
        self, slot: int | None, commands: Sequence[Sequence[Any]], confirmed: bool
    ) -> list[Any]:
        if confirmed:
            sent = self._confirming(commands)
            return self._confirmed(await self._send_to_slot(slot, sent, confirmed=False))
        cluster = self._cluster
        assert cluster is not None
        asked: tuple[str, int] | None = None
        moves = 0
        loop = asyncio.get_running_loop()
        slot_moving_since: float | None = None
        while True:
            try:
                if asked is not None:  # ASKING before each command: it holds for one
                    known = cluster.get_node(host=asked[0], port=asked[1])
                    target = self._node(known or ClusterNode(asked[0], asked[1]))
                    chained = [c for command in commands for c in (("ASKING",), command)]
                    replies = await self._send_retried(functools.partial(_same, target), chained)
                    return replies[1::2]
                return await self._send_retried(
                    functools.partial(self._node_of_slot, slot), commands
                )
            except _CLUSTER_IN_MOTION:  # (MovedError before AskError: it is one)
                moves += 1
                if moves > CLUSTER_MOVES:
                    raise
                asked = None
                await asyncio.sleep(RETRY_BACKOFF.compute(moves))
                await cluster.nodes_manager.initialize()
            except AskError as exc:
                asked = exc.node_addr
            except ResponseError as exc:  # (after the redirections: they are ones)
                if not slot_in_motion(exc):
                    raise
                # The slot is being moved, its keys on both sides: again, until the
                # last of them has gone over. A script stopped by a key moved from
                # under it is sent again too: each recognises its own repeat.
                if slot_moving_since is None:
                    slot_moving_since = loop.time()
                if loop.time() - slot_moving_since > TRYAGAIN_SECONDS:
                    raise
                asked = None
                await asyncio.sleep(TRYAGAIN_PAUSE_SECONDS)

    def _node_of_slot(self, slot: int | None) -> _Node:
        cluster = self._cluster
        assert cluster is not None
        if slot is None:
            return self._node(cluster.get_random_node())
        return self._node(cluster.nodes_manager.get_node_from_slot(slot))

    def _node(self, node: ClusterNode) -> _Node:
        found = self._nodes.get(node.name)
        if found is None:
            found = self._nodes[node.name] = _Node(node.connection_class, node.connection_kwargs)
        return found

    async def confirm(self, key: bytes | str) -> None:
        """Under durability "replicated", return once a replica holds every write its
        master made before on `key`'s slot (the slot's mark written, then WAIT), or raise
        NotReplicatedError; at once under "async". For what no transition confirms: a
        read's delivery of tasks to a worker."""
        if not self._durability.replicas:
            return
        marked = self._marked(key)
        if self._single is not None:
            replies = await self._send_retried(functools.partial(_same, self._single), marked)
        else:
            replies = await self._send_to_slot(command_slot(marked[0]), marked, False)
        self._confirmed(replies)

    def _confirming(self, commands: Sequence[Sequence[Any]]) -> list[Sequence[Any]]:
        """`commands` followed by the replication mark of their slot and a WAIT."""
        slot_key = next(key for command in commands for key in command_keys(command))
        return [*commands, *self._marked(slot_key)]

    def _marked(self, slot_key: bytes | str) -> list[Sequence[Any]]:
        """The write of the replication mark of `slot_key`'s slot, and the WAIT for it:
        once a replica has the mark, it has every write the master made before."""
        assert self._mark is not None
        durability = self._durability
        return [
            ("HSET", self._mark(slot_key), "at", now_ms()),
            ("WAIT", durability.replicas, durability.wait_ms),
        ]

    def _confirmed(self, replies: list[Any]) -> list[Any]:
        """The replies of the commands `_confirming` was given, once the WAIT's says
        enough replicas acknowledged them; NotReplicatedError otherwise."""
        acknowledged, wanted = int(replies[-1]), self._durability.replicas
        if acknowledged < wanted:
            raise NotReplicatedError(
                f"no replica acknowledged the write within {self._durability.wait_ms} ms "
                f"({acknowledged} of {wanted}); it is on the master only "
                "(durability 'replicated')"
            )
        return replies[:-2]

    async def _send_retried(
        self, node: Callable[[], _Node], commands: Sequence[Sequence[Any]]
    ) -> list[Any]:
        """Send `commands` in one write to `node()` (asked again at each try: a cluster
        may have moved the slot), again when the connection broke."""
        packed = b"".join(hiredis.pack_command(tuple(command)) for command in commands)
        failures = 0
        while True:
            target = node()
            try:
                return await target.send(packed, len(commands))
            except (RedisConnectionError, RedisTimeoutError):
                self.broken += 1
                failures += 1
                if failures > COMMAND_RETRIES:
                    raise
                if self._cluster is not None:  # a master that died: its replica takes over
                    with contextlib.suppress(RedisError, OSError):
                        await self._cluster.nodes_manager.initialize()
            await asyncio.sleep(RETRY_BACKOFF.compute(failures))

    async def aclose(self) -> None:
        for node in [self._single, *self._nodes.values()]:
            if node is not None:
                node.close()
        self._nodes.clear()
