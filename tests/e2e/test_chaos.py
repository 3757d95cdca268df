"""The chaos harness (bench/chaos.py) run in the suite: worker subprocesses SIGKILLed every
1.5 s and one SIGKILL of the Redis server itself (restarted from its AOF, appendfsync
always); no workflow may be lost and no transition duplicated.

The bounded run is part of `make test`; the full one (N=1000, K=5, M=4, T=2 s) is
marked slow (`make test-slow`).
"""

from __future__ import annotations

import io

import pytest

from bench.chaos import Chaos, ChaosConfig, ChaosReport, expected_event_counts, run_chaos
from loom_redis.events import Event, EventType

pytestmark = pytest.mark.anyio


def history_of(*entries: tuple[EventType, int]) -> list[Event]:
    return [Event(f"{i}-0", t, seq, i, {}) for i, (t, seq) in enumerate(entries)]


SOUND = (
    (EventType.WORKFLOW_STARTED, 0),
    (EventType.STEP_STARTED, 1),
    (EventType.ACTIVITY_SCHEDULED, 2),
    (EventType.WORKFLOW_TASK_COMPLETED, 0),
    (EventType.ACTIVITY_COMPLETED, 2),
    (EventType.STATE_SET, 3),
    (EventType.STEP_STARTED, 4),
    (EventType.TIMER_STARTED, 5),
    (EventType.WORKFLOW_TASK_COMPLETED, 0),
    (EventType.TIMER_FIRED, 5),
    (EventType.STATE_UPDATE, 6),
    (EventType.STEP_STARTED, 7),
    (EventType.WORKFLOW_TASK_COMPLETED, 0),
    (EventType.SIGNAL_RECEIVED, 0),
    (EventType.STATE_SET, 8),
    (EventType.WORKFLOW_COMPLETED, 9),
    (EventType.WORKFLOW_TASK_COMPLETED, 0),
)


@pytest.mark.parametrize(
    ("extra", "duplicated", "signals"),
    [
        ((), 0, 0),
        (((EventType.ACTIVITY_COMPLETED, 2),), 1, 0),  # a result recorded twice
        (((EventType.TIMER_FIRED, 5),), 1, 0),  # a timer fired twice
        (((EventType.STATE_SET, 8),), 1, 0),  # a command appended twice
        (((EventType.STATE_SET, 10),), 1, 0),  # a state change made twice
        (((EventType.SIGNAL_RECEIVED, 0),), 0, 1),
    ],
)
def test_the_checker_counts_duplicates(
    extra: tuple[tuple[EventType, int], ...], duplicated: int, signals: int
) -> None:
    """The harness's history check can fail: it sees each kind of duplicate."""
    found, duplicate_signals, _ = Chaos.check_history(
        "w", history_of(*SOUND, *extra), expected_event_counts(1)
    )
    assert (found, duplicate_signals) == (duplicated, signals)


def test_the_checker_reports_missing_events() -> None:
    history = history_of(*(e for e in SOUND if e[0] != EventType.TIMER_FIRED))
    found, _, notes = Chaos.check_history("w", history, expected_event_counts(1))
    assert found == 0
    assert any("TIMER_FIRED" in note for note in notes), notes


def assert_sound(report: ChaosReport, config: ChaosConfig) -> None:
    table = report.table()
    assert report.workflows == config.workflows, table
    assert report.lost == 0, table
    assert report.duplicated_transitions == 0, table
    assert report.activities == config.workflows * config.activities, table
    # At least once: every recorded completion has a finished execution behind it.
    assert report.executions >= report.activities, table
    assert report.redis_restarts == config.redis_restarts, table
    assert report.kills >= 1, table
    assert report.pending_left == 0 and report.dead_letters == 0, table
    assert report.unexpected_worker_exits == 0, table
    # Liveness, not speed: a dead worker's tasks are taken over after the lease, not
    # after the survivors have worked through what they hold (a bound with wide margin;
    # the takeover itself is measured by bench/chaos.py).
    if report.max_takeover_delay is not None:
        assert report.max_takeover_delay < 10 * config.lease, table
    assert not report.problems, table
    assert report.ok, table


@pytest.mark.timeout(170)
async def test_bounded_chaos_loses_and_duplicates_nothing() -> None:
    config = ChaosConfig(
        workflows=40,
        activities=3,
        workers=2,
        kill_every=1.5,
        appendfsync="always",
        redis_restarts=1,
        lease=2.0,
        # Two workers, one killed every 1.5 s, live ~3 s: a task dies with its worker about
        # one time in six, so 5 deliveries (the default) would send a sound task to the
        # dead-letter stream in a percent or two of runs. That is the poison rule doing its
        # job (tests/worker/test_poison_task.py), not what this test measures.
        max_deliveries=10,
        activity_seconds=0.5,
        sleep_seconds=1.0,
        # Spread over ~10 s, so kills and the Redis restart land mid-run.
        start_rate=4.0,
        timeout=120.0,
        seed=1,
        verbose=False,
    )
    out = io.StringIO()
    report = await run_chaos(config, out)
    print("\n" + report.table())
    assert_sound(report, config)
    # The run lasted long enough for several kills, some of workers holding tasks.
    assert report.kills >= 3 and report.kills_with_tasks >= 1, report.table()


@pytest.mark.slow
@pytest.mark.timeout(1800)
async def test_full_chaos_loses_and_duplicates_nothing() -> None:
    config = ChaosConfig(
        workflows=1000,
        activities=5,
        workers=4,
        kill_every=2.0,
        appendfsync="always",
        redis_restarts=1,
        timeout=1500.0,
        seed=7,
        verbose=False,
    )
    report = await run_chaos(config, io.StringIO())
    print("\n" + report.table())
    assert_sound(report, config)
