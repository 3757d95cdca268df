"""The loom-redis demo: `make demo`, or `python -m examples.demo` from the repository.

Starts a Valkey server (AOF on, its data under `.loom/`) and a worker process
(`loom worker examples.order examples.assessment`), starts orders and quizzes
for one owner, approves or rejects the orders by signal, shows their live
progress, prints the results and where the worker's metrics are, then stops
the worker and the server, also on Ctrl-C or an error. The dashboard (`loom web`)
runs beside them at http://127.0.0.1:8000/ (LOOM_DEMO_WEB_PORT); run from a terminal,
the demo waits for Enter before it stops everything, so that you can look around.

The data stays in `.loom/`: workflows that an interrupted run left open resume
when the demo runs again. `LOOM_DEMO_PORT` changes the server's port (6390).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import loom_redis as loom
from loom_redis.testing import EmbeddedServer, free_port

from .assessment import AssessmentWorkflow, QuizInput
from .order import OrderInput, OrderWorkflow

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = ROOT / ".loom"
WORKER_LOG = DATA_DIR / "worker.log"
WEB_LOG = DATA_DIR / "web.log"
PORT = int(os.environ.get("LOOM_DEMO_PORT", "6390"))
# The dashboard's port (`loom web`), LOOM_DEMO_WEB_PORT to change it.
WEB_PORT = int(os.environ.get("LOOM_DEMO_WEB_PORT", "8000"))
OWNER = "alice"
WORKER_MODULES = ("examples.order", "examples.assessment")
# The manager approves orders up to this amount and rejects the others.
APPROVAL_LIMIT = 100.0
DEADLINE_SECONDS = 25.0
ORDERS = (("1001", 42.50), ("1002", 19.99), ("1003", 250.00))
QUIZZES = (("math-101", 3.0, ["ann", "bo", "cy", "di"]), ("chem-201", 4.0, ["ed", "flo", "gus"]))


# -- live progress ---------------------------------------------------------------------


@dataclass
class Row:
    """One workflow's line on the board."""

    workflow_id: str
    step: str = "-"
    status: str = "PENDING"
    message: str = "waiting for a worker"

    def line(self) -> str:
        return f"  {self.workflow_id:<28} {self.step:>5}  {self.status:<9}  {self.message}"


class Board:
    """The owner's workflows, one line each: redrawn in place on a terminal, else a
    line printed for each change."""

    def __init__(self, workflow_ids: list[str], started: float) -> None:
        self.rows = {workflow_id: Row(workflow_id) for workflow_id in workflow_ids}
        self.started = started
        self.tty = sys.stdout.isatty()
        self._drawn = 0

    def elapsed(self) -> str:
        return f"{time.monotonic() - self.started:5.1f}s"

    def open_ids(self) -> set[str]:
        return {w for w, row in self.rows.items() if row.status in ("PENDING", "RUNNING")}

    def update(self, workflow_id: str, *, step: str, status: str, message: str) -> None:
        row = self.rows.get(workflow_id)
        if row is None or (row.step, row.status, row.message) == (step, status, message):
            return
        row.step, row.status, row.message = step, status, message
        if not self.tty:
            print(f"{self.elapsed()} {row.line().strip()}", flush=True)

    def note(self, text: str) -> None:
        """Print a line above the board."""
        self._erase()
        print(f"{self.elapsed()} {text}" if not self.tty else f"  > {text}", flush=True)
        self.draw()

    def draw(self) -> None:
        if not self.tty:
            return
        self._erase()
        lines = [f"Live progress of {OWNER}'s workflows ({self.elapsed().strip()})"]
        lines += [row.line() for row in self.rows.values()]
        width = shutil.get_terminal_size((120, 24)).columns - 1
        sys.stdout.write("".join(line[:width] + "\n" for line in lines))
        sys.stdout.flush()
        self._drawn = len(lines)

    def _erase(self) -> None:
        if self.tty and self._drawn:
            sys.stdout.write(f"\x1b[{self._drawn}F\x1b[J")
            self._drawn = 0


