"""A bounded soak of retention: workflows started at a steady rate, closed, and deleted by
the workers' sweep a few seconds later keep Redis's memory flat; without the sweep it
grows with every workflow (README, "Retention", gives the figures)."""

from __future__ import annotations

import statistics
import time

import anyio
import pytest

import loom_redis as loom
from loom_redis.testing import EmbeddedServer, running_worker
from loom_redis.worker import _housekeeping

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

RATE = 20  # workflows started per second
SECONDS = 75
RETENTION = 3  # seconds
SWEEP = 1.0  # seconds between a worker's sweep rounds (on average)
SAMPLE = 3  # seconds between two samples of used_memory
# The last third's mean may exceed the second third's by this much: without the sweep
# it exceeded it by 48% (each third adds 500 workflows of about 5 KB).
GROWTH_BOUND = 1.15


@loom.activity(name="soak_stamp")
async def stamp(n: int) -> str:
    return f"order {n} stamped"


@loom.workflow(name="RetentionSoak")
class Order(loom.Workflow[dict, dict]):
    @loom.step()
    async def run(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        await ctx.state.set("stamp", await ctx.activity(stamp, ctx.input["n"]))


async def test_memory_stays_flat_under_a_steady_stream_of_workflows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_housekeeping, "SWEEP_SECONDS", SWEEP)
    samples: list[int] = []
    with EmbeddedServer() as server:
        async with loom.Client.connect(server.url, namespace="soak") as client:
            await client.store.set_retention(RETENTION * 1000)
            async with running_worker(server.url, "soak"), anyio.create_task_group() as group:

                async def sample() -> None:
                    while True:
                        info = await client.store.redis.info("memory")
                        samples.append(int(info["used_memory"]))
                        await anyio.sleep(SAMPLE)

                group.start_soon(sample)
                began = time.monotonic()
                for n in range(RATE * SECONDS):
                    await client.start(Order, {"n": n})
                    await anyio.sleep(max(0.0, began + (n + 1) / RATE - time.monotonic()))
                group.cancel_scope.cancel()
            left = len(await client.list_workflows(limit=RATE * SECONDS))
    third = len(samples) // 3
    second = statistics.mean(samples[third : 2 * third])
    last = statistics.mean(samples[2 * third :])
    print(
        f"\n{RATE}/s for {SECONDS} s, retention {RETENTION} s, sweep every {SWEEP} s: "
        f"used_memory {min(samples)}-{max(samples)} B over {len(samples)} samples, "
        f"second third's mean {second:.0f} B, last third's {last:.0f} B "
        f"({last / second:.3f}x), {left} workflows left"
    )
    assert last <= second * GROWTH_BOUND, samples
