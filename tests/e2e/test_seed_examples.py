"""The seed README's two workflows, unchanged but for the import, run by a real worker:
final states, step order in history, the exact command sequence and event counts."""

from __future__ import annotations

import logging
import re
from collections import Counter

import pytest

import loom_redis as loom
from loom_redis.codec import decode
from loom_redis.events import COMMAND_TYPES, Event, EventType, describe_command
from loom_redis.testing import running_worker
from tests.seed_workflows import AssessmentWorkflow, OrderInput, OrderWorkflow

pytestmark = pytest.mark.anyio

E = EventType


def step_names(history: list[Event]) -> list[str]:
    return [e.data["name"] for e in history if e.type == E.STEP_STARTED]


def commands(history: list[Event]) -> list[str]:
    """The workflow's own commands, in history order, as `describe_command` names them."""
    return [
        describe_command(e.type, e.data)
        for e in history
        if e.type
        not in (
            E.WORKFLOW_STARTED,
            E.ACTIVITY_COMPLETED,
            E.ACTIVITY_FAILED,
            E.TIMER_FIRED,
            E.SIGNAL_RECEIVED,
            E.WORKFLOW_TASK_COMPLETED,
        )
    ]


def check_sequence_numbers(history: list[Event]) -> None:
    """Command seqs run 1, 2, 3... in history order; each completion answers one schedule."""
    seqs = [e.seq for e in history if e.type in COMMAND_TYPES]
    assert seqs == list(range(1, len(seqs) + 1))
    scheduled = [e.seq for e in history if e.type == E.ACTIVITY_SCHEDULED]
    completed = [e.seq for e in history if e.type == E.ACTIVITY_COMPLETED]
    assert completed == scheduled  # sequential steps: completed in the order scheduled
    assert history[0].type == E.WORKFLOW_STARTED
    assert history[-1].type == E.WORKFLOW_TASK_COMPLETED
    assert history[-2].type == E.WORKFLOW_COMPLETED


async def test_order_workflow_from_quick_start(
    client: loom.Client, redis_url: str, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="loom_redis.workflow")
    async with running_worker(redis_url, namespace):
        # As the README's main() does it.
        handle = await OrderWorkflow.start(
            OrderInput(
                order_id="ORD-12345",
                customer_email="customer@example.com",
            )
        )
        assert handle.workflow_id
        result = await handle.result(timeout=15)
    assert result == {"payment_confirmed": True, "email_sent": True}
    assert await handle.status() == "COMPLETED"

    history = await handle.history()
    assert step_names(history) == ["process_payment", "send_confirmation"]
    assert commands(history) == [
        "STEP_STARTED(process_payment)",
        "ACTIVITY_SCHEDULED(seed_process_payment)",
        "STATE_SET(payment_confirmed)",
        "STEP_STARTED(send_confirmation)",
        "ACTIVITY_SCHEDULED(seed_send_email)",
        "STATE_SET(email_sent)",
        "WORKFLOW_COMPLETED",
    ]
    check_sequence_numbers(history)
    assert Counter(e.type for e in history) == {
        E.WORKFLOW_STARTED: 1,
        E.STEP_STARTED: 2,
        E.ACTIVITY_SCHEDULED: 2,
        E.ACTIVITY_COMPLETED: 2,
        E.STATE_SET: 2,
        E.WORKFLOW_COMPLETED: 1,
        # Three workflow tasks: start, after the payment, after the email.
        E.WORKFLOW_TASK_COMPLETED: 3,
    }

    # The activities got the README's arguments and options; their results are recorded.
    scheduled = [e.data for e in history if e.type == E.ACTIVITY_SCHEDULED]
    assert scheduled[0]["args"] == ["ORD-12345"]
    assert (scheduled[0]["retry_count"], scheduled[0]["timeout_seconds"]) == (3, 30)
    assert scheduled[1]["args"] == ["customer@example.com", "ORD-12345"]
    assert scheduled[1]["retry_count"] == 2
    completed = [e.data for e in history if e.type == E.ACTIVITY_COMPLETED]
    assert [(c["result"], c["attempts"]) for c in completed] == [(True, 1), (None, 1)]
    assert [e.data["value"] for e in history if e.type == E.STATE_SET] == [True, True]

    info = await handle.describe()
    assert (info["workflow_name"], info["version"]) == ("seed_OrderProcessing", "1.0.0")
    assert (info["current_step"], info["total_steps"]) == (2, 2)
    assert info["input"] == {"order_id": "ORD-12345", "customer_email": "customer@example.com"}

    # ctx.logger logs once, never again while later workflow tasks replay the step.
    messages = [r.getMessage() for r in caplog.records if r.name == "loom_redis.workflow"]
    assert messages == [
        f"[{handle.workflow_id}] Payment processed: True",
        f"[{handle.workflow_id}] Confirmation email sent",
    ]


