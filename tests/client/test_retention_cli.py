"""Retention from the command line and the client: `loom init --retention`, a start's
`retention`, `loom prune` and `loom history export`, and the errors of bad values."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

import loom_redis as loom
from loom_redis.store import Store
from loom_redis.testing import running_worker
from tests.support import cli, cli_text

pytestmark = pytest.mark.anyio


@loom.workflow(name="RetentionCliJob")
class Job(loom.Workflow[dict, dict]):
    @loom.step()
    async def run(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        if ctx.input.get("wait"):
            await ctx.state.set("signal", await ctx.wait_for_signal("go"))
        if ctx.input.get("fail"):
            raise RuntimeError("asked to fail")
        await ctx.state.set("done", True)


def where(redis_url: str, namespace: str) -> tuple[str, ...]:
    return ("--url", redis_url, "--namespace", namespace)


@pytest.mark.parametrize(
    ("given", "shown", "ms"),
    [
        ("30s", "30s", 30_000),
        ("15m", "15m", 900_000),
        ("12h", "12h", 43_200_000),
        ("7d", "7d", 604_800_000),
        ("90", "90s", 90_000),
        ("1.5h", "90m", 5_400_000),
        ("0", "0s", 0),
    ],
)
async def test_init_sets_the_retention_of_a_new_or_existing_namespace(
    redis_url: str, namespace: str, given: str, shown: str, ms: int
) -> None:
    result = await cli("init", *where(redis_url, namespace))
    assert result.exit_code == 0, cli_text(result)
    assert "retention 7d" in result.output
    result = await cli("init", "--retention", given, *where(redis_url, namespace))
    assert result.exit_code == 0, cli_text(result)
    assert f"with 16 shards, retention {shown}" in result.output
    store = await Store.open(redis_url, namespace)
    try:
        assert store.retention_ms == ms
    finally:
        await store.close()


@pytest.mark.parametrize("value", ["7x", "-1", "abc", "1 day", "", "5d3h"])
@pytest.mark.parametrize("command", [["init", "--retention"], ["prune", "--older-than"]])
async def test_a_bad_duration_is_refused_naming_the_flag_and_the_value(
    redis_url: str, namespace: str, value: str, command: list[str]
) -> None:
    result = await cli(*command, value, *where(redis_url, namespace))
    assert result.exit_code == 2, cli_text(result)
    assert f"Invalid value for '{command[1]}': {value!r} is not a duration" in result.output
    assert "30s, 15m, 12h or 7d" in result.output


@pytest.mark.parametrize(
    ("retention", "problem"),
    [
        ("1d", "must be a datetime.timedelta or a number of seconds, got str '1d'"),
        (-1, "must be 0 seconds or more, got -1"),
        (float("nan"), "must be 0 seconds or more, got nan"),
        (timedelta(seconds=-5), "must be 0 seconds or more"),
        (True, "must be a datetime.timedelta or a number of seconds, got bool True"),
    ],
)
async def test_a_bad_start_retention_is_refused_and_nothing_is_written(
    client: loom.Client, retention: object, problem: str
) -> None:
    with pytest.raises(loom.ConfigurationError) as refused:
        await Job.start({}, workflow_id="bad", retention=retention)  # type: ignore[arg-type]
    assert f"retention of workflow 'bad' (RetentionCliJob) {problem}" in str(refused.value)
    with pytest.raises(loom.WorkflowNotFoundError):
        await client.describe("bad")


async def test_a_start_retention_is_stored_as_given(client: loom.Client) -> None:
    await Job.start({}, workflow_id="day", retention=timedelta(days=1))
    await Job.start({}, workflow_id="secs", retention=2.5)
    assert (await client.store.read_meta("day"))["retention"] == b"86400000"
    assert (await client.store.read_meta("secs"))["retention"] == b"2500"


async def test_prune_deletes_closed_workflows_only(
    client: loom.Client, redis_url: str, namespace: str
) -> None:
    async with running_worker(redis_url, namespace):
        for workflow_id in ("ok-1", "ok-2"):
            await (await Job.start({}, workflow_id=workflow_id)).result(timeout=10)
        failed = await Job.start({"fail": True}, workflow_id="bad-1")
        with pytest.raises(loom.LoomError, match="asked to fail"):
            await failed.result(timeout=10)
        waiting = await Job.start({"wait": True}, workflow_id="open-1")

        # They closed just now: not an hour ago.
        result = await cli("prune", "--older-than", "1h", *where(redis_url, namespace))
        assert result.exit_code == 0, cli_text(result)
        assert result.output == "deleted 0 workflow(s)\n"

        result = await cli("prune", "--older-than", "0s", "--dry-run", *where(redis_url, namespace))
        assert result.exit_code == 0, cli_text(result)
        lines = result.output.splitlines()
        assert sorted(lines[:-1]) == ["bad-1 FAILED", "ok-1 COMPLETED", "ok-2 COMPLETED"]
        assert lines[-1] == "would delete 3 workflow(s) (COMPLETED 2, FAILED 1)"
        assert len(await client.list_workflows()) == 4

        result = await cli(
            "prune", "--older-than", "0", "-s", "failed", *where(redis_url, namespace)
        )
        assert result.exit_code == 0, cli_text(result)
        assert result.output == "deleted 1 workflow(s) (FAILED 1)\n"
        with pytest.raises(loom.WorkflowNotFoundError):
            await client.describe("bad-1")

        result = await cli("prune", "--older-than", "0s", *where(redis_url, namespace))
        assert result.exit_code == 0, cli_text(result)
        assert result.output == "deleted 2 workflow(s) (COMPLETED 2)\n"
        assert [w["workflow_id"] for w in await client.list_workflows()] == ["open-1"]

        await waiting.signal("go", "on")
        assert await waiting.result(timeout=10) == {"signal": "on", "done": True}


async def test_prune_refuses_an_open_status(redis_url: str, namespace: str) -> None:
    result = await cli("prune", "--older-than", "1d", "-s", "RUNNING", *where(redis_url, namespace))
    assert result.exit_code == 2
    assert "Invalid value for '-s' / '--status': 'RUNNING' is not one of" in result.output


async def test_history_export_round_trips_a_history(
    client: loom.Client, redis_url: str, namespace: str, tmp_path: Path
) -> None:
    async with running_worker(redis_url, namespace):
        handle = await Job.start({"wait": True}, workflow_id="kept")
        await handle.signal("go", {"n": [1, 2], "s": "é"})
        await handle.result(timeout=10)
    history = await client.history_entries("kept")

    out = tmp_path / "kept.jsonl"
    result = await cli("history", "export", "kept", "-o", str(out), *where(redis_url, namespace))
    assert result.exit_code == 0, cli_text(result)
    assert result.output == ""
    exported = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert exported == history
    types = [event["type"] for event in exported]
    assert types[0] == "WORKFLOW_STARTED" and "WORKFLOW_COMPLETED" in types
    signal = next(e for e in exported if e["type"] == "SIGNAL_RECEIVED")
    assert signal["data"] == {"name": "go", "payload": {"n": [1, 2], "s": "é"}}

    result = await cli("history", "export", "kept", *where(redis_url, namespace))
    assert result.exit_code == 0, cli_text(result)
    assert [json.loads(line) for line in result.output.splitlines()] == exported

    result = await cli("history", "export", "nope", *where(redis_url, namespace))
    assert result.exit_code == 1
    assert "nope" in result.output and "not found" in result.output
