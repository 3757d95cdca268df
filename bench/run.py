"""Side-by-side benchmark of loom-redis and its peers (issue 4, "Benchmark suite").

    .venv/bin/python -m bench.run [--quick] [--only A,B,D] [--systems loom-redis,taskiq]

Each system gets a fresh Valkey/Redis on 127.0.0.1 (loom_redis.testing.EmbeddedServer,
appendonly yes, appendfsync everysec), 2 worker processes, one warm-up batch, then the
workloads below, each measured by a driver (bench/peers/<name>.py) that runs in the
system's own virtualenv (.bench/<name>, made from PyPI on first use; loom-redis runs
in the project's .venv). One table is printed at the end.

A: producer enqueues N one-activity workflows (jobs): jobs/s, p50/p99 latency.
B: N workflows of 5 sequential activities (chains of 5 tasks): steps/s, p50/p99.
C: one workflow of N sequential activities: steps/s over the first and last 100 steps
   (from the median time between two steps); for loom-redis also side by side: the
   workflow pauses before its last 100 steps, which then run beside the 100 steps of a
   new workflow, on the same workers at the same time.
D: one one-activity workflow at a time on an idle system: p50/p99 over N runs.
E: loom-redis with 1, 2, 4 worker processes on workload B (bench/scaling.py: the curve
   on a standalone server and a cluster, with its CPU costs, and durability's cost).
F: loom-redis Redis memory per workflow and per event, Redis commands per step (B).

Every wait is bounded in time; every process started here is killed at the end.
LOOM_BENCH_WORKER_ARGS adds options to loom-redis's workers, to compare settings by hand
(e.g. LOOM_BENCH_WORKER_ARGS="--eager-seconds 0").
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import itertools
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from loom_redis.testing import EmbeddedServer

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / ".bench"
PROJECT_PYTHON = ROOT / ".venv" / "bin" / "python"
WORKERS = 2
FULL = {"A": 2000, "B": 500, "C": 2000, "D": 200}
QUICK = {"A": 200, "B": 50, "C": 200, "D": 30}
B_STEPS = 5
WARM = 20
ALL_SYSTEMS = ["loom-redis", "taskiq", "celery", "seed", "dbos"]
WORKLOADS = "ABCDEF"
C_SYSTEMS = {"loom-redis", "seed"}

# Packages of each peer's virtualenv (from PyPI) and the Python that makes it.
PEER_PACKAGES = {
    "taskiq": ["taskiq", "taskiq-redis"],
    "celery": ["celery[redis]>=5,<6"],
    "seed": ["loom-core"],
    "dbos": ["dbos", "psycopg[binary]"],
}


class Unavailable(Exception):
    """A system that cannot run here: shown as "n/a: <reason>"."""


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


# --- virtualenvs ----------------------------------------------------------------------


def python312() -> str:
    found = sorted(glob.glob("/root/.pyenv/versions/3.12.*/bin/python3.12"))
    if not found:
        raise Unavailable("no Python 3.12 under /root/.pyenv/versions")
    return found[-1]


def peer_python(system: str) -> Path:
    if system == "loom-redis":
        return PROJECT_PYTHON
    venv = BENCH_DIR / system
    python = venv / "bin" / "python"
    marker = venv / ".bench-ready"
    if marker.exists():
        return python
    log(f"creating {venv} (first use)")
    base = python312() if system == "seed" else sys.executable
    logfile = BENCH_DIR / f"{system}.log"
    BENCH_DIR.mkdir(exist_ok=True)
    with open(logfile, "ab") as out:
        for command in (
            [base, "-m", "venv", "--clear", str(venv)],
            [str(python), "-m", "pip", "install", "-q", "-U", *PEER_PACKAGES[system]],
        ):
            try:
                subprocess.run(command, stdout=out, stderr=out, check=True, timeout=600)
            except (subprocess.SubprocessError, OSError) as error:
                raise Unavailable(f"virtualenv setup failed ({error}); see {logfile}") from error
    marker.touch()
    return python


# --- processes ------------------------------------------------------------------------


@dataclass
class Procs:
    """Processes started by this run, each in its own session, killed by group."""

    items: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(
        self, args: list[str], env: dict[str, str], cwd: Path, logfile: Path
    ) -> subprocess.Popen[bytes]:
        with open(logfile, "ab") as out:
            proc = subprocess.Popen(
                args, env=env, cwd=cwd, stdout=out, stderr=out, start_new_session=True
            )
        self.items.append(proc)
        return proc

    def stop(self, procs: list[subprocess.Popen[bytes]] | None = None) -> None:
        targets = self.items if procs is None else procs
        for proc in targets:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc in targets:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.1, deadline - time.monotonic()))
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # children left in the group too
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
        self.items = [p for p in self.items if p not in targets]


# --- Postgres for DBOS ----------------------------------------------------------------


@contextlib.contextmanager
def postgres(procs: Procs) -> Iterator[str]:
    """A throwaway cluster on a free loopback port, run as the `postgres` user."""
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not bins:
        raise Unavailable("Postgres not installed (apt-get install postgresql)")
    bindir = Path(bins[-1]).parent
    try:
        import pwd

        user = pwd.getpwnam("postgres")
    except KeyError as error:
        raise Unavailable("no `postgres` user to run the cluster as") from error
    # Its own directory: the postgres user cannot enter the run's (mode 0700) one.
    workdir = Path(tempfile.mkdtemp(prefix="bench-pg-"))
    data = workdir / "pgdata"
    data.mkdir()
    os.chown(workdir, user.pw_uid, user.pw_gid)
    os.chown(data, user.pw_uid, user.pw_gid)
    port = free_port()

    def as_pg(args: list[str]) -> list[str]:
        ids = [f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups"]
        return ["setpriv", *ids, *args]

    initdb = subprocess.run(
        as_pg([str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"]),
        capture_output=True,
        text=True,
        timeout=120,
    )
    if initdb.returncode:
        shutil.rmtree(workdir, ignore_errors=True)
        raise Unavailable(f"initdb failed: {initdb.stderr.strip()[-200:]}")
    server = procs.start(
        as_pg(
            [
                str(bindir / "postgres"),
                "-D",
                str(data),
                "-p",
                str(port),
                "-h",
                "127.0.0.1",
                "-k",
                str(workdir),
                "-c",
                "max_connections=200",
            ]
        ),
        dict(os.environ),
        workdir,
        workdir / "postgres.log",
    )
    deadline = time.monotonic() + 30
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            break
        if server.poll() is not None or time.monotonic() > deadline:
            raise Unavailable("Postgres did not start; see its log")
        time.sleep(0.2)
    time.sleep(1.0)
    subprocess.run(
        [str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "bench"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/bench"
    finally:
        procs.stop([server])
        shutil.rmtree(workdir, ignore_errors=True)


# --- one system -----------------------------------------------------------------------


@dataclass
class Context:
    system: str
    python: Path
    env: dict[str, str]
    workdir: Path
    url: str
    procs: Procs
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)


def worker_commands(ctx: Context, count: int) -> list[list[str]]:
    python = str(ctx.python)
    if ctx.system == "loom-redis":
        one = [python, "-m", "loom_redis", "worker", "bench.peers.loom_redis"]
        one += ["--namespace", "bench", "--url", ctx.url, "--poll-interval", "1.0"]
        one += os.environ.get("LOOM_BENCH_WORKER_ARGS", "").split()
        return [one] * count
    if ctx.system == "taskiq":
        exe = str(ctx.python.parent / "taskiq")
        return [[exe, "worker", "bench.peers.taskiq:broker", "--workers", str(count)]]
    if ctx.system == "celery":
        exe = str(ctx.python.parent / "celery")
        return [
            [
                *[exe, "-A", "bench.peers.celery:app", "worker", "--concurrency", str(count)],
                *["--loglevel", "warning", "--without-gossip", "--without-mingle"],
            ]
        ]
    if ctx.system == "seed":
        exe = str(ctx.python.parent / "loom")
        return [[exe, "worker", "-w", "4"]] * count
    if ctx.system == "dbos":
        return [[python, "-m", "bench.peers.dbos", "worker"]] * count
    raise ValueError(ctx.system)


def start_workers(ctx: Context, count: int) -> None:
    for args in worker_commands(ctx, count):
        ctx.workers.append(ctx.procs.start(args, ctx.env, ctx.workdir, ctx.workdir / "worker.log"))
    time.sleep(1.0)
    dead = [p for p in ctx.workers if p.poll() is not None]
    if dead:
        tail = (ctx.workdir / "worker.log").read_text(errors="replace")[-400:]
        raise Unavailable(f"worker exited at start: {tail.strip().splitlines()[-1:]}")


def stop_workers(ctx: Context) -> None:
    ctx.procs.stop(ctx.workers)
    ctx.workers = []


def drive(
    ctx: Context, workload: str, count: int, steps: int, timeout: float, stats: bool = False
) -> dict[str, Any]:
    module = "bench.peers." + ctx.system.replace("-", "_")
    out = ctx.workdir / f"result-{workload}-{time.time_ns()}.json"
    args = [str(ctx.python), "-m", module, "drive", "--workload", workload]
    args += ["--count", str(count), "--steps", str(steps), "--timeout", str(timeout)]
    args += ["--out", str(out)] + (["--stats"] if stats else [])
    with open(ctx.workdir / "driver.log", "ab") as logf:
        try:
            subprocess.run(
                args,
                env=ctx.env,
                cwd=ctx.workdir,
                stdout=logf,
                stderr=logf,
                timeout=timeout + 60,
                check=True,
            )
        except (subprocess.SubprocessError, OSError) as error:
            tail = (ctx.workdir / "driver.log").read_text(errors="replace")[-300:]
            raise RuntimeError(f"driver {workload} failed: {error}: {tail}") from error
    figures: dict[str, Any] = json.loads(out.read_text())
    return figures


def batch_figures(result: dict[str, Any], count: int, steps: int) -> dict[str, Any]:
    enq, done = result["enqueued"], result["done"]
    lat = [done[k] - enq[k] for k in enq if k in done]
    figures: dict[str, Any] = {"done": len(lat), "of": count}
    failed = result.get("extra", {}).get("failed", 0)
    if failed:
        figures["failed"] = failed
    if lat:
        span = max(done[k] for k in enq if k in done) - min(enq.values())
        figures["span"] = span
        figures["rate"] = len(lat) * steps / span if span > 0 else float("nan")
        figures["p50"] = percentile(lat, 0.50) * 1000
        figures["p99"] = percentile(lat, 0.99) * 1000
    return figures


def c_figures(result: dict[str, Any], count: int) -> dict[str, Any]:
    steps = result["steps"]
    figures: dict[str, Any] = {"done": len(steps), "of": count}
    window = min(100, len(steps))
    if window >= 2:
        figures["first"] = step_rate(steps[:window])
        figures["last"] = step_rate(steps[-window:])
    return figures


def paired_figures(result: dict[str, Any]) -> dict[str, float]:
    """C's last 100 steps and a new workflow's 100, run side by side (see the driver)."""
    steps, probe = result["steps"], result["probe"]
    if len(probe) < 2 or len(steps) < len(probe):
        return {}
    return {"last": step_rate(steps[-len(probe) :]), "new": step_rate(probe)}


def step_rate(times: list[float]) -> float:
    """Steps/s from the median time between consecutive steps: what a step costs, which
    one pause (a collection, the VM) in a window of 100 steps (~50 ms) does not decide."""
    return 1 / max(percentile([b - a for a, b in itertools.pairwise(times)], 0.5), 1e-9)


def commandstats(client: redis.Redis) -> dict[str, int]:
    info = client.info("commandstats")
    return {key.removeprefix("cmdstat_"): int(value["calls"]) for key, value in info.items()}


def standalone_redis(directory: Path) -> EmbeddedServer:
    """The benchmark's Redis: a fresh Valkey keeping an AOF, fsynced every second."""
    return EmbeddedServer(directory, appendonly=True, appendfsync="everysec")


