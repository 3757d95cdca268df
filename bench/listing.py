"""A dashboard's listing reads over 100,000 workflows: how long each read takes.

Starts the workflows through `Client.start` (the real start script: meta, history,
task and indexes), SENDERS at a time, on a fresh embedded Valkey (no AOF) with the
default 16 shards and no worker, so every workflow stays PENDING; one in 100 is named
bench_list_Rare, the others bench_list_Common. Then times, each the median of
`--repeat` runs:

- the first page unfiltered (50 rows);
- the 51st page (after following 50 cursors);
- the first page of a status filter (PENDING: the status indexes);
- the first page of a name filter that matches 1% (checked on meta, scan limit 5,000);
- count_matching unfiltered (ZCARD sums) and by that name (a scan of every workflow).

    .venv/bin/python -m bench.listing [--workflows 100000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SENDERS = 200


async def _start_all(client: Any, count: int) -> float:
    """Start `count` workflows, SENDERS at a time; the seconds it took."""
    import loom_redis as loom

    @loom.workflow(name="bench_list_Common")
    class Common(loom.Workflow[dict[str, Any], dict[str, Any]]):
        @loom.step()
        async def run(self, ctx: loom.WorkflowContext[dict[str, Any], dict[str, Any]]) -> None:
            pass

    @loom.workflow(name="bench_list_Rare")
    class Rare(loom.Workflow[dict[str, Any], dict[str, Any]]):
        @loom.step()
        async def run(self, ctx: loom.WorkflowContext[dict[str, Any], dict[str, Any]]) -> None:
            pass

    numbers = iter(range(count))

    async def sender() -> None:
        for n in numbers:
            await client.start(Rare if n % 100 == 0 else Common, {"n": n}, owner=f"o{n % 50}")

    started = time.perf_counter()
    await asyncio.gather(*[sender() for _ in range(SENDERS)])
    return time.perf_counter() - started


async def _timed(read: Callable[[], Awaitable[Any]], repeat: int) -> tuple[float, Any]:
    """The median seconds of `repeat` runs of `read`, and its last result."""
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = await read()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


async def _measure(url: str, count: int, repeat: int) -> None:
    import loom_redis as loom
    from loom_redis.events import Status
    from loom_redis.store import WorkflowFilter

    async with loom.Client.connect(url, namespace="bench") as client:
        store = client.store
        took = await _start_all(client, count)
        print(f"{count} workflows started in {took:.1f} s ({count / took:.0f}/s)")
        info = await store.redis.info("memory")
        print(f"Redis memory: {info['used_memory'] / 2**20:.0f} MiB")

        async def deep_page() -> Any:
            cursor = None
            for _ in range(50):
                cursor = (await store.list_page(WorkflowFilter(), cursor=cursor)).next_cursor
            started = time.perf_counter()
            page = await store.list_page(WorkflowFilter(), cursor=cursor)
            return time.perf_counter() - started, page

        everything = WorkflowFilter()
        pending = WorkflowFilter(statuses=(Status.PENDING,))
        rare = WorkflowFilter(name="bench_list_Rare")
        rows: list[tuple[str, float, str]] = []
        took, page = await _timed(lambda: store.list_page(everything), repeat)
        rows.append(("first page, unfiltered", took, f"{len(page.workflows)} rows"))
        deep = [await deep_page() for _ in range(repeat)]
        took, page = statistics.median(d[0] for d in deep), deep[-1][1]
        rows.append(("page 51, unfiltered", took, f"{len(page.workflows)} rows"))
        took, page = await _timed(lambda: store.list_page(pending), repeat)
        rows.append(("first page, status PENDING", took, f"{len(page.workflows)} rows"))
        took, page = await _timed(lambda: store.list_page(rare), repeat)
        rows.append(
            (
                "first page, name matching 1%",
                took,
                f"{len(page.workflows)} rows, {page.scanned} scanned, complete={page.complete}",
            )
        )
        took, counted = await _timed(lambda: store.count_matching(everything), repeat)
        rows.append(("count_matching, unfiltered", took, f"{counted}"))
        took, counted = await _timed(lambda: store.count_matching(rare), repeat)
        rows.append(("count_matching, name matching 1%", took, f"{counted}"))
    print(f"median of {repeat} runs")
    for what, seconds, detail in rows:
        print(f"  {what:<36} {seconds * 1000:9.1f} ms   {detail}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workflows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    from loom_redis.testing import EmbeddedServer

    with EmbeddedServer() as server:
        asyncio.run(_measure(server.url, args.workflows, args.repeat))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
