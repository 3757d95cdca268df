"""Prometheus metrics of a worker, and the HTTP endpoint serving them with health probes."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Iterator, Sized
from typing import Any

import anyio
from anyio.abc import SocketStream
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics import MetricWrapperBase

logger = logging.getLogger("loom_redis.metrics")


@functools.cache
def labelled(metric: MetricWrapperBase, *values: str) -> Any:
    """The child of `metric` for these label values, looked up once: labels() validates
    and takes a lock on every call, a cost on every task. The values are a bounded set
    (queues, workflow and activity names, outcomes)."""
    return metric.labels(*values)


TASKS = Counter(
    "loom_tasks_total", "Tasks processed by kind and outcome", ["queue", "kind", "outcome"]
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
DEAD_LETTERS = Counter("loom_dead_letters_total", "Tasks moved to the dead-letter stream", ["kind"])
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
TASKS_RECLAIMED = Counter("loom_tasks_reclaimed_total", "Tasks taken over from idle workers")
IN_FLIGHT = Gauge("loom_tasks_in_flight", "Tasks being processed by this worker")
# The in-flight tasks of each worker running in this process: counted when Prometheus
# scrapes, not at every task.
_in_flight: list[Sized] = []
IN_FLIGHT.set_function(lambda: float(sum(len(tasks) for tasks in _in_flight)))


@contextlib.contextmanager
def counting_in_flight(tasks: Sized) -> Iterator[None]:
    """Count `tasks` (a running worker's in-flight tasks) in IN_FLIGHT."""
    _in_flight.append(tasks)
    try:
        yield
    finally:
        _in_flight.remove(tasks)


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
