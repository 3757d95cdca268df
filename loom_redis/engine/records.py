"""How failures are written into history: bounded messages and error records."""

from __future__ import annotations

import traceback
from typing import Any

from ..errors import ActivityFailedError


def clip(text: str, limit: int = 2000) -> str:
    """`text`, cut to `limit` characters: an error message must fit in its event."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} characters cut)"


def failure_record(error: BaseException, step: str | None) -> dict[str, Any]:
    """How a workflow failure is stored, so `result()` can raise the same kind of error."""
    record: dict[str, Any] = {
        "type": type(error).__name__,
        "message": clip(str(error)),
        "step": step,
        "traceback": "".join(traceback.format_exception(error))[-8000:],
    }
    if isinstance(error, ActivityFailedError):
        record.update(
            activity_name=error.activity_name,
            error_message=error.error_message,
            error_type=error.error_type,
            attempts=error.attempts,
        )
    return record