def stop_if_cancelled() -> None:
    """Raise CancelledError if this task was cancelled, even if the cancellation was lost.

    redis-py (with its default 5 s socket timeout) sends each command through
    `asyncio.wait_for`, which on Python 3.11 drops a `cancel()` that arrives as the
    command completes: loops over Redis calls check here, so that stopping them
    (Ctrl-C included) always works.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def follow_progress(board: Board, interval: float = 0.25) -> None:
    """Feed the board from `loom.get_progress`: each open workflow's agent message and step."""
    while True:
        stop_if_cancelled()
        workflows = (await loom.get_progress(OWNER))["workflows"]
        active = {w["workflow_id"]: w for w in workflows}
        for workflow_id, w in active.items():
            board.update(
                workflow_id,
                step=f"{w['current_step']}/{w['total_steps']}",
                status=w["status"],
                message=w["message"],
            )
        # Progress lists only open workflows: the others have ended.
        for workflow_id in board.open_ids() - active.keys():
            info = await loom.get_handle(workflow_id).describe()
            if loom.Status(info["status"]).is_terminal:
                step = f"{info['current_step']}/{info['total_steps']}"
                board.update(workflow_id, step=step, status=info["status"], message="done")
        board.draw()
        await asyncio.sleep(interval)


# -- the manager -----------------------------------------------------------------------


async def manage(
    handle: loom.WorkflowHandle[Any], amount: float, delay: float, board: Board
) -> None:
    """Wait until the order waits for approval, then approve or reject it by signal."""
    while True:
        stop_if_cancelled()
        info = await handle.describe()
        if info["step_name"] == "await_approval" or loom.Status(info["status"]).is_terminal:
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(delay)
    approved = amount <= APPROVAL_LIMIT
    try:
        await handle.signal("approve", {"approved": approved, "by": "bob"})
    except loom.WorkflowExecutionError:  # it has ended already (an earlier run's order)
        return
    verdict = "approves" if approved else f"rejects (over {APPROVAL_LIMIT:g})"
    board.note(f"bob {verdict} {handle.workflow_id} ({amount:.2f}): signal 'approve' sent")


# -- results ---------------------------------------------------------------------------


async def outcome(handle: loom.WorkflowHandle[Any], deadline: float) -> tuple[str, Any]:
    """('ok', final state) or ('error', the exception) of a workflow, by the deadline."""
    while True:
        stop_if_cancelled()
        # Waits of at most 4 s: redis-py 8 fails a read that waits 5 s (its default
        # socket timeout), and result() may wait up to 5 s on Redis.
        timeout = min(max(deadline - time.monotonic(), 0.1), 4.0)
        try:
            return "ok", await handle.result(timeout=timeout)
        except loom.WorkflowStillRunningError as exc:
            if time.monotonic() >= deadline:
                return "error", exc
        except loom.LoomError as exc:
            return "error", exc


def failure(error: loom.LoomError) -> str:
    if isinstance(error, loom.WorkflowStillRunningError):
        return f"still {error.status} at the deadline: it goes on in the next run"
    return f"{type(error).__name__}: {error}"


def describe_result(state: dict[str, Any]) -> str:
    if "quiz_id" in state:
        result = state.get("result") or {}
        return (
            f"{state['quiz_id']}: {len(state.get('submissions') or [])} submissions graded "
            f"in parallel, scores {result.get('scores')}, average {result.get('average')}"
        )
    if state.get("email_sent"):
        return f"approved by {state.get('approved_by')} at {state.get('approved_at')}, email sent"
    if state.get("refunded"):
        return f"rejected by {state.get('approved_by') or 'timeout'}, payment refunded"
    return repr(state)


def print_history(events: list[loom.Event], workflow_id: str) -> None:
    chain = " > ".join(str(e.type) for e in events)
    print(f"\nHistory of {workflow_id} ({len(events)} events, one Redis Stream entry each):")
    print(textwrap.fill(chain, width=96, initial_indent="  ", subsequent_indent="  "))


# -- the run ---------------------------------------------------------------------------


