"""The errors loom-redis raises; each one names what failed."""

from __future__ import annotations

from typing import Any


class LoomError(Exception):
    """Base class of every loom-redis error."""


class ConfigurationError(LoomError, ValueError):
    """A setting, a URL, a namespace or a name (queue, owner, signal) is not usable."""


class RedisUnavailableError(LoomError, ConnectionError):
    """The Redis server cannot be reached or is not supported.

    `reason` is the message without the hint on where the URL comes from, which
    `names_url` adds in the words of the Python API (the CLI puts its own there)."""

    def __init__(self, reason: str, *, names_url: bool = False) -> None:
        super().__init__(f"{reason}; pass url= or set LOOM_REDIS_URL" if names_url else reason)
        self.reason = reason
        self.names_url = names_url


class RedisAuthenticationError(RedisUnavailableError):
    """Redis refused the user name and password of the URL (or needs some)."""


class RedisOutOfMemoryError(RedisUnavailableError):
    """The Redis server is out of memory (`maxmemory` reached, with `noeviction`): it
    refuses writes until memory is freed."""


class RedisReadOnlyError(RedisUnavailableError):
    """The Redis server is a read-only replica: it refuses writes."""


class RedisPermissionError(LoomError, PermissionError):
    """The Redis (ACL) user lacks a command or key permission an operation needs."""


class PayloadError(LoomError, TypeError):
    """A value cannot be encoded to (or decoded from) msgpack."""


class WorkflowDefinitionError(LoomError, TypeError):
    """A class or function is not a valid workflow, step or activity."""


class InvalidWorkflowIdError(LoomError, ValueError):
    """A workflow id is empty, too long, or holds control characters."""


class WorkflowInputError(LoomError, TypeError):
    """A workflow's input (or initial state) does not match the TypedDict it declares."""


class WorkflowNotFoundError(LoomError, LookupError):
    """No workflow with this id exists in the namespace."""

    def __init__(self, workflow_id: str) -> None:
        super().__init__(f"workflow {workflow_id!r} not found")
        self.workflow_id = workflow_id


class WorkflowAlreadyStartedError(LoomError):
    """A workflow with this id was already started."""

    def __init__(self, workflow_id: str, status: str) -> None:
        super().__init__(
            f"workflow {workflow_id!r} already exists (status {status}); "
            "pass id_reuse='return_existing' to get its handle instead"
        )
        self.workflow_id = workflow_id
        self.status = status


class WorkflowStillRunningError(LoomError, TimeoutError):
    """The workflow has not finished (yet)."""

    def __init__(
        self, workflow_id: str, status: str, waited: float | None = None, reason: str = ""
    ) -> None:
        detail = f" after waiting {waited:g}s" if waited is not None else ""
        because = f": {reason}" if reason else ""
        super().__init__(f"workflow {workflow_id!r} is still {status}{detail}{because}")
        self.workflow_id = workflow_id
        self.status = status
        # What is known of why it has not ended (see Client.explain_wait); "" if nothing.
        self.reason = reason


class WorkflowExecutionError(LoomError):
    """The workflow failed while it ran."""

    def __init__(self, message: str, workflow_id: str | None = None) -> None:
        super().__init__(message)
        self.workflow_id = workflow_id


class ActivityFailedError(LoomError):
    """An activity failed for good (every attempt used up, or a timeout on the last one)."""

    def __init__(
        self, activity_name: str, error_message: str, *, error_type: str = "", attempts: int = 1
    ) -> None:
        super().__init__(
            f"activity {activity_name!r} failed after {attempts} attempt(s): {error_message}"
        )
        self.activity_name = activity_name
        self.error_message = error_message
        self.error_type = error_type
        self.attempts = attempts


class NonDeterministicWorkflowError(LoomError):
    """The workflow code no longer produces the commands its history holds."""


class WorkflowCancelledError(LoomError):
    """The workflow was cancelled."""

    def __init__(self, workflow_id: str, reason: str | None) -> None:
        super().__init__(f"workflow {workflow_id!r} was cancelled: {reason or 'no reason given'}")
        self.workflow_id = workflow_id
        self.reason = reason


class SignalTimeoutError(LoomError, TimeoutError):
    """`wait_for_signal` waited longer than its timeout."""

    def __init__(self, signal_name: str, timeout: float) -> None:
        super().__init__(f"no signal {signal_name!r} arrived within {timeout:g}s")
        self.signal_name = signal_name
        self.timeout = timeout


def error_from_record(workflow_id: str, record: dict[str, Any]) -> LoomError:
    """Rebuild the exception a failed workflow's stored error record stands for."""
    kind = record.get("type", "")
    message = str(record.get("message", ""))
    if kind == "ActivityFailedError":
        return ActivityFailedError(
            str(record.get("activity_name", "")),
            str(record.get("error_message", "")),
            error_type=str(record.get("error_type", "")),
            attempts=int(record.get("attempts", 1)),
        )
    if kind == "NonDeterministicWorkflowError":
        return NonDeterministicWorkflowError(message)
    return WorkflowExecutionError(f"workflow {workflow_id!r} failed: {message}", workflow_id)
