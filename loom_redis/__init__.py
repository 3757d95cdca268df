"""loom-redis: durable workflows on Redis Streams, with Loom's API.

import loom_redis as loom
"""

from .api import (
    ActivityDefinition,
    Workflow,
    WorkflowContext,
    WorkflowDefinition,
    WorkflowState,
    activity,
    step,
    workflow,
)
from .client import (
    Client,
    WorkflowHandle,
    configure,
    get_handle,
    get_progress,
    stream_progress,
)
from .errors import (
    ActivityFailedError,
    ConfigurationError,
    InvalidWorkflowIdError,
    LoomError,
    NonDeterministicWorkflowError,
    PayloadError,
    RedisAuthenticationError,
    RedisOutOfMemoryError,
    RedisPermissionError,
    RedisReadOnlyError,
    RedisUnavailableError,
    SignalTimeoutError,
    WorkflowAlreadyStartedError,
    WorkflowCancelledError,
    WorkflowDefinitionError,
    WorkflowExecutionError,
    WorkflowInputError,
    WorkflowNotFoundError,
    WorkflowStillRunningError,
)
from .events import Event, EventType, Status
from .schemas.state import Input, State

__version__ = "0.1.0"

__all__ = [
    "ActivityDefinition",
    "ActivityFailedError",
    "Client",
    "ConfigurationError",
    "Event",
    "EventType",
    "Input",
    "InvalidWorkflowIdError",
    "LoomError",
    "NonDeterministicWorkflowError",
    "PayloadError",
    "RedisAuthenticationError",
    "RedisOutOfMemoryError",
    "RedisPermissionError",
    "RedisReadOnlyError",
    "RedisUnavailableError",
    "SignalTimeoutError",
    "State",
    "Status",
    "Workflow",
    "WorkflowAlreadyStartedError",
    "WorkflowCancelledError",
    "WorkflowContext",
    "WorkflowDefinition",
    "WorkflowDefinitionError",
    "WorkflowExecutionError",
    "WorkflowHandle",
    "WorkflowInputError",
    "WorkflowNotFoundError",
    "WorkflowState",
    "WorkflowStillRunningError",
    "activity",
    "configure",
    "get_handle",
    "get_progress",
    "step",
    "stream_progress",
    "workflow",
]
