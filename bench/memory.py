"""Redis memory per workflow, and the speed of steps, for each `stream-node-max-bytes`.

A stream's first listpack node is allocated at `stream-node-max-bytes` (4 KB by
default), so a short history costs that much whatever it holds. For each setting
(4096, the default, then 2048, 1024, 512, 256; `stream-node-max-entries` left at its
default, printed), on fresh embedded servers with one `loom worker` process of this
checkout running bench/memory_workflows.py:

1. Memory (no AOF; a namespace of one shard, so that its index zsets hold more than
   128 members, as each shard's do at scale, and are skiplists, not listpacks): for
   each kind of workflow, 150 of them to warm the indexes up, then N measured ones.
   Reported: the median `MEMORY USAGE ... SAMPLES 0` of the N histories and metas, and
   the `used_memory` delta per workflow (INFO memory before and after the N, less the
   client buffers), which adds the keyspace and the indexes. The close notices are
   deleted before each reading (they expire a minute after the close anyway).
2. The cost of the layout of loom's own entries: 10 of the measured 101-event histories
   copied entry by entry, 10 times over, into new streams with the fields as they are,
   with one-letter field names, with the event type as a one-byte code, and packed into
   one field.
3. Speed (AOF everysec, 16 shards): 20 warm-up workflows, then `--count` workflows of 5
   sequential activities started one after another; the worker's CPU per step (from
   /proc), Redis's (INFO cpu, user+sys) and steps/s. `--rounds` rounds, the settings
   alternating within each round.

    .venv/bin/python -m bench.memory [--workflows 500] [--count 300] [--rounds 3] \
        [--settings 4096,512] [--binary /usr/bin/redis-server]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = (4096, 2048, 1024, 512, 256)
WORKER = ("bench.memory_workflows", "--poll-interval", "0.2")
WARM = 150  # > zset-max-listpack-entries (128): the indexes are skiplists
SPEED_WARM = 20
SPEED_ACTIVITIES = 5
PATIENCE = 120
# A queue no worker serves: its workflows stay PENDING with their one event.
IDLE_QUEUE = "idle"
SETTLE = 0.5
AS_WRITTEN = "as written (type, seq, t, d)"
STREAMS = 1000
LAYOUT_SAMPLE = 10
LAYOUT_COPIES = 10


@dataclass(frozen=True)
class Kind:
    label: str
    input: dict[str, Any]
    queue: str = "default"


KINDS = (
    Kind("started, not run", {"activities": 0}, IDLE_QUEUE),
    Kind("1 activity, closed", {"activities": 1}),
    Kind("5 activities, closed", {"activities": 5}),
    Kind("32 activities, closed", {"activities": 32}),
    Kind("6 activities, open", {"activities": 6, "wait": True}),
)
OPEN = KINDS[-1]


@dataclass
class Footprint:
    events: int
    history: float  # median MEMORY USAGE, bytes
    meta: float
    used: float  # used_memory delta per workflow


def _server(setting: int, binary: str | None, *, appendonly: bool) -> Any:
    from loom_redis.testing import EmbeddedServer

    return EmbeddedServer(
        appendonly=appendonly,
        binary=binary,
        options=("--stream-node-max-bytes", str(setting)),
    )


async def _used_memory(redis: Any) -> int:
    # The server's cron (10 times a second) shrinks the keyspace's tables after the close
    # notices' deletion: read after it has run.
    await asyncio.sleep(SETTLE)
    info = await redis.info("memory")
    return int(info["used_memory"]) - int(info.get("mem_clients_normal", 0))


async def _settled(client: Any, store: Any, kind: Kind, ids: Sequence[str]) -> None:
    """Until every workflow of `ids` is where `kind` leaves it: closed, waiting for its
    signal, or (on the idle queue) started."""
    if kind.queue == IDLE_QUEUE:
        return
    if not kind.input.get("wait"):
        for workflow_id in ids:
            await client.get_handle(workflow_id).result(timeout=PATIENCE)
        return
    deadline = time.monotonic() + PATIENCE
    for workflow_id in ids:
        while not await store.redis.hexists(store.keys.meta(workflow_id), "signals"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"workflow {workflow_id} never waited for its signal")
            await asyncio.sleep(0.05)


async def _batch(client: Any, kind: Kind, count: int) -> list[str]:
    from bench.memory_workflows import Chain

    handles = [await client.start(Chain, kind.input, queue=kind.queue) for _ in range(count)]
    return [handle.workflow_id for handle in handles]


async def _size(redis: Any, key: str) -> int:
    """MEMORY USAGE of a key that must exist, every element counted."""
    size = await redis.memory_usage(key, samples=0)
    if size is None:
        raise LookupError(f"{key} is missing")
    return int(size)


async def _forget_close_notices(store: Any, ids: Sequence[str]) -> None:
    if ids:
        await store.redis.unlink(*[store.keys.close_notice(i) for i in ids])


async def _footprints(url: str, count: int) -> tuple[dict[str, Footprint], list[str]]:
    """Each kind's footprint, and the ids of the measured 101-event workflows."""
    import loom_redis as loom
    from bench.checkouts import worker_of
    from loom_redis.store import Store

    store = await Store.open(url, "default", 1)
    found: dict[str, Footprint] = {}
    long_ids: list[str] = []
    try:
        async with worker_of(ROOT, url, *WORKER), loom.Client.connect(url) as client:
            for kind in KINDS:
                warm = await _batch(client, kind, WARM)
                await _settled(client, store, kind, warm)
                await _forget_close_notices(store, warm)
                before = await _used_memory(store.redis)
                ids = await _batch(client, kind, count)
                await _settled(client, store, kind, ids)
                await _forget_close_notices(store, ids)
                used = (await _used_memory(store.redis) - before) / count
                histories = [await _size(store.redis, store.keys.history(i)) for i in ids]
                metas = [await _size(store.redis, store.keys.meta(i)) for i in ids]
                events = await store.redis.xlen(store.keys.history(ids[0]))
                found[kind.label] = Footprint(
                    events, statistics.median(histories), statistics.median(metas), used
                )
                if events > 100:
                    long_ids = ids
    finally:
        await store.close()
    return found, long_ids


