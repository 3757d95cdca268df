"""Prometheus metrics of a worker, and the HTTP endpoint serving them with health probes."""

from __future__ import annotations

import contextlib
import functools
import logging
import platform
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from importlib.metadata import version as _version
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any, Protocol
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

import anyio
import anyio.to_thread
from prometheus_client import (
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
    make_wsgi_app,
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
TASKS_LOST = Counter(
    "loom_tasks_lost_total",
    "Tasks this worker was running that another worker took over meanwhile (this one was "
    "cut off from Redis or stalled past the lease); whichever commits second is refused",
)
NAMESPACE_DATA_LOST = Counter(
    "loom_namespace_data_lost_total",
    "Times this worker found the task streams' consumer groups gone (the Redis server lost "
    "the namespace's data) and created them again",
)

WORKFLOW_SECONDS = Histogram(
    "loom_workflow_duration_seconds",
    "Workflows from their start to their close, by name and final status",
    ["workflow", "status"],
    buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 86400, 7 * 86400),
)
SCHEDULE_TO_START = Histogram(
    "loom_schedule_to_start_seconds",
    "Tasks from their queueing to an executor starting them (first deliveries: a task "
    "taken over from a dead worker counts in loom_tasks_reclaimed_total instead)",
    ["queue", "kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)

# The namespace's backlog, read from Redis by every worker a few times a minute (not at
# scrape time: a scrape costs Redis nothing). Every worker of a queue reports the same
# figures: aggregate with max, not sum.
QUEUE_BACKLOG = Gauge(
    "loom_queue_backlog",
    "Tasks of the queue not finished (waiting or being run), summed over its shards: "
    "the autoscaling signal",
    ["loom_namespace", "queue"],
)
QUEUE_LAG = Gauge(
    "loom_queue_lag",
    "Tasks of the queue no worker has taken yet (the consumer groups' lag, summed)",
    ["loom_namespace", "queue"],
)
QUEUE_PENDING = Gauge(
    "loom_queue_pending",
    "Tasks of the queue taken by a worker and not yet finished",
    ["loom_namespace", "queue"],
)
QUEUE_OLDEST_PENDING = Gauge(
    "loom_queue_oldest_pending_age_seconds",
    "Age of the oldest task of the queue taken and not yet finished (0 if none)",
    ["loom_namespace", "queue"],
)
WORKERS_LIVE = Gauge(
    "loom_workers_live",
    "Workers of the queue whose heartbeat is fresh",
    ["loom_namespace", "queue"],
)
TIMERS_DUE = Gauge(
    "loom_timers_due",
    "Timers, retry back-offs and activity leases due and not yet fired",
    ["loom_namespace"],
)
TIMERS_OVERDUE = Gauge(
    "loom_timers_overdue_seconds",
    "How late the most overdue timer is (0 if none is due)",
    ["loom_namespace"],
)
DEAD_LETTER_ENTRIES = Gauge(
    "loom_dead_letter_entries",
    "Tasks in the namespace's dead-letter streams, waiting to be put back or dropped",
    ["loom_namespace"],
)
BUILD = Info("loom_build", "The loom-redis version and Python of this worker")
BUILD.info({"version": _version("loom-redis"), "python": platform.python_version()})


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
    """Serve /metrics, /healthz (alive) and /readyz (connected and reading) until cancelled.

    The server is prometheus_client's own exposition (OpenMetrics when asked for, gzip)
    on a thread of its own, as its `start_http_server` runs it, so that a scrape costs
    the worker's event loop nothing. That loop ticks a clock the liveness probe reads:
    a loop stalled for LOOP_STALL_SECONDS (workflow or activity code blocking it) fails
    /healthz, and Kubernetes restarts the pod.
    """
    ticks = _LoopTicks()
    server = make_server(
        host, port, _probes_app(is_ready, ticks.alive), _ThreadingServer.of(host), _QuietHandler
    )
    threading.Thread(target=server.serve_forever, name="loom-metrics", daemon=True).start()
    logger.info("metrics and health on http://%s:%d/metrics", host, port)
    try:
        while True:
            ticks.tick()
            await anyio.sleep(LOOP_STALL_SECONDS / 10)
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(server.shutdown)
        server.server_close()


# A worker whose event loop has not run for this long is stuck: not alive.
LOOP_STALL_SECONDS = 30.0


class _LoopTicks:
    def __init__(self) -> None:
        self._last = time.monotonic()

    def tick(self) -> None:
        self._last = time.monotonic()

    def alive(self) -> bool:
        return time.monotonic() - self._last < LOOP_STALL_SECONDS


def _probes_app(is_ready: Callable[[], bool], is_alive: Callable[[], bool]) -> WSGIApplication:
    exposition: WSGIApplication = make_wsgi_app()

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path == "/metrics":
            return exposition(environ, start_response)
        if path == "/healthz":
            alive = is_alive()
            return _plain(start_response, alive, b"ok\n" if alive else b"event loop stalled\n")
        if path == "/readyz":
            ready = is_ready()
            return _plain(start_response, ready, b"ready\n" if ready else b"not ready\n")
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found: try /metrics, /healthz or /readyz\n"]

    return app


def _plain(start_response: StartResponse, ok: bool, body: bytes) -> list[bytes]:
    status = "200 OK" if ok else "503 Service Unavailable"
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    """A request per thread, so that a slow scraper holds up no probe."""

    daemon_threads = True

    @classmethod
    def of(cls, host: str) -> type[_ThreadingServer]:
        if ":" not in host:
            return cls

        class _IPv6Server(cls):  # type: ignore[valid-type,misc]  # a class per family
            address_family = socket.AF_INET6

        return _IPv6Server


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # the stdlib's name
        """Scrapes and probes every few seconds are not news."""
