"""The worker's HTTP endpoint: prometheus-client's exposition (content negotiation,
gzip), the liveness probe that follows the event loop, the readiness probe."""

from __future__ import annotations

import gzip
import time

import anyio
import anyio.to_thread
import pytest

import loom_redis as loom
from loom_redis import metrics
from loom_redis.testing import free_port, running_worker
from tests.support import http_request

pytestmark = pytest.mark.anyio


async def get(port: int, path: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    return await anyio.to_thread.run_sync(http_request, port, path, headers)


async def test_metrics_are_served_as_prometheus_asks(
    client: loom.Client, redis_url: str, namespace: str
) -> None:
    port = free_port()
    async with running_worker(redis_url, namespace, metrics_port=port):
        status, headers, body = await get(port, "/metrics")
        assert status == 200
        assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
        assert b'loom_build_info{python="' in body

        # What Prometheus sends when it prefers OpenMetrics.
        status, headers, body = await get(
            port, "/metrics", Accept="application/openmetrics-text; version=1.0.0"
        )
        assert status == 200
        assert headers["Content-Type"].startswith("application/openmetrics-text")
        assert body.rstrip().endswith(b"# EOF")

        status, headers, body = await get(port, "/metrics", **{"Accept-Encoding": "gzip"})
        assert headers["Content-Encoding"] == "gzip"
        assert b"loom_worker_concurrency" in gzip.decompress(body)

        assert (await get(port, "/healthz"))[::2] == (200, b"ok\n")
        assert (await get(port, "/readyz"))[::2] == (200, b"ready\n")
        status, _, body = await get(port, "/nothing-here")
        assert status == 404 and b"/metrics" in body


async def test_liveness_fails_while_the_event_loop_is_stalled(
    client: loom.Client, redis_url: str, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(metrics, "LOOP_STALL_SECONDS", 0.5)
    port = free_port()
    async with running_worker(redis_url, namespace, metrics_port=port):
        assert (await get(port, "/healthz"))[0] == 200
        # Block the worker's event loop (what a blocking call in async code does) and
        # probe from another thread meanwhile: the server runs on a thread of its own.
        time.sleep(1.2)  # noqa: ASYNC251  # the stall under test
        status, _, body = http_request(port, "/healthz")
        assert (status, body) == (503, b"event loop stalled\n")
        with anyio.fail_after(10):  # the loop runs again: alive again
            while (await get(port, "/healthz"))[0] != 200:
                await anyio.sleep(0.05)