def _type_code(event_type: bytes) -> bytes:
    from loom_redis.events import EventType

    return str(list(EventType).index(EventType(event_type.decode()))).encode()


def _layouts(entry: dict[bytes, bytes]) -> dict[str, list[bytes]]:
    """One history entry's field-value list in each layout compared."""
    import msgpack

    kind, seq, at, data = (entry[f] for f in (b"type", b"seq", b"t", b"d"))
    return {
        AS_WRITTEN: [b"type", kind, b"seq", seq, b"t", at, b"d", data],
        "one-letter names (y, s, t, d)": [b"y", kind, b"s", seq, b"t", at, b"d", data],
        "type as a code (type=3)": [b"type", _type_code(kind), b"seq", seq, b"t", at, b"d", data],
        "packed in one field (msgpack)": [
            b"e",
            msgpack.packb([_type_code(kind), int(seq), int(at), data], use_bin_type=True),
        ],
    }


async def _layout_costs(url: str, ids: Sequence[str]) -> dict[str, float]:
    """Bytes per event of each layout: MEMORY USAGE of a stream of LAYOUT_COPIES copies of
    each of LAYOUT_SAMPLE histories of `ids` (about 1,000 events, so that the nodes a
    stream allocates whole average out), divided by its length; the median."""
    from loom_redis.store import Store

    store = await Store.open(url, "default", 1)
    sizes: dict[str, list[float]] = {}
    try:
        for n, workflow_id in enumerate(ids[:LAYOUT_SAMPLE]):
            entries: Any = await store.redis.xrange(store.keys.history(workflow_id))
            for layout in _layouts(entries[0][1]):
                copy = f"bench:layout:{n}"
                async with store.redis.pipeline(transaction=False) as pipe:
                    for shift in range(LAYOUT_COPIES):
                        for entry_id, fields in entries:
                            ms, seq = entry_id.decode().split("-")
                            moved = f"{int(ms) + shift * 10**7}-{seq}"
                            pipe.execute_command("XADD", copy, moved, *_layouts(fields)[layout])
                    await pipe.execute()
                size = await _size(store.redis, copy)
                sizes.setdefault(layout, []).append(size / (len(entries) * LAYOUT_COPIES))
                await store.redis.unlink(copy)
    finally:
        await store.close()
    return {layout: statistics.median(s) for layout, s in sizes.items()}