async def run_workflows(url: str, started: float) -> bool:
    """Start the workflows, approve the orders, follow progress; True if all completed."""
    loom.configure(url=url)
    run = f"{time.strftime('%H%M%S')}-{uuid.uuid4().hex[:4]}"

    # Workflows an interrupted earlier run left open resume on this run's worker.
    leftovers = [
        w
        for w in (await loom.get_progress(OWNER))["workflows"]
        if w["status"] in (loom.Status.PENDING, loom.Status.RUNNING)
    ]
    handles = {w["workflow_id"]: loom.get_handle(w["workflow_id"]) for w in leftovers}
    if leftovers:
        print(
            f"{len(leftovers)} workflow(s) left open by an interrupted run resume now "
            "(tasks the stopped worker held are taken over when their lease ends)"
        )

    amounts: dict[str, float] = {}
    mine: set[str] = set()  # this run's workflows
    for number, amount in ORDERS:
        order = OrderInput(
            order_id=f"A-{number}",
            customer_email=f"{OWNER}@example.com",
            amount=amount,
            approval_timeout_seconds=20.0,
        )
        handle = await OrderWorkflow.start(order, workflow_id=f"order-{number}-{run}", owner=OWNER)
        handles[handle.workflow_id] = handle
        amounts[handle.workflow_id] = amount
        mine.add(handle.workflow_id)
    for lesson, window, students in QUIZZES:
        quiz = QuizInput(lesson_id=lesson, students=students, quiz_window_seconds=window)
        quiz_handle = await AssessmentWorkflow.start(
            quiz, workflow_id=f"quiz-{lesson}-{run}", owner=OWNER
        )
        handles[quiz_handle.workflow_id] = quiz_handle
        mine.add(quiz_handle.workflow_id)
    print(
        f"Started {len(ORDERS)} OrderProcessing and {len(QUIZZES)} AssessmentWorkflow "
        f"workflows for owner {OWNER!r} (run {run})\n"
    )

    board = Board(list(handles), started)
    board.draw()
    for w in leftovers:
        if w["workflow_name"] == "OrderProcessing":
            order_input = (await handles[w["workflow_id"]].describe())["input"] or {}
            amounts[w["workflow_id"]] = float(order_input.get("amount", 0.0))
    deadline = time.monotonic() + DEADLINE_SECONDS
    async with asyncio.TaskGroup() as background:
        watchers = [background.create_task(follow_progress(board))]
        managers = [
            background.create_task(manage(handles[w], amount, 0.8 + 0.6 * i, board))
            for i, (w, amount) in enumerate(amounts.items())
        ]
        outcomes = await asyncio.gather(*(outcome(h, deadline) for h in handles.values()))
        for task in (*watchers, *managers):
            task.cancel()
    for handle, (kind, value) in zip(handles.values(), outcomes, strict=True):
        info = await handle.describe()
        board.update(
            handle.workflow_id,
            step=f"{info['current_step']}/{info['total_steps']}",
            status=info["status"],
            message="done" if kind == "ok" else failure(value),
        )
    board.draw()

    print("\nResults (each workflow's final state):")
    for handle, (kind, value) in zip(handles.values(), outcomes, strict=True):
        text = describe_result(value) if kind == "ok" else failure(value)
        print(f"  {handle.workflow_id:<28} {text}")
    first_order = handles[f"order-{ORDERS[0][0]}-{run}"]
    print_history(await first_order.history(), first_order.workflow_id)

    async with loom.Client.connect(url) as client:
        counts = {status: n for status, n in (await client.stats()).items() if n}
    print(f"\nAll workflows in Redis (every run so far): {counts}")
    # This run's workflows must complete; an earlier run's may still be going.
    return all(kind == "ok" for w, (kind, _) in zip(handles, outcomes, strict=True) if w in mine)


# -- processes -------------------------------------------------------------------------


def port_in_use(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.3):
        return True
    return False


def start_loom(log_path: Path, *arguments: str) -> subprocess.Popen[bytes]:
    """`loom ARGUMENTS` in its own process group, so that only this demo stops it
    (SIGTERM), its output in `log_path`."""
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "loom_redis", *arguments],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def start_worker(url: str, metrics_port: int) -> subprocess.Popen[bytes]:
    return start_loom(
        WORKER_LOG,
        "worker",
        *WORKER_MODULES,
        "--url",
        url,
        "--metrics-port",
        str(metrics_port),
        "--drain",
        "5",
        # A task that a stopped worker held goes to another one after 5 s (default 30).
        "--lease",
        "5",
    )


