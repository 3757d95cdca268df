"""A poison task, one that kills every worker that runs it, ends in the dead-letter
stream after --max-deliveries, with its reason, while other work goes on.

The poison runs on its own queue: a crash also counts a delivery against every other
task in flight on the dying worker, so work that must not share its fate is kept on
workers of another queue (here an in-process worker of the default queue)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import anyio
import anyio.to_thread
import pytest

import loom_redis as loom
from loom_redis.testing import running_worker
from tests.poison_workflows import Bystander, Poisoned

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]
MAX_DELIVERIES = 2


def _worker(redis_url: str, namespace: str) -> subprocess.Popen[bytes]:
    """A worker of the "risky" queue only."""
    options = {
        "--url": redis_url,
        "--namespace": namespace,
        "--queue": "risky",
        "--lease": "0.5",
        "--poll-interval": "0.1",
        "--max-deliveries": str(MAX_DELIVERIES),
    }
    command = [sys.executable, "-m", "loom_redis", "worker", "tests.poison_workflows"]
    for option, value in options.items():
        command += [option, value]
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def test_poison_task_is_dead_lettered_and_other_work_goes_on(
    client: loom.Client, redis_url: str, namespace: str
) -> None:
    poisoned = await Poisoned.start({}, queue="risky")
    bystanders = []
    deaths = 0
    worker = _worker(redis_url, namespace)
    try:
        async with running_worker(redis_url, namespace):
            # A supervisor (Kubernetes, here the test) restarts each worker the task
            # kills; meanwhile other workflows start and finish.
            with anyio.fail_after(60):
                while not await client.dead_letters():
                    if worker.poll() is not None:
                        assert worker.returncode == 17
                        deaths += 1
                        worker = _worker(redis_url, namespace)
                    bystanders.append(await Bystander.start({"value": len(bystanders)}))
                    await bystanders[-1].result()
    finally:
        worker.terminate()
        await anyio.to_thread.run_sync(worker.wait, 20)
    assert [await b.result() for b in bystanders] == [
        {"value": n * 10} for n in range(len(bystanders))
    ]
    # The workflow task's first delivery ran the activity at once and died; the task
    # taken over queued it, and each of its deliveries killed one worker, then no more.
    assert deaths == 1 + MAX_DELIVERIES
    [dead] = await client.dead_letters()
    assert dead["kind"] == "activity" and dead["workflow_id"] == poisoned.workflow_id
    assert f"delivered {MAX_DELIVERIES + 1} times" in str(dead["reason"])
    assert await poisoned.status() == "RUNNING"  # parked, not lost: `loom dead retry` it
    assert worker.returncode == 0  # the last worker survived and drained cleanly
