"""The worker's settings, checked once and handed to the collaborators that need them."""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from typing import Any

from ..definitions import NondeterminismPolicy
from ..errors import ConfigurationError
from ..store.keys import validate_queue


@dataclass(frozen=True)
class Options:
    """A worker's settings, in the units the worker uses (see Worker for each)."""

    queues: tuple[str, ...]
    concurrency: int
    lease_ms: int
    max_deliveries: int
    poll_ms: int
    on_nondeterminism: NondeterminismPolicy
    suspend_retry_ms: int
    drain_seconds: float
    metrics_host: str
    metrics_port: int | None
    name: str
    cache_size: int
    timer_scan_ms: int
    # How long a workflow task waits for the activity it runs at once (0: never).
    eager_ms: int
    # How long a task whose name no live worker of its queue registers is handed back
    # before it goes to the dead-letter stream.
    unregistered_grace_ms: int
    # How often the backlog gauges are read from Redis.
    backlog_interval_ms: int

    @classmethod
    def checked(
        cls,
        *,
        queues: tuple[str, ...],
        concurrency: int,
        lease_seconds: float,
        max_deliveries: int,
        poll_interval: float,
        on_nondeterminism: NondeterminismPolicy,
        suspend_retry_seconds: float,
        drain_seconds: float,
        metrics_host: str,
        metrics_port: int | None,
        name: str | None,
        cache_size: int,
        timer_scan_seconds: float,
        eager_seconds: float,
        unregistered_grace_seconds: float,
        backlog_interval_seconds: float,
    ) -> Options:
        """The settings as Worker takes them; ConfigurationError names one that cannot work."""
        _check_options(
            queues,
            concurrency,
            lease_seconds,
            max_deliveries,
            poll_interval,
            backlog_interval_seconds,
            eager_seconds,
            unregistered_grace_seconds,
        )
        return cls(
            queues=queues,
            concurrency=concurrency,
            lease_ms=int(lease_seconds * 1000),
            max_deliveries=max_deliveries,
            poll_ms=max(int(poll_interval * 1000), 10),
            on_nondeterminism=on_nondeterminism,
            suspend_retry_ms=int(suspend_retry_seconds * 1000),
            drain_seconds=drain_seconds,
            metrics_host=metrics_host,
            metrics_port=metrics_port,
            name=name or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}",
            cache_size=cache_size,
            timer_scan_ms=max(int(timer_scan_seconds * 1000), 10),
            eager_ms=int(eager_seconds * 1000),
            unregistered_grace_ms=int(unregistered_grace_seconds * 1000),
            backlog_interval_ms=max(int(backlog_interval_seconds * 1000), 10),
        )


def _check_options(
    queues: Any,
    concurrency: int,
    lease_seconds: float,
    max_deliveries: int,
    poll_interval: float,
    backlog_interval_seconds: float,
    eager_seconds: float,
    unregistered_grace_seconds: float,
) -> None:
    """Refuse worker settings that cannot work, naming the setting and the value."""
    if isinstance(queues, str):
        raise ConfigurationError(
            f"queues must be a tuple of queue names, got the string {queues!r} "
            f"(write queues=({queues!r},))"
        )
    for queue in queues:
        validate_queue(queue)
    if not queues:
        raise ConfigurationError("queues must name at least one task queue")
    for setting, value, least in (
        ("concurrency", concurrency, 1),
        ("max_deliveries", max_deliveries, 1),
    ):
        if not isinstance(value, int) or value < least:
            raise ConfigurationError(f"{setting} must be >= {least}, got {value!r}")
    for setting, number in (
        ("lease_seconds", lease_seconds),
        ("poll_interval", poll_interval),
        ("backlog_interval_seconds", backlog_interval_seconds),
    ):
        if not number > 0:
            raise ConfigurationError(f"{setting} must be > 0, got {number!r}")
    for setting, number in (
        ("eager_seconds", eager_seconds),
        ("unregistered_grace_seconds", unregistered_grace_seconds),
    ):
        if not number >= 0:
            raise ConfigurationError(f"{setting} must be >= 0, got {number!r}")