async def _redis_cpu(redis: Any) -> float:
    info = await redis.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


async def _speed(setting: int, count: int, binary: str | None) -> tuple[float, float, float]:
    """(worker CPU, Redis CPU) per step in us, and steps/s, of one run on a fresh server."""
    import redis.asyncio as aioredis

    import loom_redis as loom
    from bench.checkouts import worker_of
    from bench.cpu_per_step import cpu_seconds
    from bench.memory_workflows import Chain

    chain = {"activities": SPEED_ACTIVITIES}
    with _server(setting, binary, appendonly=True) as server:
        redis = aioredis.Redis.from_url(server.url)
        async with (
            worker_of(ROOT, server.url, *WORKER) as worker,
            loom.Client.connect(server.url) as client,
        ):
            for handle in [await client.start(Chain, chain) for _ in range(SPEED_WARM)]:
                await handle.result(timeout=PATIENCE)
            worker_cpu, redis_cpu = cpu_seconds(worker.pid), await _redis_cpu(redis)
            started = time.perf_counter()
            handles = [await client.start(Chain, chain) for _ in range(count)]
            for handle in handles:
                await handle.result(timeout=PATIENCE)
            wall = time.perf_counter() - started
            worker_cpu = cpu_seconds(worker.pid) - worker_cpu
            redis_cpu = await _redis_cpu(redis) - redis_cpu
        await redis.aclose()
    steps = count * SPEED_ACTIVITIES
    return worker_cpu / steps * 1e6, redis_cpu / steps * 1e6, steps / wall


async def _server_facts(binary: str | None) -> str:
    import redis.asyncio as aioredis

    with _server(SETTINGS[0], binary, appendonly=False) as server:
        redis = aioredis.Redis.from_url(server.url)
        info = await redis.info("server")
        allocator = (await redis.info("memory"))["mem_allocator"]
        config = await redis.config_get("stream-node-max-*")
        await redis.aclose()
    version = info.get("valkey_version") or info["redis_version"]
    entries = config["stream-node-max-entries"]
    name = info.get("server_name", "redis")
    return f"{name} {version} ({allocator}), stream-node-max-entries {entries}"


async def _stream_cpu(url: str, workflow_id: str) -> tuple[float, float]:
    """Redis's CPU (us) per XADD and per whole-history XRANGE: the first 20 entries of
    the history of `workflow_id` written to STREAMS new streams, then each read back."""
    from loom_redis.store import Store

    store = await Store.open(url, "default", 1)
    try:
        entries: Any = await store.redis.xrange(store.keys.history(workflow_id), count=20)
        names = [f"bench:cpu:{n}" for n in range(STREAMS)]
        before = await _redis_cpu(store.redis)
        for chunk in range(0, STREAMS, 50):
            async with store.redis.pipeline(transaction=False) as pipe:
                for name in names[chunk : chunk + 50]:
                    for _, fields in entries:
                        pipe.execute_command("XADD", name, "*", *_layouts(fields)[AS_WRITTEN])
                await pipe.execute()
        written = await _redis_cpu(store.redis)
        for chunk in range(0, STREAMS, 50):
            async with store.redis.pipeline(transaction=False) as pipe:
                for name in names[chunk : chunk + 50]:
                    pipe.xrange(name)
                await pipe.execute()
        read = await _redis_cpu(store.redis)
        await store.redis.unlink(*names)
    finally:
        await store.close()
    return (written - before) / (STREAMS * len(entries)) * 1e6, (read - written) / STREAMS * 1e6


@dataclass
class Memory:
    footprints: dict[str, Footprint]
    layouts: dict[str, float]  # bytes per event
    xadd: float  # Redis CPU, us
    xrange: float


