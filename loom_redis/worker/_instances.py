"""The workflow instances a worker keeps between their tasks."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from ..definitions import registered_workflow
from ..engine import WorkflowInstance
from ..events import Event


@dataclass
class Cached:
    """A workflow instance that has applied the first `length` history events (the last
    one `last_id`) but the `carried` ones: external events its last commit left to the
    next task (see CommitResult.skipped)."""

    instance: WorkflowInstance
    length: int
    last_id: str
    carried: list[Event] = field(default_factory=list)


class InstanceCache:
    """Up to `size` workflow instances, so that a task replays only the events newer
    than the instance it finds here; the least recent go first."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._instances: OrderedDict[str, Cached] = OrderedDict()

    def peek(self, workflow_id: str) -> Cached | None:
        return self._instances.get(workflow_id)

    def take(self, workflow_id: str) -> Cached | None:
        """Remove the workflow's instance and return it, unless it runs code that is no
        longer the registered one (then it is only dropped)."""
        cached = self._instances.pop(workflow_id, None)
        if cached is None:
            return None
        definition = cached.instance.definition
        return cached if registered_workflow(definition.name) is definition else None

    def forget(self, workflow_id: str) -> None:
        self._instances.pop(workflow_id, None)

    def keep(
        self,
        workflow_id: str,
        instance: WorkflowInstance,
        length: int,
        last_id: str,
        carried: list[Event],
    ) -> None:
        """Cache an instance that matches the history (but the `carried` events), evicting
        the least recent."""
        self._instances[workflow_id] = Cached(instance, length, last_id, carried)
        while len(self._instances) > self.size:
            self._instances.popitem(last=False)
