"""`loom.core.context`, as Loom code imports it."""

from ..api import WorkflowContext

__all__ = ["WorkflowContext"]