@contextlib.contextmanager
def system_context(
    system: str,
    procs: Procs,
    workers: int = WORKERS,
    *,
    url: str | None = None,
    extra_env: dict[str, str] | None = None,
) -> Iterator[Context]:
    """`system` with its workers running, on the Redis at `url` (else on a
    standalone_redis of its own), `extra_env` added to its processes' environment."""
    python = peer_python(system)
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-{system}-"))
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        if url is None:
            url = stack.enter_context(standalone_redis(workdir / "redis")).url
        env = dict(os.environ)
        env.pop("VIRTUAL_ENV", None)
        env.update(
            PYTHONPATH=str(ROOT),
            BENCH_REDIS_URL=url,
            BENCH_DONE_DIR=str(workdir / "done"),
            LOOM_REDIS_URL=url,
            PYTHONUNBUFFERED="1",
            **(extra_env or {}),
        )
        (workdir / "done").mkdir()
        if system == "dbos":
            pg_url = stack.enter_context(postgres(procs))
            env["BENCH_PG_URL"] = pg_url
        if system == "seed":
            subprocess.run(
                [str(python.parent / "loom"), "init"],
                cwd=workdir,
                env=env,
                input=b"y\n",
                capture_output=True,
                timeout=120,
                check=False,
            )
            if not (workdir / ".loom").exists():
                raise Unavailable("`loom init` made no .loom/ database")
        ctx = Context(system, python, env, workdir, url, procs)
        try:
            start_workers(ctx, workers)
            yield ctx
        finally:
            stop_workers(ctx)