def start_dashboard(url: str, port: int) -> subprocess.Popen[bytes]:
    return start_loom(WEB_LOG, "web", "--url", url, "--host", "127.0.0.1", "--port", str(port))


def wait_until_ready(process: subprocess.Popen[bytes], probe: str, log: Path) -> None:
    """Wait until `probe` (a URL of the process: the worker's /readyz, which answers once
    it reads its queues, or the dashboard's API) answers."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{probe} exited with code {process.returncode}\n{log_tail(log)}")
        with contextlib.suppress(OSError), urllib.request.urlopen(probe, timeout=1):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{probe} did not answer within 20s\n{log_tail(log)}")


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM: the worker stops reading, finishes its in-flight tasks and exits (the
    dashboard just exits)."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def metric_lines(metrics_port: int) -> Iterator[str]:
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=2) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(("loom_workflows_closed_total", "loom_tasks_total")):
                yield line


def log_tail(log: Path, lines: int = 15) -> str:
    if not log.exists():
        return ""
    tail = log.read_text(errors="replace").splitlines()[-lines:]
    return f"{log.name}:\n" + "\n".join("  " + line for line in tail)


# The signals (Ctrl-C, SIGTERM) this demo received: after one, errors are part of stopping.
received: list[int] = []


def _interrupt(signum: int, frame: FrameType | None) -> None:
    received.append(signum)
    raise KeyboardInterrupt


def main() -> int:
    started = time.monotonic()
    # Ctrl-C also reaches the server (it is in this process group) and stops it at once:
    # whatever fails after that is part of being interrupted.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    DATA_DIR.mkdir(exist_ok=True)
    if port_in_use(PORT):
        print(
            f"Port {PORT} is taken (by an earlier demo's server that is still running?): "
            "stop it, or choose another port with LOOM_DEMO_PORT=...",
            file=sys.stderr,
        )
        return 1
    if port_in_use(WEB_PORT):
        print(
            f"Port {WEB_PORT} is taken: choose another one for the dashboard with "
            "LOOM_DEMO_WEB_PORT=...",
            file=sys.stderr,
        )
        return 1
    server = EmbeddedServer(DATA_DIR, port=PORT, appendonly=True)
    processes: list[subprocess.Popen[bytes]] = []
    try:
        server.start()
        print(f"Valkey on {server.url}, append-only file under {DATA_DIR.relative_to(ROOT)}/")
        metrics_port = free_port()
        worker = start_worker(server.url, metrics_port)
        processes.append(worker)
        wait_until_ready(worker, f"http://127.0.0.1:{metrics_port}/readyz", WORKER_LOG)
        print(
            f"Worker (pid {worker.pid}) runs {', '.join(WORKER_MODULES)}; "
            f"its log: {WORKER_LOG.relative_to(ROOT)}"
        )
        dashboard = f"http://127.0.0.1:{WEB_PORT}/"
        processes.append(start_dashboard(server.url, WEB_PORT))
        wait_until_ready(processes[-1], dashboard + "api/me", WEB_LOG)
        print(f"Dashboard: {dashboard} (open it now to watch the workflows run)")
        completed = asyncio.run(run_workflows(server.url, started))
        print(f"\nWorker metrics: http://127.0.0.1:{metrics_port}/metrics (and /healthz, /readyz)")
        with contextlib.suppress(OSError, urllib.error.URLError):
            for line in metric_lines(metrics_port):
                print(f"  {line}")
        print(f"Dashboard: {dashboard}")
        if sys.stdin.isatty():
            input("Press Enter to stop the worker, the dashboard and the server. ")
        return 0 if completed else 1
    except KeyboardInterrupt:
        print("\nInterrupted: stopping the worker and the server", file=sys.stderr)
        return 130
    except Exception as exc:
        if received:
            print(f"\nInterrupted: stopping the worker and the server ({exc})", file=sys.stderr)
            return 130
        if not isinstance(exc, RuntimeError | loom.LoomError):
            raise
        print(f"\nDemo failed: {exc}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for process in reversed(processes):
            stop(process)
        server.stop()
        print(
            f"Stopped the worker, the dashboard and the server after "
            f"{time.monotonic() - started:.1f}s."
        )


if __name__ == "__main__":
    sys.exit(main())