async def test_many_orders_run_at_once(client: loom.Client, redis_url: str, namespace: str) -> None:
    async with running_worker(redis_url, namespace, concurrency=4):
        handles = [
            await OrderWorkflow.start(
                {"order_id": f"ORD-{n}", "customer_email": f"c{n}@example.com"},
                workflow_id=f"order-{n}",
            )
            for n in range(10)
        ]
        for handle in handles:
            assert await handle.result(timeout=15) == {
                "payment_confirmed": True,
                "email_sent": True,
            }
    for n, handle in enumerate(handles):
        history = await handle.history()
        args = [e.data["args"] for e in history if e.type == E.ACTIVITY_SCHEDULED]
        assert args == [[f"ORD-{n}"], [f"c{n}@example.com", f"ORD-{n}"]]
        check_sequence_numbers(history)


ASSESSMENT_STEPS = [
    "generate_quiz",
    "send_to_lms",
    "fetch_wait_time",
    "wait_step",
    "pull_submissions",
    "assess_result",
    "store_result",
]


async def test_assessment_workflow_from_complete_example(
    client: loom.Client, redis_url: str, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="loom_redis.workflow")
    # Started before any worker runs, as the README's main() does: it is PENDING.
    handle = await AssessmentWorkflow.start({"lesson_id": "lesson_123", "wait_seconds": 1})
    assert await handle.status() == "PENDING"
    async with running_worker(redis_url, namespace):
        result = await handle.result(timeout=20)
    assert await handle.status() == "COMPLETED"

    quiz_id = result["quiz_id"]
    assert re.fullmatch(r"Quiz-\d{4}", quiz_id)
    assert result["wait_time"] == 1
    assert result["submissions"] == ["Submission 1", "Submission 2", "Submission 3"]
    assert result["result"]["quiz_id"] == quiz_id
    assert result["result"]["status"] == "Completed"
    assert 50 <= result["result"]["score"] <= 100
    assert set(result) == {"quiz_id", "wait_time", "submissions", "result"}

    history = await handle.history()
    assert step_names(history) == ASSESSMENT_STEPS
    assert commands(history) == [
        "STEP_STARTED(generate_quiz)",
        "ACTIVITY_SCHEDULED(seed_GenerateQuiz)",
        "STATE_SET(quiz_id)",
        "STEP_STARTED(send_to_lms)",
        "ACTIVITY_SCHEDULED(seed_SendQuizToLMS)",
        "STEP_STARTED(fetch_wait_time)",
        "ACTIVITY_SCHEDULED(seed_FetchWaitTime)",
        "STATE_SET(wait_time)",
        "STEP_STARTED(wait_step)",
        "TIMER_STARTED",
        "STEP_STARTED(pull_submissions)",
        "ACTIVITY_SCHEDULED(seed_PullSubmissions)",
        "STATE_SET(submissions)",
        "STEP_STARTED(assess_result)",
        "ACTIVITY_SCHEDULED(seed_AssessResult)",
        "STATE_SET(result)",
        "STEP_STARTED(store_result)",
        "ACTIVITY_SCHEDULED(seed_StoreResult)",
        "WORKFLOW_COMPLETED",
    ]
    check_sequence_numbers(history)
    assert Counter(e.type for e in history) == {
        E.WORKFLOW_STARTED: 1,
        E.STEP_STARTED: 7,
        E.ACTIVITY_SCHEDULED: 6,
        E.ACTIVITY_COMPLETED: 6,
        E.STATE_SET: 4,
        E.TIMER_STARTED: 1,
        E.TIMER_FIRED: 1,
        E.WORKFLOW_COMPLETED: 1,
        # One workflow task per activity result and timer, plus the first.
        E.WORKFLOW_TASK_COMPLETED: 8,
    }

    # The activities passed the quiz along, as the steps read it back from state.
    scheduled = {e.data["name"]: e.data["args"] for e in history if e.type == E.ACTIVITY_SCHEDULED}
    assert scheduled == {
        "seed_GenerateQuiz": [],
        "seed_SendQuizToLMS": [quiz_id],
        "seed_FetchWaitTime": [1],
        "seed_PullSubmissions": [quiz_id],
        "seed_AssessResult": [quiz_id],
        "seed_StoreResult": [result["result"]],
    }

    # The durable timer waited its second: it fired no earlier than it was due.
    started = next(e for e in history if e.type == E.TIMER_STARTED)
    fired = next(e for e in history if e.type == E.TIMER_FIRED)
    assert started.data["seconds"] == 1
    assert fired.seq == started.seq
    assert fired.time_ms >= started.data["due_ms"]

    info = await handle.describe()
    assert (info["current_step"], info["total_steps"]) == (7, 7)
    assert info["step_name"] == "store_result"

    # The worker published the definition (for the dashboard): description and steps.
    raw = await client.store.redis.hget(client.store.keys.definitions(), "seed_AssessmentWorkflow")
    definition = decode(raw)
    assert definition["description"] == "A workflow for Quiz management."
    assert [s["name"] for s in definition["steps"]] == ASSESSMENT_STEPS

    messages = [r.getMessage() for r in caplog.records if r.name == "loom_redis.workflow"]
    prefix = f"[{handle.workflow_id}] "
    assert messages == [
        prefix + "Generating Quiz...",
        prefix + f"Sending Quiz {quiz_id} to LMS...",
        prefix + "Fetching wait time...",
        prefix + "Waiting for 1 seconds...",
        prefix + "Workflow completed!",
    ]