def run_system(system: str, only: str, counts: dict[str, int], procs: Procs) -> dict[str, Any]:
    """Figures of one system, by workload; a string where a workload did not run."""
    row: dict[str, Any] = {}
    with system_context(system, procs) as ctx:
        log(f"{system}: warm-up")
        drive(ctx, "warm", WARM, 1, 120)
        if "A" in only:
            log(f"{system}: A")
            row["A"] = batch_figures(drive(ctx, "A", counts["A"], 1, 600), counts["A"], 1)
        if "B" in only or "F" in only:
            log(f"{system}: B")
            client = redis.Redis.from_url(ctx.url)
            before = commandstats(client)
            result = drive(ctx, "B", counts["B"], B_STEPS, 600, stats=system == "loom-redis")
            after = commandstats(client)
            client.close()
            row["B"] = batch_figures(result, counts["B"], B_STEPS)
            if system == "loom-redis":
                row["F"] = f_figures(result, before, after, counts["B"] * B_STEPS)
        if "C" in only and system in C_SYSTEMS:
            log(f"{system}: C")
            row["C"] = c_figures(drive(ctx, "C", counts["C"], 1, 900), counts["C"])
            if system == "loom-redis":
                paired = drive(ctx, "C-paired", counts["C"], 1, 900)
                row["C"]["paired"] = paired_figures(paired)
        if "D" in only:
            log(f"{system}: D")
            time.sleep(1.0)  # idle
            row["D"] = batch_figures(drive(ctx, "D", counts["D"], 1, 300), counts["D"], 1)
    return row


