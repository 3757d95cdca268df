"""A real Prometheus (Debian's 2.42) scrapes a running worker, and the backlog query an
autoscaler uses (KEDA's Prometheus trigger, the backlog alert) returns the real backlog."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import anyio
import anyio.to_thread
import pytest
from prometheus_client import REGISTRY

import loom_redis as loom
from loom_redis.testing import free_port, running_worker
from tests.held_workflows import GATE, HeldWorkflow

pytestmark = pytest.mark.anyio


class Prometheus:
    """A Prometheus server on 127.0.0.1 scraping `target` every 0.5 s."""

    def __init__(self, directory: Path, target: str) -> None:
        binary = shutil.which("prometheus")
        assert binary, "Debian's `prometheus` package is needed (apt-get install prometheus)"
        self.port = free_port()
        config = directory / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 500ms, evaluation_interval: 500ms}\n"
            "scrape_configs:\n"
            f"  - job_name: loom-worker\n    static_configs: [{{targets: ['{target}']}}]\n"
        )
        self.process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=(directory / "prometheus.log").open("wb"),
        )

    def query(self, expression: str) -> list[dict[str, object]]:
        """The instant vector `expression` gives now ([] while Prometheus starts)."""
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode(
            {"query": expression}
        )
        try:
            with urllib.request.urlopen(url, timeout=5) as reply:
                answer = json.load(reply)
        except OSError:
            return []
        assert answer["status"] == "success", answer
        result: list[dict[str, object]] = answer["data"]["result"]
        return result

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


@pytest.fixture
def prometheus_for(tmp_path: Path) -> Iterator[list[Prometheus]]:
    started: list[Prometheus] = []
    yield started
    for server in started:
        server.stop()


async def test_prometheus_scrapes_the_worker_and_sees_the_real_backlog(
    client: loom.Client,
    redis_url: str,
    namespace: str,
    tmp_path: Path,
    prometheus_for: list[Prometheus],
) -> None:
    port = free_port()
    prometheus = Prometheus(tmp_path, f"127.0.0.1:{port}")
    prometheus_for.append(prometheus)
    # The expression the chart's KEDA Prometheus trigger and backlog alert use: every
    # worker of the queue reports the same figure.
    backlog = f'sum(max by (queue) (loom_queue_backlog{{loom_namespace="{namespace}"}}))'

    async def until(expression: str, value: float) -> None:
        with anyio.fail_after(30):
            while True:
                result = await anyio.to_thread.run_sync(prometheus.query, expression)
                if result and float(result[0]["value"][1]) == value:  # type: ignore[index]
                    return
                await anyio.sleep(0.2)

    GATE.reset()
    # Other tests of this process may have closed such workflows: the count goes on.
    closed = {"workflow": "held_Held", "status": "COMPLETED"}
    closed_before = REGISTRY.get_sample_value("loom_workflow_duration_seconds_count", closed) or 0
    handles = [await client.start(HeldWorkflow, {}) for _ in range(3)]
    async with running_worker(
        redis_url,
        namespace,
        concurrency=2,
        eager_seconds=0,
        metrics_port=port,
        backlog_interval_seconds=0.2,
    ):
        # Two activities run, the third workflow's task waits: a backlog of 3.
        await until(backlog, 3)
        await until('up{job="loom-worker"}', 1)
        await until(f'sum(loom_workers_live{{loom_namespace="{namespace}"}})', 1)
        GATE.open()
        for handle in handles:
            assert await handle.result(timeout=10) == {"said": "released"}
        await until(backlog, 0)
        await until(
            'sum(loom_workflow_duration_seconds_count{workflow="held_Held",status="COMPLETED"})',
            closed_before + 3,
        )
