"""`loom.core.workflow`, as Loom code imports it."""

from ..api import Workflow

__all__ = ["Workflow"]