def f_figures(
    result: dict[str, Any], before: dict[str, int], after: dict[str, int], steps: int
) -> dict[str, Any]:
    own = dict(result.get("extra", {}).get("own_commands", {}))
    own["info"] = own.get("info", 0) + 1  # the INFO that took `before`
    delta = {k: after.get(k, 0) - before.get(k, 0) - own.get(k, 0) for k in after}
    delta = {k: v for k, v in delta.items() if v > 0}
    total = sum(delta.values())
    memory = result.get("extra", {}).get("memory") or {}
    figures: dict[str, Any] = {
        "commands_per_step": total / steps,
        "top": sorted(delta.items(), key=lambda kv: -kv[1])[:6],
    }
    if memory:
        events = memory["events"] or 1
        figures["bytes_per_workflow"] = memory["meta_bytes"] + memory["history_bytes"]
        figures["bytes_per_event"] = memory["history_bytes"] / events
        figures["events_per_workflow"] = memory["events"]
    return figures


def run_scaling(count: int, procs: Procs) -> dict[int, Any]:
    figures: dict[int, Any] = {}
    for workers in (1, 2, 4):
        log(f"loom-redis: E with {workers} worker process(es)")
        try:
            with system_context("loom-redis", procs, workers) as ctx:
                drive(ctx, "warm", WARM, 1, 120)
                result = drive(ctx, "B", count, B_STEPS, 600)
                figures[workers] = batch_figures(result, count, B_STEPS)
        except (Unavailable, RuntimeError) as error:
            figures[workers] = f"n/a: {error}"
    return figures


# --- the table ------------------------------------------------------------------------


def cell(figures: Any, rate: str, unit: str) -> str:
    if figures is None:
        return "-"
    if isinstance(figures, str):
        return figures
    text = ""
    if rate in figures:
        text = f"{figures[rate]:,.0f} {unit}, "
    if "p50" in figures:
        text += f"p50 {figures['p50']:,.1f} ms / p99 {figures['p99']:,.1f} ms"
    if figures.get("done") != figures.get("of"):
        text += f" ({figures.get('done')}/{figures.get('of')} done)"
    if figures.get("failed"):
        text += f" ({figures['failed']} failed)"
    return text.strip(", ")


def c_cell(figures: Any) -> str:
    if figures is None:
        return "-"
    if isinstance(figures, str):
        return figures
    text = f"first 100: {figures.get('first', 0):,.0f} steps/s, "
    text += f"last 100: {figures.get('last', 0):,.0f} steps/s"
    if figures["done"] != figures["of"]:
        text += f" ({figures['done']}/{figures['of']} steps)"
    paired = figures.get("paired")
    if paired:
        text += (
            f"; run side by side: last 100 {paired['last']:,.0f}, a new workflow's 100 "
            f"{paired['new']:,.0f} steps/s"
        )
    elif paired is not None:
        text += "; side by side: n/a"
    return text


