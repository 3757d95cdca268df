"""`loom --log-format json worker`: every record about a task carries the workflow id
and name, its step, the activity and attempt, so that a log search finds what one
workflow did across workers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import loom_redis as loom
from tests.log_workflows import Greet
from tests.support import file_text, worker_process

pytestmark = pytest.mark.anyio


async def test_json_lines_carry_each_tasks_workflow_step_activity_and_attempt(
    client: loom.Client,
    redis_url: str,
    namespace: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LOOM_LOG_FORMAT", "json")
    output = tmp_path / "worker.out"
    async with worker_process(
        redis_url, namespace, tmp_path / "side.log", output, module="tests.log_workflows"
    ) as process:
        handle = await client.start(Greet, {})
        assert await handle.result(timeout=20) == {"steady": "steady", "flaky": "failed"}
        process.terminate()
        await process.wait()
    lines = [json.loads(line) for line in (await file_text(output)).splitlines()]
    assert all({"time", "level", "logger", "message"} <= line.keys() for line in lines)

    def about(message: str) -> list[dict[str, object]]:
        return [line for line in lines if line["message"].endswith(message)]

    # Workflow code's own logger: the workflow and the step it runs.
    (first,) = about("starting to greet")
    assert first["workflow_id"] == handle.id
    assert (first["workflow"], first["step"]) == ("logs_Greet", "first")
    (second,) = about("greeting again")
    assert (second["workflow"], second["step"]) == ("logs_Greet", "second")

    # Activity code's logger: the task's workflow, the activity and the attempt.
    (steady,) = about("calling the steady service")
    assert (steady["workflow_id"], steady["activity"], steady["attempt"]) == (
        handle.id,
        "logs_steady",
        1,
    )
    flaky = about("calling the flaky service")
    assert [(line["activity"], line["attempt"]) for line in flaky] == [
        ("logs_flaky", 1),
        ("logs_flaky", 2),
    ]
    assert all(line["workflow_id"] == handle.id for line in flaky)
    # The worker's own record of a failed attempt, with its exception.
    failures = [
        line
        for line in lines
        if line.get("activity") == "logs_flaky" and line["logger"] != "logs_app"
    ]
    assert failures, lines
    # Records about no task (the worker starting) carry no task fields.
    started = [line for line in lines if "reading queues" in line["message"]]
    assert started and "workflow_id" not in started[0]
