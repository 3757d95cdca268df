"""Logging of the worker and the CLI: plain text by default, JSON lines on request, and
what every record about a task carries (the workflow id and name, step, activity,
attempt) so that a log search finds everything one workflow did."""

from __future__ import annotations

import json
import logging
import sys
import time
from contextvars import ContextVar
from typing import Any, Literal

LogFormat = Literal["text", "json"]

# The fields a record about a task carries, in the order a JSON line shows them.
TASK_FIELDS = ("workflow_id", "workflow", "step", "activity", "attempt", "queue", "task")

# The task an executor runs now. Each executor is a task of its own, so each sees its
# own; a fresh dict per task, which the task's code completes as it learns more.
_about: ContextVar[dict[str, Any] | None] = ContextVar("loom_task", default=None)


class about_task:
    """Records logged inside the block carry `fields` (and those of an enclosing block).

    A class rather than a generator: it is entered for every task and activity attempt,
    and a generator-based context manager costs twice as much."""

    __slots__ = ("_fields", "_token")

    def __init__(self, **fields: Any) -> None:
        self._fields = fields

    def __enter__(self) -> None:
        enclosing = _about.get()
        self._token = _about.set({**enclosing, **self._fields} if enclosing else self._fields)

    def __exit__(self, *exc_info: object) -> None:
        _about.reset(self._token)


def learned(**fields: Any) -> None:
    """Add what the running task has learned (its workflow's name, its step) to the
    fields its records carry; nothing outside `about_task`."""
    current = _about.get()
    if current is not None:
        current.update(fields)


class _TaskFields(logging.Filter):
    """Put the running task's fields on each record (those the record lacks: workflow
    code's logger sets its own, which are more precise)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in (_about.get() or {}).items():
            if not hasattr(record, name):
                setattr(record, name, value)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the task's fields, and the
    exception (its traceback as text) if any."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _iso_time(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in TASK_FIELDS:
            value = getattr(record, name, None)
            if value is not None and value != "":
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def _iso_time(created: float) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{seconds}.{int(created % 1 * 1000):03d}Z"


def configure(*, verbose: bool = False, log_format: LogFormat = "text") -> None:
    """Log to stderr at INFO (DEBUG if `verbose`), as text or JSON lines. Like
    `logging.basicConfig`, it leaves alone a process whose logging is configured already
    (an application that runs the CLI, a test runner), but replaces its own handler."""
    root = logging.getLogger()
    ours = [handler for handler in root.handlers if isinstance(handler, _Handler)]
    if len(ours) < len(root.handlers):
        return
    for handler in ours:
        root.removeHandler(handler)
    handler = _Handler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_TaskFields())
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler `configure` installs (and may replace)."""