def table(rows: dict[str, Any], scaling: dict[int, Any], counts: dict[str, int], only: str) -> str:
    systems = list(rows)
    lines = ["| workload | " + " | ".join(systems) + " |", "|---" * (len(systems) + 1) + "|"]

    def add(name: str, render: Any) -> None:
        cells = []
        for system in systems:
            row = rows[system]
            cells.append(row if isinstance(row, str) else render(system, row))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")

    if "A" in only:
        add(f"A: {counts['A']} x 1 activity", lambda s, r: cell(r.get("A"), "rate", "wf/s"))
    if "B" in only:
        add(
            f"B: {counts['B']} x {B_STEPS} activities",
            lambda s, r: cell(r.get("B"), "rate", "steps/s"),
        )
    if "C" in only:
        add(
            f"C: 1 x {counts['C']} activities",
            lambda s, r: c_cell(r.get("C")) if s in C_SYSTEMS else "not measured",
        )
    if "D" in only:
        add(f"D: {counts['D']} x 1 activity, one at a time", lambda s, r: cell(r.get("D"), "", ""))
    out = "\n".join(lines) if len(lines) > 2 else ""
    if scaling:
        out += "\n\n| E: loom-redis, workload B | steps/s, p50 / p99 |\n|---|---|\n"
        out += "\n".join(
            f"| {n} worker process{'es' if n > 1 else ''} | {cell(f, 'rate', 'steps/s')} |"
            for n, f in scaling.items()
        )
    loom_row = rows.get("loom-redis")
    if "F" in only and isinstance(loom_row, dict) and "F" in loom_row:
        f = loom_row["F"]
        out += "\n\n| F: loom-redis Redis costs (over workload B) | |\n|---|---|\n"
        if "bytes_per_workflow" in f:
            per_wf, per_event = f["bytes_per_workflow"], f["bytes_per_event"]
            out += f"| memory per workflow (meta hash + history stream) | {per_wf:,.0f} B |\n"
            out += f"| memory per event (history stream / XLEN) | {per_event:,.0f} B"
            out += f" ({f['events_per_workflow']:.0f} events per workflow) |\n"
        out += "| Redis commands per step (INFO commandstats delta, incl. inside scripts)"
        out += f" | {f['commands_per_step']:.1f} |\n"
        out += "| most called | " + ", ".join(f"{k} {v:,}" for k, v in f["top"]) + " |"
    return out


def machine() -> str:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    server = EmbeddedServer().binary
    version = subprocess.run([server, "--version"], capture_output=True, text=True).stdout.strip()
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    return (
        f"nproc {os.cpu_count()}, {cpu}, Python {platform.python_version()}, "
        f"{version}\nuptime: {load}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="A=200, B=50, C=200, D=30")
    parser.add_argument("--only", default=",".join(WORKLOADS), help="workloads, e.g. A,B,D")
    parser.add_argument("--systems", default=",".join(ALL_SYSTEMS))
    args = parser.parse_args(argv)
    counts = QUICK if args.quick else FULL
    only = "".join(w.strip().upper() for w in args.only.split(","))
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = set(systems) - set(ALL_SYSTEMS) or set(only) - set(WORKLOADS)
    if unknown:
        parser.error(f"unknown: {sorted(unknown)}")

    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    procs = Procs()
    rows: dict[str, Any] = {}
    scaling: dict[int, Any] = {}
    try:
        for system in systems:
            measured = set(only) & set("ABCDF" if system == "loom-redis" else "ABCD")
            if not measured:
                continue  # E and F are loom-redis's alone; E runs below
            try:
                rows[system] = run_system(system, only, counts, procs)
            except (Unavailable, RuntimeError, subprocess.SubprocessError, OSError) as error:
                log(f"{system}: {error}")
                rows[system] = f"n/a: {str(error).splitlines()[0][:160]}"
        if "E" in only and "loom-redis" in systems:
            scaling = run_scaling(counts["B"], procs)
    finally:
        procs.stop()
    print(f"# loom-redis benchmark, {started}")
    print(f"{machine()}")
    mode = "--quick" if args.quick else "full"
    print(f"counts ({mode}): {counts}; {WORKERS} worker processes; Redis appendonly everysec\n")
    print(table(rows, scaling, counts, only).strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
