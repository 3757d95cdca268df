"""Chaos harness: prove loom-redis's guarantees under SIGKILLed workers and a SIGKILLed Redis.

    .venv/bin/python -m bench.chaos --workflows 1000 --activities 5 --workers 4 \\
        --kill-every 2 --appendfsync always

It starts its own Valkey with AOF in a temp dir on a free port, M worker subprocesses
(`python -m loom_redis worker bench.chaos_workflows`) with a short lease, and N workflows
of K sequential activities, a durable timer and a signal this harness sends. While they
run it SIGKILLs a random worker every T seconds (and starts a replacement), and once,
mid-run, SIGKILLs the Redis server and restarts it on the same port and dir from its
AOF. Producers retry starts and signals through the outage; workers must reconnect by
themselves.

Afterwards it checks, from the histories and from the side log every activity execution
appends to: every workflow COMPLETED with the right result; each command seq appears
once; ACTIVITY_COMPLETED once per seq; no state event duplicated; executions >=
completions (duplicate executions are counted: activities run at least once); nothing
left in task streams, their PELs, the timer zsets or the dead-letter streams. It prints
one table and exits non-zero if anything was lost or duplicated.

Max takeover delay: right after each SIGKILL the harness reads the tasks pending on the
dead worker's consumers in every task stream's PEL (nothing else can touch them before
the lease ends), then polls every 0.1 s until each has been acknowledged, which only a
transition that consumed it does (a commit, an activity result, a dead letter). A task
whose new holder is killed in turn counts, for the first kill, until that second kill
(which then accounts for the rest). The delay of a kill is the time to the last of its
tasks: the lease, the claim, the re-execution and any overlapping Redis outage, to
within 0.1 s. The figure is the largest over all kills.

Kill to resume: how long after each SIGKILL every task the dead worker held is running
again elsewhere. A task pending on its consumers resumes when another worker claims it
(or it is acknowledged), seen by the same polling; an activity it was running (begun in
the side log and never ended, a queued one or one run at once under a lease) resumes
when another process begins it. The figures are the largest and the median over the
kills that held any.

Duplicate executions are activities that ran to their end more than once ("from live
workers": ones no kill and no Redis outage explains). Interrupted executions began
and never ended (their worker was killed).

--appendfsync everysec: a SIGKILL of the server loses nothing that Redis had written to
the AOF file (the kernel keeps it), so this harness cannot show the difference; what
everysec gives up is up to about one second of acknowledged writes when the machine
itself stops (power loss, kernel panic) before the fsync. A workflow start, signal,
commit or activity result acknowledged in that second can vanish: a start its producer
saw succeed is lost, or a workflow is back at an earlier point of its history and its
workers run what followed again (activities a second time; the history stays a
consistent prefix, and the commit fence makes workers' cached instances reload).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

import anyio
import anyio.to_thread
from redis.exceptions import RedisError

import loom_redis as loom
from bench.chaos_workflows import (
    LOG_ENV,
    SIGNAL,
    WAIT_STEP,
    ChaosWorkflow,
    expected_result,
    signal_payload,
)
from loom_redis.codec import decode
from loom_redis.events import COMMAND_TYPES, Event, EventType
from loom_redis.store import Store
from loom_redis.store.keys import WORKER_GROUP
from loom_redis.store.wire import text
from loom_redis.testing import EmbeddedServer

ROOT = Path(__file__).resolve().parent.parent
NAMESPACE = "chaos"
QUEUE = "default"
T = TypeVar("T")


@dataclass
class ChaosConfig:
    workflows: int = 1000
    activities: int = 5
    workers: int = 4
    kill_every: float = 2.0
    appendfsync: str = "always"
    redis_restarts: int = 1
    lease: float = 2.0
    concurrency: int = 16
    max_deliveries: int = 5
    activity_seconds: float = 0.5
    sleep_seconds: float = 1.0
    # Workflows started per second; 0 starts them as fast as the server answers.
    start_rate: float = 0.0
    # Longest wait for every workflow to end, seconds.
    timeout: float = 1200.0
    seed: int | None = None
    keep: bool = False
    verbose: bool = True


@dataclass
class Kill:
    """One SIGKILL of a worker and the tasks (stream, id) it held in task streams' PELs.

    A task is resolved when it is acknowledged, or when the worker that took it over is
    killed in turn while holding it (that later kill accounts for the rest of its wait).
    """

    pid: int
    at: float
    held: int = 0
    in_flight: set[tuple[str, str]] = field(default_factory=set)
    resolved_at: float = 0.0
    # Of `in_flight`: those still pending on the dead worker's consumers, and when the
    # last of the others was claimed by another worker (or acknowledged).
    unclaimed: set[tuple[str, str]] = field(default_factory=set)
    claimed_at: float = 0.0

    def resolve(self, tasks: set[tuple[str, str]], when: float) -> None:
        if tasks & self.in_flight:
            self.in_flight -= tasks
            self.resolved_at = max(self.resolved_at, when)

    def claimed(self, tasks: set[tuple[str, str]], when: float) -> None:
        if tasks & self.unclaimed:
            self.unclaimed -= tasks
            self.claimed_at = max(self.claimed_at, when)

    @property
    def delay(self) -> float | None:
        """Seconds from the SIGKILL until every task it held was resolved."""
        if self.in_flight or not self.held:
            return None
        return self.resolved_at - self.at

    def resume_delay(self, side: list[tuple[float, str, str, int, int]]) -> float | None:
        """Seconds from the SIGKILL until every task it held ran again elsewhere (None if
        it held none, or one never did)."""
        # The last line of each activity before the kill: it was interrupted if that is
        # a begin of this worker (an attempt cancelled by its worker leaves a begin
        # without an end, followed by another begin; an activity may run on two workers).
        last: dict[tuple[str, int], tuple[str, int]] = {}
        for at, kind, wid, index, pid in side:
            if at <= self.at:
                last[(wid, index)] = (kind, pid)
        interrupted = {key for key, line in last.items() if line == ("begin", self.pid)}
        if not (interrupted or self.held) or self.unclaimed:
            return None
        resumed = self.claimed_at - self.at if self.held else 0.0
        for key in interrupted:
            again = [at for at, kind, wid, index, pid in side
                     if kind == "begin" and (wid, index) == key and at > self.at]  # fmt: skip
            if not again:
                return None
            resumed = max(resumed, min(again) - self.at)
        return resumed


@dataclass
class ChaosReport:
    config: ChaosConfig
    workflows: int = 0
    activities: int = 0
    kills: int = 0
    redis_restarts: int = 0
    redis_downtime: float = 0.0
    lost: int = 0
    duplicated_transitions: int = 0
    executions: int = 0
    duplicate_executions: int = 0
    # Duplicate executions whose first executor was alive and Redis up all along: the
    # task was taken from a live worker.
    duplicates_from_live: int = 0
    interrupted_executions: int = 0
    duplicate_signals: int = 0
    start_retries: int = 0
    signal_retries: int = 0
    kills_with_tasks: int = 0
    max_takeover_delay: float | None = None
    # Kill to resume: the largest and the median over kills that held tasks.
    resume_delays: list[float] = field(default_factory=list)
    unexpected_worker_exits: int = 0
    pending_left: int = 0
    dead_letters: int = 0
    elapsed: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.duplicated_transitions == 0 and not self.problems

    def rows(self) -> list[tuple[str, str]]:
        delay = "-" if self.max_takeover_delay is None else f"{self.max_takeover_delay:.2f} s"
        return [
            ("workflows", str(self.workflows)),
            ("activities (completed)", str(self.activities)),
            ("worker kills (SIGKILL)", f"{self.kills} ({self.kills_with_tasks} holding tasks)"),
            (
                "Redis restarts (SIGKILL)",
                f"{self.redis_restarts} ({self.redis_downtime:.1f} s down)",
            ),
            ("lost", str(self.lost)),
            ("duplicated transitions", str(self.duplicated_transitions)),
            ("activity executions", str(self.executions)),
            (
                "duplicate executions",
                f"{self.duplicate_executions} ({self.duplicates_from_live} from live workers)",
            ),
            ("interrupted executions", str(self.interrupted_executions)),
            ("duplicate signals", str(self.duplicate_signals)),
            ("start/signal retries", f"{self.start_retries}/{self.signal_retries}"),
            ("left pending or dead", str(self.pending_left + self.dead_letters)),
            ("unexpected worker exits", str(self.unexpected_worker_exits)),
            ("max takeover delay", delay),
            ("kill to resume (max / median)", self.resume_figures()),
            ("elapsed", f"{self.elapsed:.1f} s"),
        ]

    def resume_figures(self) -> str:
        if not self.resume_delays:
            return "-"
        ordered = sorted(self.resume_delays)
        return f"{ordered[-1]:.2f} s / {ordered[len(ordered) // 2]:.2f} s"

    def table(self) -> str:
        c = self.config
        title = (
            f"chaos: N={c.workflows} K={c.activities} M={c.workers} T={c.kill_every:g}s "
            f"lease={c.lease:g}s appendfsync={c.appendfsync}"
        )
        rows = self.rows()
        width = max(len(name) for name, _ in rows)
        value_width = max(len(value) for _, value in rows)
        rule = f"+-{'-' * width}-+-{'-' * value_width}-+"
        lines = [title, rule]
        lines += [f"| {name:<{width}} | {value:>{value_width}} |" for name, value in rows]
        lines.append(rule)
        lines.append("result: " + ("OK" if self.ok else "FAILED"))
        # Problems of the whole run first, then those of single workflows.
        ordered = sorted(self.problems, key=lambda p: p.startswith("chaos-"))
        for problem in ordered[:30]:
            lines.append(f"  problem: {problem}")
        if len(self.problems) > 30:
            lines.append(f"  ... and {len(self.problems) - 30} more problems")
        return "\n".join(lines)


# -- worker subprocesses -------------------------------------------------------------


class Fleet:
    """The worker subprocesses; every one started is killed on `kill_all`."""

    def __init__(self, url: str, config: ChaosConfig, workdir: Path, side_log: Path) -> None:
        self.url = url
        self.config = config
        self.workdir = workdir
        self.env = {**os.environ, LOG_ENV: str(side_log), "PYTHONUNBUFFERED": "1"}
        self.env.pop("LOOM_REDIS_URL", None)
        self.env.pop("LOOM_NAMESPACE", None)
        self.live: list[subprocess.Popen[bytes]] = []
        self.started: list[subprocess.Popen[bytes]] = []
        self.logs: dict[int, Path] = {}
        self.unexpected: list[str] = []

    def spawn(self) -> subprocess.Popen[bytes]:
        c = self.config
        command = [
            sys.executable,
            "-m",
            "loom_redis",
            "worker",
            "bench.chaos_workflows",
            "--url",
            self.url,
            "--namespace",
            NAMESPACE,
            "--lease",
            str(c.lease),
            "--concurrency",
            str(c.concurrency),
            "--max-deliveries",
            str(c.max_deliveries),
            "--poll-interval",
            "0.2",
            "--drain",
            "5",
        ]
        log = self.workdir / f"worker-{len(self.started):03d}.log"
        with open(log, "ab") as out:
            process = subprocess.Popen(
                command, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT
            )
        self.logs[process.pid] = log
        self.live.append(process)
        self.started.append(process)
        return process

    def kill(self, process: subprocess.Popen[bytes]) -> None:
        self.live.remove(process)
        process.kill()
        process.wait(10)

    def replace_exited(self) -> None:
        """Replace workers that exited on their own (a worker must never do that)."""
        for process in list(self.live):
            if process.poll() is not None:
                self.live.remove(process)
                tail = self.log_tail(process.pid)
                self.unexpected.append(
                    f"worker {process.pid} exited by itself with {process.returncode}: {tail}"
                )
                self.spawn()

    def log_tail(self, pid: int, lines: int = 5) -> str:
        log = self.logs.get(pid)
        if log is None or not log.exists():
            return ""
        return " | ".join(log.read_text(errors="replace").splitlines()[-lines:])

    async def terminate_all(self, timeout: float) -> dict[int, int | None]:
        """SIGTERM every live worker; wait for them to drain (killed after `timeout`)."""
        for process in self.live:
            process.send_signal(signal.SIGTERM)
        for _ in range(int(timeout / 0.1)):
            if all(p.poll() is not None for p in self.live):
                break
            await anyio.sleep(0.1)
        codes = {p.pid: p.poll() for p in self.live}
        self.kill_all()
        return codes

    def kill_all(self) -> None:
        for process in self.started:
            if process.poll() is None:
                process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(10)
        self.live = []

    def traceback_logs(self) -> list[str]:
        """Workers whose output shows a traceback (an unexpected exception)."""
        found = []
        for pid, log in self.logs.items():
            if log.exists() and "Traceback" in log.read_text(errors="replace"):
                found.append(f"worker {pid} logged a traceback (see {log})")
        return found


# -- helpers -------------------------------------------------------------------------


def workflow_id(n: int) -> str:
    return f"chaos-{n:05d}"


async def retrying(fn: Callable[[], Awaitable[T]], *, within: float = 120.0) -> tuple[T, int]:
    """`fn()`, retried on Redis errors (the server may be restarting); (result, retries)."""
    deadline = time.monotonic() + within
    delay = 0.05
    retries = 0
    while True:
        try:
            return await fn(), retries
        except (RedisError, OSError):
            if time.monotonic() > deadline:
                raise
            retries += 1
            await anyio.sleep(delay)
            delay = min(delay * 2, 1.0)


def read_side_log(path: Path) -> list[tuple[float, str, str, int, int]]:
    """Side-log lines as (time, begin|end, workflow id, activity index, pid)."""
    if not path.exists():
        return []
    entries = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) != 5:
            raise ValueError(f"malformed side-log line {line!r}")
        entries.append((float(parts[0]), parts[1], parts[2], int(parts[3]), int(parts[4])))
    return entries


def count_ends(path: Path) -> int:
    if not path.exists():
        return 0
    return path.read_bytes().count(b" end ")


def queue_keys(store: Store) -> list[str]:
    return list(store.queue_keys([QUEUE]))


async def in_flight_of(store: Store, pid: int) -> set[tuple[str, str]]:
    """Tasks pending on the consumers of worker process `pid` (named host-pid-xxxxxx)."""
    prefix = f"{socket.gethostname()}-{pid}-"
    keys = queue_keys(store)
    pipe = store.redis.pipeline(transaction=False)
    for key in keys:
        pipe.xinfo_consumers(key, WORKER_GROUP)
    consumers = await pipe.execute(raise_on_error=False)
    found: set[tuple[str, str]] = set()
    for key, entries in zip(keys, consumers, strict=True):
        if not isinstance(entries, list):
            continue
        for entry in entries:
            name = entry["name"].decode() if isinstance(entry["name"], bytes) else entry["name"]
            if not name.startswith(prefix) or not int(entry.get("pending", 0)):
                continue
            pending: Any = await store.redis.xpending_range(
                key, WORKER_GROUP, min="-", max="+", count=100_000, consumername=name
            )
            found.update((key, str(p["message_id"].decode())) for p in pending)
    return found


async def still_pending(
    store: Store, tasks: set[tuple[str, str]], on_pid: int | None = None
) -> set[tuple[str, str]]:
    """Those of `tasks` still pending (with `on_pid`: on that worker process's consumers)."""
    prefix = f"{socket.gethostname()}-{on_pid}-"
    ordered = sorted(tasks)
    pipe = store.redis.pipeline(transaction=False)
    for key, task_id in ordered:
        pipe.xpending_range(key, WORKER_GROUP, min=task_id, max=task_id, count=1)
    replies = await pipe.execute()
    return {
        task
        for task, reply in zip(ordered, replies, strict=True)
        if reply and (on_pid is None or text(reply[0]["consumer"]).startswith(prefix))
    }


async def leftovers(store: Store) -> dict[str, int]:
    """What is left in task streams, their PELs, the timer zsets and dead-letter streams."""
    pipe = store.redis.pipeline(transaction=False)
    for key in queue_keys(store):
        pipe.xlen(key)
        pipe.xpending(key, WORKER_GROUP)
    for shard in range(store.keys.shards):
        pipe.zcard(store.keys.timers(shard))
        pipe.xlen(store.keys.dead(shard))
    replies = await pipe.execute()
    streams = 2 * len(queue_keys(store))
    totals = {"queued": 0, "pending": 0, "timers": 0, "dead": 0}
    for queued, pending in zip(replies[0:streams:2], replies[1:streams:2], strict=True):
        totals["queued"] += int(queued)
        totals["pending"] += int(pending["pending"])
    for timers, dead in zip(replies[streams::2], replies[streams + 1 :: 2], strict=True):
        totals["timers"] += int(timers)
        totals["dead"] += int(dead)
    return totals


def expected_event_counts(activities: int) -> dict[EventType, int]:
    """How many events of each type one chaos workflow's history holds, exactly."""
    return {
        EventType.WORKFLOW_STARTED: 1,
        EventType.STEP_STARTED: 3,
        EventType.ACTIVITY_SCHEDULED: activities,
        EventType.ACTIVITY_COMPLETED: activities,
        EventType.ACTIVITY_FAILED: 0,
        EventType.STATE_SET: activities + 1,
        EventType.STATE_UPDATE: 1,
        EventType.TIMER_STARTED: 1,
        EventType.TIMER_FIRED: 1,
        EventType.SIGNAL_RECEIVED: 1,
        EventType.WORKFLOW_COMPLETED: 1,
        EventType.WORKFLOW_FAILED: 0,
        EventType.WORKFLOW_CANCELLED: 0,
        EventType.WORKFLOW_CANCEL_REQUESTED: 0,
    }


# -- the run -------------------------------------------------------------------------


class Chaos:
    def __init__(self, config: ChaosConfig, out: IO[str]) -> None:
        self.config = config
        self.out = out
        self.rng = random.Random(config.seed)
        self.workdir = Path(tempfile.mkdtemp(prefix="loom-chaos-"))
        self.side_log = self.workdir / "side.log"
        self.server = EmbeddedServer(
            self.workdir / "redis", appendonly=True, appendfsync=config.appendfsync
        )
        self.fleet = Fleet(self.server.url, config, self.workdir, self.side_log)
        self.report = ChaosReport(config)
        self.kills: list[Kill] = []
        self.outages: list[tuple[float, float]] = []
        self.started: list[str] = []
        self.signalled: set[str] = set()
        self.producer_done = False
        self.t0 = time.monotonic()

    def say(self, message: str) -> None:
        if self.config.verbose:
            print(f"[chaos {time.monotonic() - self.t0:7.1f}s] {message}", file=self.out)
            self.out.flush()

    async def run(self) -> ChaosReport:
        c = self.config
        client: loom.Client | None = None
        try:
            self.server.start()
            self.say(f"server on {self.server.url} (AOF, appendfsync {c.appendfsync})")
            client = await loom.Client(self.server.url, NAMESPACE).open()
            await client.store.ensure_groups([QUEUE])
            for _ in range(c.workers):
                self.fleet.spawn()
            await self.wait_workers_ready(client.store)
            self.say(f"{c.workers} workers ready; starting {c.workflows} workflows")
            self.t0 = time.monotonic()
            finished = False
            async with anyio.create_task_group() as group:
                group.start_soon(self.produce, client)
                group.start_soon(self.signal_waiting, client)
                group.start_soon(self.wreak_havoc, client.store)
                group.start_soon(self.track_takeovers, client.store)
                finished = await self.wait_all_closed(client.store)
                group.cancel_scope.cancel()
            self.report.elapsed = time.monotonic() - self.t0
            if not finished:
                self.report.problems.append(
                    f"not every workflow ended within the timeout of {c.timeout:g}s"
                )
            self.say("every workflow ended" if finished else "timeout")
            await self.wait_quiet(client.store)
            # A replacement started moments ago must be past its start (and have installed
            # its SIGTERM handler) before it is asked to drain.
            await self.wait_workers_ready(client.store)
            codes = await self.fleet.terminate_all(20)
            for pid, code in codes.items():
                if code != 0:
                    self.report.problems.append(
                        f"worker {pid} did not drain on SIGTERM (exit {code}): "
                        f"{self.fleet.log_tail(pid)}"
                    )
            await self.check(client.store)
        finally:
            self.fleet.kill_all()
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.close()
            self.server.stop(kill=True)
            if c.keep:
                print(f"kept {self.workdir}", file=self.out)
            else:
                shutil.rmtree(self.workdir, ignore_errors=True)
        return self.report

    async def wait_workers_ready(self, store: Store, within: float = 30.0) -> None:
        """Until every live worker has written its heartbeat (it has connected)."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            self.fleet.replace_exited()
            try:
                beats, _ = await store.read_heartbeats()
            except RedisError:
                beats = []
            ready = {beat.get("pid") for beat in beats}
            if all(p.pid in ready for p in self.fleet.live):
                return
            await anyio.sleep(0.05)
        raise RuntimeError(f"workers not ready after {within:g}s")

    # -- load --------------------------------------------------------------------

    async def produce(self, client: loom.Client) -> None:
        c = self.config
        for n in range(c.workflows):
            wid = workflow_id(n)
            workflow_input = {
                "n": n,
                "activities": c.activities,
                "seconds": c.activity_seconds,
                "sleep": c.sleep_seconds,
            }

            async def start(wid: str = wid, workflow_input: dict[str, Any] = workflow_input) -> Any:
                # A retry after a lost reply finds the workflow the first try created.
                return await client.start(
                    ChaosWorkflow, workflow_input, workflow_id=wid, id_reuse="return_existing"
                )

            _, retries = await retrying(start)
            self.report.start_retries += retries
            self.started.append(wid)
            if n % 2 == 0:  # signalled at once: the workflow finds it buffered
                await self.send_signal(client, wid)
            if c.start_rate > 0:
                await anyio.sleep(1 / c.start_rate)
        self.producer_done = True
        self.say(f"all {c.workflows} workflows started")

    async def send_signal(self, client: loom.Client, wid: str) -> None:
        handle = client.get_handle(wid)

        async def send() -> None:
            await handle.signal(SIGNAL, signal_payload(wid))

        _, retries = await retrying(send)
        self.report.signal_retries += retries
        self.signalled.add(wid)

    async def signal_waiting(self, client: loom.Client) -> None:
        """Signal odd workflows once they wait for it (their `wait` step has begun)."""
        store = client.store
        while not (self.producer_done and len(self.signalled) == len(self.started)):
            await anyio.sleep(0.25)
            waiting = [w for w in self.started if w not in self.signalled]
            if not waiting:
                continue
            pipe = store.redis.pipeline(transaction=False)
            for wid in waiting:
                pipe.hget(store.keys.meta(wid), "step")
            try:
                steps = await pipe.execute()
            except RedisError:
                continue
            for wid, step in zip(waiting, steps, strict=True):
                if step is not None and int(step) >= WAIT_STEP:
                    await self.send_signal(client, wid)

    # -- chaos -------------------------------------------------------------------

    async def wreak_havoc(self, store: Store) -> None:
        c = self.config
        total = c.workflows * c.activities
        while True:
            await anyio.sleep(c.kill_every)
            self.fleet.replace_exited()
            done = self.report.redis_restarts
            if done < c.redis_restarts and count_ends(self.side_log) >= total * (done + 1) / (
                c.redis_restarts + 1
            ):
                await self.restart_redis(store)
            await self.kill_worker(store)

    async def kill_worker(self, store: Store) -> None:
        if not self.fleet.live:
            return
        victim = self.rng.choice(self.fleet.live)
        kill = Kill(victim.pid, time.time())
        self.fleet.kill(victim)
        self.fleet.spawn()
        # The dead consumer's PEL cannot change until the lease ends: read it now.
        kill.in_flight, _ = await retrying(lambda: in_flight_of(store, victim.pid))
        kill.held = len(kill.in_flight)
        kill.unclaimed = set(kill.in_flight)
        for earlier in self.kills:  # tasks it had taken over from workers killed before
            earlier.resolve(kill.in_flight, kill.at)
        self.kills.append(kill)
        self.say(f"SIGKILL worker {victim.pid}: it held {kill.held} task(s)")

    async def restart_redis(self, store: Store) -> None:
        # Workers started moments ago must have connected once (a worker that cannot
        # reach Redis at its very start exits, as a process supervisor expects).
        await self.wait_workers_ready(store)
        self.say("SIGKILL Redis")
        down = time.monotonic()
        down_at = time.time()
        self.server.stop(kill=True)
        await anyio.sleep(0.5)
        await anyio.to_thread.run_sync(self.server.start, 60.0)
        self.outages.append((down_at, time.time()))
        self.report.redis_restarts += 1
        self.report.redis_downtime += time.monotonic() - down
        self.say(f"Redis restarted from its AOF after {time.monotonic() - down:.1f}s")

    async def track_takeovers(self, store: Store) -> None:
        while True:
            await anyio.sleep(0.1)
            for kill in list(self.kills):
                try:
                    await self.follow(store, kill)
                except RedisError:
                    break

    async def follow(self, store: Store, kill: Kill) -> None:
        """Resolve the tasks of `kill` that have been acknowledged, and those claimed."""
        if kill.in_flight:
            left = await still_pending(store, kill.in_flight)
            kill.resolve(kill.in_flight - left, time.time())
        if kill.unclaimed:
            unclaimed = await still_pending(store, kill.unclaimed, kill.pid)
            kill.claimed(kill.unclaimed - unclaimed, time.time())

    async def wait_all_closed(self, store: Store) -> bool:
        c = self.config
        open_ids: list[str] = []
        deadline = time.monotonic() + c.timeout
        last_report = time.monotonic()
        while time.monotonic() < deadline:
            await anyio.sleep(0.5)
            if not self.producer_done:
                continue
            if not open_ids:
                open_ids = list(self.started)
            pipe = store.redis.pipeline(transaction=False)
            for wid in open_ids:
                pipe.hget(store.keys.meta(wid), "status")
            try:
                statuses = await pipe.execute()
            except RedisError:
                continue
            open_ids = [
                wid
                for wid, status in zip(open_ids, statuses, strict=True)
                if status not in (b"COMPLETED", b"FAILED", b"CANCELLED")
            ]
            if not open_ids:
                return True
            if time.monotonic() - last_report > 10:
                last_report = time.monotonic()
                self.say(
                    f"{len(open_ids)} workflows open, {count_ends(self.side_log)} activity "
                    f"executions, {len(self.kills)} kills"
                )
        return False

    async def wait_quiet(self, store: Store) -> None:
        """Until task streams, PELs and timers are empty (a dead worker's redundant task
        waits for the lease), at most a few leases."""
        deadline = time.monotonic() + 3 * self.config.lease + 15
        left: dict[str, int] = {}
        while time.monotonic() < deadline:
            # Takeovers still unresolved are resolved (or not) by now.
            for kill in self.kills:
                await retrying(functools.partial(self.follow, store, kill))
            left, _ = await retrying(functools.partial(leftovers, store))
            if not (left["queued"] or left["pending"] or left["timers"]):
                return
            await anyio.sleep(0.2)

    # -- checks ------------------------------------------------------------------

    async def check(self, store: Store) -> None:
        c = self.config
        report = self.report
        problems = report.problems
        report.workflows = c.workflows
        report.kills = len(self.kills)
        held = [k for k in self.kills if k.held]
        report.kills_with_tasks = len(held)
        unresolved = [k for k in held if k.in_flight]
        resolved = [d for k in held if (d := k.delay) is not None]
        report.max_takeover_delay = max(resolved) if resolved else None
        self.say(
            "takeover delays (s): "
            + ", ".join(
                f"{k.pid}:{k.delay:.2f}" if k.delay is not None else f"{k.pid}:never" for k in held
            )
        )
        for kill in unresolved:
            problems.append(
                f"tasks of killed worker {kill.pid} never completed: {sorted(kill.in_flight)[:5]}"
            )
        report.unexpected_worker_exits = len(self.fleet.unexpected)
        problems.extend(self.fleet.unexpected)
        problems.extend(self.fleet.traceback_logs())

        side = read_side_log(self.side_log)
        ends = Counter((wid, index) for _, kind, wid, index, _ in side if kind == "end")
        begins = Counter((wid, index) for _, kind, wid, index, _ in side if kind == "begin")
        report.executions = sum(ends.values())
        report.duplicate_executions = sum(n - 1 for n in ends.values() if n > 1)
        report.interrupted_executions = sum(begins.values()) - sum(ends.values())
        report.duplicates_from_live = self.duplicates_from_live(side)
        resumes = {k.pid: k.resume_delay(side) for k in self.kills}
        report.resume_delays = [d for d in resumes.values() if d is not None]
        self.say(
            "kill to resume (s): "
            + ", ".join(f"{pid}:{'-' if d is None else f'{d:.2f}'}" for pid, d in resumes.items())
        )

        expected_types = expected_event_counts(c.activities)
        for n in range(c.workflows):
            wid = workflow_id(n)
            meta, _ = await retrying(functools.partial(store.read_meta, wid))
            history, _ = await retrying(functools.partial(store.read_history, wid))
            expected = expected_result(wid, n, c.activities)
            status = meta.get("status", b"").decode()
            result = decode(meta.get("result")) if "result" in meta else None
            if status != "COMPLETED" or result != expected:
                report.lost += 1
                problems.append(
                    f"{wid}: lost: status {status or 'missing'!r}, result {result!r}, "
                    f"error {decode(meta.get('error')) if meta.get('error') else None!r}"
                )
            duplicated, signals, notes = self.check_history(wid, history, expected_types)
            report.duplicated_transitions += duplicated
            report.duplicate_signals += signals
            problems.extend(f"{wid}: {note}" for note in notes)
            completed = self.completed_indexes(history)
            report.activities += len(completed)
            for index in completed:
                if ends[(wid, index)] == 0:
                    problems.append(f"{wid}: activity {index} completed but never ran to its end")
        if report.duplicate_signals > report.signal_retries:
            problems.append(
                f"{report.duplicate_signals} duplicate signals but only "
                f"{report.signal_retries} signal retries"
            )

        left, _ = await retrying(functools.partial(leftovers, store))
        report.pending_left = left["queued"] + left["pending"] + left["timers"]
        report.dead_letters = left["dead"]
        if report.pending_left:
            problems.append(f"left behind: {left}")
        if left["dead"]:
            dead, _ = await retrying(lambda: store.dead_letters(20))
            for letter in dead:
                problems.append(
                    f"dead letter {letter.id} ({letter.kind}, {letter.workflow_id}): "
                    f"{letter.reason}"
                )

    def duplicates_from_live(self, side: list[tuple[float, str, str, int, int]]) -> int:
        """Extra executions of activities that no kill and no Redis outage explains: each
        worker that ran one was alive and connected throughout, so the task was taken
        from a live worker (or run twice by one)."""
        killed_at = {k.pid: k.at for k in self.kills}
        runs: dict[tuple[str, int], list[tuple[float, str, int]]] = {}
        for at, kind, wid, index, pid in side:
            runs.setdefault((wid, index), []).append((at, kind, pid))
        count = 0
        for lines in runs.values():
            ends = sum(1 for _, kind, _ in lines if kind == "end")
            if ends < 2:
                continue
            first, last = lines[0][0], lines[-1][0]
            if any(pid in killed_at and killed_at[pid] >= at for at, _, pid in lines):
                continue
            if any(start <= last and end >= first - 1 for start, end in self.outages):
                continue
            count += ends - 1
        return count

    @staticmethod
    def completed_indexes(history: list[Event]) -> list[int]:
        index_of = {
            e.seq: int(e.data["args"][1]) for e in history if e.type == EventType.ACTIVITY_SCHEDULED
        }
        return [
            index_of[e.seq]
            for e in history
            if e.type == EventType.ACTIVITY_COMPLETED and e.seq in index_of
        ]

    @staticmethod
    def check_history(
        wid: str, history: list[Event], expected_types: dict[EventType, int]
    ) -> tuple[int, int, list[str]]:
        """(duplicated transitions, duplicate signals, other problems) of one history."""
        notes: list[str] = []
        types = Counter(e.type for e in history)
        seqs = Counter(e.seq for e in history if e.type in COMMAND_TYPES)
        results = Counter(
            e.seq
            for e in history
            if e.type in (EventType.ACTIVITY_COMPLETED, EventType.ACTIVITY_FAILED)
        )
        fired = Counter(e.seq for e in history if e.type == EventType.TIMER_FIRED)
        by_seq = sum(n - 1 for counter in (seqs, results, fired) for n in counter.values())
        by_type = sum(
            max(types[t] - n, 0)
            for t, n in expected_types.items()
            if t != EventType.SIGNAL_RECEIVED
        )
        duplicated = max(by_seq, by_type)
        if duplicated:
            notes.append(f"duplicated transitions: types {dict(types)}, seqs {dict(seqs)}")
        if sorted(seqs) != list(range(1, len(seqs) + 1)):
            notes.append(f"command seqs are not 1..n: {sorted(seqs)}")
        for event_type, n in expected_types.items():
            if types[event_type] < n:
                notes.append(f"{types[event_type]} {event_type} event(s), expected {n}")
        signals = max(types[EventType.SIGNAL_RECEIVED] - 1, 0)
        return duplicated, signals, notes


async def run_chaos(config: ChaosConfig, out: IO[str] | None = None) -> ChaosReport:
    """Run the chaos scenario of `config`; every process it starts is killed on return."""
    return await Chaos(config, out or sys.stdout).run()


# -- command line --------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> ChaosConfig:
    defaults = ChaosConfig()
    parser = argparse.ArgumentParser(
        prog="python -m bench.chaos", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--workflows", "-n", type=int, default=defaults.workflows)
    parser.add_argument("--activities", "-k", type=int, default=defaults.activities)
    parser.add_argument("--workers", "-m", type=int, default=defaults.workers)
    parser.add_argument("--kill-every", "-t", type=float, default=defaults.kill_every)
    parser.add_argument("--appendfsync", choices=["always", "everysec"], default="always")
    parser.add_argument("--redis-restarts", type=int, default=defaults.redis_restarts)
    parser.add_argument("--lease", type=float, default=defaults.lease)
    parser.add_argument("--concurrency", type=int, default=defaults.concurrency)
    parser.add_argument("--max-deliveries", type=int, default=defaults.max_deliveries)
    parser.add_argument("--activity-seconds", type=float, default=defaults.activity_seconds)
    parser.add_argument("--sleep-seconds", type=float, default=defaults.sleep_seconds)
    parser.add_argument(
        "--start-rate",
        type=float,
        default=defaults.start_rate,
        help="workflows started per second (0: as fast as possible)",
    )
    parser.add_argument("--timeout", type=float, default=defaults.timeout)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, AOF)")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    return ChaosConfig(
        workflows=args.workflows,
        activities=args.activities,
        workers=args.workers,
        kill_every=args.kill_every,
        appendfsync=args.appendfsync,
        redis_restarts=args.redis_restarts,
        lease=args.lease,
        concurrency=args.concurrency,
        max_deliveries=args.max_deliveries,
        activity_seconds=args.activity_seconds,
        sleep_seconds=args.sleep_seconds,
        start_rate=args.start_rate,
        timeout=args.timeout,
        seed=args.seed,
        keep=args.keep,
        verbose=not args.quiet,
    )


def _exit_on_sigterm(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds through run()'s finally: no orphans left


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    report = anyio.run(run_chaos, config)
    print(report.table())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
