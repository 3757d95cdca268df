"""History read as a sequence of workflow tasks (see the package's docstring)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import NonDeterministicWorkflowError
from ..events import COMMAND_TYPES, EXTERNAL_TYPES, Event, EventType


@dataclass
class Batch:
    """One workflow task of history: external events, recorded commands, its time."""

    externals: list[Event] = field(default_factory=list)
    commands: list[Event] = field(default_factory=list)
    time_ms: int | None = None


def split_tasks(events: list[Event], workflow_id: str) -> list[Batch]:
    """History cut into the workflow tasks that wrote it, in order; the last batch holds
    the external events no task has seen yet."""
    batches = [Batch()]
    for event in events:
        current = batches[-1]
        if event.type == EventType.WORKFLOW_TASK_COMPLETED:
            current.time_ms = event.time_ms
            # External events that arrived while the task ran (its commit wrote its
            # commands after them) were not fed to it: they open the next batch.
            skip = event.data.get("skip", 0) if isinstance(event.data, dict) else 0
            whole = isinstance(skip, int) and not isinstance(skip, bool)
            cut = len(current.externals) - skip if whole else -1
            following = current.externals[cut:] if 0 <= cut <= len(current.externals) else []
            external = all(e.type in EXTERNAL_TYPES for e in following)
            if not whole or len(following) != skip or not external:
                raise NonDeterministicWorkflowError(
                    f"workflow {workflow_id!r}: history entry {event.id} "
                    f"(WORKFLOW_TASK_COMPLETED) skips {skip!r} events, more than the "
                    "external events its task ends with; the history was written by "
                    "something else"
                )
            del current.externals[cut:]
            batches.append(Batch(externals=following))
        elif event.type in COMMAND_TYPES:
            current.commands.append(event)
        else:
            current.externals.append(event)
    return batches
