"""Prometheus metrics of a worker, and the HTTP endpoint serving them with health probes."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import anyio
from anyio.abc import SocketStream
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.metrics import MetricWrapperBase

logger = logging.getLogger("loom_redis.metrics")

# A `_created` series per counter and histogram child doubles what Prometheus stores and
# tells nothing a dashboard uses. (Process-wide: prometheus_client has no per-metric switch.)
disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped in prometheus_client


@functools.cache
def labelled(metric: MetricWrapperBase, *values: str) -> Any:
    """The child of `metric` for these label values, looked up once: labels() validates
    and takes a lock on every call, a cost on every task. The values are a bounded set
    (queues, workflow and activity names, outcomes)."""
    return metric.labels(*values)


TASKS = Counter(
    "loom_tasks_total",
    "Tasks processed, by queue, kind (workflow, activity, unknown) and outcome",
    ["queue", "kind", "outcome"],
)
ACTIVITY_SECONDS = Histogram(
    "loom_activity_duration_seconds", "Duration of activity attempts", ["activity", "outcome"]
)
WORKFLOW_TASK_SECONDS = Histogram(
    "loom_workflow_task_duration_seconds",
    "Duration of workflow tasks (replay and commit)",
    ["workflow"],
)
COMMIT_CONFLICTS = Counter(
    "loom_commit_conflicts_total", "Workflow task commits rejected because history moved"
)
WORKFLOWS_CLOSED = Counter(
    "loom_workflows_closed_total", "Workflows that reached a final status", ["workflow", "status"]
)
DEAD_LETTERS = Counter(
    "loom_dead_letters_total",
    "Tasks moved to the dead-letter stream, by kind (workflow, activity, unknown)",
    ["kind"],
)
TIMERS_FIRED = Counter("loom_timers_fired_total", "Timer members fired", ["kind"])
EAGER_ACTIVITIES = Counter(
    "loom_eager_activities_total",
    "Activities run at once by the worker whose workflow task scheduled them, by how their "
    "scheduling was written: with their outcome (one commit) or, still running after "
    "the eager window, before it",
    ["written"],
)
UNREGISTERED_TASKS = Counter(
    "loom_unregistered_tasks_total",
    "Tasks for a workflow or activity this worker does not register, by what became of "
    "them: handed back to the queue for another worker, or dead-lettered once no live "
    "worker of the queue had registered the name for the grace period",
    ["kind", "name", "outcome"],
)
TASKS_RECLAIMED = Counter(
    "loom_tasks_reclaimed_total",
    "Tasks this worker took over from a worker that died (or handed them back), by how: "
    "claimed (a task left pending in a stream past its lease) or lease_expired (the lease "
    "of an activity run at once fell due, and this worker queued it again)",
    ["how"],
)
# Both series exist from the start, so that a rate over them starts at zero.
CLAIMED = TASKS_RECLAIMED.labels("claimed")
LEASE_EXPIRED = TASKS_RECLAIMED.labels("lease_expired")
NAMESPACE_DATA_LOST = Counter(
    "loom_namespace_data_lost_total",
    "Times this worker found the task streams' consumer groups gone (the Redis server lost "
    "the namespace's data) and created them again",
)


class Load(Protocol):
    """What a running worker reports when Prometheus scrapes (not at every task)."""

    concurrency: int

    @property
    def tasks_running(self) -> int: ...

    @property
    def tasks_waiting(self) -> int: ...


# The workers running in this process.
_workers: list[Load] = []
IN_FLIGHT = Gauge("loom_tasks_in_flight", "Tasks running now (at most the concurrency)")
IN_FLIGHT.set_function(lambda: float(sum(worker.tasks_running for worker in _workers)))
WAITING = Gauge(
    "loom_tasks_waiting_locally",
    "Tasks this worker took from Redis that wait for a free executor",
)
WAITING.set_function(lambda: float(sum(worker.tasks_waiting for worker in _workers)))
CONCURRENCY = Gauge("loom_worker_concurrency", "How many tasks the worker runs at once")
CONCURRENCY.set_function(lambda: float(sum(worker.concurrency for worker in _workers)))


@contextlib.contextmanager
def counting_load(worker: Load) -> Iterator[None]:
    """Report `worker`'s tasks in IN_FLIGHT, WAITING and CONCURRENCY while it runs."""
    _workers.append(worker)
    try:
        yield
    finally:
        _workers.remove(worker)


async def serve_metrics(host: str, port: int, is_ready: Callable[[], bool]) -> None:
    """Serve /metrics, /healthz (alive) and /readyz (connected and reading) until cancelled."""
    listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
    logger.info("metrics and health on http://%s:%d/metrics", host, port)

    async def handle(stream: SocketStream) -> None:
        async with stream:
            try:
                with anyio.fail_after(5):
                    request = await stream.receive(4096)
            except (TimeoutError, anyio.EndOfStream, anyio.BrokenResourceError):
                return
            path = request.split(b" ", 2)[1] if request.count(b" ") >= 2 else b"/"
            status, body, ctype = b"404 Not Found", b"not found\n", b"text/plain"
            if path.startswith(b"/metrics"):
                status, body, ctype = b"200 OK", generate_latest(), CONTENT_TYPE_LATEST.encode()
            elif path.startswith(b"/healthz"):
                status, body = b"200 OK", b"ok\n"
            elif path.startswith(b"/readyz"):
                ready = is_ready()
                status = b"200 OK" if ready else b"503 Service Unavailable"
                body = b"ready\n" if ready else b"not ready\n"
            head = (
                b"HTTP/1.1 "
                + status
                + b"\r\nContent-Type: "
                + ctype
                + b"\r\nContent-Length: "
                + str(len(body)).encode()
                + b"\r\nConnection: close\r\n\r\n"
            )
            try:
                await stream.send(head + body)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                return

    await listener.serve(handle)