async def _memory_of(setting: int, count: int, binary: str | None) -> Memory:
    with _server(setting, binary, appendonly=False) as server:
        footprints, long_ids = await _footprints(server.url, count)
        layouts = await _layout_costs(server.url, long_ids)
        xadd, xrange = await _stream_cpu(server.url, long_ids[0])
    return Memory(footprints, layouts, xadd, xrange)


def _row(label: str, cells: Sequence[str]) -> None:
    print(f"  {label:<38}" + "".join(f"{cell:>16}" for cell in cells))


def _print_memory(memory: dict[int, Memory]) -> None:
    measured = list(memory.values())
    print("\nmemory per workflow, bytes: history / meta / used_memory delta")
    _row("stream-node-max-bytes", [str(s) for s in memory])
    for kind in KINDS:
        found = [m.footprints[kind.label] for m in measured]
        cells = [f"{f.history:.0f}/{f.meta:.0f}/{f.used:.0f}" for f in found]
        _row(f"{kind.label} ({found[0].events} events)", cells)
    marginal = []
    for m in measured:
        a, b = (m.footprints[kind.label] for kind in KINDS[2:4])
        marginal.append(f"{(b.history - a.history) / (b.events - a.events):.1f}")
    _row("history bytes per event, 20 -> 101", marginal)
    events = measured[0].footprints[OPEN.label].events
    print(f"\n1,000,000 open workflows of {events} events, used_memory delta x 1e6")
    _row("GiB", [f"{m.footprints[OPEN.label].used * 1e6 / 2**30:.2f}" for m in measured])
    print("\nhistory bytes per event, 101-event histories copied x10 in each layout")
    for layout in measured[0].layouts:
        _row(layout, [f"{m.layouts[layout]:.1f}" for m in measured])
    print("\nRedis CPU, us: 1,000 streams of 20 history entries written, then read")
    _row("per XADD", [f"{m.xadd:.2f}" for m in measured])
    _row("per XRANGE of 20 entries", [f"{m.xrange:.1f}" for m in measured])


def _print_speed(speed: dict[int, list[tuple[float, float, float]]], count: int) -> None:
    runs = list(speed.values())
    print(
        f"\nspeed: {len(runs[0])} rounds of {count} x {SPEED_ACTIVITIES} activities, "
        "AOF everysec (medians; every run below)"
    )
    _row("stream-node-max-bytes", [str(s) for s in speed])
    figures = ("worker CPU per step, us", "Redis CPU per step, us", "steps/s")
    for i, figure in enumerate(figures):
        _row(figure, [f"{statistics.median(r[i] for r in rs):.0f}" for rs in runs])
    ratios = [statistics.median(r[1] / r[0] for r in rs) for rs in runs]
    _row("Redis CPU / worker CPU", [f"{ratio:.2f}" for ratio in ratios])
    for setting, measured in speed.items():
        print(
            f"  {setting}: worker {', '.join(f'{r[0]:.0f}' for r in measured)}; "
            f"Redis {', '.join(f'{r[1]:.0f}' for r in measured)}; "
            f"steps/s {', '.join(f'{r[2]:.0f}' for r in measured)}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workflows", type=int, default=500, help="measured per kind")
    parser.add_argument("--count", type=int, default=300, help="workflows per speed run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--settings", default=",".join(map(str, SETTINGS)), help="stream-node-max-bytes values"
    )
    parser.add_argument("--binary", help="a server binary (default: the embedded Valkey)")
    args = parser.parse_args()
    settings = [int(s) for s in args.settings.split(",")]
    started = time.perf_counter()
    print(asyncio.run(_server_facts(args.binary)))
    memory = {s: asyncio.run(_memory_of(s, args.workflows, args.binary)) for s in settings}
    _print_memory(memory)
    speed: dict[int, list[tuple[float, float, float]]] = {s: [] for s in settings}
    for _ in range(args.rounds):
        for setting in settings:
            speed[setting].append(asyncio.run(_speed(setting, args.count, args.binary)))
    if args.rounds:
        _print_speed(speed, args.count)
    print(f"\n({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
