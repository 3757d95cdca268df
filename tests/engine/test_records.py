"""How failures are written into history: `clip` and `failure_record`."""

from __future__ import annotations

import pytest

from loom_redis.engine import clip, failure_record
from loom_redis.errors import ActivityFailedError


@pytest.mark.parametrize(
    ("text", "limit", "clipped"),
    [
        ("", 5, ""),
        ("12345", 5, "12345"),
        ("123456", 5, "12345... (1 characters cut)"),
        ("x" * 2500, 2000, "x" * 2000 + "... (500 characters cut)"),
    ],
)
def test_clip_keeps_text_within_its_limit_and_says_how_much_it_cut(
    text: str, limit: int, clipped: str
) -> None:
    assert clip(text, limit) == clipped


def raised(error: BaseException) -> BaseException:
    """`error` as workflow code raises it: with a traceback."""
    try:
        raise error
    except BaseException as caught:
        return caught


def test_a_failure_records_its_type_message_step_and_traceback() -> None:
    record = failure_record(raised(ValueError("1000 is too large")), "check")
    traceback = record.pop("traceback")
    assert record == {"type": "ValueError", "message": "1000 is too large", "step": "check"}
    assert traceback.startswith("Traceback (most recent call last):")
    assert traceback.endswith("ValueError: 1000 is too large\n")


def test_an_activity_failure_records_the_activity() -> None:
    error = ActivityFailedError("engine_refuse", "declined", error_type="RuntimeError", attempts=3)
    record = failure_record(raised(error), None)
    assert {k: v for k, v in record.items() if k != "traceback"} == {
        "type": "ActivityFailedError",
        "message": str(error),
        "step": None,
        "activity_name": "engine_refuse",
        "error_message": "declined",
        "error_type": "RuntimeError",
        "attempts": 3,
    }


def test_a_long_message_and_traceback_are_cut_to_fit_their_event() -> None:
    record = failure_record(raised(RuntimeError("x" * 10_000)), "s")
    assert record["message"] == "x" * 2000 + "... (8000 characters cut)"
    assert len(record["traceback"]) == 8000
    assert record["traceback"].endswith("x" * 100 + "\n")
